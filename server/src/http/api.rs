//! The server-side publish API, for backends in any language: the counterpart of
//! django-websocket-redis's `RedisPublisher`.
//!
//! - `POST /api/publish` with a JSON body `{"facility", "broadcast", "users", "groups",
//!   "sessions", "message", "expire"}` publishes `message` to each named channel (and stores
//!   it for replay unless `expire` is 0), exactly as a ws4redis `RedisPublisher` would; on a
//!   facility with `--history` the message also enters the channel's history.
//! - `GET /api/messages/{facility}?broadcast&user=U&group=G&session=S` returns what is stored
//!   on those channels, like `RedisPublisher.fetch_message`.
//!
//! - `GET /api/presence/{facility}`: who is connected (see `http::presence`, which also lets
//!   logged-in sessions in).
//!
//! Publish and messages need `Authorization: Bearer <token>` with the token of `WSREDIS_API_TOKEN` (or
//! `--api-token-file`), compared in constant time. Without a configured token the API is off.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::Request;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;

use super::response::{self, Response};
use crate::bus::BusError;
use crate::bus::channels::{Namer, validate_facility, validate_personal_facility};
use crate::worker::App;

/// What a publish request may name at most, so one request cannot fan out unboundedly.
const MAX_TARGETS: usize = 1000;

/// Why an API request failed; turned into a status in [`error_response`].
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No token is configured.
    #[error("the publish API is disabled: set WSREDIS_API_TOKEN (or --api-token-file)")]
    Disabled,
    /// Missing or wrong bearer token.
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// Authenticated, but not allowed to see this.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The body is not what the API takes.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The body is larger than allowed.
    #[error("request body too large")]
    TooLarge,
    /// Redis cannot be reached: nothing was published.
    #[error("redis unavailable: nothing was published")]
    Unavailable,
    /// Redis cannot be reached: nothing could be read (presence, stored messages).
    #[error("redis unavailable: nothing could be read, try again shortly")]
    ReadUnavailable,
    /// Redis refused.
    #[error("redis error: {0}")]
    Redis(String),
    /// Not an API route or method.
    #[error("not found")]
    NotFound,
}

impl From<BusError> for ApiError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Unavailable => ApiError::Unavailable,
            other => ApiError::Redis(other.to_string()),
        }
    }
}

impl ApiError {
    /// A failed Redis read (not a publish): unavailable means nothing could be read.
    pub(crate) fn read(e: BusError) -> Self {
        match e {
            BusError::Unavailable => ApiError::ReadUnavailable,
            other => other.into(),
        }
    }
}

fn error_response(e: &ApiError) -> Response {
    let status = match e {
        ApiError::Disabled | ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
        ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::Unavailable | ApiError::ReadUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ApiError::Redis(_) => StatusCode::BAD_GATEWAY,
        ApiError::NotFound => StatusCode::NOT_FOUND,
    };
    let mut r = response::json(status, &json!({ "error": e.to_string() }));
    if matches!(e, ApiError::Unauthorized) {
        r.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    r
}

/// A publish request: the `RedisPublisher(facility=…, broadcast=…, users=…, …)` arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The facility (the part of the websocket URL after the prefix).
    pub facility: String,
    /// Publish on the broadcast channel.
    #[serde(default)]
    pub broadcast: bool,
    /// Usernames whose user channel gets the message.
    #[serde(default)]
    pub users: Vec<String>,
    /// Group names whose group channel gets the message.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Session keys whose session channel gets the message.
    #[serde(default)]
    pub sessions: Vec<String>,
    /// The message, sent to sockets as a text frame.
    pub message: String,
    /// Seconds to store it for replay (default: the server's `--expire`; 0 = not stored).
    #[serde(default)]
    pub expire: Option<u64>,
}

/// Answer a request under `/api/`.
pub async fn handle(app: &Arc<App>, req: Request<Incoming>) -> Response {
    match route(app, req).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(e, ApiError::Unavailable) {
                app.slot
                    .publish_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            error_response(&e)
        }
    }
}

async fn route(app: &Arc<App>, req: Request<Incoming>) -> Result<Response, ApiError> {
    if req.uri().path().starts_with(super::presence::PREFIX) {
        // Also open to logged-in sessions, so it authorizes on its own.
        return super::presence::handle(app, &req).await;
    }
    authorize(app, &req)?;
    let path = req.uri().path().to_owned();
    match (req.method().clone(), path.as_str()) {
        (Method::POST, "/api/publish") => {
            let limit = app.config.max_message_size * 2 + 64 * 1024;
            let body = Limited::new(req.into_body(), limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        ApiError::TooLarge
                    } else {
                        ApiError::BadRequest(format!("cannot read the body: {e}"))
                    }
                })?
                .to_bytes();
            let p: Publish = serde_json::from_slice(&body)
                .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
            publish(app, p).await
        }
        (Method::GET, p) if p.starts_with("/api/messages/") => {
            let facility = percent_encoding::percent_decode_str(&p["/api/messages/".len()..])
                .decode_utf8()
                .map_err(|_| ApiError::BadRequest("facility is not UTF-8".into()))?
                .into_owned();
            messages(app, &facility, req.uri().query().unwrap_or("")).await
        }
        _ => Err(ApiError::NotFound),
    }
}

/// Check the bearer token (constant time).
pub(super) fn authorize(app: &App, req: &Request<Incoming>) -> Result<(), ApiError> {
    let Some(token) = app.config.api_token() else {
        return Err(ApiError::Disabled);
    };
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if given.len() == token.len() && bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// A user, group or session name: non-empty, no whitespace, control or glob characters.
fn check_name(kind: &str, name: &str) -> Result<(), ApiError> {
    let bad = name.is_empty()
        || name.len() > 200
        || name
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || "*?[]".contains(c));
    if bad {
        return Err(ApiError::BadRequest(format!(
            "invalid {kind} name `{name}`"
        )));
    }
    Ok(())
}

/// The channels a publish request names, in ws4redis order.
pub fn channels_of(n: &Namer, p: &Publish) -> Result<Vec<String>, ApiError> {
    validate_facility(&p.facility).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let targets = usize::from(p.broadcast) + p.users.len() + p.groups.len() + p.sessions.len();
    if targets == 0 {
        return Err(ApiError::BadRequest(
            "name at least one audience: broadcast, users, groups or sessions".into(),
        ));
    }
    if targets > MAX_TARGETS {
        return Err(ApiError::BadRequest(format!(
            "at most {MAX_TARGETS} audiences per request"
        )));
    }
    let f = p.facility.as_str();
    if targets > usize::from(p.broadcast) {
        validate_personal_facility(f).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let mut out = Vec::with_capacity(targets);
    if p.broadcast {
        out.push(n.broadcast(f));
    }
    for u in &p.users {
        check_name("user", u)?;
        out.push(n.user(u, f));
    }
    for g in &p.groups {
        check_name("group", g)?;
        out.push(n.group(g, f));
    }
    for s in &p.sessions {
        check_name("session", s)?;
        out.push(n.session(s, f));
    }
    out.dedup();
    Ok(out)
}

async fn publish(app: &App, p: Publish) -> Result<Response, ApiError> {
    if p.message.len() > app.config.max_message_size {
        return Err(ApiError::TooLarge);
    }
    let channels = channels_of(&app.namer, &p)?;
    let expire = p.expire.unwrap_or(app.config.expire);
    let receivers = app
        .bus
        .publish_with(
            &channels,
            Bytes::from(p.message),
            expire,
            app.config.history_for(&p.facility),
        )
        .await?;
    app.slot
        .published
        .fetch_add(channels.len() as u64, std::sync::atomic::Ordering::Relaxed);
    Ok(response::json(
        StatusCode::OK,
        &json!({ "channels": channels, "receivers": receivers }),
    ))
}

async fn messages(app: &App, facility: &str, query: &str) -> Result<Response, ApiError> {
    let mut p = Publish {
        facility: facility.to_owned(),
        broadcast: false,
        users: Vec::new(),
        groups: Vec::new(),
        sessions: Vec::new(),
        message: String::new(),
        expire: None,
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query)
        .map_err(|e| ApiError::BadRequest(format!("bad query: {e}")))?;
    for (k, v) in pairs {
        match k.as_str() {
            "broadcast" => p.broadcast = true,
            "user" => p.users.push(v),
            "group" => p.groups.push(v),
            "session" => p.sessions.push(v),
            _ => {}
        }
    }
    let channels = channels_of(&app.namer, &p)?;
    let mut found = serde_json::Map::new();
    for ch in channels {
        let stored = app.bus.stored(std::slice::from_ref(&ch)).await;
        if let Some(m) = stored.map_err(ApiError::read)?.pop() {
            found.insert(ch, String::from_utf8_lossy(&m).into_owned().into());
        }
    }
    Ok(response::json(
        StatusCode::OK,
        &json!({ "messages": found }),
    ))
}
