//! The web app's pages: accounts (login, logout), the three chat pages and the admin.
//!
//! Every page request goes through [`handle`], which owns the rules that hold for all pages:
//! - the body is read once, at most [`MAX_FORM_BYTES`], and parsed as a form when it is one;
//! - the visitor (session from the `sessionid` cookie, anonymous CSRF cookie) is loaded once;
//!   Redis being down is a 503, never an anonymous visitor;
//! - **every POST is CSRF-checked here, before any handler runs**: the token comes from the
//!   `csrfmiddlewaretoken` field or the `X-CSRFToken` header and must equal the session's token
//!   (or, anonymous, the `csrftoken` cookie's). A handler therefore never sees a forged POST;
//! - an anonymous visitor without a usable CSRF cookie gets a fresh one with the page;
//! - errors become responses in one place, `response::page_error`.

mod accounts;
mod admin;
mod admin_groups;
mod chat;
mod layout;

use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt as _, Limited};
use hyper::Request;
use hyper::body::Incoming;

use super::response::{self, Response};
use crate::auth::form::{self, FormError, MAX_FORM_BYTES};
use crate::auth::{SessionError, SessionRecord, cookie, csrf};
use crate::bus::BusError;
use crate::store::StoreError;
use crate::worker::App;
use crate::worker::net::Peer;
pub use layout::Layout;

/// Why a page could not be served; `response::page_error` turns each into a status.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    /// The database failed (503 when [`StoreError::is_unavailable`]).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The session store (Redis) failed.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// Publishing a chat message failed.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// Logging in failed for a reason other than wrong credentials.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The request body is not an acceptable form.
    #[error(transparent)]
    Form(#[from] FormError),
    /// The request body could not be read.
    #[error("cannot read the request body: {0}")]
    Body(String),
    /// A POST without a valid CSRF token (403).
    #[error(
        "CSRF verification failed: the form is missing a valid token (reload the page and try again)"
    )]
    Csrf,
    /// The page needs a logged-in user; the visitor is sent to the login page with `next`.
    #[error("login required")]
    LoginRequired(String),
    /// Logged in but not allowed (403).
    #[error("{0}")]
    Forbidden(&'static str),
    /// A bad value in an otherwise well-formed request (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such page or object (404).
    #[error("{0}")]
    NotFound(&'static str),
    /// The path exists but not with this method (405).
    #[error("method not allowed")]
    Method,
    /// A template failed to render (a bug).
    #[error("template: {0}")]
    Template(#[from] askama::Error),
    /// The password hashing task failed.
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

/// A form body as name/value pairs, in order (repeated names kept, for checkbox lists).
#[derive(Debug, Default)]
pub struct Form(Vec<(String, String)>);

impl Form {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first value of `name`, or "".
    pub fn text(&self, name: &str) -> &str {
        self.get(name).unwrap_or_default()
    }

    /// Every value of `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Whether a checkbox `name` was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// One page request, read and parsed.
#[derive(Debug)]
pub struct PageRequest {
    /// GET, HEAD or POST.
    pub method: Method,
    /// The path, e.g. `/admin/users/3/`.
    pub path: String,
    /// The query string ("" if none).
    pub query: String,
    /// The form body of a POST (empty otherwise).
    pub form: Form,
    /// Whether the browser reached us over HTTPS (cookies get `Secure`).
    pub https: bool,
    /// The client's address (`http::forwarded::client_ip`), for login throttling.
    pub client_ip: Option<std::net::IpAddr>,
}

impl PageRequest {
    /// A query parameter, decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(&self.query).ok()?;
        pairs.into_iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

/// Who is asking.
#[derive(Debug, Default)]
pub struct Visitor {
    /// The session key from the cookie, when it named a live session.
    pub key: Option<String>,
    /// The session, when logged in.
    pub session: Option<SessionRecord>,
    /// The token forms must carry: the session's, the anonymous cookie's, or a new one.
    pub csrf_token: String,
    /// Whether `csrf_token` is new and must be sent as the `csrftoken` cookie.
    pub new_csrf_cookie: bool,
}

impl Visitor {
    async fn load(app: &App, headers: &HeaderMap) -> Result<Visitor, SessionError> {
        let mut visitor = Visitor::default();
        if let Some(key) = cookie::find(headers, cookie::SESSION_COOKIE)
            && let Some(record) = app.sessions_store.load(key).await?
        {
            visitor.key = Some(key.to_owned());
            visitor.csrf_token = record.csrf_token.clone();
            visitor.session = Some(record);
            return Ok(visitor);
        }
        match cookie::find(headers, cookie::CSRF_COOKIE).filter(|t| csrf::valid_token(t)) {
            Some(token) => visitor.csrf_token = token.to_owned(),
            None => {
                visitor.csrf_token = csrf::new_token();
                visitor.new_csrf_cookie = true;
            }
        }
        Ok(visitor)
    }

    /// The logged-in session, or [`PageError::LoginRequired`] to come back to `path`.
    pub fn require_login(&self, path: &str) -> Result<&SessionRecord, PageError> {
        self.session
            .as_ref()
            .ok_or_else(|| PageError::LoginRequired(path.to_owned()))
    }
}

/// Whether the request reached the proxy over HTTPS: only a trusted proxy (a `--trusted-proxies`
/// address, or any peer on a unix socket, which only the local proxy can reach) is believed
/// about `X-Forwarded-Proto`. Direct connections are plain HTTP (wsredis does not terminate TLS).
pub fn served_over_https(app: &App, headers: &HeaderMap, peer: &Peer) -> bool {
    let trusted = match peer.ip() {
        Some(ip) => app.config.trusted_proxies.contains(&ip),
        None => true,
    };
    trusted
        && headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// Whether `path` is one of the pages (so the router sends it here).
pub fn is_page(path: &str) -> bool {
    matches!(
        path,
        "/accounts/login/" | "/accounts/logout/" | "/chat/" | "/userchat/" | "/groupchat/"
    ) || is_admin(path)
}

/// Whether `path` belongs to the admin.
pub fn is_admin(path: &str) -> bool {
    path == "/admin" || path.starts_with("/admin/")
}

/// Answer a page request (see the module header for what holds for every page).
pub async fn handle(app: &Arc<App>, req: Request<Incoming>, peer: Peer) -> Response {
    let https = served_over_https(app, req.headers(), &peer);
    let client_ip = super::forwarded::client_ip(req.headers(), peer, &app.config);
    match serve(app, req, https, client_ip).await {
        Ok(r) => r,
        Err(e) => response::page_error(&e),
    }
}

async fn serve(
    app: &Arc<App>,
    req: Request<Incoming>,
    https: bool,
    client_ip: Option<std::net::IpAddr>,
) -> Result<Response, PageError> {
    let (parts, body) = req.into_parts();
    let form = if parts.method == Method::POST {
        read_form(&parts.headers, body).await?
    } else {
        Form::default()
    };
    let req = PageRequest {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        form,
        https,
        client_ip,
    };
    if req.path == "/admin" {
        return Ok(response::redirect("/admin/"));
    }
    let visitor = Visitor::load(app, &parts.headers).await?;
    if req.method == Method::POST {
        let sent = parts
            .headers
            .get(csrf::HEADER)
            .and_then(|v| v.to_str().ok())
            .or_else(|| req.form.get(csrf::FORM_FIELD));
        if !csrf::check(sent, Some(&visitor.csrf_token)) || visitor.new_csrf_cookie {
            return Err(PageError::Csrf);
        }
    }
    let mut resp = route(app, &req, &visitor).await?;
    if visitor.new_csrf_cookie {
        response::set_cookie(&mut resp, &cookie::csrf_cookie(&visitor.csrf_token, https));
    }
    Ok(resp)
}

async fn route(app: &App, req: &PageRequest, v: &Visitor) -> Result<Response, PageError> {
    let get = matches!(req.method, Method::GET | Method::HEAD);
    let post = req.method == Method::POST;
    match req.path.as_str() {
        "/accounts/login/" if get => accounts::login_page(app, req, v),
        "/accounts/login/" if post => accounts::login(app, req, v).await,
        "/accounts/logout/" if get => accounts::logout_page(req, v),
        "/accounts/logout/" if post => accounts::logout(app, req, v).await,
        "/chat/" if get => chat::broadcast(app, req, v),
        "/userchat/" if get => chat::recipients_page(app, req, v, false).await,
        "/userchat/" if post => chat::send(app, req, v, false).await,
        "/groupchat/" if get => chat::recipients_page(app, req, v, true).await,
        "/groupchat/" if post => chat::send(app, req, v, true).await,
        p if is_admin(p) => admin::route(app, req, v).await,
        p if is_page(p) => Err(PageError::Method),
        _ => Err(PageError::NotFound("no such page")),
    }
}

async fn read_form(headers: &HeaderMap, body: Incoming) -> Result<Form, PageError> {
    let bytes: Bytes = match Limited::new(body, MAX_FORM_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(FormError::TooLarge {
                limit: MAX_FORM_BYTES,
            }
            .into());
        }
        Err(e) => return Err(PageError::Body(e.to_string())),
    };
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if bytes.is_empty() && content_type.is_none() {
        return Ok(Form::default());
    }
    Ok(Form(form::parse_request(
        content_type,
        &bytes,
        MAX_FORM_BYTES,
    )?))
}

/// `next` if it is a safe place to go after login or logout (a local path), else `fallback`.
pub fn safe_next(next: Option<&str>, fallback: &str) -> String {
    match next {
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.starts_with("/\\")
                && n.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            n.to_owned()
        }
        _ => fallback.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/admin/"), "/chat/"), "/admin/");
        assert_eq!(safe_next(Some("/x/?a=1&b=2"), "/chat/"), "/x/?a=1&b=2");
        for evil in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "/a b",
            "",
            "javascript:x",
        ] {
            assert_eq!(safe_next(Some(evil), "/chat/"), "/chat/", "{evil}");
        }
        assert_eq!(safe_next(None, "/chat/"), "/chat/");
    }

    #[test]
    fn forms_keep_repeated_fields() {
        let f = Form(vec![
            ("groups".into(), "a".into()),
            ("x".into(), "1".into()),
            ("groups".into(), "b".into()),
        ]);
        assert_eq!(f.all("groups"), ["a", "b"]);
        assert_eq!(f.text("x"), "1");
        assert_eq!(f.text("missing"), "");
        assert!(f.checked("x") && !f.checked("y"));
    }
}
