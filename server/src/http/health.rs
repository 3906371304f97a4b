//! `GET /healthz`: is this worker alive, and what is it carrying.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::StatusCode;
use serde_json::json;

use super::response::{Response, json};
use crate::worker::App;

/// The health answer of the worker that took the request.
pub fn healthz(app: &Arc<App>) -> Response {
    let c = app.slot;
    json(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "pid": std::process::id(),
            "worker": app.id,
            "mode": app.config.mode.as_str(),
            "uptime_seconds": app.started.elapsed().as_secs_f64(),
            "http_connections": c.http_open.load(Ordering::Relaxed),
            "websocket_connections": c.ws_open.load(Ordering::Relaxed),
            "requests": app.requests.load(Ordering::Relaxed),
            "redis": if app.bus.is_up() { "up" } else { "down" },
        }),
    )
}
