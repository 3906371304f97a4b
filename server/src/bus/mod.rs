//! The bus: a worker's only road to Redis pub/sub, and the local fan-out of its messages.
//!
//! One [`Bus`] per worker owns exactly two Redis connections, whatever the number of sockets:
//! a fred `SubscriberClient` (every channel any local socket listens to) and a command `Client`
//! (PUBLISH, SET EX, GET, Lua scripts for history and presence; also lent to the session store
//! through [`Bus::commands`]). fred stays behind this module, so the Redis client can be swapped in one place.
//!
//! Invariants:
//! - Construction never fails because Redis is down: both clients start with `fail_fast` off and
//!   a reconnect policy that retries forever; `manage_subscriptions` plus our own syncer restore
//!   every channel after a reconnect.
//! - A message from Redis is turned into a [`Payload`] once and shared by refcount.
//! - Nothing here awaits a socket: fan-out is `try_send` into bounded per-socket queues.
//! - Commands fail fast with [`BusError::Unavailable`] while the command connection is down,
//!   instead of queueing behind a reconnect.

pub mod channels;
pub mod history;
mod lua;
mod payload;
mod queue;
mod registry;
mod scripts;
mod tasks;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use fred::clients::{Client, SubscriberClient};
use fred::error::{Error as RedisError, ErrorKind};
use fred::interfaces::{ClientLike, EventInterface, KeysInterface, PubsubInterface};
use fred::types::config::Options;
use fred::types::config::{Config as RedisConfig, ReconnectPolicy};
use fred::types::{Builder, Expiration, Value};

pub use history::{HistoryRead, HistoryRule, Position, Retention};
pub use lua::{Call, Script};
pub use payload::{Payload, text_wire};
pub use registry::{BusStats, Delivery, Overflowed, Subscription};

use crate::config::Config;
use registry::Registry;

/// Commands (and SUBSCRIBEs) taking longer than this fail, so a socket is not held hostage by
/// a Redis that accepts connections but does not answer.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Reconnect backoff: 5 ms doubling up to 250 ms, forever. fred waits the first delay even
/// before the very first connection, so a long first step would slow every worker start. The
/// cap bounds how long after Redis returns a worker is still deaf: messages published in that
/// window reach nobody (with a 2 s cap, 1.1–1.7 s of messages were lost after a 5 s outage).
/// A refused connect costs Redis nothing, so four tries a second per connection are cheap.
const RECONNECT_MIN_MS: u32 = 5;
const RECONNECT_MAX_MS: u32 = 250;
/// Random extra delay per reconnect attempt: spreads many workers' reconnects after a restart.
const RECONNECT_JITTER_MS: u32 = 50;
/// fred's pub/sub broadcast buffer (its default of 32 drops messages under bursts). Each
/// event channel of the subscriber preallocates this many slots.
const MESSAGE_BUFFER: usize = 8_192;
/// How long [`Bus::connect`] waits for Redis before returning anyway.
const STARTUP_WAIT: Duration = Duration::from_secs(2);

/// Errors of the Redis layer.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The Redis URL or client options cannot be used (fix the configuration).
    #[error("bad Redis configuration: {0}")]
    Config(String),
    /// Redis is not reachable right now; the client keeps reconnecting.
    #[error("redis unavailable")]
    Unavailable,
    /// Redis answered with an error.
    #[error("redis error: {0}")]
    Redis(String),
}

impl From<RedisError> for BusError {
    fn from(e: RedisError) -> Self {
        match e.kind() {
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure => {
                BusError::Unavailable
            }
            ErrorKind::Config | ErrorKind::Url | ErrorKind::Tls => {
                BusError::Config(e.details().to_owned())
            }
            _ => BusError::Redis(e.to_string()),
        }
    }
}

/// URL schemes we hand to fred (it would read any scheme as a plain TCP address).
const SCHEMES: [&str; 5] = [
    "redis://",
    "rediss://",
    "redis+unix://",
    "redis-sentinel://",
    "rediss-sentinel://",
];

fn check_scheme(url: &str) -> Result<(), BusError> {
    if SCHEMES.iter().any(|s| url.starts_with(s)) {
        Ok(())
    } else {
        Err(BusError::Config(format!(
            "{url}: the Redis URL must start with one of {}",
            SCHEMES.join(", ")
        )))
    }
}

/// Options of a publish: never queued behind a reconnect nor retried.
fn single_attempt() -> Options {
    Options {
        fail_fast: true,
        max_attempts: Some(1),
        timeout: Some(COMMAND_TIMEOUT),
        ..Options::default()
    }
}

/// Await `futures` together, issuing them in the order given: every one is first polled in
/// that order, so fred writes their commands to its one connection in that order (a socket's
/// publishes reach Redis, and so every subscriber, as the socket sent them). Results come back
/// in the same order. (`join_all` polls in order only below 30 futures.)
pub(crate) async fn in_order<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    use futures_util::future::{MaybeDone, maybe_done};
    let mut all: Vec<std::pin::Pin<Box<MaybeDone<F>>>> = futures
        .into_iter()
        .map(|f| Box::pin(maybe_done(f)))
        .collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for f in &mut all {
            done &= f.as_mut().poll(cx).is_ready();
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    all.iter_mut()
        .filter_map(|f| f.as_mut().take_output())
        .collect()
}

/// A worker's connection to Redis. Cheap to clone; all clones share the two connections.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

struct Inner {
    commands: Client,
    subscriber: SubscriberClient,
    registry: Arc<Registry>,
    scripts: scripts::Scripts,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("up", &self.is_up())
            .field("channels", &self.inner.registry.channel_count())
            .finish()
    }
}

impl Bus {
    /// Build the clients, start connecting and the bus tasks, and wait up to two seconds for
    /// Redis. Fails only on a configuration error, never because Redis is down. Must run inside
    /// the worker's runtime (it spawns tasks).
    pub async fn connect(config: &Config) -> Result<Bus, BusError> {
        Self::connect_url(&config.redis_url, config.send_queue).await
    }

    /// [`Bus::connect`] with just the Redis URL and the per-socket queue bound (for one-off
    /// commands such as `wsredis publish`).
    pub async fn connect_url(redis_url: &str, send_queue: usize) -> Result<Bus, BusError> {
        let bad_config = |e: RedisError| BusError::Config(format!("{redis_url}: {e}"));
        check_scheme(redis_url)?;
        let mut redis = RedisConfig::from_url(redis_url).map_err(bad_config)?;
        redis.fail_fast = false;
        let mut policy = ReconnectPolicy::new_exponential(0, RECONNECT_MIN_MS, RECONNECT_MAX_MS, 2);
        // fred adds up to 100 ms of random jitter to every delay, the first included; a little
        // still spreads the reconnects of many workers after a Redis restart.
        policy.set_jitter(RECONNECT_JITTER_MS);

        let commands = Builder::from_config(redis.clone())
            .set_policy(policy.clone())
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .build()
            .map_err(bad_config)?;
        let subscriber = Builder::from_config(redis)
            .set_policy(policy)
            .with_performance_config(|p| {
                p.default_command_timeout = COMMAND_TIMEOUT;
                p.broadcast_channel_capacity = MESSAGE_BUFFER;
            })
            .build_subscriber_client()
            .map_err(bad_config)?;

        // Take the receiver before anything is subscribed.
        let messages = subscriber.message_rx();
        let (registry, sync_rx) = Registry::new(send_queue);

        let _commands_task = commands.connect();
        let _subscriber_task = subscriber.connect();
        let _resubscribe_task = subscriber.manage_subscriptions();
        let mut reconnects = subscriber.reconnect_rx();
        let counted = registry.clone();
        tokio::spawn(async move {
            // The first connection is not a reconnect: skip it.
            let mut first = true;
            while reconnects.recv().await.is_ok() {
                if !std::mem::take(&mut first) {
                    counted.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        tokio::spawn(tasks::run_dispatcher(registry.clone(), messages));
        tokio::spawn(tasks::run_syncer(
            Arc::downgrade(&registry),
            subscriber.clone(),
            sync_rx,
        ));

        let _ = tokio::time::timeout(STARTUP_WAIT, async {
            let _ = commands.wait_for_connect().await;
            let _ = subscriber.wait_for_connect().await;
        })
        .await;

        Ok(Bus {
            inner: Arc::new(Inner {
                commands,
                subscriber,
                registry,
                scripts: scripts::Scripts::default(),
            }),
        })
    }

    /// Listen to `channels` (duplicates ignored); each message is queued for this subscriber
    /// (bounded by `send_queue`). Dropping the subscription releases the interest.
    pub fn subscribe(&self, channels: &[String]) -> Subscription {
        self.inner.registry.subscribe(channels, &[])
    }

    /// [`Bus::subscribe`], naming each channel's audience label (`broadcast`, `user:U`, …, in
    /// the same order as `channels`) for the envelope frames shared by its deliveries.
    pub fn subscribe_labeled(&self, channels: &[String], labels: &[String]) -> Subscription {
        self.inner.registry.subscribe(channels, labels)
    }

    /// PUBLISH `payload` to each channel and, when `expire_secs > 0`, `SET channel payload EX
    /// expire_secs` (the ws4redis persisted last message), all in one pipeline. Returns how
    /// many subscribers Redis delivered to (summed over the channels; one per subscribed worker
    /// or host, not per socket).
    pub async fn publish(
        &self,
        channels: &[String],
        payload: Bytes,
        expire_secs: u64,
    ) -> Result<u64, BusError> {
        self.publish_plain(channels, std::slice::from_ref(&payload), expire_secs)
            .await
    }

    /// PUBLISH each of `bodies` (in order) to each channel and, when `expire_secs > 0`, `SET
    /// channel body EX expire_secs` with the last body (the ws4redis persisted last message),
    /// all in one pipeline. Returns how many subscribers Redis delivered to (summed over the
    /// channels and bodies; one per subscribed worker or host, not per socket).
    async fn publish_plain(
        &self,
        channels: &[String],
        bodies: &[Bytes],
        expire_secs: u64,
    ) -> Result<u64, BusError> {
        let Some(last) = bodies.last() else {
            return Ok(0);
        };
        if channels.is_empty() {
            return Ok(0);
        }
        if !self.inner.commands.is_connected() {
            return Err(BusError::Unavailable);
        }
        let expire = i64::try_from(expire_secs).unwrap_or(i64::MAX);
        // Never queued behind a reconnect nor retried: a publish that is reported as failed
        // must not reach anyone later (fred would otherwise replay it once Redis is back).
        // Options apply per command, so the commands are issued one by one but concurrently:
        // fred pipelines concurrent commands on its one connection, in the order issued.
        let once = self.inner.commands.with_options(&single_attempt());
        let publishes = bodies.iter().flat_map(|body| {
            channels
                .iter()
                .map(|c| once.publish::<Value, _, _>(c.as_str(), body.clone()))
        });
        // Only the last body is stored: the earlier SETs would be overwritten at once.
        let stores = channels.iter().filter(|_| expire > 0).map(|c| {
            once.set::<Value, _, _>(
                c.as_str(),
                last.clone(),
                Some(Expiration::EX(expire)),
                None,
                false,
            )
        });
        let (published, stored) =
            futures_util::future::join(in_order(publishes.collect()), in_order(stores.collect()))
                .await;
        let mut receivers = 0u64;
        for value in published {
            if let Value::Integer(n) = value? {
                receivers += u64::try_from(n).unwrap_or(0);
            }
        }
        for value in stored {
            value?;
        }
        Ok(receivers)
    }

    /// The persisted last message of each channel that has one, in the order given.
    pub async fn stored(&self, channels: &[String]) -> Result<Vec<Bytes>, BusError> {
        if channels.is_empty() {
            return Ok(Vec::new());
        }
        if !self.inner.commands.is_connected() {
            return Err(BusError::Unavailable);
        }
        let pipe = self.inner.commands.pipeline();
        for channel in channels {
            pipe.get::<(), _>(channel.as_str()).await?;
        }
        let mut out = Vec::new();
        for result in pipe.try_all::<Value>().await {
            match result? {
                Value::String(s) => out.push(s.into_inner()),
                Value::Bytes(b) => out.push(b),
                _ => {}
            }
        }
        out.retain(|b| !b.is_empty());
        Ok(out)
    }

    /// Whether both Redis connections are up right now.
    pub fn is_up(&self) -> bool {
        self.inner.commands.is_connected() && self.inner.subscriber.is_connected()
    }

    /// The command client (GET/SET/...), shared with the session store. Never put it in
    /// subscribe mode.
    pub fn commands(&self) -> &Client {
        &self.inner.commands
    }

    /// Counters of this worker's bus.
    pub fn stats(&self) -> &BusStats {
        &self.inner.registry.stats
    }

    /// Number of channels with at least one local socket.
    pub fn channel_count(&self) -> usize {
        self.inner.registry.channel_count()
    }

    /// Close both connections (end of the worker). Sockets still subscribed stop receiving.
    pub async fn quit(&self) {
        let _ = self.inner.subscriber.quit().await;
        let _ = self.inner.commands.quit().await;
    }
}
