//! Websocket handshakes and frames no client library would send, on the real binary: missing
//! and malformed keys and versions, fragment floods and oversize frames. The abusive socket is
//! closed; a well-behaved socket on the same worker keeps receiving and the worker lives.

mod common;

use std::time::Duration;

use common::raw::{self, KEY};
use common::server::{Server, health};
use common::wait_until;
use common::ws::{connect, next_text};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

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
        let (head, mut s) = raw::upgrade(&addr, "/ws/f?subscribe-broadcast", headers).await;
        assert!(
            head.starts_with(&format!("HTTP/1.1 {status} ")),
            "{headers:?}: {head}"
        );
        let mut body = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut body)).await;
        let body = String::from_utf8_lossy(&body[..n.map_or(0, |r| r.unwrap_or(0))]).into_owned();
        assert!(body.contains(says), "{headers:?}: {body}");
    }
    let (head, _) = raw::upgrade(
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
    let (head, mut s) = raw::upgrade(&addr, path, &upgrade).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let mut flood = raw::frame(false, 1, b"a");
    for _ in 0..100_000 {
        flood.extend(raw::frame(false, 0, b"a"));
    }
    let _ = s.write_all(&flood).await;
    assert_eq!(
        raw::close_code(&mut s, Duration::from_secs(20)).await,
        Some(1009),
        "fragment flood"
    );

    // A frame announcing 2^40 bytes: refused from its header (1009), nothing allocated.
    let (_, mut s) = raw::upgrade(&addr, path, &upgrade).await;
    let mut huge = vec![0x81, 0x80 | 127];
    huge.extend_from_slice(&(1u64 << 40).to_be_bytes());
    huge.extend_from_slice(&[1, 2, 3, 4]);
    let _ = s.write_all(&huge).await;
    assert_eq!(
        raw::close_code(&mut s, Duration::from_secs(20)).await,
        Some(1009),
        "oversize frame header"
    );

    // 50,000 empty continuation frames and then the end: one small message, published once.
    let (_, mut s) = raw::upgrade(&addr, path, &upgrade).await;
    let mut empties = raw::frame(false, 1, b"start-");
    for _ in 0..50_000 {
        empties.extend(raw::frame(false, 0, b""));
    }
    empties.extend(raw::frame(true, 0, b"end"));
    s.write_all(&empties).await.unwrap();
    assert_eq!(next_text(&mut good).await.as_deref(), Some("start-end"));
    let _ = s
        .write_all(&raw::frame(true, 8, &1000u16.to_be_bytes()))
        .await;

    // The good socket still gets what is published; the worker is the same process.
    redis.cli(&["PUBLISH", "broadcast:flood", "still here"]);
    assert_eq!(next_text(&mut good).await.as_deref(), Some("still here"));
    assert_eq!(health(&addr).await.unwrap()["status"], "ok");
    assert_eq!(server.worker_pids(), pids, "the worker lives");
}
