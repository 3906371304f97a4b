//! Presence: who is connected, per facility and channel, across workers and hosts.
//!
//! Every socket on a facility with presence joins each channel it subscribes to (label
//! `broadcast`, `user:<u>`, `group:<g>`, or `session` for all session channels together), as
//! one entry `<instance>/<connection>` holding its user name (empty when anonymous). The data
//! lives in Redis (layout in [`scripts`]); this worker keeps the table of its own entries and
//! one task ([`task`]) that writes them: joins, leaves, and a refresh of all of them every
//! `--presence-refresh` seconds, each refresh pushing the entry's expiry `--presence-ttl`
//! seconds ahead.
//!
//! Invariants:
//! - Every way a socket ends leaves: [`Joined`] is a guard whose drop queues the leave.
//! - Joins, refreshes and leaves of this worker run in one task, in order, so a refresh never
//!   brings back an entry that already left.
//! - A worker that dies without leaving (kill -9, a lost host) stops refreshing: its entries
//!   are invisible to readers at most `--presence-ttl` seconds after its last refresh, and
//!   removed (leave events published) by the next reader. A draining worker leaves at once.
//! - Join and leave events are coalesced in Redis: a user's first connection on a channel
//!   (over all workers and hosts) is a `join`, its last a `leave`; anonymous connections are
//!   announced one by one with the new anonymous count.

pub mod scripts;
mod task;
pub mod view;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::bus::channels::{Audiences, Identity};
use crate::bus::{Bus, BusError};
use crate::config::Config;
pub use scripts::Keys;
use scripts::Scripts;
pub use view::{Counts, SESSION_LABEL};

/// Which facilities keep presence (`--presence`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Facilities {
    /// Every facility (`*`, the default).
    All,
    /// None (`none`).
    Off,
    /// Only these.
    Only(Vec<String>),
}

impl Facilities {
    /// Read the `--presence` list: `*` (all), `none`, or facility names.
    pub fn from_list(list: &[String]) -> Self {
        if list.iter().any(|f| f == "*") {
            Facilities::All
        } else if list.is_empty() || list.iter().all(|f| f == "none") {
            Facilities::Off
        } else {
            Facilities::Only(list.iter().filter(|f| *f != "none").cloned().collect())
        }
    }

    /// Whether `facility` keeps presence.
    pub fn contains(&self, facility: &str) -> bool {
        match self {
            Facilities::All => true,
            Facilities::Off => false,
            Facilities::Only(list) => list.iter().any(|f| f == facility),
        }
    }
}

/// The channel labels a socket of `identity` subscribing to `audiences` joins, in the order of
/// `bus::channels` (broadcast, user, groups, session). A personal audience without a user
/// name yields nothing (the handshake refuses it anyway).
pub fn labels(identity: &Identity, audiences: Audiences) -> Vec<String> {
    let mut out = Vec::new();
    if audiences.broadcast {
        out.push("broadcast".to_owned());
    }
    let Some(user) = identity.username.as_deref() else {
        return out;
    };
    if audiences.user {
        out.push(format!("user:{user}"));
    }
    if audiences.group {
        for g in &identity.groups {
            let label = format!("group:{g}");
            if !out.contains(&label) {
                out.push(label);
            }
        }
    }
    if audiences.session && identity.session_key.is_some() {
        out.push(SESSION_LABEL.to_owned());
    }
    out
}

/// One presence entry of a local socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) facility: String,
    pub(crate) label: String,
    /// The user name, empty for an anonymous socket.
    pub(crate) user: String,
}

/// What the task is asked to do, in order.
#[derive(Debug)]
pub(crate) enum Op {
    Join(u64, Vec<Entry>, oneshot::Sender<()>),
    /// Leave every entry the connection joined (the task holds them).
    Leave(u64),
    Close(oneshot::Sender<()>),
}

/// Counters of this worker's presence, copied into its metric slot.
#[derive(Debug, Default)]
pub struct Stats {
    /// Gauge: entries this worker holds (one per socket and channel).
    pub entries: AtomicU64,
    /// Joins, refreshes, leaves or sweeps that Redis did not do (down or refused).
    pub errors: AtomicU64,
}

/// A worker's presence: its entries and the task writing them. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Presence {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    bus: Bus,
    keys: Keys,
    scripts: Scripts,
    facilities: Facilities,
    ttl: Duration,
    /// `<host>:<pid>:<random>`: unique per worker process, also across hosts and restarts.
    instance: String,
    next_conn: AtomicU64,
    ops: mpsc::UnboundedSender<Op>,
    stats: Stats,
}

impl Presence {
    /// Start this worker's presence (spawns the refresher; needs the worker's runtime).
    pub fn start(bus: Bus, config: &Config) -> Self {
        let (ops, rx) = mpsc::unbounded_channel();
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "host".to_owned());
        let instance = format!(
            "{host}:{}:{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let presence = Presence {
            inner: Arc::new(Inner {
                bus,
                keys: Keys::new(&config.redis_prefix),
                scripts: Scripts::new(),
                facilities: Facilities::from_list(&config.presence),
                ttl: Duration::from_secs(config.presence_ttl),
                instance,
                next_conn: AtomicU64::new(1),
                ops,
                stats: Stats::default(),
            }),
        };
        let refresh = Duration::from_secs(config.presence_refresh);
        tokio::spawn(task::run(Arc::downgrade(&presence.inner), rx, refresh));
        presence
    }

    /// Whether `facility` keeps presence.
    pub fn enabled(&self, facility: &str) -> bool {
        self.inner.facilities.contains(facility)
    }

    /// Key and channel names.
    pub fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// This worker's counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The presence of a socket on `facility` subscribing to `audiences`, or None when the
    /// facility keeps none or the socket subscribes to nothing.
    pub fn member(
        &self,
        facility: &str,
        identity: &Identity,
        audiences: Audiences,
    ) -> Option<Member> {
        if !self.enabled(facility) {
            return None;
        }
        let labels = labels(identity, audiences);
        if labels.is_empty() {
            return None;
        }
        Some(Member {
            presence: self.clone(),
            facility: facility.to_owned(),
            user: identity.username.clone(),
            labels,
        })
    }

    /// Who is on channel `label` of `facility` (expired entries are swept first).
    pub async fn snapshot(&self, facility: &str, label: &str) -> Result<Counts, BusError> {
        let (keys, args) = self.inner.keys.snapshot(facility, label);
        let flat = self
            .inner
            .bus
            .eval(&self.inner.scripts.snapshot, keys, args)
            .await?;
        Ok(Counts::from_flat(&flat))
    }

    /// Every channel of `facility` with somebody on it, by label.
    pub async fn facility(&self, facility: &str) -> Result<Vec<(String, Counts)>, BusError> {
        let (keys, args) = self.inner.keys.index(facility);
        let labels = self
            .inner
            .bus
            .eval(&self.inner.scripts.index, keys, args)
            .await?;
        let calls = labels
            .iter()
            .map(|l| {
                (
                    &self.inner.scripts.snapshot,
                    self.inner.keys.snapshot(facility, l),
                )
            })
            .collect();
        let mut out = Vec::new();
        for (label, flat) in labels.into_iter().zip(self.inner.bus.eval_all(calls).await) {
            let counts = Counts::from_flat(&flat?);
            if !counts.is_empty() {
                out.push((label, counts));
            }
        }
        Ok(out)
    }

    /// Remove every entry this worker still holds and stop the refresher (end of a drain).
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.inner.ops.send(Op::Close(done)).is_ok() {
            let _ = wait.await;
        }
    }

    fn send(&self, op: Op) {
        // The task only ends after Close; a send after that has nothing left to do.
        let _ = self.inner.ops.send(op);
    }
}

/// A socket's place in presence, decided before the upgrade; [`Member::join`] once it runs.
#[derive(Clone, Debug)]
pub struct Member {
    presence: Presence,
    facility: String,
    user: Option<String>,
    labels: Vec<String>,
}

impl Member {
    /// The facility.
    pub fn facility(&self) -> &str {
        &self.facility
    }

    /// The channel labels joined.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// The user name (None: anonymous).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// The worker's presence.
    pub fn presence(&self) -> &Presence {
        &self.presence
    }

    /// Join every label; the returned guard leaves them when dropped. The join itself runs on
    /// the presence task; [`Joined::wait`] waits for Redis to have it.
    pub fn join(&self) -> Joined {
        let inner = &self.presence.inner;
        let conn = inner.next_conn.fetch_add(1, Ordering::Relaxed);
        let entries: Vec<Entry> = self
            .labels
            .iter()
            .map(|label| Entry {
                facility: self.facility.clone(),
                label: label.clone(),
                user: self.user.clone().unwrap_or_default(),
            })
            .collect();
        inner
            .stats
            .entries
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let count = entries.len();
        let (done, joined) = oneshot::channel();
        self.presence.send(Op::Join(conn, entries, done));
        Joined {
            presence: self.presence.clone(),
            conn,
            count,
            joined: Some(joined),
        }
    }
}

/// A joined socket; dropping it leaves.
#[derive(Debug)]
pub struct Joined {
    presence: Presence,
    conn: u64,
    /// How many entries it joined (the entries themselves live in the task's table only: one
    /// copy per socket, not two).
    count: usize,
    joined: Option<oneshot::Receiver<()>>,
}

impl Joined {
    /// Wait (at most `limit`) until the join was written to Redis, or failed.
    pub async fn wait(&mut self, limit: Duration) {
        if let Some(rx) = self.joined.take() {
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }
}

impl Drop for Joined {
    fn drop(&mut self) {
        self.presence
            .inner
            .stats
            .entries
            .fetch_sub(self.count as u64, Ordering::Relaxed);
        self.presence.send(Op::Leave(self.conn));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn facilities_from_the_flag() {
        assert_eq!(Facilities::from_list(&list(&["*"])), Facilities::All);
        assert_eq!(Facilities::from_list(&list(&["none"])), Facilities::Off);
        assert_eq!(Facilities::from_list(&[]), Facilities::Off);
        let only = Facilities::from_list(&list(&["chat", "lobby"]));
        assert!(only.contains("chat") && only.contains("lobby") && !only.contains("news"));
    }

    #[test]
    fn labels_follow_the_subscriptions() {
        let alice = Identity {
            username: Some("alice".into()),
            groups: vec!["ops".into(), "ops".into(), "dev".into()],
            session_key: Some("secretkey".into()),
            is_staff: false,
        };
        let all = Audiences {
            broadcast: true,
            user: true,
            group: true,
            session: true,
        };
        assert_eq!(
            labels(&alice, all),
            [
                "broadcast",
                "user:alice",
                "group:ops",
                "group:dev",
                "session"
            ]
        );
        assert!(labels(&alice, all).iter().all(|l| !l.contains("secretkey")));
        assert_eq!(labels(&Identity::anonymous(), all), ["broadcast"]);
        assert!(labels(&alice, Audiences::default()).is_empty());
    }
}
