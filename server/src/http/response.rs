//! Building responses, and the one place where errors become HTTP statuses.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderName, StatusCode};
use http_body_util::Full;

use crate::ws::handshake::HandshakeError;

/// Every response body in wsredis is a complete buffer.
pub type Body = Full<Bytes>;
/// A response.
pub type Response = hyper::Response<Body>;

/// A plain-text response.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response {
    with_type(status, "text/plain; charset=utf-8", body.into())
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response {
    with_type(status, "application/json", Bytes::from(value.to_string()))
}

/// A response of any content type.
pub fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    let mut r = hyper::Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// Add a header to a response.
pub fn header(mut r: Response, name: HeaderName, value: &'static str) -> Response {
    r.headers_mut()
        .insert(name, HeaderValue::from_static(value));
    r
}

/// 404 with a short reason.
pub fn not_found(why: &'static str) -> Response {
    text(StatusCode::NOT_FOUND, why)
}

/// The status and body for a refused websocket handshake.
pub fn handshake_error(e: &HandshakeError) -> Response {
    let status = match e {
        HandshakeError::NotGet | HandshakeError::NotHttp11 | HandshakeError::NotUpgrade => {
            StatusCode::BAD_REQUEST
        }
        HandshakeError::BadKey => StatusCode::BAD_REQUEST,
        HandshakeError::Version => StatusCode::UPGRADE_REQUIRED,
        HandshakeError::Origin | HandshakeError::Forbidden(_) => StatusCode::FORBIDDEN,
        HandshakeError::BadRequest(_) => StatusCode::BAD_REQUEST,
        HandshakeError::Busy | HandshakeError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    };
    let mut r = text(status, format!("{e}\n"));
    if matches!(e, HandshakeError::Version) {
        r.headers_mut().insert(
            http::header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
    }
    if matches!(e, HandshakeError::Busy | HandshakeError::Unavailable) {
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}
