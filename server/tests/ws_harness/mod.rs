//! Test host for `ws::session::run`: a loopback listener that does what the worker's upgrade
//! handler will do (flags, facility, identity, channel plan with 403/400 before the upgrade,
//! `websocket_config`), plus websocket clients and async waiting helpers.
//!
//! Identity comes from test-only request headers (`x-user`, `x-groups`, `x-session`), standing
//! in for the session store.
#![allow(dead_code, unreachable_pub)]
// tungstenite fixes the callback's error type (an http::Response).
#![allow(clippy::result_large_err)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use wsredis::bus::Bus;
use wsredis::config::Config;
use wsredis::ws::{
    ChannelError, Channels, CloseReason, Flags, Identity, Namer, SessionCtx, Settings, Stats,
    flags, websocket_config,
};

use crate::common::RedisServer;

/// Generous bound for anything that should happen "soon".
pub const SOON: Duration = Duration::from_secs(10);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    config: Config,
}

/// A Config as `wsredis serve --redis-url URL ARGS...` would build it.
pub fn config(redis: &RedisServer, args: &[&str]) -> Config {
    let url = redis.url();
    let mut argv = vec!["wsredis", "--redis-url", url.as_str()];
    argv.extend_from_slice(args);
    let config = Cli::parse_from(argv).config;
    config.validate().expect("valid test config");
    config
}

/// A client socket.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What a client socket runs on.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Io for T {}

/// One in-process "worker": a bus and a listener hosting sessions.
pub struct Server {
    pub addr: SocketAddr,
    pub bus: Bus,
    pub stats: Arc<Stats>,
    pub shutdown: CancellationToken,
    /// Channels of the most recently accepted socket.
    pub last_channels: Arc<Mutex<Option<Channels>>>,
}

impl Server {
    pub async fn start(config: Config) -> Server {
        Self::start_with(config, |_| {}).await
    }

    /// Start with a hook to adjust the session settings (timeouts).
    pub async fn start_with(config: Config, tweak: impl FnOnce(&mut Settings)) -> Server {
        let bus = Bus::connect(&config).await.expect("bus");
        let mut settings = Settings::from_config(&config);
        tweak(&mut settings);
        let settings = Arc::new(settings);
        let stats = Arc::new(Stats::default());
        let shutdown = CancellationToken::new();
        let last_channels = Arc::new(Mutex::new(None));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let host = Host {
            bus: bus.clone(),
            config: Arc::new(config),
            settings,
            stats: stats.clone(),
            shutdown: shutdown.clone(),
            last_channels: last_channels.clone(),
        };
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let host = host.clone();
                tokio::spawn(async move { host.serve(tcp).await });
            }
        });
        Server {
            addr,
            bus,
            stats,
            shutdown,
            last_channels,
        }
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://{}{path_and_query}", self.addr)
    }

    /// Connect with `identity` and wait until the session runs and Redis has its channels.
    pub async fn connect(&self, redis: &RedisServer, pq: &str, identity: &Identity) -> Client {
        let before = self.stats.opened.load(Ordering::Relaxed);
        let (client, _) = tokio_tungstenite::connect_async(request(&self.url(pq), identity))
            .await
            .expect("handshake");
        self.wait_opened(before + 1).await;
        let channels = self
            .last_channels
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_default();
        wait_subscribed(redis, &channels.subscribe).await;
        client
    }

    /// [`Server::connect`] as an anonymous socket.
    pub async fn anon(&self, redis: &RedisServer, pq: &str) -> Client {
        self.connect(redis, pq, &Identity::anonymous()).await
    }

    /// Expect the server to close `client` with `code` (and `reason`, unless empty), counted
    /// under `why` once the closing handshake is over.
    pub async fn expect_close<S: Io>(
        &self,
        client: &mut WebSocketStream<S>,
        code: u16,
        reason: &str,
        why: CloseReason,
    ) {
        let (got_code, got_reason) = next_close(client).await;
        assert_eq!(got_code, code, "close code ({got_reason})");
        if !reason.is_empty() {
            assert_eq!(got_reason, reason);
        }
        let stats = self.stats.clone();
        eventually(why.as_str(), || stats.closed(why) == 1).await;
    }

    pub async fn wait_opened(&self, n: u64) {
        let stats = self.stats.clone();
        eventually("session started", || {
            stats.opened.load(Ordering::Relaxed) >= n
        })
        .await;
    }
}

/// A private redis-server and a server on it started with `args`.
pub async fn setup(args: &[&str]) -> (RedisServer, Server) {
    let redis = RedisServer::start();
    let server = Server::start(config(&redis, args)).await;
    (redis, server)
}

/// A client request with the test identity headers.
pub fn request(
    url: &str,
    identity: &Identity,
) -> tokio_tungstenite::tungstenite::handshake::client::Request {
    let mut req = url.into_client_request().unwrap();
    let h = req.headers_mut();
    if let Some(u) = &identity.username {
        h.insert("x-user", u.parse().unwrap());
    }
    if !identity.groups.is_empty() {
        h.insert("x-groups", identity.groups.join(",").parse().unwrap());
    }
    if let Some(s) = &identity.session_key {
        h.insert("x-session", s.parse().unwrap());
    }
    req
}

/// A logged-in identity.
pub fn user(name: &str, groups: &[&str], session: &str) -> Identity {
    Identity {
        username: Some(name.into()),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        session_key: Some(session.into()),
        is_staff: false,
    }
}

#[derive(Clone)]
struct Host {
    bus: Bus,
    config: Arc<Config>,
    settings: Arc<Settings>,
    stats: Arc<Stats>,
    shutdown: CancellationToken,
    last_channels: Arc<Mutex<Option<Channels>>>,
}

impl Host {
    async fn serve(self, tcp: TcpStream) {
        let namer = Namer::new(&self.config.redis_prefix);
        let mut plan: Option<(Channels, bool)> = None;
        let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            let uri = req.uri();
            let flags = Flags::parse(uri.query().unwrap_or(""));
            let facility = flags::facility(uri.path(), &self.config.websocket_url)
                .ok_or_else(|| reject(StatusCode::NOT_FOUND, "not a websocket path"))?;
            let identity = identity_from(req);
            match namer.plan(&facility, &identity, flags.subscribe(), flags.publish()) {
                Ok(channels) => {
                    plan = Some((channels, flags.echo));
                    Ok(resp)
                }
                Err(e @ ChannelError::Forbidden(_)) => {
                    Err(reject(StatusCode::FORBIDDEN, &e.to_string()))
                }
                Err(e @ ChannelError::InvalidFacility(_)) => {
                    Err(reject(StatusCode::BAD_REQUEST, &e.to_string()))
                }
            }
        };
        let ws = tokio_tungstenite::accept_hdr_async_with_config(
            wsredis::ws::Wire::new(tcp),
            callback,
            Some(websocket_config(&self.config)),
        )
        .await;
        let (Ok(ws), Some((channels, echo))) = (ws, plan) else {
            return;
        };
        *self.last_channels.lock().unwrap() = Some(channels.clone());
        let ctx = SessionCtx {
            bus: self.bus.clone(),
            channels,
            echo,
            settings: self.settings.clone(),
            stats: self.stats.clone(),
            presence: None,
            history: None,
            envelope: None,
        };
        wsredis::ws::run(ws, ctx, self.shutdown.clone()).await;
    }
}

fn reject(status: StatusCode, body: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(body.to_owned()));
    *r.status_mut() = status;
    r
}

fn identity_from(req: &Request) -> Identity {
    let get = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Identity {
        username: get("x-user"),
        groups: get("x-groups")
            .map(|g| g.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
        session_key: get("x-session"),
        is_staff: false,
    }
}

/// The HTTP status of a refused handshake.
pub fn refused_status(err: WsError) -> u16 {
    match err {
        WsError::Http(resp) => resp.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

/// Poll `cond` every 10 ms until true; panic with `what` after [`SOON`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + SOON;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Wait until Redis reports a subscriber on every channel.
pub async fn wait_subscribed(redis: &RedisServer, channels: &[String]) {
    for ch in channels {
        eventually(&format!("SUBSCRIBE {ch}"), || numsub(redis, ch) >= 1).await;
    }
}

/// `PUBSUB NUMSUB channel`.
pub fn numsub(redis: &RedisServer, channel: &str) -> u64 {
    let out = redis.cli(&["PUBSUB", "NUMSUB", channel]);
    out.lines()
        .nth(1)
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The next data frame (text or binary); pings, pongs and heartbeats `skip` are skipped.
pub async fn next_data<S: Io>(client: &mut WebSocketStream<S>, skip: Option<&str>) -> Message {
    loop {
        let msg = within(SOON, client.next())
            .await
            .expect("socket ended")
            .expect("socket error");
        match &msg {
            Message::Ping(_) | Message::Pong(_) => continue,
            Message::Text(t) if Some(t.as_str()) == skip => continue,
            _ => return msg,
        }
    }
}

/// The next text message.
pub async fn next_text<S: Io>(client: &mut WebSocketStream<S>) -> String {
    match next_data(client, None).await {
        Message::Text(t) => t.as_str().to_owned(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The close frame the server sends next (data before it is skipped): (code, reason).
pub async fn next_close<S: Io>(client: &mut WebSocketStream<S>) -> (u16, String) {
    loop {
        match within(SOON, client.next()).await {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(Message::Close(None))) => return (1005, String::new()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Await `fut`, panicking after `limit`.
pub async fn within<T>(limit: Duration, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, fut)
        .await
        .expect("timed out waiting")
}
