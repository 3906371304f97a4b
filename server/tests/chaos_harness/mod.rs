//! Test support for the faults-under-load tests (`chaos*.rs`): sizes from
//! the environment, the file-descriptor limit, a numbered publisher that talks RESP to Redis
//! the way a Django backend's `RedisPublisher` does, HTTP load, and what /proc says about the
//! master and its workers.
//!
//! Sizes: `CHAOS_SOCKETS` (websockets per test, default 2000), `CHAOS_RATE` (messages per
//! second, default 10), `CHAOS_CYCLES` (HUP cycles, default 100), `CHAOS_OUTAGE_SECS` (Redis
//! outage, default 5). `make chaos` raises them.
#![allow(dead_code, unreachable_pub)]

pub mod fleet;
pub mod flood;
pub mod netns;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

use crate::common::server::request;

/// The tests of one binary run one at a time: each one loads the machine on purpose.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Websockets per test.
pub fn sockets() -> usize {
    env_num("CHAOS_SOCKETS", 2000) as usize
}

/// Messages per second from the publisher.
pub fn rate() -> u64 {
    env_num("CHAOS_RATE", 10).max(1)
}

/// HUP cycles in a row.
pub fn cycles() -> usize {
    env_num("CHAOS_CYCLES", 100) as usize
}

/// Seconds Redis stays down.
pub fn outage() -> Duration {
    Duration::from_secs(env_num("CHAOS_OUTAGE_SECS", 5))
}

/// Raise this process's soft RLIMIT_NOFILE to its hard limit (the workers it starts inherit
/// it) and check that `need` descriptors fit; returns the limit.
pub fn raise_nofile(need: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("setrlimit");
    }
    assert!(
        hard >= need,
        "RLIMIT_NOFILE hard limit {hard} is below the {need} descriptors this test needs; \
         lower CHAOS_SOCKETS"
    );
    hard
}

/// Publishes `1, 2, 3, …` on one channel at a steady rate, straight to Redis: `SET` (the
/// stored message replayed to sockets that connect later) then `PUBLISH`. A number that
/// fails (Redis down) is retried until it goes out, so numbers are never skipped; how many
/// subscribers (workers) heard each number is kept.
pub struct Publisher {
    stop: Arc<AtomicBool>,
    paused: Arc<AtomicBool>,
    last: Arc<AtomicU64>,
    failures: Arc<AtomicU64>,
    /// Receivers reported by Redis for each number (index = number - 1).
    heard: Arc<Mutex<Vec<u64>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Publisher {
    /// Start publishing on `channel` of the Redis at `port`.
    pub fn start(port: u16, channel: &str) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let paused = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(AtomicU64::new(0));
        let heard = Arc::new(Mutex::new(Vec::new()));
        let (s, p, l, f, h) = (
            stop.clone(),
            paused.clone(),
            last.clone(),
            failures.clone(),
            heard.clone(),
        );
        let channel = channel.to_owned();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate()));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut conn: Option<Resp> = None;
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                if p.load(Ordering::Relaxed) {
                    continue;
                }
                let n = l.load(Ordering::Relaxed) + 1;
                if conn.is_none() {
                    conn = Resp::connect(port).await;
                }
                let Some(c) = conn.as_mut() else {
                    f.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                match c.publish(&channel, &n.to_string()).await {
                    Some(receivers) => {
                        h.lock().unwrap().push(receivers);
                        l.store(n, Ordering::Relaxed);
                    }
                    None => {
                        f.fetch_add(1, Ordering::Relaxed);
                        conn = None;
                    }
                }
            }
        });
        Publisher {
            stop,
            paused,
            last,
            failures,
            heard,
            task,
        }
    }

    /// The last number Redis accepted.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// Attempts that failed (Redis unreachable).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Hold or resume publishing.
    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    /// Numbers that fewer than `subscribers` workers heard (published while a worker was
    /// resubscribing: pub/sub delivers at most once, to whoever listens at that moment).
    pub fn unheard(&self, subscribers: u64) -> Vec<u64> {
        let heard = self.heard.lock().unwrap();
        (1..)
            .zip(heard.iter())
            .filter(|(_, r)| **r < subscribers)
            .map(|(n, _)| n)
            .collect()
    }

    /// Stop; returns the last number published.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let last = self.last.clone();
        let _ = self.task.await;
        last.load(Ordering::Relaxed)
    }
}

/// A minimal RESP connection: enough for `SET … EX` and `PUBLISH`.
struct Resp {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

const RESP_TIMEOUT: Duration = Duration::from_secs(1);

impl Resp {
    async fn connect(port: u16) -> Option<Self> {
        let tcp = tokio::time::timeout(RESP_TIMEOUT, TcpStream::connect(("127.0.0.1", port)))
            .await
            .ok()?
            .ok()?;
        let (r, w) = tcp.into_split();
        Some(Resp {
            r: BufReader::new(r),
            w,
        })
    }

    fn command(args: &[&str]) -> String {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        out
    }

    /// Store then publish; the number of receivers, or None if Redis did not answer.
    async fn publish(&mut self, channel: &str, msg: &str) -> Option<u64> {
        let mut cmds = Self::command(&["SET", channel, msg, "EX", "3600"]);
        cmds.push_str(&Self::command(&["PUBLISH", channel, msg]));
        tokio::time::timeout(RESP_TIMEOUT, async {
            self.w.write_all(cmds.as_bytes()).await.ok()?;
            let mut line = String::new();
            self.r.read_line(&mut line).await.ok()?;
            if !line.starts_with("+OK") {
                return None;
            }
            line.clear();
            self.r.read_line(&mut line).await.ok()?;
            line.strip_prefix(':')?.trim().parse().ok()
        })
        .await
        .ok()?
    }
}

/// Plain HTTP requests (`/healthz`, each on a fresh connection) in a loop until stopped.
pub struct HttpLoad {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(u64, Vec<String>)>>,
}

impl HttpLoad {
    /// Start `clients` request loops against `addr`.
    pub fn start(addr: &str, clients: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (addr, stop) = (addr.to_owned(), stop.clone());
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0, Vec::new());
                    while !stop.load(Ordering::Relaxed) {
                        match request(&addr, "GET", "/healthz").await {
                            Ok(r) if r.status == 200 => ok += 1,
                            Ok(r) => failed.push(format!("status {}: {}", r.status, r.body)),
                            Err(e) => failed.push(e),
                        }
                    }
                    (ok, failed)
                })
            })
            .collect();
        HttpLoad { stop, tasks }
    }

    /// Stop; returns the requests that succeeded and the failures.
    pub async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let (mut ok, mut failed) = (0, Vec::new());
        for t in self.tasks {
            let (o, f) = t.await.unwrap();
            ok += o;
            failed.extend(f);
        }
        (ok, failed)
    }
}

/// Open file descriptors of a process.
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Resident memory of a process, in KiB (`VmRSS`).
pub fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Which of `workers` holds each server-side connection on `server_port`, keyed by the
/// client's port: the socket inodes in each worker's /proc/<pid>/fd, matched with
/// /proc/net/tcp (IPv4 loopback).
pub fn owners(workers: &[i32], server_port: u16) -> HashMap<u16, i32> {
    let mut inode_pid = HashMap::new();
    for pid in workers {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            if let Ok(link) = std::fs::read_link(e.path())
                && let Some(inode) = link
                    .to_str()
                    .and_then(|l| l.strip_prefix("socket:["))
                    .and_then(|l| l.strip_suffix(']'))
            {
                inode_pid.insert(inode.to_owned(), *pid);
            }
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_of = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    let mut out = HashMap::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(remote), Some(inode)) = (f.get(1), f.get(2), f.get(9)) else {
            continue;
        };
        if port_of(local) == Some(server_port)
            && let (Some(client), Some(pid)) = (port_of(remote), inode_pid.get(*inode))
        {
            out.insert(client, *pid);
        }
    }
    out
}

/// Median and maximum of some durations.
pub fn median_max(mut d: Vec<Duration>) -> (Duration, Duration) {
    if d.is_empty() {
        return (Duration::ZERO, Duration::ZERO);
    }
    d.sort_unstable();
    (d[d.len() / 2], d[d.len() - 1])
}
