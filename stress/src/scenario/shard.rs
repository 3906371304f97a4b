//! `idle` over several processes of the tool: the open-files limit is per process, so a run
//! of more sockets than one process can hold starts child processes of this same binary
//! (`idle-shard`), each holding its share with the same code as a single-process run.
//!
//! The protocol is one JSON line each way on the child's stdout: [`Connected`] when its
//! sockets are connected, then, after the parent writes a line to the child's stdin,
//! [`Ended`] with how many of them the server closed meanwhile. The child then exits.
//!
//! Invariant: no child outlives the parent. A child exits when its stdin closes (the parent's
//! end of the pipe closes with the parent, however it ends), asks the kernel for SIGKILL when
//! the parent dies, and the parent kills every child it still holds when [`Shards`] drops.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use super::{Shared, subscribe_broadcast};
use crate::cli::{Common, IdleShard};
use crate::env::Env;
use crate::report::{Connect, Percentiles};
use crate::tracker::Tracker;

/// The child's line once its sockets are connected.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Connected {
    /// Sockets it tried.
    pub sockets: usize,
    /// Sockets that failed to connect or upgrade.
    pub failed: usize,
    /// Connect and upgrade time per socket: (microseconds, count) pairs of its histogram.
    pub times_us: Vec<(u64, u64)>,
}

/// The child's last line: how its connected sockets ended while held.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Ended {
    /// Connected sockets that ended (closed by the server, or an error).
    pub ended: u64,
    /// Of those, the ones closed with a close code, by code.
    pub closed: BTreeMap<u16, u64>,
    /// The first errors (failed connects included).
    pub errors: Vec<String>,
}

/// The child: connect `a.count` broadcast subscribers to `--url`, report them, hold them
/// (answering pings) until a line or EOF arrives on stdin, report how they ended.
pub async fn child(a: &IdleShard, env: &Env) -> std::io::Result<()> {
    let tracker = Tracker::new(1);
    let shared = Arc::new(Shared::default());
    let (mut tasks, connect, _) =
        subscribe_broadcast(env, a.count, &a.common, &tracker, &shared).await;
    let times_us = connect
        .times_us
        .as_ref()
        .map(|h| {
            h.iter_recorded()
                .map(|v| (v.value_iterated_to(), v.count_at_value()))
                .collect()
        })
        .unwrap_or_default();
    let connected = Connected {
        sockets: connect.sockets,
        failed: connect.failed,
        times_us,
    };
    write_line(&connected)?;
    // Anything (or EOF, when the parent is gone) ends the hold.
    let _ = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)
    })
    .await;
    let (closed, errors) = shared.closes.take();
    let ended = Ended {
        ended: shared.closes.count(),
        closed,
        errors,
    };
    tasks.abort_all();
    write_line(&ended)
}

/// One JSON line on stdout (the parent reads the children in turn: a child whose line fills
/// the pipe waits here until then).
fn write_line<T: Serialize>(v: &T) -> std::io::Result<()> {
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

/// One started child.
struct Shard {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
    connected: Option<Connected>,
}

/// The children of one `idle` run; every one still running is killed when this drops.
pub struct Shards {
    shards: Vec<Shard>,
}

impl Shards {
    /// Start `counts.len()` children; child `k` holds `counts[k]` sockets and its socket `i`
    /// uses source address `sources[(first_k + i) % len]`, as socket `first_k + i` of a
    /// single-process run would. They connect at the same time, each with its part of
    /// `c.connect_concurrency`.
    pub fn start(
        c: &Common,
        server: std::net::SocketAddr,
        counts: &[usize],
        sources: &[Option<IpAddr>],
    ) -> std::io::Result<Shards> {
        let exe = std::env::current_exe()?;
        let concurrency = c.connect_concurrency.div_ceil(counts.len().max(1)).max(1);
        let mut shards = Shards { shards: Vec::new() };
        let mut first = 0;
        for &count in counts {
            let rotated: Vec<String> = (0..sources.len())
                .filter_map(|j| sources[(first + j) % sources.len()])
                .map(|ip| ip.to_string())
                .collect();
            let mut cmd = Command::new(&exe);
            cmd.arg("idle-shard")
                .args(["--url", &server.to_string()])
                .args(["--facility", &c.facility])
                .args(["--connect-concurrency", &concurrency.to_string()])
                .args(["--threads", "1", "--quiet"])
                .args(["--count", &count.to_string()]);
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
                lines: BufReader::new(stdout).lines(),
                connected: None,
            });
            first += count;
        }
        Ok(shards)
    }

    /// Wait until every child reported its sockets connected (by `deadline`), and merge
    /// their reports into one for every socket; `start` is when the children were started.
    pub async fn connected(
        &mut self,
        start: Instant,
        deadline: Instant,
    ) -> Result<Connect, String> {
        for (k, s) in self.shards.iter_mut().enumerate() {
            let c: Connected = read_line(&mut s.lines, deadline)
                .await
                .map_err(|e| format!("idle-shard {k}: {e}"))?;
            s.connected = Some(c);
        }
        let seconds = start.elapsed().as_secs_f64();
        let mut times = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
        let (mut sockets, mut failed) = (0, 0);
        for c in self.shards.iter().filter_map(|s| s.connected.as_ref()) {
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

    /// End the hold: ask every child how its sockets ended, merge the answers, and wait for
    /// the children to exit (killing any that does not by `deadline`).
    pub async fn finish(&mut self, deadline: Instant) -> Ended {
        let mut all = Ended::default();
        for s in &mut self.shards {
            if let Some(stdin) = &mut s.stdin {
                let _ = stdin.write_all(b"report\n").await;
                let _ = stdin.flush().await;
            }
        }
        for (k, s) in self.shards.iter_mut().enumerate() {
            match read_line::<Ended>(&mut s.lines, deadline).await {
                Ok(e) => {
                    all.ended += e.ended;
                    for (code, n) in e.closed {
                        *all.closed.entry(code).or_default() += n;
                    }
                    all.errors.extend(e.errors.into_iter().take(10));
                }
                Err(e) => all.errors.push(format!("idle-shard {k}: {e}")),
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
        }
    }
}

async fn read_line<T: for<'de> Deserialize<'de>>(
    lines: &mut Lines<BufReader<ChildStdout>>,
    deadline: Instant,
) -> Result<T, String> {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left.max(Duration::from_millis(1)), lines.next_line()).await {
        Err(_) => Err("no report before the run's timeout".into()),
        Ok(Err(e)) => Err(format!("reading its report: {e}")),
        Ok(Ok(None)) => Err("exited without a report".into()),
        Ok(Ok(Some(line))) => {
            serde_json::from_str(&line).map_err(|e| format!("bad report ({e}): {line}"))
        }
    }
}
