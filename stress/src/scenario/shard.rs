//! Subscribers over several processes of the tool. The open-files limit is per process, so a
//! run of more sockets than one process can hold (`idle`, `fanout` and the scenarios sharing
//! its code) starts child processes of this same binary (`shard`), each connecting and
//! receiving its share with the same code as a single-process run. [`Layout`] says how many
//! and how many workers a started server gets; [`Held`] is the subscribers wherever they are.
//!
//! The protocol is JSON lines ([`Line`]) on the child's stdout: `connected` once its sockets
//! are connected; then, while held, `progress` whenever its count of warmed (saw the run's
//! warm-up marker) or ended sockets changes and `done` for each message every one of its
//! sockets received (seq, send and last-receipt time, CLOCK_MONOTONIC); and, after the parent
//! writes a line to the child's stdin, `ended` with everything it measured. The child then
//! exits. The parent counts a message complete when every child said `done` for it, at the
//! latest of their times, which is the run's last delivery of it.
//!
//! Invariant: no child outlives the parent. A child exits when its stdin closes (the parent's
//! end of the pipe closes with the parent, however it ends), asks the kernel for SIGKILL when
//! the parent dies, and the parent kills every child it still holds when [`Shards`] drops.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::task::{JoinHandle, JoinSet};

use super::{Shared, subscribe_broadcast};
use crate::cli::{self, Common};
use crate::env::{self, Env};
use crate::launch;
use crate::report::{Connect, Percentiles};
use crate::tracker::{Completion, Summary, Tracker};

/// Part of the hard open-files limit one process of the tool fills with sockets, percent.
const TOOL_SHARE_PERCENT: u64 = 90;
/// Part of it one worker of a started server fills, percent.
const WORKER_SHARE_PERCENT: u64 = 75;
/// A child reports its progress at least this often (and on every completion or warm-up).
const TICK: Duration = Duration::from_millis(20);

/// How a run's sockets are laid out over processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Sockets per process of the tool, at most.
    pub per_process: usize,
    /// Processes of the tool holding sockets (1: this one; more: that many children).
    pub processes: usize,
    /// Workers of a started server.
    pub workers: usize,
}

impl Layout {
    /// The layout of `sockets` under the hard open-files limit `hard` on `cpus` CPUs; the
    /// command line's `per_process` (hidden, for tests) and `workers` win.
    pub fn new(
        sockets: usize,
        per_process: Option<usize>,
        workers: Option<usize>,
        hard: u64,
        cpus: usize,
    ) -> Layout {
        let share = |percent: u64| (hard.saturating_mul(percent) / 100).max(1);
        let tool = share(TOOL_SHARE_PERCENT).min(hard.saturating_sub(env::FILES_MARGIN));
        let per_process = per_process
            .unwrap_or(tool.min(usize::MAX as u64) as usize)
            .max(1);
        let per_worker = share(WORKER_SHARE_PERCENT).min(usize::MAX as u64) as usize;
        Layout {
            per_process,
            processes: sockets.div_ceil(per_process).max(1),
            workers: workers.unwrap_or_else(|| cpus.max(sockets.div_ceil(per_worker))),
        }
    }

    /// The layout on this machine.
    pub fn here(sockets: usize, per_process: Option<usize>, workers: Option<usize>) -> Layout {
        Layout::new(
            sockets,
            per_process,
            workers,
            launch::nofile_hard(),
            env::cpus(),
        )
    }

    /// Sockets this process holds itself.
    pub fn held_here(&self, sockets: usize) -> usize {
        if self.processes > 1 { 0 } else { sockets }
    }

    /// Sockets of each child process (as even as can be).
    pub fn counts(&self, sockets: usize) -> Vec<usize> {
        let (q, r) = (sockets / self.processes, sockets % self.processes);
        (0..self.processes)
            .map(|k| q + usize::from(k < r))
            .collect()
    }
}

/// The child's first line, once its sockets are connected.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Connected {
    /// Sockets it tried.
    pub sockets: usize,
    /// Sockets that failed to connect or upgrade.
    pub failed: usize,
    /// Connect and upgrade time per socket: (microseconds, count) pairs of its histogram.
    pub times_us: Vec<(u64, u64)>,
}

/// The child's running counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Sockets that saw the run's warm-up marker.
    pub warmed: u64,
    /// Connected sockets that ended (closed by the server, or an error).
    pub ended: u64,
}

/// The child's last line: what it measured and how its connected sockets ended.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ended {
    /// Connected sockets that ended (closed by the server, or an error).
    pub ended: u64,
    /// Of those, the ones closed with a close code, by code.
    pub closed: BTreeMap<u16, u64>,
    /// The first errors (failed connects included).
    pub errors: Vec<String>,
    /// Measured deliveries.
    pub delivered: u64,
    /// Duplicates or reorderings.
    pub disorder: u64,
    /// Latency of every delivery: (microseconds, count) pairs of its histogram.
    pub latency_us: Vec<(u64, u64)>,
    /// First receipt, ns (CLOCK_MONOTONIC).
    pub first_recv_ns: Option<u64>,
    /// Last receipt, ns.
    pub last_recv_ns: u64,
}

impl Ended {
    /// The deliveries measured, with `last` (the last-delivery histogram, kept by the
    /// parent) as a tracker summary.
    pub fn summary(&self, last: Histogram<u64>) -> Summary {
        let mut all = last.clone();
        all.reset();
        for &(v, n) in &self.latency_us {
            let _ = all.record_n(v.max(1), n);
        }
        Summary {
            delivered: self.delivered,
            disorder: self.disorder,
            all,
            last,
            first_recv_ns: self.first_recv_ns,
            last_recv_ns: self.last_recv_ns,
        }
    }
}

/// One line from a child.
#[derive(Debug, Serialize, Deserialize)]
// Externally tagged (`{"done":{…}}`): an internally tagged enum is buffered before it is
// decoded, and the buffer turns `closed`'s integer keys into strings a u16 refuses.
#[serde(rename_all = "snake_case")]
pub enum Line {
    /// See [`Connected`].
    Connected(Connected),
    /// See [`Progress`].
    Progress(Progress),
    /// Every socket of the child received this message.
    Done(Completion),
    /// See [`Ended`].
    Ended(Ended),
}

fn buckets(h: &Histogram<u64>) -> Vec<(u64, u64)> {
    h.iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect()
}

/// The child: connect `a.count` broadcast subscribers to `--url`, report them, run their
/// receivers (reporting progress and completed messages) until a line or EOF arrives on
/// stdin, report what they measured.
pub async fn child(a: &cli::Shard, env: &Env) -> std::io::Result<()> {
    let tracker = Tracker::logging(a.count as u32);
    let shared = Arc::new(Shared::default());
    let (mut tasks, connect) =
        subscribe_broadcast(env, a.count, &a.common, &tracker, &shared, a.nonce).await;
    write_line(&Line::Connected(Connected {
        sockets: connect.sockets,
        failed: connect.failed,
        times_us: connect.times_us.as_ref().map(buckets).unwrap_or_default(),
    }))?;
    // Anything (or EOF, when the parent is gone) ends the hold.
    let mut stop = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    });
    let mut sent = Progress::default();
    loop {
        let stopped = tokio::select! {
            _ = &mut stop => true,
            () = tracker.progress.notified() => false,
            () = shared.warm_notify.notified() => false,
            () = tokio::time::sleep(TICK) => false,
        };
        report_progress(&tracker, &shared, &mut sent)?;
        if stopped {
            break;
        }
    }
    let (closed, errors) = shared.closes.take();
    let sum = tracker.summary();
    let ended = Ended {
        ended: shared.closes.count(),
        closed,
        errors,
        delivered: sum.delivered,
        disorder: sum.disorder,
        latency_us: buckets(&sum.all),
        first_recv_ns: sum.first_recv_ns,
        last_recv_ns: sum.last_recv_ns,
    };
    tasks.abort_all();
    write_line(&Line::Ended(ended))
}

/// Write the completions since the last call, and the counts if they changed since `sent`.
fn report_progress(tracker: &Tracker, shared: &Shared, sent: &mut Progress) -> std::io::Result<()> {
    for c in tracker.take_completions() {
        write_line(&Line::Done(c))?;
    }
    let now = Progress {
        warmed: shared.warmed.load(Ordering::Relaxed),
        ended: shared.closes.count(),
    };
    if now != *sent {
        write_line(&Line::Progress(now))?;
        *sent = now;
    }
    Ok(())
}

/// One JSON line on stdout.
fn write_line(v: &Line) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    out.write_all(&line)?;
    out.flush()
}

/// Ask the kernel to kill this process when its parent dies (the child calls this first).
pub fn die_with_parent() {
    #[cfg(target_os = "linux")]
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
}

/// Where the children's running reports go in the parent: warmed and ended counts into the
/// run's [`Shared`], completions into its [`Tracker`] once every child reported them.
struct Sink {
    tracker: Arc<Tracker>,
    shared: Arc<Shared>,
    children: u32,
    /// Each child's last progress.
    seen: Mutex<Vec<Progress>>,
    /// Messages some children completed: seq → (children done, send ns, latest done ns).
    partial: Mutex<HashMap<u64, (u32, u64, u64)>>,
}

impl Sink {
    fn progress(&self, k: usize, p: Progress) {
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let old = std::mem::replace(&mut seen[k], p);
        self.shared
            .warmed
            .fetch_add(p.warmed.saturating_sub(old.warmed), Ordering::Relaxed);
        self.shared
            .closes
            .add_ended(p.ended.saturating_sub(old.ended));
        self.shared.warm_notify.notify_waiters();
    }

    fn done(&self, c: Completion) {
        let complete = {
            let Ok(mut partial) = self.partial.lock() else {
                return;
            };
            let e = partial.entry(c.seq).or_insert((0, c.sent_ns, 0));
            e.0 += 1;
            e.2 = e.2.max(c.done_ns);
            (e.0 >= self.children).then(|| e.2.saturating_sub(e.1))
        };
        if let Some(ns) = complete {
            if let Ok(mut partial) = self.partial.lock() {
                partial.remove(&c.seq);
            }
            self.tracker.complete(c.seq, ns / 1000);
        }
    }
}

/// One started child.
struct Shard {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Option<Lines<BufReader<ChildStdout>>>,
    /// Reads its lines after `connected`, until `ended`.
    pump: Option<JoinHandle<Result<Ended, String>>>,
}

/// The children of one run; every one still running is killed when this drops.
pub struct Shards {
    shards: Vec<Shard>,
    sink: Arc<Sink>,
}

impl Shards {
    /// Start `counts.len()` children; child `k` holds `counts[k]` sockets and its socket `i`
    /// uses source address `sources[(first_k + i) % len]`, as socket `first_k + i` of a
    /// single-process run would. They connect at the same time, each with its part of
    /// `c.connect_concurrency`, and count the warm-up markers of `nonce`. Their reports go
    /// to `tracker` (made for `counts.len()` receivers) and `shared`.
    pub fn start(
        c: &Common,
        server: std::net::SocketAddr,
        counts: &[usize],
        sources: &[Option<IpAddr>],
        nonce: u64,
        (tracker, shared): (&Arc<Tracker>, &Arc<Shared>),
    ) -> std::io::Result<Shards> {
        let exe = std::env::current_exe()?;
        let concurrency = c.connect_concurrency.div_ceil(counts.len().max(1)).max(1);
        let mut shards = Shards {
            shards: Vec::new(),
            sink: Arc::new(Sink {
                tracker: tracker.clone(),
                shared: shared.clone(),
                children: counts.len() as u32,
                seen: Mutex::new(vec![Progress::default(); counts.len()]),
                partial: Mutex::new(HashMap::new()),
            }),
        };
        let mut first = 0;
        for &count in counts {
            let rotated: Vec<String> = (0..sources.len())
                .filter_map(|j| sources[(first + j) % sources.len()])
                .map(|ip| ip.to_string())
                .collect();
            let mut cmd = Command::new(&exe);
            cmd.arg("shard")
                .args(["--url", &server.to_string()])
                .args(["--facility", &c.facility])
                .args(["--connect-concurrency", &concurrency.to_string()])
                .args(["--threads", "1", "--quiet"])
                .args(["--count", &count.to_string()])
                .args(["--nonce", &nonce.to_string()]);
            if !rotated.is_empty() {
                cmd.arg("--source").arg(rotated.join(","));
            }
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().expect("piped stdout");
            shards.shards.push(Shard {
                child,
                stdin,
                lines: Some(BufReader::new(stdout).lines()),
                pump: None,
            });
            first += count;
        }
        Ok(shards)
    }

    /// How many children.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.shards.is_empty()
    }

    /// Wait until every child reported its sockets connected (by `deadline`), merge their
    /// reports into one for every socket (`start`: when the children were started), and
    /// from then on pass their running reports to the run's tracker and shared state.
    pub async fn connected(
        &mut self,
        start: Instant,
        deadline: Instant,
    ) -> Result<Connect, String> {
        let mut reports = Vec::new();
        for (k, s) in self.shards.iter_mut().enumerate() {
            let lines = s.lines.as_mut().expect("lines before connected");
            match read_line(lines, deadline).await {
                Ok(Line::Connected(c)) => reports.push(c),
                Ok(other) => return Err(format!("shard {k}: {other:?} before connected")),
                Err(e) => return Err(format!("shard {k}: {e}")),
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        for (k, s) in self.shards.iter_mut().enumerate() {
            let mut lines = s.lines.take().expect("lines before connected");
            let sink = self.sink.clone();
            s.pump = Some(tokio::spawn(async move {
                loop {
                    match read_line(&mut lines, far_future()).await {
                        Ok(Line::Progress(p)) => sink.progress(k, p),
                        Ok(Line::Done(c)) => sink.done(c),
                        Ok(Line::Ended(e)) => return Ok(e),
                        Ok(Line::Connected(_)) => return Err("connected twice".into()),
                        Err(e) => return Err(e),
                    }
                }
            }));
        }
        let mut times = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let (mut sockets, mut failed) = (0, 0);
        for c in &reports {
            sockets += c.sockets;
            failed += c.failed;
            for &(v, n) in &c.times_us {
                let _ = times.record_n(v.max(1), n);
            }
        }
        Ok(Connect {
            sockets,
            failed,
            seconds,
            per_socket_ms: Percentiles::from_us(&times),
            times_us: Some(times),
        })
    }

    /// End the hold: ask every child what it measured, merge the answers, and wait for the
    /// children to exit (killing any that does not by `deadline`).
    pub async fn finish(&mut self, deadline: Instant) -> Ended {
        let mut all = Ended::default();
        for s in &mut self.shards {
            if let Some(stdin) = &mut s.stdin {
                let _ = stdin.write_all(b"report\n").await;
                let _ = stdin.flush().await;
            }
        }
        for (k, s) in self.shards.iter_mut().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = match s.pump.take() {
                None => Err("never connected".into()),
                Some(pump) => match tokio::time::timeout(left, pump).await {
                    Err(_) => Err("no report before the run's timeout".into()),
                    Ok(Err(e)) => Err(format!("its reader failed: {e}")),
                    Ok(Ok(r)) => r,
                },
            };
            match got {
                Ok(e) => {
                    all.ended += e.ended;
                    for (code, n) in e.closed {
                        *all.closed.entry(code).or_default() += n;
                    }
                    all.errors.extend(e.errors.into_iter().take(10));
                    all.delivered += e.delivered;
                    all.disorder += e.disorder;
                    all.latency_us.extend(e.latency_us);
                    all.first_recv_ns = match (all.first_recv_ns, e.first_recv_ns) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    all.last_recv_ns = all.last_recv_ns.max(e.last_recv_ns);
                }
                Err(e) => all.errors.push(format!("shard {k}: {e}")),
            }
            s.stdin = None;
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, s.child.wait()).await.is_err() {
                let _ = s.child.kill().await;
            }
        }
        all.errors.truncate(10);
        all
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        for s in &mut self.shards {
            let _ = s.child.start_kill();
            if let Some(p) = &s.pump {
                p.abort();
            }
        }
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(365 * 24 * 3600)
}

async fn read_line(
    lines: &mut Lines<BufReader<ChildStdout>>,
    deadline: Instant,
) -> Result<Line, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left.max(Duration::from_millis(1)), lines.next_line()).await {
        Err(_) => Err("no report before the run's timeout".into()),
        Ok(Err(e)) => Err(format!("reading its report: {e}")),
        Ok(Ok(None)) => Err("exited without a report".into()),
        Ok(Ok(Some(line))) => serde_json::from_str(&line).map_err(|e| {
            let start: String = line.chars().take(200).collect();
            format!("bad report ({e}): {start}…")
        }),
    }
}

/// A run's subscribers, held here or in child processes.
pub enum Held {
    /// Receiving tasks of this process (the run's tracker and shared state are theirs).
    Here(JoinSet<()>),
    /// Child processes (reporting into the run's tracker and shared state).
    Shards(Shards),
}

impl Held {
    /// Connect `n` broadcast subscribers of `c.facility` laid out as `layout` says, counting
    /// into `tracker` and `shared` (here: a tracker for `n` receivers; in children: one for
    /// `layout.processes` of them, each child counting as one), looking for the warm-up
    /// markers of `nonce`. `Err` when a child could not start or report.
    pub async fn connect(
        env: &Env,
        c: &Common,
        n: usize,
        layout: &Layout,
        (tracker, shared): (&Arc<Tracker>, &Arc<Shared>),
        nonce: u64,
        deadline: Instant,
    ) -> Result<(Held, Connect), String> {
        if layout.processes <= 1 {
            let (tasks, connect) = subscribe_broadcast(env, n, c, tracker, shared, nonce).await;
            return Ok((Held::Here(tasks), connect));
        }
        let sources = env::sources(c.sources, n);
        let start = Instant::now();
        let mut shards = Shards::start(
            c,
            env.targets.server.addr,
            &layout.counts(n),
            &sources,
            nonce,
            (tracker, shared),
        )
        .map_err(|e| format!("cannot start the shard processes: {e}"))?;
        // On an error, dropping `shards` kills the children; their stderr says why.
        let connect = shards.connected(start, deadline).await?;
        Ok((Held::Shards(shards), connect))
    }

    /// The outcome of [`Held::connect`] into `report`: its connect numbers, or its error (then
    /// `None`: the run cannot go on).
    pub fn recorded(
        connected: Result<(Held, Connect), String>,
        report: &mut crate::report::Report,
    ) -> Option<Held> {
        match connected {
            Ok((held, connect)) => {
                report.connect = connect;
                Some(held)
            }
            Err(e) => {
                report.errors.push(e);
                None
            }
        }
    }

    /// Processes of the tool holding the subscribers.
    pub fn processes(&self) -> usize {
        match self {
            Held::Here(_) => 1,
            Held::Shards(s) => s.len(),
        }
    }

    /// Stop holding. Here: `None` (the run's tracker and shared state have it all); in
    /// children: what they measured and how their sockets ended, merged.
    pub async fn finish(self, deadline: Instant) -> Option<Ended> {
        match self {
            Held::Here(mut tasks) => {
                tasks.abort_all();
                None
            }
            Held::Shards(mut s) => Some(s.finish(deadline).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_survives_the_pipe() {
        let ended = Ended {
            ended: 3,
            closed: BTreeMap::from([(1001, 2), (1006, 1)]),
            latency_us: vec![(250, 7)],
            ..Ended::default()
        };
        let text = serde_json::to_string(&Line::Ended(ended)).unwrap();
        match serde_json::from_str(&text).unwrap() {
            Line::Ended(e) => {
                assert_eq!(e.closed, BTreeMap::from([(1001, 2), (1006, 1)]), "{text}");
                assert_eq!(e.latency_us, vec![(250, 7)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_message_completes_when_every_child_has_it_at_the_latest_time() {
        let tracker = Tracker::new(2);
        let sink = Sink {
            tracker: tracker.clone(),
            shared: Arc::new(Shared::default()),
            children: 2,
            seen: Mutex::new(vec![Progress::default(); 2]),
            partial: Mutex::new(HashMap::new()),
        };
        let done = |seq, done_ns| Completion {
            seq,
            sent_ns: 1_000_000,
            done_ns,
        };
        sink.done(done(0, 3_000_000));
        assert_eq!(tracker.completed(), 0, "one child of two");
        sink.done(done(0, 2_000_000));
        assert_eq!(tracker.completed(), 1);
        let last = tracker.summary().last;
        assert_eq!(
            (last.len(), last.max() / 100 * 100),
            (1, 2000),
            "the later child's time, 2 ms after the send"
        );
        sink.progress(
            0,
            Progress {
                warmed: 5,
                ended: 1,
            },
        );
        sink.progress(
            1,
            Progress {
                warmed: 4,
                ended: 0,
            },
        );
        sink.progress(
            0,
            Progress {
                warmed: 6,
                ended: 1,
            },
        );
        assert_eq!(sink.shared.warmed.load(Ordering::Relaxed), 10);
        assert_eq!(sink.shared.closes.count(), 1);
    }
}
