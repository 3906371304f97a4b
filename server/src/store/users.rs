//! Users: reading, creating and editing rows of `users` (memberships are in `memberships.rs`).
//!
//! The store never hashes: callers pass Django-encoded hashes (`crate::auth::password`), so the
//! CPU-heavy part stays outside any transaction and on a blocking thread.

use sqlx::FromRow;

use super::memberships::link_groups;
use super::{Store, StoreError, WritePool, change_one, on_pool, time};

/// Longest username, as in Django.
pub const MAX_USERNAME_CHARS: usize = 150;

/// A user as pages and sessions see it (the password hash stays inside the store).
#[derive(Clone, Debug, PartialEq, Eq, FromRow)]
pub struct User {
    /// Primary key; also what a session refers to.
    pub id: i64,
    /// Unique login name; also the ws4redis `user:` channel name, hence its narrow charset.
    pub username: String,
    /// Given name (may be empty).
    pub first_name: String,
    /// Family name (may be empty).
    pub last_name: String,
    /// Contact address (may be empty; not verified).
    pub email: String,
    /// Inactive users cannot log in; deactivating keeps their row and history.
    pub is_active: bool,
    /// May use the user and group admin pages.
    pub is_staff: bool,
    /// Has every permission (Django's meaning); shown, not otherwise used yet.
    pub is_superuser: bool,
    /// Unix seconds of the last successful login, if any.
    pub last_login: Option<i64>,
    /// Unix seconds when the account was created.
    pub date_joined: i64,
}

impl User {
    /// "First Last", or the username when both names are empty (Django's `get_full_name` or
    /// `username`, as the demo's user list shows it).
    pub fn display_name(&self) -> String {
        let full = format!("{} {}", self.first_name, self.last_name);
        match full.trim() {
            "" => self.username.clone(),
            name => name.to_owned(),
        }
    }
}

/// A user to create.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// Unique login name: letters, digits and `@ . + - _`, at most 150 characters.
    pub username: String,
    /// Django-encoded hash (`auth::password::hash`), or `!…` for an unusable password.
    pub password_hash: String,
    /// Names, email, active and staff flags.
    pub profile: UserUpdate,
    /// Has every permission.
    pub is_superuser: bool,
    /// Names of existing groups to put the user in.
    pub groups: Vec<String>,
}

/// The editable profile fields of a user (the admin page's form). The default is an active,
/// non-staff user with empty names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserUpdate {
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Contact address.
    pub email: String,
    /// Whether the user can log in.
    pub is_active: bool,
    /// May use the admin pages.
    pub is_staff: bool,
}

impl Default for UserUpdate {
    fn default() -> Self {
        UserUpdate {
            first_name: String::new(),
            last_name: String::new(),
            email: String::new(),
            is_active: true,
            is_staff: false,
        }
    }
}

/// A user row together with its password hash, for logging in (no `Debug`: keep hashes out
/// of logs).
#[derive(FromRow)]
pub(crate) struct UserWithHash {
    #[sqlx(flatten)]
    pub(crate) user: User,
    pub(crate) password: String,
}

/// Every column of a user row but its id, in the order of [`write_user!`]'s placeholders.
#[derive(Debug)]
pub(crate) struct UserColumns {
    pub(crate) username: String,
    pub(crate) password: String,
    pub(crate) first_name: String,
    pub(crate) last_name: String,
    pub(crate) email: String,
    pub(crate) is_active: bool,
    pub(crate) is_staff: bool,
    pub(crate) is_superuser: bool,
    pub(crate) last_login: Option<i64>,
    pub(crate) date_joined: i64,
}

/// Insert a user (`$1`…`$10` in [`UserColumns`] order), returning its id.
pub(crate) const INSERT_USER: &str = "INSERT INTO users (username, password, first_name, \
    last_name, email, is_active, is_staff, is_superuser, last_login, date_joined) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";

/// Run `$sql` (an insert or update of every column, `$1` = username, returning the id) with
/// the fields of `$row: UserColumns` bound, inside transaction `$tx`.
macro_rules! write_user {
    ($tx:ident, $sql:expr, $row:expr) => {{
        let row = &$row;
        sqlx::query_scalar::<_, i64>($sql)
            .bind(&row.username)
            .bind(&row.password)
            .bind(&row.first_name)
            .bind(&row.last_name)
            .bind(&row.email)
            .bind(row.is_active)
            .bind(row.is_staff)
            .bind(row.is_superuser)
            .bind(row.last_login)
            .bind(row.date_joined)
            .fetch_one(&mut *$tx)
            .await
    }};
}
pub(crate) use write_user;

/// The columns of [`User`], for `concat!` into `&'static str` queries.
macro_rules! user_columns {
    () => {
        "id, username, first_name, last_name, email, is_active, is_staff, is_superuser, \
         last_login, date_joined"
    };
}

/// Check a username against the rules of [`NewUser::username`].
pub fn validate_username(username: &str) -> Result<(), StoreError> {
    let invalid = |reason: &str| StoreError::Invalid {
        field: "username",
        reason: reason.to_owned(),
    };
    if username.is_empty() {
        return Err(invalid("must not be empty"));
    }
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(invalid("must be at most 150 characters"));
    }
    if !username
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '@' | '.' | '+' | '-' | '_'))
    {
        return Err(invalid("may contain only letters, digits and @ . + - _"));
    }
    Ok(())
}

impl Store {
    /// The user with this id.
    pub async fn user(&self, id: i64) -> Result<Option<User>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1"
            ))
            .bind(id)
            .fetch_optional(pool)
            .await
        })
        .map_err(StoreError::from_sqlx)
    }

    /// The user with this username (exact, case-sensitive match as in Django).
    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(self.user_with_hash(username).await?.map(|row| row.user))
    }

    /// Every user, ordered by username.
    pub async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                user_columns!(),
                " FROM users ORDER BY username"
            ))
            .fetch_all(pool)
            .await
        })
        .map_err(StoreError::from_sqlx)
    }

    /// Create a user and its group memberships in one transaction; returns the new row.
    /// Fails with [`StoreError::UsernameTaken`] or [`StoreError::UnknownGroup`].
    pub async fn create_user(&self, new: &NewUser) -> Result<User, StoreError> {
        validate_username(&new.username)?;
        let taken = || StoreError::UsernameTaken(new.username.clone());
        let id = on_pool!(self, |pool| {
            let mut tx = pool.begin_write().await.map_err(StoreError::from_sqlx)?;
            let row = UserColumns {
                username: new.username.clone(),
                password: new.password_hash.clone(),
                first_name: new.profile.first_name.clone(),
                last_name: new.profile.last_name.clone(),
                email: new.profile.email.clone(),
                is_active: new.profile.is_active,
                is_staff: new.profile.is_staff,
                is_superuser: new.is_superuser,
                last_login: None,
                date_joined: time::now(),
            };
            let id = write_user!(tx, INSERT_USER, row)
                .map_err(|e| StoreError::from_sqlx_unique(e, taken))?;
            link_groups!(tx, id, &new.groups);
            tx.commit().await.map_err(StoreError::from_sqlx)?;
            Ok::<i64, StoreError>(id)
        })?;
        self.user(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("user {id} right after creating it")))
    }

    /// Change a user's names, email and flags. [`StoreError::NotFound`] if there is no such user.
    pub async fn update_user(&self, id: i64, update: &UserUpdate) -> Result<(), StoreError> {
        change_one!(
            self,
            format!("user {id}"),
            "UPDATE users SET first_name = $1, last_name = $2, email = $3, is_active = $4, \
             is_staff = $5 WHERE id = $6",
            &update.first_name,
            &update.last_name,
            &update.email,
            update.is_active,
            update.is_staff,
            id
        )
    }

    /// Replace a user's password hash (already computed by `auth::password::hash`).
    pub async fn set_password(&self, id: i64, password_hash: &str) -> Result<(), StoreError> {
        change_one!(
            self,
            format!("user {id}"),
            "UPDATE users SET password = $1 WHERE id = $2",
            password_hash,
            id
        )
    }

    /// Replace a password hash only if it is still `old_hash`, so a hash upgrade after login
    /// never overwrites a password changed meanwhile. Returns whether it was replaced.
    pub(crate) async fn replace_password_hash(
        &self,
        id: i64,
        old_hash: &str,
        new_hash: &str,
    ) -> Result<bool, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query("UPDATE users SET password = $1 WHERE id = $2 AND password = $3")
                .bind(new_hash)
                .bind(id)
                .bind(old_hash)
                .execute(pool)
                .await
                .map(|r| r.rows_affected() == 1)
        })
        .map_err(StoreError::from_sqlx)
    }

    /// Stop a user from logging in (the row and its memberships stay). Existing sessions are
    /// not touched here: the caller deletes them if it keeps track of them.
    pub async fn deactivate_user(&self, id: i64) -> Result<(), StoreError> {
        change_one!(
            self,
            format!("user {id}"),
            "UPDATE users SET is_active = $1 WHERE id = $2",
            false,
            id
        )
    }

    /// Record a successful login at `at` (unix seconds).
    pub async fn record_login(&self, id: i64, at: i64) -> Result<(), StoreError> {
        change_one!(
            self,
            format!("user {id}"),
            "UPDATE users SET last_login = $1 WHERE id = $2",
            at,
            id
        )
    }

    /// The user row and its password hash, for `auth::authenticate`.
    pub(crate) async fn user_with_hash(
        &self,
        username: &str,
    ) -> Result<Option<UserWithHash>, StoreError> {
        on_pool!(self, |pool| {
            sqlx::query_as(concat!(
                "SELECT ",
                user_columns!(),
                ", password FROM users WHERE username = $1"
            ))
            .bind(username)
            .fetch_optional(pool)
            .await
        })
        .map_err(StoreError::from_sqlx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_follow_django_rules() {
        for ok in ["john", "mary.lou", "a@b.c", "x+y-z_1", "Jürgen"] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "john doe",
            "a:b",
            "tab\t",
            "semi;colon",
            &"x".repeat(151),
        ] {
            assert!(
                matches!(
                    validate_username(bad),
                    Err(StoreError::Invalid {
                        field: "username",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert!(validate_username(&"é".repeat(150)).is_ok());
    }

    #[test]
    fn display_name_falls_back_to_username() {
        let mut u = User {
            id: 1,
            username: "john".into(),
            first_name: "John".into(),
            last_name: "Doe".into(),
            email: String::new(),
            is_active: true,
            is_staff: false,
            is_superuser: false,
            last_login: None,
            date_joined: 0,
        };
        assert_eq!(u.display_name(), "John Doe");
        u.last_name.clear();
        assert_eq!(u.display_name(), "John");
        u.first_name.clear();
        assert_eq!(u.display_name(), "john");
    }
}
