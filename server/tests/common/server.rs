//! Running the real `wsredis` binary in tests: start `serve`, find its workers, send it
//! signals, and talk to it with hyper and tokio-tungstenite over loopback.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;

use super::{free_port, wait_until};

/// The binary under test.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_wsredis"))
}

/// A running `wsredis serve` master; killed (with its workers) when dropped.
pub struct Server {
    /// The master process.
    pub child: Child,
    /// Its loopback address (127.0.0.1 unless started with [`Server::start_at`]).
    pub host: String,
    /// Its TCP port on `host`.
    pub port: u16,
    /// Where its log goes.
    pub log: PathBuf,
    /// The private Redis it talks to (unless the test passed its own `--redis-url`).
    pub redis: Option<super::RedisServer>,
}

impl Server {
    /// Start `wsredis serve --bind 127.0.0.1:<free> ARGS` and wait until `/healthz` answers.
    pub fn start(args: &[&str]) -> Self {
        Self::start_env(args, &[])
    }

    /// Like [`Server::start`], with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_at("127.0.0.1", args, env)
    }

    /// Like [`Server::start_env`], listening on `host` (another loopback address, such as
    /// 127.0.0.2, stands for another machine).
    pub fn start_at(host: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_cmd(Command::new(binary()), host, args, env)
    }

    /// Like [`Server::start`], with the soft and hard open-files limit of the master (and so
    /// of its workers) set to `nofile` (by util-linux `prlimit`, which execs the server).
    pub fn start_with_nofile(args: &[&str], nofile: u64) -> Self {
        let mut cmd = Command::new("prlimit");
        cmd.arg(format!("--nofile={nofile}:{nofile}")).arg(binary());
        Self::start_cmd(cmd, "127.0.0.1", args, &[])
    }

    fn start_cmd(mut cmd: Command, host: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = std::env::temp_dir().join(format!("wsredis-test-{port}.log"));
        let logfile = std::fs::File::create(&log).unwrap();
        cmd.arg("serve").args(["--bind", &format!("{host}:{port}")]);
        if !args.contains(&"--metrics-bind") {
            cmd.args(["--metrics-bind", "off"]);
        }
        let redis = (!args.contains(&"--redis-url")).then(super::RedisServer::start);
        if let Some(r) = &redis {
            cmd.args(["--redis-url", &r.url()]);
        }
        let child = cmd
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(logfile)
            .spawn()
            .expect("start wsredis");
        let server = Server {
            child,
            host: host.to_owned(),
            port,
            log,
            redis,
        };
        let want = worker_count_arg(args);
        assert!(
            wait_until(Duration::from_secs(20), || server.worker_pids().len()
                == want
                && probe(host, port)),
            "server did not start; log:\n{}",
            server.log_text()
        );
        server
    }

    /// The master's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `HOST:PORT`.
    pub fn base(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// Pids of the master's live (non-zombie) children.
    pub fn worker_pids(&self) -> Vec<i32> {
        children_of(self.pid())
    }

    /// Threads of the master (must stay 1).
    pub fn master_threads(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Send the master a signal.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Wait for the master to exit, up to `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pids = self.worker_pids();
        let _ = self.child.kill();
        let _ = self.child.wait();
        for p in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn worker_count_arg(args: &[&str]) -> usize {
    args.iter()
        .position(|a| *a == "--workers")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Live children of `pid`, from /proc (zombies excluded).
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // Fields after the command name, which is in parentheses and may hold spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let ppid = f.next().and_then(|v| v.parse::<i32>().ok());
        if ppid == Some(pid) && state != Some("Z") {
            out.push(p);
        }
    }
    out.sort_unstable();
    out
}

/// Whether `/healthz` answers 200 on a fresh connection (blocking, for start-up).
fn probe(host: &str, port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect((host, port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200")
}

/// A response as a test sees it.
#[derive(Debug)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body as text.
    pub body: String,
}

/// One request on a fresh connection with hyper's client.
pub async fn request(addr: &str, method: &str, path: &str) -> Result<Reply, String> {
    request_with(addr, method, path, &[], Bytes::new()).await
}

/// One request with headers and a body, on a fresh connection.
pub async fn request_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Reply, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(conn);
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req
        .body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// `GET /healthz` parsed as JSON.
pub async fn health(addr: &str) -> Result<serde_json::Value, String> {
    let r = request(addr, "GET", "/healthz").await?;
    if r.status != 200 {
        return Err(format!("status {}", r.status));
    }
    serde_json::from_str(&r.body).map_err(|e| e.to_string())
}

/// `GET /metrics` from a master's metrics address, as text.
pub async fn scrape(addr: &str) -> String {
    let r = request(addr, "GET", "/metrics").await.expect("scrape");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// The value of one sample line (`name{labels}` exactly as rendered) in an exposition.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}
