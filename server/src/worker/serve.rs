//! The accept loop: HTTP/1.1 with keep-alive and upgrades, and the drain on shutdown.
//!
//! This is the seam tests use in-process: `serve(listener, app, shutdown)` runs until
//! `shutdown` resolves, then stops accepting, lets requests in flight finish (idle keep-alive
//! connections are closed), tells every websocket to close with 1001, and returns when all are
//! done or the graceful timeout passes.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;

use super::net::Listener;
use super::state::{App, Gauge};
use crate::http;

/// A client must send its request headers within this time (slow-loris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after an accept error such as EMFILE, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serve `listener` until `shutdown` resolves, then drain.
pub async fn serve(listener: Listener, app: Arc<App>, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    let builder = builder.http1_only();
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    tracing::info!(mode = app.config.mode.as_str(), "worker serving");
    loop {
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
        let app2 = app.clone();
        let svc = service_fn(move |req| {
            let app = app2.clone();
            async move { Ok::<_, Infallible>(http::handle(app, req, peer).await) }
        });
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), svc)
            .into_owned();
        let conn = graceful.watch(conn);
        let gauge = Gauge::enter(&app, |c| &c.http_open);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(gauge);
        });
    }
    drop(listener);
    let open_ws = app
        .counters
        .ws_open
        .load(std::sync::atomic::Ordering::Relaxed);
    tracing::info!(websockets = open_ws, "draining");
    app.shutdown.cancel();
    app.sessions.close();
    let drained = tokio::time::timeout(app.config.graceful(), async {
        tokio::join!(graceful.shutdown(), app.sessions.wait());
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("graceful timeout passed with connections still open"),
    }
}
