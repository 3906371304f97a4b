//! What one worker shares between its connections: config, counters, the shutdown signal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::control::ControlPipe;
use crate::config::Config;
use crate::metrics::Slot;
use crate::supervisor::Control;

/// Decrements a gauge of the worker's slot when dropped, so every exit path is counted.
#[derive(Debug)]
pub struct Gauge(&'static Slot, fn(&Slot) -> &AtomicU64);

impl Gauge {
    /// Increment `which` now and decrement it on drop.
    pub fn enter(app: &App, which: fn(&Slot) -> &AtomicU64) -> Self {
        which(app.slot).fetch_add(1, Ordering::Relaxed);
        Gauge(app.slot, which)
    }
}

impl Drop for Gauge {
    fn drop(&mut self) {
        (self.1)(self.0).fetch_sub(1, Ordering::Relaxed);
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
    /// This worker's metric slot (shared memory the master reads).
    pub slot: &'static Slot,
    /// HTTP requests answered by this process.
    pub requests: AtomicU64,
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
        slot: &'static Slot,
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
            slot,
            requests: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
            sessions: TaskTracker::new(),
            control,
            recycle_after,
        })
    }

    /// Count one answered request; asks the master for a replacement at --max-requests.
    pub fn count_request(&self) {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        if Some(n) == self.recycle_after {
            self.control.send(Control::Recycle);
        }
    }
}
