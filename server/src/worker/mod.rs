//! A worker process: its own tokio runtime, built after exec, serving the shared socket.
//!
//! The master starts `wsredis worker` with the listener and control pipe inherited (see
//! `supervisor::children`). The worker builds a current-thread runtime (one worker per core is
//! the pool's parallelism), adopts the listener, reports ready, and serves until SIGTERM, when
//! it drains: stop accepting, finish requests in flight, Close 1001 to every websocket, exit.

pub mod control;
pub mod net;
mod refuse;
mod serve;
pub mod state;
mod trim;

pub use serve::serve;
pub use state::App;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::signal::unix::{SignalKind, signal};

use crate::config::Config;
use crate::metrics::Slots;
use crate::supervisor::{self, Control};
use control::ControlPipe;

/// Exit status of a worker that could not start (the master backs off on repeats).
const EXIT_STARTUP: u8 = 3;

/// The `wsredis worker` entry point: everything after exec.
pub fn main(id: usize, config: Config) -> ExitCode {
    let Some(fds) = supervisor::inherited_fds() else {
        tracing::error!("`wsredis worker` is started by the master; use `wsredis serve`");
        return ExitCode::from(EXIT_STARTUP);
    };
    if let Ok(master) = std::env::var(supervisor::ENV_MASTER_PID)
        && nix::unistd::getppid().as_raw().to_string() != master
    {
        return ExitCode::from(EXIT_STARTUP);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the runtime");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    let slots = match Slots::attach(fds.metrics) {
        // Lives as long as the process: every part of the worker counts into its slot.
        Ok(s) => &*Box::leak(Box::new(s)),
        Err(e) => {
            tracing::error!(error = %e, "cannot map the metric slots");
            return ExitCode::from(EXIT_STARTUP);
        }
    };
    let slot = slots.slot(id);
    slot.pid
        .store(u64::from(std::process::id()), Ordering::Relaxed);
    let control = ControlPipe::new(fds.control);
    let listen_fd = fds.listener;
    runtime.block_on(async move {
        tokio::spawn(control.clone().heartbeat());
        let listener = match net::Listener::from_fd(listen_fd) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot adopt the listening socket");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        let app = match App::start(id, config, control.clone(), Some(slots), slot).await {
            Ok(app) => Arc::new(app),
            Err(e) => {
                tracing::error!(error = %e, "worker start-up failed");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot watch SIGTERM");
                return ExitCode::from(EXIT_STARTUP);
            }
        };
        tokio::spawn(reopen_logs_on_usr1());
        tokio::spawn(export_metrics(app.clone()));
        tokio::spawn(trim::after_bursts(app.clone()));
        // From now on siblings count this worker as one that takes connections.
        app.slot
            .pid
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        control.send(Control::Ready);
        serve(listener, app.clone(), async move {
            term.recv().await;
        })
        .await;
        // Every socket has left by now; remove what a slow one may still hold, at once.
        app.presence.close().await;
        app.bus.quit().await;
        ExitCode::SUCCESS
    })
}

/// How often websocket and bus counters are copied into the metric slot.
const METRICS_EXPORT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

async fn export_metrics(app: Arc<App>) {
    let mut last = state::Exported::default();
    let mut tick = tokio::time::interval(METRICS_EXPORT_INTERVAL);
    loop {
        tick.tick().await;
        app.export_metrics(&mut last);
    }
}

async fn reopen_logs_on_usr1() {
    let Ok(mut usr1) = signal(SignalKind::user_defined1()) else {
        return;
    };
    while usr1.recv().await.is_some() {
        crate::logging::reopen();
    }
}
