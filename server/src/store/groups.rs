//! Groups: the rows of `groups` (memberships are in `users.rs`). A group's name is also the
//! ws4redis `group:` channel name, so it is trimmed and kept free of control characters.

use sqlx::FromRow;

use super::{Store, StoreError, change_one, on_pool};

/// Longest group name, as in Django.
pub const MAX_GROUP_NAME_CHARS: usize = 150;

/// A group of users.
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct Group {
    /// Primary key.
    pub id: i64,
    /// Unique name, e.g. `chatusers`.
    pub name: String,
}

/// Check a group name: non-empty, at most 150 characters, no control characters, no
/// surrounding spaces. Returns the name to store.
pub fn validate_group_name(name: &str) -> Result<&str, StoreError> {
    let invalid = |reason: &str| StoreError::Invalid {
        field: "name",
        reason: reason.to_owned(),
    };
    let name = name.trim();
    if name.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if name.chars().count() > MAX_GROUP_NAME_CHARS {
        return Err(invalid("must be at most 150 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid("must not contain control characters"));
    }
    Ok(name)
}

impl Store {
    /// Every group, ordered by name.
    pub async fn list_groups(&self) -> Result<Vec<Group>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_as("SELECT id, name FROM groups ORDER BY name")
                .fetch_all(pool)
                .await
        })
        .map_err(StoreError::from_sqlx)
    }

    /// The group with this id.
    pub async fn group(&self, id: i64) -> Result<Option<Group>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_as("SELECT id, name FROM groups WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(StoreError::from_sqlx)
    }

    /// Create a group. [`StoreError::GroupNameTaken`] if the name exists.
    pub async fn create_group(&self, name: &str) -> Result<Group, StoreError> {
        let name = validate_group_name(name)?;
        let taken = || StoreError::GroupNameTaken(name.to_owned());
        on_pool!(self, |pool| {
            sqlx::query_as("INSERT INTO groups (name) VALUES ($1) RETURNING id, name")
                .bind(name)
                .fetch_one(pool)
                .await
        })
        .map_err(|e| StoreError::from_sqlx_unique(e, taken))
    }

    /// Rename a group. Members stay; their live sessions keep the old name until they log in
    /// again (sessions record group names at login).
    pub async fn rename_group(&self, id: i64, name: &str) -> Result<(), StoreError> {
        let name = validate_group_name(name)?;
        let taken = || StoreError::GroupNameTaken(name.to_owned());
        change_one!(
            self,
            format!("group {id}"),
            "UPDATE groups SET name = $1 WHERE id = $2",
            name,
            id;
            map_err = |e| StoreError::from_sqlx_unique(e, taken)
        )
    }

    /// Delete a group and its memberships (the users stay).
    pub async fn delete_group(&self, id: i64) -> Result<(), StoreError> {
        change_one!(
            self,
            format!("group {id}"),
            "DELETE FROM groups WHERE id = $1",
            id
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_names_are_trimmed_and_checked() {
        assert_eq!(validate_group_name("  chatusers ").unwrap(), "chatusers");
        assert_eq!(validate_group_name("Chat Users").unwrap(), "Chat Users");
        for bad in ["", "   ", "a\nb", "nul\0", &"g".repeat(151)] {
            assert!(
                matches!(
                    validate_group_name(bad),
                    Err(StoreError::Invalid { field: "name", .. })
                ),
                "{bad:?}"
            );
        }
    }
}
