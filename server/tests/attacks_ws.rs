//! Websocket handshakes and frames no client library would send, on the real binary: missing
//! and malformed keys and versions, fragment floods and oversize frames. The abusive socket is
//! closed; a well-behaved socket on the same worker keeps receiving and the worker lives.

mod common;

use std::time::Duration;

use common::server::{Server, health};
use common::wait_until;
use common::ws::{connect, next_text};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Send a raw request head; return the response head and the stream.
async fn raw_upgrade(addr: &str, path: &str, headers: &str) -> (String, TcpStream) {
    let mut s = TcpStream::connect(addr).await.unwrap();
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

/// A masked client frame.
fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
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

/// Read until the server closes; the code of its Close frame, if it sent one.
async fn close_code(s: &mut TcpStream) -> Option<u16> {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut buf)).await;
    let mut i = 0;
    while i + 2 <= buf.len() {
        let (op, len) = (buf[i] & 0x0f, usize::from(buf[i + 1] & 0x7f));
        let (start, len) = match len {
            126 if i + 4 <= buf.len() => (
                i + 4,
                usize::from(u16::from_be_bytes([buf[i + 2], buf[i + 3]])),
            ),
            126 | 127 => return None,
            n => (i + 2, n),
        };
        if op == 8 {
            return buf
                .get(start..start + 2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]));
        }
        i = start + len;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_with_missing_or_malformed_keys_and_versions_are_refused() {
    let server = Server::start(&["--workers", "1"]);
    let addr = server.base();
    let up = "Upgrade: websocket\r\nConnection: Upgrade\r\n";
    let cases = [
        (
            format!("{up}Sec-WebSocket-Version: 13\r\n"),
            "400",
            "Sec-WebSocket-Key",
        ),
        (
            format!("{up}Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n"),
            "400",
            "16 bytes",
        ),
        (
            format!("{up}Sec-WebSocket-Key: !!not base64!!\r\nSec-WebSocket-Version: 13\r\n"),
            "400",
            "16 bytes",
        ),
        (
            format!("{up}Sec-WebSocket-Key: {KEY}{KEY}\r\nSec-WebSocket-Version: 13\r\n"),
            "400",
            "16 bytes",
        ),
        (
            format!("{up}Sec-WebSocket-Key: {KEY}\r\n"),
            "426",
            "version 13",
        ),
        (
            format!("{up}Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 8\r\n"),
            "426",
            "version 13",
        ),
        (
            format!("{up}Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13, 8\r\n"),
            "426",
            "version 13",
        ),
        (
            format!("{up}Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 99999999999\r\n"),
            "426",
            "version 13",
        ),
        (
            format!(
                "Upgrade: websocket\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
            ),
            "400",
            "Connection: Upgrade",
        ),
    ];
    for (headers, status, says) in &cases {
        let (head, mut s) = raw_upgrade(&addr, "/ws/f?subscribe-broadcast", headers).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{headers:?}: {head}"
        );
        let mut body = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut body)).await;
        let body = String::from_utf8_lossy(&body[..n.map_or(0, |r| r.unwrap_or(0))]).into_owned();
        assert!(body.contains(says), "{headers:?}: {body}");
    }
    let (head, _) = raw_upgrade(
        &addr,
        "/ws/f",
        &format!("Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"),
    )
    .await;
    assert!(
        head.starts_with("HTTP/1.1 101 "),
        "the right handshake still works: {head}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_floods_and_oversize_frames_are_cut_and_others_keep_receiving() {
    let server = Server::start(&["--workers", "1", "--max-message-size", "65536"]);
    let addr = server.base();
    let pids = server.worker_pids();
    let redis = server.redis.as_ref().unwrap();
    let path = "/ws/flood?subscribe-broadcast&publish-broadcast&echo";
    let mut good = connect(&addr, "/ws/flood?subscribe-broadcast", None)
        .await
        .unwrap();
    assert!(wait_until(Duration::from_secs(20), || redis
        .numsub("broadcast:flood")
        >= 1));
    let upgrade = format!(
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );

    // 100,000 one-byte continuation frames: cut at the message limit (1009).
    let (head, mut s) = raw_upgrade(&addr, path, &upgrade).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut flood = frame(false, 1, b"a");
    for _ in 0..100_000 {
        flood.extend(frame(false, 0, b"a"));
    }
    let _ = s.write_all(&flood).await;
    assert_eq!(close_code(&mut s).await, Some(1009), "fragment flood");

    // A frame announcing 2^40 bytes: refused from its header (1009), nothing allocated.
    let (_, mut s) = raw_upgrade(&addr, path, &upgrade).await;
    let mut huge = vec![0x81, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    let _ = s.write_all(&huge).await;
    assert_eq!(
        close_code(&mut s).await,
        Some(1009),
        "oversize frame header"
    );

    // 50,000 empty continuation frames and then the end: one small message, published once.
    let (_, mut s) = raw_upgrade(&addr, path, &upgrade).await;
    let mut empties = frame(false, 1, b"start-");
    for _ in 0..50_000 {
        empties.extend(frame(false, 0, b""));
    }
    empties.extend(frame(true, 0, b"end"));
    s.write_all(&empties).await.unwrap();
    assert_eq!(next_text(&mut good).await.as_deref(), Some("start-end"));
    let _ = s.write_all(&frame(true, 8, &1000u16.to_be_bytes())).await;

    // The good socket still gets what is published; the worker is the same process.
    redis.cli(&["PUBLISH", "broadcast:flood", "still here"]);
    assert_eq!(next_text(&mut good).await.as_deref(), Some("still here"));
    assert_eq!(health(&addr).await.unwrap()["status"], "ok");
    assert_eq!(server.worker_pids(), pids, "the worker lives");
}
