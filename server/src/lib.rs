//! wsredis: a pre-forking websocket server with Redis fan-out, wire-compatible with
//! django-websocket-redis, and the demo chat web app around it.
//!
//! # Layout
//! - [`cli`]: subcommands and arguments; [`commands`]: the one-off ones (publish, …).
//! - [`config`]: the one `Config` of `wsredis serve`, from flags and `WSREDIS_*` variables.
//! - [`logging`]: text or JSON lines naming their process; reopened on SIGUSR1.
//! - [`supervisor`]: the master: listener, signals, worker table. No runtime, one thread.
//! - [`worker`]: a worker process: runtime after exec, the `serve` seam, draining.
//! - [`metrics`]: per-worker slots in shared memory; the master's aggregated exposition.
//! - [`http`]: routing by mode, health, responses and status mapping, trusted forwarded headers.
//! - [`ws`]: the handshake, ws4redis flags, tungstenite settings, one socket's session loop.
//! - [`bus`]: the per-worker Redis connections (one subscriber, one command client), channel
//!   names, the fan-out of Redis messages to local sockets, and channel history (streams kept
//!   by one Lua script per publish; docs/protocol.md).
//! - [`presence`]: who is connected per facility and channel, kept in Redis by every worker,
//!   with join/leave events; entries of dead workers expire.
//! - [`auth`]: password hashes, login, sessions in Redis, CSRF, cookies, form bodies.
//! - [`manage`]: the `migrate`, `loaddata` and `createuser` commands.
//! - [`store`]: users and groups in SQLite or PostgreSQL (sqlx), migrations, fixture loading.
//! - `fuzzing` (hidden): the parsers of outside input as the fuzz targets in `fuzz/` call them.
//!
//! Data flows one way: master → worker → router → (page | socket) → bus → Redis.
#![warn(missing_docs)]

pub mod auth;
pub mod bus;
pub mod cli;
pub mod commands;
pub mod config;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod logging;
pub mod manage;
pub mod metrics;
pub mod presence;
pub mod store;
pub mod supervisor;
pub mod worker;
pub mod ws;
