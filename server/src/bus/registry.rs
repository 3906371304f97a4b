//! The per-worker registry: which local sockets listen to which Redis channel.
//!
//! One table maps each channel to the queues of its local subscribers. Three parties touch it:
//! the sockets (join on [`Registry::subscribe`], leave when their [`Subscription`] drops), the
//! dispatcher (fans each Redis message out into per-socket queues, never awaiting a socket;
//! the queue is `queue.rs`) and the
//! syncer (the only one issuing SUBSCRIBE/UNSUBSCRIBE); those two live in `tasks.rs`. This file
//! knows nothing about fred.
//!
//! Invariants:
//! - The table lock is a plain mutex, never held across an await, and held only for map work.
//! - Redis SUBSCRIBE/UNSUBSCRIBE is refcounted by the table: joining and leaving only *request* a
//!   sync of a channel; the syncer, a single task, compares the table at the time it runs with
//!   what Redis has and issues the difference. A socket leaving while another joins therefore
//!   can never end with the channel unsubscribed while it has local interest, whatever the
//!   order of the requests.
//! - A subscriber whose queue is full is flagged (its queue overflows) and the message is
//!   dropped for it only; the session then closes it with 1013.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

use bytes::Bytes;

use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::history::Position;
use super::payload::{Payload, text_wire};
use super::queue::{Pushed, Queue};

/// Counters of one worker's bus; read by the metrics exporter.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Messages received from Redis.
    pub messages: AtomicU64,
    /// Messages fred's broadcast channel dropped because the dispatcher lagged.
    pub lagged: AtomicU64,
    /// Subscribers flagged because their queue was full.
    pub overflows: AtomicU64,
    /// SUBSCRIBE/UNSUBSCRIBE commands that failed (retried).
    pub sync_errors: AtomicU64,
    /// Times the subscriber connection came back after a loss.
    pub reconnects: AtomicU64,
}

/// One message for one socket: a pointer to what every local subscriber of the message shares
/// (the channel, the body, its position, its frames), so queueing it costs one refcount.
#[derive(Clone, Debug)]
pub struct Delivery(Arc<Fanned>);

/// One Redis message as this worker fans it out; every [`Delivery`] of it points here.
#[derive(Debug)]
pub struct Fanned {
    /// The Redis channel (shared with the registry's key, no copy).
    pub channel: Arc<str>,
    /// The body.
    pub payload: Payload,
    /// Its place in the channel's history (history channels only).
    pub position: Option<Position>,
    /// When the message arrived from Redis (for the fan-out latency).
    pub arrived: Instant,
    /// The channel's audience label (`broadcast`, `user:U`, …), as given at subscribe.
    label: Arc<str>,
    /// The envelope frame on the wire, built by the first envelope socket that needs it.
    frame: OnceLock<Bytes>,
    /// The plain websocket frame on the wire, built by the first socket that needs it.
    wire: OnceLock<Bytes>,
}

impl std::ops::Deref for Delivery {
    type Target = Fanned;
    fn deref(&self) -> &Fanned {
        &self.0
    }
}

impl Delivery {
    fn new(
        channel: Arc<str>,
        label: Arc<str>,
        payload: Payload,
        position: Option<Position>,
        arrived: Instant,
    ) -> Self {
        Delivery(Arc::new(Fanned {
            channel,
            payload,
            position,
            arrived,
            label,
            frame: OnceLock::new(),
            wire: OnceLock::new(),
        }))
    }

    /// A delivery on `channel` outside any registry (unit tests of the queue).
    #[cfg(test)]
    pub(crate) fn detached(channel: &str, payload: Payload) -> Self {
        let channel: Arc<str> = Arc::from(channel);
        Delivery::new(channel.clone(), channel, payload, None, Instant::now())
    }

    /// The audience label of the channel (`broadcast`, `user:U`, …), as given at subscribe.
    pub fn label(&self) -> &str {
        &self.0.label
    }

    /// The message's envelope frame, encoded for the wire: `build` (the envelope's text) runs
    /// at most once per message and worker, every other socket gets a refcount clone.
    pub fn shared_frame(&self, build: impl FnOnce(&Delivery) -> Utf8Bytes) -> Bytes {
        self.0.frame.get_or_init(|| text_wire(build(self))).clone()
    }

    /// The body as one complete websocket frame (header and payload), encoded by the first
    /// socket that sends it and shared by every other: a refcount clone, never a copy.
    pub fn wire_frame(&self) -> Bytes {
        self.0.wire.get_or_init(|| self.payload.to_wire()).clone()
    }
}

struct Local {
    id: u64,
    queue: Arc<Queue>,
}

#[derive(Default)]
pub(super) struct Entry {
    locals: Vec<Local>,
    /// The audience label envelope frames name this channel by (the name when not given).
    label: Option<Arc<str>>,
    /// Whether Redis has confirmed the SUBSCRIBE for this channel.
    pub(super) live: bool,
}

pub(crate) struct Registry {
    table: Mutex<HashMap<Arc<str>, Entry>>,
    next_id: AtomicU64,
    sync_tx: mpsc::UnboundedSender<Arc<str>>,
    /// Signalled after each sync round, for [`Subscription::ready`].
    pub(super) synced: Notify,
    queue_len: usize,
    pub(crate) stats: Arc<BusStats>,
}

impl Registry {
    /// A registry, and the receiving end of its sync requests (give it to
    /// [`super::tasks::run_syncer`]).
    pub(crate) fn new(queue_len: usize) -> (Arc<Self>, mpsc::UnboundedReceiver<Arc<str>>) {
        let (sync_tx, sync_rx) = mpsc::unbounded_channel();
        let registry = Arc::new(Registry {
            table: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            sync_tx,
            synced: Notify::new(),
            queue_len: queue_len.max(1),
            stats: Arc::default(),
        });
        (registry, sync_rx)
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Register local interest in `channels` (duplicates ignored), with their audience labels
    /// (same order; missing ones default to the channel name).
    pub(crate) fn subscribe(
        self: &Arc<Self>,
        channels: &[String],
        labels: &[String],
    ) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(Queue::default());
        let mut keys: Vec<Arc<str>> = Vec::with_capacity(channels.len());
        let mut new = Vec::new();
        {
            let mut table = self.lock();
            for (i, name) in channels.iter().enumerate() {
                if keys.iter().any(|k| **k == **name) {
                    continue;
                }
                let key = match table.get_key_value(name.as_str()) {
                    Some((k, _)) => k.clone(),
                    None => {
                        let k: Arc<str> = Arc::from(name.as_str());
                        table.insert(k.clone(), Entry::default());
                        new.push(k.clone());
                        k
                    }
                };
                if let Some(entry) = table.get_mut(&key) {
                    if entry.label.is_none() {
                        entry.label = labels.get(i).map(|l| Arc::from(l.as_str()));
                    }
                    entry.locals.push(Local {
                        id,
                        queue: queue.clone(),
                    });
                }
                keys.push(key);
            }
        }
        for key in new {
            // The syncer lives as long as the registry; a send error means shutdown.
            let _ = self.sync_tx.send(key);
        }
        Subscription {
            id,
            channels: keys,
            queue,
            registry: self.clone(),
        }
    }

    fn leave(&self, id: u64, channels: &[Arc<str>]) {
        let mut empty = Vec::new();
        {
            let mut table = self.lock();
            for key in channels {
                if let Some(entry) = table.get_mut(key) {
                    entry.locals.retain(|l| l.id != id);
                    if entry.locals.is_empty() {
                        table.remove(key);
                        empty.push(key.clone());
                    }
                }
            }
        }
        for key in empty {
            let _ = self.sync_tx.send(key);
        }
    }

    /// Fan one Redis message out to the local subscribers of `channel`.
    pub(crate) fn dispatch(
        &self,
        channel: &str,
        payload: Payload,
        position: Option<Position>,
        arrived: Instant,
    ) {
        self.stats.messages.fetch_add(1, Ordering::Relaxed);
        let table = self.lock();
        let Some((key, entry)) = table.get_key_value(channel) else {
            return;
        };
        let delivery = Delivery::new(
            key.clone(),
            entry.label.clone().unwrap_or_else(|| key.clone()),
            payload,
            position,
            arrived,
        );
        for local in &entry.locals {
            if local.queue.push(delivery.clone(), self.queue_len) == Pushed::Overflowed {
                self.stats.overflows.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Whether every channel in `keys` is confirmed subscribed on Redis.
    fn all_live(&self, keys: &[Arc<str>]) -> bool {
        let table = self.lock();
        keys.iter()
            .all(|k| table.get(k).is_some_and(|entry| entry.live))
    }

    /// Number of channels with local interest.
    pub(crate) fn channel_count(&self) -> usize {
        self.lock().len()
    }
}

/// The subscriber's queue was full and messages were dropped for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflowed;

/// A socket's interest in a set of channels. Dropping it releases the interest (the last local
/// listener of a channel makes the worker UNSUBSCRIBE).
pub struct Subscription {
    id: u64,
    channels: Vec<Arc<str>>,
    queue: Arc<Queue>,
    registry: Arc<Registry>,
}

impl Subscription {
    /// The next message, or [`Overflowed`] once messages were dropped for this subscriber
    /// (checked first). Never resolves for a subscription without channels.
    pub async fn recv(&mut self) -> Result<Delivery, Overflowed> {
        std::future::poll_fn(|cx| self.queue.poll_recv(cx))
            .await
            .map_err(|()| Overflowed)
    }

    /// The next message if one is queued right now (none once the queue has overflowed).
    pub fn try_recv(&self) -> Option<Delivery> {
        self.queue.try_recv()
    }

    /// Resolves once this subscriber's queue has overflowed (messages were dropped for it).
    pub async fn overflowed(&self) {
        std::future::poll_fn(|cx| self.queue.poll_overflowed(cx)).await;
    }

    /// Whether the queue has overflowed.
    pub fn is_overflowed(&self) -> bool {
        self.queue.is_overflowed()
    }

    /// Resolves once Redis has confirmed the SUBSCRIBE of every channel. Callers bound it with
    /// a timeout: while Redis is down it does not resolve.
    pub async fn ready(&self) {
        loop {
            let notified = self.registry.synced.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.registry.all_live(&self.channels) {
                return;
            }
            notified.await;
        }
    }

    /// The channels, deduplicated, in the order asked for.
    pub fn channels(&self) -> &[Arc<str>] {
        &self.channels
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.registry.leave(self.id, &self.channels);
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.id)
            .field("channels", &self.channels)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn drain(rx: &mut mpsc::UnboundedReceiver<Arc<str>>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(c) = rx.try_recv() {
            out.push(c.to_string());
        }
        out
    }

    #[test]
    fn sync_is_requested_on_first_join_and_last_leave_only() {
        let (reg, mut rx) = Registry::new(4);
        let a = reg.subscribe(&names(&["x", "y", "x"]), &[]);
        assert_eq!(a.channels().len(), 2, "duplicates ignored");
        assert_eq!(drain(&mut rx), ["x", "y"]);
        let b = reg.subscribe(&names(&["x"]), &[]);
        assert!(drain(&mut rx).is_empty(), "x already wanted");
        drop(a);
        assert_eq!(drain(&mut rx), ["y"], "x still has b");
        drop(b);
        assert_eq!(drain(&mut rx), ["x"]);
        assert_eq!(reg.channel_count(), 0);
    }

    #[tokio::test]
    async fn fan_out_shares_the_payload_and_flags_only_the_full_queue() {
        let (reg, _rx) = Registry::new(2);
        let mut slow = reg.subscribe(&names(&["c"]), &names(&["broadcast"]));
        let mut fast = reg.subscribe(&names(&["c", "other"]), &[]);
        let body = Payload::from_bytes(bytes::Bytes::from_static(b"m"));
        for _ in 0..2 {
            reg.dispatch("c", body.clone(), None, Instant::now());
            let d = fast.recv().await.unwrap();
            assert_eq!(&*d.channel, "c");
            assert_eq!(d.payload.as_bytes().as_ptr(), body.as_bytes().as_ptr());
            assert_eq!(d.label(), "broadcast");
        }
        assert!(!slow.is_overflowed());
        reg.dispatch("c", body.clone(), None, Instant::now());
        assert!(slow.is_overflowed());
        assert!(!fast.is_overflowed());
        assert_eq!(slow.recv().await.unwrap_err(), Overflowed);
        assert_eq!(reg.stats.overflows.load(Ordering::Relaxed), 1);
        reg.dispatch("nobody", body.clone(), None, Instant::now());
        assert_eq!(reg.stats.messages.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn the_envelope_frame_is_built_once_per_message() {
        let (reg, _rx) = Registry::new(4);
        let mut a = reg.subscribe(&names(&["c"]), &names(&["broadcast"]));
        let mut b = reg.subscribe(&names(&["c"]), &[]);
        let body = Payload::from_bytes(bytes::Bytes::from_static(b"m"));
        reg.dispatch("c", body, None, Instant::now());
        let (da, db) = (a.recv().await.unwrap(), b.recv().await.unwrap());
        let built = AtomicU64::new(0);
        let build = |d: &Delivery| {
            built.fetch_add(1, Ordering::Relaxed);
            Utf8Bytes::from(format!("{}:{}", d.label(), d.payload.len()))
        };
        let (fa, fb) = (da.shared_frame(build), db.shared_frame(build));
        assert_eq!(built.load(Ordering::Relaxed), 1);
        assert_eq!(fa, text_wire(Utf8Bytes::from_static("broadcast:1")));
        assert_eq!(fa.as_ptr(), fb.as_ptr(), "one buffer, shared");
    }
}
