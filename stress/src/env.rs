//! The environment of one run: the processes it started (Redis, the server or the baseline),
//! the addresses publishers and clients use, and the pids whose cost is measured.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};

use crate::cli::Common;
use crate::client::Endpoint;
use crate::launch::{self, LaunchError, Proc};
use crate::publish::Targets;

/// Open files a process of the tool keeps free besides its client sockets.
pub const FILES_MARGIN: u64 = 1024;
/// Client sockets per loopback source address. The ephemeral range holds about 28k, but
/// connect's search for a free port slows as a source fills (and the TIME_WAITs of the last
/// run hold ports too): 100,000 sockets from 5 sources took 31–44 s to connect, from 10
/// sources 5.5 s.
const SOCKETS_PER_SOURCE: usize = 10_000;

/// What a run talks to.
pub struct Env {
    /// Where publishers connect.
    pub targets: Targets,
    /// The server's master pid (memory, CPU), if known.
    pub server_pid: Option<i32>,
    /// Redis's pid, if started here.
    pub redis_pid: Option<i32>,
    /// Source addresses for client sockets (`None` = let the kernel choose).
    pub sources: Vec<Option<IpAddr>>,
    /// `"wsredis"` or `"baseline"`.
    pub kind: &'static str,
    /// Processes started for this run, stopped on drop (server first).
    _procs: Vec<Proc>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env")
            .field("server", &self.targets.server.addr)
            .field("kind", &self.kind)
            .finish()
    }
}

/// Source addresses for `sockets` client sockets: `want` of them (0 = as many as the
/// sockets need, none for a few thousand).
pub fn sources(want: usize, sockets: usize) -> Vec<Option<IpAddr>> {
    let n = if want > 0 {
        want
    } else if sockets > SOCKETS_PER_SOURCE / 2 {
        sockets.div_ceil(SOCKETS_PER_SOURCE)
    } else {
        0
    };
    if n == 0 {
        return vec![None];
    }
    (0..n.min(250))
        .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i as u8))))
        .collect()
}

fn redis_addr(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("redis://")?;
    let hostport = rest.rsplit('@').next()?.split('/').next()?;
    hostport.to_socket_addrs().ok()?.next()
}

/// Raise the open-files limit for `sockets` client sockets in all (the started server
/// inherits it), or say plainly that this process cannot hold the `held` of them it will (an
/// unprivileged user or a container keeps the hard limit).
fn enough_files(sockets: usize, held: usize) -> Result<(), LaunchError> {
    let want = files_needed(sockets);
    let got = launch::raise_nofile(want)?;
    if got < held as u64 + FILES_MARGIN {
        return Err(LaunchError::Rlimit(
            want,
            std::io::Error::other(format!(
                "the hard limit is {got}: at most about {} sockets from one process here",
                got.saturating_sub(FILES_MARGIN)
            )),
        ));
    }
    Ok(())
}

/// Open files the tool needs for `sockets` client sockets (plus the server's, inherited).
pub fn files_needed(sockets: usize) -> u64 {
    (sockets as u64) * 2 + 4096
}

impl Env {
    /// Set up the run against wsredis: start Redis and the server if asked, else use --url.
    pub fn wsredis(c: &Common, sockets: usize) -> Result<Env, LaunchError> {
        Self::wsredis_holding(c, sockets, sockets)
    }

    /// [`Env::wsredis`] for a run of `sockets` client sockets of which this process holds
    /// only `held` (the others are held by child processes of the tool).
    pub fn wsredis_holding(c: &Common, sockets: usize, held: usize) -> Result<Env, LaunchError> {
        enough_files(sockets, held)?;
        let mut procs = Vec::new();
        let (server, server_pid, redis_pid, redis_url) = match &c.server_bin {
            Some(bin) => {
                let redis = launch::redis(&c.redis_server)?;
                let url = format!("redis://{}", redis.addr);
                let workers = c.workers.unwrap_or_else(cpus);
                let mut extra = c.server_arg.clone();
                if !extra.iter().any(|a| a == "--expire") {
                    extra.extend(["--expire".into(), c.expire.to_string()]);
                }
                let env = [("WSREDIS_API_TOKEN".to_owned(), c.api_token.clone())];
                let server = launch::server(bin, workers, &url, &extra, &env)?;
                let out = (
                    server.addr,
                    Some(server.pid()),
                    Some(redis.pid()),
                    Some(url),
                );
                procs.push(server);
                procs.push(redis);
                out
            }
            None => (c.url, c.server_pid, None, c.redis_url.clone()),
        };
        Ok(Env {
            targets: Targets {
                server: Endpoint::new(server),
                redis: redis_url.as_deref().and_then(redis_addr),
                api_token: c.api_token.clone(),
                redis_prefix: c.redis_prefix.clone(),
                expire: c.expire,
            },
            server_pid,
            redis_pid,
            sources: sources(c.sources, held),
            kind: "wsredis",
            _procs: procs,
        })
    }

    /// Set up the run against the plain TCP baseline (this tool's `baseline-server`).
    pub fn baseline(c: &Common, sockets: usize) -> Result<Env, LaunchError> {
        enough_files(sockets, sockets)?;
        let exe =
            std::env::current_exe().map_err(|e| LaunchError::Spawn("wsredis-stress".into(), e))?;
        let threads = c.workers.unwrap_or_else(cpus);
        let proc = launch::baseline(&exe, threads)?;
        Ok(Env {
            targets: Targets {
                server: Endpoint::new(proc.addr),
                redis: None,
                api_token: String::new(),
                redis_prefix: String::new(),
                expire: 0,
            },
            server_pid: Some(proc.pid()),
            redis_pid: None,
            sources: sources(c.sources, sockets),
            kind: "baseline",
            _procs: vec![proc],
        })
    }

    /// The source address of client socket `i`.
    pub fn source(&self, i: usize) -> Option<IpAddr> {
        self.sources[i % self.sources.len()]
    }
}

/// CPUs of this machine.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
