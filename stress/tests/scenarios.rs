//! Every scenario at a small size (a few hundred sockets) against the real `wsredis` binary
//! and a private redis-server: it must work and lose nothing. No timing is asserted here; the
//! numbers belong in the README, measured with `make stress`.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// `target/<profile>/wsredis`, next to this test's own binary (`target/<profile>/deps/…`).
/// `cargo test --workspace` (what `make test` runs) always builds it first, as the `wsredis`
/// package has integration tests; a lone `cargo test -p wsredis-stress` builds it here.
fn server_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>");
    let bin = dir.join("wsredis");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "wsredis", "--bin", "wsredis"])
            .status()
            .expect("run cargo build -p wsredis");
        assert!(status.success(), "cargo build -p wsredis failed");
    }
    assert!(
        bin.exists(),
        "{} is missing; run `cargo build -p wsredis`",
        bin.display()
    );
    bin
}

/// Run `wsredis-stress ARGS --server-bin … --json` and return its report; the exit status
/// must be 0 (nothing lost).
fn run(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_wsredis-stress"))
        .args(args)
        .arg("--server-bin")
        .arg(server_bin())
        .args(["--workers", "2", "--json", "--quiet", "--timeout", "60"])
        .output()
        .expect("run wsredis-stress");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{stdout}"))
}

fn assert_all_delivered(r: &Value, expected: u64) {
    assert_eq!(r["expected"], expected, "{r:#}");
    assert_eq!(r["delivered"], expected, "{r:#}");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["disorder"], 0);
}

#[test]
fn seed_replays_the_stored_message_to_every_subscriber() {
    let r = run(&["seed", "-n", "200"]);
    assert_all_delivered(&r, 200);
}

#[test]
fn seed_live_reaches_every_connected_subscriber() {
    let r = run(&["seed-live", "-n", "200"]);
    assert_all_delivered(&r, 200);
    assert_eq!(r["last_delivery_ms"]["count"], 1);
}

#[test]
fn fanout_from_every_publisher() {
    for publisher in ["ws", "redis", "api"] {
        let r = run(&[
            "fanout",
            "-n",
            "200",
            "-m",
            "20",
            "-r",
            "200",
            "--publisher",
            publisher,
        ]);
        assert_all_delivered(&r, 4000);
        assert_eq!(r["last_delivery_ms"]["count"], 20, "{publisher}");
    }
}

#[test]
fn throughput_with_the_baseline_alongside() {
    let r = run(&[
        "throughput",
        "-n",
        "100",
        "-d",
        "1",
        "-w",
        "16",
        "--baseline",
    ]);
    assert_eq!(r["lost"], 0, "{r:#}");
    assert!(r["published"].as_u64().unwrap() > 0);
    assert_eq!(r["delivered"], r["expected"]);
    let base = &r["versus_baseline"];
    assert!(
        base["baseline_deliveries_per_sec"].as_f64().unwrap() > 0.0,
        "{r:#}"
    );
}

#[test]
fn sweep_runs_each_size_against_both_and_loses_nothing() {
    let r = run(&["sweep", "--sizes", "50,150", "-m", "10", "-r", "100"]);
    let points = r["points"].as_array().expect("points");
    assert_eq!(points.len(), 2, "{r:#}");
    for (p, n) in points.iter().zip([50u64, 150]) {
        assert_eq!(p["subscribers"], n);
        assert_eq!(p["ours"]["target"], "wsredis");
        assert_eq!(p["baseline"]["target"], "baseline");
        assert_all_delivered(&p["ours"], n * 10);
        assert_all_delivered(&p["baseline"], n * 10);
        assert_eq!(p["ours"]["last_delivery_ms"]["count"], 10);
    }
}

#[test]
fn idle_holds_every_socket_and_reads_the_memory() {
    let r = run(&["idle", "-n", "200", "--hold", "0.5"]);
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(
        r["params"]["tool_processes"], 1,
        "200 fit in this process: {r:#}"
    );
    let m = &r["memory"];
    assert!(m["after"]["rss_kib"].as_u64().unwrap() > 0, "{r:#}");
    assert_eq!(m["after"]["processes"], 3, "master and two workers");
}

#[test]
fn chat_delivers_each_message_to_its_one_user() {
    for publisher in ["redis", "api"] {
        let r = run(&["chat", "-u", "50", "-m", "300", "--publisher", publisher]);
        assert_all_delivered(&r, 300);
    }
}

#[test]
fn recovery_loses_and_duplicates_nothing_across_dropped_sockets() {
    let r = run(&[
        "recovery",
        "-n",
        "300",
        "-d",
        "3",
        "-r",
        "40",
        "--waves",
        "5",
        "--wave-percent",
        "20",
    ]);
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["disorder"], 0, "{r:#}");
    assert_eq!(r["delivered"], r["expected"], "{r:#}");
    assert!(r["published"].as_u64().unwrap() > 0, "{r:#}");
    let rec = &r["recovery"];
    assert_eq!(
        rec["dropped"], 300,
        "5 waves of 20 % drop every socket once: {r:#}"
    );
    assert_eq!(rec["recovered"], 300, "each reconnect recovers: {r:#}");
    assert_eq!(rec["recovery_failed"], 0, "{r:#}");
    assert_eq!(rec["duplicated"], 0, "{r:#}");
}

/// Run `args` (a scenario and its options) with 300 sockets over three child processes of
/// the tool (`--per-process 100`) from two source addresses, as a run past the open-files limit
/// does, and check that all three connected their 100 and the parent merged their timings.
fn run_in_three_processes(args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-n", "300", "--per-process", "100", "--sources", "2"]);
    let r = run(&all);
    assert_eq!(r["params"]["tool_processes"], 3, "{r:#}");
    assert_eq!(r["params"]["workers"], 2, "{r:#}");
    assert_eq!(r["connect"]["sockets"], 300, "{r:#}");
    assert_eq!(r["connect"]["failed"], 0, "{r:#}");
    assert_eq!(
        r["connect"]["per_socket_ms"]["count"], 300,
        "every child's connect times merged: {r:#}"
    );
    r
}

#[test]
fn idle_over_several_processes_counts_every_socket() {
    // --per-process 100 forces the path a run past the open-files limit takes: three child
    // processes of the tool, each holding 100 sockets, reporting to the parent; --sources 2
    // the one of a big run, whose sockets come from 127.0.0.2 and 127.0.0.3.
    let r = run_in_three_processes(&["idle", "--hold", "0.5"]);
    assert_eq!(r["expected"], 300, "{r:#}");
    assert_eq!(r["delivered"], 300, "all held to the end: {r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["closed"], serde_json::json!({}), "{r:#}");
    // The server holds them: its workers' open files grew by at least the 300 sockets.
    let files = r["memory"]["open_files"].as_array().expect("open files");
    assert_eq!(files.len(), 3, "master and two workers: {r:#}");
    let workers: u64 = files[1..].iter().map(|f| f.as_u64().unwrap()).sum();
    assert!(workers >= 300, "{r:#}");
}

#[test]
fn fanout_over_several_processes_delivers_every_message_once() {
    // --per-process 100 forces the path of a run past the open-files limit: three child
    // processes of the tool receive 100 subscribers each and report to the parent, which
    // publishes, merges the deliveries and finds each message's last delivery over all three.
    let r = run_in_three_processes(&["fanout", "-m", "10", "-r", "50"]);
    assert!(r["warmup_rounds"].as_u64().unwrap() >= 1, "{r:#}");
    assert_all_delivered(&r, 3000);
    assert_eq!(r["latency_ms"]["count"], 3000, "{r:#}");
    assert_eq!(
        r["last_delivery_ms"]["count"], 10,
        "each message complete once, over all three children: {r:#}"
    );
    // Sent in this process, received in the children: one clock, so plausible intervals.
    for h in ["latency_ms", "last_delivery_ms"] {
        let (p50, max) = (r[h]["p50"].as_f64().unwrap(), r[h]["max"].as_f64().unwrap());
        assert!(p50 > 0.0 && max < 10_000.0, "{h}: {r:#}");
    }
    assert!(
        r["last_delivery_ms"]["p50"].as_f64().unwrap() >= r["latency_ms"]["p50"].as_f64().unwrap(),
        "{r:#}"
    );
    assert!(r["deliveries_per_sec"].as_f64().unwrap() > 0.0, "{r:#}");
}

#[test]
fn throughput_over_several_processes_keeps_its_window() {
    // The windowed publisher waits for completions the children report, message by message.
    let r = run(&[
        "throughput",
        "-n",
        "200",
        "--per-process",
        "100",
        "-d",
        "1",
        "-w",
        "8",
    ]);
    assert_eq!(r["params"]["tool_processes"], 2, "{r:#}");
    assert_eq!(r["lost"], 0, "{r:#}");
    assert_eq!(r["disorder"], 0, "{r:#}");
    let published = r["published"].as_u64().unwrap();
    assert!(published > 8, "more than one window's worth: {r:#}");
    assert_eq!(r["delivered"], published * 200, "{r:#}");
    assert_eq!(r["last_delivery_ms"]["count"], published, "{r:#}");
}
