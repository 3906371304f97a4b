//! The master and its workers, as real processes on real sockets: pool size, crash
//! replacement, graceful stop with websockets open, rolling reload under load, TTIN/TTOU,
//! and start-up errors. The master must stay a single thread throughout.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::eventually;
use common::server::{Server, binary, health, request};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// Requests on fresh connections in a loop until `stop`; counts successes and failures.
fn load(addr: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let mut ok = 0;
        let mut failed = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match request(&addr, "GET", "/healthz").await {
                Ok(r) if r.status == 200 => ok += 1,
                Ok(r) => failed.push(format!("status {}", r.status)),
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    })
}

#[tokio::test]
async fn four_workers_share_the_port() {
    let server = Server::start(&["--workers", "4"]);
    assert_eq!(server.worker_pids().len(), 4);
    assert_eq!(server.master_threads(), 1);
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < 2 && Instant::now() < deadline {
        let h = health(&server.base()).await.unwrap();
        assert_eq!(h["mode"], "all");
        seen.insert(h["pid"].as_i64().unwrap() as i32);
    }
    assert!(seen.len() >= 2, "only one worker answered: {seen:?}");
    let workers: HashSet<i32> = server.worker_pids().into_iter().collect();
    assert!(seen.is_subset(&workers), "answers came from non-workers");
}

#[tokio::test]
async fn killed_worker_is_replaced_and_port_keeps_answering() {
    let server = Server::start(&["--workers", "2"]);
    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(server.base(), stop.clone());
    let before = server.worker_pids();
    let victim = before[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    let t0 = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = server.worker_pids();
            now.len() == 2 && !now.contains(&victim)
        })
        .await
    );
    let replaced_in = t0.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = loader.await.unwrap();
    println!("replacement appeared after {replaced_in:?}; {ok} requests ok during the crash");
    assert!(failed.is_empty(), "failed requests: {failed:?}");
    assert!(ok > 0);
    assert_eq!(server.master_threads(), 1);
}

#[tokio::test]
async fn term_closes_websockets_with_1001_and_exits_zero() {
    let mut server = Server::start(&["--workers", "2", "--graceful-timeout", "10"]);
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws/echo", server.base()))
            .await
            .unwrap();
        clients.push(ws);
    }
    let workers = server.worker_pids();
    let t0 = Instant::now();
    server.signal(Signal::SIGTERM);
    for ws in &mut clients {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("a close frame within the grace period");
        match msg {
            Some(Ok(Message::Close(Some(frame)))) => assert_eq!(frame.code, CloseCode::Away),
            other => panic!("expected Close 1001, got {other:?}"),
        }
    }
    let status = server
        .wait_exit(Duration::from_secs(10))
        .expect("master exits");
    println!("master exited after {:?}", t0.elapsed());
    assert!(status.success(), "exit status {status:?}");
    for w in workers {
        assert!(
            !std::path::Path::new(&format!("/proc/{w}")).exists()
                || std::fs::read_to_string(format!("/proc/{w}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "worker {w} left behind"
        );
    }
}

#[tokio::test]
async fn hup_replaces_every_worker_without_failed_requests() {
    let server = Server::start(&["--workers", "2"]);
    let before: HashSet<i32> = server.worker_pids().into_iter().collect();
    let stop = Arc::new(AtomicBool::new(false));
    let loaders: Vec<_> = (0..4).map(|_| load(server.base(), stop.clone())).collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    server.signal(Signal::SIGHUP);
    assert!(
        eventually(Duration::from_secs(15), || {
            let now = server.worker_pids();
            now.len() == 2 && now.iter().all(|p| !before.contains(p))
        })
        .await,
        "not every worker was replaced: before {before:?}, now {:?}",
        server.worker_pids()
    );
    assert_eq!(server.master_threads(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for l in loaders {
        let (ok, failed) = l.await.unwrap();
        assert!(
            failed.is_empty(),
            "failed requests during reload: {failed:?}"
        );
        total += ok;
    }
    println!("{total} requests during the reload, none failed");
    assert!(total > 0);
}

#[tokio::test]
async fn ttin_and_ttou_change_the_worker_count() {
    let server = Server::start(&["--workers", "2"]);
    server.signal(Signal::SIGTTIN);
    assert!(eventually(Duration::from_secs(5), || server.worker_pids().len() == 3).await);
    // Standard signals sent back to back coalesce, so wait for each one to take effect.
    for want in [2, 1] {
        server.signal(Signal::SIGTTOU);
        assert!(
            eventually(Duration::from_secs(10), || server.worker_pids().len()
                == want)
            .await
        );
    }
    assert_eq!(server.master_threads(), 1);
    assert!(health(&server.base()).await.is_ok());
}

#[tokio::test]
async fn max_requests_recycles_a_worker_without_losing_capacity() {
    let server = Server::start(&["--workers", "1", "--max-requests", "20"]);
    let first = server.worker_pids();
    let served = AtomicUsize::new(0);
    for _ in 0..40 {
        let r = request(&server.base(), "GET", "/healthz").await.unwrap();
        assert_eq!(r.status, 200);
        served.fetch_add(1, Ordering::Relaxed);
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = server.worker_pids();
            now.len() == 1 && now != first
        })
        .await
    );
}

#[tokio::test]
async fn plain_get_on_websocket_url_says_to_upgrade() {
    let server = Server::start(&["--workers", "1"]);
    let r = request(&server.base(), "GET", "/ws/foobar").await.unwrap();
    assert_eq!(r.status, 400);
    assert!(r.body.contains("must upgrade to a websocket"), "{}", r.body);
    // The same URL with an upgrade is a ws4redis socket.
    let url = format!(
        "ws://{}/ws/foobar?subscribe-broadcast&publish-broadcast&echo",
        server.base()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    futures_util::SinkExt::send(&mut ws, Message::text("hello"))
        .await
        .unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got, Message::text("hello"));
}

#[tokio::test]
async fn modes_split_pages_and_websockets() {
    let http = Server::start(&["--workers", "1", "--mode", "http"]);
    let r = tokio_tungstenite::connect_async(format!("ws://{}/ws/foo", http.base())).await;
    assert!(r.is_err(), "the http pool must refuse websocket upgrades");
    let ws = Server::start(&["--workers", "1", "--mode", "websocket"]);
    assert_eq!(request(&ws.base(), "GET", "/").await.unwrap().status, 404);
    assert!(
        tokio_tungstenite::connect_async(format!("ws://{}/ws/foo", ws.base()))
            .await
            .is_ok()
    );
    assert_eq!(health(&ws.base()).await.unwrap()["mode"], "websocket");
}

#[test]
fn bad_flag_and_address_in_use_fail_with_one_line() {
    let out = Command::new(binary())
        .args(["serve", "--no-such-flag"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("--no-such-flag"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(binary())
        .args([
            "serve",
            "--workers",
            "1",
            "--metrics-bind",
            "off",
            "--bind",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.trim().lines().last().unwrap_or_default().to_owned();
    assert!(last.contains(&addr) && last.contains("in use"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "nothing but logs, and logs go to stderr"
    );
}

#[tokio::test]
async fn master_metrics_aggregate_workers_and_never_go_backwards() {
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let server = Server::start(&["--workers", "2", "--metrics-bind", &metrics]);
    for _ in 0..50 {
        assert_eq!(
            request(&server.base(), "GET", "/healthz")
                .await
                .unwrap()
                .status,
            200
        );
    }
    let healthz = r#"wsredis_http_requests_total{pool="all",route="healthz",status="2xx"}"#;
    let text = common::server::scrape(&metrics).await;
    let before = common::server::sample(&text, healthz).unwrap();
    assert!(before >= 50.0, "{text}");
    assert_eq!(
        common::server::sample(&text, r#"wsredis_workers{pool="all"}"#),
        Some(2.0)
    );
    assert_eq!(
        text.matches("# TYPE wsredis_http_requests_total").count(),
        1
    );

    // A worker dies: its counts stay in the total, and the restart is counted.
    let victim = server.worker_pids()[0];
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || {
            let now = server.worker_pids();
            now.len() == 2 && !now.contains(&victim)
        })
        .await
    );
    let text = common::server::scrape(&metrics).await;
    let after = common::server::sample(&text, healthz).unwrap();
    assert!(
        after >= before,
        "counter went backwards: {before} -> {after}"
    );
    assert_eq!(
        common::server::sample(
            &text,
            r#"wsredis_worker_restarts_total{pool="all",cause="crash"}"#
        ),
        Some(1.0)
    );
    assert!(text.contains("wsredis_worker_resident_memory_bytes{pool=\"all\",worker="));
    let t0 = Instant::now();
    for _ in 0..20 {
        common::server::scrape(&metrics).await;
    }
    println!("20 scrapes took {:?}", t0.elapsed());
    assert_eq!(server.master_threads(), 1);
}

#[tokio::test]
async fn unix_socket_bind_with_mode() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("wsredis-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ws.sock");
    let bind = format!("unix:{}", path.display());
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--workers",
            "2",
            "--metrics-bind",
            "off",
            "--bind",
            &bind,
        ])
        .args(["--socket-mode", "600"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(eventually(Duration::from_secs(10), || path.exists()).await);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let mut answered = false;
    for _ in 0..100 {
        let Ok(stream) = tokio::net::UnixStream::connect(&path).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let (mut send, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/healthz")
            .header("host", "local")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        if let Ok(r) = send.send_request(req).await {
            answered = r.status() == 200;
            break;
        }
    }
    assert!(answered, "no answer over the unix socket");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert!(!path.exists(), "the socket file is removed on exit");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn usr1_reopens_the_log_file_in_master_and_workers() {
    let dir = std::env::temp_dir().join(format!("wsredis-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("wsredis.log");
    let rotated = dir.join("wsredis.log.1");
    let log_arg = log.to_string_lossy().into_owned();
    let server = Server::start(&[
        "--workers",
        "2",
        "--log-file",
        &log_arg,
        "--log-format",
        "json",
    ]);
    assert!(eventually(Duration::from_secs(5), || log.exists()).await);
    std::fs::rename(&log, &rotated).unwrap();
    server.signal(Signal::SIGUSR1);
    assert!(eventually(Duration::from_secs(5), || log.exists()).await);
    // Something every process logs after the reopen: a TTIN (master) and a drain (worker).
    server.signal(Signal::SIGTTIN);
    assert!(eventually(Duration::from_secs(5), || server.worker_pids().len() == 3).await);
    server.signal(Signal::SIGTTOU);
    assert!(
        eventually(Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("\"process\":\"master\"") && text.contains("\"process\":\"worker\"")
        })
        .await,
        "new log: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("every line is JSON");
        assert!(v["pid"].is_u64() && v["message"].is_string(), "{line}");
    }
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(
        old.contains("master started"),
        "the rotated file kept the old lines"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
