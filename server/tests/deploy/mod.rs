//! Support for the deployment tests (`deploy_*.rs`): the repository's shipped files, external
//! tools that may be missing (a test then says why it skips), process groups that die with the
//! test, the nginx renderer, and a websocket client through nginx.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A websocket client over plain TCP.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How long a message may take through nginx, Redis and back.
pub const SOON: Duration = Duration::from_secs(5);

/// The repository root (the shipped nginx/, systemd/, deploy/ and scripts/ live there).
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("server/ has a parent")
        .to_path_buf()
}

/// Whether `tool` can be run; prints why the calling test skips when it cannot.
pub fn have(tool: &str, why: &str) -> bool {
    let found = Command::new("sh")
        .args([
            "-c",
            &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
        ])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        println!("skipped: {tool} is not installed ({why}; `make deps-deploy` installs it)");
    }
    found
}

/// The path of an installed tool (nginx lives in /usr/sbin, often not on a user's PATH).
pub fn tool(name: &str) -> String {
    let sbin = format!("/usr/sbin/{name}");
    if Path::new(&sbin).exists() {
        sbin
    } else {
        name.to_owned()
    }
}

/// A fresh directory under the temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Create `wsredis-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "wsredis-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A path inside.
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child in its own process group; the whole group is stopped when dropped (TERM, then
/// KILL after five seconds), so nothing it started outlives the test, even on panic.
pub struct Group {
    /// The leader.
    pub child: Child,
}

impl Group {
    /// Spawn `cmd` as the leader of a new process group.
    pub fn spawn(mut cmd: Command) -> Self {
        use std::os::unix::process::CommandExt as _;
        let child = cmd.process_group(0).spawn().expect("spawn");
        Group { child }
    }

    /// Send `sig` to the leader only (as a terminal's Ctrl-C reaches the script).
    pub fn signal_leader(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// Wait up to `timeout` for the leader to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let mut status = None;
        crate::common::wait_until(timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// Whether any process of the group is still alive.
    pub fn alive(&self) -> bool {
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::killpg(pgid, None).is_ok()
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        use nix::sys::signal::Signal::{SIGKILL, SIGTERM};
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, SIGTERM);
        let _ = self.child.try_wait();
        if !crate::common::wait_until(Duration::from_secs(5), || {
            let _ = self.child.try_wait();
            nix::sys::signal::killpg(pgid, None).is_err()
        }) {
            let _ = nix::sys::signal::killpg(pgid, SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Run `nginx/render.sh KIND` with `env` and return the rendered text.
pub fn render(kind: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new(repo().join("nginx/render.sh"))
        .arg(kind)
        .envs(env.iter().copied())
        .output()
        .expect("run nginx/render.sh");
    assert!(
        out.status.success(),
        "render.sh {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Render the complete config with `site` into `prefix` and run `nginx -t` on it.
pub fn nginx_test(prefix: &Path, site: &str) -> Result<(), String> {
    let p = prefix.to_str().unwrap();
    std::fs::create_dir_all(prefix.join("tmp")).unwrap();
    std::fs::write(prefix.join("wsredis.conf"), site).unwrap();
    let main = render("main", &[("PREFIX", p)]);
    std::fs::write(prefix.join("nginx.conf"), main).unwrap();
    let out = Command::new(tool("nginx"))
        .args(["-t", "-e"])
        .arg(prefix.join("error.log"))
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .output()
        .expect("run nginx -t");
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Start nginx in the foreground on a prefix prepared by [`nginx_test`].
pub fn nginx_start(prefix: &Path) -> Group {
    let mut cmd = Command::new(tool("nginx"));
    cmd.arg("-e")
        .arg(prefix.join("error.log"))
        .arg("-p")
        .arg(prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Group::spawn(cmd)
}

/// Open `ws://ADDR/PATH_AND_QUERY` (with a same-origin `Origin`, as a browser sends it).
pub async fn connect(addr: &str, path_and_query: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = format!("ws://{addr}{path_and_query}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", format!("http://{addr}").parse().unwrap());
    let (ws, resp) = tokio::time::timeout(SOON, tokio_tungstenite::connect_async(req))
        .await
        .expect("websocket handshake timed out")
        .expect("websocket handshake");
    assert_eq!(resp.status(), 101);
    ws
}

/// Send one text message.
pub async fn send(ws: &mut Ws, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
}

/// The next text message, skipping pings and pongs; panics after [`SOON`].
pub async fn next_text(ws: &mut Ws) -> String {
    loop {
        let msg = tokio::time::timeout(SOON, ws.next())
            .await
            .expect("no message in time")
            .expect("socket ended")
            .expect("socket error");
        match msg {
            Message::Text(t) => return t.as_str().to_owned(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// `PUBSUB NUMSUB channel` through `redis-cli ARGS...`.
pub fn numsub(cli_args: &[&str], channel: &str) -> u64 {
    let out = Command::new("redis-cli")
        .args(cli_args)
        .args(["PUBSUB", "NUMSUB", channel])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `redis-cli ARGS... PUBLISH channel message`; returns how many subscribers got it.
pub fn publish(cli_args: &[&str], channel: &str, message: &str) -> u64 {
    let out = Command::new("redis-cli")
        .args(cli_args)
        .args(["PUBLISH", channel, message])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0)
}
