//! `GET /api/presence/{facility}`: who is connected on each channel of a facility.
//!
//! The answer is `{"facility": F, "channels": {LABEL: {"users": [...], "anonymous": N}, ...}}`
//! with labels `broadcast`, `user:<u>`, `group:<g>`; session channels appear together as
//! `"session": {"connections": N}` (never a session key). Channels with nobody are left out.
//!
//! Who may ask:
//! - the API token (`Authorization: Bearer …`, as for `/api/publish`) sees every channel;
//! - a logged-in session (cookie) sees the channels it could subscribe to itself: `broadcast`,
//!   its own `user:` channel and its groups' channels (not `session`);
//! - anonymous requests get 403: presence lists user names, which a visitor who has not
//!   logged in has no business reading. A wrong token is 401, even with a session cookie.
//!
//! A facility without presence (`--presence`) is 404.

use std::sync::Arc;

use http::StatusCode;
use hyper::Request;
use hyper::body::Incoming;
use serde_json::{Map, json};

use super::api::{ApiError, authorize};
use super::response::{self, Response};
use crate::bus::channels::{Identity, validate_facility};
use crate::presence::SESSION_LABEL;
use crate::worker::App;
use crate::ws::handshake::HandshakeError;

/// The route's prefix.
pub const PREFIX: &str = "/api/presence/";

/// Who asks, and so which labels they see.
#[derive(Debug, PartialEq, Eq)]
enum Reader {
    /// The API token: everything.
    Token,
    /// A logged-in user: their own audiences.
    User(Identity),
}

impl Reader {
    fn sees(&self, label: &str) -> bool {
        match self {
            Reader::Token => true,
            Reader::User(id) => {
                label == "broadcast"
                    || id
                        .username
                        .as_deref()
                        .is_some_and(|u| label.strip_prefix("user:") == Some(u))
                    || label
                        .strip_prefix("group:")
                        .is_some_and(|g| id.groups.iter().any(|mine| mine == g))
            }
        }
    }
}

/// Answer `GET /api/presence/{facility}`.
pub async fn handle(app: &Arc<App>, req: &Request<Incoming>) -> Result<Response, ApiError> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return Err(ApiError::NotFound);
    }
    let reader = reader(app, req).await?;
    let raw = &req.uri().path()[PREFIX.len()..];
    let facility = percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| ApiError::BadRequest("facility is not UTF-8".into()))?;
    validate_facility(&facility).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if !app.presence.enabled(&facility) {
        return Err(ApiError::NotFound);
    }
    let mut channels = Map::new();
    let counts = app.presence.facility(&facility).await;
    for (label, counts) in counts.map_err(ApiError::read)? {
        if reader.sees(&label) {
            channels.insert(label.clone(), counts.to_json(&label));
        }
    }
    debug_assert!(reader == Reader::Token || !channels.contains_key(SESSION_LABEL));
    Ok(response::json(
        StatusCode::OK,
        &json!({ "facility": facility, "channels": channels }),
    ))
}

async fn reader(app: &App, req: &Request<Incoming>) -> Result<Reader, ApiError> {
    if req.headers().contains_key(http::header::AUTHORIZATION) {
        authorize(app, req)?;
        return Ok(Reader::Token);
    }
    let identity = crate::ws::identity_of(app, req)
        .await
        .map_err(|e| match e {
            HandshakeError::Unavailable => ApiError::ReadUnavailable,
            other => ApiError::BadRequest(other.to_string()),
        })?;
    if identity.username.is_none() {
        return Err(ApiError::Forbidden(
            "log in (or use the API token) to see who is connected".into(),
        ));
    }
    Ok(Reader::User(identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_sees_only_own_audiences() {
        let alice = Reader::User(Identity {
            username: Some("alice".into()),
            groups: vec!["ops".into()],
            session_key: Some("k".into()),
            is_staff: false,
        });
        for label in ["broadcast", "user:alice", "group:ops"] {
            assert!(alice.sees(label), "{label}");
        }
        for label in ["user:bob", "group:dev", "session", "user:", "group:"] {
            assert!(!alice.sees(label), "{label}");
        }
        assert!(Reader::Token.sees("session") && Reader::Token.sees("user:bob"));
    }
}
