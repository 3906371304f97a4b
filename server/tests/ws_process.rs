//! Websockets on the real binary with several workers and a real redis-server: fan-out across
//! workers, the ws4redis wire format from outside (`redis-cli PUBLISH`), who may hear what,
//! the publish API and CLI, and Redis going away under open sockets.

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::server::{Server, binary, request_with};
use common::ws::{connect, next_text, silent};
use common::{RedisServer, eventually};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "test-token-0123456789abcdef";

/// Store a web-app session record for `user` and return its key.
fn session(redis: &RedisServer, key: &str, user: &str, groups: &[&str]) -> String {
    let record = serde_json::json!({
        "user_id": 7, "username": user, "groups": groups, "is_staff": false,
        "is_superuser": false, "csrf_token": "x".repeat(43), "created": 1_700_000_000
    });
    let out = redis.cli(&[
        "SET",
        &format!("wsredis:session:{key}"),
        &record.to_string(),
        "EX",
        "600",
    ]);
    assert_eq!(out.trim(), "OK");
    key.to_owned()
}

async fn publish_api(server: &Server, body: serde_json::Value) -> common::server::Reply {
    request_with(
        &server.base(),
        "POST",
        "/api/publish",
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("content-type", "application/json"),
        ],
        Bytes::from(body.to_string()),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn one_publish_reaches_sockets_on_every_worker() {
    let server = Server::start_env(&["--workers", "4"], &[("WSREDIS_API_TOKEN", TOKEN)]);
    let redis = server.redis.as_ref().unwrap();
    // The workers share one listening socket and the kernel gives each connection to whichever
    // worker accepts first, so connect in concurrent batches until two workers hold sockets.
    let mut sockets = Vec::new();
    let base = server.base();
    while redis.numsub("broadcast:foo") < 2 {
        assert!(sockets.len() < 800, "800 sockets all landed on one worker");
        let batch = (0..20).map(|_| connect(&base, "/ws/foo?subscribe-broadcast", None));
        for ws in futures_util::future::join_all(batch).await {
            sockets.push(ws.unwrap());
        }
        let _ = eventually(Duration::from_millis(200), || {
            redis.numsub("broadcast:foo") >= 2
        })
        .await;
    }
    let workers = redis.numsub("broadcast:foo");
    println!("{} sockets spread over {workers} workers", sockets.len());

    // The ws4redis wire format from outside: any Redis client can publish.
    redis.cli(&["PUBLISH", "broadcast:foo", "from redis-cli"]);
    for ws in &mut sockets {
        assert_eq!(next_text(ws).await.as_deref(), Some("from redis-cli"));
    }
    // The publish API.
    let r = publish_api(
        &server,
        serde_json::json!({"facility": "foo", "broadcast": true, "message": "from the API"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let answer: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(answer["receivers"].as_u64(), Some(workers));
    for ws in &mut sockets {
        assert_eq!(next_text(ws).await.as_deref(), Some("from the API"));
    }
    // The CLI.
    let out = Command::new(binary())
        .args(["publish", "--redis-url", &redis.url(), "--facility", "foo"])
        .args(["--broadcast", "from the CLI"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for ws in &mut sockets {
        assert_eq!(next_text(ws).await.as_deref(), Some("from the CLI"));
    }
    // The stored message replays to a late socket, and the API reads it back.
    let mut late = connect(&server.base(), "/ws/foo?subscribe-broadcast", None)
        .await
        .unwrap();
    assert_eq!(next_text(&mut late).await.as_deref(), Some("from the CLI"));
    let r = request_with(
        &server.base(),
        "GET",
        "/api/messages/foo?broadcast",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    let stored: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(stored["messages"]["broadcast:foo"], "from the CLI");
}

#[tokio::test]
async fn users_hear_only_their_own_channels() {
    let server = Server::start_env(&["--workers", "2"], &[("WSREDIS_API_TOKEN", TOKEN)]);
    let redis = server.redis.as_ref().unwrap();
    let john = session(redis, &"j".repeat(40), "john", &["chatusers"]);
    let mary = session(redis, &"m".repeat(40), "mary", &["staff"]);
    let path = "/ws/chat?subscribe-user&subscribe-group&subscribe-session&publish-user";
    let mut j = connect(&server.base(), path, Some(&john)).await.unwrap();
    let mut m = connect(&server.base(), path, Some(&mary)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || redis.numsub("user:mary:chat")
            == 1)
        .await
    );

    redis.cli(&["PUBLISH", "user:mary:chat", "for mary"]);
    assert_eq!(next_text(&mut m).await.as_deref(), Some("for mary"));
    redis.cli(&["PUBLISH", "group:chatusers:chat", "for chatusers"]);
    assert_eq!(next_text(&mut j).await.as_deref(), Some("for chatusers"));
    redis.cli(&[
        "PUBLISH",
        &format!("session:{john}:chat"),
        "for john's session",
    ]);
    assert_eq!(
        next_text(&mut j).await.as_deref(),
        Some("for john's session")
    );
    assert!(
        silent(&mut j, Duration::from_millis(300)).await,
        "john heard mary's message"
    );
    assert!(silent(&mut m, Duration::from_millis(10)).await);

    // publish-user goes to the socket's own user channel, never someone else's.
    j.send(Message::text("john to himself")).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            redis.cli(&["GET", "user:john:chat"]).trim() == "john to himself"
        })
        .await
    );
    assert!(silent(&mut m, Duration::from_millis(300)).await);

    // The API reaches one named user only.
    let r = publish_api(
        &server,
        serde_json::json!({"facility": "chat", "users": ["john"], "message": "api to john"}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(next_text(&mut j).await.as_deref(), Some("api to john"));
    assert!(silent(&mut m, Duration::from_millis(300)).await);
}

#[tokio::test]
async fn anonymous_forged_and_expired_cookies_get_no_personal_channels() {
    let server = Server::start(&["--workers", "1"]);
    let redis = server.redis.as_ref().unwrap();
    let base = server.base();
    let path = "/ws/chat?subscribe-user";
    for cookie in [
        None,
        Some("x".repeat(40)),                // well-formed, unknown
        Some("../../etc/passwd".to_owned()), // malformed
        Some("*".to_owned()),                // Redis glob character
    ] {
        let err = connect(&base, path, cookie.as_deref()).await.unwrap_err();
        assert!(err.contains("403"), "{cookie:?}: {err}");
    }
    let key = session(redis, &"e".repeat(40), "eve", &[]);
    assert!(connect(&base, path, Some(&key)).await.is_ok());
    redis.cli(&["PEXPIRE", &format!("wsredis:session:{key}"), "1"]);
    assert!(
        eventually(Duration::from_secs(5), || {
            redis
                .cli(&["EXISTS", &format!("wsredis:session:{key}")])
                .trim()
                == "0"
        })
        .await
    );
    let err = connect(&base, path, Some(&key)).await.unwrap_err();
    assert!(
        err.contains("403"),
        "an expired session must be anonymous: {err}"
    );
    // Anonymous sockets may still use broadcast.
    assert!(
        connect(&base, "/ws/chat?subscribe-broadcast", None)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn api_needs_the_token_and_says_why() {
    let off = Server::start(&["--workers", "1"]);
    let body = Bytes::from(r#"{"facility":"f","broadcast":true,"message":"m"}"#);
    let r = request_with(&off.base(), "POST", "/api/publish", &[], body.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 403);
    assert!(r.body.contains("WSREDIS_API_TOKEN"), "{}", r.body);

    let on = Server::start_env(&["--workers", "1"], &[("WSREDIS_API_TOKEN", TOKEN)]);
    for auth in ["", "Bearer wrong-token-0123456789ab", "Basic x"] {
        let r = request_with(
            &on.base(),
            "POST",
            "/api/publish",
            &[("authorization", auth)],
            body.clone(),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 401, "{auth}");
    }
    let bearer = format!("Bearer {TOKEN}");
    for (bad, why) in [
        (r#"{"facility":"f","message":"m"}"#, "audience"),
        (
            r#"{"facility":"a b","broadcast":true,"message":"m"}"#,
            "facility",
        ),
        (r#"{"facility":"f","users":["*"],"message":"m"}"#, "user"),
        (r#"not json"#, "JSON"),
    ] {
        let r = request_with(
            &on.base(),
            "POST",
            "/api/publish",
            &[("authorization", &bearer)],
            Bytes::from(bad),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 400, "{bad}");
        assert!(r.body.contains(why), "{bad}: {}", r.body);
    }
}

#[tokio::test]
async fn sockets_survive_a_redis_restart_and_publishes_fail_clearly_meanwhile() {
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let mut server = Server::start_env(
        &["--workers", "2", "--metrics-bind", &metrics],
        &[("WSREDIS_API_TOKEN", TOKEN)],
    );
    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(
            connect(&server.base(), "/ws/news?subscribe-broadcast", None)
                .await
                .unwrap(),
        );
    }
    let redis = server.redis.as_mut().unwrap();
    assert!(
        eventually(Duration::from_secs(5), || redis.numsub("broadcast:news")
            >= 1)
        .await
    );
    let subscribed = redis.numsub("broadcast:news");
    redis.stop();
    let status = |s: &Server| {
        let h = s.base();
        async move { common::server::health(&h).await.unwrap()["redis"].clone() }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while status(&server).await != "down" {
        assert!(
            std::time::Instant::now() < deadline,
            "health never showed Redis down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = publish_api(
        &server,
        serde_json::json!({"facility": "news", "broadcast": true, "message": "lost?"}),
    )
    .await;
    assert_eq!(
        r.status, 503,
        "a publish during the outage is refused, not lost silently"
    );
    server.redis.as_mut().unwrap().restart();
    let redis = server.redis.as_ref().unwrap();
    // Every worker that holds sockets has resubscribed.
    assert!(
        eventually(Duration::from_secs(15), || redis.numsub("broadcast:news")
            == subscribed)
        .await
    );
    // The worker that takes the API call may still be reconnecting its command connection:
    // it answers 503 and publishes nothing, so a client simply retries.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = publish_api(
            &server,
            serde_json::json!({"facility": "news", "broadcast": true, "message": "after"}),
        )
        .await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            std::time::Instant::now() < deadline,
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for ws in &mut sockets {
        assert_eq!(next_text(ws).await.as_deref(), Some("after"));
        assert!(
            silent(ws, Duration::from_millis(50)).await,
            "delivered twice"
        );
    }
    // Metrics saw the outage: reconnects counted, the delivery timed from Redis to socket.
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let mut text = String::new();
    for _ in 0..50 {
        text = common::server::scrape(&metrics).await;
        if value(&text, "wsredis_fanout_latency_seconds_count") >= 10.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        value(&text, "wsredis_redis_reconnects_total") >= 1.0,
        "{text}"
    );
    assert!(
        value(&text, "wsredis_fanout_latency_seconds_count") >= 10.0,
        "{text}"
    );
}

#[tokio::test]
async fn a_thousand_sockets_share_one_subscriber_connection() {
    let server = Server::start(&["--workers", "1"]);
    let redis = server.redis.as_ref().unwrap();
    let mut sockets = Vec::new();
    for i in 0..1000 {
        let path = format!("/ws/room{}?subscribe-broadcast", i % 10);
        sockets.push(connect(&server.base(), &path, None).await.unwrap());
    }
    assert!(
        eventually(Duration::from_secs(10), || redis.numsub("broadcast:room9")
            == 1)
        .await
    );
    let clients = redis.cli(&["CLIENT", "LIST"]);
    let ours = clients
        .lines()
        .filter(|l| !l.contains("cmd=client"))
        .count();
    assert_eq!(
        ours, 2,
        "one subscriber + one command connection:\n{clients}"
    );
    redis.cli(&["PUBLISH", "broadcast:room3", "to room 3"]);
    let mut got = 0;
    for (i, ws) in sockets.iter_mut().enumerate() {
        if i % 10 == 3 {
            assert_eq!(next_text(ws).await.as_deref(), Some("to room 3"));
            got += 1;
        }
    }
    assert_eq!(got, 100);
}

#[tokio::test]
async fn redis_over_a_unix_socket() {
    let dir = std::env::temp_dir().join(format!("wsredis-unix-redis-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("redis.sock");
    let mut redis = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--unixsocket",
        ])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || sock.exists()).await);
    let url = format!("redis+unix://{}", sock.display());
    let server = Server::start(&["--workers", "1", "--redis-url", &url]);
    let mut ws = connect(
        &server.base(),
        "/ws/u?subscribe-broadcast&publish-broadcast&echo",
        None,
    )
    .await
    .unwrap();
    ws.send(Message::text("over unix")).await.unwrap();
    assert_eq!(next_text(&mut ws).await.as_deref(), Some("over unix"));
    drop(server);
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Send raw request bytes and return the status line and the body.
async fn raw(base: &str, request: &str) -> (String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(base).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test]
async fn handshake_errors_say_what_is_wrong() {
    let server = Server::start(&["--workers", "1", "--max-connections", "3"]);
    let base = server.base();
    let upgrade = |version: &str, extra: &str| {
        format!(
            "GET /ws/foo?subscribe-broadcast {version}\r\nHost: {base}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
        )
    };
    let (status, body) = raw(&base, &upgrade("HTTP/1.0", "Sec-WebSocket-Version: 13\r\n")).await;
    assert!(status.contains(" 400 "), "{status}");
    assert!(body.contains("must upgrade to a websocket"), "{body}");
    let (status, _) = raw(
        &base,
        &upgrade(
            "HTTP/1.1",
            "Sec-WebSocket-Version: 8\r\nConnection: close\r\n",
        ),
    )
    .await;
    assert!(status.contains(" 426 "), "{status}");
    let post = format!(
        "POST /ws/foo HTTP/1.1\r\nHost: {base}\r\nUpgrade: websocket\r\nConnection: Upgrade, close\r\nContent-Length: 0\r\n\r\n"
    );
    let (status, body) = raw(&base, &post).await;
    assert!(
        status.contains(" 400 ") && body.contains("must upgrade"),
        "{status} {body}"
    );
    let (status, _) = raw(
        &base,
        &upgrade(
            "HTTP/1.1",
            "Sec-WebSocket-Version: 13\r\nOrigin: https://evil.example\r\nConnection: close\r\n",
        ),
    )
    .await;
    assert!(
        status.contains(" 403 "),
        "a cross-site handshake is refused: {status}"
    );
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(
            connect(&base, "/ws/foo?subscribe-broadcast", None)
                .await
                .unwrap(),
        );
    }
    let err = connect(&base, "/ws/foo?subscribe-broadcast", None)
        .await
        .unwrap_err();
    assert!(err.contains("503"), "over the connection limit: {err}");
    drop(held);
}

#[tokio::test]
async fn client_pings_never_hold_up_delivery() {
    let server = Server::start(&["--workers", "1"]);
    let redis = server.redis.as_ref().unwrap();
    let mut ws = connect(&server.base(), "/ws/p?subscribe-broadcast", None)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || redis.numsub("broadcast:p") == 1).await);
    let (mut pongs, mut texts) = (0, Vec::new());
    for i in 0..50 {
        for _ in 0..20 {
            ws.send(Message::Ping(Bytes::from_static(b"p")))
                .await
                .unwrap();
        }
        redis.cli(&["PUBLISH", "broadcast:p", &i.to_string()]);
    }
    while texts.len() < 50 || pongs < 1000 {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await {
            Ok(Some(Ok(Message::Pong(_)))) => pongs += 1,
            Ok(Some(Ok(Message::Text(t)))) => texts.push(t.to_string()),
            other => panic!(
                "after {pongs} pongs and {} messages: {other:?}",
                texts.len()
            ),
        }
    }
    let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(texts, want, "every message, in order, between the pongs");
}

#[tokio::test]
async fn redis_through_sentinel() {
    let master = RedisServer::start();
    let dir = std::env::temp_dir().join(format!("wsredis-sentinel-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = common::free_port();
    let conf = dir.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\n",
            dir.display(),
            master.port
        ),
    )
    .unwrap();
    let mut sentinel = Command::new("redis-server")
        .arg(&conf)
        .arg("--sentinel")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let asks = || {
        let out = Command::new("redis-cli")
            .args([
                "-p",
                &port.to_string(),
                "SENTINEL",
                "get-master-addr-by-name",
                "mymaster",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.contains(&master.port.to_string())
    };
    assert!(
        eventually(Duration::from_secs(10), asks).await,
        "sentinel did not start"
    );
    let url = format!("redis-sentinel://127.0.0.1:{port}/0?sentinelServiceName=mymaster");
    let server = Server::start(&["--workers", "1", "--redis-url", &url]);
    let mut ws = connect(&server.base(), "/ws/s?subscribe-broadcast", None)
        .await
        .unwrap();
    assert!(eventually(Duration::from_secs(5), || master.numsub("broadcast:s") == 1).await);
    master.cli(&["PUBLISH", "broadcast:s", "via sentinel"]);
    assert_eq!(next_text(&mut ws).await.as_deref(), Some("via sentinel"));
    drop(server);
    let _ = sentinel.kill();
    let _ = sentinel.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A worker whose open-files limit runs out answers 503 rather than leaving clients hanging in
/// the kernel's accept queue (accept failing with EMFILE), and keeps serving what it holds.
#[tokio::test]
async fn a_worker_out_of_files_refuses_instead_of_hanging() {
    // 600 files: 600 − 512 reserved leaves the worker 88 for connections. Without the budget
    // it accepted until EMFILE (~560 sockets) and every later client waited in silence.
    const NOFILE: u64 = 600;
    const SOCKETS: usize = 650;
    let server = Server::start_with_nofile(&["--workers", "1"], NOFILE);
    let base = server.base();
    let workers = server.worker_pids();
    let (mut held, mut refused) = (Vec::new(), 0);
    for i in 0..SOCKETS {
        let opened = tokio::time::timeout(
            Duration::from_secs(5),
            connect(&base, "/ws/foo?subscribe-broadcast", None),
        )
        .await
        .unwrap_or_else(|_| panic!("socket {i} got no answer within 5 s"));
        match opened {
            Ok(ws) => held.push(ws),
            Err(e) => {
                assert!(e.contains("503"), "socket {i}: {e}");
                refused += 1;
            }
        }
    }
    assert!(
        (80..=88).contains(&held.len()),
        "held {} of a budget of 88",
        held.len()
    );
    assert_eq!(held.len() + refused, SOCKETS);
    // What it holds still works.
    let redis = server.redis.as_ref().unwrap();
    redis.cli(&["PUBLISH", "broadcast:foo", "still here"]);
    for ws in held.iter_mut() {
        assert_eq!(next_text(ws).await.as_deref(), Some("still here"));
    }
    // Room again once sockets close.
    held.truncate(held.len() - 10);
    let mut reopened = false;
    for _ in 0..50 {
        if connect(&base, "/ws/foo?subscribe-broadcast", None)
            .await
            .is_ok()
        {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reopened, "a closed socket's file is free again");
    assert_eq!(
        server.worker_pids(),
        workers,
        "the worker was never replaced"
    );
}

/// A client that sends its first frame in the same write as its handshake (no wait for the
/// 101): the bytes hyper read past the handshake reach the session, and the frame is published.
#[tokio::test]
async fn a_frame_sent_with_the_handshake_is_not_lost() {
    use tokio::io::AsyncWriteExt;
    let server = Server::start(&["--workers", "1"]);
    let redis = server.redis.as_ref().unwrap();
    let mut sub = connect(&server.base(), "/ws/eager?subscribe-broadcast", None)
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || redis.numsub("broadcast:eager")
            == 1)
        .await
    );
    let addr = server.base().trim_start_matches("http://").to_owned();
    let mut raw = format!(
        "GET /ws/eager?publish-broadcast HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        common::raw::KEY
    )
    .into_bytes();
    raw.extend(common::raw::frame(true, 1, b"early bird"));
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&raw).await.unwrap();
    assert_eq!(next_text(&mut sub).await.as_deref(), Some("early bird"));
    drop(s);
}

/// After a burst of 1000 websockets and a quiet second, the worker gives the handshakes' freed
/// heap back (`worker/trim.rs`; what it saves is measured by `wsredis-stress idle`), and the
/// sockets are untouched by it.
#[tokio::test]
async fn the_heap_is_trimmed_after_a_burst_of_websockets() {
    let server = Server::start(&["--workers", "1", "--log", "debug"]);
    let base = server.base();
    let mut sockets = Vec::new();
    for chunk in 0..10 {
        let opened = futures_util::future::join_all(
            (0..100).map(|_| connect(&base, "/ws/burst?subscribe-broadcast", None)),
        )
        .await;
        for ws in opened {
            sockets.push(ws.unwrap_or_else(|e| panic!("chunk {chunk}: {e}")));
        }
    }
    assert!(!server.log_text().contains("heap trimmed"));
    assert!(
        eventually(Duration::from_secs(10), || server
            .log_text()
            .contains("heap trimmed after a burst of websockets"))
        .await,
        "no trim logged"
    );
    let redis = server.redis.as_ref().unwrap();
    redis.cli(&["PUBLISH", "broadcast:burst", "after the trim"]);
    for ws in sockets.iter_mut().step_by(97) {
        assert_eq!(next_text(ws).await.as_deref(), Some("after the trim"));
    }
}
