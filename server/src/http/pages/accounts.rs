//! `/accounts/login/` and `/accounts/logout/`.
//!
//! Login always starts a new session (the old key, if any, is deleted: `auth::login`), sets
//! the `sessionid` cookie and goes to `next` when it is a local path. A wrong username or
//! password, an inactive user and an unusable password all get the same message, as in Django.
//! Failed logins are counted per username and client address, and too many get 429 without a
//! password check (`auth::throttle`). Logout is a POST (a GET only shows the confirmation form, since GETs must not change state):
//! it deletes the session in Redis and removes the cookie.

use std::sync::atomic::Ordering::Relaxed;

use askama::Template;
use http::StatusCode;
use http::header::HeaderValue;

use super::layout::render;
use super::{Layout, PageError, PageRequest, Visitor, safe_next};
use crate::auth::{self, cookie};
use crate::http::response::{self, Response};
use crate::worker::App;

/// Where a login goes when `next` is missing or unsafe.
const AFTER_LOGIN: &str = "/chat/";
/// Where a logout goes when `next` is missing or unsafe.
const AFTER_LOGOUT: &str = "/accounts/login/";
/// The message for every refused login.
const WRONG_CREDENTIALS: &str =
    "Please enter a correct username and password. Note that both fields are case-sensitive.";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    layout: Layout,
    error: Option<&'a str>,
    username: &'a str,
    next: String,
}

#[derive(Template)]
#[template(path = "logout.html")]
struct LogoutPage {
    layout: Layout,
    next: String,
}

/// GET: the login form.
pub(super) fn login_page(
    _app: &App,
    req: &PageRequest,
    v: &Visitor,
) -> Result<Response, PageError> {
    let next = safe_next(req.query_param("next").as_deref(), AFTER_LOGIN);
    render(
        StatusCode::OK,
        &LoginPage {
            layout: Layout::new(req, v, "Log in", ""),
            error: None,
            username: "",
            next,
        },
    )
}

/// POST: check the credentials, start a session, go to `next`. A username or client address
/// with too many recent failures (`auth::throttle`) gets 429 before any password check.
pub(super) async fn login(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
) -> Result<Response, PageError> {
    let username = req.form.text("username").trim();
    let password = req.form.text("password");
    let next = safe_next(req.form.get("next"), AFTER_LOGIN);
    let page = |status, error: &str| {
        render(
            status,
            &LoginPage {
                layout: Layout::new(req, v, "Log in", ""),
                error: Some(error),
                username,
                next: next.clone(),
            },
        )
    };
    if username.is_empty() || password.is_empty() {
        return page(StatusCode::OK, WRONG_CREDENTIALS);
    }
    if let Some(wait) = app.login_throttle.check(username, req.client_ip).await? {
        app.slot.login_throttled.fetch_add(1, Relaxed);
        let user = account_name(app, username).await;
        tracing::warn!(user, client = ?req.client_ip, retry_after = wait,
            "login throttled: too many failed attempts");
        let mut resp = page(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("Too many failed login attempts. Please try again in {wait} s."),
        )?;
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(wait));
        return Ok(resp);
    }
    let outcome = auth::login(
        &app.store,
        &app.sessions_store,
        v.key.as_deref(),
        username,
        password,
    )
    .await?;
    let Some((key, _record)) = outcome else {
        app.slot.login_failures.fetch_add(1, Relaxed);
        let user = account_name(app, username).await;
        tracing::info!(user, client = ?req.client_ip, "login failed");
        // Best effort: the visitor still gets "wrong password" if Redis cannot count it.
        if let Err(e) = app.login_throttle.failed(username, req.client_ip).await {
            tracing::warn!(error = %e, "cannot count a failed login");
        }
        return page(StatusCode::OK, WRONG_CREDENTIALS);
    };
    if let Err(e) = app.login_throttle.succeeded(username).await {
        tracing::warn!(error = %e, "cannot reset the failed-login count");
    }
    tracing::info!(user = %username, "logged in");
    let mut resp = response::redirect(&next);
    response::set_cookie(
        &mut resp,
        &cookie::session_cookie(&key, app.config.session_ttl, req.https),
    );
    Ok(resp)
}

/// GET: a confirmation form (or "you are logged out").
pub(super) fn logout_page(req: &PageRequest, v: &Visitor) -> Result<Response, PageError> {
    let next = safe_next(req.query_param("next").as_deref(), AFTER_LOGOUT);
    render(
        StatusCode::OK,
        &LogoutPage {
            layout: Layout::new(req, v, "Log out", ""),
            next,
        },
    )
}

/// POST: delete the session and the cookie, go to `next`.
pub(super) async fn logout(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
) -> Result<Response, PageError> {
    if let Some(key) = &v.key {
        app.sessions_store.delete(key).await?;
    }
    let next = safe_next(req.form.get("next"), AFTER_LOGOUT);
    let mut resp = response::redirect(&next);
    response::set_cookie(&mut resp, &cookie::session_cookie_removal(req.https));
    Ok(resp)
}

/// What a failed login may log as the user: the name when it is an account's, never what was
/// typed otherwise (people type their password into the username field).
async fn account_name<'a>(app: &App, typed: &'a str) -> &'a str {
    match app.store.user_by_username(typed).await {
        Ok(Some(_)) => typed,
        _ => "(no such account)",
    }
}
