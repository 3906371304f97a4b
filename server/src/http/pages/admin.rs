//! `/admin/`: users (list, add, edit, set password, deactivate) for staff only; routes the
//! group pages to `admin_groups`.
//!
//! Access is checked against the database on every request, not the session's flags frozen at
//! login: a user whose staff flag was removed, or who was deactivated, loses the admin at once.
//! Anonymous visitors are sent to the login page (with `next`), everyone else who is not
//! active staff gets 403 on every admin URL, whatever the method. State changes are POSTs
//! (CSRF-checked in `pages::serve`) that redirect back with a fixed notice (`?done=`).

use askama::Template;
use http::StatusCode;

use super::layout::render;
use super::{Form, Layout, PageError, PageRequest, Visitor, admin_groups};
use crate::auth::password;
use crate::http::response::{self, Response};
use crate::store::{NewUser, StoreError, User, UserUpdate, time};
use crate::worker::App;

/// Longest first or last name, as in Django.
const MAX_NAME_CHARS: usize = 150;
/// Longest email address, as in Django.
const MAX_EMAIL_CHARS: usize = 254;

/// A user row of the list.
struct Row {
    id: i64,
    username: String,
    name: String,
    email: String,
    is_active: bool,
    is_staff: bool,
    is_superuser: bool,
    last_login: String,
}

#[derive(Template)]
#[template(path = "admin/users.html")]
struct UsersPage {
    layout: Layout,
    users: Vec<Row>,
    notice: Option<&'static str>,
}

/// A group checkbox of the user form.
struct GroupBox {
    name: String,
    checked: bool,
}

#[derive(Template)]
#[template(path = "admin/user_form.html")]
struct UserForm {
    layout: Layout,
    user_id: Option<i64>,
    username: String,
    first_name: String,
    last_name: String,
    email: String,
    is_active: bool,
    is_staff: bool,
    groups: Vec<GroupBox>,
    error: Option<String>,
    notice: Option<&'static str>,
}

/// The notice for a `?done=` value (fixed strings: the query is never echoed).
pub(super) fn notice(req: &PageRequest) -> Option<&'static str> {
    match req.query_param("done")?.as_str() {
        "created" => Some("The user was created."),
        "saved" => Some("Saved."),
        "password" => Some("The password was changed."),
        "deactivated" => Some("The user was deactivated: they can no longer log in."),
        "group-created" => Some("The group was created."),
        "group-renamed" => Some("The group was renamed."),
        "group-deleted" => Some("The group was deleted."),
        _ => None,
    }
}

/// The logged-in, active staff user, or the reason to refuse.
async fn staff(app: &App, req: &PageRequest, v: &Visitor) -> Result<User, PageError> {
    let session = v.require_login(&req.path)?;
    match app.store.user(session.user_id).await? {
        Some(user) if user.is_active && user.is_staff => Ok(user),
        _ => Err(PageError::Forbidden(
            "the admin is for staff users only; ask an administrator for staff status",
        )),
    }
}

/// Dispatch an `/admin/…` request.
pub(super) async fn route(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
) -> Result<Response, PageError> {
    staff(app, req, v).await?;
    let rest = req.path.trim_start_matches("/admin/");
    let Some(rest) = rest.strip_suffix('/').or((rest.is_empty()).then_some("")) else {
        return Err(PageError::NotFound("admin pages end with a slash"));
    };
    let parts: Vec<&str> = if rest.is_empty() {
        Vec::new()
    } else {
        rest.split('/').collect()
    };
    let post = req.method == http::Method::POST;
    match parts.as_slice() {
        [] if !post => list(app, req, v).await,
        ["users", "add"] if post => create(app, req, v).await,
        ["users", "add"] => add_form(app, req, v).await,
        ["users", id] => {
            let id = parse_id(id)?;
            if post {
                update(app, req, v, id).await
            } else {
                edit_form(app, req, v, id, None).await
            }
        }
        ["users", id, "password"] if post => set_password(app, req, v, parse_id(id)?).await,
        ["users", id, "deactivate"] if post => deactivate(app, parse_id(id)?).await,
        ["groups", ..] => admin_groups::route(app, req, v, &parts[1..]).await,
        _ => Err(PageError::NotFound("no such admin page")),
    }
}

/// A numeric id from the path.
pub(super) fn parse_id(s: &str) -> Result<i64, PageError> {
    s.parse()
        .ok()
        .filter(|id| *id > 0)
        .ok_or(PageError::NotFound("no such object"))
}

async fn list(app: &App, req: &PageRequest, v: &Visitor) -> Result<Response, PageError> {
    let users = app
        .store
        .list_users()
        .await?
        .into_iter()
        .map(|u| Row {
            id: u.id,
            name: format!("{} {}", u.first_name, u.last_name)
                .trim()
                .to_owned(),
            last_login: u
                .last_login
                .map(time::format_utc)
                .unwrap_or_else(|| "never".into()),
            username: u.username,
            email: u.email,
            is_active: u.is_active,
            is_staff: u.is_staff,
            is_superuser: u.is_superuser,
        })
        .collect();
    render(
        StatusCode::OK,
        &UsersPage {
            layout: Layout::new(req, v, "Users", "admin"),
            users,
            notice: notice(req),
        },
    )
}

async fn group_boxes(app: &App, checked: &[String]) -> Result<Vec<GroupBox>, PageError> {
    Ok(app
        .store
        .list_groups()
        .await?
        .into_iter()
        .map(|g| GroupBox {
            checked: checked.contains(&g.name),
            name: g.name,
        })
        .collect())
}

async fn add_form(app: &App, req: &PageRequest, v: &Visitor) -> Result<Response, PageError> {
    let form = UserForm {
        layout: Layout::new(req, v, "Add user", "admin"),
        user_id: None,
        username: String::new(),
        first_name: String::new(),
        last_name: String::new(),
        email: String::new(),
        is_active: true,
        is_staff: false,
        groups: group_boxes(app, &[]).await?,
        error: None,
        notice: None,
    };
    render(StatusCode::OK, &form)
}

/// The user form as posted, re-rendered with `error` (400).
async fn refill(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
    user_id: Option<i64>,
    username: String,
    error: String,
) -> Result<Response, PageError> {
    let f = &req.form;
    let form = UserForm {
        layout: Layout::new(req, v, "User", "admin"),
        user_id,
        username,
        first_name: f.text("first_name").to_owned(),
        last_name: f.text("last_name").to_owned(),
        email: f.text("email").to_owned(),
        is_active: f.checked("is_active"),
        is_staff: f.checked("is_staff"),
        groups: group_boxes(app, &f.all("groups")).await?,
        error: Some(error),
        notice: None,
    };
    render(StatusCode::BAD_REQUEST, &form)
}

/// The profile fields of the form, checked.
fn profile(form: &Form) -> Result<UserUpdate, String> {
    let first_name = form.text("first_name").trim();
    let last_name = form.text("last_name").trim();
    let email = form.text("email").trim();
    if first_name.chars().count() > MAX_NAME_CHARS || last_name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("names are at most {MAX_NAME_CHARS} characters"));
    }
    if email.chars().count() > MAX_EMAIL_CHARS
        || (!email.is_empty() && !email.contains('@'))
        || email.chars().any(char::is_control)
    {
        return Err("enter a valid email address (or leave it empty)".into());
    }
    if [first_name, last_name]
        .iter()
        .any(|n| n.chars().any(char::is_control))
    {
        return Err("names must not contain control characters".into());
    }
    Ok(UserUpdate {
        first_name: first_name.to_owned(),
        last_name: last_name.to_owned(),
        email: email.to_owned(),
        is_active: form.checked("is_active"),
        is_staff: form.checked("is_staff"),
    })
}

/// Errors the person filling in the form can fix (shown on the form, 400).
fn fixable(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::UsernameTaken(_)
            | StoreError::GroupNameTaken(_)
            | StoreError::UnknownGroup(_)
            | StoreError::Invalid { .. }
    )
}

/// Hash a password off the runtime threads.
pub(super) async fn hash(password: &str) -> Result<String, PageError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || password::hash(&password))
        .await
        .map_err(|e| PageError::Hashing(e.to_string()))
}

async fn create(app: &App, req: &PageRequest, v: &Visitor) -> Result<Response, PageError> {
    let username = req.form.text("username").trim().to_owned();
    let password = req.form.text("password");
    let profile = match profile(&req.form) {
        Ok(p) => p,
        Err(e) => return refill(app, req, v, None, username, e).await,
    };
    if let Err(e) = crate::store::validate_username(&username) {
        return refill(app, req, v, None, username, e.to_string()).await;
    }
    if password.is_empty() {
        return refill(app, req, v, None, username, "a password is required".into()).await;
    }
    let new = NewUser {
        username: username.clone(),
        password_hash: hash(password).await?,
        profile,
        is_superuser: false,
        groups: req.form.all("groups"),
    };
    match app.store.create_user(&new).await {
        Ok(user) => {
            tracing::info!(user = %user.username, "user created in the admin");
            Ok(response::redirect(&format!(
                "/admin/users/{}/?done=created",
                user.id
            )))
        }
        Err(e) if fixable(&e) => refill(app, req, v, None, username, e.to_string()).await,
        Err(e) => Err(e.into()),
    }
}

async fn edit_form(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
    id: i64,
    error: Option<String>,
) -> Result<Response, PageError> {
    let user = app
        .store
        .user(id)
        .await?
        .ok_or(PageError::NotFound("no such user"))?;
    let member_of = app.store.user_group_names(id).await?;
    let form = UserForm {
        layout: Layout::new(req, v, format!("User {}", user.username), "admin"),
        user_id: Some(id),
        groups: group_boxes(app, &member_of).await?,
        username: user.username,
        first_name: user.first_name,
        last_name: user.last_name,
        email: user.email,
        is_active: user.is_active,
        is_staff: user.is_staff,
        notice: if error.is_none() { notice(req) } else { None },
        error,
    };
    let status = if form.error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(status, &form)
}

async fn update(app: &App, req: &PageRequest, v: &Visitor, id: i64) -> Result<Response, PageError> {
    let user = app
        .store
        .user(id)
        .await?
        .ok_or(PageError::NotFound("no such user"))?;
    let profile = match profile(&req.form) {
        Ok(p) => p,
        Err(e) => return refill(app, req, v, Some(id), user.username, e).await,
    };
    let groups = req.form.all("groups");
    let result = match app.store.update_user(id, &profile).await {
        Ok(()) => app.store.set_user_groups(id, &groups).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(response::redirect(&format!(
            "/admin/users/{id}/?done=saved"
        ))),
        Err(e) if fixable(&e) => refill(app, req, v, Some(id), user.username, e.to_string()).await,
        Err(e) => Err(e.into()),
    }
}

async fn set_password(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
    id: i64,
) -> Result<Response, PageError> {
    let password = req.form.text("password");
    if password.is_empty() {
        return edit_form(app, req, v, id, Some("the new password is empty".into())).await;
    }
    let hash = hash(password).await?;
    app.store
        .set_password(id, &hash)
        .await
        .map_err(not_found_user)?;
    Ok(response::redirect(&format!(
        "/admin/users/{id}/?done=password"
    )))
}

async fn deactivate(app: &App, id: i64) -> Result<Response, PageError> {
    app.store
        .deactivate_user(id)
        .await
        .map_err(not_found_user)?;
    Ok(response::redirect(&format!(
        "/admin/users/{id}/?done=deactivated"
    )))
}

fn not_found_user(e: StoreError) -> PageError {
    match e {
        StoreError::NotFound(_) => PageError::NotFound("no such user"),
        other => other.into(),
    }
}
