//! Starting a worker: fork+exec of our own binary with the listener and a control pipe.
//!
//! The master never forks a process that has a runtime: it has none. Each worker is a fresh
//! exec of the binary (the path resolved at start, so a rolling reload picks up a new binary
//! installed at the same path), which builds its own tokio runtime. The child gets exactly two
//! inherited fds: the listener at [`LISTEN_FD`] and the write end of its control pipe at
//! [`CONTROL_FD`]; everything else the master holds is close-on-exec.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::fcntl::OFlag;
use nix::unistd::{Pid, pipe2};

use crate::config::Config;

/// The fd number of the listening socket in a worker.
pub const LISTEN_FD: RawFd = 3;
/// The fd number of the control pipe (worker → master) in a worker.
pub const CONTROL_FD: RawFd = 4;
/// The fd number of the shared metric slots (a memfd) in a worker.
pub const METRICS_FD: RawFd = 5;
/// Environment variable carrying the worker's slot number.
pub const ENV_WORKER_ID: &str = "WSREDIS_WORKER_ID";
/// Environment variable carrying the master's validated config as JSON.
pub const ENV_WORKER_CONFIG: &str = "WSREDIS_WORKER_CONFIG";
/// Environment variable carrying the master's pid (a worker exits if its parent changes).
pub const ENV_MASTER_PID: &str = "WSREDIS_MASTER_PID";

/// A started worker process: its pid and the read end of its control pipe.
#[derive(Debug)]
pub(super) struct Spawned {
    /// The worker's pid.
    pub(super) pid: Pid,
    /// Read end of the control pipe (non-blocking, close-on-exec).
    pub(super) control: OwnedFd,
}

/// Start worker `id` as `exe worker` with the listener and a fresh control pipe.
pub(super) fn spawn(
    exe: &Path,
    id: usize,
    config_json: &str,
    listener: BorrowedFd<'_>,
    metrics: BorrowedFd<'_>,
) -> io::Result<Spawned> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    // The worker writes with blocking semantics handled by its own runtime; it makes the fd
    // non-blocking itself. Only the read end stays non-blocking here.
    nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()))?;
    let listen_raw = listener.as_raw_fd();
    let control_raw = write.as_raw_fd();
    let metrics_raw = metrics.as_raw_fd();
    let master = std::process::id();

    let mut cmd = Command::new(exe);
    cmd.arg("worker")
        .env(ENV_WORKER_ID, id.to_string())
        .env(ENV_WORKER_CONFIG, config_json)
        .env(ENV_MASTER_PID, master.to_string())
        // systemd talks to the master only; workers must not answer for it.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID")
        .env_remove("LISTEN_FDNAMES")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec. It calls only async-signal-safe
    // functions (fcntl, dup2, prctl, getppid, signal, sigprocmask) on fds and values captured
    // by copy; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(move || {
            // Move both fds out of the way first, so placing one cannot clobber the other.
            let l = cvt(libc::fcntl(listen_raw, libc::F_DUPFD, 10))?;
            let c = cvt(libc::fcntl(control_raw, libc::F_DUPFD, 10))?;
            let m = cvt(libc::fcntl(metrics_raw, libc::F_DUPFD, 10))?;
            cvt(libc::dup2(l, LISTEN_FD))?;
            cvt(libc::dup2(c, CONTROL_FD))?;
            cvt(libc::dup2(m, METRICS_FD))?;
            libc::close(l);
            libc::close(c);
            libc::close(m);
            // Die with the master: no orphaned workers. Then close the race where the master
            // died before prctl took effect.
            cvt(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM))?;
            if libc::getppid() as u32 != master {
                libc::_exit(1);
            }
            // Ctrl-C reaches the whole process group; the master alone decides what workers do.
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(write);
    Ok(Spawned {
        pid: Pid::from_raw(child.id() as i32),
        control: read,
    })
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Serialize the config once for every spawn.
pub(super) fn config_json(config: &Config) -> String {
    config.to_json()
}

/// The fds a worker inherits from the master.
#[derive(Debug)]
pub struct Inherited {
    /// The listening socket.
    pub listener: OwnedFd,
    /// The control pipe's write end.
    pub control: OwnedFd,
    /// The metric slots' memfd.
    pub metrics: OwnedFd,
}

/// In a worker: take ownership of the fds the master placed at [`LISTEN_FD`],
/// [`CONTROL_FD`] and [`METRICS_FD`]. None when not started as a worker (fds absent).
pub fn inherited_fds() -> Option<Inherited> {
    use std::os::fd::FromRawFd;
    for fd in [LISTEN_FD, CONTROL_FD, METRICS_FD] {
        // fcntl(F_GETFD) only asks whether the fd is open; it changes nothing.
        nix::fcntl::fcntl(
            // SAFETY: borrowed for the duration of this call only; an unopened fd makes fcntl
            // fail with EBADF, which is what we test for.
            unsafe { BorrowedFd::borrow_raw(fd) },
            nix::fcntl::FcntlArg::F_GETFD,
        )
        .ok()?;
    }
    // SAFETY: the master placed these two fds here for us across exec (see `spawn`); nothing
    // else in this process owns them, and we take each exactly once at worker start.
    Some(unsafe {
        Inherited {
            listener: OwnedFd::from_raw_fd(LISTEN_FD),
            control: OwnedFd::from_raw_fd(CONTROL_FD),
            metrics: OwnedFd::from_raw_fd(METRICS_FD),
        }
    })
}
