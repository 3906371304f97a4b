//! The body of a measured message: `{"seq":N,"t":NANOS,"p":"…"}`, padded to the requested
//! size. `t` is the publisher's send time in nanoseconds of CLOCK_MONOTONIC, the clock every
//! process of the tool shares, so receivers in other processes measure against it. The server never
//! looks inside; anything that does not parse (heartbeats, replays of older runs, warm-up
//! markers) is not a measured delivery.

/// A decoded measured body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The message's sequence number in this run (0, 1, …).
    pub seq: u64,
    /// Send time, nanoseconds of CLOCK_MONOTONIC.
    pub sent_ns: u64,
}

const HEAD: &[u8] = b"{\"seq\":";
const MID: &[u8] = b",\"t\":";

/// Encode `stamp` as JSON, padded with `x` to at least `size` bytes.
pub fn encode(stamp: Stamp, size: usize) -> Vec<u8> {
    let mut out = format!("{{\"seq\":{},\"t\":{},\"p\":\"", stamp.seq, stamp.sent_ns).into_bytes();
    let pad = size.saturating_sub(out.len() + 2);
    out.resize(out.len() + pad, b'x');
    out.extend_from_slice(b"\"}");
    out
}

/// Decode a measured body; `None` for anything else.
pub fn decode(body: &[u8]) -> Option<Stamp> {
    let rest = body.strip_prefix(HEAD)?;
    let (seq, rest) = digits(rest)?;
    let rest = rest.strip_prefix(MID)?;
    let (sent_ns, _) = digits(rest)?;
    Some(Stamp { seq, sent_ns })
}

fn digits(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 || n > 19 {
        return None;
    }
    let mut v = 0u64;
    for b in &s[..n] {
        v = v * 10 + u64::from(b - b'0');
    }
    Some((v, &s[n..]))
}

/// The warm-up marker of run `nonce`: published until every subscriber has seen one, which
/// proves every worker's Redis subscription is live before measuring.
pub fn warmup(nonce: u64) -> Vec<u8> {
    format!("{{\"warmup\":{nonce}}}").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_padding() {
        let s = Stamp {
            seq: 42,
            sent_ns: 1_234_567_890,
        };
        let b = encode(s, 100);
        assert_eq!(b.len(), 100);
        assert!(serde_json::from_slice::<serde_json::Value>(&b).is_ok());
        assert_eq!(decode(&b), Some(s));
        assert!(
            encode(s, 0).len() < 100,
            "no padding below the natural size"
        );
        assert_eq!(decode(b"Hello, World"), None);
        assert_eq!(decode(&warmup(7)), None);
        assert_eq!(decode(b"{\"seq\":,\"t\":1}"), None);
    }
}
