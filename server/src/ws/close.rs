//! How a session ends: the close code we send (the one place session outcomes map to close
//! codes) and the bounded closing handshake.
//!
//! Invariants: closing never takes longer than about twice `close_timeout`, whatever the peer
//! does; after a read error (oversized or invalid frame) the unread rest of the client's data is
//! drained for a short while before the socket is dropped, so the kernel does not answer it
//! with a RST that would destroy our close frame before the client reads it.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::time::{Instant, timeout, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use super::stats::CloseReason;

/// Reason text of a publish refused because Redis is down (documented client contract).
pub(crate) const REDIS_UNAVAILABLE: &str = "redis unavailable, message not published";
/// A drain after a read error stops once the client is quiet this long.
const DRAIN_IDLE: Duration = Duration::from_millis(200);

/// Why and how a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct End {
    pub(crate) reason: CloseReason,
}

impl End {
    pub(crate) fn new(reason: CloseReason) -> Self {
        End { reason }
    }

    /// The close frame we send, if any.
    fn frame(self) -> Option<(CloseCode, &'static str)> {
        use CloseReason::*;
        match self.reason {
            Client | Abnormal => None,
            GoingAway => Some((CloseCode::Away, "going away")),
            PingTimeout => Some((CloseCode::Away, "ping timeout")),
            Protocol => Some((CloseCode::Protocol, "protocol error")),
            InvalidData => Some((CloseCode::Invalid, "invalid utf-8")),
            TooBig => Some((CloseCode::Size, "message too big")),
            Overloaded => Some((CloseCode::Again, "send queue overflow")),
            RedisDown => Some((CloseCode::Again, REDIS_UNAVAILABLE)),
            RedisError => Some((CloseCode::Error, "redis error, message not published")),
        }
    }

    /// Whether the tungstenite reader is unusable (a read error) so leftovers must be drained
    /// from the raw stream.
    fn after_read_error(self) -> bool {
        matches!(
            self.reason,
            CloseReason::Protocol | CloseReason::InvalidData | CloseReason::TooBig
        )
    }
}

/// Finish the closing handshake for `end`, bounded by `limit` per step.
pub(crate) async fn finish<S>(ws: &mut WebSocketStream<S>, end: End, limit: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if end.reason == CloseReason::Client {
        // tungstenite queued the reply to the client's close; push it out.
        let _ = timeout(limit, ws.flush()).await;
        return;
    }
    let Some((code, reason)) = end.frame() else {
        return;
    };
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if !matches!(timeout(limit, ws.close(Some(frame))).await, Ok(Ok(()))) {
        return;
    }
    let deadline = Instant::now() + limit;
    if end.after_read_error() {
        drain_raw(ws.get_mut(), deadline).await;
    } else {
        // Wait for the client's close reply, discarding late data frames.
        while let Ok(Some(Ok(_))) = timeout_at(deadline, ws.next()).await {}
    }
}

/// Read and discard until EOF, an error, `DRAIN_IDLE` of silence or `deadline`.
async fn drain_raw<S: AsyncRead + Unpin>(io: &mut S, deadline: Instant) {
    let mut buf = [0u8; 4096];
    loop {
        let idle = (Instant::now() + DRAIN_IDLE).min(deadline);
        match timeout_at(idle, io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => return,
        }
    }
}
