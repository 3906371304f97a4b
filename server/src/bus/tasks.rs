//! The bus's two background tasks, the only code besides `mod.rs` that talks to fred: the
//! dispatcher (Redis messages → registry) and the syncer (registry → SUBSCRIBE/UNSUBSCRIBE).
//!
//! Invariants: the dispatcher never exits on lag (counted in `BusStats::lagged`); the syncer is the
//! single issuer of SUBSCRIBE/UNSUBSCRIBE, decides from the table as it is when it runs, and
//! retries what failed (Redis down) every [`RETRY_INTERVAL`], so refcounting stays race-free
//! and no channel with local interest stays unsubscribed after an outage.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::PubsubInterface;
use tokio::sync::{broadcast, mpsc};

use super::history::split_marker;
use super::payload::Payload;
use super::registry::Registry;

/// How often channels whose SUBSCRIBE/UNSUBSCRIBE failed (Redis down) are retried.
const RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// Forward fred's pub/sub messages to the registry until the subscriber quits. A lag (fred's
/// broadcast buffer overran) is counted, never fatal.
pub(crate) async fn run_dispatcher(
    registry: Arc<Registry>,
    mut messages: broadcast::Receiver<fred::types::Message>,
) {
    use broadcast::error::RecvError;
    loop {
        match messages.recv().await {
            Ok(msg) => {
                let arrived = std::time::Instant::now();
                let raw = match msg.value {
                    fred::types::Value::String(s) => s.into_inner(),
                    fred::types::Value::Bytes(b) => b,
                    other => match other.as_bytes() {
                        Some(b) => bytes::Bytes::copy_from_slice(b),
                        None => continue,
                    },
                };
                // History channels carry their position in a marker (docs/protocol.md).
                let (position, body) = split_marker(raw);
                let payload = Payload::from_bytes(body);
                registry.dispatch(&msg.channel, payload, position, arrived);
            }
            Err(RecvError::Lagged(n)) => {
                registry.stats.lagged.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(dropped = n, "bus dispatcher lagged behind Redis");
            }
            Err(RecvError::Closed) => break,
        }
    }
}

/// The only issuer of SUBSCRIBE/UNSUBSCRIBE: reconciles requested channels with the table.
/// Ends when the registry is gone.
pub(crate) async fn run_syncer(
    registry: Weak<Registry>,
    subscriber: SubscriberClient,
    mut requests: mpsc::UnboundedReceiver<Arc<str>>,
) {
    // What we have asked Redis (and fred tracks for resubscription after reconnects).
    let mut on_redis: HashSet<Arc<str>> = HashSet::new();
    let mut retry: HashSet<Arc<str>> = HashSet::new();
    let mut tick = tokio::time::interval(RETRY_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut pending: HashSet<Arc<str>> = HashSet::new();
        tokio::select! {
            req = requests.recv() => match req {
                Some(ch) => { pending.insert(ch); }
                None => return,
            },
            _ = tick.tick(), if !retry.is_empty() => pending.extend(retry.drain()),
        }
        while let Ok(ch) = requests.try_recv() {
            pending.insert(ch);
        }
        let Some(registry) = registry.upgrade() else {
            return;
        };
        let (to_sub, to_unsub) = {
            let mut table = registry.lock();
            let mut to_sub = Vec::new();
            let mut to_unsub = Vec::new();
            for ch in pending {
                match (table.get_mut(&ch), on_redis.contains(&ch)) {
                    (Some(_), false) => to_sub.push(ch),
                    (Some(entry), true) => entry.live = true,
                    (None, true) => to_unsub.push(ch),
                    (None, false) => {}
                }
            }
            (to_sub, to_unsub)
        };
        if !to_unsub.is_empty() {
            let names: Vec<&str> = to_unsub.iter().map(|c| &**c).collect();
            match subscriber.unsubscribe(names).await {
                Ok(()) => to_unsub.iter().for_each(|c| {
                    on_redis.remove(c);
                }),
                Err(e) => {
                    registry.stats.sync_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "UNSUBSCRIBE failed; will retry");
                    retry.extend(to_unsub);
                }
            }
        }
        if !to_sub.is_empty() {
            let names: Vec<&str> = to_sub.iter().map(|c| &**c).collect();
            match subscriber.subscribe(names).await {
                Ok(()) => {
                    let mut table = registry.lock();
                    for c in to_sub {
                        if let Some(entry) = table.get_mut(&c) {
                            entry.live = true;
                        } else {
                            // Everyone left meanwhile; their request is queued behind us.
                        }
                        on_redis.insert(c);
                    }
                }
                Err(e) => {
                    registry.stats.sync_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(error = %e, "SUBSCRIBE failed; will retry");
                    retry.extend(to_sub);
                }
            }
        }
        registry.synced.notify_waiters();
    }
}
