//! A fleet of websocket clients, each in a task of its own that reads numbered messages and
//! keeps what a user would check: the last number, the numbers it missed while connected,
//! how each connection ended (close code; 1006 when cut without one), and, when allowed to
//! reconnect, how long that took and whether the first message afterwards was the stored
//! last message.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{StreamExt as _, stream};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::common::eventually;
use crate::common::ws::{Ws, connect};

/// Sockets opened at once while the fleet connects.
const CONNECT_CONCURRENCY: usize = 32;
/// How long a client keeps trying to reconnect.
const RECONNECT_DEADLINE: Duration = Duration::from_secs(30);
/// Most missed numbers kept per socket (the count goes on).
const MAX_MISSING_KEPT: usize = 1000;

/// What one client saw.
#[derive(Debug, Default, Clone)]
pub struct Seen {
    /// Its current local port (to find the worker holding it).
    pub port: u16,
    /// Whether it is connected now.
    pub open: bool,
    /// The highest number received.
    pub last: u64,
    /// Messages received.
    pub received: u64,
    /// Numbers skipped while connected (a real loss).
    pub missing: Vec<u64>,
    /// How many numbers were skipped while connected.
    pub missing_count: u64,
    /// Close codes of the connections that ended (1006 = cut without a close frame).
    pub closes: Vec<u16>,
    /// Time from each end to the next successful connect.
    pub reconnects: Vec<Duration>,
    /// Numbers published while it was reconnecting that were not replayed (ws4redis keeps
    /// only the last message).
    pub missed_reconnecting: u64,
    /// Reconnects whose first message was older than the last one seen before.
    pub stale_replays: u64,
    /// Reconnects after which no message came yet.
    awaiting_first: Option<u64>,
    /// Why it gave up reconnecting, if it did.
    pub failed: Option<String>,
}

impl Seen {
    fn on_number(&mut self, n: u64) {
        self.received += 1;
        if let Some(before) = self.awaiting_first.take() {
            if n < before {
                self.stale_replays += 1;
            }
            self.missed_reconnecting += n.saturating_sub(before + 1);
        } else if self.last > 0 && n > self.last + 1 {
            self.missing_count += n - self.last - 1;
            let room = MAX_MISSING_KEPT.saturating_sub(self.missing.len()) as u64;
            self.missing.extend((self.last + 1..n).take(room as usize));
        }
        self.last = self.last.max(n);
    }
}

/// Many websocket clients on one URL.
pub struct Fleet {
    /// One record per client, in connect order.
    pub seen: Vec<Arc<Mutex<Seen>>>,
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Fleet {
    /// Connect `n` clients to `ws://{base}{path}` (panics if any cannot connect).
    pub async fn connect(base: &str, path: &str, n: usize, reconnect: bool) -> Fleet {
        let stop = CancellationToken::new();
        let started = Instant::now();
        let opened: Vec<Result<Ws, String>> = stream::iter(0..n)
            .map(|_| connect(base, path, None))
            .buffered(CONNECT_CONCURRENCY)
            .collect()
            .await;
        let mut fleet = Fleet {
            seen: Vec::with_capacity(n),
            stop: stop.clone(),
            tasks: Vec::with_capacity(n),
        };
        for (i, ws) in opened.into_iter().enumerate() {
            let ws = ws.unwrap_or_else(|e| panic!("socket {i} of {n} did not connect: {e}"));
            let seen = Arc::new(Mutex::new(Seen {
                port: local_port(&ws),
                open: true,
                ..Seen::default()
            }));
            let url = (base.to_owned(), path.to_owned());
            fleet.tasks.push(tokio::spawn(run(
                ws,
                seen.clone(),
                url,
                reconnect,
                stop.clone(),
            )));
            fleet.seen.push(seen);
        }
        println!(
            "{n} websockets connected to {path} in {:.1?}",
            started.elapsed()
        );
        fleet
    }

    /// A copy of every client's record.
    pub fn snapshot(&self) -> Vec<Seen> {
        self.seen
            .iter()
            .map(|s| s.lock().unwrap().clone())
            .collect()
    }

    /// Wait until every client that is still trying has received number `n` or later.
    pub async fn reach(&self, n: u64, timeout: Duration) -> bool {
        eventually(timeout, || {
            self.seen.iter().all(|s| {
                let s = s.lock().unwrap();
                s.last >= n || s.failed.is_some()
            })
        })
        .await
    }

    /// Wait until `pred` holds for every client.
    pub async fn all(&self, timeout: Duration, pred: impl Fn(&Seen) -> bool) -> bool {
        eventually(timeout, || {
            self.seen.iter().all(|s| pred(&s.lock().unwrap()))
        })
        .await
    }

    /// Close every client (normal closure) and wait for the tasks.
    pub async fn close(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn local_port(ws: &Ws) -> u16 {
    match ws.get_ref() {
        MaybeTlsStream::Plain(s) => s.local_addr().map_or(0, |a| a.port()),
        _ => 0,
    }
}

async fn run(
    mut ws: Ws,
    seen: Arc<Mutex<Seen>>,
    (base, path): (String, String),
    reconnect: bool,
    stop: CancellationToken,
) {
    loop {
        let code = tokio::select! {
            code = read(&mut ws, &seen) => code,
            () = stop.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
        };
        {
            let mut s = seen.lock().unwrap();
            s.open = false;
            s.closes.push(code);
        }
        if !reconnect {
            return;
        }
        let ended = Instant::now();
        ws = loop {
            match connect(&base, &path, None).await {
                Ok(ws) => break ws,
                Err(e) if ended.elapsed() > RECONNECT_DEADLINE => {
                    seen.lock().unwrap().failed = Some(e);
                    return;
                }
                Err(_) => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(20)) => {}
                        () = stop.cancelled() => return,
                    }
                }
            }
        };
        let mut s = seen.lock().unwrap();
        s.reconnects.push(ended.elapsed());
        s.port = local_port(&ws);
        s.open = true;
        s.awaiting_first = Some(s.last);
    }
}

/// Read numbers until the connection ends; returns its close code.
async fn read(ws: &mut Ws, seen: &Mutex<Seen>) -> u16 {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                if let Ok(n) = t.parse::<u64>() {
                    seen.lock().unwrap().on_number(n);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return frame.map_or(1005, |f| u16::from(f.code));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return 1006,
        }
    }
}

/// Connect a fleet of `n` sockets to `path`, wait until every worker holding some of them
/// has subscribed `channel` in Redis, start the numbered publisher on it and wait until every
/// socket has a message: the steady state every fault under load starts from.
pub async fn flowing(
    server: &crate::common::server::Server,
    path: &str,
    channel: &str,
    n: usize,
    reconnect: bool,
) -> (Fleet, super::Publisher) {
    let soon = Duration::from_secs(60);
    let fleet = Fleet::connect(&server.base(), path, n, reconnect).await;
    let redis = server.redis.as_ref().unwrap();
    let owners = super::owners(&server.worker_pids(), server.port);
    let holders: std::collections::HashSet<i32> = fleet
        .snapshot()
        .iter()
        .filter_map(|s| owners.get(&s.port).copied())
        .collect();
    let holders = holders.len() as u64;
    assert!(
        eventually(soon, || redis.numsub(channel) == holders).await,
        "not every worker holding sockets subscribed"
    );
    let publisher = super::Publisher::start(redis.port, channel);
    assert!(
        eventually(soon, || publisher.last() >= 2).await,
        "not publishing"
    );
    assert!(
        fleet.reach(2, soon).await,
        "messages do not reach every socket"
    );
    (fleet, publisher)
}
