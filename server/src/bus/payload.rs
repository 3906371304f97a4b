//! One message as it travels from Redis to the sockets of a worker.
//!
//! Invariant: a payload is built once per Redis message and then only cloned, and a clone only
//! bumps the refcount of the shared [`Bytes`]. Whether it goes out as a text or a binary frame is
//! decided here, once: valid UTF-8 is text, anything else binary (Redis does not keep the frame
//! type, and ws4redis clients only ever see the bytes; ws4redis itself sent everything as text,
//! which breaks clients on binary payloads).

use bytes::Bytes;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data as OpData, OpCode};
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

    /// The complete server frame (header and payload, unmasked) as it goes on the wire,
    /// encoded by tungstenite: built once per message, then written to every socket as is.
    pub fn to_wire(&self) -> Bytes {
        match self {
            Payload::Text(t) => wire(Bytes::from(t.clone()), OpData::Text),
            Payload::Binary(b) => wire(b.clone(), OpData::Binary),
        }
    }

    /// The websocket frame for this payload (a refcount clone, no copy).
    pub fn to_message(&self) -> Message {
        match self {
            Payload::Text(t) => Message::Text(t.clone()),
            Payload::Binary(b) => Message::Binary(b.clone()),
        }
    }
}

/// A text frame as it goes on the wire (envelopes, presence events, gap fills).
pub fn text_wire(text: Utf8Bytes) -> Bytes {
    wire(Bytes::from(text), OpData::Text)
}

fn wire(bytes: Bytes, opcode: OpData) -> Bytes {
    let frame = Frame::message(bytes, OpCode::Data(opcode), true);
    let mut out = Vec::with_capacity(frame.len());
    frame
        .format(&mut out)
        .expect("formatting into a Vec cannot fail");
    Bytes::from(out)
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
    fn wire_frames_are_what_a_client_parses() {
        for body in [
            &b"hello"[..],
            &[b'x'; 126][..],
            &[b'y'; 70_000][..],
            b"\xff\x00",
        ] {
            let p = Payload::from_bytes(Bytes::copy_from_slice(body));
            let wire = p.to_wire();
            let mut input = std::io::Cursor::new(wire.to_vec());
            let (header, len) =
                tokio_tungstenite::tungstenite::protocol::frame::FrameHeader::parse(&mut input)
                    .unwrap()
                    .expect("a whole header");
            assert_eq!(len as usize, body.len());
            assert!(header.is_final && header.mask.is_none());
            let text = std::str::from_utf8(body).is_ok();
            let want = if text { OpData::Text } else { OpData::Binary };
            assert_eq!(header.opcode, OpCode::Data(want));
            assert_eq!(&wire[input.position() as usize..], body);
        }
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
