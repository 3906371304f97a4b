//! Command line and environment: one [`Config`] for `wsredis serve`, validated once.
//!
//! Every flag can also be given as a `WSREDIS_*` environment variable. The master parses and
//! validates the config, then hands the very same value to each worker (serialized as JSON in
//! the environment of the worker process), so a worker never re-interprets flags on its own.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::TypedValueParser as _;
use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::auth::django::settings::DjangoSettings;
use crate::bus::channels::Identity;
use crate::bus::{HistoryRule, Retention};
use crate::ws::Flags;

/// Which routes a pool of workers serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Pages, API and websockets on one port (standalone).
    All,
    /// Pages and API only; websocket upgrades get 404 (behind nginx, the HTTP pool).
    Http,
    /// Websockets only, plus health (behind nginx, the websocket pool).
    Websocket,
}

impl Mode {
    /// Whether this pool serves plain HTTP pages and the API.
    pub fn serves_http(self) -> bool {
        matches!(self, Mode::All | Mode::Http)
    }

    /// Whether this pool accepts websocket upgrades.
    pub fn serves_websocket(self) -> bool {
        matches!(self, Mode::All | Mode::Websocket)
    }

    /// The lowercase name used in logs and health answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::All => "all",
            Mode::Http => "http",
            Mode::Websocket => "websocket",
        }
    }
}

/// Where websocket identities come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SessionBackend {
    /// This server's own web app: `wsredis:session:` records in Redis (docs/sessions.md).
    Wsredis,
    /// A Django site with `SESSION_ENGINE = "redis_sessions.session"` (django-redis-sessions).
    DjangoRedis,
    /// A Django site with `SESSION_ENGINE = "django.contrib.sessions.backends.db"`.
    DjangoDb,
}

impl SessionBackend {
    /// The name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            SessionBackend::Wsredis => "wsredis",
            SessionBackend::DjangoRedis => "django-redis",
            SessionBackend::DjangoDb => "django-db",
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindAddr {
    /// A TCP address such as `127.0.0.1:8000`.
    Tcp(SocketAddr),
    /// A unix socket path (`unix:/run/wsredis/ws.sock`).
    Unix(PathBuf),
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddr::Tcp(a) => write!(f, "{a}"),
            BindAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Parse `--bind`: `HOST:PORT` or `unix:/path`.
pub fn parse_bind(s: &str) -> Result<BindAddr, String> {
    if let Some(path) = s.strip_prefix("unix:") {
        if path.is_empty() {
            return Err("unix: needs a socket path, e.g. unix:/run/wsredis/ws.sock".into());
        }
        return Ok(BindAddr::Unix(PathBuf::from(path)));
    }
    s.parse::<SocketAddr>()
        .map(BindAddr::Tcp)
        .map_err(|e| format!("`{s}` is not HOST:PORT or unix:/path ({e})"))
}

fn parse_octal_mode(s: &str) -> Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("`{s}` is not an octal file mode such as 660"))
}

fn parse_prefix(s: &str) -> Result<String, String> {
    if s.starts_with('/') && s.ends_with('/') {
        Ok(s.to_owned())
    } else {
        Err(format!("`{s}` must start and end with '/', e.g. /ws/"))
    }
}

/// The value of a django-websocket-redis setting given under its Django name in the
/// environment (`WS4REDIS_PREFIX`, …), as a flag's default: a `--flag` or `WSREDIS_*` variable
/// still wins. Leaked once per process (clap wants `'static` defaults).
fn django_alias(name: &str) -> Option<&'static str> {
    let value = std::env::var(name).ok()?;
    Some(Box::leak(value.into_boxed_str()))
}

fn parse_allowed(s: &str) -> Result<Flags, String> {
    Flags::parse_allowed(s)
}

fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Everything `wsredis serve` needs. Shared by the master and (as JSON) by every worker.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Address to listen on: HOST:PORT, or unix:/path/to.sock for nginx.
    #[arg(long, env = "WSREDIS_BIND", default_value = "127.0.0.1:8000", value_parser = parse_bind)]
    pub bind: BindAddr,

    /// File mode of a unix socket given with --bind unix:..., in octal.
    #[arg(long, env = "WSREDIS_SOCKET_MODE", default_value = "660", value_parser = parse_octal_mode)]
    pub socket_mode: u32,

    /// Number of worker processes [default: the number of CPUs].
    #[arg(long, env = "WSREDIS_WORKERS", default_value_t = default_workers(), hide_default_value = true,
          value_parser = clap::value_parser!(u16).range(1..=512).map(usize::from))]
    pub workers: usize,

    /// Which routes this pool serves: all (standalone), http (pages and API) or websocket.
    #[arg(long, env = "WSREDIS_MODE", value_enum, default_value = "all")]
    pub mode: Mode,

    /// Seconds a stopping worker gets to finish requests and close websockets before it is killed.
    #[arg(long, env = "WSREDIS_GRACEFUL_TIMEOUT", default_value_t = 30)]
    pub graceful_timeout: u64,

    /// A worker whose heartbeat is silent this many seconds is killed and replaced (0 = never).
    #[arg(long, env = "WSREDIS_WORKER_TIMEOUT", default_value_t = 30)]
    pub worker_timeout: u64,

    /// Recycle a worker after this many HTTP requests (0 = never).
    #[arg(long, env = "WSREDIS_MAX_REQUESTS", default_value_t = 0)]
    pub max_requests: u64,

    /// Add a random 0..=N to --max-requests per worker, so workers do not recycle together.
    #[arg(long, env = "WSREDIS_MAX_REQUESTS_JITTER", default_value_t = 0)]
    pub max_requests_jitter: u64,

    /// Write the master's pid to this file (removed on exit).
    #[arg(long, env = "WSREDIS_PID_FILE")]
    pub pid_file: Option<PathBuf>,

    /// Log line format.
    #[arg(long, env = "WSREDIS_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log filter in RUST_LOG syntax (e.g. `info,wsredis::ws=debug`); RUST_LOG is read too.
    #[arg(long, env = "WSREDIS_LOG", default_value = "info")]
    pub log: String,

    /// Append logs to this file instead of stderr; SIGUSR1 reopens it (for logrotate).
    #[arg(long, env = "WSREDIS_LOG_FILE")]
    pub log_file: Option<PathBuf>,

    /// URL prefix of websocket endpoints (django-websocket-redis: WEBSOCKET_URL, also read
    /// under that name).
    #[arg(long, env = "WSREDIS_WEBSOCKET_URL", value_parser = parse_prefix,
          default_value = django_alias("WEBSOCKET_URL").unwrap_or("/ws/"))]
    pub websocket_url: String,

    /// Redis: redis://, rediss://, redis+unix:///path or redis-sentinel://.
    #[arg(
        long,
        env = "WSREDIS_REDIS_URL",
        default_value = "redis://127.0.0.1:6379"
    )]
    pub redis_url: String,

    /// Prefix of every Redis channel and key (django-websocket-redis: WS4REDIS_PREFIX, also
    /// read under that name).
    #[arg(long, env = "WSREDIS_REDIS_PREFIX",
          default_value = django_alias("WS4REDIS_PREFIX").unwrap_or(""))]
    pub redis_prefix: String,

    /// Seconds a published message is kept for replay to sockets that connect later; 0 = off
    /// (django-websocket-redis: WS4REDIS_EXPIRE, also read under that name).
    #[arg(long, env = "WSREDIS_EXPIRE",
          default_value = django_alias("WS4REDIS_EXPIRE").unwrap_or("3600"))]
    pub expire: u64,

    /// Keep a bounded history per channel of a facility, for `wsredis.v1` clients to recover
    /// what they missed (docs/protocol.md): `<facility>=<size>[:<ttl-seconds>]`, repeatable or
    /// comma-separated, `*` for every facility not listed. Off by default (ws4redis behaviour).
    #[arg(long = "history", env = "WSREDIS_HISTORY", value_delimiter = ',',
          value_parser = crate::bus::history::parse_rule)]
    pub history: Vec<HistoryRule>,

    /// Application heartbeat string sent to each socket and never published when received
    /// (django-websocket-redis: WS4REDIS_HEARTBEAT, also read under that name).
    #[arg(long, env = "WSREDIS_HEARTBEAT", default_value = django_alias("WS4REDIS_HEARTBEAT"))]
    pub heartbeat: Option<String>,

    /// Seconds between application heartbeats.
    #[arg(long, env = "WSREDIS_HEARTBEAT_INTERVAL", default_value_t = 4)]
    pub heartbeat_interval: u64,

    /// Seconds between protocol-level pings; a socket silent for two intervals is closed.
    #[arg(long, env = "WSREDIS_PING_INTERVAL", default_value_t = 20)]
    pub ping_interval: u64,

    /// Largest websocket message accepted from a client, in bytes (larger: close 1009).
    #[arg(long, env = "WSREDIS_MAX_MESSAGE_SIZE", default_value_t = 64 * 1024)]
    pub max_message_size: usize,

    /// Most messages queued for one socket; a socket that falls further behind is closed (1013).
    #[arg(long, env = "WSREDIS_SEND_QUEUE", default_value_t = 1024)]
    pub send_queue: usize,

    /// Seconds a client gets to send a request's headers before the connection is closed
    /// (slow-loris guard).
    #[arg(long, env = "WSREDIS_HEADER_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout: u64,

    /// Most open websockets per worker; further websocket upgrades get 503.
    #[arg(long, env = "WSREDIS_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Most open HTTP connections per worker (idle keep-alive, requests in flight, handshakes
    /// not yet upgraded; websockets count against --max-connections instead). A connection
    /// beyond it is answered 503 with Retry-After at once and closed (0 = no limit).
    #[arg(long, env = "WSREDIS_MAX_HTTP_CONNECTIONS", default_value_t = 10_000)]
    pub max_http_connections: usize,

    /// Origins allowed to open websockets (comma-separated, `*` for any); empty = same origin.
    #[arg(long, env = "WSREDIS_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Database of users and groups: sqlite://path or postgres://...
    #[arg(
        long,
        env = "WSREDIS_DATABASE_URL",
        default_value = "sqlite://var/wsredis.sqlite3"
    )]
    pub database_url: String,

    /// Where socket identities come from: this server's web app, or a Django site's sessions
    /// (django-redis-sessions in Redis, or Django's database); see --django-*.
    #[arg(
        long,
        env = "WSREDIS_SESSION_BACKEND",
        value_enum,
        default_value = "wsredis"
    )]
    pub session_backend: SessionBackend,

    /// Channel flags an anonymous socket may use, comma-separated (e.g.
    /// `subscribe-broadcast,publish-broadcast`; `all`, `none`); others are dropped silently,
    /// as WS4REDIS_ALLOWED_CHANNELS does [default: all].
    #[arg(long, env = "WSREDIS_ALLOWED_CHANNELS_ANONYMOUS", value_parser = parse_allowed)]
    pub allowed_channels_anonymous: Option<Flags>,

    /// Channel flags a logged-in (non-staff) socket may use [default: all].
    #[arg(long, env = "WSREDIS_ALLOWED_CHANNELS_AUTHENTICATED", value_parser = parse_allowed)]
    pub allowed_channels_authenticated: Option<Flags>,

    /// Channel flags a staff user's socket may use [default: as authenticated].
    #[arg(long, env = "WSREDIS_ALLOWED_CHANNELS_STAFF", value_parser = parse_allowed)]
    pub allowed_channels_staff: Option<Flags>,

    /// Django's sessions, users and secret key (with --session-backend django-*).
    #[command(flatten)]
    pub django: DjangoSettings,

    /// Redis key prefix of web-app sessions.
    #[arg(
        long,
        env = "WSREDIS_SESSION_PREFIX",
        default_value = "wsredis:session:"
    )]
    pub session_prefix: String,

    /// Seconds a session lives without use.
    #[arg(long, env = "WSREDIS_SESSION_TTL", default_value_t = 1_209_600)]
    pub session_ttl: u64,

    /// Failed logins of one username within --login-window before its logins are refused
    /// (429, without checking the password) until the window ends; 0 = no limit.
    #[arg(long, env = "WSREDIS_LOGIN_MAX_FAILURES", default_value_t = 5)]
    pub login_max_failures: u64,

    /// Failed logins from one client address (see --trusted-proxies) within --login-window
    /// before its logins are refused; 0 = no limit.
    #[arg(long, env = "WSREDIS_LOGIN_MAX_FAILURES_ADDRESS", default_value_t = 20)]
    pub login_max_failures_address: u64,

    /// Seconds, from the first failure, over which failed logins are counted.
    #[arg(long, env = "WSREDIS_LOGIN_WINDOW", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub login_window: u64,

    /// Proxies whose X-Forwarded-For / X-Forwarded-Proto are trusted (comma-separated IPs).
    #[arg(long, env = "WSREDIS_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Bearer token of `POST /api/publish` and `GET /api/messages/…`. Give it through the
    /// environment (WSREDIS_API_TOKEN) or --api-token-file, never on a command line; unset =
    /// the API is disabled.
    #[arg(long = "api-token-file", env = "WSREDIS_API_TOKEN_FILE", value_parser = read_secret_file)]
    pub api_token_file: Option<Secret>,

    /// The API token itself, from the environment only.
    #[arg(skip = std::env::var("WSREDIS_API_TOKEN").ok().filter(|t| !t.is_empty()).map(Secret))]
    pub api_token: Option<Secret>,

    /// Facilities that keep presence (who is connected), comma-separated or repeated; `*` for
    /// all, `none` for none. Each join or leave costs one Lua script per channel in Redis.
    #[arg(
        long,
        env = "WSREDIS_PRESENCE",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub presence: Vec<String>,

    /// Seconds a presence entry lives without a refresh: the entries of a worker or host that
    /// died disappear within this bound.
    #[arg(long, env = "WSREDIS_PRESENCE_TTL", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(2..))]
    pub presence_ttl: u64,

    /// Seconds between two refreshes of a worker's presence entries (less than --presence-ttl).
    #[arg(long, env = "WSREDIS_PRESENCE_REFRESH", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub presence_refresh: u64,

    /// Address of the master's aggregated Prometheus endpoint (`off` to disable).
    #[arg(long, env = "WSREDIS_METRICS_BIND", default_value = "127.0.0.1:9100")]
    pub metrics_bind: String,
}

/// A secret value; its `Debug` output never shows it.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

fn read_secret_file(path: &str) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!("{path} is empty"));
    }
    Ok(Secret(token.to_owned()))
}

impl Config {
    /// The API token, from the file or the environment (the file wins).
    pub fn api_token(&self) -> Option<&str> {
        self.api_token_file
            .as_ref()
            .or(self.api_token.as_ref())
            .map(|s| s.0.as_str())
    }

    /// The channel flags a socket of `identity` may use (`--allowed-channels-*`).
    pub fn allowed_channels(&self, identity: &Identity) -> Option<Flags> {
        if identity.username.is_none() {
            self.allowed_channels_anonymous
        } else if identity.is_staff {
            self.allowed_channels_staff
                .or(self.allowed_channels_authenticated)
        } else {
            self.allowed_channels_authenticated
        }
    }

    /// What history the channels of `facility` keep (`None`: off).
    pub fn history_for(&self, facility: &str) -> Option<Retention> {
        crate::bus::history::retention_for(&self.history, facility)
    }

    /// Graceful stop deadline.
    pub fn graceful(&self) -> Duration {
        Duration::from_secs(self.graceful_timeout)
    }

    /// Check what clap cannot check field by field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.send_queue == 0 {
            return Err(ConfigError::Invalid(
                "--send-queue must be at least 1".into(),
            ));
        }
        if self.max_message_size < 125 {
            return Err(ConfigError::Invalid(
                "--max-message-size must be at least 125 bytes".into(),
            ));
        }
        if self.heartbeat.as_deref() == Some("") {
            return Err(ConfigError::Invalid("--heartbeat must not be empty".into()));
        }
        if self.api_token().is_some_and(|t| t.len() < 16) {
            return Err(ConfigError::Invalid(
                "the API token must be at least 16 characters".into(),
            ));
        }
        if self.heartbeat_interval == 0 || self.ping_interval == 0 {
            return Err(ConfigError::Invalid(
                "--heartbeat-interval and --ping-interval must be at least 1 second".into(),
            ));
        }
        if self.presence_refresh >= self.presence_ttl {
            return Err(ConfigError::Invalid(
                "--presence-refresh must be shorter than --presence-ttl".into(),
            ));
        }
        if self.session_backend != SessionBackend::Wsredis {
            if self.django.secret_keys().is_none() {
                return Err(ConfigError::Invalid(format!(
                    "--session-backend {} needs Django's SECRET_KEY: set DJANGO_SECRET_KEY or \
                     --django-secret-key-file",
                    self.session_backend.as_str()
                )));
            }
            match self.django.django_database_url.as_deref() {
                None => {
                    return Err(ConfigError::Invalid(format!(
                        "--session-backend {} needs --django-database-url (auth_user is read \
                         there)",
                        self.session_backend.as_str()
                    )));
                }
                Some(url) => {
                    crate::store::backend_of(url)
                        .map_err(|e| ConfigError::Invalid(format!("--django-database-url: {e}")))?;
                }
            }
        }
        Ok(())
    }

    /// Serialize for a worker's environment.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("Config is plain data")
    }

    /// Read back what [`Config::to_json`] wrote.
    pub fn from_json(s: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(s).map_err(|e| ConfigError::Invalid(format!("worker config: {e}")))
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_accepts_tcp_and_unix() {
        assert_eq!(
            parse_bind("127.0.0.1:8000").unwrap(),
            BindAddr::Tcp("127.0.0.1:8000".parse().unwrap())
        );
        assert_eq!(
            parse_bind("unix:/tmp/a.sock").unwrap(),
            BindAddr::Unix("/tmp/a.sock".into())
        );
        assert!(parse_bind("unix:").is_err());
        assert!(parse_bind("localhost").is_err());
    }

    #[test]
    fn modes_and_prefix() {
        assert_eq!(parse_octal_mode("660").unwrap(), 0o660);
        assert!(parse_octal_mode("999").is_err());
        assert!(parse_prefix("/ws/").is_ok());
        assert!(parse_prefix("ws").is_err());
        assert!(Mode::Http.serves_http() && !Mode::Http.serves_websocket());
    }
}
