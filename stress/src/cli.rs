//! The command line: one subcommand per scenario, each with the common options that say what
//! to run against and where the results go.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::publish::Mode;

/// Load and stress tool for wsredis.
#[derive(Debug, Parser)]
#[command(name = "wsredis-stress", version, about)]
pub struct Cli {
    /// The scenario.
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The old ws4redis stress test: publish `Hello, World`, then N subscribers connect and
    /// each must receive it (stored-message replay). Connecting included.
    Seed(Seed),
    /// N subscribers connect first, then one publish: live fan-out to all.
    SeedLive(Fanout),
    /// N subscribers, M messages at a rate (or as fast as a window of unfinished messages
    /// allows).
    Fanout(Fanout),
    /// Sustained publishing for a duration, as fast as the window allows unless --rate is set.
    Throughput(Fanout),
    /// N idle sockets held open; the server's memory per socket.
    Idle(Idle),
    /// Logged-in users messaging each other on their user channels.
    Chat(Chat),
    /// N envelope subscribers on a history facility, sockets dropped and reconnected with
    /// `recover=` in waves while messages flow; every number exactly once and in order.
    Recovery(Recovery),
    /// `fanout` at several numbers of subscribers, against wsredis and the plain TCP baseline:
    /// how the last delivery's latency grows with the subscribers (table, JSON, chart).
    Sweep(Sweep),
    /// (internal) The plain TCP baseline server.
    #[command(hide = true)]
    BaselineServer(BaselineServer),
    /// (internal) One child process of `idle` or `fanout`, holding its share of the sockets.
    #[command(hide = true)]
    Shard(Shard),
}

/// What to run against and how to report; shared by every scenario.
#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Start this `wsredis` binary (and a private redis-server) for the run, instead of
    /// using a running server at --url.
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// The redis-server program for --server-bin.
    #[arg(long, default_value = "redis-server")]
    pub redis_server: String,
    /// Workers of the started server (default: one per CPU).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Extra argument for the started `wsredis serve` (repeatable).
    #[arg(long, allow_hyphen_values = true)]
    pub server_arg: Vec<String>,
    /// A running server (without --server-bin).
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub url: SocketAddr,
    /// The running server's master pid, for memory and CPU (without --server-bin).
    #[arg(long)]
    pub server_pid: Option<i32>,
    /// Redis of a running server (`redis://127.0.0.1:6379`), for --publisher redis and chat.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// The server's --redis-prefix.
    #[arg(long, default_value = "")]
    pub redis_prefix: String,
    /// How messages are published.
    #[arg(long, value_enum, default_value_t = Mode::Ws)]
    pub publisher: Mode,
    /// Bearer token for --publisher api (a started server gets it too).
    #[arg(
        long,
        env = "WSREDIS_API_TOKEN",
        default_value = "wsredis-stress-api-token"
    )]
    pub api_token: String,
    /// Seconds the Redis publisher stores each message (`SET … EX`), as the server's --expire.
    #[arg(long, default_value_t = 3600)]
    pub expire: u64,
    /// The facility.
    #[arg(long, default_value = "foobar")]
    pub facility: String,
    /// Loopback source addresses for client sockets (127.0.0.2, …); 0 = automatic.
    #[arg(long, default_value_t = 0)]
    pub sources: usize,
    /// Sockets connecting at the same time.
    #[arg(long, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// Threads of the tool's runtime (default: one per CPU).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Overall bound of the run, seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
    /// Print the report as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write <name>.json, <name>.txt and <name>.svg into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Name of the result files (default: the scenario).
    #[arg(long)]
    pub name: Option<String>,
    /// No progress bars.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `seed`.
#[derive(Debug, Args, Clone)]
pub struct Seed {
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: Common,
    /// Subscribers.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub subscribers: usize,
}

/// `seed-live`, `fanout`, `throughput`.
#[derive(Debug, Args, Clone)]
pub struct Fanout {
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: Common,
    /// Subscribers.
    #[arg(long, short = 'n')]
    pub subscribers: Option<usize>,
    /// Messages to publish (fanout, seed-live).
    #[arg(long, short = 'm')]
    pub messages: Option<u64>,
    /// Seconds of publishing (throughput).
    #[arg(long, short = 'd')]
    pub duration: Option<f64>,
    /// Messages per second; 0 = as fast as the window allows.
    #[arg(long, short = 'r')]
    pub rate: Option<f64>,
    /// Most messages published but not yet received by every subscriber (0 = unbounded).
    #[arg(long, short = 'w')]
    pub window: Option<u64>,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Run the same against the plain TCP baseline too, and report ours as a fraction of it.
    #[arg(long)]
    pub baseline: bool,
    /// Run only against the plain TCP baseline.
    #[arg(long, conflicts_with = "baseline")]
    pub baseline_only: bool,
    /// Most subscribers one process of the tool holds; more are split over child processes
    /// (default: 90 % of the hard open-files limit).
    #[arg(long, hide = true)]
    pub per_process: Option<usize>,
}

/// `sweep`.
#[derive(Debug, Args, Clone)]
pub struct Sweep {
    /// The fan-out run at each size (its -n is ignored; --baseline is implied).
    #[command(flatten)]
    pub fanout: Fanout,
    /// Numbers of subscribers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1000,2500,5000,10000")]
    pub sizes: Vec<usize>,
}

/// `idle`.
#[derive(Debug, Args, Clone)]
pub struct Idle {
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: Common,
    /// Sockets.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub sockets: usize,
    /// Seconds to hold them open after all connected (the server pings meanwhile).
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// Most sockets one process of the tool holds; more are split over child processes
    /// (default: 90 % of the hard open-files limit).
    #[arg(long, hide = true)]
    pub per_process: Option<usize>,
}

/// `shard`: started by `idle` or `fanout` with the run's common options (`--url` set to the
/// server).
#[derive(Debug, Args, Clone)]
pub struct Shard {
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: Common,
    /// Sockets this process holds.
    #[arg(long)]
    pub count: usize,
    /// Source addresses, in the order this process's sockets use them (empty: the kernel's).
    #[arg(long, value_delimiter = ',')]
    pub source: Vec<IpAddr>,
    /// The run's warm-up nonce (the markers this process's sockets count).
    #[arg(long, default_value_t = 0)]
    pub nonce: u64,
}

/// `chat`.
#[derive(Debug, Args, Clone)]
pub struct Chat {
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: Common,
    /// Logged-in users, one socket each.
    #[arg(long, short = 'u', default_value_t = 1000)]
    pub users: usize,
    /// Messages, each from one user to another.
    #[arg(long, short = 'm', default_value_t = 10_000)]
    pub messages: u64,
    /// Messages per second (0 = as fast as the publisher goes).
    #[arg(long, short = 'r', default_value_t = 0.0)]
    pub rate: f64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// The server's --session-prefix.
    #[arg(long, default_value = "wsredis:session:")]
    pub session_prefix: String,
}

/// `recovery`.
#[derive(Debug, Args, Clone)]
pub struct Recovery {
    /// Options shared by every scenario.
    #[command(flatten)]
    pub common: Common,
    /// Subscribers (`wsredis.v1` envelope sockets).
    #[arg(long, short = 'n', default_value_t = 2000)]
    pub subscribers: usize,
    /// Messages per second.
    #[arg(long, short = 'r', default_value_t = 20.0)]
    pub rate: f64,
    /// Seconds of publishing (and dropping).
    #[arg(long, short = 'd', default_value_t = 10.0)]
    pub duration: f64,
    /// Waves of drops, spread evenly over the duration.
    #[arg(long, default_value_t = 10)]
    pub waves: usize,
    /// Percent of the sockets dropped per wave (a different slice each wave).
    #[arg(long, default_value_t = 10.0)]
    pub wave_percent: f64,
    /// History kept per channel by a started server (`--history FACILITY=SIZE:600`).
    #[arg(long, default_value_t = 10_000)]
    pub history_size: u64,
    /// Body size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
}

/// `baseline-server`.
#[derive(Debug, Args, Clone)]
pub struct BaselineServer {
    /// Where to listen.
    #[arg(long)]
    pub bind: SocketAddr,
    /// Runtime threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}
