//! Memberships: which users are in which groups (`user_groups`).
//!
//! Sessions copy a user's group names at login, so changes here reach the websocket channels
//! of a user at their next login.

use super::{Store, StoreError, WritePool, on_pool};

/// Inside a write transaction `$tx`, add user `$user_id` to each group named in `$names`
/// (repeats ignored); returns [`StoreError::UnknownGroup`] from the enclosing function if a name
/// does not exist. A macro because `$tx` is a SQLite or a PostgreSQL transaction.
macro_rules! link_groups {
    ($tx:ident, $user_id:expr, $names:expr) => {
        let unique: std::collections::BTreeSet<&String> = $names.iter().collect();
        for name in unique {
            let linked = sqlx::query(
                "INSERT INTO user_groups (user_id, group_id) SELECT $1, id FROM groups WHERE name = $2",
            )
            .bind($user_id)
            .bind(name)
            .execute(&mut *$tx)
            .await
            .map_err(StoreError::from_sqlx)?;
            if linked.rows_affected() == 0 {
                return Err(StoreError::UnknownGroup(name.clone()).into());
            }
        }
    };
}
pub(crate) use link_groups;

impl Store {
    /// Names of the groups a user belongs to, sorted (what a session records at login).
    pub async fn user_group_names(&self, user_id: i64) -> Result<Vec<String>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT g.name FROM groups g JOIN user_groups ug ON ug.group_id = g.id \
                 WHERE ug.user_id = $1 ORDER BY g.name",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await
        })
        .map_err(StoreError::from_sqlx)
    }

    /// Make a user's groups exactly `names`, in one transaction.
    /// [`StoreError::UnknownGroup`] (and no change) if a name does not exist.
    pub async fn set_user_groups(&self, user_id: i64, names: &[String]) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await.map_err(StoreError::from_sqlx)?;
            let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
            if exists.is_none() {
                return Err(StoreError::NotFound(format!("user {user_id}")));
            }
            sqlx::query("DELETE FROM user_groups WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_sqlx)?;
            link_groups!(tx, user_id, names);
            tx.commit().await.map_err(StoreError::from_sqlx)
        })
    }
}

impl Store {
    /// Usernames of a group's members, sorted (the admin's group list).
    pub async fn group_member_names(&self, group_id: i64) -> Result<Vec<String>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_scalar(
                "SELECT u.username FROM users u JOIN user_groups ug ON ug.user_id = u.id \
                 WHERE ug.group_id = $1 ORDER BY u.username",
            )
            .bind(group_id)
            .fetch_all(pool)
            .await
        })
        .map_err(StoreError::from_sqlx)
    }
}
