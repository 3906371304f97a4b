//! Channel history in Redis: what to keep per facility ([`Retention`], [`HistoryRule`]), where a
//! message stands in it ([`Position`]), the marker that carries that position through pub/sub,
//! and the two Lua scripts (publish, read). See docs/protocol.md, sections 1, 5 and 6.
//!
//! Invariants:
//! - Everything a publish does to a history channel happens in one script, atomically: the epoch
//!   (created when missing, the old stream dropped with it), the next offset, the stream entry
//!   `<offset>-1`, the expiries, the ws4redis last-message key and the PUBLISH. So offsets are
//!   gap-free and in publish order for every worker and host.
//! - Keys are `{C}:meta` and `{C}:history` for channel `C`: one cluster slot with `C`, and never
//!   equal to a ws4redis key (those are the bare channel names).
//! - The marker starts with a NUL byte, which no ws4redis text body starts with; a message
//!   without a marker is delivered as is, without a position.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Most messages one channel may keep.
pub const MAX_SIZE: u32 = 10_000;
/// Longest time-to-live of a history, in seconds (30 days).
pub const MAX_TTL_SECS: u64 = 30 * 24 * 3600;
/// The facility name of the default rule.
pub const DEFAULT_FACILITY: &str = "*";

/// How much history the channels of one facility keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retention {
    /// Messages kept per channel (1..=[`MAX_SIZE`]).
    pub size: u32,
    /// Seconds the history outlives the channel's last publish; 0 = no expiry.
    pub ttl_secs: u64,
}

/// One `--history <facility>=<size>[:<ttl>]` rule (`*` = every facility not listed).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRule {
    /// The facility, or `*`.
    pub facility: String,
    /// What it keeps.
    pub retention: Retention,
}

/// Parse `<facility>=<size>[:<ttl-seconds>]` (clap value parser).
pub fn parse_rule(s: &str) -> Result<HistoryRule, String> {
    let usage = || format!("`{s}`: expected <facility>=<size>[:<ttl-seconds>], e.g. chat=100:600");
    let (facility, spec) = s.trim().split_once('=').ok_or_else(usage)?;
    let facility = facility.trim();
    if facility != DEFAULT_FACILITY {
        super::channels::validate_facility(facility).map_err(|e| format!("`{s}`: {e}"))?;
    }
    let (size, ttl) = match spec.split_once(':') {
        Some((size, ttl)) => (size, Some(ttl)),
        None => (spec, None),
    };
    let size: u32 = size.trim().parse().map_err(|_| usage())?;
    if !(1..=MAX_SIZE).contains(&size) {
        return Err(format!("`{s}`: the size must be between 1 and {MAX_SIZE}"));
    }
    let ttl_secs: u64 = match ttl {
        Some(t) => t.trim().parse().map_err(|_| usage())?,
        None => 0,
    };
    if ttl_secs > MAX_TTL_SECS {
        return Err(format!(
            "`{s}`: the ttl must be at most {MAX_TTL_SECS} seconds"
        ));
    }
    Ok(HistoryRule {
        facility: facility.to_owned(),
        retention: Retention { size, ttl_secs },
    })
}

/// The retention of `facility` under `rules`: its own rule (the last one given wins), else the
/// `*` rule, else none (history off, plain ws4redis behaviour).
pub fn retention_for(rules: &[HistoryRule], facility: &str) -> Option<Retention> {
    let find = |name: &str| rules.iter().rev().find(|r| r.facility == name);
    find(facility)
        .or_else(|| find(DEFAULT_FACILITY))
        .map(|r| r.retention)
}

/// Where a message stands in its channel's history.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    /// Changes whenever the history is lost; offsets of different epochs are unrelated.
    pub epoch: Arc<str>,
    /// 1 for the first message of an epoch; 0 = before the first.
    pub offset: u64,
}

/// The start of a marked pub/sub payload: `"\0wsh1\0" epoch ":" offset "\0" body`.
const MARKER: &[u8] = b"\0wsh1\0";
/// Longest epoch accepted from a marker (ours are 16 hex digits).
const MAX_EPOCH_BYTES: usize = 64;

/// Split a pub/sub payload into its position (when marked) and the body. A payload that starts
/// like a marker but is malformed is delivered whole, as ws4redis would.
pub(crate) fn split_marker(payload: Bytes) -> (Option<Position>, Bytes) {
    let Some(rest) = payload.strip_prefix(MARKER) else {
        return (None, payload);
    };
    let Some(end) = rest.iter().position(|b| *b == 0) else {
        return (None, payload);
    };
    let parsed = std::str::from_utf8(&rest[..end])
        .ok()
        .and_then(|head| head.rsplit_once(':'))
        .filter(|(epoch, _)| !epoch.is_empty() && epoch.len() <= MAX_EPOCH_BYTES)
        .and_then(|(epoch, offset)| Some((epoch, offset.parse::<u64>().ok()?)));
    match parsed {
        Some((epoch, offset)) => {
            let body = payload.slice(MARKER.len() + end + 1..);
            let epoch = Arc::from(epoch);
            (Some(Position { epoch, offset }), body)
        }
        None => (None, payload),
    }
}

/// `{C}:meta`: the epoch and the last offset of channel `C`.
pub(crate) fn meta_key(channel: &str) -> String {
    format!("{{{channel}}}:meta")
}

/// `{C}:history`: the stream of channel `C`'s last messages.
pub(crate) fn history_key(channel: &str) -> String {
    format!("{{{channel}}}:history")
}

/// A fresh random epoch: 16 hex digits.
pub(crate) fn new_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// KEYS: channel (last-message key), meta, history. ARGV: body, expire seconds (0 = not stored),
/// size, ttl seconds (0 = none), epoch to use when the channel has none. Returns
/// `{receivers, epoch, offset}`.
pub(crate) const PUBLISH_LUA: &str = r#"
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[5]
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
end
local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
local id = string.format('%d', offset)
redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[3], id .. '-1', 'd', ARGV[1])
local ttl = tonumber(ARGV[4])
if ttl > 0 then
  redis.call('EXPIRE', KEYS[2], ttl)
  redis.call('EXPIRE', KEYS[3], ttl)
end
local expire = tonumber(ARGV[2])
if expire > 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', expire)
end
local n = redis.call('PUBLISH', KEYS[1], '\0wsh1\0' .. epoch .. ':' .. id .. '\0' .. ARGV[1])
return {n, epoch, offset}
"#;

/// KEYS: channel, meta, history. ARGV: first stream id to read (`<offset>-0`; empty: just the
/// newest entry), most entries. Returns `{epoch|nil, offset|nil, last message|nil, entries}`.
pub(crate) const READ_LUA: &str = r#"
local m = redis.call('HMGET', KEYS[2], 'epoch', 'offset')
local last = false
if redis.call('TYPE', KEYS[1]).ok == 'string' then
  last = redis.call('GET', KEYS[1])
end
local entries = {}
if ARGV[1] ~= '' then
  entries = redis.call('XRANGE', KEYS[3], ARGV[1], '+', 'COUNT', ARGV[2])
else
  entries = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
end
return {m[1], m[2], last, entries}
"#;

/// What [`super::Bus::read_history`] found for one channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryRead {
    /// The channel's current position; `None` when it has no history (never published with
    /// history, expired, or Redis lost it).
    pub position: Option<Position>,
    /// The ws4redis last message (`None` once it expired or was never stored).
    pub last: Option<Bytes>,
    /// Entries after the requested offset, oldest first (without one: the newest entry), as
    /// (offset, body).
    pub entries: Vec<(u64, Bytes)>,
}

/// The offset in a stream entry id `<offset>-1`.
pub(crate) fn offset_of_id(id: &str) -> Option<u64> {
    id.split_once('-')?.0.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_validate() {
        let r = parse_rule("chat=100:600").unwrap();
        assert_eq!(r.facility, "chat");
        assert_eq!(
            r.retention,
            Retention {
                size: 100,
                ttl_secs: 600
            }
        );
        assert_eq!(parse_rule(" foo = 10 ").unwrap().retention.ttl_secs, 0);
        assert_eq!(parse_rule("*=5").unwrap().facility, "*");
        for bad in [
            "chat",
            "chat=0",
            "chat=10001",
            "chat=x",
            "chat=5:y",
            "=5",
            "a b=5",
            "chat=5:99999999999",
        ] {
            assert!(parse_rule(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn own_rule_wins_over_default_last_rule_wins() {
        let rules: Vec<HistoryRule> = ["*=5", "chat=10", "chat=20:3"]
            .iter()
            .map(|s| parse_rule(s).unwrap())
            .collect();
        assert_eq!(retention_for(&rules, "chat").unwrap().size, 20);
        assert_eq!(retention_for(&rules, "other").unwrap().size, 5);
        assert_eq!(retention_for(&rules[1..], "other"), None);
    }

    #[test]
    fn marker_round_trip_and_malformed_markers_pass_through() {
        let (pos, body) = split_marker(Bytes::from_static(b"\0wsh1\0abc:42\0hello"));
        let pos = pos.unwrap();
        assert_eq!((&*pos.epoch, pos.offset), ("abc", 42));
        assert_eq!(&body[..], b"hello");
        let (pos, body) = split_marker(Bytes::from_static(b"\0wsh1\0e:1\0"));
        assert_eq!(pos.unwrap().offset, 1);
        assert!(body.is_empty());
        for raw in [
            &b"plain"[..],
            b"\0wsh1\0no-terminator",
            b"\0wsh1\0e:x\0body",
            b"\0wsh1\0:5\0body",
            b"\0wsh1\0\xff:5\0body",
        ] {
            let (pos, body) = split_marker(Bytes::copy_from_slice(raw));
            assert!(pos.is_none(), "{raw:?}");
            assert_eq!(&body[..], raw);
        }
    }

    #[test]
    fn keys_share_the_channel_slot_and_epochs_differ() {
        assert_eq!(meta_key("broadcast:chat"), "{broadcast:chat}:meta");
        assert_eq!(history_key("broadcast:chat"), "{broadcast:chat}:history");
        assert_eq!(offset_of_id("17-1"), Some(17));
        assert_eq!(offset_of_id("x"), None);
        assert_eq!(new_epoch().len(), 16);
        assert_ne!(new_epoch(), new_epoch());
    }
}
