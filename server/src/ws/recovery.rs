//! Positions of an envelope socket: what it resumes from on connect, and the exactly-once, in-order
//! check of every live message on a history channel (docs/protocol.md, section 5).
//!
//! Pure decisions only (the session does the Redis reads and the writes), so each rule is
//! unit-tested:
//! - [`resume`]: from the client's requested position and what the history holds, the frames to
//!   send first (missed messages then `recovered`, or `recovery_failed`) and the position the
//!   socket is at afterwards.
//! - [`Tracker::check`]: a live message is sent when it follows the last one sent, dropped when it
//!   was already sent (it came from the history too), or reported as a gap / a new epoch.
//! - [`fill`]: the frames that close a live gap, or `recovery_failed` when the history cannot.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::envelope::{self, RecoverRequest};
use crate::bus::{HistoryRead, Position};

/// What a session needs to speak the envelope dialect; built by the upgrade.
#[derive(Clone, Debug, Default)]
pub struct EnvelopeCtx {
    /// Audience label of each subscribed channel, in the order of `Channels::subscribe`.
    pub labels: Vec<String>,
    /// Where the client asked to resume.
    pub recover: RecoverRequest,
}

/// The position before anything: no history yet, any epoch may start.
pub(super) fn origin() -> Position {
    Position {
        epoch: Arc::from(""),
        offset: 0,
    }
}

/// How a connect went for one history channel.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Resumed {
    /// No position asked: the ws4redis replay (if any) was sent.
    Fresh,
    /// `n` missed messages were sent, then `recovered`.
    Recovered(u64),
    /// `recovery_failed` was sent.
    Failed,
}

/// The frames to send on connect for one history channel labelled `ch`, the socket's position
/// afterwards, and the outcome. `read` is the history after the requested offset (or, without a
/// request, the newest entry), read after Redis confirmed the subscription.
pub(super) fn resume(
    ch: &str,
    requested: Option<&Position>,
    read: Option<&HistoryRead>,
    replay: bool,
) -> (Vec<Utf8Bytes>, Option<Position>, Resumed) {
    let Some(req) = requested else {
        // Fresh socket: the ws4redis replay, with its position when it is the newest entry.
        let Some(read) = read else {
            return (Vec::new(), None, Resumed::Fresh);
        };
        let current = read.position.clone().unwrap_or_else(origin);
        let mut frames = Vec::new();
        if let (true, Some(last)) = (replay, &read.last) {
            let newest = read.entries.last();
            let pos = newest
                .filter(|(off, body)| *off == current.offset && body == last)
                .map(|_| &current);
            frames.push(envelope::message(ch, last, pos));
        }
        return (frames, Some(current), Resumed::Fresh);
    };
    let failed = |at: Position| {
        let frame = envelope::recovery_failed(ch, &at);
        (vec![frame], Some(at), Resumed::Failed)
    };
    let Some(read) = read else {
        // Redis unreadable: say so; the position is unknown, the next live message sets it.
        let (frames, _, outcome) = failed(origin());
        return (frames, None, outcome);
    };
    // A client at the origin (it was told the channel had no history) has missed nothing of an
    // epoch that started since: that whole epoch is new to it.
    let at_origin = req.epoch.is_empty() && req.offset == 0;
    let Some(current) = read.position.clone() else {
        if at_origin {
            let here = origin();
            return (
                vec![envelope::recovered(ch, &here, 0)],
                Some(here),
                Resumed::Recovered(0),
            );
        }
        return failed(origin());
    };
    let adopted;
    let req = if at_origin {
        adopted = Position {
            epoch: current.epoch.clone(),
            offset: 0,
        };
        &adopted
    } else {
        req
    };
    if current.epoch != req.epoch || req.offset > current.offset {
        return failed(current);
    }
    let Some(missed) = run(&read.entries, req.offset, current.offset) else {
        return failed(current);
    };
    let mut frames = messages(ch, &current.epoch, &missed);
    let n = frames.len() as u64;
    frames.push(envelope::recovered(ch, &current, n));
    (frames, Some(current), Resumed::Recovered(n))
}

/// What to do with a live message on a history channel.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Send it (it follows the last one sent, or there is nothing to compare with).
    Send,
    /// Already sent (from the history): drop it.
    Drop,
    /// Messages after offset `after` of the same epoch are missing before it.
    Gap {
        /// Last offset sent.
        after: u64,
    },
    /// The history was lost since the last message sent (a new epoch).
    NewEpoch,
}

/// The last position sent on each history channel of one socket.
#[derive(Debug, Default)]
pub(super) struct Tracker {
    /// Channel → last position sent; `None` = unknown (the next message sets it).
    last: HashMap<Arc<str>, Option<Position>>,
}

impl Tracker {
    /// Track `channel` from `at`.
    pub(super) fn start(&mut self, channel: Arc<str>, at: Option<Position>) {
        self.last.insert(channel, at);
    }

    /// Decide about a live message at `pos` on `channel`; `Send` also advances the position.
    /// Messages without a position, and channels not tracked, are always sent.
    pub(super) fn check(&mut self, channel: &str, pos: Option<&Position>) -> Verdict {
        let (Some(pos), Some(slot)) = (pos, self.last.get_mut(channel)) else {
            return Verdict::Send;
        };
        let verdict = match slot.as_ref() {
            None => Verdict::Send,
            Some(l) if l.epoch == pos.epoch && pos.offset <= l.offset => Verdict::Drop,
            Some(l) if l.epoch == pos.epoch && pos.offset == l.offset + 1 => Verdict::Send,
            Some(l) if l.epoch == pos.epoch => Verdict::Gap { after: l.offset },
            Some(l) if l.epoch.is_empty() && pos.offset == 1 => Verdict::Send,
            Some(l) if l.epoch.is_empty() => Verdict::Gap { after: 0 },
            Some(_) => Verdict::NewEpoch,
        };
        if verdict == Verdict::Send {
            *slot = Some(pos.clone());
        }
        verdict
    }

    /// The message at `pos` was sent after a gap or a new epoch was handled.
    pub(super) fn advance(&mut self, channel: &str, pos: &Position) {
        if let Some(slot) = self.last.get_mut(channel) {
            *slot = Some(pos.clone());
        }
    }
}

/// The frames that close the gap before the live message at `pos` on channel `ch`, given what
/// the history holds after `after`: the missing messages when they are all there in the same
/// epoch (`true`), else `recovery_failed` at the position just before `pos` (`false`).
pub(super) fn fill(
    ch: &str,
    after: u64,
    pos: &Position,
    read: Option<&HistoryRead>,
) -> (Vec<Utf8Bytes>, bool) {
    let missing = read
        .filter(|r| r.position.as_ref().is_some_and(|c| c.epoch == pos.epoch))
        .and_then(|r| run(&r.entries, after, pos.offset.saturating_sub(1)));
    match missing {
        Some(entries) => (messages(ch, &pos.epoch, &entries), true),
        None => {
            let before = Position {
                epoch: pos.epoch.clone(),
                offset: pos.offset.saturating_sub(1),
            };
            (vec![envelope::recovery_failed(ch, &before)], false)
        }
    }
}

/// The entries with offsets `after + 1 ..= upto`, when the history holds every one of them.
fn run(entries: &[(u64, Bytes)], after: u64, upto: u64) -> Option<Vec<&(u64, Bytes)>> {
    let run: Vec<&(u64, Bytes)> = entries
        .iter()
        .filter(|(off, _)| *off > after && *off <= upto)
        .collect();
    let complete = after + run.len() as u64 == upto
        && run
            .iter()
            .enumerate()
            .all(|(i, (off, _))| *off == after + 1 + i as u64);
    complete.then_some(run)
}

/// `message` frames for history entries of `epoch`.
fn messages(ch: &str, epoch: &Arc<str>, entries: &[&(u64, Bytes)]) -> Vec<Utf8Bytes> {
    entries
        .iter()
        .map(|(off, body)| {
            let at = Position {
                epoch: epoch.clone(),
                offset: *off,
            };
            envelope::message(ch, body, Some(&at))
        })
        .collect()
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

    fn read(e: Option<&str>, cur: u64, offs: &[u64]) -> HistoryRead {
        HistoryRead {
            position: e.map(|e| pos(e, cur)),
            last: Some(Bytes::from(format!("m{cur}"))),
            entries: offs
                .iter()
                .map(|o| (*o, Bytes::from(format!("m{o}"))))
                .collect(),
        }
    }

    fn types(frames: &[Utf8Bytes]) -> Vec<String> {
        frames
            .iter()
            .map(|f| {
                let v: serde_json::Value = serde_json::from_str(f.as_str()).unwrap();
                format!("{}{}", v["type"].as_str().unwrap(), v["offset"])
            })
            .collect()
    }

    #[test]
    fn resume_sends_what_was_missed_then_recovered() {
        let r = read(Some("e"), 5, &[3, 4, 5]);
        let (frames, at, out) = resume("broadcast", Some(&pos("e", 2)), Some(&r), true);
        assert_eq!(
            types(&frames),
            ["message3", "message4", "message5", "recovered5"]
        );
        assert_eq!((at, out), (Some(pos("e", 5)), Resumed::Recovered(3)));
        let (frames, _, out) = resume(
            "b",
            Some(&pos("e", 5)),
            Some(&read(Some("e"), 5, &[])),
            true,
        );
        assert_eq!(
            (types(&frames), out),
            (vec!["recovered5".into()], Resumed::Recovered(0))
        );
    }

    #[test]
    fn resume_fails_loudly_when_history_cannot_reach_back() {
        let cases = [
            (read(Some("e"), 5, &[4, 5]), pos("e", 2)),    // trimmed
            (read(Some("f"), 5, &[3, 4, 5]), pos("e", 2)), // new epoch
            (read(None, 0, &[]), pos("e", 2)),             // expired / Redis restarted empty
            (read(Some("e"), 5, &[3, 5]), pos("e", 2)),    // hole
            (read(Some("e"), 5, &[]), pos("e", 9)),        // ahead of the server
        ];
        for (r, req) in cases {
            let (frames, _, out) = resume("b", Some(&req), Some(&r), true);
            assert_eq!(out, Resumed::Failed, "{r:?}");
            assert_eq!(frames.len(), 1);
            assert!(frames[0].as_str().contains("recovery_failed"));
        }
        let (frames, at, out) = resume("b", Some(&pos("e", 2)), None, true);
        assert_eq!(
            (types(&frames), at, out),
            (vec!["recovery_failed0".into()], None, Resumed::Failed)
        );
    }

    #[test]
    fn a_client_at_the_origin_gets_the_whole_new_epoch() {
        let r = read(Some("n"), 2, &[1, 2]);
        let (frames, at, out) = resume("b", Some(&origin()), Some(&r), true);
        assert_eq!(types(&frames), ["message1", "message2", "recovered2"]);
        assert_eq!((at, out), (Some(pos("n", 2)), Resumed::Recovered(2)));
        let (frames, at, _) = resume("b", Some(&origin()), Some(&read(None, 0, &[])), true);
        assert_eq!(
            (types(&frames), at),
            (vec!["recovered0".into()], Some(origin()))
        );
        let trimmed = read(Some("n"), 300, &[200]);
        let (_, _, out) = resume("b", Some(&origin()), Some(&trimmed), true);
        assert_eq!(out, Resumed::Failed);
    }

    #[test]
    fn fresh_socket_gets_the_replay_with_its_position() {
        let (frames, at, _) = resume("b", None, Some(&read(Some("e"), 7, &[7])), true);
        assert_eq!(
            (types(&frames), at),
            (vec!["message7".into()], Some(pos("e", 7)))
        );
        let (frames, at, _) = resume("b", None, Some(&read(None, 0, &[])), false);
        assert_eq!((frames.len(), at), (0, Some(origin())));
    }

    #[test]
    fn tracker_sends_in_order_drops_duplicates_reports_gaps() {
        let mut t = Tracker::default();
        t.start("c".into(), Some(pos("e", 5)));
        assert_eq!(t.check("c", Some(&pos("e", 5))), Verdict::Drop);
        assert_eq!(t.check("c", Some(&pos("e", 6))), Verdict::Send);
        assert_eq!(t.check("c", Some(&pos("e", 9))), Verdict::Gap { after: 6 });
        t.advance("c", &pos("e", 9));
        assert_eq!(t.check("c", Some(&pos("f", 1))), Verdict::NewEpoch);
        assert_eq!(t.check("c", None), Verdict::Send);
        assert_eq!(t.check("other", Some(&pos("e", 1))), Verdict::Send);
        t.start("n".into(), Some(origin()));
        assert_eq!(t.check("n", Some(&pos("g", 3))), Verdict::Gap { after: 0 });
        t.start("n".into(), Some(origin()));
        assert_eq!(t.check("n", Some(&pos("g", 1))), Verdict::Send);
        t.start("u".into(), None);
        assert_eq!(t.check("u", Some(&pos("g", 4))), Verdict::Send);
        assert_eq!(t.check("u", Some(&pos("g", 5))), Verdict::Send);
    }

    #[test]
    fn fill_closes_gaps_or_says_it_cannot() {
        let r = read(Some("e"), 9, &[7, 8, 9]);
        let (frames, ok) = fill("b", 6, &pos("e", 9), Some(&r));
        assert!(ok);
        assert_eq!(types(&frames), ["message7", "message8"]);
        let (frames, ok) = fill("b", 5, &pos("e", 9), Some(&r));
        assert!(!ok);
        assert_eq!(types(&frames), ["recovery_failed8"]);
        assert!(!fill("b", 6, &pos("f", 9), Some(&r)).1);
        assert!(!fill("b", 6, &pos("e", 9), None).1);
    }
}
