//! A websocket client for tests: connect (with a `sessionid` cookie), read the next text
//! message, check that nothing arrives.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A websocket client over plain TCP.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open `ws://{base}{path}`, with `sessionid=<cookie>` when given; the error says why not
/// (it names the HTTP status of a refused handshake).
pub async fn connect(base: &str, path: &str, cookie: Option<&str>) -> Result<Ws, String> {
    let mut req = format!("ws://{base}{path}").into_client_request().unwrap();
    if let Some(c) = cookie {
        req.headers_mut()
            .insert("cookie", format!("sessionid={c}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| e.to_string())
}

/// The next text message (pings and pongs skipped); None after 3 s of silence or on close.
pub async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(3), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            _ => return None,
        }
    }
}

/// Whether nothing but pings and pongs arrives within `d`.
pub async fn silent(ws: &mut Ws, d: Duration) -> bool {
    loop {
        match tokio::time::timeout(d, ws.next()).await {
            Err(_) => return true,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(_) => return false,
        }
    }
}
