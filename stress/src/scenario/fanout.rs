//! `seed-live`, `fanout` and `throughput`: N subscribers on one facility, then messages
//! published at a rate or as fast as a window of unfinished messages allows, for a count or
//! a duration. Every delivery is counted and timed; the run fails on any loss.
//!
//! More subscribers than one process of the tool can hold are split over child processes
//! ([`super::shard`]): each receives and times its share (stamps and receipts on the one
//! CLOCK_MONOTONIC of the machine), reports warm-up counts and, per message, when its last
//! socket got it; the parent counts a message complete when every child has, so warm-up,
//! the windowed publisher of `throughput` and the last-delivery latency work as in one
//! process, at the cost of one short line per message and child.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::shard::{Held, Layout};
use super::{Shared, finish, warm_up};
use crate::body::{self, Stamp};
use crate::cli::{Common, Fanout};
use crate::env::Env;
use crate::launch::LaunchError;
use crate::publish::{Audience, Mode, Publisher};
use crate::report::Report;
use crate::tracker::{RING, Tracker};

/// How long deliveries may trail the last publish before the rest counts as lost.
const DRAIN: Duration = Duration::from_secs(10);

/// The resolved parameters of a fan-out run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Subscribers.
    pub subscribers: usize,
    /// Stop after this many messages…
    pub messages: Option<u64>,
    /// …or after this long.
    pub duration: Option<Duration>,
    /// Messages per second, 0 = unpaced.
    pub rate: f64,
    /// Most unfinished messages, 0 = unbounded.
    pub window: u64,
    /// Body size.
    pub size: usize,
    /// Processes of the tool holding the subscribers, and workers of a started server.
    pub layout: Layout,
}

impl Plan {
    /// The defaults of each scenario, overridden by the command line.
    pub fn new(scenario: &str, a: &Fanout) -> Plan {
        let (n, m, d, r, w) = match scenario {
            "seed-live" => (1000, Some(1), None, 0.0, 0),
            "throughput" => (1000, None, Some(10.0), 0.0, 64),
            _ => (10_000, Some(100), None, 10.0, 0),
        };
        let subscribers = a.subscribers.unwrap_or(n);
        Plan {
            subscribers,
            messages: a.messages.or(if a.duration.is_some() { None } else { m }),
            duration: a.duration.or(d).map(Duration::from_secs_f64),
            rate: a.rate.unwrap_or(r),
            window: a.window.unwrap_or(w),
            size: a.size,
            layout: Layout::here(subscribers, a.per_process, a.common.workers),
        }
    }
}

/// Set up a run of `plan` against wsredis: a started server gets the plan's workers, and
/// this process raises its open-files limit for the subscribers it holds itself.
pub fn env(c: &Common, plan: &Plan) -> Result<Env, LaunchError> {
    let mut c = c.clone();
    c.workers = Some(plan.layout.workers);
    Env::wsredis_holding(
        &c,
        plan.subscribers,
        plan.layout.held_here(plan.subscribers),
    )
}

/// Run the plan against `env` (published with `mode`).
pub async fn run(scenario: &str, c: &Common, plan: &Plan, env: &Env, mode: Mode) -> Report {
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let mut report = Report {
        scenario: scenario.into(),
        target: env.kind.into(),
        ..Report::default()
    };
    report
        .params
        .insert("subscribers".into(), json!(plan.subscribers));
    report
        .params
        .insert("messages".into(), json!(plan.messages));
    report.params.insert(
        "duration_s".into(),
        json!(plan.duration.map(|d| d.as_secs_f64())),
    );
    report.params.insert("rate".into(), json!(plan.rate));
    report.params.insert("window".into(), json!(plan.window));
    report.params.insert("size".into(), json!(plan.size));
    report.params.insert("publisher".into(), json!(mode));
    let layout = plan.layout;
    report
        .params
        .insert("tool_processes".into(), json!(layout.processes));
    if c.server_bin.is_some() && env.kind == "wsredis" {
        report
            .params
            .insert("workers".into(), json!(layout.workers));
    }

    // In children, each child is one receiver of the parent's tracker.
    let tracker = Tracker::new(if layout.processes > 1 {
        layout.processes as u32
    } else {
        plan.subscribers as u32
    });
    let shared = Arc::new(Shared::default());
    let facility = c.facility.clone();
    let nonce = super::nonce();
    let connected = Held::connect(
        env,
        c,
        plan.subscribers,
        &layout,
        (&tracker, &shared),
        nonce,
        deadline,
    )
    .await;
    let Some(held) = Held::recorded(connected, &mut report) else {
        return report;
    };
    let live = (plan.subscribers - report.connect.failed) as u64;

    let mut publisher = match Publisher::connect(mode, &env.targets, &facility).await {
        Ok(p) => p,
        Err(e) => {
            report.errors.push(format!("publisher: {e}"));
            return report;
        }
    };
    let targets = env.targets.clone();
    let warm_start = Instant::now();
    let warm_deadline = (Instant::now() + Duration::from_secs(30)).min(deadline);
    let warmed = match warm_up(
        &shared,
        live,
        warm_deadline,
        (&mut publisher, &targets, &facility),
        &[Audience::Broadcast],
        nonce,
    )
    .await
    {
        Ok(w) => w,
        Err(e) => {
            report.errors.push(format!("warm-up publish: {e}"));
            false
        }
    };
    if !warmed {
        report
            .errors
            .push("not every subscriber became live before the deadline".into());
    }

    report.warmup_seconds = warm_start.elapsed().as_secs_f64();
    report.warmup_rounds = shared
        .warm_publishes
        .load(std::sync::atomic::Ordering::Relaxed);
    let usage = super::Usage::start(env);
    let pb = super::bar(
        c.quiet,
        plan.messages
            .unwrap_or_else(|| plan.duration.map_or(0, |d| d.as_secs())),
        if plan.messages.is_some() {
            "publish"
        } else {
            "seconds"
        },
    );
    let start = Instant::now();
    let first_ns = tracker.now_ns();
    let mut seq = 0u64;
    let window = if plan.window == 0 {
        RING as u64 - 1
    } else {
        plan.window.min(RING as u64 - 1)
    };
    loop {
        if plan.messages.is_some_and(|m| seq >= m)
            || plan.duration.is_some_and(|d| start.elapsed() >= d)
            || Instant::now() >= deadline
        {
            break;
        }
        if plan.rate > 0.0 {
            let at = start + Duration::from_secs_f64(seq as f64 / plan.rate);
            tokio::time::sleep_until(at.into()).await;
        }
        if seq >= window && !tracker.wait_completed(seq - window + 1, deadline).await {
            report.errors.push(format!(
                "message {} never reached every subscriber",
                seq - window
            ));
            break;
        }
        let b = body::encode(
            Stamp {
                seq,
                sent_ns: tracker.now_ns(),
            },
            plan.size,
        );
        if let Err(e) = publisher
            .publish(&targets, &facility, &Audience::Broadcast, &b)
            .await
        {
            report.errors.push(format!("publish {seq}: {e}"));
            break;
        }
        seq += 1;
        if plan.messages.is_some() {
            pb.set_position(seq);
        } else {
            pb.set_position(start.elapsed().as_secs());
        }
    }
    pb.finish_and_clear();
    if let Err(e) = publisher.settle().await {
        report.errors.push(format!("publish: {e}"));
    }
    let drain = (Instant::now() + DRAIN).min(deadline.max(Instant::now()));
    tracker.wait_completed(seq, drain).await;
    // Stragglers of the last message may still be counting; give them a moment, bounded.
    let settle = Instant::now() + Duration::from_millis(50);
    while matches!(held, Held::Here(_))
        && tracker.delivered() < seq * live
        && Instant::now() < settle
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    usage.record(env, &mut report);
    drop(publisher);
    let ended = held
        .finish(deadline.max(Instant::now() + Duration::from_secs(10)))
        .await;
    let sum = match ended {
        None => tracker.summary(),
        Some(e) => {
            shared.closes.merge(&e.closed, &e.errors);
            e.summary(tracker.summary().last)
        }
    };

    finish(
        &mut report,
        &sum,
        seq,
        seq * plan.subscribers as u64,
        first_ns,
        start,
        &shared,
    );
    report
}
