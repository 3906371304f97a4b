//! The three ways a message reaches the server: a websocket with `publish-broadcast` (the old
//! stress test's sender), `POST /api/publish` (the web app's API), and `PUBLISH` + `SET … EX`
//! straight to Redis (what Django's `RedisPublisher` does).
//!
//! Invariant: `publish` returns once the message has left (websocket) or was acknowledged
//! (API status, Redis replies); a refusal is an error, never a silent drop.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client::{self, ClientError, Conn, Endpoint};

/// Which publisher to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A websocket `/ws/<facility>?publish-broadcast` (broadcast only).
    Ws,
    /// `POST /api/publish` with a bearer token.
    Api,
    /// `PUBLISH` and `SET … EX` on Redis directly.
    Redis,
}

/// Who a message is for.
#[derive(Debug, Clone)]
pub enum Audience {
    /// Everybody on the facility.
    Broadcast,
    /// One user's sockets on the facility.
    User(String),
}

/// Errors of a publisher.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The websocket publisher failed.
    #[error("websocket publisher: {0}")]
    Ws(#[from] ClientError),
    /// The connection to the API or Redis failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The API or Redis refused the message.
    #[error("refused: {0}")]
    Refused(String),
    /// This mode cannot address this audience.
    #[error("the {0:?} publisher cannot send to single users")]
    Unsupported(Mode),
}

/// Where publishers connect.
#[derive(Debug, Clone)]
pub struct Targets {
    /// The websocket/HTTP server.
    pub server: Endpoint,
    /// Redis (`host:port`), for the Redis mode.
    pub redis: Option<SocketAddr>,
    /// Bearer token of `/api/publish`.
    pub api_token: String,
    /// The server's `--redis-prefix` (channel names), usually empty.
    pub redis_prefix: String,
    /// Seconds the Redis mode stores the message for replay (`SET … EX`); 0 = not stored.
    pub expire: u64,
}

/// A connected publisher.
#[derive(Debug)]
pub enum Publisher {
    /// See [`Mode::Ws`].
    Ws(Conn),
    /// See [`Mode::Api`].
    Api(Plain),
    /// See [`Mode::Redis`].
    Redis(Plain),
}

/// A plain TCP connection with a read buffer (HTTP/1.1 keep-alive or RESP).
#[derive(Debug)]
pub struct Plain {
    stream: TcpStream,
    buf: BytesMut,
    /// RESP replies not read yet: Redis publishes are pipelined, like a websocket
    /// publisher's frames, instead of waiting a round trip each.
    unanswered: usize,
}

/// Most Redis replies left unread before a publish waits for the oldest.
const MAX_UNANSWERED: usize = 1024;

impl Publisher {
    /// Connect a publisher of `mode` for `facility`. The websocket one also subscribes and
    /// echoes (`echo`), so the caller can see its own message come back through Redis.
    pub async fn connect(
        mode: Mode,
        targets: &Targets,
        facility: &str,
    ) -> Result<Self, PublishError> {
        Ok(match mode {
            Mode::Ws => Publisher::Ws(
                Conn::open(
                    &targets.server,
                    &format!("/ws/{facility}?publish-broadcast"),
                    "",
                    None,
                )
                .await?,
            ),
            Mode::Api => Publisher::Api(Plain::connect(targets.server.addr).await?),
            Mode::Redis => {
                let addr = targets.redis.ok_or_else(|| {
                    PublishError::Refused("the Redis mode needs --redis-url".into())
                })?;
                Publisher::Redis(Plain::connect(addr).await?)
            }
        })
    }

    /// Wait until everything published so far has been taken by the server (the Redis mode
    /// pipelines its commands): their replies read, an error among them returned.
    pub async fn settle(&mut self) -> Result<(), PublishError> {
        match self {
            Publisher::Redis(resp) => resp.settle().await,
            Publisher::Ws(_) | Publisher::Api(_) => Ok(()),
        }
    }

    /// Publish `body` on `facility` to `audience` (the Redis mode does not wait for Redis's
    /// answer: see [`Publisher::settle`]).
    pub async fn publish(
        &mut self,
        targets: &Targets,
        facility: &str,
        audience: &Audience,
        body: &[u8],
    ) -> Result<(), PublishError> {
        match self {
            Publisher::Ws(conn) => match audience {
                Audience::Broadcast => Ok(conn.send_text(body).await?),
                Audience::User(_) => Err(PublishError::Unsupported(Mode::Ws)),
            },
            Publisher::Api(http) => http.api(targets, facility, audience, body).await,
            Publisher::Redis(resp) => {
                let p = &targets.redis_prefix;
                let channel = match audience {
                    Audience::Broadcast => format!("{p}broadcast:{facility}"),
                    Audience::User(u) => format!("{p}user:{u}:{facility}"),
                };
                resp.publish(&channel, body, targets.expire).await
            }
        }
    }
}

impl Plain {
    async fn connect(addr: SocketAddr) -> Result<Self, PublishError> {
        Ok(Plain {
            stream: client::tcp_connect(addr, None).await?,
            buf: BytesMut::with_capacity(4096),
            unanswered: 0,
        })
    }

    async fn api(
        &mut self,
        targets: &Targets,
        facility: &str,
        audience: &Audience,
        body: &[u8],
    ) -> Result<(), PublishError> {
        let message = String::from_utf8_lossy(body);
        let users: Vec<&str> = match audience {
            Audience::Broadcast => vec![],
            Audience::User(u) => vec![u.as_str()],
        };
        let json = serde_json::json!({
            "facility": facility,
            "broadcast": matches!(audience, Audience::Broadcast),
            "users": users, "groups": [], "sessions": [],
            "message": message,
        })
        .to_string();
        let req = format!(
            "POST /api/publish HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{json}",
            targets.server.host,
            targets.api_token,
            json.len()
        );
        self.stream.write_all(req.as_bytes()).await?;
        let (status, _) = self.read_http_response().await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(PublishError::Refused(format!(
                "/api/publish answered {status}"
            )))
        }
    }

    /// Read one HTTP/1.1 response with a Content-Length body; returns (status, body).
    async fn read_http_response(&mut self) -> Result<(u16, Vec<u8>), PublishError> {
        let head_end = loop {
            if let Some(i) = client::find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| PublishError::Refused(format!("bad response: {head}")))?;
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while self.buf.len() < head_end + len {
            self.fill().await?;
        }
        let body = self.buf.split_to(head_end + len)[head_end..].to_vec();
        Ok((status, body))
    }

    async fn fill(&mut self) -> Result<(), PublishError> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(PublishError::Refused("connection closed".into()));
        }
        Ok(())
    }

    /// `PUBLISH channel body` and, when `expire > 0`, `SET channel body EX expire`, pipelined.
    async fn publish(
        &mut self,
        channel: &str,
        body: &[u8],
        expire: u64,
    ) -> Result<(), PublishError> {
        let mut cmd = Vec::with_capacity(body.len() * 2 + 128);
        resp_command(&mut cmd, &[b"PUBLISH", channel.as_bytes(), body]);
        let replies = if expire > 0 {
            let ex = expire.to_string();
            resp_command(
                &mut cmd,
                &[b"SET", channel.as_bytes(), body, b"EX", ex.as_bytes()],
            );
            2
        } else {
            1
        };
        self.stream.write_all(&cmd).await?;
        self.unanswered += replies;
        while self.unanswered > MAX_UNANSWERED {
            self.read_resp_line().await?;
            self.unanswered -= 1;
        }
        Ok(())
    }

    /// Read every reply still owed; the first error among them is returned.
    async fn settle(&mut self) -> Result<(), PublishError> {
        let mut first_error = Ok(());
        while self.unanswered > 0 {
            let r = self.read_resp_line().await;
            self.unanswered -= 1;
            match r {
                Err(PublishError::Refused(e)) if first_error.is_ok() => {
                    first_error = Err(PublishError::Refused(e));
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        first_error
    }

    /// Send one RESP command and return its (single-line) reply.
    pub async fn command(&mut self, args: &[&[u8]]) -> Result<String, PublishError> {
        self.settle().await?;
        let mut cmd = Vec::new();
        resp_command(&mut cmd, args);
        self.stream.write_all(&cmd).await?;
        self.read_resp_line().await
    }

    /// Read one simple reply (`+OK`, `:1`); errors (`-ERR`) become `Refused`.
    async fn read_resp_line(&mut self) -> Result<String, PublishError> {
        let end = loop {
            if let Some(i) = client::find(&self.buf, b"\r\n") {
                break i;
            }
            self.fill().await?;
        };
        let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        let _ = self.buf.split_to(end + 2);
        if let Some(err) = line.strip_prefix('-') {
            return Err(PublishError::Refused(err.to_owned()));
        }
        Ok(line)
    }
}

/// A plain Redis connection (for setting up sessions in the chat scenario).
pub async fn redis(addr: SocketAddr) -> Result<Plain, PublishError> {
    Plain::connect(addr).await
}

fn resp_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}
