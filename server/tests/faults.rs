//! Faults, bad input and attacks against the real binary (issue 7): login brute force is
//! throttled per username and per client address through Redis; malformed HTTP, oversized
//! request heads and clients that never finish their headers get a clear answer or are cut,
//! are counted in the master's metrics, and the workers that saw them keep serving; websocket
//! protocol abuse (unmasked frames, bad opcodes, reserved bits) closes only the abusive socket.

mod common;

use std::time::Duration;

use common::raw;
use common::server::{Server, health, sample, scrape};
use common::web::{Client, Database};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const WRONG: &str = "Please enter a correct username and password";
const THROTTLED: &str = "Too many failed login attempts";

fn metric(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}"))
}

/// Keys of the login throttle in the server's Redis, with their TTLs.
fn throttle_keys(server: &Server) -> Vec<(String, i64)> {
    let redis = server.redis.as_ref().expect("private redis");
    redis
        .cli(&["--scan", "--pattern", "wsredis:login-failures:*"])
        .lines()
        .map(|k| {
            let ttl = redis.cli(&["ttl", k]).trim().parse().unwrap_or(-3);
            (k.to_owned(), ttl)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_brute_force_is_throttled_per_user_and_per_address() {
    let db = Database::with_fixtures();
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let mut server = db.serve(&[
        "--workers",
        "2",
        "--login-max-failures",
        "3",
        "--login-max-failures-address",
        "5",
        "--login-window",
        "600",
        "--metrics-bind",
        &metrics,
    ]);
    let mut c = Client::new(&server.base());

    // Three wrong passwords for john (over both workers: the count lives in Redis).
    for _ in 0..3 {
        let r = c.login("john", "wrong", "/").await;
        assert_eq!(r.status, 200);
        assert!(r.body.contains(WRONG), "{}", r.body);
    }
    // Now even the right password is refused, with a clear message and Retry-After.
    let r = c.login("john", "secret", "/").await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains(THROTTLED), "{}", r.body);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=600).contains(&retry), "Retry-After {retry}");
    assert!(
        r.body.contains(&format!("try again in {retry} s")),
        "{}",
        r.body
    );
    assert!(!c.cookies.contains_key("sessionid"));

    // Another user from the same address still gets in (3 of its 5 failures are used), and
    // the success does not reset the address's count.
    let mut mary = Client::new(&server.base());
    assert_eq!(mary.login("mary", "secret", "/").await.status, 302);
    for name in ["mary", "nobody"] {
        let r = Client::new(&server.base()).login(name, "wrong", "/").await;
        assert_eq!(r.status, 200, "{name}");
    }
    // Five failures from this address: every username is refused now, the right password too.
    let r = Client::new(&server.base())
        .login("admin", "secret", "/")
        .await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.body.contains(THROTTLED), "{}", r.body);

    // The counters expire on their own: one per username and one for the address, each with
    // a TTL within the window. Usernames are hashed, never stored as given.
    let keys = throttle_keys(&server);
    assert_eq!(keys.len(), 4, "john, mary, nobody, 127.0.0.1: {keys:?}");
    assert!(
        keys.iter().all(|(_, ttl)| (1..=600).contains(ttl)),
        "{keys:?}"
    );
    assert!(keys.iter().any(|(k, _)| k.ends_with("addr:127.0.0.1")));
    assert!(!keys.iter().any(|(k, _)| k.contains("john")), "{keys:?}");

    let text = scrape(&metrics).await;
    assert_eq!(
        metric(&text, r#"wsredis_login_failures_total{pool="all"}"#),
        5.0
    );
    assert_eq!(
        metric(&text, r#"wsredis_login_throttled_total{pool="all"}"#),
        2.0
    );

    // Redis down: fail closed (a login needs Redis for its session anyway): 503, not a
    // password check that could never finish in a session.
    let mut anon = Client::new(&server.base());
    anon.get("/accounts/login/").await;
    server.redis.as_mut().unwrap().stop();
    let r = anon
        .post(
            "/accounts/login/",
            &[("username", "john"), ("password", "secret")],
        )
        .await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("cannot be reached"), "{}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_login_works_again_after_the_window() {
    let db = Database::with_fixtures();
    let server = db.serve(&[
        "--workers",
        "1",
        "--login-max-failures",
        "1",
        "--login-window",
        "1",
    ]);
    let mut c = Client::new(&server.base());
    assert_eq!(c.login("john", "wrong", "/").await.status, 200);
    // Within the window the next try is refused (or the window already ended: then it works).
    let first = c.login("john", "secret", "/").await.status;
    assert!(matches!(first, 429 | 302), "{first}");
    let mut status = first;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while status != 302 && std::time::Instant::now() < deadline {
        status = c.login("john", "secret", "/").await.status;
        if status == 429 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(status, 302, "the window ended, the right password works");
    // A success clears the username's count: one more failure is allowed again.
    let mut d = Client::new(&server.base());
    assert_eq!(d.login("john", "wrong", "/").await.status, 200);
}

/// Send `bytes` on a fresh connection and read what comes back until the server closes it
/// (or `limit` passes).
async fn raw_exchange(addr: &str, bytes: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer and close before it read everything: a failed write is fine.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_http_gets_a_clear_error_is_counted_and_the_workers_live() {
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let server = Server::start(&[
        "--workers",
        "2",
        "--header-timeout",
        "1",
        "--metrics-bind",
        &metrics,
    ]);
    let addr = server.base();
    let pids = {
        let mut p = server.worker_pids();
        p.sort_unstable();
        p
    };

    // A malformed request line: 400, several times (both workers see some).
    for garbage in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /healthz HTTP/9.9\r\n\r\n",
        b"GET\x00/ HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
    ] {
        for _ in 0..3 {
            let reply = raw_exchange(&addr, garbage, Duration::from_secs(10)).await;
            assert!(
                reply.starts_with("HTTP/1.1 400"),
                "{:?}: {reply}",
                String::from_utf8_lossy(garbage)
            );
        }
    }

    // Too many headers (hyper's limit is 100): 431.
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let reply = raw_exchange(&addr, many.as_bytes(), Duration::from_secs(10)).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // A head over the 64 KiB limit, sent slowly enough that the server reads all of it before
    // it answers (so its close does not reset the answer away): 431.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        .await
        .unwrap();
    let chunk = vec![b'a'; 8 * 1024];
    let mut reply = Vec::new();
    for _ in 0..16 {
        if s.write_all(&chunk).await.is_err() {
            break;
        }
        // Stop writing as soon as the answer is there.
        let mut buf = [0u8; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(50), s.read(&mut buf)).await {
            reply.extend_from_slice(&buf[..n]);
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");

    // A client that never finishes its headers is cut after --header-timeout (1 s here).
    let reply = raw_exchange(
        &addr,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        Duration::from_secs(20),
    )
    .await;
    assert!(
        reply.is_empty() || reply.starts_with("HTTP/1.1 408"),
        "{reply}"
    );

    // The same workers still answer, and the master counted every refusal.
    for _ in 0..10 {
        assert_eq!(health(&addr).await.unwrap()["status"], "ok");
    }
    let mut now = server.worker_pids();
    now.sort_unstable();
    assert_eq!(now, pids, "no worker died or was replaced");
    let text = scrape(&metrics).await;
    let bad = |reason: &str| {
        metric(
            &text,
            &format!(r#"wsredis_http_bad_requests_total{{pool="all",reason="{reason}"}}"#),
        )
    };
    assert_eq!(bad("malformed"), 12.0, "{text}");
    assert_eq!(bad("head_too_large"), 2.0, "{text}");
    assert_eq!(bad("header_timeout"), 1.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_abuse_is_closed_and_other_sockets_keep_receiving() {
    let server = Server::start(&["--workers", "1"]);
    let addr = server.base();
    let pids = server.worker_pids();
    let path = "/ws/abuse?subscribe-broadcast&publish-broadcast";
    let (mut good, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}"))
        .await
        .unwrap();

    // An unmasked client frame, a reserved opcode, a continuation with nothing to continue,
    // reserved bits set: each a protocol error (close 1002, or the connection is cut).
    let abuse: [&[u8]; 4] = [
        b"\x81\x05hello",
        b"\x83\x80\x01\x02\x03\x04",
        b"\x80\x80\x01\x02\x03\x04",
        b"\xc1\x80\x01\x02\x03\x04",
    ];
    for frame in abuse {
        let mut s = raw::websocket(&addr, path).await;
        let _ = s.write_all(frame).await;
        let code = raw::close_code(&mut s, Duration::from_secs(10)).await;
        assert!(
            matches!(code, None | Some(1002)),
            "{frame:?}: close {code:?}"
        );
    }

    // The well-behaved socket on the same worker still receives what is published.
    let redis = server.redis.as_ref().unwrap();
    let subscribed = common::eventually(Duration::from_secs(10), || {
        redis
            .cli(&["pubsub", "numsub", "broadcast:abuse"])
            .contains("\n1")
    })
    .await;
    assert!(subscribed, "the good socket's channel is subscribed");
    redis.cli(&["publish", "broadcast:abuse", "still here"]);
    let got = loop {
        match tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::StreamExt::next(&mut good),
        )
        .await
        {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t)))) => break t.to_string(),
            Ok(Some(Ok(_))) => continue,
            other => panic!("the good socket got {other:?}"),
        }
    };
    assert_eq!(got, "still here");
    assert_eq!(health(&addr).await.unwrap()["status"], "ok");
    assert_eq!(server.worker_pids(), pids, "the worker lives");
}
