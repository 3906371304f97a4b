//! wsredis: a pre-forking websocket server with Redis fan-out, wire-compatible with
//! django-websocket-redis, and the demo chat web app around it.
//!
//! # Layout
//! - [`config`]: the one `Config` of `wsredis serve`, from flags and `WSREDIS_*` variables.
//! - [`bus`]: the per-worker Redis connections (one subscriber, one command client), channel
//!   names, and the fan-out of Redis messages to local sockets.
//! - [`ws`]: ws4redis flags, tungstenite settings, and one websocket's session loop.
#![warn(missing_docs)]

pub mod bus;
pub mod config;
pub mod ws;
