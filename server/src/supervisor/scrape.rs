//! The master's `/metrics` endpoint, served from its poll loop without threads.
//!
//! One short request per connection (`Connection: close`), read and answered with tight
//! timeouts, so a scraper can hold the master for at most [`IO_TIMEOUT`]. The endpoint is for
//! Prometheus on a private address (`--metrics-bind`, loopback by default).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// Longest a scrape connection may take to send its request or receive the answer.
const IO_TIMEOUT: Duration = Duration::from_millis(250);
/// Largest request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Bind the metrics listener (non-blocking, close-on-exec).
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Answer every pending connection; `render` produces the exposition.
pub(super) fn serve_pending(listener: &TcpListener, render: &dyn Fn() -> String) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                if let Err(e) = answer(stream, render) {
                    tracing::debug!(error = %e, "metrics scrape failed");
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::warn!(error = %e, "metrics accept failed");
                return;
            }
        }
    }
}

fn answer(mut s: TcpStream, render: &dyn Fn() -> String) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_REQUEST_BYTES {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = buf.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, ctype, body) = if line.starts_with(b"GET /metrics ") {
        ("200 OK", prometheus::TEXT_FORMAT, render())
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "only GET /metrics is served here\n".to_owned(),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body.as_bytes())?;
    Ok(())
}
