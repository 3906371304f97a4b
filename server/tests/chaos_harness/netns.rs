//! Clients that truly vanish: websockets opened from another network namespace over a veth
//! pair, whose link is then taken down and whose process is killed. The server's side stays
//! ESTABLISHED, its segments are never ACKed and no FIN or RST ever reaches it: a half-open
//! connection, as when a client's machine loses power or its network.
//!
//! Needs root, `ip` (iproute2), `sysctl` and `python3`; [`Vanishing::setup`] says why not otherwise, so the caller
//! can fall back to clients that merely fall silent. The namespace (and with it the veth
//! pair) is deleted when the value is dropped.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

/// A network namespace joined to this one by a veth pair on a private /30.
pub struct Vanishing {
    ns: String,
    /// The address on this side (the server binds it).
    pub host: String,
    inner_link: String,
    clients: Option<Child>,
}

/// The websocket client run inside the namespace: opens `n` websockets, prints each local
/// port, then `ready`, then waits to be killed.
const CLIENT: &str = r#"
import socket, sys
host, port, path, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
keep = []
for _ in range(n):
    s = socket.create_connection((host, port), timeout=20)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (path, host, port)).encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        b = s.recv(1)
        if not b:
            break
        head += b
    if not head.startswith(b"HTTP/1.1 101"):
        print("refused %r" % head, flush=True)
        sys.exit(1)
    keep.append(s)
    print(s.getsockname()[1], flush=True)
print("ready", flush=True)
sys.stdin.read()
"#;

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl Vanishing {
    /// Create the namespace and the veth pair; why not, if that fails.
    pub fn setup() -> Result<Self, String> {
        let pid = std::process::id();
        // A /30 per test process, so two runs at once do not collide.
        let (third, fourth) = ((pid >> 6) & 0xff, (pid & 0x3f) * 4);
        let v = Vanishing {
            ns: format!("wsredis-ho-{pid}"),
            host: format!("10.231.{third}.{}", fourth + 1),
            inner_link: format!("wsho{pid}b"),
            clients: None,
        };
        let outer = format!("wsho{pid}a");
        let inner = format!("10.231.{third}.{}/30", fourth + 2);
        ip(&["netns", "add", &v.ns])?;
        // From here on, Drop deletes the namespace (and the pair) whatever fails.
        ip(&[
            "link",
            "add",
            &outer,
            "type",
            "veth",
            "peer",
            "name",
            &v.inner_link,
            "netns",
            &v.ns,
        ])?;
        ip(&["addr", "add", &format!("{}/30", v.host), "dev", &outer])?;
        ip(&["link", "set", &outer, "up"])?;
        ip(&["-n", &v.ns, "addr", "add", &inner, "dev", &v.inner_link])?;
        ip(&["-n", &v.ns, "link", "set", &v.inner_link, "up"])?;
        // The server's /proc/net/tcp names peers by port only (`owners`): the namespace picks
        // its ports below this namespace's ephemeral range, so no test socket shares one.
        let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .map_err(|e| format!("ip_local_port_range: {e}"))?;
        let low: u16 = range
            .split_whitespace()
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or_else(|| format!("ip_local_port_range: {range:?}"))?;
        if low < 2048 {
            return Err(format!("no ports below the ephemeral range {range:?}"));
        }
        let below = format!(
            "net.ipv4.ip_local_port_range={} {}",
            low.saturating_sub(8000).max(1024),
            low - 1
        );
        ip(&["netns", "exec", &v.ns, "sysctl", "-qw", &below])?;
        Ok(v)
    }

    /// Open `n` websockets on `ws://{addr}{path}` from inside the namespace; their local
    /// ports (the server sees them as the peers' ports).
    pub fn open(&mut self, addr: &str, path: &str, n: usize) -> Vec<u16> {
        let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "python3", "-c", CLIENT])
            .args([host, port, path, &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec python3");
        let out = BufReader::new(child.stdout.take().unwrap());
        self.clients = Some(child);
        let mut ports = Vec::new();
        for line in out.lines() {
            let line = line.expect("the client's output");
            if line == "ready" {
                return ports;
            }
            match line.parse() {
                Ok(p) => ports.push(p),
                Err(_) => panic!("the namespaced client: {line}"),
            }
        }
        panic!("the namespaced client ended before opening {n} websockets");
    }

    /// Take the namespace's link down, then kill the clients: whatever their kernel sends
    /// (FIN, RST) is lost, and nothing the server sends is ever acknowledged.
    pub fn vanish(&mut self) {
        ip(&["-n", &self.ns, "link", "set", &self.inner_link, "down"]).expect("link down");
        if let Some(mut c) = self.clients.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Vanishing {
    fn drop(&mut self) {
        if let Some(mut c) = self.clients.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = ip(&["netns", "del", &self.ns]);
    }
}
