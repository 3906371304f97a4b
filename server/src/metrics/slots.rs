//! Per-worker metric slots in memory shared by the master and every worker.
//!
//! The master creates one `memfd` before it starts any worker and maps it; each worker maps the
//! same file and writes only its own [`Slot`] (its worker number), with relaxed atomics: one
//! writer per slot, no locks across processes. Counters are never reset: a replacement worker
//! takes a free slot and adds to what is there, and totals are summed over all slots, so a
//! scrape never sees a counter go backwards. Gauges of a dead worker are zeroed by the master
//! when it reaps it.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::mman::{MapFlags, ProtFlags, mmap, munmap};

/// Slots in the table; worker numbers run from 1 to `SLOTS - 1`.
pub const SLOTS: usize = 1024;

/// Upper bounds, in seconds, of the latency histograms' buckets (plus +Inf).
pub const BUCKETS_SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Routes counted separately in HTTP metrics.
pub const ROUTES: [&str; 7] = [
    "healthz",
    "websocket",
    "page",
    "api",
    "static",
    "admin",
    "other",
];
/// Status classes counted per route.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Websocket close codes counted separately; anything else counts as "other".
pub const CLOSE_CODES: [u16; 10] = [1000, 1001, 1002, 1003, 1006, 1007, 1008, 1009, 1011, 1013];

/// A latency histogram: per-bucket counts (not cumulative), count and sum.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Hist {
    /// One count per bucket of [`BUCKETS_SECONDS`], then +Inf.
    pub buckets: [AtomicU64; BUCKETS_SECONDS.len() + 1],
    /// Observations.
    pub count: AtomicU64,
    /// Sum of observations, in nanoseconds.
    pub sum_ns: AtomicU64,
}

impl Hist {
    /// Record one duration.
    pub fn observe(&self, d: std::time::Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS_SECONDS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS_SECONDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
    }
}

/// Everything one worker counts. `#[repr(C)]` and atomics only: it lives in shared memory.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Slot {
    /// Pid of the worker now writing this slot (0 = free).
    pub pid: AtomicU64,
    /// Gauge: open HTTP connections.
    pub http_open: AtomicU64,
    /// Gauge: open websockets.
    pub ws_open: AtomicU64,
    /// Gauge: 1 while this worker's Redis connections are up.
    pub redis_up: AtomicU64,
    /// Websockets opened.
    pub ws_opened: AtomicU64,
    /// Websockets closed, by code (see [`CLOSE_CODES`]; the last entry is "other").
    pub ws_closed: [AtomicU64; CLOSE_CODES.len() + 1],
    /// Websockets closed, by why (in the order of [`crate::ws::CloseReason::ALL`]): a ping
    /// timeout and a drain both close with 1001.
    pub ws_close_reasons: [AtomicU64; crate::ws::CloseReason::ALL.len()],
    /// Handshakes refused (400/403/426/503 before upgrade).
    pub ws_refused: AtomicU64,
    /// Messages received from clients.
    pub client_messages: AtomicU64,
    /// Messages published to Redis (one per channel).
    pub published: AtomicU64,
    /// Publishes that failed (Redis unavailable).
    pub publish_errors: AtomicU64,
    /// Messages written to sockets.
    pub delivered: AtomicU64,
    /// Sockets cut off for not keeping up.
    pub dropped_slow: AtomicU64,
    /// Client messages refused for size.
    pub dropped_oversize: AtomicU64,
    /// Messages the worker's Redis subscriber lost to lag.
    pub dropped_lagged: AtomicU64,
    /// Times this worker's Redis connection came back.
    pub redis_reconnects: AtomicU64,
    /// HTTP requests by route and status class.
    pub http_requests: [[AtomicU64; STATUS_CLASSES.len()]; ROUTES.len()],
    /// HTTP latency by route.
    pub http_latency: [Hist; ROUTES.len()],
    /// From a message's arrival from Redis to its write to a socket.
    pub fanout_latency: Hist,
    /// Requests refused because the worker was at its connection limit or draining.
    pub overload: AtomicU64,
    /// Connections whose request head was too large (hyper answered 431).
    pub http_head_too_large: AtomicU64,
    /// Connections whose request head was malformed (hyper answered 400).
    pub http_malformed: AtomicU64,
    /// Connections closed because the request headers did not arrive within --header-timeout.
    pub http_header_timeouts: AtomicU64,
    /// Failed logins (wrong username or password).
    pub login_failures: AtomicU64,
    /// Logins refused without a password check because of too many failures.
    pub login_throttled: AtomicU64,
    /// Missed messages sent to envelope sockets while recovering their position.
    pub recovered: AtomicU64,
    /// `recovery_failed` frames sent.
    pub recovery_failed: AtomicU64,
    /// Live gaps filled from the history.
    pub gaps_filled: AtomicU64,
    /// `recover` entries ignored (malformed or unknown).
    pub recover_ignored: AtomicU64,
    /// Gauge: presence entries this worker holds (one per socket and channel).
    pub presence_entries: AtomicU64,
    /// Presence writes (join, refresh, leave, sweep) that Redis did not do.
    pub presence_errors: AtomicU64,
}

impl Slot {
    /// Count a close code.
    pub fn closed(&self, code: u16) {
        let i = CLOSE_CODES
            .iter()
            .position(|c| *c == code)
            .unwrap_or(CLOSE_CODES.len());
        self.ws_closed[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Count an HTTP request.
    pub fn http(&self, route: usize, status: u16, took: std::time::Duration) {
        let route = route.min(ROUTES.len() - 1);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.http_requests[route][class].fetch_add(1, Ordering::Relaxed);
        self.http_latency[route].observe(took);
    }
}

/// The mapped table of [`SLOTS`] slots.
#[derive(Debug)]
pub struct Slots {
    base: NonNull<Slot>,
    fd: OwnedFd,
}

// SAFETY: the mapping holds only atomics, which are safe to share between threads (and
// processes); the pointer is valid for the life of `Slots`.
unsafe impl Send for Slots {}
// SAFETY: as above; all access goes through `&Slot`, whose fields are atomics.
unsafe impl Sync for Slots {}

/// Why the table could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("metric slots: {0}")]
pub struct SlotsError(#[from] nix::Error);

const BYTES: usize = SLOTS * std::mem::size_of::<Slot>();

impl Slots {
    /// Create the table (master, before any worker starts).
    pub fn create() -> Result<Self, SlotsError> {
        let fd = nix::sys::memfd::memfd_create(
            c"wsredis-metrics",
            nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
        )?;
        nix::unistd::ftruncate(&fd, BYTES as i64)?;
        Self::map(fd)
    }

    /// Map a table the master created (worker).
    pub fn attach(fd: OwnedFd) -> Result<Self, SlotsError> {
        Self::map(fd)
    }

    /// A private table for in-process tests and one-off runs.
    pub fn private() -> Result<Self, SlotsError> {
        Self::create()
    }

    fn map(fd: OwnedFd) -> Result<Self, SlotsError> {
        let len = std::num::NonZeroUsize::new(BYTES).expect("non-zero table");
        // SAFETY: a fresh shared mapping of a file of exactly `BYTES` bytes (ftruncate zero-fills
        // it, and all-zero bytes are valid atomics); we never unmap it while `Slots` lives.
        let ptr = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )?
        };
        Ok(Slots {
            base: ptr.cast(),
            fd,
        })
    }

    /// Slot `i` (clamped into the table).
    pub fn slot(&self, i: usize) -> &Slot {
        let i = i.min(SLOTS - 1);
        // SAFETY: `i < SLOTS`, the mapping holds SLOTS slots, and Slot is all atomics.
        unsafe { &*self.base.as_ptr().add(i) }
    }

    /// Every slot.
    pub fn iter(&self) -> impl Iterator<Item = &Slot> {
        (0..SLOTS).map(|i| self.slot(i))
    }

    /// The memfd, handed to workers.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether worker `me` holds clearly more than its share of open connections among the
    /// live workers (those whose slot has a pid). A worker in that state pauses accepting for a
    /// moment so its siblings take the next connections: with one shared listening socket the
    /// kernel hands a connection to whichever worker asks first, which can pile every socket of
    /// a quiet server onto one worker.
    pub fn over_share(&self, me: usize) -> bool {
        let load =
            |s: &Slot| s.ws_open.load(Ordering::Relaxed) + s.http_open.load(Ordering::Relaxed);
        let (mut live, mut total) = (0u64, 0u64);
        for s in self.iter() {
            if s.pid.load(Ordering::Relaxed) != 0 {
                live += 1;
                total += load(s);
            }
        }
        if live < 2 {
            return false;
        }
        let mine = load(self.slot(me));
        // 10 % above the mean plus a little slack, so small numbers never stall anyone.
        mine * 10 * live > total * 11 + 16 * 10 * live
    }

    /// Workers alive (those whose slot has a pid).
    pub fn live(&self) -> usize {
        self.iter()
            .filter(|s| s.pid.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Zero the gauges of a slot whose worker is gone (master, after reaping).
    pub fn release(&self, i: usize) {
        let s = self.slot(i);
        s.pid.store(0, Ordering::Relaxed);
        s.http_open.store(0, Ordering::Relaxed);
        s.ws_open.store(0, Ordering::Relaxed);
        s.redis_up.store(0, Ordering::Relaxed);
        s.presence_entries.store(0, Ordering::Relaxed);
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped; no reference into it outlives `self`
        // because every `&Slot` borrows `self`.
        unsafe {
            let _ = munmap(self.base.cast(), BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_sum() {
        let h = Hist::default();
        h.observe(std::time::Duration::from_micros(50));
        h.observe(std::time::Duration::from_millis(3));
        h.observe(std::time::Duration::from_secs(60));
        assert_eq!(h.buckets[0].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[5].load(Ordering::Relaxed), 1);
        assert_eq!(h.buckets[BUCKETS_SECONDS.len()].load(Ordering::Relaxed), 1);
        assert_eq!(h.count.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn slots_are_shared_through_the_fd() {
        let a = Slots::create().unwrap();
        let fd = a.as_fd().try_clone_to_owned().unwrap();
        let b = Slots::attach(fd).unwrap();
        a.slot(3).delivered.fetch_add(7, Ordering::Relaxed);
        assert_eq!(b.slot(3).delivered.load(Ordering::Relaxed), 7);
        b.slot(3).closed(1001);
        b.slot(3).closed(4000);
        assert_eq!(a.slot(3).ws_closed[1].load(Ordering::Relaxed), 1);
        assert_eq!(
            a.slot(3).ws_closed[CLOSE_CODES.len()].load(Ordering::Relaxed),
            1
        );
    }
}
