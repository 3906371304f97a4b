//! Per-worker websocket settings derived once from the [`Config`]: tungstenite's buffers and
//! limits, and the timings of the session loop.
//!
//! Invariants: the read buffer is small (many idle sockets per worker), incoming frames and
//! messages are capped at `max_message_size` (larger → close 1009), and the write buffer is
//! bounded so one socket cannot hoard memory.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Config;

/// tungstenite's read chunk per socket, allocated at the upgrade and zero-filled before each
/// read: a large part of an idle socket's memory and of the cost of polling it. Larger frames
/// still arrive whole (tungstenite reserves their length), in chunks of this size; clients
/// mostly send pongs, heartbeats and short messages.
pub const READ_BUFFER_BYTES: usize = 512;
/// Bytes tungstenite may gather before writing to the socket (each `send` flushes anyway).
pub const WRITE_BUFFER_BYTES: usize = 8 * 1024;
/// Outgoing messages (from Redis) up to at least this size are always relayed, even when the
/// incoming limit is smaller: Django-side publishers are not bound by `max_message_size`.
pub const MIN_OUTGOING_BYTES: usize = 1024 * 1024;
/// Largest websocket frame header.
const FRAME_HEADER_BYTES: usize = 14;
/// How long a closing socket waits for the peer to take our close frame and answer it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a session waits for Redis to confirm its SUBSCRIBE before replaying stored
/// messages anyway.
pub const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The tungstenite configuration of every server-side socket; give it to
/// `WebSocketStream::from_raw_socket(io, Role::Server, Some(websocket_config(&config)))`.
pub fn websocket_config(config: &Config) -> WebSocketConfig {
    let max_in = config.max_message_size;
    let max_out = max_outgoing(config);
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(WRITE_BUFFER_BYTES + max_out + FRAME_HEADER_BYTES)
        .max_message_size(Some(max_in))
        .max_frame_size(Some(max_in))
}

/// The largest outgoing message relayed: larger ones are skipped and counted (`too_large`).
fn max_outgoing(config: &Config) -> usize {
    config.max_message_size.max(MIN_OUTGOING_BYTES)
}

/// The timings and ws4redis options of the session loop (one per worker, shared).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Seconds a published message is stored for replay (`SET … EX`); 0 = no persistence.
    pub expire: u64,
    /// The ws4redis heartbeat string: sent every `heartbeat_interval` and in answer to the
    /// client's own heartbeat, never published.
    pub heartbeat: Option<Utf8Bytes>,
    /// Period of application heartbeats.
    pub heartbeat_interval: Duration,
    /// Period of protocol pings; a socket silent for two periods is closed.
    pub ping_interval: Duration,
    /// See [`CLOSE_TIMEOUT`].
    pub close_timeout: Duration,
    /// See [`SUBSCRIBE_TIMEOUT`].
    pub subscribe_timeout: Duration,
    /// Fanned-out messages with a longer body are skipped (counted as `too_large`): the bound
    /// tungstenite's write buffer puts on everything else it sends.
    pub max_outgoing: usize,
}

impl Settings {
    /// Take the session's settings from the worker's configuration.
    pub fn from_config(config: &Config) -> Self {
        Settings {
            expire: config.expire,
            heartbeat: config.heartbeat.as_deref().map(Utf8Bytes::from),
            heartbeat_interval: Duration::from_secs(config.heartbeat_interval.max(1)),
            ping_interval: Duration::from_secs(config.ping_interval.max(1)),
            close_timeout: CLOSE_TIMEOUT,
            subscribe_timeout: SUBSCRIBE_TIMEOUT,
            max_outgoing: max_outgoing(config),
        }
    }

    /// How long a write to a socket may take before the socket is given up on: two ping
    /// intervals, like a silent client.
    pub fn write_timeout(&self) -> Duration {
        self.ping_interval * 2
    }
}
