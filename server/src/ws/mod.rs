//! Websockets: the handshake, and handing an upgraded connection to its session.

pub mod handshake;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use crate::http::response::{self, Response};
use crate::worker::App;
use crate::worker::net::Peer;
use crate::worker::state::Gauge;
use handshake::HandshakeError;

/// Answer an upgrade request under the websocket prefix: 101 and a spawned session, or an
/// HTTP error that says why not.
pub async fn upgrade(app: Arc<App>, mut req: Request<Incoming>, _peer: Peer) -> Response {
    let accept = match handshake::check(&req, &app.config.allowed_origins) {
        Ok(a) => a,
        Err(e) => return response::handshake_error(&e),
    };
    if app.shutdown.is_cancelled()
        || app.slot.ws_open.load(Ordering::Relaxed) >= app.config.max_connections as u64
    {
        return response::handshake_error(&HandshakeError::Busy);
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let gauge = Gauge::enter(&app, |c| &c.ws_open);
    let app2 = app.clone();
    app.sessions.spawn(async move {
        let _gauge = gauge;
        match on_upgrade.await {
            Ok(upgraded) => {
                let config = WebSocketConfig::default()
                    .max_message_size(Some(app2.config.max_message_size))
                    .max_frame_size(Some(app2.config.max_message_size))
                    .read_buffer_size(4096)
                    .write_buffer_size(0);
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                echo(ws, &app2).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    let mut r = response::text(StatusCode::SWITCHING_PROTOCOLS, "");
    r.headers_mut().remove(http::header::CONTENT_TYPE);
    let h = r.headers_mut();
    h.insert(CONNECTION, http::HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, http::HeaderValue::from_static("websocket"));
    if let Ok(v) = http::HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// Until the ws4redis session lands: echo every message, close 1001 on drain.
async fn echo<S>(mut ws: WebSocketStream<S>, app: &App)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        tokio::select! {
            msg = ws.next() => match msg {
                Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => {
                    if ws.send(m).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            () = app.shutdown.cancelled() => {
                let _ = ws
                    .close(Some(CloseFrame { code: CloseCode::Away, reason: "going away".into() }))
                    .await;
                // Wait briefly for the peer's close so the frame is not lost to a reset.
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                    while let Some(Ok(_)) = ws.next().await {}
                })
                .await;
                break;
            }
        }
    }
}
