//! Faults under load on the real binary (issue 7): a few thousand websockets (`CHAOS_SOCKETS`)
//! over three workers, a publisher sending numbered messages at a steady rate (`CHAOS_RATE`),
//! and then a worker killed with `kill -9`, Redis stopped for `CHAOS_OUTAGE_SECS`, the
//! database locked or gone. Each test prints its numbers and checks what a user would: no
//! message missing on sockets that stayed connected, reconnects with the stored last message,
//! clear errors (never a silent success) while Redis is away. `make chaos` runs them bigger.

mod chaos_harness;
mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chaos_harness::fleet::{self, Fleet};
use chaos_harness::*;
use common::eventually;
use common::server::{Server, health, request_with, sample, scrape};
use common::web::{Client, Database};
use futures_util::SinkExt as _;
use nix::sys::signal::Signal;
use tokio_tungstenite::tungstenite::Message;

const CHANNEL: &str = "broadcast:chaos";
const PATH: &str = "/ws/chaos?subscribe-broadcast";
const WORKERS: u64 = 3;
const TOKEN: &str = "chaos-test-token-0123456789";
/// Bound for anything that should happen soon on a loaded 2-core machine.
const SOON: Duration = Duration::from_secs(60);

/// Workers holding at least one socket of the fleet (the kernel may leave one without any
/// when there are few).
fn listening(fleet: &Fleet, server: &Server) -> u64 {
    spread(fleet, server).keys().filter(|p| **p != 0).count() as u64
}

/// Sockets per worker pid.
fn spread(fleet: &Fleet, server: &Server) -> BTreeMap<i32, Vec<usize>> {
    let owners = owners(&server.worker_pids(), server.port);
    let mut by = BTreeMap::new();
    for (i, s) in fleet.snapshot().iter().enumerate() {
        let pid = owners.get(&s.port).copied().unwrap_or(0);
        by.entry(pid).or_insert_with(Vec::new).push(i);
    }
    by
}

fn counts(by: &BTreeMap<i32, Vec<usize>>) -> Vec<(i32, usize)> {
    by.iter().map(|(p, v)| (*p, v.len())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_under_load_loses_nothing_elsewhere_and_its_clients_come_back() {
    let _serial = SERIAL.lock().await;
    let n = sockets();
    raise_nofile(n as u64 * 2 + 512);
    let server = Server::start(&["--workers", "3"]);
    let (fleet, publisher) = fleet::flowing(&server, PATH, CHANNEL, n, true).await;
    let by = spread(&fleet, &server);
    println!("sockets per worker pid: {:?}", counts(&by));
    assert!(!by.contains_key(&0), "sockets with no worker found");
    let (&victim, doomed) = by.iter().max_by_key(|(_, v)| v.len()).unwrap();
    let doomed: HashSet<usize> = doomed.iter().copied().collect();

    let killed_at = publisher.last();
    let t0 = Instant::now();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(victim), Signal::SIGKILL).unwrap();
    assert!(
        eventually(SOON, || {
            let now = server.worker_pids();
            now.len() == 3 && !now.contains(&victim)
        })
        .await,
        "the master did not replace the killed worker"
    );
    let replaced_in = t0.elapsed();
    assert!(
        fleet.all(SOON, |s| s.open && s.failed.is_none()).await,
        "not every client is connected again"
    );
    let back_in = t0.elapsed();
    // Let messages flow over the new connections, then check every socket has everything.
    let resume = publisher.last() + 3;
    assert!(fleet.reach(resume, SOON).await);
    let last = publisher.stop().await;
    assert!(fleet.reach(last, SOON).await, "the last message is missing");
    let seen = fleet.snapshot();

    let (survivors, victims): (Vec<_>, Vec<_>) = seen
        .iter()
        .enumerate()
        .partition(|(i, _)| !doomed.contains(i));
    let missing: u64 = seen.iter().map(|s| s.missing_count).sum();
    let survivor_closes: usize = survivors.iter().map(|(_, s)| s.closes.len()).sum();
    let reconnects: Vec<Duration> = victims
        .iter()
        .flat_map(|(_, s)| s.reconnects.clone())
        .collect();
    let (median, max) = median_max(reconnects.clone());
    let missed_reconnecting: u64 = victims.iter().map(|(_, s)| s.missed_reconnecting).sum();
    let stale: u64 = victims.iter().map(|(_, s)| s.stale_replays).sum();
    println!(
        "kill -9 of worker {victim} holding {} of {n} sockets at message {killed_at}: replaced \
         in {replaced_in:.1?}, all clients back in {back_in:.1?}; {} reconnects (median \
         {median:.1?}, max {max:.1?}); {last} messages published; missing while connected: \
         {missing}; closes on other workers: {survivor_closes}; messages published while \
         reconnecting and not replayed: {missed_reconnecting}; stale replays: {stale}",
        doomed.len(),
        reconnects.len(),
    );
    assert_eq!(missing, 0, "messages missing on connected sockets");
    assert_eq!(survivor_closes, 0, "sockets on other workers were closed");
    assert!(
        victims.iter().all(|(_, s)| s.closes == [1006]),
        "the killed worker's sockets end abruptly, once"
    );
    assert_eq!(
        reconnects.len(),
        doomed.len(),
        "every client reconnected once"
    );
    assert_eq!(stale, 0, "a reconnected client got an old message first");
    assert!(seen.iter().all(|s| s.last == last));
    fleet.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_under_load_keeps_every_socket_and_refuses_publishes_clearly() {
    let _serial = SERIAL.lock().await;
    let n = sockets();
    raise_nofile(n as u64 * 2 + 512);
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let mut server = Server::start_env(
        &["--workers", "3", "--metrics-bind", &metrics],
        &[("WSREDIS_API_TOKEN", TOKEN)],
    );
    let (fleet, publisher) = fleet::flowing(&server, PATH, CHANNEL, n, false).await;
    let pids = server.worker_pids();
    // Clients that publish through their socket during the outage.
    let mut talkers = Vec::new();
    for _ in 0..WORKERS * 2 {
        let ws = common::ws::connect(&server.base(), "/ws/chaos?publish-broadcast", None)
            .await
            .unwrap();
        talkers.push(ws);
    }
    let before_errors = sample(
        &scrape(&metrics).await,
        "wsredis_publish_errors_total{pool=\"all\"}",
    )
    .unwrap_or(0.0);

    let holders = listening(&fleet, &server);
    let down_at = publisher.last();
    server.redis.as_mut().unwrap().stop();
    let stopped = Instant::now();
    let auth = format!("Bearer {TOKEN}");
    let body = Bytes::from(r#"{"facility":"chaos","broadcast":true,"message":"outage"}"#);
    let mut api = BTreeMap::<u16, u32>::new();
    let mut down_seen = HashSet::new();
    let mut metrics_down = false;
    while stopped.elapsed() < outage() {
        let r = request_with(
            &server.base(),
            "POST",
            "/api/publish",
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            body.clone(),
        )
        .await
        .expect("the API answers during the outage");
        if r.status != 200 {
            assert!(r.body.contains("redis unavailable"), "{}", r.body);
        }
        *api.entry(r.status).or_default() += 1;
        if let Ok(h) = health(&server.base()).await
            && h["redis"] == "down"
        {
            down_seen.insert(h["pid"].as_i64().unwrap_or(0));
        }
        metrics_down |=
            sample(&scrape(&metrics).await, "wsredis_redis_up{pool=\"all\"}") == Some(0.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every talker publishes once Redis is known to be away; each is told so (1013).
    let mut talker_codes = Vec::new();
    for ws in &mut talkers {
        ws.send(Message::text("lost")).await.unwrap();
        talker_codes.push(close_code(ws).await);
    }
    let errors = sample(
        &scrape(&metrics).await,
        "wsredis_publish_errors_total{pool=\"all\"}",
    )
    .unwrap_or(0.0);
    let outage_len = stopped.elapsed();
    server.redis.as_mut().unwrap().restart();
    let redis = server.redis.as_ref().unwrap();
    assert!(
        eventually(SOON, || redis.numsub(CHANNEL) == holders).await,
        "the workers did not resubscribe"
    );
    let resubscribed_in = stopped.elapsed() - outage_len;
    let after = publisher.last();
    assert!(
        fleet.reach(after + 3, SOON).await,
        "no message after the outage"
    );
    // Numbers Redis told the publisher fewer workers heard: published after the restart,
    // before a worker had resubscribed (pub/sub delivers to whoever listens at that moment).
    let unheard: HashSet<u64> = publisher.unheard(holders).into_iter().collect();
    let last = publisher.stop().await;
    assert!(fleet.reach(last, SOON).await, "the last message is missing");
    // Workers copy their Redis state into the metrics every 500 ms.
    let deadline = Instant::now() + SOON;
    let mut metrics_up = false;
    while !metrics_up && Instant::now() < deadline {
        metrics_up = sample(&scrape(&metrics).await, "wsredis_redis_up{pool=\"all\"}") == Some(1.0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = fleet.snapshot();
    let closes: usize = seen.iter().map(|s| s.closes.len()).sum();
    let missing: Vec<u64> = seen.iter().flat_map(|s| s.missing.clone()).collect();
    let lost_heard = missing.iter().filter(|n| !unheard.contains(n)).count();
    println!(
        "Redis down for {outage_len:.1?} under {n} sockets (at message {down_at}); workers \
         resubscribed {resubscribed_in:.1?} after the restart; /api/publish during the outage: \
         {api:?}; client publishes: close codes {talker_codes:?}; /healthz said down on \
         {} workers; metrics redis_up 0 seen: {metrics_down}; publish errors counted: {}; \
         sockets closed: {closes}; {last} messages published, {} of them while a worker was \
         resubscribing ({} socket-messages missed); missed otherwise: {lost_heard}",
        down_seen.len(),
        errors - before_errors,
        unheard.len(),
        missing.len(),
    );
    assert_eq!(server.worker_pids(), pids, "a worker exited");
    assert_eq!(closes, 0, "sockets were closed by the outage");
    assert!(seen.iter().all(|s| s.open && s.last == last));
    assert_eq!(
        api.get(&200),
        None,
        "a publish succeeded while Redis was down"
    );
    assert!(api.get(&503).is_some_and(|c| *c > 0), "{api:?}");
    assert!(talker_codes.iter().all(|c| *c == 1013), "{talker_codes:?}");
    assert!(!down_seen.is_empty(), "/healthz never said redis: down");
    assert!(metrics_down, "the metrics never showed redis_up 0");
    assert!(metrics_up, "the metrics do not show redis_up 1 afterwards");
    assert!(errors - before_errors >= api[&503] as f64);
    assert_eq!(
        lost_heard, 0,
        "messages lost that Redis delivered to every worker"
    );
    fleet.close().await;
}

async fn close_code(ws: &mut common::ws::Ws) -> u16 {
    use futures_util::StreamExt as _;
    loop {
        match tokio::time::timeout(SOON, ws.next()).await {
            Ok(Some(Ok(Message::Close(Some(f))))) => return u16::from(f.code),
            Ok(Some(Ok(Message::Close(None)))) => return 1005,
            Ok(Some(Ok(_))) => continue,
            _ => return 1006,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_or_missing_database_costs_pages_503_and_websockets_go_on() {
    let _serial = SERIAL.lock().await;
    let n = sockets() / 2;
    raise_nofile(n as u64 * 2 + 512);
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "3"]);
    let (fleet, publisher) = fleet::flowing(&server, PATH, CHANNEL, n, false).await;

    // Another process holds the SQLite file in an exclusive lock.
    let path = db.url.strip_prefix("sqlite://").unwrap().to_owned();
    let mut locker = std::process::Command::new("python3")
        .args([
            "-c",
            "import sqlite3, sys\n\
             c = sqlite3.connect(sys.argv[1], isolation_level=None)\n\
             c.execute('BEGIN EXCLUSIVE')\n\
             print('locked', flush=True)\n\
             sys.stdin.read()",
            &path,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(locker.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    let t0 = Instant::now();
    let r = Client::new(&server.base())
        .login("john", "secret", "/")
        .await;
    let locked_took = t0.elapsed();
    drop(locker.stdin.take());
    let _ = locker.wait();
    println!(
        "login with the database locked: {} in {locked_took:.1?}: {}",
        r.status,
        r.body.trim()
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("the user database"), "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    // The lock is gone: logins work again.
    let r = Client::new(&server.base())
        .login("john", "secret", "/")
        .await;
    assert_eq!(r.status, 302, "{}", r.body);

    let mid = publisher.last();
    assert!(fleet.reach(mid + 2, SOON).await, "websockets stalled");
    let last = publisher.stop().await;
    assert!(fleet.reach(last, SOON).await);
    let seen = fleet.snapshot();
    let missing: u64 = seen.iter().map(|s| s.missing_count).sum();
    let closes: usize = seen.iter().map(|s| s.closes.len()).sum();
    println!("{n} sockets through the lock: {last} messages, missing {missing}, closed {closes}");
    assert_eq!((missing, closes), (0, 0));
    fleet.close().await;

    // The database file disappears (deleted by mistake) and the workers are reloaded, so no
    // open connection keeps the deleted file alive.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    let old: HashSet<i32> = server.worker_pids().into_iter().collect();
    server.signal(Signal::SIGHUP);
    assert!(
        eventually(SOON, || {
            let now = server.worker_pids();
            now.len() == 3 && now.iter().all(|p| !old.contains(p))
        })
        .await
    );
    let r = Client::new(&server.base())
        .login("john", "secret", "/")
        .await;
    println!(
        "login with the database file gone: {}: {}",
        r.status,
        r.body.trim()
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("the user database"), "{}", r.body);
    let path = "/ws/after?subscribe-broadcast";
    let mut ws = common::ws::connect(&server.base(), path, None)
        .await
        .unwrap();
    let redis = server.redis.as_ref().unwrap();
    assert!(eventually(SOON, || redis.numsub("broadcast:after") == 1).await);
    redis.cli(&["PUBLISH", "broadcast:after", "still here"]);
    assert_eq!(
        common::ws::next_text(&mut ws).await.as_deref(),
        Some("still here"),
        "websockets go on without the database"
    );
}
