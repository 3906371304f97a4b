//! The nginx kit: every shipped nginx config passes `nginx -t`, and `make run-behind-nginx`
//! (scripts/run-behind-nginx.sh, run here on a free port in a temporary VAR) serves pages from
//! the HTTP pool and websockets from the websocket pool through nginx, fans out a Redis
//! PUBLISH, and stops everything on Ctrl-C.

mod common;
mod deploy;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::free_port;
use common::server::{binary, health};
use deploy::{Group, TempDir, have, next_text, publish, render, repo};

#[test]
fn every_shipped_nginx_config_passes_nginx_t() {
    if !have("nginx", "nginx -t cannot run") {
        return;
    }
    let dir = TempDir::new("nginx-t");
    // The site as shipped: production defaults (unix sockets of the systemd units, port 80).
    let site = render("site", &[]);
    assert!(
        site.contains("server unix:/run/wsredis/http.sock;"),
        "{site}"
    );
    assert!(site.contains("server unix:/run/wsredis/websocket.sock;"));
    // A port nobody listens on, so the test never collides with a running nginx.
    let port = free_port().to_string();
    let site_here = render("site", &[("LISTEN", &format!("127.0.0.1:{port}"))]);
    deploy::nginx_test(&dir.0, &site_here).unwrap_or_else(|e| panic!("defaults: {e}"));
    // Several hosts over TCP, a custom prefix and static root.
    let several = render(
        "site",
        &[
            ("LISTEN", &format!("127.0.0.1:{port}")),
            ("HTTP_SERVERS", "127.0.0.2:8001 127.0.0.3:8001"),
            ("WS_SERVERS", "127.0.0.2:8002 127.0.0.3:8002"),
            ("WS_PREFIX", "/socket/"),
            ("STATIC_ROOT", "/srv/static"),
            ("SERVER_NAME", "chat.example.com"),
        ],
    );
    assert!(several.contains("    server 127.0.0.3:8002;"), "{several}");
    assert!(several.contains("location /socket/ {"));
    for name in [
        "LISTEN",
        "SERVER_NAME",
        "HTTP_UPSTREAM",
        "WS_UPSTREAM",
        "STATIC_ROOT",
    ] {
        assert!(
            !several.contains(&format!("@{name}@")),
            "{name} left: {several}"
        );
    }
    deploy::nginx_test(&dir.0, &several).unwrap_or_else(|e| panic!("several hosts: {e}"));
    // Port 80 as shipped (only root may bind it, and `nginx -t` does not bind).
    if effective_uid() == 0 {
        deploy::nginx_test(&dir.0, &site).unwrap_or_else(|e| panic!("as shipped: {e}"));
    }
}

#[tokio::test]
async fn run_behind_nginx_serves_both_pools_and_stops_on_ctrl_c() {
    if !have("nginx", "the stack needs nginx") {
        return;
    }
    let var = TempDir::new("behind-nginx");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let log = var.join("script.log");
    let mut cmd = Command::new(repo().join("scripts/run-behind-nginx.sh"));
    cmd.env("VAR", &var.0)
        .env("WSREDIS_BIN", binary())
        .env("RUN_REDIS", "private")
        .env("NGINX_LISTEN", &addr)
        .env("HTTP_METRICS_BIND", "off")
        .env("WS_METRICS_BIND", "off")
        .env("HTTP_WORKERS", "1")
        .env("WS_WORKERS", "1")
        .env_remove("WSREDIS_REDIS_URL")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut stack = Group::spawn(cmd);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        common::wait_until(Duration::from_secs(60), || log_text().contains("ready:")),
        "stack did not come up:\n{}",
        log_text()
    );

    // Health through nginx comes from the HTTP pool; the websocket pool refuses pages.
    let h = health(&addr).await.unwrap();
    assert_eq!(h["mode"], "http", "{h}");
    let sock = var.join("run/ws.sock");
    let direct = Command::new("curl")
        .args(["-s", "--unix-socket", sock.to_str().unwrap(), "http://x/"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&direct.stdout).contains("websockets only"));

    // A websocket through nginx round-trips through Redis (echo), and a PUBLISH reaches it.
    let mut ws = deploy::connect(&addr, "/ws/foo?subscribe-broadcast&publish-broadcast&echo").await;
    let redis_sock = var.join("run/redis.sock");
    let cli = ["-s", redis_sock.to_str().unwrap()];
    assert!(
        common::eventually(Duration::from_secs(5), || deploy::numsub(
            &cli,
            "broadcast:foo"
        ) == 1)
        .await,
        "the websocket pool never subscribed"
    );
    deploy::send(&mut ws, "hello through nginx").await;
    assert_eq!(next_text(&mut ws).await, "hello through nginx");
    assert_eq!(publish(&cli, "broadcast:foo", "from redis-cli"), 1);
    assert_eq!(next_text(&mut ws).await, "from redis-cli");

    // Ctrl-C reaches the script (the terminal sends it to the foreground group; the script is
    // the one that must act): everything stops, the websocket gets a close frame.
    stack.signal_leader(nix::sys::signal::Signal::SIGINT);
    let status = stack.wait_exit(Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{}", log_text());
    assert!(
        common::wait_until(Duration::from_secs(5), || !stack.alive()),
        "a process of the stack survived Ctrl-C"
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "nginx still listens"
    );
    assert!(!sock.exists(), "socket left behind");
    drop(ws);
}

/// The effective uid, from /proc (no unsafe, no extra nix feature).
fn effective_uid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX)
}
