//! Validating a websocket upgrade request before we answer 101.
//!
//! Checked in the order django-websocket-redis checks (method, protocol, Upgrade), then what it
//! never checked: `Connection: upgrade`, the version, a well-formed key and the `Origin`.

use base64::Engine as _;
use http::header::{CONNECTION, HOST, ORIGIN, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use http::{HeaderMap, Method, Request, Version};

/// Why an upgrade was refused. Mapped to a status in `http::response::handshake_error`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not a GET.
    #[error("websocket handshake must be a GET; the client must upgrade to a websocket")]
    NotGet,
    /// Not HTTP/1.1.
    #[error("websocket handshake must use HTTP/1.1; the client must upgrade to a websocket")]
    NotHttp11,
    /// No `Upgrade: websocket` / `Connection: upgrade`.
    #[error(
        "this URL serves websockets: the client must upgrade to a websocket \
         (Connection: Upgrade, Upgrade: websocket)"
    )]
    NotUpgrade,
    /// Missing or unsupported `Sec-WebSocket-Version`.
    #[error("unsupported websocket version; this server speaks version 13")]
    Version,
    /// Missing or malformed `Sec-WebSocket-Key`.
    #[error("Sec-WebSocket-Key must be the base64 of 16 bytes")]
    BadKey,
    /// `Origin` not allowed.
    #[error("websocket connections from this origin are not allowed")]
    Origin,
    /// The socket's session may not use a requested flag.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The facility or query is unusable.
    #[error("bad websocket request: {0}")]
    BadRequest(String),
    /// The worker is at its connection limit or draining.
    #[error("server busy, try again")]
    Busy,
    /// The session store (Redis) cannot be reached to identify the socket.
    #[error("sessions are unavailable (Redis is down); try again shortly")]
    Unavailable,
}

/// Whether a comma-separated header contains `token` (case-insensitive).
pub fn header_has_token(h: &HeaderMap, name: http::HeaderName, token: &str) -> bool {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether the request asks for a websocket at all (used to route, before validation).
pub fn wants_upgrade<B>(req: &Request<B>) -> bool {
    header_has_token(req.headers(), UPGRADE, "websocket")
}

/// Validate the handshake; returns the `Sec-WebSocket-Accept` value.
pub fn check<B>(req: &Request<B>, allowed_origins: &[String]) -> Result<String, HandshakeError> {
    if req.method() != Method::GET {
        return Err(HandshakeError::NotGet);
    }
    if req.version() != Version::HTTP_11 {
        return Err(HandshakeError::NotHttp11);
    }
    let h = req.headers();
    if !header_has_token(h, UPGRADE, "websocket") || !header_has_token(h, CONNECTION, "upgrade") {
        return Err(HandshakeError::NotUpgrade);
    }
    if h.get(SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err(HandshakeError::Version);
    }
    let key = h.get(SEC_WEBSOCKET_KEY).ok_or(HandshakeError::BadKey)?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(key.as_bytes())
        .map_err(|_| HandshakeError::BadKey)?;
    if decoded.len() != 16 {
        return Err(HandshakeError::BadKey);
    }
    if !origin_allowed(h, allowed_origins) {
        return Err(HandshakeError::Origin);
    }
    Ok(tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Same-origin by default; `*` allows any; otherwise the exact origins listed. A request
/// without `Origin` is not from a browser and cannot carry a visitor's cookie cross-site.
fn origin_allowed(h: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = h.get(ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.iter().any(|a| a == "*") {
        return true;
    }
    if !allowed.is_empty() {
        return allowed
            .iter()
            .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin));
    }
    let host = h.get(HOST).and_then(|v| v.to_str().ok());
    let origin_host = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    matches!((host, origin_host), (Some(h), Some(o)) if h.eq_ignore_ascii_case(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: &str, key: &str, origin: Option<&str>) -> Request<()> {
        let mut b = Request::get("/ws/foo")
            .header(HOST, "example.com:8000")
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "keep-alive, Upgrade")
            .header(SEC_WEBSOCKET_VERSION, version)
            .header(SEC_WEBSOCKET_KEY, key);
        if let Some(o) = origin {
            b = b.header(ORIGIN, o);
        }
        b.body(()).unwrap()
    }

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    #[test]
    fn accepts_rfc_example() {
        assert_eq!(
            check(&req("13", KEY, None), &[]).unwrap(),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn refuses_bad_version_key_and_method() {
        assert_eq!(
            check(&req("8", KEY, None), &[]),
            Err(HandshakeError::Version)
        );
        assert_eq!(
            check(&req("13", "abc", None), &[]),
            Err(HandshakeError::BadKey)
        );
        let mut r = req("13", KEY, None);
        *r.method_mut() = Method::POST;
        assert_eq!(check(&r, &[]), Err(HandshakeError::NotGet));
        let mut r = req("13", KEY, None);
        r.headers_mut().remove(UPGRADE);
        assert_eq!(check(&r, &[]), Err(HandshakeError::NotUpgrade));
    }

    #[test]
    fn origin_policy() {
        let same = req("13", KEY, Some("http://example.com:8000"));
        assert!(check(&same, &[]).is_ok());
        let other = req("13", KEY, Some("https://evil.example"));
        assert_eq!(check(&other, &[]), Err(HandshakeError::Origin));
        assert!(check(&other, &["https://evil.example".into()]).is_ok());
        assert!(check(&other, &["*".into()]).is_ok());
    }
}
