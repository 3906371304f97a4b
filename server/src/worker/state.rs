//! What one worker shares between its connections: config, counters, the shutdown signal.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::ControlPipe;
use crate::config::Config;
use crate::supervisor::Control;

/// Live counts of this worker, read by `/healthz` (and later by metrics).
#[derive(Debug, Default)]
pub struct Counters {
    /// Open HTTP connections (including ones that became websockets, until upgraded).
    pub http_open: AtomicUsize,
    /// Open websocket sessions.
    pub ws_open: AtomicUsize,
    /// HTTP requests answered.
    pub requests: AtomicU64,
}

/// Decrements a counter when dropped, so every exit path of a connection is counted.
#[derive(Debug)]
pub struct Gauge(Arc<App>, fn(&Counters) -> &AtomicUsize);

impl Gauge {
    /// Increment `which` now and decrement it on drop.
    pub fn enter(app: &Arc<App>, which: fn(&Counters) -> &AtomicUsize) -> Self {
        which(&app.counters).fetch_add(1, Ordering::Relaxed);
        Gauge(app.clone(), which)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.1)(&self.0.counters).fetch_sub(1, Ordering::Relaxed);
    }
}

/// One worker's shared state.
#[derive(Debug)]
pub struct App {
    /// Slot number given by the master (0 in in-process tests).
    pub id: usize,
    /// The validated configuration.
    pub config: Config,
    /// When this worker started, for uptime.
    pub started: Instant,
    /// Live counts.
    pub counters: Counters,
    /// Cancelled when the worker drains: every websocket closes with 1001.
    pub shutdown: CancellationToken,
    /// Websocket sessions, which hyper stops tracking once upgraded.
    pub sessions: TaskTracker,
    control: ControlPipe,
    /// Requests after which this worker asks to be recycled (None = never).
    recycle_after: Option<u64>,
}

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Reserved for the backends (database, Redis) wired in later.
    #[error("{0}")]
    Backend(String),
}

impl App {
    /// Build the state of worker `id`.
    pub async fn start(
        id: usize,
        config: Config,
        control: ControlPipe,
    ) -> Result<Self, StartError> {
        let recycle_after = (config.max_requests > 0).then(|| {
            let jitter = if config.max_requests_jitter > 0 {
                rand::random_range(0..=config.max_requests_jitter)
            } else {
                0
            };
            config.max_requests + jitter
        });
        Ok(App {
            id,
            config,
            started: Instant::now(),
            counters: Counters::default(),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            control,
            recycle_after,
        })
    }

    /// Count one answered request; asks the master for a replacement at --max-requests.
    pub fn count_request(&self) {
        let n = self.counters.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if Some(n) == self.recycle_after {
            self.control.send(Control::Recycle);
        }
    }
}
