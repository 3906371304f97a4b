//! Refusing a connection beyond `--max-http-connections`, or beyond what the worker's
//! open-files limit leaves for connections: `503` with `Retry-After`, at once.
//!
//! The open-files limit (`RLIMIT_NOFILE`, per process) is the harder of the two: past it
//! `accept` fails with EMFILE, the connection waits in the kernel's queue and its client hangs
//! until some worker has a file free. So a worker counts its connections (HTTP and websocket)
//! against the soft limit less [`RESERVED_FILES`]; at that budget it leaves accepting to its
//! siblings for a while (`worker::serve`) and then refuses, so a client of a full server gets
//! an answer rather than silence, and the worker keeps the files its Redis and database
//! connections need.
//!
//! The refusal never waits for the request: the answer is written as soon as the connection is
//! accepted (its send buffer is empty, so the write does not block), the write side is shut
//! down, and what the client sends is read and thrown away for at most [`LINGER`] so that the
//! kernel ends the connection with a FIN rather than a reset that could destroy the answer
//! before the client reads it. Lingering refusals are bounded by [`MAX_LINGERING`]; past that
//! the answer is written without waiting, what the client has sent so far is discarded, and
//! the connection is closed on the spot, so a flood cannot make the refusals themselves pile
//! up. Every refusal counts in `wsredis_dropped_total{reason="overload"}`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::net::Stream;
use super::state::App;

/// How long a refused connection is read (and discarded) after the answer.
const LINGER: Duration = Duration::from_secs(1);
/// Most refused connections lingering at once, per worker.
const MAX_LINGERING: usize = 256;
/// Most bytes of a refused client's request read before giving up on it.
const MAX_DISCARD_BYTES: usize = 64 * 1024;
/// Open files a worker keeps for everything but client connections: the refusals that
/// linger, Redis and database connections, static files, the log, the runtime's own.
const RESERVED_FILES: u64 = MAX_LINGERING as u64 + 256;

const BODY: &str = "503 Service Unavailable: this server is at its connection limit \
                    (--max-http-connections or its open-files limit). Please retry in a moment.\n";

/// Client connections (HTTP and websocket together) a worker can hold under an open-files
/// soft limit of `nofile`.
pub(super) fn connection_budget(nofile: u64) -> u64 {
    nofile.saturating_sub(RESERVED_FILES).max(1)
}

/// [`connection_budget`] of this process's soft `RLIMIT_NOFILE` (no bound if unknown).
pub(super) fn own_connection_budget() -> u64 {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(soft, _)| connection_budget(soft))
}

/// Whether this worker's connections have reached `budget` (see [`connection_budget`]).
pub(super) fn over_budget(app: &App, budget: u64) -> bool {
    app.slot.http_open.load(Ordering::Relaxed) + app.slot.ws_open.load(Ordering::Relaxed) >= budget
}

/// Whether this worker holds `--max-http-connections` HTTP connections already, or as many
/// connections as its open files allow (`budget`).
pub(super) fn at_limit(app: &App, budget: u64) -> bool {
    let limit = app.config.max_http_connections as u64;
    (limit > 0 && app.slot.http_open.load(Ordering::Relaxed) >= limit) || over_budget(app, budget)
}

/// Refused connections of one worker that are still lingering.
#[derive(Debug, Default)]
pub(super) struct Refusals {
    lingering: Arc<AtomicUsize>,
}

impl Refusals {
    /// Answer `stream` 503 and close it (in a task of its own; never blocks the accept loop).
    pub(super) fn refuse(&self, app: &App, mut stream: Stream) {
        app.slot.overload.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(
            limit = app.config.max_http_connections,
            "connection refused: at --max-http-connections"
        );
        if self.lingering.fetch_add(1, Ordering::Relaxed) >= MAX_LINGERING {
            self.lingering.fetch_sub(1, Ordering::Relaxed);
            refuse_now(&stream);
            return;
        }
        let lingering = self.lingering.clone();
        tokio::spawn(async move {
            let answer = response();
            let _ = tokio::time::timeout(LINGER, async {
                if stream.write_all(answer.as_bytes()).await.is_err() {
                    return;
                }
                let _ = stream.shutdown().await;
                let mut buf = [0u8; 4096];
                let mut read = 0;
                while read < MAX_DISCARD_BYTES {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => read += n,
                    }
                }
            })
            .await;
            lingering.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Write the answer without waiting (a fresh connection's send buffer takes it whole), end
/// the write side, and discard what already arrived so the close sends a FIN, not a reset.
fn refuse_now(stream: &Stream) {
    let answer = response();
    let (sent, sock) = match stream {
        Stream::Tcp(s) => (s.try_write(answer.as_bytes()), socket2::SockRef::from(s)),
        Stream::Unix(s) => (s.try_write(answer.as_bytes()), socket2::SockRef::from(s)),
    };
    if sent.is_err() {
        return;
    }
    let _ = sock.shutdown(std::net::Shutdown::Write);
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read < MAX_DISCARD_BYTES {
        let got = match stream {
            Stream::Tcp(s) => s.try_read(&mut buf),
            Stream::Unix(s) => s.try_read(&mut buf),
        };
        match got {
            Ok(n) if n > 0 => read += n,
            _ => break,
        }
    }
}

fn response() -> String {
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_a_complete_503() {
        let r = response();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(head.contains("\r\nretry-after: 1\r\n"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(body.contains("--max-http-connections"));
    }

    #[test]
    fn the_budget_keeps_files_for_everything_else() {
        assert_eq!(connection_budget(20_000), 20_000 - RESERVED_FILES);
        assert!(
            RESERVED_FILES > MAX_LINGERING as u64,
            "lingering refusals hold files"
        );
        assert_eq!(
            connection_budget(100),
            1,
            "never zero: a refusal needs an accept"
        );
    }
}
