//! The presence data in Redis: key names and the Lua scripts that change them atomically.
//!
//! Per facility `F` and channel label `L` (`broadcast`, `user:<u>`, `group:<g>`, `session`),
//! with `P` the Redis prefix head (`prefix:` or empty):
//! - `P presence:F L`         HASH  entry (`<instance>/<connection>`) → user name (`''` = anonymous)
//! - `P presence-expiry:F L`  ZSET  entry → expiry (ms, Redis's clock)
//! - `P presence-users:F L`   HASH  user name → live connections
//! - `P presence-index:F`     ZSET  label → latest expiry (which channels of `F` to list)
//! - `P presence-events:F L`  pub/sub channel of `join`/`leave` events (JSON, envelope format)
//!
//! A facility has no whitespace (see `bus::channels`), so the space splits the names without
//! ambiguity. None of these is a ws4redis channel: plain ws4redis clients see nothing new.
//!
//! Invariants: every change goes through one of the scripts, so the users hash always counts
//! exactly the entries of the entries hash; expiry uses Redis's clock (`TIME`), so hosts with
//! skewed clocks agree; expired entries are removed (and their leaves announced) by whoever
//! reads the channel next: the refresher of any worker with a socket on it, the API, a snapshot.

use crate::bus::{Call, Script};

macro_rules! script {
    ($file:literal) => {
        concat!(include_str!("lua/common.lua"), include_str!($file))
    };
}

/// The presence scripts, loaded once per worker.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// Join or refresh one entry.
    pub(crate) join: Script,
    /// Remove one entry.
    pub(crate) leave: Script,
    /// Sweep expired entries and return the users hash.
    pub(crate) snapshot: Script,
    /// Live labels of a facility.
    pub(crate) index: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Scripts {
            join: Script::new(script!("lua/join.lua")),
            leave: Script::new(script!("lua/leave.lua")),
            snapshot: Script::new(script!("lua/snapshot.lua")),
            index: Script::new(script!("lua/index.lua")),
        }
    }
}

/// Key and channel names for one Redis prefix.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Keys {
    head: String,
}

impl Keys {
    /// `prefix` is `WS4REDIS_PREFIX` (empty: no prefix, not even the colon).
    pub fn new(prefix: &str) -> Self {
        let head = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}:")
        };
        Keys { head }
    }

    /// The pub/sub channel of join/leave events of `label` on `facility`.
    pub fn events(&self, facility: &str, label: &str) -> String {
        format!("{}presence-events:{facility} {label}", self.head)
    }

    /// The four keys every script takes, in the order of `lua/common.lua`.
    fn keys(&self, facility: &str, label: &str) -> Vec<String> {
        let h = &self.head;
        vec![
            format!("{h}presence:{facility} {label}"),
            format!("{h}presence-expiry:{facility} {label}"),
            format!("{h}presence-users:{facility} {label}"),
            format!("{h}presence-index:{facility}"),
        ]
    }

    fn call(&self, facility: &str, label: &str, more: &[&str]) -> Call {
        let mut args = vec![label.to_owned(), self.events(facility, label)];
        args.extend(more.iter().map(|s| (*s).to_owned()));
        (self.keys(facility, label), args)
    }

    /// Arguments of the join script.
    pub(crate) fn join(
        &self,
        facility: &str,
        label: &str,
        field: &str,
        user: &str,
        ttl_ms: u64,
    ) -> Call {
        self.call(facility, label, &[field, user, &ttl_ms.to_string()])
    }

    /// Arguments of the leave script.
    pub(crate) fn leave(&self, facility: &str, label: &str, field: &str) -> Call {
        self.call(facility, label, &[field])
    }

    /// Arguments of the snapshot script.
    pub(crate) fn snapshot(&self, facility: &str, label: &str) -> Call {
        self.call(facility, label, &[])
    }

    /// Arguments of the index script.
    pub(crate) fn index(&self, facility: &str) -> Call {
        self.call(facility, "", &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_collide_with_ws4redis_channels() {
        let k = Keys::new("pre");
        assert_eq!(
            k.events("chat", "user:alice"),
            "pre:presence-events:chat user:alice"
        );
        let (keys, args) = k.join("chat", "broadcast", "h:1:ab/7", "alice", 30_000);
        assert_eq!(
            keys,
            [
                "pre:presence:chat broadcast",
                "pre:presence-expiry:chat broadcast",
                "pre:presence-users:chat broadcast",
                "pre:presence-index:chat",
            ]
        );
        assert_eq!(
            args,
            [
                "broadcast",
                "pre:presence-events:chat broadcast",
                "h:1:ab/7",
                "alice",
                "30000"
            ]
        );
        assert_eq!(
            Keys::new("").events("f", "broadcast"),
            "presence-events:f broadcast"
        );
    }
}
