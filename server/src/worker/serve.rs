//! The accept loop: HTTP/1.1 with keep-alive and upgrades, and the drain on shutdown.
//!
//! This is the seam tests use in-process: `serve(listener, app, shutdown)` runs until
//! `shutdown` resolves, then stops accepting, lets requests in flight finish (idle keep-alive
//! connections are closed), tells every websocket to close with 1001, and returns when all are
//! done or the graceful timeout passes. A connection beyond `--max-http-connections` is
//! answered 503 at once and closed (`worker::refuse`), as is one beyond what the worker's
//! open-files limit leaves for connections, once its siblings had a moment to take it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Notify;
use tokio_util::task::TaskTracker;

use super::net::Listener;
use super::refuse::{self, Refusals};
use super::state::{App, Gauge};
use crate::http;

/// Largest request head (request line and headers) read; a larger one is answered 431 by
/// hyper, as is one with more than hyper's 100 headers. A malformed head gets 400.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// How long a worker holding more than its share of connections leaves accepting to others.
const OVER_SHARE_PAUSE: Duration = Duration::from_millis(2);
/// Pauses in a row after which the worker accepts anyway.
const OVER_SHARE_MAX_PAUSES: u32 = 5;
/// Pauses in a row of a worker at its open-files budget (`refuse::connection_budget`) before
/// it accepts and refuses: 100 ms for a sibling with room to take the connection first.
const FULL_MAX_PAUSES: u32 = 50;
/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serve `listener` until `shutdown` resolves, then drain.
pub async fn serve(listener: Listener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    // A client must send its request headers within --header-timeout (slow-loris guard).
    let header_timeout = Duration::from_secs(app.config.header_timeout);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    // hyper stops tracking a connection once it upgrades, and hyper-util's graceful helper
    // drops connections whose first bytes have not arrived yet; so connections are tracked
    // here, and each one is told to finish its current request when the worker drains.
    let connections = TaskTracker::new();
    let refusals = Refusals::default();
    let budget = refuse::own_connection_budget();
    tokio::pin!(shutdown);
    tracing::info!(mode = app.config.mode.as_str(), "worker serving");
    let mut paused = 0;
    loop {
        // Let a less loaded sibling take the next connection (see `Slots::over_share`), but
        // never for long: a sibling that is stuck must not stall the pool. A worker out of
        // files for connections waits longer if a sibling might take it, then accepts only
        // to refuse.
        let full = refuse::over_budget(&app, budget) && app.has_siblings();
        let max_pauses = if full {
            FULL_MAX_PAUSES
        } else {
            OVER_SHARE_MAX_PAUSES
        };
        if paused < max_pauses && (full || app.over_share()) {
            paused += 1;
            tokio::select! {
                () = tokio::time::sleep(OVER_SHARE_PAUSE) => continue,
                () = &mut shutdown => break,
            }
        }
        paused = 0;
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    if !matches!(e.kind(), std::io::ErrorKind::ConnectionAborted
                        | std::io::ErrorKind::ConnectionReset) {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Over the limit: answer 503 now rather than queue the connection behind the others
        // (a flood must not take the file descriptors the open sockets need).
        if refuse::at_limit(&app, budget) {
            refusals.refuse(&app, stream);
            continue;
        }
        let app2 = app.clone();
        let first_request = Arc::new(Notify::new());
        let started = first_request.clone();
        let svc = service_fn(move |req| {
            let app = app2.clone();
            started.notify_one();
            async move { Ok::<_, Infallible>(http::handle(app, req, peer).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades();
        let gauge = Gauge::enter(&app, |c| &c.http_open);
        let drain = app.shutdown.clone();
        let app3 = app.clone();
        connections.spawn(async move {
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                () = drain.cancelled() => {
                    // hyper closes a connection whose first request has not arrived yet; a
                    // client that connected before the drain must still get its answer.
                    // (notify_one stores a permit, so a request already started counts.)
                    let first = tokio::time::timeout(header_timeout, first_request.notified());
                    tokio::select! {
                        r = conn.as_mut() => r,
                        _ = first => {
                            conn.as_mut().graceful_shutdown();
                            conn.await
                        }
                    }
                }
            };
            if let Err(e) = result {
                count_connection_error(&app3, &e);
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(gauge);
        });
    }
    drop(listener);
    let open_ws = app.slot.ws_open.load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(websockets = open_ws, "draining");
    app.shutdown.cancel();
    app.sessions.close();
    connections.close();
    let drained = tokio::time::timeout(app.config.graceful(), async {
        tokio::join!(connections.wait(), app.sessions.wait());
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("graceful timeout passed with connections still open"),
    }
}

/// Count a connection that hyper ended because of what the client sent (or did not send):
/// hyper has already answered 431 (head too large) or 400 (malformed), or closed the
/// connection when the headers did not arrive in time.
fn count_connection_error(app: &App, e: &hyper::Error) {
    use std::sync::atomic::Ordering::Relaxed;
    let counter = if e.is_parse_too_large() {
        &app.slot.http_head_too_large
    } else if e.is_parse() || e.is_parse_status() {
        &app.slot.http_malformed
    } else if e.is_timeout() {
        &app.slot.http_header_timeouts
    } else {
        return;
    };
    counter.fetch_add(1, Relaxed);
}
