//! The client side of the `wsredis.v1` envelope dialect (docs/protocol.md) as far as the
//! `recovery` scenario needs it: parsing the server's JSON frames, keeping a socket's last
//! position, building the `recover=` query of a reconnect, and a per-socket ledger of which
//! numbered messages arrived.
//!
//! Invariant: the ledger never deduplicates; a number that arrives twice is counted as a
//! duplicate, one that arrives after a higher number as out of order, so the server's
//! exactly-once-in-order promise is checked, not assumed.

use serde::Deserialize;

/// The subprotocol header a socket offers to get envelopes.
pub const OFFER: &str = "Sec-WebSocket-Protocol: wsredis.v1\r\n";

/// One server frame in envelope mode (the fields the scenario reads).
#[derive(Debug, Deserialize)]
pub struct Envelope {
    /// `message`, `recovered`, `recovery_failed`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// The audience label (`broadcast`).
    #[serde(default)]
    pub ch: String,
    /// The published body (`message`).
    #[serde(default)]
    pub data: Option<String>,
    /// The position, on history channels.
    #[serde(default)]
    pub offset: Option<u64>,
    /// See `offset`.
    #[serde(default)]
    pub epoch: Option<String>,
    /// Messages recovered (`recovered`).
    #[serde(default)]
    pub count: Option<u64>,
}

/// Parse a frame; `None` for anything that is not an envelope (the heartbeat).
pub fn parse(body: &[u8]) -> Option<Envelope> {
    serde_json::from_slice(body).ok()
}

/// A channel's position: the last message seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The history's epoch.
    pub epoch: String,
    /// The last offset seen.
    pub offset: u64,
}

/// The `recover=` query parameter (with its leading `&`) for one label's position.
pub fn recover_query(ch: &str, pos: &Position) -> String {
    let json = serde_json::json!({ ch: { "epoch": pos.epoch, "offset": pos.offset } });
    format!("&recover={}", percent_encode(&json.to_string()))
}

/// Percent-encode everything but the URL's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Which numbered messages one socket received, across all its reconnects.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    seen: Vec<u64>,
    highest: Option<u64>,
    /// Distinct numbers received.
    pub unique: u64,
    /// Numbers received again.
    pub duplicated: u64,
    /// Numbers received after a higher one.
    pub out_of_order: u64,
}

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next number, as it should be.
    InOrder,
    /// A number received before.
    Duplicate,
    /// A new number lower than one received before.
    Late,
}

impl Ledger {
    /// Note the arrival of number `seq`.
    pub fn note(&mut self, seq: u64) -> Arrival {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if self.seen.len() <= word {
            self.seen.resize(word + 1, 0);
        }
        if self.seen[word] & bit != 0 {
            self.duplicated += 1;
            return Arrival::Duplicate;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        if self.highest.is_some_and(|h| seq < h) {
            self.out_of_order += 1;
            return Arrival::Late;
        }
        self.highest = Some(seq);
        Arrival::InOrder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_counts_duplicates_and_late_numbers() {
        let mut l = Ledger::default();
        assert_eq!(l.note(0), Arrival::InOrder);
        assert_eq!(l.note(2), Arrival::InOrder);
        assert_eq!(l.note(1), Arrival::Late);
        assert_eq!(l.note(2), Arrival::Duplicate);
        assert_eq!(l.note(200), Arrival::InOrder);
        assert_eq!((l.unique, l.duplicated, l.out_of_order), (4, 1, 1));
    }

    #[test]
    fn recover_query_is_percent_encoded_json() {
        let q = recover_query(
            "broadcast",
            &Position {
                epoch: "5f0c".into(),
                offset: 42,
            },
        );
        assert_eq!(
            q,
            "&recover=%7B%22broadcast%22%3A%7B%22epoch%22%3A%225f0c%22%2C%22offset%22%3A42%7D%7D"
        );
    }

    #[test]
    fn parses_the_frames_of_the_protocol() {
        let m = parse(br#"{"type":"message","ch":"broadcast","data":"hi","offset":4,"epoch":"e"}"#)
            .expect("message");
        assert_eq!(
            (m.kind.as_str(), m.data.as_deref(), m.offset),
            ("message", Some("hi"), Some(4))
        );
        let r = parse(br#"{"type":"recovered","ch":"broadcast","epoch":"e","offset":9,"count":5}"#)
            .expect("recovered");
        assert_eq!(r.count, Some(5));
        assert!(parse(b"--heartbeat--").is_none());
    }
}
