//! The shipped systemd units: `systemd-analyze verify` accepts the socket and service of both
//! pools, and `systemd-analyze security --offline` scores the service at 2.0 or lower. (The
//! READY/RELOADING/STOPPING protocol and socket activation are tested in systemd.rs.)

mod common;
mod deploy;

use std::path::Path;
use std::process::Command;

use common::server::binary;
use deploy::{TempDir, have, repo};

/// Copy the units into `dir`, with ExecStart pointing at the binary under test (verify checks
/// that it exists and is executable).
fn install_units(dir: &Path) {
    for unit in ["wsredis@.service", "wsredis@.socket"] {
        let text = std::fs::read_to_string(repo().join("systemd").join(unit)).unwrap();
        assert!(unit.ends_with(".socket") || text.contains("ExecStart=/usr/local/bin/wsredis"));
        let text = text.replace("/usr/local/bin/wsredis", binary().to_str().unwrap());
        std::fs::write(dir.join(unit), text).unwrap();
    }
}

#[test]
fn units_pass_systemd_analyze_verify() {
    if !have("systemd-analyze", "units cannot be verified") {
        return;
    }
    let dir = TempDir::new("units");
    install_units(&dir.0);
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args([
            "wsredis@http.socket",
            "wsredis@http.service",
            "wsredis@websocket.socket",
            "wsredis@websocket.service",
        ])
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ours: Vec<&str> = stderr.lines().filter(|l| l.contains("wsredis")).collect();
    assert!(ours.is_empty(), "verify warns about our units: {ours:?}");
}

#[test]
fn service_exposure_score_is_at_most_2() {
    if !have("systemd-analyze", "the exposure cannot be scored") {
        return;
    }
    let dir = TempDir::new("security");
    install_units(&dir.0);
    std::fs::copy(
        dir.join("wsredis@.service"),
        dir.join("wsredis@http.service"),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(dir.join("wsredis@http.service"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for ")?
                .1
                .split_once(": ")
        })
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score in:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    println!("systemd-analyze security: exposure {score}");
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");
}
