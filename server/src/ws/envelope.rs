//! The `wsredis.v1` envelope dialect (docs/protocol.md): the subprotocol name, the JSON frames
//! the server sends, audience labels, and the client's `recover` request.
//!
//! Invariants:
//! - Pure functions: nothing here touches a socket or Redis, so every frame shape is unit-tested.
//! - `ch` is always an audience label, never a Redis channel name (a session channel's name holds
//!   the session key, which must not reach page JavaScript).
//! - A bad `recover` never refuses a socket: malformed input is ignored and counted.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::bus::Position;

/// The websocket subprotocol a client offers to opt in.
pub const SUBPROTOCOL: &str = "wsredis.v1";
/// Most channels one `recover` parameter may name (a socket has a handful).
const MAX_RECOVER_ENTRIES: usize = 256;
/// Longest epoch accepted from a client.
const MAX_EPOCH_BYTES: usize = 64;

/// One server → client frame of the envelope dialect.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Frame<'a> {
    /// A published message; the position only on history channels.
    Message {
        /// Audience label.
        ch: &'a str,
        /// The body (lossy UTF-8).
        data: Cow<'a, str>,
        /// Offset in the channel's history.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        /// Epoch of the channel's history.
        #[serde(skip_serializing_if = "Option::is_none")]
        epoch: Option<&'a str>,
    },
    /// Recovery of `ch` done; `count` missed messages were sent just before.
    Recovered {
        /// Audience label.
        ch: &'a str,
        /// Current epoch.
        epoch: &'a str,
        /// Offset of the last message sent.
        offset: u64,
        /// Messages recovered.
        count: u64,
    },
    /// The gap cannot be filled; the client continues from this position.
    RecoveryFailed {
        /// Audience label.
        ch: &'a str,
        /// Current epoch (empty when unknown).
        epoch: &'a str,
        /// Current offset.
        offset: u64,
    },
    /// Presence snapshot (presence facilities).
    Presence {
        /// Audience label.
        ch: &'a str,
        /// Users present.
        users: &'a [String],
        /// Anonymous sockets present.
        anonymous: u64,
    },
    /// A user (or an anonymous socket: `null`) joined.
    Join {
        /// Audience label.
        ch: &'a str,
        /// The username.
        user: Option<&'a str>,
    },
    /// A user (or an anonymous socket) left.
    Leave {
        /// Audience label.
        ch: &'a str,
        /// The username.
        user: Option<&'a str>,
    },
}

impl Frame<'_> {
    /// The frame's JSON text.
    pub fn encode(&self) -> Utf8Bytes {
        // Plain data with string keys: serialization cannot fail.
        Utf8Bytes::from(serde_json::to_string(self).unwrap_or_default())
    }
}

/// A `message` frame for `body` on the channel labelled `ch`.
pub fn message(ch: &str, body: &[u8], position: Option<&Position>) -> Utf8Bytes {
    Frame::Message {
        ch,
        data: String::from_utf8_lossy(body),
        offset: position.map(|p| p.offset),
        epoch: position.map(|p| &*p.epoch),
    }
    .encode()
}

/// A `recovered` frame.
pub fn recovered(ch: &str, position: &Position, count: u64) -> Utf8Bytes {
    Frame::Recovered {
        ch,
        epoch: &position.epoch,
        offset: position.offset,
        count,
    }
    .encode()
}

/// A `recovery_failed` frame.
pub fn recovery_failed(ch: &str, position: &Position) -> Utf8Bytes {
    Frame::RecoveryFailed {
        ch,
        epoch: &position.epoch,
        offset: position.offset,
    }
    .encode()
}

/// Whether a `Sec-WebSocket-Protocol` header value list offers [`SUBPROTOCOL`].
pub fn offered(headers: &http::HeaderMap) -> bool {
    super::handshake::header_has_token(headers, http::header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL)
}

/// The audience label of Redis channel `name` on `facility`, given the namer's head (`prefix:`
/// or empty): `broadcast`, `user:<U>`, `group:<G>`, or `session` (never the session key).
pub fn label(head: &str, facility: &str, name: &str) -> String {
    let middle = name
        .strip_prefix(head)
        .and_then(|n| n.strip_suffix(facility))
        .and_then(|n| n.strip_suffix(':'))
        .unwrap_or(name);
    if middle.starts_with("session:") {
        return "session".to_owned();
    }
    middle.to_owned()
}

/// The positions a client asked to resume from, by audience label.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoverRequest {
    /// Label → last position seen.
    pub positions: HashMap<String, Position>,
    /// Entries (or a whole parameter) ignored because they were malformed.
    pub ignored: u64,
}

/// Read the `recover` query parameter (docs/protocol.md, section 4). Absent → empty request;
/// malformed → empty request with `ignored` counted; never an error.
pub fn parse_recover(query: &str) -> RecoverRequest {
    let mut out = RecoverRequest::default();
    let Some(raw) = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("recover="))
    else {
        return out;
    };
    let decoded = percent_encoding::percent_decode_str(&raw.replace('+', " "))
        .decode_utf8()
        .map(Cow::into_owned);
    let Ok(serde_json::Value::Object(map)) = decoded
        .ok()
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .ok_or(())
    else {
        out.ignored += 1;
        return out;
    };
    for (ch, pos) in map {
        let epoch = pos.get("epoch").and_then(|e| e.as_str());
        let offset = pos.get("offset").and_then(|o| o.as_u64());
        match (epoch, offset) {
            (Some(epoch), Some(offset))
                if epoch.len() <= MAX_EPOCH_BYTES && out.positions.len() < MAX_RECOVER_ENTRIES =>
            {
                out.positions.insert(
                    ch,
                    Position {
                        epoch: epoch.into(),
                        offset,
                    },
                );
            }
            _ => out.ignored += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(e: &str, o: u64) -> Position {
        Position {
            epoch: e.into(),
            offset: o,
        }
    }

    #[test]
    fn frames_have_the_documented_shape() {
        assert_eq!(
            message("broadcast", b"hi \"you\"", Some(&pos("ab", 3))).as_str(),
            r#"{"type":"message","ch":"broadcast","data":"hi \"you\"","offset":3,"epoch":"ab"}"#
        );
        assert_eq!(
            message("user:al", b"\xffx", None).as_str(),
            r#"{"type":"message","ch":"user:al","data":"\ufffdx"}"#.replace("\\ufffd", "\u{fffd}")
        );
        assert_eq!(
            recovered("broadcast", &pos("e", 9), 2).as_str(),
            r#"{"type":"recovered","ch":"broadcast","epoch":"e","offset":9,"count":2}"#
        );
        assert_eq!(
            recovery_failed("session", &pos("", 0)).as_str(),
            r#"{"type":"recovery_failed","ch":"session","epoch":"","offset":0}"#
        );
        let users = vec!["alice".to_owned()];
        assert_eq!(
            Frame::Presence {
                ch: "broadcast",
                users: &users,
                anonymous: 2
            }
            .encode()
            .as_str(),
            r#"{"type":"presence","ch":"broadcast","users":["alice"],"anonymous":2}"#
        );
        assert_eq!(
            Frame::Join {
                ch: "broadcast",
                user: None
            }
            .encode()
            .as_str(),
            r#"{"type":"join","ch":"broadcast","user":null}"#
        );
    }

    #[test]
    fn only_an_offer_of_wsredis_v1_selects_it() {
        let offer = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::SEC_WEBSOCKET_PROTOCOL, v.parse().unwrap());
            offered(&h)
        };
        assert!(offer("wsredis.v1"));
        assert!(offer("chat, wsredis.v1"));
        assert!(!offer("wsredis.v2"));
        assert!(!offered(&http::HeaderMap::new()));
    }

    #[test]
    fn labels_hide_the_session_key() {
        assert_eq!(label("", "chat", "broadcast:chat"), "broadcast");
        assert_eq!(label("p:", "chat", "p:user:al:ice:chat"), "user:al:ice");
        assert_eq!(label("p:", "chat", "p:group:staff:chat"), "group:staff");
        assert_eq!(label("", "a:b", "session:s3cr3t:a:b"), "session");
    }

    #[test]
    fn recover_parses_positions_and_counts_junk() {
        let q = "subscribe-broadcast&recover=%7B%22broadcast%22%3A%7B%22epoch%22%3A%22ab%22%2C%22offset%22%3A4%7D%2C%22user%3Ax%22%3A5%7D";
        let r = parse_recover(q);
        assert_eq!(r.positions.get("broadcast"), Some(&pos("ab", 4)));
        assert_eq!(r.positions.len(), 1);
        assert_eq!(r.ignored, 1);
        assert_eq!(
            parse_recover("subscribe-broadcast"),
            RecoverRequest::default()
        );
        for junk in [
            "recover=",
            "recover=%7B",
            "recover=[1]",
            "recover=%ff%fe",
            "recover=null",
        ] {
            let r = parse_recover(junk);
            assert!(r.positions.is_empty(), "{junk}");
            assert_eq!(r.ignored, 1, "{junk}");
        }
        let negative = parse_recover(
            "recover=%7B%22b%22%3A%7B%22epoch%22%3A%22e%22%2C%22offset%22%3A-1%7D%7D",
        );
        assert_eq!(negative.ignored, 1);
    }
}
