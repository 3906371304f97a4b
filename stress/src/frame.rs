//! Websocket frames, the minimum a load tool needs: encode client frames (masked) and server
//! frames (unmasked, for the baseline), and parse either kind out of a byte buffer.
//!
//! Invariant: parsing never copies a payload it does not have to; an unmasked payload is a
//! slice of the read buffer (`Bytes::split_to`), a masked one is unmasked in place.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Continuation frame.
pub const OP_CONTINUATION: u8 = 0x0;
/// Text frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// The mask of every frame this tool sends. RFC 6455 wants it unpredictable to protect
/// proxies from cache poisoning by browser scripts; a load tool on loopback needs no such care.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// One parsed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Whether this is the last fragment of its message.
    pub fin: bool,
    /// The opcode (`OP_*`).
    pub opcode: u8,
    /// The payload, unmasked.
    pub payload: Bytes,
}

/// A frame header larger than this many payload bytes is refused (the tool never expects one).
pub const MAX_PAYLOAD_BYTES: u64 = 16 * 1024 * 1024;

/// The reason a buffer does not hold a valid frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    /// A payload above [`MAX_PAYLOAD_BYTES`].
    #[error("frame of {0} bytes is too large")]
    TooLarge(u64),
}

fn put_header(out: &mut BytesMut, opcode: u8, len: usize, masked: bool) {
    out.put_u8(0x80 | opcode);
    let mask_bit = if masked { 0x80 } else { 0 };
    if len < 126 {
        out.put_u8(mask_bit | len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(mask_bit | 126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(mask_bit | 127);
        out.put_u64(len as u64);
    }
}

/// Append a masked (client → server) frame with `payload` to `out`.
pub fn encode_client(out: &mut BytesMut, opcode: u8, payload: &[u8]) {
    out.reserve(payload.len() + 14);
    put_header(out, opcode, payload.len(), true);
    out.put_slice(&MASK);
    let start = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[start..], MASK);
}

/// An unmasked (server → client) frame with `payload`.
pub fn encode_server(opcode: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    put_header(&mut out, opcode, payload.len(), false);
    out.put_slice(payload);
    out.freeze()
}

fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    for (i, b) in buf.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
}

/// Take one complete frame off the front of `buf`, or `Ok(None)` if more bytes are needed.
pub fn parse(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let fin = buf[0] & 0x80 != 0;
    let opcode = buf[0] & 0x0f;
    let masked = buf[1] & 0x80 != 0;
    let (len, mut header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Ok(None),
        n => (u64::from(n), 2),
    };
    if len > MAX_PAYLOAD_BYTES {
        return Err(FrameError::TooLarge(len));
    }
    let mask = if masked {
        if buf.len() < header + 4 {
            return Ok(None);
        }
        let m = [
            buf[header],
            buf[header + 1],
            buf[header + 2],
            buf[header + 3],
        ];
        header += 4;
        Some(m)
    } else {
        None
    };
    let len = len as usize;
    if buf.len() < header + len {
        buf.reserve(header + len - buf.len());
        return Ok(None);
    }
    buf.advance(header);
    let mut payload = buf.split_to(len);
    if let Some(m) = mask {
        apply_mask(&mut payload, m);
    }
    Ok(Some(Frame {
        fin,
        opcode,
        payload: payload.freeze(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_and_server_frames_round_trip() {
        for len in [0usize, 5, 125, 126, 65_535, 65_536] {
            let body = vec![b'x'; len];
            let mut buf = BytesMut::new();
            encode_client(&mut buf, OP_TEXT, &body);
            buf.extend_from_slice(&encode_server(OP_BINARY, &body));
            let a = parse(&mut buf).unwrap().unwrap();
            assert_eq!((a.opcode, &a.payload[..]), (OP_TEXT, &body[..]));
            let b = parse(&mut buf).unwrap().unwrap();
            assert_eq!((b.opcode, &b.payload[..]), (OP_BINARY, &body[..]));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let whole = encode_server(OP_TEXT, b"hello world");
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            assert_eq!(parse(&mut buf).unwrap(), None, "cut at {cut}");
        }
    }
}
