//! The history commands of the bus: publishing to channels that keep history and reading a
//! channel's history back, each one Lua script run with `EVALSHA` (the scripts themselves are in
//! `history.rs`).
//!
//! Invariants:
//! - A script is sent by hash; its text only after Redis answered `NOSCRIPT` (first use, or a
//!   Redis that restarted empty), then the `EVALSHA` is retried once. `NOSCRIPT` means the
//!   script did not run, so the retry never publishes twice.
//! - Publishes keep the single-attempt, fail-fast options of [`Bus::publish`]: a publish
//!   reported as failed never reaches anyone later.

use bytes::Bytes;
use fred::clients::Client;
use fred::interfaces::{ClientLike, LuaInterface};
use fred::types::{ClusterHash, CustomCommand, Value};
use sha1::{Digest, Sha1};

use super::history::{
    self, HistoryRead, PUBLISH_LUA, Position, READ_LUA, Retention, history_key, meta_key,
};
use super::{Bus, BusError};

/// A Lua script and its SHA-1, computed once.
pub(super) struct Script {
    lua: &'static str,
    sha: String,
}

impl Script {
    fn new(lua: &'static str) -> Self {
        let sha = Sha1::digest(lua.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Script { lua, sha }
    }
}

/// The bus's two scripts.
pub(super) struct Scripts {
    publish: Script,
    read: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Scripts {
            publish: Script::new(PUBLISH_LUA),
            read: Script::new(READ_LUA),
        }
    }
}

/// `EVALSHA`, loading the script on `NOSCRIPT` and retrying once.
async fn eval<C: ClientLike>(
    client: &C,
    loader: &Client,
    script: &Script,
    keys: [String; 3],
    args: Vec<Value>,
) -> Result<Value, BusError> {
    let mut all: Vec<Value> = vec![script.sha.as_str().into(), 3i64.into()];
    all.extend(keys.into_iter().map(Value::from));
    all.extend(args);
    // The first key (after the hash and the key count) picks the cluster node.
    let evalsha = || CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false);
    match client.custom::<Value, Value>(evalsha(), all.clone()).await {
        Err(e) if e.details().starts_with("NOSCRIPT") => {
            let _: Value = loader.script_load(script.lua).await?;
            Ok(client.custom(evalsha(), all).await?)
        }
        other => Ok(other?),
    }
}

fn keys(channel: &str) -> [String; 3] {
    [channel.to_owned(), meta_key(channel), history_key(channel)]
}

fn bytes_of(v: Value) -> Option<Bytes> {
    match v {
        Value::Null => None,
        other => other.into_bytes(),
    }
}

impl Bus {
    /// [`Bus::publish`], keeping history per `history`: without it exactly the ws4redis
    /// commands; with it, one script per channel (see `history.rs`). Returns the receivers
    /// summed over the channels.
    pub async fn publish_with(
        &self,
        channels: &[String],
        payload: Bytes,
        expire_secs: u64,
        history: Option<Retention>,
    ) -> Result<u64, BusError> {
        self.publish_all(
            channels,
            std::slice::from_ref(&payload),
            expire_secs,
            history,
        )
        .await
    }

    /// [`Bus::publish_with`] for several bodies, published in order as one pipeline (a
    /// socket's burst of messages costs one round trip, not one each); on channels without
    /// history only the last body is stored as the last message.
    pub async fn publish_all(
        &self,
        channels: &[String],
        bodies: &[Bytes],
        expire_secs: u64,
        history: Option<Retention>,
    ) -> Result<u64, BusError> {
        let Some(retention) = history else {
            return self.publish_plain(channels, bodies, expire_secs).await;
        };
        if channels.is_empty() || bodies.is_empty() {
            return Ok(0);
        }
        if !self.inner.commands.is_connected() {
            return Err(BusError::Unavailable);
        }
        let once = self.inner.commands.with_options(&super::single_attempt());
        let epoch = history::new_epoch();
        let runs = bodies.iter().flat_map(|body| {
            channels.iter().map(|c| {
                let args: Vec<Value> = vec![
                    body.clone().into(),
                    i64::try_from(expire_secs).unwrap_or(i64::MAX).into(),
                    i64::from(retention.size).into(),
                    i64::try_from(retention.ttl_secs).unwrap_or(i64::MAX).into(),
                    epoch.as_str().into(),
                ];
                eval(
                    &once,
                    &self.inner.commands,
                    &self.inner.scripts.publish,
                    keys(c),
                    args,
                )
            })
        });
        let mut receivers = 0u64;
        for result in super::in_order(runs.collect()).await {
            if let Some(Value::Integer(n)) = result?.into_array().into_iter().next() {
                receivers += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(receivers)
    }

    /// The channel's position, its ws4redis last message and, when `after` is given, up to
    /// `max` history entries with offsets above `after` (else the newest entry), read
    /// atomically.
    pub async fn read_history(
        &self,
        channel: &str,
        after: Option<u64>,
        max: u32,
    ) -> Result<HistoryRead, BusError> {
        if !self.inner.commands.is_connected() {
            return Err(BusError::Unavailable);
        }
        let start = after.map_or(String::new(), |a| format!("{}-0", a.saturating_add(1)));
        let args = vec![Value::from(start), Value::from(i64::from(max.max(1)))];
        let reply = eval(
            &self.inner.commands,
            &self.inner.commands,
            &self.inner.scripts.read,
            keys(channel),
            args,
        )
        .await?;
        let mut parts = reply.into_array().into_iter();
        let (Some(epoch), Some(offset), Some(last), Some(entries)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(BusError::Redis("unexpected history reply".into()));
        };
        let epoch = bytes_of(epoch).and_then(|b| String::from_utf8(b.to_vec()).ok());
        let offset = bytes_of(offset)
            .and_then(|b| std::str::from_utf8(&b).ok()?.parse::<u64>().ok())
            .unwrap_or(0);
        let position = epoch.map(|e| Position {
            epoch: e.into(),
            offset,
        });
        let mut out = Vec::new();
        if let Value::Array(entries) = entries {
            for entry in entries {
                let mut e = entry.into_array().into_iter();
                let id = e.next().and_then(bytes_of);
                let fields = e.next().map(Value::into_array).unwrap_or_default();
                let off = id.and_then(|b| history::offset_of_id(std::str::from_utf8(&b).ok()?));
                let body = fields.into_iter().nth(1).and_then(bytes_of);
                if let (Some(off), Some(body)) = (off, body) {
                    out.push((off, body));
                }
            }
        }
        Ok(HistoryRead {
            position,
            last: bytes_of(last).filter(|b| !b.is_empty()),
            entries: out,
        })
    }
}
