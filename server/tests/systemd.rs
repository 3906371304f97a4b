//! systemd integration without systemd as PID 1: `systemd-socket-activate` hands the server
//! its socket, and the test's own NOTIFY_SOCKET receives READY / RELOADING / STOPPING in order.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{binary, health};
use common::{eventually, free_port};

/// Read notifications until one contains `want` or the deadline passes; returns all lines.
fn read_until(sock: &UnixDatagram, want: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l == want);
            seen.extend(msg.lines().map(str::to_owned));
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} within {timeout:?}; got {seen:?}");
}

#[tokio::test]
async fn socket_activation_and_notify_order() {
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .stdout(Stdio::null())
        .status()
        .is_err()
    {
        println!("skipped: systemd-socket-activate is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("wsredis-notify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new("systemd-socket-activate")
        .args(["-l", &addr, "--fdname=web", "-E", "NOTIFY_SOCKET"])
        .arg(binary())
        .args(["serve", "--workers", "2", "--metrics-bind", "off"])
        // A --bind that would fail proves the activated socket is used instead.
        .args(["--bind", "192.0.2.1:1"])
        .env("NOTIFY_SOCKET", &path)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    // Killed on any exit from this test, so a failure never leaves a server behind.
    struct Reaper(i32);
    impl Drop for Reaper {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _reaper = Reaper(pid.as_raw());
    // systemd-socket-activate starts the service on the first connection, like systemd does
    // for a socket unit without Accept=; that connection is then served by a worker.
    let first_client = std::thread::spawn({
        let addr = addr.clone();
        move || {
            // Retry until systemd-socket-activate is listening.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(&addr).is_ok() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        }
    });

    let first = read_until(&sock, "READY=1", Duration::from_secs(20));
    assert!(first_client.join().unwrap());
    assert!(
        first
            .iter()
            .any(|l| l.starts_with("STATUS=2 of 2 workers ready")),
        "{first:?}"
    );
    assert!(eventually(Duration::from_secs(5), || true).await);
    let h = health(&addr).await.expect("the activated socket answers");
    assert_eq!(h["status"], "ok");

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    let reload = read_until(&sock, "RELOADING=1", Duration::from_secs(5));
    assert!(
        !reload.iter().any(|l| l == "READY=1"),
        "READY before RELOADING: {reload:?}"
    );
    let after = read_until(&sock, "READY=1", Duration::from_secs(20));
    assert!(
        reload
            .iter()
            .chain(&after)
            .any(|l| l.starts_with("MONOTONIC_USEC=")),
        "RELOADING=1 comes with MONOTONIC_USEC: {reload:?} {after:?}"
    );

    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    read_until(&sock, "STOPPING=1", Duration::from_secs(5));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "master did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
