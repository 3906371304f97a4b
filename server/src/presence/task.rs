//! The presence task of one worker: the only writer of this worker's entries to Redis.
//!
//! It applies joins and leaves in the order they were asked (in pipelined batches), and every
//! refresh interval rewrites all entries it holds (pushing their expiry ahead, and bringing
//! back any that Redis lost, e.g. after a restart) and sweeps the expired entries of the
//! channels it has sockets on, so the leaves of a dead worker are announced to them.
//!
//! Invariant: the table holds exactly the entries of joined sockets that have not left; it is
//! only touched here, so a refresh and a leave never interleave.

use std::collections::{BTreeSet, HashMap};
use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior, interval_at};

use super::{Entry, Inner, Op};
use crate::bus::{Call, Script};

/// Most script calls in one pipeline.
const MAX_PIPELINE: usize = 1000;

/// Run until the presence is closed or dropped.
pub(super) async fn run(
    presence: Weak<Inner>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    every: Duration,
) {
    let mut table: HashMap<u64, Vec<Entry>> = HashMap::new();
    let mut tick = interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            op = ops.recv() => {
                let Some(op) = op else { return };
                let mut batch = vec![op];
                while batch.len() < MAX_PIPELINE {
                    match ops.try_recv() {
                        Ok(op) => batch.push(op),
                        Err(_) => break,
                    }
                }
                let Some(inner) = presence.upgrade() else { return };
                if let Some(closed) = apply(&inner, &mut table, batch).await {
                    let _ = closed.send(());
                    return;
                }
            }
            _ = tick.tick() => {
                let Some(inner) = presence.upgrade() else { return };
                refresh(&inner, &table).await;
            }
        }
    }
}

fn field(inner: &Inner, conn: u64) -> String {
    format!("{}/{conn}", inner.instance)
}

fn ttl_ms(inner: &Inner) -> u64 {
    u64::try_from(inner.ttl.as_millis()).unwrap_or(u64::MAX)
}

/// Apply a batch of operations; returns the acknowledgement of a Close, after which the task
/// ends (operations behind it in the batch are dropped: the worker is exiting).
async fn apply(
    inner: &Inner,
    table: &mut HashMap<u64, Vec<Entry>>,
    batch: Vec<Op>,
) -> Option<oneshot::Sender<()>> {
    let mut calls: Vec<(&Script, Call)> = Vec::new();
    let mut joined = Vec::new();
    let mut closed = None;
    for op in batch {
        match op {
            Op::Join(conn, entries, done) => {
                let f = field(inner, conn);
                for e in &entries {
                    let call = inner
                        .keys
                        .join(&e.facility, &e.label, &f, &e.user, ttl_ms(inner));
                    calls.push((&inner.scripts.join, call));
                }
                table.insert(conn, entries);
                joined.push(done);
            }
            Op::Leave(conn) => {
                let entries = table.remove(&conn).unwrap_or_default();
                let f = field(inner, conn);
                for e in &entries {
                    calls.push((
                        &inner.scripts.leave,
                        inner.keys.leave(&e.facility, &e.label, &f),
                    ));
                }
            }
            Op::Close(done) => {
                for (conn, entries) in table.drain() {
                    let f = field(inner, conn);
                    for e in &entries {
                        calls.push((
                            &inner.scripts.leave,
                            inner.keys.leave(&e.facility, &e.label, &f),
                        ));
                    }
                }
                closed = Some(done);
                break;
            }
        }
    }
    run_calls(inner, calls).await;
    for done in joined {
        let _ = done.send(());
    }
    closed
}

/// Rewrite every entry held and sweep each channel they are on.
async fn refresh(inner: &Inner, table: &HashMap<u64, Vec<Entry>>) {
    let mut calls: Vec<(&Script, Call)> = Vec::new();
    let mut channels = BTreeSet::new();
    for (conn, entries) in table {
        let f = field(inner, *conn);
        for e in entries {
            let call = inner
                .keys
                .join(&e.facility, &e.label, &f, &e.user, ttl_ms(inner));
            calls.push((&inner.scripts.join, call));
            channels.insert((e.facility.as_str(), e.label.as_str()));
        }
    }
    for (facility, label) in channels {
        calls.push((
            &inner.scripts.snapshot,
            inner.keys.snapshot(facility, label),
        ));
    }
    run_calls(inner, calls).await;
}

async fn run_calls(inner: &Inner, mut calls: Vec<(&Script, Call)>) {
    while !calls.is_empty() {
        let rest = calls.split_off(calls.len().min(MAX_PIPELINE));
        let failed = inner
            .bus
            .eval_all(std::mem::replace(&mut calls, rest))
            .await
            .into_iter()
            .filter_map(Result::err)
            .inspect(|e| tracing::debug!(error = %e, "presence update failed"))
            .count();
        if failed > 0 {
            inner
                .stats
                .errors
                .fetch_add(failed as u64, Ordering::Relaxed);
        }
    }
}
