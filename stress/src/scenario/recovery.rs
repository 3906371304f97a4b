//! `recovery`: N envelope (`wsredis.v1`) subscribers on a facility with history, a publisher
//! sending numbered messages at a rate, and meanwhile waves of sockets dropped abruptly (a TCP
//! reset, no close frame) that reconnect at once with `recover=` their last position. At the
//! end every subscriber must hold every number exactly once and in order.
//!
//! Invariants: a socket is only dropped after it has a position (the warm-up marker carries
//! one), so every reconnect can ask to recover; the scenario never filters duplicates itself
//! (see [`crate::envelope::Ledger`]); a `recovery_failed` is a failed run whose cause is named
//! (history shorter than the drop window, or the server's).
//! The subscribers themselves are in [`super::rejoin`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::sync::Notify;

use super::rejoin::{Ctx, subscriber};
use super::{Shared, connect_many, finish, nonce, warm_up};
use crate::body::{self, Stamp};
use crate::cli::{Common, Recovery};
use crate::env::Env;
use crate::envelope::OFFER;
use crate::publish::{Audience, Mode, Publisher};
use crate::report::{Percentiles, RecoveryReport, Report};
use crate::tracker::Tracker;

/// After the last publish, how long deliveries may stall before the rest counts as lost (a
/// backlog that still drains is slow, not lost; --timeout bounds the whole run).
const STALL: Duration = Duration::from_secs(10);

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
    let ctx = Arc::new(Ctx::new(
        tracker.clone(),
        shared.clone(),
        env.targets.server.clone(),
        path,
        body::warmup(nonce),
        deadline,
    ));
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

    let usage = super::Usage::start(env);
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
    usage.record(env, &mut report);
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
