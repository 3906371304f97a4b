//! wsredis: a pre-forking websocket server with Redis fan-out, wire-compatible with
//! django-websocket-redis, and the demo chat web app around it.
//!
//! # Layout
//! - [`config`]: the one `Config` of `wsredis serve`, from flags and `WSREDIS_*` variables.
//! - [`auth`]: password hashes, login, sessions in Redis, CSRF, cookies, form bodies.
//! - [`store`]: users and groups in SQLite or PostgreSQL (sqlx), migrations, fixture loading.
#![warn(missing_docs)]

pub mod auth;
pub mod config;
pub mod store;
