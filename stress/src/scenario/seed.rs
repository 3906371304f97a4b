//! `seed`: the ws4redis stress test as it was. A publisher sends `Hello, World`; then N
//! subscribers connect at once, and each must receive it, which it can only do through the
//! stored last message replayed on connect (connect + upgrade + SUBSCRIBE + replay). The
//! time is from the publisher's connect to the last subscriber's receipt.
//!
//! One deviation from the original, which raced: a watcher socket, connected beforehand,
//! waits to see the message come through Redis before the subscribers start, so none can
//! connect before the message is stored. The wait is inside the measured time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use tokio::task::JoinSet;

use super::Closes;
use crate::cli::Seed;
use crate::client::Conn;
use crate::env::Env;
use crate::publish::{Audience, Publisher};
use crate::report::{Percentiles, Report};

/// The old test's message.
pub const MESSAGE: &[u8] = b"Hello, World";

/// Run `seed` against `env`.
pub async fn run(a: &Seed, env: &Env) -> Report {
    let c = &a.common;
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let mut report = Report {
        scenario: "seed".into(),
        target: env.kind.into(),
        ..Report::default()
    };
    report
        .params
        .insert("subscribers".into(), json!(a.subscribers));
    report.params.insert("publisher".into(), json!(c.publisher));
    let facility = c.facility.clone();
    let path = format!("/ws/{facility}?subscribe-broadcast");
    let mut watcher = match Conn::open(&env.targets.server, &path, "", None).await {
        Ok(w) => w,
        Err(e) => {
            report.errors.push(format!("watcher: {e}"));
            return report;
        }
    };
    let usage = super::Usage::start(env);

    let start = Instant::now();
    let sent = async {
        let mut p = Publisher::connect(c.publisher, &env.targets, &facility).await?;
        p.publish(&env.targets, &facility, &Audience::Broadcast, MESSAGE)
            .await?;
        // Stored before anyone connects (the Redis mode does not wait by itself).
        p.settle().await?;
        Ok::<_, crate::publish::PublishError>(p)
    };
    let publisher = match sent.await {
        Ok(p) => p,
        Err(e) => {
            report.errors.push(format!("publisher: {e}"));
            return report;
        }
    };
    let seen = tokio::time::timeout_at(deadline.into(), async {
        loop {
            match watcher.recv().await {
                Ok(m) if m.body[..] == *MESSAGE => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    })
    .await;
    if !matches!(seen, Ok(Ok(()))) {
        report
            .errors
            .push(format!("the watcher never saw the message: {seen:?}"));
    }

    let received = Arc::new(AtomicU64::new(0));
    let closes = Arc::new(Closes::default());
    let pb = super::bar(c.quiet, a.subscribers as u64, "subscribers");
    let mut set = JoinSet::new();
    for i in 0..a.subscribers {
        let (endpoint, path, src) = (env.targets.server.clone(), path.clone(), env.source(i));
        let (received, closes) = (received.clone(), closes.clone());
        set.spawn(async move {
            let t = Instant::now();
            let mut conn = match Conn::open(&endpoint, &path, "", src).await {
                Ok(conn) => conn,
                Err(e) => {
                    closes.error(format!("subscriber {i}: {e}"));
                    return (t.elapsed(), Instant::now(), false);
                }
            };
            let connected = t.elapsed();
            let got = match conn.recv().await {
                Ok(m) if m.body[..] == *MESSAGE => {
                    received.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Ok(m) => {
                    closes.error(format!(
                        "subscriber {i} got {:?}",
                        String::from_utf8_lossy(&m.body)
                    ));
                    false
                }
                Err(e) => {
                    closes.add(&e);
                    false
                }
            };
            let at = Instant::now();
            conn.close().await;
            (connected, at, got)
        });
    }
    let mut times = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut last = start;
    let mut failed = 0;
    let joined = tokio::time::timeout_at(deadline.into(), async {
        while let Some(r) = set.join_next().await {
            if let Ok((connected, at, got)) = r {
                let _ = times.record((connected.as_micros() as u64).max(1));
                last = last.max(at);
                failed += usize::from(!got);
                pb.inc(1);
            }
        }
    })
    .await;
    pb.finish_and_clear();
    if joined.is_err() {
        report
            .errors
            .push("subscribers still waiting at the deadline".into());
    }
    let total = last.duration_since(start).as_secs_f64();
    drop(publisher);
    usage.record(env, &mut report);
    report.connect.sockets = a.subscribers;
    report.connect.failed = failed;
    report.connect.seconds = total;
    report.connect.per_socket_ms = Percentiles::from_us(&times);
    report.published = 1;
    report.expected = a.subscribers as u64;
    report.delivered = received.load(Ordering::Relaxed);
    report.lost = report.expected - report.delivered;
    report.seconds = total;
    report.total_seconds = total;
    if total > 0.0 {
        report.deliveries_per_sec = report.delivered as f64 / total;
    }
    let (closed, errors) = closes.take();
    report.closed = closed;
    report.errors.extend(errors);
    report
}
