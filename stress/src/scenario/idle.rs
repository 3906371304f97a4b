//! `idle`: N sockets connect and stay, answering the server's pings, while the server's
//! memory (RSS and PSS of the master and every worker) is read before and after. The
//! difference divided by N is the memory an idle socket costs; sockets the server closed
//! while held count as failures.
//!
//! The open-files limit is per process, on both sides: [`Layout`] splits the sockets over
//! child processes of the tool ([`super::shard`]) when one process cannot hold them all, and
//! gives a started server enough workers that none needs more than 3/4 of the limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::Shared;
use super::shard::{Held, Layout};
use crate::cli::Idle;
use crate::env::Env;
use crate::procfs;
use crate::report::{MemoryReport, Report};
use crate::tracker::Tracker;

/// Time for the server to finish the sessions' start-up (replay, first reads) before the
/// memory is read.
const SETTLE: Duration = Duration::from_millis(500);

/// The layout of `a` on this machine.
pub fn layout(a: &Idle) -> Layout {
    Layout::here(a.sockets, a.per_process, a.common.workers)
}

/// Run `idle` against `env` laid out as `plan` says.
pub async fn run(a: &Idle, plan: &Layout, env: &Env) -> Report {
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
    let shared = Arc::new(Shared::default());
    let tracker = Tracker::new(plan.processes as u32);
    let connected = Held::connect(
        env,
        c,
        a.sockets,
        plan,
        (&tracker, &shared),
        super::nonce(),
        deadline,
    )
    .await;
    let Some(held) = Held::recorded(connected, &mut report) else {
        return report;
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
        .await
        .unwrap_or_else(|| {
            let (closed, errors) = shared.closes.take();
            super::shard::Ended {
                ended: shared.closes.count(),
                closed,
                errors,
                ..Default::default()
            }
        });
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

    /// The layout of `idle ARGS` under the hard limit `hard` on `cpus` CPUs.
    fn layout_of(args: &[&str], hard: u64, cpus: usize) -> Layout {
        let mut argv = vec!["wsredis-stress", "idle"];
        argv.extend(args);
        match Cli::parse_from(argv).command {
            Command::Idle(a) => Layout::new(a.sockets, a.per_process, a.common.workers, hard, cpus),
            other => panic!("parsed {other:?}"),
        }
    }

    #[test]
    fn fifty_thousand_sockets_under_a_limit_of_twenty_thousand() {
        let p = layout_of(&["-n", "50000"], 20_000, 2);
        assert_eq!(p.per_process, 18_000);
        assert_eq!(p.processes, 3);
        assert_eq!(p.counts(50_000), vec![16_667, 16_667, 16_666]);
        assert_eq!(p.held_here(50_000), 0);
        assert_eq!(p.workers, 4, "12,500 each, under 15,000");
    }

    #[test]
    fn small_runs_stay_in_one_process_with_a_worker_per_cpu() {
        let p = layout_of(&["-n", "10000"], 20_000, 2);
        assert_eq!(
            (p.processes, p.workers, p.held_here(10_000)),
            (1, 2, 10_000)
        );
        let p = layout_of(&["-n", "300", "--per-process", "100"], 20_000, 2);
        assert_eq!(p.counts(300), vec![100, 100, 100]);
        let p = layout_of(&["-n", "50000", "--workers", "3"], 20_000, 2);
        assert_eq!(p.workers, 3, "--workers wins");
        let p = layout_of(&["-n", "2500"], 2000, 2);
        assert_eq!(p.per_process, 976, "a small limit keeps the margin free");
        assert_eq!((p.processes, p.workers), (3, 2));
    }
}
