//! Delivery accounting shared by every receiving task of a run: who got which message when,
//! what is complete, what is lost, and the latency histograms.
//!
//! Invariants:
//! - Each receiver checks its own stream: a sequence number below or equal to the last one it
//!   saw is a duplicate or reordering, counted, never silently accepted.
//! - A message is *complete* when `fanout` receivers got it; the completion time minus the send
//!   time is the message's last-delivery latency. For broadcasts completion is in sequence
//!   order (every receiver gets messages in order), which the windowed publisher relies on.
//! - Histograms are sharded by thread, so recording never contends across runtime threads.
//! - Times are nanoseconds of CLOCK_MONOTONIC, one clock for every process of the machine, so
//!   a stamp sent by one process of the tool and received by another measures a real interval.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use crate::body::Stamp;

/// Completion slots; the publisher never runs further ahead of completion than this.
pub const RING: usize = 1 << 16;
const SHARDS: usize = 16;
/// Latencies are recorded in microseconds, up to one minute.
const MAX_US: u64 = 60_000_000;

/// One receiver's view of its own stream.
#[derive(Debug, Default, Clone, Copy)]
pub struct Receiver {
    next: u64,
    /// Messages this receiver got.
    pub received: u64,
}

/// The shared accounting of a run.
pub struct Tracker {
    fanout: u32,
    slots: Box<[AtomicU32]>,
    /// Number of leading messages complete (all of 0..completed are complete).
    completed: AtomicU64,
    /// Woken whenever a message completes.
    pub progress: Notify,
    delivered: AtomicU64,
    disorder: AtomicU64,
    all: Vec<Mutex<Histogram<u64>>>,
    last: Mutex<Histogram<u64>>,
    first_recv_ns: AtomicU64,
    last_recv_ns: AtomicU64,
    /// Completed messages not yet taken: (seq, sent ns, completion ns), when asked for.
    log: Option<Mutex<Vec<Completion>>>,
}

/// A message complete in one tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Completion {
    /// The message.
    pub seq: u64,
    /// Its send time (the stamp's).
    pub sent_ns: u64,
    /// When its last delivery here was received.
    pub done_ns: u64,
}

/// Now on CLOCK_MONOTONIC, nanoseconds (what every `Stamp` carries).
pub fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds")
}

fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local!(static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS);
    SHARD.with(|s| *s)
}

impl Tracker {
    /// Accounting for messages each delivered to `fanout` receivers.
    pub fn new(fanout: u32) -> Arc<Self> {
        Self::build(fanout, false)
    }

    /// [`Tracker::new`], also logging each completion for [`Tracker::take_completions`].
    pub fn logging(fanout: u32) -> Arc<Self> {
        Self::build(fanout, true)
    }

    fn build(fanout: u32, log: bool) -> Arc<Self> {
        Arc::new(Tracker {
            fanout: fanout.max(1),
            slots: (0..RING).map(|_| AtomicU32::new(0)).collect(),
            completed: AtomicU64::new(0),
            progress: Notify::new(),
            delivered: AtomicU64::new(0),
            disorder: AtomicU64::new(0),
            all: (0..SHARDS).map(|_| Mutex::new(histogram())).collect(),
            last: Mutex::new(histogram()),
            first_recv_ns: AtomicU64::new(u64::MAX),
            last_recv_ns: AtomicU64::new(0),
            log: log.then(|| Mutex::new(Vec::new())),
        })
    }

    /// Now, nanoseconds on the clock of every `Stamp` (see [`now_ns`]).
    pub fn now_ns(&self) -> u64 {
        now_ns()
    }

    /// Record one measured delivery to `rx`.
    pub fn record(&self, rx: &mut Receiver, stamp: Stamp) {
        let now = self.now_ns();
        if stamp.seq < rx.next {
            self.disorder.fetch_add(1, Ordering::Relaxed);
            return;
        }
        rx.next = stamp.seq + 1;
        rx.received += 1;
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.first_recv_ns.fetch_min(now, Ordering::Relaxed);
        self.last_recv_ns.fetch_max(now, Ordering::Relaxed);
        let us = (now.saturating_sub(stamp.sent_ns) / 1000).clamp(1, MAX_US);
        if let Ok(mut h) = self.all[shard()].lock() {
            let _ = h.record(us);
        }
        let slot = &self.slots[(stamp.seq as usize) % RING];
        if slot.fetch_add(1, Ordering::AcqRel) + 1 == self.fanout {
            slot.store(0, Ordering::Release);
            if let Some(Ok(mut log)) = self.log.as_ref().map(|l| l.lock()) {
                log.push(Completion {
                    seq: stamp.seq,
                    sent_ns: stamp.sent_ns,
                    done_ns: now,
                });
            }
            self.complete(stamp.seq, us);
        }
    }

    /// Count message `seq` complete, its last delivery `us` after its send (a tracker of
    /// several processes' completions calls this itself).
    pub fn complete(&self, seq: u64, us: u64) {
        if let Ok(mut h) = self.last.lock() {
            let _ = h.record(us.clamp(1, MAX_US));
        }
        self.completed.fetch_max(seq + 1, Ordering::AcqRel);
        self.progress.notify_waiters();
    }

    /// The completions logged since the last call (empty unless made by [`Tracker::logging`]).
    pub fn take_completions(&self) -> Vec<Completion> {
        self.log
            .as_ref()
            .and_then(|l| l.lock().ok().map(|mut v| std::mem::take(&mut *v)))
            .unwrap_or_default()
    }

    /// Messages complete so far (for broadcasts: a prefix of the sequence).
    pub fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Deliveries recorded so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Wait until `n` messages are complete or `deadline` passes; returns whether they were.
    pub async fn wait_completed(&self, n: u64, deadline: Instant) -> bool {
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.completed() >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline.into(), notified)
                .await
                .is_err()
            {
                return self.completed() >= n;
            }
        }
    }

    /// Everything measured, for the report.
    pub fn summary(&self) -> Summary {
        let mut all = histogram();
        for h in &self.all {
            if let Ok(h) = h.lock() {
                let _ = all.add(&*h);
            }
        }
        let last = self
            .last
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|_| histogram());
        let first = self.first_recv_ns.load(Ordering::Relaxed);
        Summary {
            delivered: self.delivered(),
            disorder: self.disorder.load(Ordering::Relaxed),
            all,
            last,
            first_recv_ns: (first != u64::MAX).then_some(first),
            last_recv_ns: self.last_recv_ns.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of a tracker.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Measured deliveries.
    pub delivered: u64,
    /// Duplicates or out-of-order deliveries (must be 0).
    pub disorder: u64,
    /// Latency of every delivery, µs.
    pub all: Histogram<u64>,
    /// Latency of each message's last delivery, µs.
    pub last: Histogram<u64>,
    /// First and last receipt, ns (CLOCK_MONOTONIC).
    pub first_recv_ns: Option<u64>,
    /// See `first_recv_ns`.
    pub last_recv_ns: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_disorder_and_histograms() {
        let t = Tracker::new(2);
        let (mut a, mut b) = (Receiver::default(), Receiver::default());
        let s = |seq| Stamp { seq, sent_ns: 0 };
        t.record(&mut a, s(0));
        assert_eq!(t.completed(), 0);
        t.record(&mut b, s(0));
        assert_eq!(t.completed(), 1);
        t.record(&mut a, s(0));
        assert_eq!(t.summary().disorder, 1, "a duplicate is disorder");
        t.record(&mut a, s(1));
        t.record(&mut b, s(1));
        let sum = t.summary();
        assert_eq!((sum.delivered, sum.all.len(), sum.last.len()), (4, 4, 2));
        assert_eq!(t.completed(), 2);
        assert_eq!(a.received, 2);
    }
}
