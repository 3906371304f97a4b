//! History and recovery on the real binary (two workers, a test-started redis-server): envelope
//! clients that lose their connection (worker killed, HUP reload, TCP cut, subscriber connection
//! cut) while numbered messages keep flowing end with every number exactly once and in order;
//! Redis restarted empty gives `recovery_failed`, never a silent gap; one publisher's order holds
//! on every worker; plain clients on a history facility see ws4redis frames.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::server::{Server, sample, scrape};
use common::ws::{Ws, next_text};
use common::{RedisServer, eventually, free_port};
use futures_util::StreamExt;
use nix::sys::signal::Signal;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use wsredis::bus::{Bus, Retention};

const CHANNEL: &str = "broadcast:chat";
/// How far a paced publisher may run ahead of the client.
const LEAD: u64 = 40;
const RETENTION: Retention = Retention {
    size: 5_000,
    ttl_secs: 600,
};

/// Two workers, history on the `chat` facility; returns the server and its metrics address.
fn start() -> (Server, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&[
        "--workers",
        "2",
        "--history",
        "chat=5000:600",
        "--graceful-timeout",
        "3",
        "--metrics-bind",
        &metrics,
    ]);
    (server, metrics)
}

/// An envelope client: the positions it saw per `ch`, the numbers received, the signals.
#[derive(Default)]
struct Client {
    positions: HashMap<String, (String, u64)>,
    got: Vec<u64>,
    failed: Vec<serde_json::Value>,
    recovered: u64,
    connects: u64,
    /// The highest number received, for a publisher that keeps pace (see [`publisher`]).
    progress: Arc<AtomicU64>,
}

impl Client {
    /// Connect to `/ws/chat?subscribe-broadcast`, offering `wsredis.v1` and the positions seen.
    async fn connect(&mut self, base: &str) -> Result<Ws, String> {
        let mut path = "/ws/chat?subscribe-broadcast".to_owned();
        if !self.positions.is_empty() {
            let map: serde_json::Map<String, serde_json::Value> = self
                .positions
                .iter()
                .map(|(ch, (e, o))| (ch.clone(), serde_json::json!({"epoch": e, "offset": o})))
                .collect();
            let json = serde_json::Value::Object(map).to_string();
            let enc =
                percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC);
            path.push_str(&format!("&recover={enc}"));
        }
        let (ws, protocol) = envelope_connect(base, &path).await?;
        assert_eq!(protocol.as_deref(), Some("wsredis.v1"));
        self.connects += 1;
        Ok(ws)
    }

    /// Take one frame; false when the socket ended.
    async fn read(&mut self, ws: &mut Ws) -> bool {
        let Some(text) = next_text(ws).await else {
            return false;
        };
        let v: serde_json::Value = serde_json::from_str(&text).expect("a JSON frame");
        let ch = v["ch"].as_str().unwrap_or_default().to_owned();
        if let (Some(e), Some(o)) = (v["epoch"].as_str(), v["offset"].as_u64()) {
            self.positions.insert(ch, (e.to_owned(), o));
        }
        match v["type"].as_str() {
            Some("message") => {
                let n = v["data"].as_str().unwrap().parse().unwrap();
                self.got.push(n);
                self.progress.fetch_max(n, Ordering::Relaxed);
            }
            Some("recovered") => self.recovered += v["count"].as_u64().unwrap(),
            Some("recovery_failed") => self.failed.push(v),
            other => panic!("unexpected frame {other:?}: {text}"),
        }
        true
    }

    /// Read until `n` numbers arrived or the socket ends.
    async fn read_until(&mut self, ws: &mut Ws, n: u64) -> bool {
        while self.got.last() != Some(&n) {
            if !self.read(ws).await {
                return false;
            }
        }
        true
    }

    fn assert_exactly_once_in_order(&self, n: u64) {
        let want: Vec<u64> = (1..=n).collect();
        assert!(self.failed.is_empty(), "recovery failed: {:?}", self.failed);
        assert_eq!(self.got.len(), want.len(), "count");
        assert_eq!(self.got, want, "every message exactly once, in order");
    }
}

/// Open a websocket offering `wsredis.v1`; returns the subprotocol the server selected.
async fn envelope_connect(base: &str, path: &str) -> Result<(Ws, Option<String>), String> {
    let mut req = format!("ws://{base}{path}").into_client_request().unwrap();
    req.headers_mut()
        .insert("sec-websocket-protocol", "wsredis.v1".parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| e.to_string())?;
    let protocol = resp
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_owned());
    Ok((ws, protocol))
}

/// Connect until Redis confirmed a subscription on `CHANNEL` (the socket is live).
async fn live(client: &mut Client, server: &Server, redis: &RedisServer) -> Ws {
    let ws = loop {
        match client.connect(&server.base()).await {
            Ok(ws) => break ws,
            // A worker being replaced: try again.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    assert!(eventually(Duration::from_secs(10), || redis.numsub(CHANNEL) >= 1).await);
    ws
}

/// Publish `1..=n` to `CHANNEL` through the history script, one every `every`; with `pace`,
/// never more than [`LEAD`] numbers ahead of what the client has received, so a connection
/// cut always finds messages in flight and misses some, however slow the machine.
fn publisher(
    bus: Bus,
    n: u64,
    every: Duration,
    pace: Option<Arc<AtomicU64>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for i in 1..=n {
            while pace
                .as_ref()
                .is_some_and(|got| i > got.load(Ordering::Relaxed) + LEAD)
            {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            // Redis may be briefly busy; a failed publish is retried, so every number exists.
            while bus
                .publish_with(
                    &[CHANNEL.to_owned()],
                    i.to_string().into(),
                    3600,
                    Some(RETENTION),
                )
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(every).await;
        }
    })
}

/// The worker holding the server side of `ws` (matched by the socket's inode in /proc).
fn owner(server: &Server, ws: &Ws) -> Option<i32> {
    let MaybeTlsStream::Plain(tcp) = ws.get_ref() else {
        return None;
    };
    let client_port = tcp.local_addr().ok()?.port();
    let tcp_table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let inode = tcp_table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
        (port(f[1]) == Some(server.port) && port(f[2]) == Some(client_port))
            .then(|| f[9].to_owned())
    })?;
    let needle = format!("socket:[{inode}]");
    server.worker_pids().into_iter().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten().any(|fd| {
                    std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy() == needle)
                })
            })
            .unwrap_or(false)
    })
}

#[derive(Clone, Copy, Debug)]
enum Cut {
    KillWorker,
    Reload,
    DropTcp,
}

/// One client, three connection losses of kind `cut` while 600 messages flow.
async fn survives(cut: Cut) {
    const N: u64 = 600;
    let (server, _metrics) = start();
    let redis = server.redis.as_ref().unwrap();
    let bus = Bus::connect_url(&redis.url(), 16).await.unwrap();
    let mut client = Client::default();
    let mut ws = live(&mut client, &server, redis).await;
    let publishing = publisher(
        bus.clone(),
        N,
        Duration::from_millis(4),
        Some(client.progress.clone()),
    );
    let mut cuts = 0;
    for at in [100, 250, 400] {
        if !client.read_until(&mut ws, at).await {
            // The connection ended by itself (e.g. the reload): count it as a cut.
        }
        match cut {
            Cut::KillWorker => {
                let pid = owner(&server, &ws).expect("the worker holding the socket");
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
                // Read until the server side is gone (the kernel resets the connection).
                while client.read(&mut ws).await {}
            }
            Cut::Reload => {
                server.signal(Signal::SIGHUP);
                // The old worker drains: it closes the socket with 1001.
                while client.read(&mut ws).await {}
            }
            Cut::DropTcp => drop(ws),
        }
        cuts += 1;
        // Away for a moment while messages keep flowing.
        tokio::time::sleep(Duration::from_millis(150)).await;
        ws = live(&mut client, &server, redis).await;
    }
    assert!(client.read_until(&mut ws, N).await, "stream ended early");
    publishing.await.unwrap();
    println!(
        "{cut:?}: {cuts} cuts, {} connects, {} messages recovered, {} received",
        client.connects,
        client.recovered,
        client.got.len()
    );
    client.assert_exactly_once_in_order(N);
    assert!(
        client.recovered > 0,
        "nothing was missed: the test did not test"
    );
    bus.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_the_worker_is_killed() {
    survives(Cut::KillWorker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_a_reload() {
    survives(Cut::Reload).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_after_the_tcp_connection_is_cut() {
    survives(Cut::DropTcp).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_pubsub_messages_are_filled_from_history() {
    const N: u64 = 800;
    let (server, metrics) = start();
    let redis = server.redis.as_ref().unwrap();
    let bus = Bus::connect_url(&redis.url(), 16).await.unwrap();
    let mut client = Client::default();
    let mut ws = live(&mut client, &server, redis).await;
    let publishing = publisher(bus.clone(), N, Duration::from_millis(2), None);
    for at in [150, 400] {
        assert!(client.read_until(&mut ws, at).await);
        // Cut the workers' subscriber connections: what is published until they are back is
        // lost on pub/sub and must come from the history.
        redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    }
    assert!(client.read_until(&mut ws, N).await, "stream ended early");
    publishing.await.unwrap();
    client.assert_exactly_once_in_order(N);
    // The metrics reach the master within a second or so; the cut left at least one gap.
    let mut filled = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && filled.unwrap_or(0.0) < 1.0 {
        let text = scrape(&metrics).await;
        filled = sample(&text, "wsredis_ws_gaps_filled_total{pool=\"all\"}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("gaps filled: {filled:?}");
    assert!(
        filled >= Some(1.0),
        "no gap was filled: the test did not test"
    );
    bus.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_empty_gives_recovery_failed() {
    let (mut server, _) = start();
    let mut redis = server.redis.take().unwrap();
    let bus = Bus::connect_url(&redis.url(), 16).await.unwrap();
    let mut client = Client::default();
    let mut ws = live(&mut client, &server, &redis).await;
    let mut other = Client::default();
    let mut stays = live(&mut other, &server, &redis).await;
    for i in 1..=3u64 {
        bus.publish_with(
            &[CHANNEL.to_owned()],
            i.to_string().into(),
            3600,
            Some(RETENTION),
        )
        .await
        .unwrap();
    }
    assert!(client.read_until(&mut ws, 3).await);
    assert!(other.read_until(&mut stays, 3).await);
    drop(ws);

    redis.restart();
    // Everyone is back once the workers resubscribed.
    assert!(eventually(Duration::from_secs(15), || redis.numsub(CHANNEL) >= 1).await);
    let mut ws = live(&mut client, &server, &redis).await;
    assert!(client.read(&mut ws).await);
    assert_eq!(
        client.failed.len(),
        1,
        "reconnecting client: {:?}",
        client.got
    );
    assert_eq!(client.failed[0]["ch"], "broadcast");
    assert_eq!(
        client.failed[0]["offset"], 0,
        "no history after the restart"
    );

    // Every worker holding one of the two sockets is subscribed again before "4" goes out
    // (a worker still reconnecting would not hear it: Redis keeps no pub/sub backlog).
    let holders: std::collections::HashSet<i32> = [owner(&server, &ws), owner(&server, &stays)]
        .into_iter()
        .flatten()
        .collect();
    assert!(
        eventually(Duration::from_secs(15), || redis.numsub(CHANNEL)
            >= holders.len() as u64)
        .await
    );
    // The socket that stayed open learns it with the first message of the new epoch.
    let published = Instant::now();
    while bus
        .publish_with(&[CHANNEL.to_owned()], "4".into(), 3600, Some(RETENTION))
        .await
        .is_err()
    {
        assert!(
            published.elapsed() < Duration::from_secs(10),
            "publish never worked"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(other.read_until(&mut stays, 4).await);
    assert_eq!(other.got, [1, 2, 3, 4]);
    assert_eq!(
        other.failed.len(),
        1,
        "the open socket was not told: {:?}",
        other.got
    );
    assert_eq!(other.failed[0]["offset"], 0);
    // The reconnected client continues in the new epoch.
    assert!(client.read_until(&mut ws, 4).await);
    assert_eq!(client.positions["broadcast"].1, 1);
    bus.quit().await;
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publishers_order_holds_on_every_worker_and_plain_clients_see_ws4redis() {
    const N: u64 = 300;
    let (server, metrics) = start();
    let redis = server.redis.as_ref().unwrap();
    let base = server.base();
    // Sockets on both workers: connect in batches until Redis counts two subscribers.
    let mut sockets: Vec<(Client, Ws)> = Vec::new();
    while redis.numsub(CHANNEL) < 2 {
        assert!(sockets.len() < 400, "every socket landed on one worker");
        for _ in 0..10 {
            let mut c = Client::default();
            let ws = c.connect(&base).await.unwrap();
            sockets.push((c, ws));
        }
        let _ = eventually(Duration::from_millis(200), || redis.numsub(CHANNEL) >= 2).await;
    }
    let (mut plain, resp) =
        tokio_tungstenite::connect_async(format!("ws://{base}/ws/chat?subscribe-broadcast"))
            .await
            .unwrap();
    assert!(resp.headers().get("sec-websocket-protocol").is_none());
    assert!(eventually(Duration::from_secs(5), || redis.numsub(CHANNEL) >= 2).await);

    let bus = Bus::connect_url(&redis.url(), 16).await.unwrap();
    // Let the late sockets' subscriptions settle, then publish as fast as one publisher can.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher(bus.clone(), N, Duration::ZERO, None)
        .await
        .unwrap();
    for (c, ws) in &mut sockets {
        assert!(c.read_until(ws, N).await);
        c.assert_exactly_once_in_order(N);
    }
    println!(
        "{} envelope sockets over 2 workers, {N} messages each, in order",
        sockets.len()
    );
    // The plain client: bare bodies, as ws4redis sends them.
    for i in 1..=N {
        match tokio::time::timeout(Duration::from_secs(3), plain.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => assert_eq!(t.as_str(), i.to_string()),
            other => panic!("plain client: {other:?}"),
        }
    }
    // And the ws4redis key still holds the last message, for ws4redis replay: raw for a plain
    // socket, as a `message` with its position for a fresh envelope socket.
    assert_eq!(redis.cli(&["GET", CHANNEL]).trim(), N.to_string());
    let (mut late_plain, _) =
        tokio_tungstenite::connect_async(format!("ws://{base}/ws/chat?subscribe-broadcast"))
            .await
            .unwrap();
    assert_eq!(next_text(&mut late_plain).await, Some(N.to_string()));
    let (mut late, _) = envelope_connect(&base, "/ws/chat?subscribe-broadcast")
        .await
        .unwrap();
    let replay: serde_json::Value =
        serde_json::from_str(&next_text(&mut late).await.unwrap()).unwrap();
    assert_eq!(replay["type"], "message");
    assert_eq!(replay["data"], N.to_string());
    assert_eq!(replay["offset"], N);
    let text = scrape(&metrics).await;
    println!(
        "recovered messages (metric): {:?}",
        sample(&text, "wsredis_ws_recovered_messages_total{pool=\"all\"}")
    );
    bus.quit().await;
}

/// The cost of history, printed (no timing assertion): sequential publishes through the bus
/// with and without it. Also checks the trimming: the stream keeps `size` entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_cost_with_and_without_history() {
    const N: u32 = 2_000;
    let redis = RedisServer::start();
    let bus = Bus::connect_url(&redis.url(), 16).await.unwrap();
    let small = Retention {
        size: 100,
        ttl_secs: 600,
    };
    let mut report = Vec::new();
    for (name, channel, history) in [
        ("plain (PUBLISH + SET EX)", "broadcast:plain", None),
        ("history (one EVALSHA)", "broadcast:hist", Some(small)),
    ] {
        let channels = [channel.to_owned()];
        let started = Instant::now();
        for i in 0..N {
            bus.publish_with(&channels, format!("message {i}").into(), 3600, history)
                .await
                .unwrap();
        }
        let per = started.elapsed() / N;
        report.push(format!("{name}: {per:?} per publish"));
    }
    println!(
        "{N} sequential publishes each, debug build: {}",
        report.join("; ")
    );
    assert_eq!(
        redis.cli(&["XLEN", "{broadcast:hist}:history"]).trim(),
        "100"
    );
    assert_eq!(
        redis
            .cli(&["HGET", "{broadcast:hist}:meta", "offset"])
            .trim(),
        N.to_string()
    );
    assert_eq!(redis.cli(&["EXISTS", "{broadcast:plain}:meta"]).trim(), "0");
    bus.quit().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_recover_parameter_is_ignored_and_counted() {
    let (server, metrics) = start();
    let redis = server.redis.as_ref().unwrap();
    let base = server.base();
    let junk = [
        "recover=%7Bnot%20json",
        "recover=%7B%22user%3Asomeone%22%3A%7B%22epoch%22%3A%22e%22%2C%22offset%22%3A1%7D%7D",
        "recover=%7B%22broadcast%22%3A%7B%22epoch%22%3A5%7D%7D",
    ];
    let mut sockets = Vec::new();
    for q in junk {
        let (ws, protocol) = envelope_connect(&base, &format!("/ws/chat?subscribe-broadcast&{q}"))
            .await
            .expect("a bad recover never refuses the socket");
        assert_eq!(protocol.as_deref(), Some("wsredis.v1"));
        sockets.push(ws);
    }
    assert!(eventually(Duration::from_secs(10), || redis.numsub(CHANNEL) >= 1).await);
    let bus = Bus::connect_url(&redis.url(), 16).await.unwrap();
    // Let every socket's subscription settle on its worker, then one message reaches them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    publisher(bus.clone(), 1, Duration::ZERO, None)
        .await
        .unwrap();
    for ws in &mut sockets {
        let mut c = Client::default();
        assert!(c.read_until(ws, 1).await);
        c.assert_exactly_once_in_order(1);
    }
    let mut counted = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        counted = sample(
            &scrape(&metrics).await,
            "wsredis_ws_recover_ignored_total{pool=\"all\"}",
        );
        if counted == Some(3.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(counted, Some(3.0), "each bad entry counted once");
    bus.quit().await;
}
