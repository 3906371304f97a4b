//! Echo suppression: without the `echo` flag a socket does not get back the messages it just
//! published itself.
//!
//! ws4redis compares each incoming message with the last message the socket *received*, which
//! both forgets too fast (a fast sender still sees echoes, issue #173) and swallows the same
//! content published by anyone else. We remember, per channel the socket both publishes and
//! subscribes to, the bodies it published and not yet saw come back, in order; an incoming
//! message equal to one of them is skipped once. Redis delivers one connection's publishes in
//! order, so entries before a match are copies that were lost (Redis restart) and are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

/// Own messages remembered per channel; older ones are forgotten (and may then be echoed).
const REMEMBERED: usize = 64;

/// The per-socket memory of its own recent messages.
#[derive(Debug, Default)]
pub(crate) struct EchoFilter {
    pending: HashMap<Arc<str>, VecDeque<Bytes>>,
}

impl EchoFilter {
    /// Track `channels`: those the socket both publishes and subscribes to.
    pub(crate) fn new(subscribed: &[Arc<str>], published: &[String]) -> Self {
        let pending = subscribed
            .iter()
            .filter(|c| published.iter().any(|p| p.as_str() == &***c))
            .map(|c| (c.clone(), VecDeque::new()))
            .collect();
        EchoFilter { pending }
    }

    /// The socket is about to publish `body`.
    pub(crate) fn published(&mut self, body: &Bytes) {
        for queue in self.pending.values_mut() {
            if queue.len() == REMEMBERED {
                queue.pop_front();
            }
            queue.push_back(body.clone());
        }
    }

    /// The publish of `body` failed: its copies will never come.
    pub(crate) fn unpublished(&mut self, body: &Bytes) {
        for queue in self.pending.values_mut() {
            if queue.back() == Some(body) {
                queue.pop_back();
            }
        }
    }

    /// Whether an incoming message is the socket's own copy (then it is consumed).
    pub(crate) fn is_own(&mut self, channel: &str, body: &[u8]) -> bool {
        let Some(queue) = self.pending.get_mut(channel) else {
            return false;
        };
        match queue.iter().position(|own| own[..] == *body) {
            Some(i) => {
                queue.drain(..=i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter() -> EchoFilter {
        let subscribed: Vec<Arc<str>> = vec!["broadcast:f".into(), "user:u:f".into()];
        EchoFilter::new(
            &subscribed,
            &["broadcast:f".to_owned(), "group:g:f".to_owned()],
        )
    }

    #[test]
    fn own_copy_is_skipped_once_per_channel() {
        let mut f = filter();
        let m = Bytes::from_static(b"hi");
        f.published(&m);
        assert!(f.is_own("broadcast:f", b"hi"));
        assert!(
            !f.is_own("broadcast:f", b"hi"),
            "a second copy is someone else's"
        );
        // Not published there, or not subscribed there.
        assert!(!f.is_own("user:u:f", b"hi"));
        assert!(!f.is_own("group:g:f", b"hi"));
    }

    #[test]
    fn others_messages_pass_and_order_is_kept() {
        let mut f = filter();
        f.published(&Bytes::from_static(b"a"));
        f.published(&Bytes::from_static(b"b"));
        assert!(!f.is_own("broadcast:f", b"x"));
        assert!(f.is_own("broadcast:f", b"a"));
        assert!(f.is_own("broadcast:f", b"b"));
    }

    #[test]
    fn lost_copies_are_dropped_at_the_next_match() {
        let mut f = filter();
        f.published(&Bytes::from_static(b"lost"));
        f.published(&Bytes::from_static(b"kept"));
        assert!(f.is_own("broadcast:f", b"kept"));
        assert!(!f.is_own("broadcast:f", b"lost"));
    }

    #[test]
    fn failed_publish_is_forgotten_and_memory_is_bounded() {
        let mut f = filter();
        let m = Bytes::from_static(b"m");
        f.published(&m);
        f.unpublished(&m);
        assert!(!f.is_own("broadcast:f", b"m"));
        for i in 0..(REMEMBERED + 10) {
            f.published(&Bytes::from(i.to_string()));
        }
        assert_eq!(f.pending["broadcast:f"].len(), REMEMBERED);
        assert!(!f.is_own("broadcast:f", b"0"), "the oldest was forgotten");
    }
}
