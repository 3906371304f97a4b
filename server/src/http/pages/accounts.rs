//! `/accounts/login/` and `/accounts/logout/`.
//!
//! Login always starts a new session (the old key, if any, is deleted: `auth::login`), sets
//! the `sessionid` cookie and goes to `next` when it is a local path. A wrong username or
//! password, an inactive user and an unusable password all get the same message, as in Django.
//! Logout is a POST (a GET only shows the confirmation form, since GETs must not change state):
//! it deletes the session in Redis and removes the cookie.

use askama::Template;
use http::StatusCode;

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

/// POST: check the credentials, start a session, go to `next`.
pub(super) async fn login(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
) -> Result<Response, PageError> {
    let username = req.form.text("username").trim();
    let password = req.form.text("password");
    let next = safe_next(req.form.get("next"), AFTER_LOGIN);
    let outcome = if username.is_empty() || password.is_empty() {
        None
    } else {
        auth::login(
            &app.store,
            &app.sessions_store,
            v.key.as_deref(),
            username,
            password,
        )
        .await?
    };
    let Some((key, _record)) = outcome else {
        return render(
            StatusCode::OK,
            &LoginPage {
                layout: Layout::new(req, v, "Log in", ""),
                error: Some(WRONG_CREDENTIALS),
                username,
                next,
            },
        );
    };
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
