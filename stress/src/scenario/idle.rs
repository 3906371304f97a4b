//! `idle`: N sockets connect and stay, answering the server's pings, while the server's
//! memory (RSS and PSS of the master and every worker) is read before and after. The
//! difference divided by N is the memory an idle socket costs; sockets the server closed
//! while held count as failures.
//!
//! The open-files limit is per process, on both sides: [`Plan`] splits the sockets over
//! child processes of the tool ([`super::shard`]) when one process cannot hold them all, and
//! gives a started server enough workers that none needs more than 3/4 of the limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::shard::{Ended, Shards};
use super::{Shared, subscribe_broadcast};
use crate::cli::Idle;
use crate::env::{self, Env, cpus};
use crate::launch;
use crate::procfs;
use crate::report::{MemoryReport, Report};
use crate::tracker::Tracker;

/// Time for the server to finish the sessions' start-up (replay, first reads) before the
/// memory is read.
const SETTLE: Duration = Duration::from_millis(500);
/// Part of the hard open-files limit one process of the tool fills with sockets, percent.
const TOOL_SHARE_PERCENT: u64 = 90;
/// Part of it one worker of a started server fills, percent.
const WORKER_SHARE_PERCENT: u64 = 75;

/// How a run's sockets are laid out over processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Sockets per process of the tool, at most.
    pub per_process: usize,
    /// Processes of the tool holding sockets (1: this one; more: that many children).
    pub processes: usize,
    /// Workers of a started server.
    pub workers: usize,
}

impl Plan {
    /// The plan for `a` under the hard open-files limit `hard` on a machine of `cpus` CPUs.
    pub fn new(a: &Idle, hard: u64, cpus: usize) -> Plan {
        let share = |percent: u64| (hard.saturating_mul(percent) / 100).max(1);
        let tool = share(TOOL_SHARE_PERCENT).min(hard.saturating_sub(env::FILES_MARGIN));
        let per_process = a
            .per_process
            .unwrap_or(tool.min(usize::MAX as u64) as usize)
            .max(1);
        let per_worker = share(WORKER_SHARE_PERCENT).min(usize::MAX as u64) as usize;
        Plan {
            per_process,
            processes: a.sockets.div_ceil(per_process).max(1),
            workers: a
                .common
                .workers
                .unwrap_or_else(|| cpus.max(a.sockets.div_ceil(per_worker))),
        }
    }

    /// The plan for this machine.
    pub fn here(a: &Idle) -> Plan {
        Plan::new(a, launch::nofile_hard(), cpus())
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

/// Sockets held for the measurement: here, or in child processes.
enum Held {
    Here(tokio::task::JoinSet<()>, Arc<Shared>),
    Shards(Shards),
}

impl Held {
    /// Stop holding; how the connected sockets ended meanwhile.
    async fn finish(self, deadline: Instant) -> Ended {
        match self {
            Held::Here(mut tasks, shared) => {
                let ended = shared.closes.count();
                tasks.abort_all();
                let (closed, errors) = shared.closes.take();
                Ended {
                    ended,
                    closed,
                    errors,
                }
            }
            Held::Shards(mut s) => s.finish(deadline).await,
        }
    }
}

/// Run `idle` against `env` as `plan` says.
pub async fn run(a: &Idle, plan: &Plan, env: &Env) -> Report {
    let c = &a.common;
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let mut report = Report {
        scenario: "idle".into(),
        target: env.kind.into(),
        ..Report::default()
    };
    report.params.insert("sockets".into(), json!(a.sockets));
    report.params.insert("hold_s".into(), json!(a.hold));
    report
        .params
        .insert("tool_processes".into(), json!(plan.processes));
    if c.server_bin.is_some() {
        report.params.insert("workers".into(), json!(plan.workers));
    }
    let Some(pid) = env.server_pid else {
        report
            .errors
            .push("idle needs the server's pid (--server-pid or --server-bin)".into());
        return report;
    };
    let before = procfs::memory(pid);
    let slab_before = procfs::slab_kib();
    let held = if plan.processes > 1 {
        let sources = env::sources(c.sources, a.sockets);
        let start = Instant::now();
        let mut shards = match Shards::start(
            c,
            env.targets.server.addr,
            &plan.counts(a.sockets),
            &sources,
        ) {
            Ok(s) => s,
            Err(e) => {
                report.errors.push(format!("cannot start idle-shard: {e}"));
                return report;
            }
        };
        match shards.connected(start, deadline).await {
            Ok(connect) => report.connect = connect,
            Err(e) => {
                // Dropping `shards` kills the children; their stderr says why one failed.
                report.errors.push(e);
                return report;
            }
        }
        Held::Shards(shards)
    } else {
        let tracker = Tracker::new(1);
        let shared = Arc::new(Shared::default());
        let (tasks, connect, _) = subscribe_broadcast(env, a.sockets, c, &tracker, &shared).await;
        report.connect = connect;
        Held::Here(tasks, shared)
    };
    tokio::time::sleep(SETTLE).await;
    let cpu = procfs::cpu_mark(pid);
    let tool_cpu = procfs::cpu_mark(std::process::id() as i32);
    let pb = super::bar(c.quiet, a.hold.ceil() as u64, "hold (s)");
    let hold = Duration::from_secs_f64(a.hold.max(0.0));
    let t = tokio::time::Instant::now();
    while t.elapsed() < hold {
        tokio::time::sleep(Duration::from_millis(250).min(hold.saturating_sub(t.elapsed()))).await;
        pb.set_position(t.elapsed().as_secs());
    }
    pb.finish_and_clear();
    report.server_cpu = cpu.since(pid);
    report.tool_cpu = tool_cpu.since(std::process::id() as i32);
    let after = procfs::memory(pid);
    let slab_after = procfs::slab_kib();
    let open_files = procfs::open_files(pid);
    let ended = held
        .finish(deadline.max(Instant::now() + Duration::from_secs(10)))
        .await;
    let open = (a.sockets - report.connect.failed) as u64 - ended.ended.min(a.sockets as u64);
    let n = (open as f64).max(1.0);
    report.memory = Some(MemoryReport {
        before,
        after,
        rss_per_socket_kib: after.rss_kib.saturating_sub(before.rss_kib) as f64 / n,
        pss_per_socket_kib: after.pss_kib.saturating_sub(before.pss_kib) as f64 / n,
        kernel_slab_per_socket_kib: slab_after.saturating_sub(slab_before) as f64 / n,
        open_files,
    });
    report.server_memory = after;
    report.expected = a.sockets as u64;
    report.delivered = open;
    report.lost = report.expected - open;
    report.closed = ended.closed;
    report.errors.extend(ended.errors);
    report
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn idle(args: &[&str]) -> Idle {
        let mut argv = vec!["wsredis-stress", "idle"];
        argv.extend(args);
        match Cli::parse_from(argv).command {
            Command::Idle(a) => a,
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn fifty_thousand_sockets_under_a_limit_of_twenty_thousand() {
        let p = Plan::new(&idle(&["-n", "50000"]), 20_000, 2);
        assert_eq!(p.per_process, 18_000);
        assert_eq!(p.processes, 3);
        assert_eq!(p.counts(50_000), vec![16_667, 16_667, 16_666]);
        assert_eq!(p.held_here(50_000), 0);
        assert_eq!(p.workers, 4, "12,500 each, under 15,000");
    }

    #[test]
    fn small_runs_stay_in_one_process_with_a_worker_per_cpu() {
        let p = Plan::new(&idle(&["-n", "10000"]), 20_000, 2);
        assert_eq!(
            (p.processes, p.workers, p.held_here(10_000)),
            (1, 2, 10_000)
        );
        let p = Plan::new(&idle(&["-n", "300", "--per-process", "100"]), 20_000, 2);
        assert_eq!(p.counts(300), vec![100, 100, 100]);
        let p = Plan::new(&idle(&["-n", "50000", "--workers", "3"]), 20_000, 2);
        assert_eq!(p.workers, 3, "--workers wins");
        let p = Plan::new(&idle(&["-n", "2500"]), 2000, 2);
        assert_eq!(p.per_process, 976, "a small limit keeps the margin free");
        assert_eq!((p.processes, p.workers), (3, 2));
    }
}
