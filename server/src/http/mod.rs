//! Routing: which handler answers a request, given the pool's mode.
//!
//! A websocket upgrade is told from a plain request by method, headers and the websocket
//! prefix; `ws::handshake` validates it. Everything else is a page, the API or health.

pub mod api;
pub mod forwarded;
pub mod health;
pub mod pages;
pub mod presence;
pub mod response;
pub mod statics;

use std::sync::Arc;
use std::time::Instant;

use http::Method;
use hyper::Request;
use hyper::body::Incoming;

use crate::worker::App;
use crate::worker::net::Peer;
use crate::ws;
use response::Response;

/// Which row of the HTTP metrics a request counts in (index into `metrics::slots::ROUTES`).
#[derive(Clone, Copy, Debug)]
enum Route {
    Health = 0,
    Websocket = 1,
    Page = 2,
    Api = 3,
    Static = 4,
    Admin = 5,
    Other = 6,
}

/// Answer one request, and count it in the worker's metrics.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: Peer) -> Response {
    let started = Instant::now();
    app.count_request();
    let (route, resp) = dispatch(&app, req, peer).await;
    app.slot
        .http(route as usize, resp.status().as_u16(), started.elapsed());
    resp
}

async fn dispatch(app: &Arc<App>, req: Request<Incoming>, peer: Peer) -> (Route, Response) {
    let path = req.uri().path();
    let mode = app.config.mode;
    if path == "/healthz" {
        return (Route::Health, health::healthz(app));
    }
    if path.starts_with(app.config.websocket_url.as_str()) {
        if !mode.serves_websocket() {
            let r = response::not_found("websockets are served by the websocket pool\n");
            return (Route::Websocket, r);
        }
        return (Route::Websocket, ws::upgrade(app.clone(), req, peer).await);
    }
    if !mode.serves_http() {
        return (
            Route::Other,
            response::not_found("this pool serves websockets only\n"),
        );
    }
    if path.starts_with("/api/") {
        return (Route::Api, api::handle(app, req).await);
    }
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/") => (Route::Page, response::redirect("/chat/")),
        (_, p) if p.starts_with(statics::PREFIX) => {
            let r = statics::serve(req.method(), p, req.uri().query(), req.headers());
            (Route::Static, r)
        }
        (_, p) if pages::is_admin(p) => (Route::Admin, pages::handle(app, req, peer).await),
        (_, p) if pages::is_page(p) => (Route::Page, pages::handle(app, req, peer).await),
        _ => (Route::Other, response::not_found("not found\n")),
    }
}
