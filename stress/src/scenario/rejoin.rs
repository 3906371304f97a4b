//! One `recovery` subscriber: an envelope socket that, when told to drop (or when the server
//! ends it), resets its TCP connection and reconnects with `recover=` its last position, and
//! notes every numbered message in its own ledger. What all subscribers share is [`Ctx`].
//!
//! Invariant: a dropped socket counts as pending from the drop until its `recovered` (or
//! `recovery_failed`) frame, so the run can wait for every socket to have caught up.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Notify;

use super::Shared;
use crate::body::{self, Stamp};
use crate::client::{Conn, Endpoint};
use crate::envelope::{self, Arrival, Ledger, OFFER, Position};
use crate::tracker::{Receiver, Tracker};

/// The audience label of the broadcast channel.
const CH: &str = "broadcast";
/// Pause between attempts when a reconnect is refused.
const RETRY: Duration = Duration::from_millis(50);

/// What the subscriber tasks share.
pub struct Ctx {
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) env_endpoint: Endpoint,
    pub(crate) path: String,
    pub(crate) warm: Vec<u8>,
    pub(crate) deadline: Instant,
    /// Set once the last wave has reconnected and the run is draining: no more reconnects.
    pub(crate) stop: AtomicBool,
    /// Sockets dropped and not yet caught up (`recovered` or `recovery_failed` received).
    pub(crate) pending: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) reconnected: AtomicU64,
    pub(crate) reconnect_errors: AtomicU64,
    pub(crate) no_position: AtomicU64,
    pub(crate) recovered_frames: AtomicU64,
    pub(crate) recovered_messages: AtomicU64,
    pub(crate) recovery_failed: AtomicU64,
    pub(crate) unique: AtomicU64,
    pub(crate) duplicated: AtomicU64,
    pub(crate) out_of_order: AtomicU64,
    /// Drop → 101, µs.
    pub(crate) reconnect_us: Mutex<Histogram<u64>>,
    /// Drop → `recovered`, µs.
    pub(crate) caught_up_us: Mutex<Histogram<u64>>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn record(h: &Mutex<Histogram<u64>>, since: Instant) {
    if let Ok(mut h) = h.lock() {
        let _ = h.record((since.elapsed().as_micros() as u64).clamp(1, 60_000_000));
    }
}

/// One subscriber's state across reconnects.
struct Sub {
    i: usize,
    pos: Option<Position>,
    ledger: Ledger,
    rx: Receiver,
    warmed: bool,
    /// When the socket was dropped, until it has caught up.
    dropped_at: Option<Instant>,
}

impl Sub {
    fn on_frame(&mut self, ctx: &Ctx, body: &[u8]) {
        let Some(env) = envelope::parse(body) else {
            return;
        };
        if env.ch != CH {
            return;
        }
        match env.kind.as_str() {
            "message" => {
                if let (Some(offset), Some(epoch)) = (env.offset, env.epoch) {
                    self.pos = Some(Position { epoch, offset });
                }
                let Some(data) = env.data else { return };
                if let Some(stamp) = body::decode(data.as_bytes()) {
                    self.on_number(ctx, stamp);
                } else if !self.warmed && data.as_bytes() == &ctx.warm[..] {
                    self.warmed = true;
                    ctx.shared.warmed.fetch_add(1, Ordering::Relaxed);
                    ctx.shared.warm_notify.notify_waiters();
                }
            }
            kind @ ("recovered" | "recovery_failed") => {
                if kind == "recovered" {
                    ctx.recovered_frames.fetch_add(1, Ordering::Relaxed);
                    ctx.recovered_messages
                        .fetch_add(env.count.unwrap_or(0), Ordering::Relaxed);
                } else {
                    ctx.recovery_failed.fetch_add(1, Ordering::Relaxed);
                }
                if let (Some(offset), Some(epoch)) = (env.offset, env.epoch) {
                    self.pos = Some(Position { epoch, offset });
                }
                self.caught_up(ctx);
            }
            _ => {}
        }
    }

    fn on_number(&mut self, ctx: &Ctx, stamp: Stamp) {
        match self.ledger.note(stamp.seq) {
            Arrival::InOrder => {
                ctx.unique.fetch_add(1, Ordering::Relaxed);
                ctx.tracker.record(&mut self.rx, stamp);
            }
            Arrival::Late => {
                ctx.unique.fetch_add(1, Ordering::Relaxed);
                ctx.out_of_order.fetch_add(1, Ordering::Relaxed);
            }
            Arrival::Duplicate => {
                ctx.duplicated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn caught_up(&mut self, ctx: &Ctx) {
        if let Some(at) = self.dropped_at.take() {
            record(&ctx.caught_up_us, at);
            ctx.pending.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Reconnect with the last position; `None` when the run ends first.
    async fn reconnect(&mut self, ctx: &Ctx, src: Option<std::net::IpAddr>) -> Option<Conn> {
        let at = self.dropped_at.unwrap_or_else(Instant::now);
        let mut path = ctx.path.clone();
        match &self.pos {
            Some(p) => path.push_str(&envelope::recover_query(CH, p)),
            None => {
                ctx.no_position.fetch_add(1, Ordering::Relaxed);
            }
        }
        loop {
            match Conn::open(&ctx.env_endpoint, &path, OFFER, src).await {
                Ok(c) => {
                    ctx.reconnected.fetch_add(1, Ordering::Relaxed);
                    record(&ctx.reconnect_us, at);
                    if self.pos.is_none() {
                        // Nothing to recover, so no `recovered` frame will come.
                        self.caught_up(ctx);
                    }
                    return Some(c);
                }
                Err(e) => {
                    ctx.reconnect_errors.fetch_add(1, Ordering::Relaxed);
                    ctx.shared
                        .closes
                        .error(format!("reconnect {}: {e}", self.i));
                    if Instant::now() + RETRY >= ctx.deadline {
                        return None;
                    }
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }
}

/// One subscriber: receive until told to drop (or the server ends the socket), then reconnect
/// with `recover=`; until the task is aborted.
pub async fn subscriber(
    i: usize,
    mut conn: Conn,
    ctx: Arc<Ctx>,
    kick: Arc<Notify>,
    src: Option<std::net::IpAddr>,
) {
    let mut sub = Sub {
        i,
        pos: None,
        ledger: Ledger::default(),
        rx: Receiver::default(),
        warmed: false,
        dropped_at: None,
    };
    loop {
        let dropped = loop {
            tokio::select! {
                biased;
                _ = kick.notified() => break true,
                r = conn.recv() => match r {
                    Ok(m) => sub.on_frame(&ctx, &m.body),
                    Err(e) => {
                        ctx.shared.closes.add(&e);
                        break false;
                    }
                },
            }
        };
        if dropped {
            conn.abort();
        }
        if sub.dropped_at.is_none() {
            sub.dropped_at = Some(Instant::now());
            ctx.pending.fetch_add(1, Ordering::AcqRel);
        }
        ctx.dropped.fetch_add(1, Ordering::Relaxed);
        if ctx.stop.load(Ordering::Acquire) {
            return;
        }
        match sub.reconnect(&ctx, src).await {
            Some(c) => conn = c,
            None => return,
        }
    }
}

impl Ctx {
    /// Shared state for subscribers of `path` on `endpoint`, warm-up marker `warm`.
    pub fn new(
        tracker: Arc<Tracker>,
        shared: Arc<Shared>,
        env_endpoint: Endpoint,
        path: String,
        warm: Vec<u8>,
        deadline: Instant,
    ) -> Ctx {
        Ctx {
            tracker,
            shared,
            env_endpoint,
            path,
            warm,
            deadline,
            stop: AtomicBool::new(false),
            pending: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            reconnected: AtomicU64::new(0),
            reconnect_errors: AtomicU64::new(0),
            no_position: AtomicU64::new(0),
            recovered_frames: AtomicU64::new(0),
            recovered_messages: AtomicU64::new(0),
            recovery_failed: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            duplicated: AtomicU64::new(0),
            out_of_order: AtomicU64::new(0),
            reconnect_us: Mutex::new(histogram()),
            caught_up_us: Mutex::new(histogram()),
        }
    }
}
