//! The chat pages: `/chat/` (broadcast), `/userchat/` and `/groupchat/`, as in the
//! django-websocket-redis example app, and the two POST endpoints that send to a user or group.
//!
//! - `/chat/` is open to everyone: the page's socket subscribes to and publishes on the
//!   broadcast channel of facility [`FACILITY`] (`subscribe-broadcast&publish-broadcast&echo`).
//! - `/userchat/` and `/groupchat/` need a login: the socket subscribes to the visitor's own
//!   `user:` (or `group:`) channels. A socket may only publish to its own channels, so sending
//!   to someone else goes through the server: a CSRF-checked POST that publishes
//!   `"<sender>: <message>"` on `user:<target>:chat` (or `group:<name>:chat`) through the bus.
//!   Only that user's (group's) browsers receive it, the sender's do not.
//!
//! The page passes the server's heartbeat string to the client, which then detects dead sockets.

use askama::Template;
use bytes::Bytes;
use http::StatusCode;

use super::layout::render;
use super::{Layout, PageError, PageRequest, Visitor};
use crate::http::response::{self, Response};
use crate::http::statics;
use crate::worker::App;

/// The websocket facility of the chat pages.
pub(super) const FACILITY: &str = "chat";

/// One entry of the recipient list.
struct Target {
    value: String,
    label: String,
}

#[derive(Template)]
#[template(path = "chat.html")]
struct ChatPage {
    layout: Layout,
    intro: &'static str,
    ws_prefix: String,
    facility: &'static str,
    flags: &'static str,
    heartbeat: String,
    /// `socket`, or the URL the message is POSTed to.
    send: &'static str,
    target_field: &'static str,
    targets: Vec<Target>,
    client_js: String,
    chat_js: String,
    /// `GET /api/presence/chat`, polled by the page for its "Online" list; empty when the
    /// facility keeps no presence.
    presence_url: String,
}

struct Kind {
    title: &'static str,
    nav: &'static str,
    intro: &'static str,
    flags: &'static str,
    send: &'static str,
    target_field: &'static str,
}

const BROADCAST: Kind = Kind {
    title: "Broadcast chat",
    nav: "chat",
    intro: "Everyone on this page sees every message, live. Log in to chat under your name.",
    flags: "subscribe-broadcast&publish-broadcast&echo",
    send: "socket",
    target_field: "",
};
const USER: Kind = Kind {
    title: "User chat",
    nav: "userchat",
    intro: "Pick a user and send them a message: only their browsers receive it.",
    flags: "subscribe-user",
    send: "/userchat/",
    target_field: "user",
};
const GROUP: Kind = Kind {
    title: "Group chat",
    nav: "groupchat",
    intro: "Pick a group and send a message to every member's browsers. Membership is read at login.",
    flags: "subscribe-group",
    send: "/groupchat/",
    target_field: "group",
};

fn page(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
    kind: &Kind,
    targets: Vec<Target>,
) -> Result<Response, PageError> {
    render(
        StatusCode::OK,
        &ChatPage {
            layout: Layout::new(req, v, kind.title, kind.nav),
            intro: kind.intro,
            ws_prefix: app.config.websocket_url.clone(),
            facility: FACILITY,
            flags: kind.flags,
            heartbeat: app.config.heartbeat.clone().unwrap_or_default(),
            send: kind.send,
            target_field: kind.target_field,
            targets,
            client_js: statics::url("js/wsredis.js"),
            chat_js: statics::url("js/chat.js"),
            presence_url: if app.presence.enabled(FACILITY) {
                format!("{}{FACILITY}", crate::http::presence::PREFIX)
            } else {
                String::new()
            },
        },
    )
}

/// GET `/chat/`.
pub(super) fn broadcast(app: &App, req: &PageRequest, v: &Visitor) -> Result<Response, PageError> {
    page(app, req, v, &BROADCAST, Vec::new())
}

/// GET `/userchat/` (the active users to pick from) or `/groupchat/` (the groups).
pub(super) async fn recipients_page(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
    to_group: bool,
) -> Result<Response, PageError> {
    v.require_login(&req.path)?;
    if to_group {
        let groups = app.store.list_groups().await?;
        let targets = groups
            .into_iter()
            .map(|g| Target {
                value: g.name.clone(),
                label: g.name,
            })
            .collect();
        return page(app, req, v, &GROUP, targets);
    }
    let users = app.store.list_users().await?;
    let targets = users
        .into_iter()
        .filter(|u| u.is_active)
        .map(|u| Target {
            label: match u.display_name() {
                name if name == u.username => name,
                name => format!("{name} ({})", u.username),
            },
            value: u.username,
        })
        .collect();
    page(app, req, v, &USER, targets)
}

/// POST `/userchat/` (`user`, `message`) or `/groupchat/` (`group`, `message`): publish
/// `"<sender>: <message>"` to that user's (group's) browsers.
pub(super) async fn send(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
    to_group: bool,
) -> Result<Response, PageError> {
    let sender = v
        .session
        .as_ref()
        .ok_or(PageError::Forbidden("log in to send messages"))?;
    let text = req.form.text("message").trim();
    if text.is_empty() {
        return Err(PageError::BadRequest("the message is empty".into()));
    }
    if text.len() > app.config.max_message_size {
        return Err(PageError::BadRequest(format!(
            "the message is longer than {} bytes",
            app.config.max_message_size
        )));
    }
    let channel = if to_group {
        let name = req.form.text("group");
        let groups = app.store.list_groups().await?;
        if !groups.iter().any(|g| g.name == name) {
            return Err(PageError::NotFound("no such group"));
        }
        app.namer.group(name, FACILITY)
    } else {
        let name = req.form.text("user");
        let user = app.store.user_by_username(name).await?;
        let user = user.ok_or(PageError::NotFound("no such user"))?;
        app.namer.user(&user.username, FACILITY)
    };
    let payload = Bytes::from(format!("{}: {text}", sender.username));
    app.bus
        .publish_with(
            &[channel],
            payload,
            app.config.expire,
            app.config.history_for(FACILITY),
        )
        .await?;
    Ok(response::text(StatusCode::OK, "OK"))
}
