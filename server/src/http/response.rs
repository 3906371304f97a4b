//! Building responses, and the one place where errors become HTTP statuses.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderName, StatusCode};
use http_body_util::Full;

use super::pages::PageError;
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

/// Headers of every HTML page: scripts and styles from this origin only (no inline script,
/// no CDN), no framing, no MIME sniffing, no referrer to other sites.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
    img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

/// An HTML page.
pub fn html(status: StatusCode, body: String) -> Response {
    let mut r = with_type(status, "text/html; charset=utf-8", Bytes::from(body));
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    r
}

/// 302 to a local path (anything that is not a valid header value goes to `/`).
pub fn redirect(location: &str) -> Response {
    let mut r = text(StatusCode::FOUND, "");
    let value = HeaderValue::from_str(location).unwrap_or(HeaderValue::from_static("/"));
    r.headers_mut().insert(http::header::LOCATION, value);
    r
}

/// Append a `Set-Cookie` header (values come from `auth::cookie`'s builders).
pub fn set_cookie(r: &mut Response, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().append(http::header::SET_COOKIE, v);
    }
}

/// The one place where page errors become statuses: unavailable database or Redis → 503
/// (the details go to the log, the visitor gets a clear sentence), a missing login → the
/// login page, CSRF and permissions → 403, bad input → 400/404/405/413/415, bugs → 500.
pub fn page_error(e: &PageError) -> Response {
    use crate::auth::form::FormError;
    use crate::store::StoreError;
    let unavailable = match e {
        PageError::Store(s) => s.is_unavailable().then_some("the user database"),
        PageError::Session(s) => s.is_unavailable().then_some("the session store (Redis)"),
        PageError::Auth(a) => a.is_unavailable().then_some("the user database or Redis"),
        PageError::Bus(crate::bus::BusError::Unavailable) => Some("Redis"),
        _ => None,
    };
    if let Some(what) = unavailable {
        tracing::warn!(error = %e, "page unavailable");
        let mut r = text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "503 Service Unavailable: {what} cannot be reached right now. \
                 Please try again in a moment.\n"
            ),
        );
        r.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("5"));
        return r;
    }
    let status = match e {
        PageError::LoginRequired(next) => {
            let next: String = url_encode(next);
            return redirect(&format!("/accounts/login/?next={next}"));
        }
        PageError::Csrf | PageError::Forbidden(_) => StatusCode::FORBIDDEN,
        PageError::BadRequest(_) | PageError::Body(_) => StatusCode::BAD_REQUEST,
        PageError::NotFound(_) => StatusCode::NOT_FOUND,
        PageError::Method => StatusCode::METHOD_NOT_ALLOWED,
        PageError::Form(FormError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
        PageError::Form(FormError::ContentType) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        PageError::Form(_) => StatusCode::BAD_REQUEST,
        PageError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
        PageError::Store(StoreError::UsernameTaken(_) | StoreError::GroupNameTaken(_)) => {
            StatusCode::CONFLICT
        }
        PageError::Store(StoreError::Invalid { .. } | StoreError::UnknownGroup(_)) => {
            StatusCode::BAD_REQUEST
        }
        PageError::Store(_)
        | PageError::Session(_)
        | PageError::Bus(_)
        | PageError::Auth(_)
        | PageError::Template(_)
        | PageError::Hashing(_) => {
            tracing::error!(error = %e, "page failed");
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "500 Internal Server Error: the failure was logged.\n",
            );
        }
    };
    text(
        status,
        format!(
            "{} {}: {e}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        ),
    )
}

fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}
