//! wsredis-stress: the load and stress tool of wsredis. It runs the old ws4redis stress test
//! and the scenarios that go two orders of magnitude past it, measures every delivery, and
//! puts the server next to a plain TCP baseline on the same machine.
//!
//! # Layout
//! - [`cli`]: the scenarios and their options.
//! - [`env`]: what a run talks to: a started or running server, Redis, source addresses.
//! - [`launch`]: starting redis-server, wsredis and the baseline; the open-files limit.
//! - [`client`], [`frame`]: the minimal websocket client every scenario (and the baseline
//!   comparison) reads with.
//! - [`publish`]: the websocket, `/api/publish` and Redis publishers.
//! - [`envelope`]: the client side of the `wsredis.v1` envelopes (positions, `recover=`).
//! - [`body`]: the measured message body (sequence number and send time).
//! - [`tracker`]: delivery accounting: loss, order, completion, latency histograms.
//! - [`scenario`]: `seed`, `seed-live`/`fanout`/`throughput`, `idle`, `chat`, `recovery`.
//!   `idle` and `fanout` past one process's open-files limit run child processes
//!   (`scenario::shard`).
//! - [`sweep`]: `fanout` at several sizes against both, to show how the cost grows.
//! - [`baseline`]: the plain TCP relay the report compares against.
//! - [`procfs`]: the server's memory and CPU from /proc.
//! - [`report`]: the table, the JSON, the latency plot.
#![warn(missing_docs)]

pub mod baseline;
pub mod body;
pub mod cli;
pub mod client;
pub mod env;
pub mod envelope;
pub mod frame;
pub mod launch;
pub mod procfs;
pub mod publish;
pub mod report;
pub mod scenario;
pub mod sweep;
pub mod tracker;
