//! What the base template (`templates/base.html`) needs on every page, and rendering a page
//! into a response.

use askama::Template;
use http::StatusCode;

use super::{PageError, PageRequest, Visitor};
use crate::http::response::{self, Response};
use crate::http::statics;

/// The base layout's data: title, active navigation entry, who is logged in, the CSRF token
/// of the logout form.
#[derive(Debug)]
pub struct Layout {
    /// The page title (also the `<h1>` of chat pages).
    pub title: String,
    /// Which navigation link is highlighted: `chat`, `userchat`, `groupchat`, `admin` or "".
    pub nav: &'static str,
    /// The logged-in username.
    pub username: Option<String>,
    /// Whether to show the admin link.
    pub is_staff: bool,
    /// The CSRF token for this page's forms.
    pub csrf: String,
    /// The stylesheet's versioned URL.
    pub css: String,
    /// This page's path, for the login link's `next`.
    pub here: String,
}

impl Layout {
    /// The layout of `req`'s page for visitor `v`.
    pub fn new(
        req: &PageRequest,
        v: &Visitor,
        title: impl Into<String>,
        nav: &'static str,
    ) -> Self {
        Layout {
            title: title.into(),
            nav,
            username: v.session.as_ref().map(|s| s.username.clone()),
            is_staff: v.session.as_ref().is_some_and(|s| s.is_staff),
            csrf: v.csrf_token.clone(),
            css: statics::url("css/wsredis.css"),
            here: req.path.clone(),
        }
    }
}

/// Render a template as an HTML response with `status`.
pub(super) fn render(status: StatusCode, page: &impl Template) -> Result<Response, PageError> {
    Ok(response::html(status, page.render()?))
}
