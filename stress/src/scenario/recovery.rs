//! `recovery`: N envelope (`wsredis.v1`) subscribers on a facility with history, a publisher
//! sending numbered messages at a rate, and meanwhile waves of sockets dropped abruptly (a TCP
//! reset, no close frame) that reconnect at once with `recover=` their last position. At the
//! end every subscriber must hold every number exactly once and in order.
//!
//! Invariants: a socket is only dropped after it has a position (the warm-up marker carries
//! one), so every reconnect can ask to recover; the scenario never filters duplicates itself
//! (see [`crate::envelope::Ledger`]); a `recovery_failed` is a failed run whose cause is named
//! (history shorter than the drop window, or the server's).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Notify;

use super::{Shared, connect_many, finish, nonce, warm_up};
use crate::body::{self, Stamp};
use crate::cli::{Common, Recovery};
use crate::client::Conn;
use crate::env::Env;
use crate::envelope::{self, Arrival, Ledger, OFFER, Position};
use crate::procfs;
use crate::publish::{Audience, Mode, Publisher};
use crate::report::{Percentiles, RecoveryReport, Report};
use crate::tracker::{Receiver, Tracker};

/// After the last publish, how long deliveries may stall before the rest counts as lost (a
/// backlog that still drains is slow, not lost; --timeout bounds the whole run).
const STALL: Duration = Duration::from_secs(10);
/// The audience label of the broadcast channel.
const CH: &str = "broadcast";
/// Pause between attempts when a reconnect is refused.
const RETRY: Duration = Duration::from_millis(50);

/// The run's options with `--history` added for a started server.
pub fn common(a: &Recovery) -> Common {
    let mut c = a.common.clone();
    if c.server_bin.is_some() && !c.server_arg.iter().any(|s| s.starts_with("--history")) {
        c.server_arg.push("--history".into());
        c.server_arg
            .push(format!("{}={}:600", c.facility, a.history_size));
    }
    c
}

/// What the subscriber tasks share.
struct Ctx {
    tracker: Arc<Tracker>,
    shared: Arc<Shared>,
    env_endpoint: crate::client::Endpoint,
    path: String,
    warm: Vec<u8>,
    deadline: Instant,
    /// Set once the last wave has reconnected and the run is draining: no more reconnects.
    stop: AtomicBool,
    /// Sockets dropped and not yet caught up (`recovered` or `recovery_failed` received).
    pending: AtomicU64,
    dropped: AtomicU64,
    reconnected: AtomicU64,
    reconnect_errors: AtomicU64,
    no_position: AtomicU64,
    recovered_frames: AtomicU64,
    recovered_messages: AtomicU64,
    recovery_failed: AtomicU64,
    unique: AtomicU64,
    duplicated: AtomicU64,
    out_of_order: AtomicU64,
    /// Drop → 101, µs.
    reconnect_us: Mutex<Histogram<u64>>,
    /// Drop → `recovered`, µs.
    caught_up_us: Mutex<Histogram<u64>>,
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
async fn subscriber(
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

/// Run the scenario against `env` (a server whose facility keeps history).
pub async fn run(a: &Recovery, c: &Common, env: &Env) -> Report {
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let duration = Duration::from_secs_f64(a.duration.max(0.0));
    let mut report = Report {
        scenario: "recovery".into(),
        target: env.kind.into(),
        ..Report::default()
    };
    for (k, v) in [
        ("subscribers", json!(a.subscribers)),
        ("rate", json!(a.rate)),
        ("duration_s", json!(a.duration)),
        ("waves", json!(a.waves)),
        ("wave_percent", json!(a.wave_percent)),
        ("history_size", json!(a.history_size)),
        ("size", json!(a.size)),
        ("publisher", json!(c.publisher)),
    ] {
        report.params.insert(k.into(), v);
    }
    if c.publisher == Mode::Redis {
        // A plain PUBLISH bypasses wsredis: no position, not in the history.
        report
            .errors
            .push("--publisher redis bypasses the history; use ws or api".into());
        return report;
    }
    let tracker = Tracker::new(a.subscribers.max(1) as u32);
    let shared = Arc::new(Shared::default());
    let facility = c.facility.clone();
    let path = format!("/ws/{facility}?subscribe-broadcast");
    let (conns, connect) = connect_many(
        env,
        a.subscribers,
        c.connect_concurrency,
        |_| path.clone(),
        |_| OFFER.to_owned(),
        c.quiet,
        &shared.closes,
    )
    .await;
    report.connect = connect;
    let nonce = nonce();
    let ctx = Arc::new(Ctx {
        tracker: tracker.clone(),
        shared: shared.clone(),
        env_endpoint: env.targets.server.clone(),
        path,
        warm: body::warmup(nonce),
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
    });
    let mut tasks = tokio::task::JoinSet::new();
    let mut kicks = Vec::new();
    for (i, conn) in conns.into_iter().enumerate() {
        if let Some(conn) = conn {
            let kick = Arc::new(Notify::new());
            kicks.push(kick.clone());
            tasks.spawn(subscriber(i, conn, ctx.clone(), kick, env.source(i)));
        }
    }
    let live = kicks.len() as u64;

    let mut publisher = match Publisher::connect(c.publisher, &env.targets, &facility).await {
        Ok(p) => p,
        Err(e) => {
            report.errors.push(format!("publisher: {e}"));
            return report;
        }
    };
    let targets = env.targets.clone();
    let warm_start = Instant::now();
    let warm_deadline = (Instant::now() + Duration::from_secs(30)).min(deadline);
    let pubs = (&mut publisher, &targets, facility.as_str());
    match warm_up(
        &shared,
        live,
        warm_deadline,
        pubs,
        &[Audience::Broadcast],
        nonce,
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => report
            .errors
            .push("not every subscriber became live (no envelope position?)".into()),
        Err(e) => report.errors.push(format!("warm-up publish: {e}")),
    }
    report.warmup_seconds = warm_start.elapsed().as_secs_f64();
    report.warmup_rounds = shared.warm_publishes.load(Ordering::Relaxed);
    if !report.errors.is_empty() {
        return report;
    }

    let server_cpu = procfs::cpu_mark(env.server_pid.unwrap_or(0));
    let redis_cpu = procfs::cpu_mark(env.redis_pid.unwrap_or(0));
    let tool_cpu = procfs::cpu_mark(std::process::id() as i32);
    let pb = super::bar(c.quiet, duration.as_secs(), "seconds");
    let per_wave = ((kicks.len() as f64) * a.wave_percent / 100.0).ceil() as usize;
    let wave_at =
        |start: Instant, k: usize| start + duration.mul_f64((k + 1) as f64 / (a.waves + 1) as f64);
    let start = Instant::now();
    let first_ns = tracker.now_ns();
    let (mut seq, mut wave) = (0u64, 0usize);
    while start.elapsed() < duration && Instant::now() < deadline {
        while wave < a.waves && Instant::now() >= wave_at(start, wave) {
            for j in 0..per_wave.min(kicks.len()) {
                kicks[(wave * per_wave + j) % kicks.len()].notify_one();
            }
            wave += 1;
        }
        if a.rate > 0.0 {
            let at = start + Duration::from_secs_f64(seq as f64 / a.rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let b = body::encode(
            Stamp {
                seq,
                sent_ns: tracker.now_ns(),
            },
            a.size,
        );
        if let Err(e) = publisher
            .publish(&targets, &facility, &Audience::Broadcast, &b)
            .await
        {
            report.errors.push(format!("publish {seq}: {e}"));
            break;
        }
        seq += 1;
        pb.set_position(start.elapsed().as_secs());
    }
    pb.finish_and_clear();

    // Every dropped socket caught up and every number everywhere, or progress stalled.
    let mut seen = (u64::MAX, Instant::now());
    loop {
        let progress = (
            ctx.unique.load(Ordering::Relaxed),
            ctx.pending.load(Ordering::Acquire),
        );
        if progress.1 == 0 && progress.0 >= seq * live {
            break;
        }
        let now = Instant::now();
        if progress.0 != seen.0 {
            seen = (progress.0, now);
        }
        if now >= deadline || now - seen.1 >= STALL {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    ctx.stop.store(true, Ordering::Release);
    report.server_cpu = server_cpu.since(env.server_pid.unwrap_or(0));
    report.redis_cpu = redis_cpu.since(env.redis_pid.unwrap_or(0));
    report.tool_cpu = tool_cpu.since(std::process::id() as i32);
    if let Some(pid) = env.server_pid {
        report.server_memory = procfs::memory(pid);
    }
    tasks.abort_all();
    drop(publisher);

    finish(
        &mut report,
        &tracker.summary(),
        seq,
        seq * live,
        first_ns,
        start,
        &shared,
    );
    conclude(&mut report, &ctx, a, wave);
    report
}

/// Replace the in-order-only counts of [`finish`] with the ledgers' and add the recovery part.
fn conclude(report: &mut Report, ctx: &Ctx, a: &Recovery, waves_run: usize) {
    let load = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let unique = load(&ctx.unique);
    report.delivered = unique;
    report.lost = report.expected.saturating_sub(unique);
    let (duplicated, out_of_order) = (load(&ctx.duplicated), load(&ctx.out_of_order));
    report.disorder = duplicated + out_of_order;
    let pct = |h: &Mutex<Histogram<u64>>| {
        h.lock()
            .map(|h| Percentiles::from_us(&h))
            .unwrap_or_default()
    };
    let r = RecoveryReport {
        waves: waves_run,
        dropped: load(&ctx.dropped),
        reconnected: load(&ctx.reconnected),
        reconnect_errors: load(&ctx.reconnect_errors),
        recovered: load(&ctx.recovered_frames),
        recovered_messages: load(&ctx.recovered_messages),
        recovery_failed: load(&ctx.recovery_failed),
        duplicated,
        out_of_order,
        never_caught_up: ctx.pending.load(Ordering::Acquire),
        reconnect_ms: pct(&ctx.reconnect_us),
        caught_up_ms: pct(&ctx.caught_up_us),
    };
    if r.recovery_failed > 0 {
        let window_ms = a.history_size as f64 / a.rate.max(1e-9) * 1000.0;
        let verdict = if window_ms < r.caught_up_ms.max {
            "shorter than the longest reconnect: the run's parameters are at fault \
             (raise --history-size or lower --rate)"
        } else {
            "longer than every reconnect: the server failed to recover"
        };
        report.errors.push(format!(
            "{} recovery_failed; the history ({} messages, {window_ms:.0} ms at {}/s) is \
             {verdict} (caught up max {:.0} ms)",
            r.recovery_failed, a.history_size, a.rate, r.caught_up_ms.max
        ));
    }
    if load(&ctx.no_position) > 0 {
        report.errors.push(format!(
            "{} reconnects had no position to recover from",
            load(&ctx.no_position)
        ));
    }
    if r.never_caught_up > 0 {
        report.errors.push(format!(
            "{} dropped sockets never got recovered/recovery_failed",
            r.never_caught_up
        ));
    }
    report.recovery = Some(r);
}
