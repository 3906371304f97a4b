//! Clients that stop reading or vanish, on the real binary under load (issue 7): three workers,
//! a fleet of `CHAOS_SOCKETS` websockets receiving numbered messages at `CHAOS_RATE`, and a few
//! raw sockets (opened until every worker holds some) that misbehave:
//!
//! - slow consumers complete the handshake with a 4 KiB receive buffer and never read, while a
//!   second publisher floods their channel with 16 KiB messages (a few fast readers on that
//!   channel check that it is not the channel that stalls). Once the kernel buffers and the
//!   socket's queue (`--send-queue`, default 1024) are full the worker cuts the socket: close
//!   1013 is attempted (it cannot reach a client that never reads), then the connection is
//!   dropped. The flood has its own channel because the fleet cannot take 16 KiB messages at
//!   hundreds per second on two cores; it shares the workers, their Redis connection and
//!   their runtime with the fleet, which is what a stuck socket could stall.
//! - half-open connections: a client whose machine vanished sends no FIN or RST and answers
//!   nothing. Six are made for real (when the test can create a network namespace, as root
//!   with iproute2; `chaos_harness/netns.rs`): websockets from another namespace over a veth
//!   pair whose link is then taken down and whose process is killed, so the server's segments
//!   are never ACKed. Besides them (and instead of them without a namespace), raw loopback
//!   sockets that never send a byte and do not read until the server has given up: the kernel
//!   of a live peer ACKs, but the server cannot tell before its buffers fill (its pings are a
//!   few bytes). With `--ping-interval 3` the server must close both kinds (1001 "ping
//!   timeout") after about two intervals, while the fleet, whose client library answers every
//!   ping, stays connected.
//!
//! Each test prints its numbers (sockets, messages, time to cut, worker memory) and checks what
//! an operator would: the bad sockets are gone and counted in the metrics, nothing is missing
//! on any other socket, no worker restarted or grew out of bounds.

mod chaos_harness;
mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chaos_harness::fleet::{self, Fleet};
use chaos_harness::flood::Flood;
use chaos_harness::netns::Vanishing;
use chaos_harness::*;
use common::eventually;
use common::raw::{self, Frames};
use common::server::{Server, sample, scrape};
use tokio::io::AsyncReadExt as _;
use tokio::net::{TcpSocket, TcpStream};

const CHANNEL: &str = "broadcast:chaos";
const PATH: &str = "/ws/chaos?subscribe-broadcast";
const FLOOD_CHANNEL: &str = "broadcast:flood";
const FLOOD_PATH: &str = "/ws/flood?subscribe-broadcast";
/// Size of each flood message.
const FLOOD_BYTES: usize = 16 * 1024;
/// Flood messages per second (6.4 MiB/s into every worker: far below what Redis tolerates
/// before it drops a subscriber, 32 MiB behind).
const FLOOD_RATE: u64 = 400;
/// Clients that read the flood as fast as it comes.
const FLOOD_READERS: usize = 3;
/// Receive buffer asked for by a slow consumer (the kernel doubles it).
const SLOW_RCVBUF_BYTES: u32 = 4096;
/// Raw sockets each worker should hold, and the most opened to get there.
const PER_WORKER: usize = 2;
const MAX_RAW: usize = 12;
/// Truly half-open connections (when a network namespace can be made).
const HALF_OPEN: usize = 6;
/// `--ping-interval` of the half-open test.
const PING_SECS: u64 = 3;
/// Growth of a worker's resident memory that would mean a slow socket hoards.
const RSS_BOUND_KIB: u64 = 200 * 1024;
const SOON: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_are_cut_under_load_and_nobody_else_misses_anything() {
    let _serial = SERIAL.lock().await;
    let n = sockets();
    raise_nofile(n as u64 * 2 + 512);
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let server = Server::start(&["--workers", "3", "--metrics-bind", &metrics]);
    let pids = server.worker_pids();
    let (fleet, publisher) = fleet::flowing(&server, PATH, CHANNEL, n, false).await;
    let readers = Fleet::connect(&server.base(), FLOOD_PATH, FLOOD_READERS, false).await;
    let slow = spread_raw(&server, FLOOD_PATH, Some(SLOW_RCVBUF_BYTES)).await;
    let ports: Vec<u16> = slow.iter().map(|r| r.port).collect();
    let redis = server.redis.as_ref().unwrap();
    let flooded: Vec<u16> = readers
        .snapshot()
        .iter()
        .map(|s| s.port)
        .chain(ports.clone())
        .collect();
    let holders = held(&server, &flooded).len() as u64;
    assert!(
        eventually(SOON, || redis.numsub(FLOOD_CHANNEL) == holders).await,
        "not every worker holding flood sockets subscribed"
    );
    let spread = counts(&held(&server, &ports));
    let text = scrape(&metrics).await;
    let closed_1013 = "wsredis_websockets_closed_total{pool=\"all\",code=\"1013\"}";
    let dropped_slow = "wsredis_dropped_total{pool=\"all\",reason=\"slow_consumer\"}";
    let (closed_before, dropped_before) = (value(&text, closed_1013), value(&text, dropped_slow));
    let rss_before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();

    let flood = Flood::start(redis.port, FLOOD_CHANNEL, FLOOD_BYTES, FLOOD_RATE);
    let t0 = Instant::now();
    let cuts = rises(&metrics, closed_1013, closed_before, slow.len(), t0).await;
    let flood_last = flood.stop().await;
    let left = held(&server, &ports);
    let ends = read_out(slow).await;
    let rss_after: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    assert!(
        readers.reach(flood_last, SOON).await,
        "a flood reader misses the last flood message"
    );
    let last = publisher.stop().await;
    assert!(fleet.reach(last, SOON).await, "the last message is missing");
    let text = scrape(&metrics).await;
    let closed = value(&text, closed_1013) - closed_before;
    let dropped = value(&text, dropped_slow) - dropped_before;
    let seen = fleet.snapshot();
    let read = readers.snapshot();
    let missing: u64 = seen.iter().chain(&read).map(|s| s.missing_count).sum();
    let closes: usize = seen.iter().chain(&read).map(|s| s.closes.len()).sum();
    println!(
        "{} slow consumers (receive buffer {SLOW_RCVBUF_BYTES} B, never reading; per worker \
         pid: {spread:?}) under {n} sockets at {} msg/s; flood of {flood_last} messages of \
         {} KiB at {FLOOD_RATE}/s to {FLOOD_READERS} readers and the slow ones; counted as \
         closed 1013 after {:.1?} (all {:.1?}); 1013 closes counted: {closed}, slow consumers \
         dropped: {dropped}; slow sockets still held by a worker: {left:?}; what each slow \
         client found once it read: {}; worker RSS before {rss_before:?} KiB, after \
         {rss_after:?} KiB; {last} fleet messages; missing on other sockets: {missing}; other \
         sockets closed: {closes}",
        ports.len(),
        rate(),
        FLOOD_BYTES / 1024,
        cuts.first().copied().unwrap_or_default(),
        cuts.last().copied().unwrap_or_default(),
        describe(&ends),
    );
    assert_eq!(cuts.len(), ports.len(), "not every slow consumer was cut");
    assert!(left.is_empty(), "slow sockets still held: {left:?}");
    assert!(
        ends.iter().all(|e| e.ended.is_ok()),
        "a slow consumer's connection did not end: {}",
        describe(&ends)
    );
    assert_eq!(
        closed,
        ports.len() as f64,
        "1013 closes other than the slow ones"
    );
    assert_eq!(dropped, ports.len() as f64, "slow consumers dropped");
    for (before, after) in rss_before.iter().zip(&rss_after) {
        assert!(
            after.saturating_sub(*before) < RSS_BOUND_KIB,
            "{before} → {after} KiB"
        );
    }
    assert_eq!((missing, closes), (0, 0), "other sockets lost messages");
    assert!(seen.iter().all(|s| s.open && s.last == last));
    assert!(read.iter().all(|s| s.open && s.last == flood_last));
    assert_eq!(server.worker_pids(), pids, "a worker restarted");
    fleet.close().await;
    readers.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_are_closed_after_two_ping_intervals_and_the_fleet_stays() {
    let _serial = SERIAL.lock().await;
    let n = sockets();
    raise_nofile(n as u64 * 2 + 512);
    let mut net = Vanishing::setup();
    if let Err(why) = &net {
        println!("no true half-open connections, only silent ones: {why}");
    }
    let host = net
        .as_ref()
        .map_or("127.0.0.1".to_owned(), |v| v.host.clone());
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let ping = PING_SECS.to_string();
    let args = [
        "--workers",
        "3",
        "--metrics-bind",
        &metrics,
        "--ping-interval",
        &ping,
    ];
    let server = Server::start_at(&host, &args, &[]);
    let pids = server.worker_pids();
    let connected = Instant::now();
    let (fleet, publisher) = fleet::flowing(&server, PATH, CHANNEL, n, false).await;
    // By reason: a ping timeout, not any 1001 (a drain closes 1001 too).
    let ping_timeouts =
        "wsredis_websockets_close_reasons_total{pool=\"all\",reason=\"ping_timeout\"}";
    let before = value(&scrape(&metrics).await, ping_timeouts);
    let rss_before: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();

    // Both kinds on the fleet's channel: the server keeps writing messages and pings to them.
    let t0 = Instant::now();
    let vanished = match &mut net {
        Ok(v) => {
            let ports = tokio::task::block_in_place(|| v.open(&server.base(), PATH, HALF_OPEN));
            v.vanish();
            ports
        }
        Err(_) => Vec::new(),
    };
    let silent = spread_raw(&server, PATH, None).await;
    let quiet: Vec<u16> = silent.iter().map(|r| r.port).collect();
    let spread = (
        counts(&held(&server, &vanished)),
        counts(&held(&server, &quiet)),
    );
    let all: Vec<u16> = vanished.iter().chain(&quiet).copied().collect();
    let cuts = rises(&metrics, ping_timeouts, before, all.len(), t0).await;
    let left = held(&server, &all);
    let ends = read_out(silent).await;
    let rss_after: Vec<u64> = pids.iter().map(|p| rss_kib(*p)).collect();
    let last = publisher.stop().await;
    assert!(fleet.reach(last, SOON).await, "the last message is missing");
    let closed = value(&scrape(&metrics).await, ping_timeouts) - before;
    let seen = fleet.snapshot();
    let missing: u64 = seen.iter().map(|s| s.missing_count).sum();
    let closes: usize = seen.iter().map(|s| s.closes.len()).sum();
    println!(
        "{} half-open connections from a vanished network namespace and {} silent loopback \
         sockets (per worker pid: {:?}, {:?}) under {n} sockets at {} msg/s, --ping-interval \
         {PING_SECS}: counted as closed 1001 after {:.1?} (all {:.1?}; two to three intervals \
         plus the close timeout waiting for an answer that never comes); 1001 closes counted: \
         {closed}; still held by a worker: {left:?}; what each silent one found once it read: \
         {}; worker RSS before {rss_before:?} KiB, after {rss_after:?} KiB; the fleet lived \
         {:.1?} with {last} messages: missing {missing}, closed {closes}",
        vanished.len(),
        quiet.len(),
        spread.0,
        spread.1,
        rate(),
        cuts.first().copied().unwrap_or_default(),
        cuts.last().copied().unwrap_or_default(),
        describe(&ends),
        connected.elapsed(),
    );
    assert_eq!(
        cuts.len(),
        all.len(),
        "not every half-open or silent socket was closed"
    );
    assert!(
        left.is_empty(),
        "half-open or silent sockets still held: {left:?}"
    );
    for e in &ends {
        assert!(e.ended.is_ok(), "{}", describe(&ends));
        assert_eq!(
            e.frames.close,
            Some((1001, "ping timeout".to_owned())),
            "{}",
            describe(&ends)
        );
        assert!(e.frames.pings >= 1, "closed without being pinged");
    }
    assert_eq!(
        closed,
        all.len() as f64,
        "1001 closes other than the silent ones"
    );
    assert_eq!(
        (missing, closes),
        (0, 0),
        "the fleet lost messages or sockets"
    );
    assert!(seen.iter().all(|s| s.open && s.last == last));
    assert_eq!(server.worker_pids(), pids, "a worker restarted");
    fleet.close().await;
}

/// A raw websocket the test holds without reading.
struct Raw {
    s: TcpStream,
    port: u16,
}

/// Open raw websockets on `path` (with a small receive buffer if asked) until every worker
/// holds [`PER_WORKER`] of them or [`MAX_RAW`] are open: the kernel hands connections to
/// whichever worker accepts first.
async fn spread_raw(server: &Server, path: &str, rcvbuf: Option<u32>) -> Vec<Raw> {
    let addr: SocketAddr = server.base().parse().unwrap();
    let pids = server.worker_pids();
    let mut raws: Vec<Raw> = Vec::new();
    while raws.len() < MAX_RAW {
        let by = held(server, &raws.iter().map(|r| r.port).collect::<Vec<_>>());
        if pids
            .iter()
            .all(|p| by.get(p).map_or(0, Vec::len) >= PER_WORKER)
        {
            break;
        }
        let socket = TcpSocket::new_v4().unwrap();
        if let Some(bytes) = rcvbuf {
            socket.set_recv_buffer_size(bytes).unwrap();
        }
        let tcp = socket.connect(addr).await.unwrap();
        let s = raw::websocket_on(tcp, &server.base(), path).await;
        let port = s.local_addr().unwrap().port();
        raws.push(Raw { s, port });
        // The worker holds the connection once it answered 101; wait until /proc shows it.
        assert!(
            eventually(SOON, || !held(server, &[port]).is_empty()).await,
            "no worker holds the raw socket"
        );
    }
    raws
}

/// Which worker holds each of `ports` (client side), by worker pid; ports no worker holds
/// are left out.
fn held(server: &Server, ports: &[u16]) -> BTreeMap<i32, Vec<u16>> {
    let owners = owners(&server.worker_pids(), server.port);
    let mut by = BTreeMap::new();
    for p in ports {
        if let Some(pid) = owners.get(p) {
            by.entry(*pid).or_insert_with(Vec::new).push(*p);
        }
    }
    by
}

fn counts(by: &BTreeMap<i32, Vec<u16>>) -> Vec<(i32, usize)> {
    by.iter().map(|(p, v)| (*p, v.len())).collect()
}

fn value(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("{series} missing from the metrics"))
}

/// Scrape every 100 ms until `series` has risen `n` above `base` (or [`SOON`] passed); the
/// time since `t0` at which each unit of the rise was first seen.
async fn rises(metrics: &str, series: &str, base: f64, n: usize, t0: Instant) -> Vec<Duration> {
    let mut seen = Vec::new();
    while seen.len() < n && t0.elapsed() < SOON * 2 {
        let now = value(&scrape(metrics).await, series) - base;
        while (seen.len() as f64) < now {
            seen.push(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// How a raw client's connection ended once it read: what came, and EOF or reset (Err:
/// still open after [`SOON`], or another error).
struct Ended {
    bytes: usize,
    frames: Frames,
    ended: Result<&'static str, String>,
}

/// Read every raw socket to its end, all at once.
async fn read_out(raws: Vec<Raw>) -> Vec<Ended> {
    let reads = raws.into_iter().map(|mut r| async move {
        let mut buf = Vec::new();
        let ended = match tokio::time::timeout(SOON, r.s.read_to_end(&mut buf)).await {
            Ok(Ok(_)) => Ok("eof"),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ok("reset"),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("still open".to_owned()),
        };
        Ended {
            bytes: buf.len(),
            frames: raw::frames(&buf),
            ended,
        }
    });
    futures_util::future::join_all(reads).await
}

/// Each distinct ending with how many clients had it.
fn describe(ends: &[Ended]) -> String {
    let mut each = BTreeMap::<String, usize>::new();
    for e in ends {
        let close = e
            .frames
            .close
            .as_ref()
            .map_or("no close frame".to_owned(), |(c, r)| {
                format!("close {c} {r:?}")
            });
        let how = e
            .ended
            .as_ref()
            .map_or_else(|e| e.clone(), |h| (*h).to_owned());
        let line = format!(
            "{} KiB, {} messages, {} pings, {close}, {how}",
            e.bytes / 1024,
            e.frames.data,
            e.frames.pings
        );
        *each.entry(line).or_default() += 1;
    }
    let each: Vec<String> = each.iter().map(|(l, n)| format!("{n} × ({l})")).collect();
    each.join("; ")
}
