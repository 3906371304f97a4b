//! One message as it travels from Redis to the sockets of a worker.
//!
//! Invariant: a payload is built once per Redis message and then only cloned, and a clone only
//! bumps the refcount of the shared [`Bytes`]. Whether it goes out as a text or a binary frame is
//! decided here, once: valid UTF-8 is text, anything else binary (Redis does not keep the frame
//! type, and ws4redis clients only ever see the bytes; ws4redis itself sent everything as text,
//! which breaks clients on binary payloads).

use bytes::Bytes;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

/// A message body shared by every local subscriber.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Valid UTF-8: sent as a text frame.
    Text(Utf8Bytes),
    /// Anything else: sent as a binary frame.
    Binary(Bytes),
}

impl Payload {
    /// Classify raw bytes (one UTF-8 validation, no copy).
    pub fn from_bytes(bytes: Bytes) -> Self {
        // `try_from` consumes its argument, so hand it a refcount clone and keep the original
        // for the binary case.
        match Utf8Bytes::try_from(bytes.clone()) {
            Ok(text) => Payload::Text(text),
            Err(_) => Payload::Binary(bytes),
        }
    }

    /// The raw bytes, as stored in Redis.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Payload::Text(t) => t.as_bytes(),
            Payload::Binary(b) => b,
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// Whether the body is empty (empty messages are never published or delivered).
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// The websocket frame for this payload (a refcount clone, no copy).
    pub fn to_message(&self) -> Message {
        match self {
            Payload::Text(t) => Message::Text(t.clone()),
            Payload::Binary(b) => Message::Binary(b.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_is_text_anything_else_binary() {
        let t = Payload::from_bytes(Bytes::from_static("héllo".as_bytes()));
        assert!(matches!(t.to_message(), Message::Text(ref s) if s.as_str() == "héllo"));
        let b = Payload::from_bytes(Bytes::from_static(b"\x00\x01\xff"));
        assert!(matches!(b.to_message(), Message::Binary(ref v) if &v[..] == b"\x00\x01\xff"));
        assert_eq!(b.len(), 3);
        assert!(Payload::from_bytes(Bytes::new()).is_empty());
    }

    #[test]
    fn clones_share_the_buffer() {
        let p = Payload::from_bytes(Bytes::from(vec![b'a'; 1000]));
        let (Message::Text(a), Message::Text(b)) = (p.to_message(), p.to_message()) else {
            panic!("text expected");
        };
        assert_eq!(a.as_str().as_ptr(), b.as_str().as_ptr());
    }
}
