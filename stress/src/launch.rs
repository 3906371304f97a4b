//! Starting what a run measures: a private `redis-server`, the `wsredis` server (or the plain
//! TCP baseline) on free loopback ports, and raising the open-files limit, which the children
//! inherit. Every process started here is killed when its handle drops.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::procfs;

/// How long a started process gets to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Errors while starting processes.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The program could not be run.
    #[error("cannot run {0}: {1}")]
    Spawn(String, std::io::Error),
    /// It ran but never accepted connections.
    #[error("{0} did not start within {1:?}; its log: {2}")]
    Timeout(String, Duration, String),
    /// The open-files limit could not be raised.
    #[error("cannot raise RLIMIT_NOFILE to {0}: {1}")]
    Rlimit(u64, std::io::Error),
}

/// Raise the soft (and, if allowed, hard) open-files limit to at least `want`; children
/// started afterwards inherit it. Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> Result<u64, LaunchError> {
    let (soft, hard) = rlimit::Resource::NOFILE
        .get()
        .map_err(|e| LaunchError::Rlimit(want, e))?;
    if soft >= want {
        return Ok(soft);
    }
    if hard >= want {
        rlimit::Resource::NOFILE
            .set(want, hard)
            .map_err(|e| LaunchError::Rlimit(want, e))?;
        return Ok(want);
    }
    // Raising the hard limit needs CAP_SYS_RESOURCE; fall back to the hard limit.
    match rlimit::Resource::NOFILE.set(want, want) {
        Ok(()) => Ok(want),
        Err(_) => {
            rlimit::Resource::NOFILE
                .set(hard, hard)
                .map_err(|e| LaunchError::Rlimit(want, e))?;
            Ok(hard)
        }
    }
}

/// The hard open-files limit of this process (what no unprivileged process can raise).
pub fn nofile_hard() -> u64 {
    rlimit::Resource::NOFILE
        .get()
        .map_or(1024, |(_, hard)| hard)
}

/// A free TCP port on 127.0.0.1 for a server the tool starts (bound, then released),
/// preferably below the kernel's ephemeral range: a port from that range can become the local
/// port of some other process's outgoing connection before our server binds it (tests running
/// beside each other open thousands).
pub fn free_port() -> std::io::Result<u16> {
    const LOW: u32 = 10_000;
    let high = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .clamp(LOW + 1_000, 65_535);
    let mut state = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        // xorshift: enough to spread processes and calls over the range.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let port = (LOW + state % (high - LOW)) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_for_port(
    name: &str,
    addr: SocketAddr,
    child: &mut Child,
    log: &Path,
) -> Result<(), LaunchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            return Err(LaunchError::Timeout(
                format!("{name} (exited: {status})"),
                START_TIMEOUT,
                text,
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(LaunchError::Timeout(
        name.to_owned(),
        START_TIMEOUT,
        std::fs::read_to_string(log).unwrap_or_default(),
    ))
}

/// A child process, killed with its children when dropped.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Its pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let kids = procfs::children(self.pid());
        let _ = self.child.kill();
        let _ = self.child.wait();
        for k in kids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(k),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn log_file(tag: &str, port: u16) -> Result<(PathBuf, std::fs::File), LaunchError> {
    let path = std::env::temp_dir().join(format!("wsredis-stress-{tag}-{port}.log"));
    let file = std::fs::File::create(&path).map_err(|e| LaunchError::Spawn(tag.into(), e))?;
    Ok((path, file))
}

fn spawn(tag: &str, mut cmd: Command, port: u16) -> Result<Proc, LaunchError> {
    let (log, file) = log_file(tag, port)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .spawn()
        .map_err(|e| LaunchError::Spawn(format!("{:?}", cmd.get_program()), e))?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for_port(tag, addr, &mut child, &log)?;
    Ok(Proc { child, addr, log })
}

/// Start `redis-server` (program `bin`) on a free port, keeping nothing on disk.
pub fn redis(bin: &str) -> Result<Proc, LaunchError> {
    let port = free_port().map_err(|e| LaunchError::Spawn(bin.into(), e))?;
    let mut cmd = Command::new(bin);
    cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--maxclients", "10000", "--loglevel", "warning"]);
    spawn("redis", cmd, port)
}

/// Start `wsredis serve` (binary `bin`) with `workers` workers against `redis_url`, plus
/// `extra` arguments; waits until it accepts connections and all workers run.
pub fn server(
    bin: &Path,
    workers: usize,
    redis_url: &str,
    extra: &[String],
    env: &[(String, String)],
) -> Result<Proc, LaunchError> {
    let port = free_port().map_err(|e| LaunchError::Spawn("wsredis".into(), e))?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--workers", &workers.to_string()])
        .args(["--redis-url", redis_url, "--metrics-bind", "off"])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env_remove("RUST_LOG");
    let proc = spawn("wsredis", cmd, port)?;
    let deadline = Instant::now() + START_TIMEOUT;
    while procfs::children(proc.pid()).len() < workers && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(proc)
}

/// Start the plain TCP baseline (`bin baseline-server`) with `threads` runtime threads.
pub fn baseline(bin: &Path, threads: usize) -> Result<Proc, LaunchError> {
    let port = free_port().map_err(|e| LaunchError::Spawn("baseline".into(), e))?;
    let mut cmd = Command::new(bin);
    cmd.arg("baseline-server")
        .args(["--bind", &format!("127.0.0.1:{port}")])
        .args(["--threads", &threads.to_string()]);
    spawn("baseline", cmd, port)
}
