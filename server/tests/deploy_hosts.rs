//! Several hosts on one machine: two servers on different loopback addresses (127.0.0.2 and
//! 127.0.0.3 stand for two machines) share one Redis and one PostgreSQL. A message published
//! on one reaches sockets on the other, and nginx in front balances pages and websockets
//! across both.

mod common;
mod deploy;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::server::{Server, health, sample, scrape};
use common::{RedisServer, free_port};
use deploy::{TempDir, have, next_text, publish};

/// A database of its own on the shared PostgreSQL (dropped at the end), if one answers.
struct Database {
    name: String,
}

impl Database {
    fn create() -> Option<Self> {
        let ready = Command::new("pg_isready")
            .args(["-h", "127.0.0.1", "-p", "5432"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ready {
            println!("PostgreSQL is not answering on 127.0.0.1:5432: the hosts share no database");
            return None;
        }
        let name = format!("wsredis_hosts_{}", std::process::id());
        let db = Database { name };
        db.psql(&format!("DROP DATABASE IF EXISTS {}", db.name));
        assert!(db.psql(&format!("CREATE DATABASE {}", db.name)));
        Some(db)
    }

    fn psql(&self, sql: &str) -> bool {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-qc",
                sql,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        self.psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// One "host": a server on `ip` with its own metrics address, sharing Redis and the database.
fn host(ip: &str, redis: &RedisServer, db: Option<&Database>) -> (Server, String) {
    let metrics = format!("{ip}:{}", free_port());
    let url = redis.url();
    let db_url = db.map(Database::url);
    // One worker per host, so that each host holds exactly one Redis subscription.
    let mut args = vec![
        "--workers",
        "1",
        "--redis-url",
        &url,
        "--metrics-bind",
        &metrics,
        "--trusted-proxies",
        "127.0.0.1",
    ];
    if let Some(u) = &db_url {
        args.extend(["--database-url", u]);
    }
    (Server::start_at(ip, &args, &[]), metrics)
}

#[tokio::test]
async fn two_hosts_share_redis_and_nginx_balances_across_them() {
    let redis = RedisServer::start();
    let db = Database::create();
    let (a, a_metrics) = host("127.0.0.2", &redis, db.as_ref());
    let (b, b_metrics) = host("127.0.0.3", &redis, db.as_ref());
    let cli = ["-p", &redis.port.to_string()].map(str::to_owned);
    let cli: Vec<&str> = cli.iter().map(String::as_str).collect();

    // Published on host B, received on host A.
    let mut on_a = deploy::connect(&a.base(), "/ws/room?subscribe-broadcast").await;
    assert!(
        common::eventually(Duration::from_secs(5), || deploy::numsub(
            &cli,
            "broadcast:room"
        ) == 1)
        .await
    );
    let mut on_b = deploy::connect(&b.base(), "/ws/room?publish-broadcast").await;
    deploy::send(&mut on_b, "from host b").await;
    assert_eq!(next_text(&mut on_a).await, "from host b");

    if !have("nginx", "the balancing half of this test needs nginx") {
        return;
    }
    let prefix = TempDir::new("hosts-nginx");
    let front = format!("127.0.0.1:{}", free_port());
    let members = format!("{} {}", a.base(), b.base());
    let site = deploy::render(
        "site",
        &[
            ("LISTEN", front.as_str()),
            ("HTTP_SERVERS", &members),
            ("WS_SERVERS", &members),
        ],
    );
    deploy::nginx_test(&prefix.0, &site).unwrap();
    let _nginx = deploy::nginx_start(&prefix.0);
    assert!(common::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect(&front).is_ok()
    }));

    // Pages: round-robin over both hosts (health names the worker pid that answered).
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        let h = health(&front).await.unwrap();
        let pid = h["pid"].as_i64().unwrap() as i32;
        let which = if a.worker_pids().contains(&pid) {
            "a"
        } else if b.worker_pids().contains(&pid) {
            "b"
        } else {
            panic!("pid {pid} belongs to neither host")
        };
        seen.insert(which);
    }
    assert_eq!(seen.len(), 2, "nginx sent every request to one host");

    // Websockets: least_conn spreads them; one PUBLISH reaches sockets on both hosts.
    let mut sockets = Vec::new();
    for _ in 0..4 {
        sockets.push(deploy::connect(&front, "/ws/lobby?subscribe-broadcast").await);
    }
    let open = |text: &str| sample(text, r#"wsredis_websockets_open{pool="all"}"#).unwrap_or(0.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let per_host = loop {
        let per_host = (
            open(&scrape(&a_metrics).await),
            open(&scrape(&b_metrics).await),
        );
        if per_host.0 >= 1.0 && per_host.1 >= 1.0 && per_host.0 + per_host.1 >= 4.0 {
            break per_host;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "websockets per host (a, b): {per_host:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    println!("websockets through nginx per host (a, b): {per_host:?}");
    assert!(
        common::eventually(Duration::from_secs(5), || deploy::numsub(
            &cli,
            "broadcast:lobby"
        ) == 2)
        .await,
        "both hosts subscribe once each"
    );
    assert_eq!(publish(&cli, "broadcast:lobby", "to everyone"), 2);
    for ws in &mut sockets {
        assert_eq!(next_text(ws).await, "to everyone");
    }
}
