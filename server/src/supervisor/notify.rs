//! systemd integration: readiness notifications, the watchdog, and socket activation.
//!
//! With `Type=notify`, the master alone talks to systemd (`NotifyAccess=main`): `READY=1`
//! once every worker has reported ready, `RELOADING=1` (with `MONOTONIC_USEC`) when a HUP
//! reload starts and `READY=1` when it is done, `STOPPING=1` on stop, `STATUS=` with the
//! worker count, and `WATCHDOG=1` at half of `WatchdogSec`. Without `NOTIFY_SOCKET` all of this
//! is a no-op.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// What the master tells systemd, and when the next watchdog ping is due.
#[derive(Debug)]
pub(super) struct Notifier {
    announced_ready: bool,
    reloading: bool,
    status: String,
    watchdog: Option<(Duration, Instant)>,
}

impl Notifier {
    pub(super) fn new() -> Self {
        Notifier {
            announced_ready: false,
            reloading: false,
            status: String::new(),
            watchdog: sd_notify::watchdog_enabled().map(|d| (d / 2, Instant::now())),
        }
    }

    fn send(states: &[NotifyState<'_>]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// Called every turn of the loop with the pool's state.
    pub(super) fn update(&mut self, ready: usize, target: usize, reloading: bool) {
        let status = format!("{ready} of {target} workers ready");
        if status != self.status {
            Self::send(&[NotifyState::Status(&status)]);
            self.status = status;
        }
        if !self.announced_ready && ready >= target {
            self.announced_ready = true;
            Self::send(&[NotifyState::Ready]);
        }
        if self.reloading && !reloading {
            Self::send(&[NotifyState::Ready]);
        }
        self.reloading = reloading;
        if let Some((every, last)) = &mut self.watchdog
            && last.elapsed() >= *every
        {
            Self::send(&[NotifyState::Watchdog]);
            *last = Instant::now();
        }
    }

    /// A HUP reload begins.
    pub(super) fn reloading(&mut self) {
        let mut states = vec![NotifyState::Reloading];
        if let Ok(now) = NotifyState::monotonic_usec_now() {
            states.push(now);
        }
        Self::send(&states);
        self.reloading = true;
    }

    /// The master is stopping.
    pub(super) fn stopping() {
        Self::send(&[NotifyState::Stopping]);
    }

    /// Longest the loop may sleep before the next watchdog ping.
    pub(super) fn next_due(&self) -> Duration {
        self.watchdog.map_or(Duration::MAX, |(every, last)| {
            every.saturating_sub(last.elapsed())
        })
    }
}

/// Sockets systemd handed us (`LISTEN_FDS`), by name: the one named `metrics` (if any) is the
/// metrics endpoint, the first other one is the server's listener.
#[derive(Debug, Default)]
pub(super) struct Activated {
    pub(super) listener: Option<std::os::fd::OwnedFd>,
    pub(super) metrics: Option<std::os::fd::OwnedFd>,
}

/// Take the sockets of socket activation, if this process was given any.
#[allow(unsafe_code)]
pub(super) fn activated() -> std::io::Result<Activated> {
    use std::os::fd::FromRawFd;
    let mut out = Activated::default();
    let named: Vec<(i32, String)> = match sd_notify::listen_fds_with_names() {
        Ok(fds) => fds.collect(),
        // LISTEN_FDNAMES is optional: fall back to unnamed fds.
        Err(_) => sd_notify::listen_fds()?
            .map(|fd| (fd, String::new()))
            .collect(),
    };
    for (fd, name) in named {
        // SAFETY: systemd passed this fd to us (LISTEN_PID is our pid, checked by sd_notify);
        // nothing else in the process owns it, and each is taken once here.
        let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        if name == "metrics" && out.metrics.is_none() {
            out.metrics = Some(owned);
        } else if out.listener.is_none() {
            out.listener = Some(owned);
        }
    }
    Ok(out)
}
