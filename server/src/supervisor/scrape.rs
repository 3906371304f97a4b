//! The master's `/metrics` endpoint, served from its poll loop without threads.
//!
//! One short request per connection (`Connection: close`). Nothing here blocks the master on
//! a client: connections are accepted without waiting, their request is read as it arrives
//! (the poll loop watches them), and a request that is not complete within [`REQUEST_TIMEOUT`]
//! is dropped. Only the answer is written with a blocking write, bounded by [`IO_TIMEOUT`]
//! (it fits a fresh socket's send buffer). At most [`MAX_PENDING`] connections wait at once;
//! beyond that the oldest is dropped. A scrape on a loaded machine, whose client is slow to
//! send its request after connecting, is answered rather than cut. The endpoint is for
//! Prometheus on a private address (`--metrics-bind`, loopback by default).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

/// Longest the answer's write may block the master.
const IO_TIMEOUT: Duration = Duration::from_millis(250);
/// Longest a scrape connection may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Scrape connections waiting for their request at once.
const MAX_PENDING: usize = 16;
/// Largest request head read.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Bind the metrics listener (non-blocking, close-on-exec).
pub(super) fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// A scrape connection whose request has not fully arrived.
#[derive(Debug)]
struct Pending {
    stream: TcpStream,
    head: Vec<u8>,
    since: Instant,
}

/// The metrics listener and the connections still sending their request.
#[derive(Debug)]
pub(super) struct Scraper {
    listener: TcpListener,
    pending: Vec<Pending>,
}

impl Scraper {
    /// Serve on `listener` (from [`bind`]).
    pub(super) fn new(listener: TcpListener) -> Self {
        Scraper {
            listener,
            pending: Vec::new(),
        }
    }

    /// What the poll loop watches: the listener and every pending connection.
    pub(super) fn fds(&self) -> Vec<BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd())
            .chain(self.pending.iter().map(|p| p.stream.as_fd()))
            .collect()
    }

    /// Accept what is waiting, read what arrived, answer complete requests, drop connections
    /// that took too long; `render` produces the exposition.
    pub(super) fn serve(&mut self, render: &dyn Fn() -> String) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_err() {
                        continue;
                    }
                    if self.pending.len() >= MAX_PENDING {
                        self.pending.remove(0);
                    }
                    self.pending.push(Pending {
                        stream,
                        head: Vec::with_capacity(512),
                        since: Instant::now(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics accept failed");
                    break;
                }
            }
        }
        let now = Instant::now();
        self.pending.retain_mut(|p| match read_head(p) {
            Ok(true) => {
                if let Err(e) = answer(&mut p.stream, &p.head, render) {
                    tracing::debug!(error = %e, "metrics scrape failed");
                }
                false
            }
            Ok(false) => now.duration_since(p.since) < REQUEST_TIMEOUT,
            Err(e) => {
                tracing::debug!(error = %e, "metrics scrape failed");
                false
            }
        });
    }
}

/// Read what has arrived; whether the request head is complete (or as large as allowed).
fn read_head(p: &mut Pending) -> io::Result<bool> {
    let mut chunk = [0u8; 1024];
    loop {
        if p.head.windows(4).any(|w| w == b"\r\n\r\n") || p.head.len() >= MAX_REQUEST_BYTES {
            return Ok(true);
        }
        match p.stream.read(&mut chunk) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => p.head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn answer(s: &mut TcpStream, buf: &[u8], render: &dyn Fn() -> String) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
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
