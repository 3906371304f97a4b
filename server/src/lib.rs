//! wsredis: a pre-forking websocket server with Redis fan-out, wire-compatible with
//! django-websocket-redis, and the demo chat web app around it.
//!
//! # Layout
//! - [`config`]: the one `Config` of `wsredis serve`, from flags and `WSREDIS_*` variables.
#![warn(missing_docs)]

pub mod config;
