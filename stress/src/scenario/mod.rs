//! The scenarios and what they share: connecting many sockets, the receiving tasks, the
//! warm-up that proves every subscription live, and the progress bars.
//!
//! Invariant: every wait is bounded by the run's deadline; a run that cannot finish reports
//! what it lost instead of hanging.

pub mod chat;
pub mod fanout;
pub mod idle;
pub mod recovery;
pub mod rejoin;
pub mod seed;
pub mod shard;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::body;
use crate::client::{ClientError, Conn, Message};
use crate::env::Env;
use crate::procfs;
use crate::publish::{Audience, PublishError, Publisher, Targets};
use crate::report::{Connect, Percentiles, Report};
use crate::tracker::{Receiver, Summary, Tracker};

/// A progress bar on stderr (hidden with `quiet` or when stderr is not a terminal).
pub fn bar(quiet: bool, len: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template(
            "{msg:>12} [{bar:40}] {pos}/{len} {elapsed_precise} {per_sec}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    pb
}

/// Ways sockets ended during a run, and the first few errors.
#[derive(Debug, Default)]
pub struct Closes {
    by_code: Mutex<BTreeMap<u16, u64>>,
    errors: Mutex<Vec<String>>,
    count: AtomicU64,
}

impl Closes {
    /// Count a socket's end.
    pub fn add(&self, e: &ClientError) {
        self.count.fetch_add(1, Ordering::Relaxed);
        match e {
            ClientError::Closed(code) => {
                if let Ok(mut m) = self.by_code.lock() {
                    *m.entry(*code).or_default() += 1;
                }
            }
            other => self.error(other.to_string()),
        }
    }

    /// Keep an error message (the first ten).
    pub fn error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock()
            && v.len() < 10
        {
            v.push(e);
        }
    }

    /// Count `n` sockets that ended elsewhere (in a child process of the tool).
    pub fn add_ended(&self, n: u64) {
        self.count.fetch_add(n, Ordering::Relaxed);
    }

    /// Add the close codes and errors reported by a child process (its ends are counted by
    /// [`Closes::add_ended`] as they happen).
    pub fn merge(&self, closed: &BTreeMap<u16, u64>, errors: &[String]) {
        if let Ok(mut m) = self.by_code.lock() {
            for (code, n) in closed {
                *m.entry(*code).or_default() += n;
            }
        }
        for e in errors {
            self.error(e.clone());
        }
    }

    /// Sockets that ended.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// (close codes, errors).
    pub fn take(&self) -> (BTreeMap<u16, u64>, Vec<String>) {
        (
            self.by_code.lock().map(|m| m.clone()).unwrap_or_default(),
            self.errors.lock().map(|v| v.clone()).unwrap_or_default(),
        )
    }
}

/// Connect `n` sockets, `concurrency` at a time; socket `i` opens `path(i)` with headers
/// `headers(i)`. Returns the sockets (in order, `None` for failures) and the connect report.
pub async fn connect_many(
    env: &Env,
    n: usize,
    concurrency: usize,
    path: impl Fn(usize) -> String,
    headers: impl Fn(usize) -> String,
    quiet: bool,
    closes: &Closes,
) -> (Vec<Option<Conn>>, Connect) {
    let mut conns: Vec<Option<Conn>> = (0..n).map(|_| None).collect();
    let report = connect_each(
        env,
        n,
        (concurrency, quiet),
        path,
        headers,
        closes,
        |i, c| conns[i] = Some(c),
    )
    .await;
    (conns, report)
}

/// [`connect_many`], handing each socket to `each` as soon as it is open (so that it can be
/// read at once: a socket left unread while tens of thousands more connect misses the
/// server's pings and is closed).
pub async fn connect_each(
    env: &Env,
    n: usize,
    (concurrency, quiet): (usize, bool),
    path: impl Fn(usize) -> String,
    headers: impl Fn(usize) -> String,
    closes: &Closes,
    mut each: impl FnMut(usize, Conn),
) -> Connect {
    type Done = (usize, Result<Conn, ClientError>, Duration);
    let pb = bar(quiet, n as u64, "connect");
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut set: JoinSet<Done> = JoinSet::new();
    let mut times = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut failed = 0;
    let mut take = |done: Done| {
        let (i, r, took) = done;
        let _ = times.record((took.as_micros() as u64).max(1));
        match r {
            Ok(c) => each(i, c),
            Err(e) => {
                failed += 1;
                closes.error(format!("socket {i}: {e}"));
            }
        }
        pb.inc(1);
    };
    let start = Instant::now();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore open");
        let endpoint = env.targets.server.clone();
        let (p, h, src) = (path(i), headers(i), env.source(i));
        set.spawn(async move {
            let t = Instant::now();
            let r = Conn::open(&endpoint, &p, &h, src).await;
            drop(permit);
            (i, r, t.elapsed())
        });
        while let Some(Ok(done)) = set.try_join_next() {
            take(done);
        }
    }
    while let Some(r) = set.join_next().await {
        if let Ok(done) = r {
            take(done);
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    pb.finish_and_clear();
    Connect {
        sockets: n,
        failed,
        seconds,
        per_socket_ms: Percentiles::from_us(&times),
        times_us: Some(times),
    }
}

/// Connect `n` sockets subscribed to the broadcast channel of `c.facility` and start a
/// [`receive`] task for each, counting the warm-up markers of `nonce`. Returns the tasks and
/// the connect report.
pub async fn subscribe_broadcast(
    env: &Env,
    n: usize,
    c: &crate::cli::Common,
    tracker: &Arc<Tracker>,
    shared: &Arc<Shared>,
    nonce: u64,
) -> (JoinSet<()>, Connect) {
    let path = format!("/ws/{}?subscribe-broadcast", c.facility);
    let mut tasks = JoinSet::new();
    let connect = connect_each(
        env,
        n,
        (c.connect_concurrency, c.quiet),
        |_| path.clone(),
        |_| String::new(),
        &shared.closes,
        |_, conn| {
            tasks.spawn(receive(conn, tracker.clone(), shared.clone(), nonce));
        },
    )
    .await;
    (tasks, connect)
}

/// CPU marks of the server, Redis and this tool, taken when the measured part of a run starts.
pub struct Usage {
    server: procfs::CpuMark,
    redis: procfs::CpuMark,
    tool: procfs::CpuMark,
}

impl Usage {
    /// Mark now.
    pub fn start(env: &Env) -> Self {
        Usage {
            server: procfs::cpu_mark(env.server_pid.unwrap_or(0)),
            redis: procfs::cpu_mark(env.redis_pid.unwrap_or(0)),
            tool: procfs::cpu_mark(std::process::id() as i32),
        }
    }

    /// Fill the report's CPU use since the marks, and the server's memory now.
    pub fn record(&self, env: &Env, report: &mut Report) {
        report.server_cpu = self.server.since(env.server_pid.unwrap_or(0));
        report.redis_cpu = self.redis.since(env.redis_pid.unwrap_or(0));
        report.tool_cpu = self.tool.since(std::process::id() as i32);
        if let Some(pid) = env.server_pid {
            report.server_memory = procfs::memory(pid);
        }
    }
}

/// Shared state of the receiving tasks besides the tracker.
#[derive(Debug, Default)]
pub struct Shared {
    /// Sockets that saw this run's warm-up marker.
    pub warmed: AtomicU64,
    /// Woken on each newly warmed socket.
    pub warm_notify: Notify,
    /// How sockets ended.
    pub closes: Closes,
    /// Rounds of warm-up markers published.
    pub warm_publishes: AtomicU64,
}

/// Fill `report` with what the receivers measured: `published` messages and `expected`
/// deliveries, rates and latencies from `first_ns` (the first send) to the last receipt, the
/// run's wall time since `start`, and how sockets ended.
pub fn finish(
    report: &mut Report,
    sum: &Summary,
    published: u64,
    expected: u64,
    first_ns: u64,
    start: Instant,
    shared: &Shared,
) {
    report.published = published;
    report.expected = expected;
    report.delivered = sum.delivered;
    report.lost = expected.saturating_sub(sum.delivered);
    report.disorder = sum.disorder;
    report.seconds = sum.last_recv_ns.saturating_sub(first_ns) as f64 / 1e9;
    if report.seconds > 0.0 {
        report.deliveries_per_sec = sum.delivered as f64 / report.seconds;
    }
    report.total_seconds = start.elapsed().as_secs_f64();
    report.latency_ms = Percentiles::from_us(&sum.all);
    report.last_delivery_ms = Percentiles::from_us(&sum.last);
    let (closed, errors) = shared.closes.take();
    report.closed = closed;
    report.errors.extend(errors);
}

/// One socket's receiving loop: measured bodies go to the tracker, the first warm-up marker
/// of this run is counted, anything else (heartbeats, replays) is ignored. Runs until the
/// socket ends or the task is aborted.
pub async fn receive(mut conn: Conn, tracker: Arc<Tracker>, shared: Arc<Shared>, nonce: u64) {
    let warm = body::warmup(nonce);
    let mut rx = Receiver::default();
    let mut warmed = false;
    loop {
        match conn.recv().await {
            Ok(Message { body: b, .. }) => {
                if let Some(stamp) = body::decode(&b) {
                    tracker.record(&mut rx, stamp);
                } else if !warmed && b[..] == warm[..] {
                    warmed = true;
                    shared.warmed.fetch_add(1, Ordering::Relaxed);
                    shared.warm_notify.notify_waiters();
                }
            }
            Err(e) => {
                shared.closes.add(&e);
                return;
            }
        }
    }
}

/// How long a round of warm-up markers gets to arrive before the next round.
const WARM_ROUND: Duration = Duration::from_millis(250);

/// Wait until `want` sockets saw this run's warm-up marker, publishing it to every audience
/// every [`WARM_ROUND`] meanwhile. `Ok(false)` if they did not all by `deadline`. The markers published
/// are counted in `shared.warm_publishes`.
pub async fn warm_up(
    shared: &Shared,
    want: u64,
    deadline: Instant,
    (publisher, targets, facility): (&mut Publisher, &Targets, &str),
    audiences: &[Audience],
    nonce: u64,
) -> Result<bool, PublishError> {
    let marker = body::warmup(nonce);
    loop {
        if Instant::now() >= deadline {
            return Ok(false);
        }
        for a in audiences {
            publisher.publish(targets, facility, a, &marker).await?;
        }
        shared.warm_publishes.fetch_add(1, Ordering::Relaxed);
        // Each round is a fan-out itself: wait for it to arrive rather than pile rounds up.
        let round = (Instant::now() + WARM_ROUND).min(deadline);
        loop {
            let notified = shared.warm_notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let warmed = shared.warmed.load(Ordering::Relaxed);
            if warmed + shared.closes.count() >= want {
                return Ok(warmed >= want);
            }
            if tokio::time::timeout_at(round.into(), notified)
                .await
                .is_err()
            {
                break;
            }
        }
    }
}

/// A nonce for this run's warm-up markers (so stored markers of older runs do not count).
pub fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}
