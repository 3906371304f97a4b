//! Routing: which handler answers a request, given the pool's mode.
//!
//! A websocket upgrade is told from a plain request by method, headers and the websocket
//! prefix; `ws::handshake` validates it. Everything else is a page, the API or health.

pub mod health;
pub mod response;

use std::sync::Arc;

use http::{Method, StatusCode};
use hyper::Request;
use hyper::body::Incoming;

use crate::worker::App;
use crate::worker::net::Peer;
use crate::ws;
use response::Response;

/// Answer one request.
pub async fn handle(app: Arc<App>, req: Request<Incoming>, peer: Peer) -> Response {
    app.count_request();
    let path = req.uri().path();
    let mode = app.config.mode;
    if path == "/healthz" {
        return health::healthz(&app);
    }
    if path.starts_with(app.config.websocket_url.as_str()) {
        if !mode.serves_websocket() {
            return response::not_found("websockets are served by the websocket pool\n");
        }
        return ws::upgrade(app, req, peer).await;
    }
    if !mode.serves_http() {
        return response::not_found("this pool serves websockets only\n");
    }
    match (req.method(), path) {
        (&Method::GET | &Method::HEAD, "/") => response::text(StatusCode::OK, "wsredis\n"),
        _ => response::not_found("not found\n"),
    }
}
