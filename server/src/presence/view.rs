//! What presence looks like to readers: the users hash of one channel turned into distinct
//! names and counts, and the JSON of the API.
//!
//! Invariant: a session channel (label `session`) is shown as a connection count only; its
//! entries are per session key and the key never leaves the server.

use std::collections::BTreeSet;

use serde_json::{Value, json};

/// The label every session channel of a facility shares.
pub const SESSION_LABEL: &str = "session";

/// Who is on one channel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Distinct user names, sorted.
    pub users: BTreeSet<String>,
    /// Anonymous connections.
    pub anonymous: u64,
    /// All connections (users' and anonymous).
    pub connections: u64,
}

impl Counts {
    /// Read the flat `user, count, user, count, …` reply of the snapshot script. Zero or
    /// unparsable counts are skipped (a reader never trusts Redis to be tidy).
    pub fn from_flat(flat: &[String]) -> Self {
        let mut c = Counts::default();
        for pair in flat.chunks_exact(2) {
            let n = pair[1].parse::<i64>().unwrap_or(0);
            let Ok(n) = u64::try_from(n) else { continue };
            if n == 0 {
                continue;
            }
            c.connections += n;
            if pair[0].is_empty() {
                c.anonymous += n;
            } else {
                c.users.insert(pair[0].clone());
            }
        }
        c
    }

    /// Nobody connected.
    pub fn is_empty(&self) -> bool {
        self.connections == 0
    }

    /// The API's view of channel `label`.
    pub fn to_json(&self, label: &str) -> Value {
        if label == SESSION_LABEL {
            json!({ "connections": self.connections })
        } else {
            json!({ "users": self.users, "anonymous": self.anonymous })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn counts_distinct_users_and_anonymous() {
        let c = Counts::from_flat(&flat(&["alice", "3", "", "2", "bob", "1", "carol", "0"]));
        assert_eq!(c.users.iter().collect::<Vec<_>>(), ["alice", "bob"]);
        assert_eq!(c.anonymous, 2);
        assert_eq!(c.connections, 6);
        assert_eq!(
            c.to_json("broadcast"),
            json!({"users": ["alice", "bob"], "anonymous": 2})
        );
    }

    #[test]
    fn bad_counts_and_odd_lengths_are_skipped() {
        let c = Counts::from_flat(&flat(&["alice", "-1", "bob", "x", "dan"]));
        assert!(c.is_empty());
        assert!(c.users.is_empty());
    }

    #[test]
    fn session_channels_show_a_count_only() {
        let c = Counts::from_flat(&flat(&["alice", "2"]));
        assert_eq!(c.to_json(SESSION_LABEL), json!({"connections": 2}));
    }
}
