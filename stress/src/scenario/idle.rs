//! `idle`: N sockets connect and stay, answering the server's pings, while the server's
//! memory (RSS and PSS of the master and every worker) is read before and after. The
//! difference divided by N is the memory an idle socket costs; sockets the server closed
//! while held count as failures.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::{Shared, subscribe_broadcast};
use crate::cli::Idle;
use crate::env::Env;
use crate::procfs;
use crate::report::{MemoryReport, Report};
use crate::tracker::Tracker;

/// Time for the server to finish the sessions' start-up (replay, first reads) before the
/// memory is read.
const SETTLE: Duration = Duration::from_millis(500);

/// Run `idle` against `env`.
pub async fn run(a: &Idle, env: &Env) -> Report {
    let c = &a.common;
    let mut report = Report {
        scenario: "idle".into(),
        target: env.kind.into(),
        ..Report::default()
    };
    report.params.insert("sockets".into(), json!(a.sockets));
    report.params.insert("hold_s".into(), json!(a.hold));
    let Some(pid) = env.server_pid else {
        report
            .errors
            .push("idle needs the server's pid (--server-pid or --server-bin)".into());
        return report;
    };
    let before = procfs::memory(pid);
    let slab_before = procfs::slab_kib();
    let tracker = Tracker::new(1);
    let shared = Arc::new(Shared::default());
    let (mut tasks, connect, _) = subscribe_broadcast(env, a.sockets, c, &tracker, &shared).await;
    report.connect = connect;
    tokio::time::sleep(SETTLE).await;
    let cpu = procfs::cpu_mark(pid);
    let pb = super::bar(c.quiet, a.hold.ceil() as u64, "hold (s)");
    let hold = Duration::from_secs_f64(a.hold.max(0.0));
    let t = tokio::time::Instant::now();
    while t.elapsed() < hold {
        tokio::time::sleep(Duration::from_millis(250).min(hold.saturating_sub(t.elapsed()))).await;
        pb.set_position(t.elapsed().as_secs());
    }
    pb.finish_and_clear();
    report.server_cpu = cpu.since(pid);
    let after = procfs::memory(pid);
    let slab_after = procfs::slab_kib();
    let open = (a.sockets - report.connect.failed) as u64 - shared.closes.count();
    let n = (open as f64).max(1.0);
    report.memory = Some(MemoryReport {
        before,
        after,
        rss_per_socket_kib: after.rss_kib.saturating_sub(before.rss_kib) as f64 / n,
        pss_per_socket_kib: after.pss_kib.saturating_sub(before.pss_kib) as f64 / n,
        kernel_slab_per_socket_kib: slab_after.saturating_sub(slab_before) as f64 / n,
    });
    report.server_memory = after;
    report.expected = a.sockets as u64;
    report.delivered = open;
    report.lost = report.expected - open;
    tasks.abort_all();
    let (closed, errors) = shared.closes.take();
    report.closed = closed;
    report.errors.extend(errors);
    report
}
