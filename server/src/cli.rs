//! The command line: subcommands and their arguments (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    /// Create or update the database tables (run once per deployment, before `serve`).
    Migrate(DbArgs),
    /// Load users and groups from a Django `dumpdata` JSON file (idempotent).
    Loaddata(LoaddataArgs),
    /// Create a user; the password is read from WSREDIS_PASSWORD, else from stdin's first line.
    Createuser(CreateuserArgs),
}

/// Which database a management command works on (the same flag and variable as `serve`).
#[derive(Debug, Args)]
pub struct DbArgs {
    /// Database of users and groups: sqlite://path or postgres://...
    #[arg(
        long,
        env = "WSREDIS_DATABASE_URL",
        default_value = "sqlite://var/wsredis.sqlite3"
    )]
    pub database_url: String,
}

/// `wsredis loaddata FILE`.
#[derive(Debug, Args)]
pub struct LoaddataArgs {
    /// The JSON file written by Django's `manage.py dumpdata auth.user auth.group`.
    pub file: PathBuf,
    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// `wsredis createuser USERNAME`.
#[derive(Debug, Args)]
pub struct CreateuserArgs {
    /// Login name: letters, digits and @ . + - _.
    pub username: String,
    /// May use the admin pages.
    #[arg(long)]
    pub staff: bool,
    /// Has every permission (implies --staff).
    #[arg(long)]
    pub superuser: bool,
    /// Put the user in this existing group (repeatable).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Create the user with an unusable password (cannot log in until one is set).
    #[arg(long)]
    pub no_password: bool,
    /// The database.
    #[command(flatten)]
    pub db: DbArgs,
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
    /// History rules, as for `wsredis serve --history`: a facility with history must be
    /// published to with the same rule, so the message lands in its history.
    #[arg(long = "history", env = "WSREDIS_HISTORY", value_delimiter = ',',
          value_parser = crate::bus::history::parse_rule)]
    pub history: Vec<crate::bus::HistoryRule>,
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
