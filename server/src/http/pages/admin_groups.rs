//! `/admin/groups/…`: list, add, rename and delete groups (staff only: `admin::route` has
//! checked). Membership is edited on each user's page.

use askama::Template;
use http::StatusCode;

use super::admin::{notice, parse_id};
use super::layout::render;
use super::{Layout, PageError, PageRequest, Visitor};
use crate::http::response::{self, Response};
use crate::store::StoreError;
use crate::worker::App;

/// A group row of the list.
struct Row {
    id: i64,
    name: String,
    members: String,
}

#[derive(Template)]
#[template(path = "admin/groups.html")]
struct GroupsPage {
    layout: Layout,
    groups: Vec<Row>,
    error: Option<String>,
    notice: Option<&'static str>,
}

/// Dispatch `/admin/groups/<rest>/`.
pub(super) async fn route(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
    rest: &[&str],
) -> Result<Response, PageError> {
    let post = req.method == http::Method::POST;
    let result = match rest {
        [] if !post => return list(app, req, v, None).await,
        ["add"] if post => app
            .store
            .create_group(req.form.text("name"))
            .await
            .map(|_| "group-created"),
        [id] if post => app
            .store
            .rename_group(parse_id(id)?, req.form.text("name"))
            .await
            .map(|()| "group-renamed"),
        [id, "delete"] if post => app
            .store
            .delete_group(parse_id(id)?)
            .await
            .map(|()| "group-deleted"),
        _ => return Err(PageError::NotFound("no such admin page")),
    };
    match result {
        Ok(done) => Ok(response::redirect(&format!("/admin/groups/?done={done}"))),
        Err(StoreError::NotFound(_)) => Err(PageError::NotFound("no such group")),
        Err(e @ (StoreError::GroupNameTaken(_) | StoreError::Invalid { .. })) => {
            list(app, req, v, Some(e.to_string())).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn list(
    app: &App,
    req: &PageRequest,
    v: &Visitor,
    error: Option<String>,
) -> Result<Response, PageError> {
    let mut groups = Vec::new();
    for g in app.store.list_groups().await? {
        let members = app.store.group_member_names(g.id).await?;
        groups.push(Row {
            id: g.id,
            name: g.name,
            members: if members.is_empty() {
                "—".into()
            } else {
                members.join(", ")
            },
        });
    }
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    render(
        status,
        &GroupsPage {
            layout: Layout::new(req, v, "Groups", "admin"),
            groups,
            notice: if error.is_none() { notice(req) } else { None },
            error,
        },
    )
}
