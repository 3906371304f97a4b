//! The master: binds the socket, starts workers, supervises them, and answers signals.
//!
//! # Invariants
//! - Single-threaded for its whole life, with no tokio, sqlx, fred or hyper: workers are
//!   started by fork+exec (`children.rs`), and everything here is a poll loop over a signalfd
//!   and the workers' control pipes. Tests check `/proc/<pid>/task` has one entry.
//! - Never blocks on a worker: reloads, drains, backoff and deadlines are all timers checked on
//!   each turn of the loop.
//!
//! # Signals
//! | signal | meaning |
//! |---|---|
//! | TERM, INT | graceful stop: workers drain, websockets get Close 1001, kill after the grace |
//! | QUIT | immediate stop |
//! | HUP | rolling reload: a new worker is ready before an old one drains |
//! | TTIN / TTOU | one worker more / fewer |
//! | USR1 | reopen log files (master and workers) |

mod children;
mod listener;
mod notify;
mod pool;
mod scrape;
mod signals;

pub use children::{
    CONTROL_FD, ENV_MASTER_PID, ENV_WORKER_CONFIG, ENV_WORKER_ID, Inherited, LISTEN_FD, METRICS_FD,
    inherited_fds,
};
pub use listener::{ListenError, Listener};
pub use pool::Control;

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::config::Config;
use crate::logging;
use crate::metrics::{self, MasterStats, Slots};
use pool::Pool;
use signals::Event;

/// Longest sleep of the loop; bounds how late a deadline or backoff is noticed.
const TICK: Duration = Duration::from_millis(50);

/// Why the master could not run.
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// The listening socket.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The binary's own path, needed to start workers.
    #[error("cannot find our own executable to start workers: {0}")]
    Exe(std::io::Error),
    /// Signals or polling failed.
    #[error("signal setup failed: {0}")]
    Signals(nix::Error),
    /// The metric slots or the metrics endpoint.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The sockets systemd handed over.
    #[error("socket activation: {0}")]
    Activation(std::io::Error),
    /// The pid file.
    #[error("cannot write pid file {path}: {source}")]
    PidFile {
        /// The file.
        path: PathBuf,
        /// The system error.
        source: std::io::Error,
    },
}

/// Run the master until it is told to stop. Returns when every worker is gone.
pub fn run(config: Config) -> Result<(), SupervisorError> {
    let exe = std::env::current_exe().map_err(SupervisorError::Exe)?;
    let activated = notify::activated().map_err(SupervisorError::Activation)?;
    let socket_activated = activated.listener.is_some();
    let listener = match activated.listener {
        Some(fd) => Listener::from_fd(fd).map_err(SupervisorError::Activation)?,
        None => Listener::bind(&config.bind, config.socket_mode)?,
    };
    let sigfd = signals::open().map_err(SupervisorError::Signals)?;
    let _pid_file = config.pid_file.as_ref().map(PidFile::write).transpose()?;
    let slots = Slots::create().map_err(|e| SupervisorError::Metrics(e.to_string()))?;
    let stats = MasterStats::default();
    let mut scrape = match config.metrics_bind.as_str() {
        "off" | "" => None,
        addr => {
            let addr = addr
                .parse()
                .map_err(|e| SupervisorError::Metrics(format!("--metrics-bind `{addr}`: {e}")))?;
            Some(scrape::Scraper::new(scrape::bind(addr).map_err(|e| {
                SupervisorError::Metrics(format!("cannot listen on {addr}: {e}"))
            })?))
        }
    };
    tracing::info!(
        bind = %config.bind,
        socket_activated,
        workers = config.workers,
        mode = config.mode.as_str(),
        version = env!("CARGO_PKG_VERSION"),
        "master started"
    );

    let mut pool = Pool::new(exe, &config, &slots, &stats);
    let mut notifier = notify::Notifier::new();
    loop {
        pool.reconcile(&listener);
        if pool.finished() {
            break;
        }
        let (ready, target, reloading) = pool.readiness();
        notifier.update(ready, target, reloading);
        let timeout = pool.next_wakeup().min(notifier.next_due()).min(TICK);
        let mut fds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        let scrape_fds = scrape
            .as_ref()
            .map(scrape::Scraper::fds)
            .unwrap_or_default();
        fds.extend(
            scrape_fds
                .iter()
                .map(|fd| PollFd::new(*fd, PollFlags::POLLIN)),
        );
        let controls = pool.control_fds();
        fds.extend(
            controls
                .iter()
                .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
        );
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(SupervisorError::Signals(e)),
        }
        drop(fds);
        drop(scrape_fds);
        drop(controls);
        pool.read_controls();
        if let Some(s) = &mut scrape {
            let mode = config.mode.as_str();
            s.serve(&|| metrics::render(mode, &slots, &stats, &pool.live()));
        }
        for event in signals::read(&sigfd) {
            match event {
                Event::Stop => {
                    notify::Notifier::stopping();
                    pool.stop(false);
                }
                Event::Quit => {
                    notify::Notifier::stopping();
                    pool.stop(true);
                }
                Event::Reload => {
                    notifier.reloading();
                    pool.reload();
                }
                Event::More => pool.resize(1),
                Event::Fewer => pool.resize(-1),
                Event::ReopenLogs => {
                    logging::reopen();
                    pool.forward(nix::sys::signal::Signal::SIGUSR1);
                }
                Event::Child => {}
            }
        }
        pool.reap();
        pool.check_timeouts();
    }
    tracing::info!("master exiting");
    Ok(())
}

/// The pid file, removed when the master exits.
struct PidFile(PathBuf);

impl PidFile {
    fn write(path: &PathBuf) -> Result<Self, SupervisorError> {
        std::fs::write(path, format!("{}\n", std::process::id())).map_err(|source| {
            SupervisorError::PidFile {
                path: path.clone(),
                source,
            }
        })?;
        Ok(PidFile(path.clone()))
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
