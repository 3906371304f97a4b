//! The command line: subcommands and their arguments (clap derive).

use clap::{Parser, Subcommand};

use crate::config::Config;

/// wsredis: real-time websockets for web apps, fanned out through Redis.
#[derive(Debug, Parser)]
#[command(name = "wsredis", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: a master process and its pool of workers.
    Serve(Box<Config>),
    /// Publish a message as django-websocket-redis's RedisPublisher does (PUBLISH + SET EX).
    Publish(PublishArgs),
    /// Internal: a worker process, started by `serve`.
    #[command(hide = true)]
    Worker,
}

/// `wsredis publish`: one message to the channels of a facility.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Redis to publish to.
    #[arg(
        long,
        env = "WSREDIS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,
    /// Prefix of channel names (WS4REDIS_PREFIX).
    #[arg(long, env = "WSREDIS_REDIS_PREFIX", default_value = "")]
    pub redis_prefix: String,
    /// Seconds the message is stored for replay; 0 = not stored (WS4REDIS_EXPIRE).
    #[arg(long, env = "WSREDIS_EXPIRE", default_value_t = 3600)]
    pub expire: u64,
    /// The facility.
    #[arg(long)]
    pub facility: String,
    /// Publish on the broadcast channel.
    #[arg(long)]
    pub broadcast: bool,
    /// A user's channel (repeatable).
    #[arg(long = "user")]
    pub users: Vec<String>,
    /// A group's channel (repeatable).
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// A session's channel (repeatable).
    #[arg(long = "session")]
    pub sessions: Vec<String>,
    /// The message; `-` reads it from standard input.
    pub message: String,
}
