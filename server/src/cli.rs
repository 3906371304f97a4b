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
    /// Internal: a worker process, started by `serve`.
    #[command(hide = true)]
    Worker,
}
