//! Per-worker socket counters: plain atomics, bumped by the sessions, read by the metrics
//! exporter. Relaxed ordering everywhere: each counter is independent.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a socket ended, with the close code we sent (if any).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// The client sent a close frame (we answered it).
    Client,
    /// Worker shutdown: 1001 "going away".
    GoingAway,
    /// The client broke the protocol: 1002.
    Protocol,
    /// Invalid UTF-8 in a text message: 1007.
    InvalidData,
    /// A message over `max_message_size`: 1009.
    TooBig,
    /// The socket's send queue overflowed (slow consumer): 1013.
    Overloaded,
    /// Redis was unavailable when the client published: 1013.
    RedisDown,
    /// Redis refused the publish: 1011.
    RedisError,
    /// No frame from the client within two ping intervals: 1001 "ping timeout".
    PingTimeout,
    /// The connection dropped without a close handshake (I/O error, EOF, write timeout).
    Abnormal,
}

impl CloseReason {
    /// Every reason, in counter order.
    pub const ALL: [CloseReason; 10] = [
        CloseReason::Client,
        CloseReason::GoingAway,
        CloseReason::Protocol,
        CloseReason::InvalidData,
        CloseReason::TooBig,
        CloseReason::Overloaded,
        CloseReason::RedisDown,
        CloseReason::RedisError,
        CloseReason::PingTimeout,
        CloseReason::Abnormal,
    ];

    /// A short label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::GoingAway => "going_away",
            CloseReason::Protocol => "protocol",
            CloseReason::InvalidData => "invalid_data",
            CloseReason::TooBig => "too_big",
            CloseReason::Overloaded => "overloaded",
            CloseReason::RedisDown => "redis_down",
            CloseReason::RedisError => "redis_error",
            CloseReason::PingTimeout => "ping_timeout",
            CloseReason::Abnormal => "abnormal",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counters of one worker's sockets.
#[derive(Debug, Default)]
pub struct Stats {
    /// Sockets whose session started.
    pub opened: AtomicU64,
    closed: [AtomicU64; CloseReason::ALL.len()],
    /// Data messages received from clients (heartbeats included).
    pub received: AtomicU64,
    /// Client messages published to Redis (once per message, whatever the channel count).
    pub published: AtomicU64,
    /// Messages sent to clients (live and replayed; heartbeats excluded).
    pub delivered: AtomicU64,
    /// Stored messages replayed on connect.
    pub replayed: AtomicU64,
    /// Own messages not echoed back (no `echo` flag).
    pub echo_suppressed: AtomicU64,
    /// Sockets cut off because their queue overflowed (also counted as `Overloaded`).
    pub dropped: AtomicU64,
    /// Outgoing messages skipped because they exceed the write buffer bound.
    pub too_large: AtomicU64,
    /// Heartbeats sent.
    pub heartbeats: AtomicU64,
    /// Missed messages sent to envelope sockets while recovering their position.
    pub recovered: AtomicU64,
    /// `recovery_failed` frames sent (on connect or for a live gap).
    pub recovery_failed: AtomicU64,
    /// Live gaps (lost pub/sub messages) filled from the history.
    pub gaps_filled: AtomicU64,
    /// `recover` entries ignored: malformed, or for a channel the socket does not keep history of.
    pub recover_ignored: AtomicU64,
    /// From a message's arrival from Redis to its write to this worker's sockets.
    pub fanout: crate::metrics::Hist,
}

impl Stats {
    /// Add one to a counter.
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Add `n` to a counter.
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn record_close(&self, reason: CloseReason) {
        Stats::inc(&self.closed[reason.index()]);
    }

    /// Sockets that ended for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.closed[reason.index()].load(Ordering::Relaxed)
    }

    /// Sockets open right now.
    pub fn open(&self) -> u64 {
        let closed: u64 = CloseReason::ALL.iter().map(|r| self.closed(*r)).sum();
        self.opened.load(Ordering::Relaxed).saturating_sub(closed)
    }
}
