//! A websocket by hand on a raw TCP stream, for tests that send what no client library would:
//! malformed handshakes, unmasked or reserved frames, fragment floods; clients that never read
//! or never answer; and reading the close code the server answers with.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// The sample key of RFC 6455.
pub const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Send `GET path` with `headers` (each ending in CRLF); the response head (up to the blank
/// line, or what came before the server closed) and the stream.
pub async fn upgrade(addr: &str, path: &str, headers: &str) -> (String, TcpStream) {
    upgrade_on(TcpStream::connect(addr).await.unwrap(), addr, path, headers).await
}

/// [`upgrade`] on a stream the caller connected (with its own socket options).
pub async fn upgrade_on(
    mut s: TcpStream,
    addr: &str,
    path: &str,
    headers: &str,
) -> (String, TcpStream) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut byte)).await;
        match read.expect("an answer in time") {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    (String::from_utf8_lossy(&head).into_owned(), s)
}

/// A websocket opened with a well-formed handshake; the stream after the 101.
pub async fn websocket(addr: &str, path: &str) -> TcpStream {
    websocket_on(TcpStream::connect(addr).await.unwrap(), addr, path).await
}

/// [`websocket`] on a stream the caller connected.
pub async fn websocket_on(s: TcpStream, addr: &str, path: &str) -> TcpStream {
    let headers = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n"
    );
    let (head, s) = upgrade_on(s, addr, path, &headers).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    s
}

/// A masked client frame.
pub fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut f = vec![u8::from(fin) << 7 | opcode];
    match payload.len() {
        n @ 0..=125 => f.push(0x80 | n as u8),
        n @ 126..=0xffff => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Read until the server closes (at most `limit`); the code of its Close frame, if it sent
/// one. Whole frames before it (pings, heartbeats) are skipped.
pub async fn close_code(s: &mut TcpStream, limit: Duration) -> Option<u16> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut buf)).await;
    frames(&buf).close.map(|(code, _)| code)
}

/// What a stream of server frames held, read from its start.
#[derive(Debug, Default)]
pub struct Frames {
    /// Data frames (text, binary, continuation).
    pub data: usize,
    /// Pings.
    pub pings: usize,
    /// The Close frame's code and reason, if one came.
    pub close: Option<(u16, String)>,
}

/// Parse unmasked server frames from the start of `buf`, up to a Close frame or the first
/// incomplete frame.
pub fn frames(buf: &[u8]) -> Frames {
    let mut seen = Frames::default();
    let mut i = 0;
    while i + 2 <= buf.len() {
        let (op, len) = (buf[i] & 0x0f, usize::from(buf[i + 1] & 0x7f));
        let (start, len) = match len {
            126 if i + 4 <= buf.len() => (
                i + 4,
                usize::from(u16::from_be_bytes([buf[i + 2], buf[i + 3]])),
            ),
            127 if i + 10 <= buf.len() => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[i + 2..i + 10]);
                (
                    i + 10,
                    usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX),
                )
            }
            126 | 127 => return seen,
            n => (i + 2, n),
        };
        let Some(payload) = buf.get(start..start.saturating_add(len)) else {
            return seen;
        };
        match op {
            8 => {
                seen.close = payload.get(..2).map(|c| {
                    let reason = String::from_utf8_lossy(&payload[2..]).into_owned();
                    (u16::from_be_bytes([c[0], c[1]]), reason)
                });
                return seen;
            }
            9 => seen.pings += 1,
            0..=2 => seen.data += 1,
            _ => {}
        }
        i = start + len;
    }
    seen
}
