//! The worker table and the policy that keeps it at the wanted size.
//!
//! Each worker goes `Booting → Ready → Draining → (reaped)`. The wanted number of ready,
//! non-draining workers is `target`; [`Pool::reconcile`] moves toward it on every turn of the
//! master's loop. A rolling reload bumps the generation: while any worker of an older
//! generation (or one that asked to be recycled) is still serving, one replacement boots at a
//! time, and only when it is ready does one old worker drain, so capacity never drops.

use std::collections::BTreeSet;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use super::children;
use super::listener::Listener;
use crate::config::Config;
use crate::metrics::{LiveWorker, MasterStats, RestartCause, Slots};

/// One byte a worker writes on its control pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Control {
    /// The worker is accepting connections.
    Ready = b'R',
    /// The worker's runtime is alive (sent every second).
    Heartbeat = b'H',
    /// The worker reached --max-requests and asks to be replaced.
    Recycle = b'X',
}

/// A worker that dies before it is ready, or sooner than this after its start, counts as a
/// failed start (backoff); any other death is replaced at once.
const MIN_HEALTHY_LIFETIME: Duration = Duration::from_secs(1);
/// Longest delay between restarts of a worker that keeps failing at start.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// First delay after two quick failures in a row.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Booting,
    Ready,
    Draining,
}

#[derive(Debug)]
struct Worker {
    /// Slot number: the smallest free one at spawn; names the worker in logs.
    id: usize,
    pid: Pid,
    control: OwnedFd,
    state: State,
    generation: u64,
    /// Asked to be replaced (max-requests) or belongs to an older generation.
    recycle: bool,
    started: Instant,
    last_beat: Instant,
    /// When SIGTERM was sent (draining), for the kill deadline.
    term_sent: Option<Instant>,
    /// Killed for a silent heartbeat (for the restart cause).
    timed_out: bool,
}

/// The master's view of its workers.
#[derive(Debug)]
pub(crate) struct Pool<'m> {
    slots: &'m Slots,
    stats: &'m MasterStats,
    exe: PathBuf,
    config_json: String,
    target: usize,
    generation: u64,
    workers: Vec<Worker>,
    graceful: Duration,
    worker_timeout: Option<Duration>,
    /// Failed starts in a row, for backoff.
    failures: u32,
    /// No spawn before this instant.
    spawn_after: Instant,
    stopping: Option<Instant>,
    /// Whether a reload is in progress (for the "reload finished" log line).
    reloading: bool,
}

impl<'m> Pool<'m> {
    pub(crate) fn new(
        exe: PathBuf,
        config: &Config,
        slots: &'m Slots,
        stats: &'m MasterStats,
    ) -> Self {
        Pool {
            slots,
            stats,
            exe,
            config_json: children::config_json(config),
            target: config.workers,
            generation: 0,
            workers: Vec::new(),
            graceful: config.graceful(),
            worker_timeout: (config.worker_timeout > 0)
                .then(|| Duration::from_secs(config.worker_timeout)),
            failures: 0,
            spawn_after: Instant::now(),
            stopping: None,
            reloading: false,
        }
    }

    /// True once stopping and every worker is reaped.
    pub(crate) fn finished(&self) -> bool {
        self.stopping.is_some() && self.workers.is_empty()
    }

    /// How long the loop may sleep before something here is due.
    pub(crate) fn next_wakeup(&self) -> Duration {
        self.spawn_after
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }

    /// Read ends of every worker's control pipe, for poll.
    pub(crate) fn control_fds(&self) -> Vec<BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.workers.iter().map(|w| w.control.as_fd()).collect()
    }

    fn is_old(&self, w: &Worker) -> bool {
        w.recycle || w.generation < self.generation
    }

    /// Start or drain workers to move toward the target.
    pub(crate) fn reconcile(&mut self, listener: &Listener) {
        if self.stopping.is_some() {
            return;
        }
        let serving = |w: &&Worker| w.state != State::Draining;
        let old = self
            .workers
            .iter()
            .filter(serving)
            .filter(|w| self.is_old(w))
            .count();
        let fresh_booting = self
            .workers
            .iter()
            .filter(|w| w.state == State::Booting && !self.is_old(w))
            .count();
        let fresh_ready = self
            .workers
            .iter()
            .filter(|w| w.state == State::Ready && !self.is_old(w))
            .count();

        // Drain what is beyond the target, old workers first, and only once enough fresh ones
        // are ready: this is what keeps a reload from losing capacity.
        let mut excess = (fresh_ready + old).saturating_sub(self.target);
        while excess > 0 {
            let victim = self
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| w.state != State::Draining)
                .max_by_key(|(_, w)| (self.is_old(w), w.state == State::Booting, w.id))
                .map(|(i, _)| i);
            let Some(i) = victim else { break };
            self.drain(i);
            excess -= 1;
        }
        if old == 0 && self.reloading && fresh_booting == 0 {
            self.reloading = false;
            tracing::info!(workers = fresh_ready, "reload finished");
        }

        // Start what is missing: during a reload one replacement at a time (surge of one).
        let want_more = if old > 0 {
            fresh_booting == 0 && fresh_ready < self.target
        } else {
            fresh_booting + fresh_ready < self.target
        };
        if want_more && Instant::now() >= self.spawn_after {
            self.spawn(listener);
        }
    }

    fn spawn(&mut self, listener: &Listener) {
        let used: BTreeSet<usize> = self.workers.iter().map(|w| w.id).collect();
        let id = (1..).find(|i| !used.contains(i)).expect("a free slot");
        match children::spawn(
            &self.exe,
            id,
            &self.config_json,
            listener.as_fd(),
            self.slots.as_fd(),
        ) {
            Ok(s) => {
                tracing::debug!(worker = id, pid = s.pid.as_raw(), "worker started");
                let now = Instant::now();
                self.workers.push(Worker {
                    id,
                    pid: s.pid,
                    control: s.control,
                    state: State::Booting,
                    generation: self.generation,
                    recycle: false,
                    started: now,
                    last_beat: now,
                    term_sent: None,
                    timed_out: false,
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker");
                self.note_failure();
            }
        }
    }

    fn note_failure(&mut self) {
        self.failures += 1;
        // The first failure is retried at once; repeated ones back off exponentially.
        let delay = if self.failures <= 1 {
            Duration::ZERO
        } else {
            (FIRST_BACKOFF * 2u32.saturating_pow(self.failures - 2)).min(MAX_BACKOFF)
        };
        if delay > Duration::ZERO {
            tracing::warn!(
                failures = self.failures,
                delay_ms = delay.as_millis() as u64,
                "workers keep failing at start; backing off"
            );
        }
        self.spawn_after = Instant::now() + delay;
    }

    fn drain(&mut self, i: usize) {
        let old = self.is_old(&self.workers[i]);
        let recycle = self.workers[i].recycle;
        if self.stopping.is_none() && old {
            self.stats.restarted(if recycle {
                RestartCause::Recycle
            } else {
                RestartCause::Reload
            });
        }
        let w = &mut self.workers[i];
        tracing::info!(worker = w.id, pid = w.pid.as_raw(), "draining worker");
        w.state = State::Draining;
        w.term_sent = Some(Instant::now());
        let _ = kill(w.pid, Signal::SIGTERM);
    }

    /// Read every pending control byte.
    pub(crate) fn read_controls(&mut self) {
        let now = Instant::now();
        let mut ready_now = Vec::new();
        for w in &mut self.workers {
            let mut buf = [0u8; 64];
            loop {
                match nix::unistd::read(&w.control, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        for &b in &buf[..n] {
                            w.last_beat = now;
                            if b == Control::Ready as u8 && w.state == State::Booting {
                                w.state = State::Ready;
                                ready_now.push((w.id, w.pid, now - w.started));
                            } else if b == Control::Recycle as u8 && !w.recycle {
                                tracing::info!(worker = w.id, "worker reached max requests");
                                w.recycle = true;
                            }
                        }
                    }
                }
            }
        }
        for (id, pid, boot) in ready_now {
            tracing::info!(
                worker = id,
                pid = pid.as_raw(),
                boot_ms = boot.as_millis() as u64,
                "worker ready"
            );
        }
    }

    /// Reap every exited child; unexpected deaths count toward backoff.
    pub(crate) fn reap(&mut self) {
        while let Some((status, cpu)) = reap_one() {
            let Some(pid) = status.pid() else { continue };
            let Some(i) = self.workers.iter().position(|w| w.pid == pid) else {
                continue;
            };
            let w = self.workers.swap_remove(i);
            self.slots.release(w.id);
            self.stats.retire_cpu(cpu);
            let expected = w.state == State::Draining || self.stopping.is_some();
            let lifetime = w.started.elapsed();
            match (expected, status) {
                (true, _) => {
                    tracing::info!(worker = w.id, pid = pid.as_raw(), ?status, "worker exited")
                }
                (false, _) => {
                    self.stats.restarted(if w.timed_out {
                        RestartCause::Timeout
                    } else {
                        RestartCause::Crash
                    });
                    tracing::warn!(
                        worker = w.id,
                        pid = pid.as_raw(),
                        ?status,
                        lifetime_ms = lifetime.as_millis() as u64,
                        "worker died; replacing it"
                    );
                    if w.state == State::Booting || lifetime < MIN_HEALTHY_LIFETIME {
                        self.note_failure();
                    } else {
                        self.failures = 0;
                        self.spawn_after = Instant::now();
                    }
                }
            }
            if w.state == State::Ready && lifetime >= MIN_HEALTHY_LIFETIME {
                self.failures = 0;
            }
        }
    }

    /// Kill workers whose heartbeat stopped, and drained workers past the grace period.
    pub(crate) fn check_timeouts(&mut self) {
        let now = Instant::now();
        for w in &mut self.workers {
            if let Some(t) = w.term_sent
                && now.duration_since(t) > self.graceful
            {
                tracing::warn!(
                    worker = w.id,
                    pid = w.pid.as_raw(),
                    "grace period over; killing"
                );
                let _ = kill(w.pid, Signal::SIGKILL);
                w.term_sent = None;
                continue;
            }
            if let Some(limit) = self.worker_timeout
                && w.state != State::Draining
                && now.duration_since(w.last_beat) > limit
            {
                tracing::error!(
                    worker = w.id,
                    pid = w.pid.as_raw(),
                    silent_s = now.duration_since(w.last_beat).as_secs(),
                    "worker stopped answering its heartbeat; killing it"
                );
                let _ = kill(w.pid, Signal::SIGKILL);
                w.last_beat = now;
                w.timed_out = true;
            }
        }
    }

    /// TERM/INT (graceful) or QUIT (immediate).
    pub(crate) fn stop(&mut self, immediate: bool) {
        if immediate {
            tracing::info!(workers = self.workers.len(), "immediate stop");
            for w in &self.workers {
                let _ = kill(w.pid, Signal::SIGKILL);
            }
            self.stopping = Some(Instant::now());
            return;
        }
        if self.stopping.is_some() {
            return;
        }
        tracing::info!(
            workers = self.workers.len(),
            grace_s = self.graceful.as_secs(),
            "graceful stop"
        );
        self.stopping = Some(Instant::now());
        for i in 0..self.workers.len() {
            if self.workers[i].state != State::Draining {
                self.drain(i);
            }
        }
    }

    /// HUP: replace every worker, one at a time.
    pub(crate) fn reload(&mut self) {
        if self.stopping.is_some() {
            return;
        }
        self.generation += 1;
        self.reloading = true;
        tracing::info!(generation = self.generation, "rolling reload");
    }

    /// TTIN/TTOU.
    pub(crate) fn resize(&mut self, delta: isize) {
        let target = (self.target as isize + delta).clamp(1, 512) as usize;
        if target != self.target {
            tracing::info!(from = self.target, to = target, "worker count changed");
        }
        self.target = target;
    }

    /// Ready serving workers, the target, and whether a reload is under way (for systemd).
    pub(crate) fn readiness(&self) -> (usize, usize, bool) {
        let ready = self
            .workers
            .iter()
            .filter(|w| w.state == State::Ready && !self.is_old(w))
            .count();
        (ready, self.target, self.reloading)
    }

    /// Live workers, for metrics.
    pub(crate) fn live(&self) -> Vec<LiveWorker> {
        self.workers
            .iter()
            .map(|w| LiveWorker {
                slot: w.id,
                pid: w.pid.as_raw(),
            })
            .collect()
    }

    /// Send a signal to every live worker.
    pub(crate) fn forward(&self, signal: Signal) {
        for w in &self.workers {
            let _ = kill(w.pid, signal);
        }
    }
}

/// Reap one exited child without blocking: its status and the CPU seconds it used.
#[allow(unsafe_code)]
fn reap_one() -> Option<(WaitStatus, f64)> {
    let mut status: libc::c_int = 0;
    // SAFETY: all-zero bytes are a valid `rusage`; wait4 fills it in for the reaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals of the right types.
    let pid = unsafe { libc::wait4(-1, &mut status, libc::WNOHANG, &mut usage) };
    if pid <= 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let cpu = secs(usage.ru_utime) + secs(usage.ru_stime);
    let status = WaitStatus::from_raw(Pid::from_raw(pid), status).ok()?;
    Some((status, cpu))
}
