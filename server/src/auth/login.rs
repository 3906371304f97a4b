//! Checking a username and password against the store, and the two things built on it:
//! logging in (with a fresh session) and creating users from the command line.
//!
//! Hashing runs in `spawn_blocking` (see `password`'s header). An unknown username costs one
//! hash too, so response time does not tell which usernames exist. After a successful check a
//! hash with fewer iterations than today's is replaced (as Django does), `last_login` is set,
//! and an inactive user is refused exactly like a wrong password.

use tokio::task::spawn_blocking;

use super::password;
use super::session::{SessionError, SessionRecord, SessionStore};
use crate::store::{NewUser, Store, StoreError, User, UserUpdate, time};

/// Why a login or user creation could not be decided (a wrong password is not an error).
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The database failed; see [`StoreError::is_unavailable`] for 503.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Redis failed while writing the session; see [`SessionError::is_unavailable`] for 503.
    #[error(transparent)]
    Session(#[from] SessionError),
    /// The blocking hash task did not finish (it panicked, or the runtime is shutting down).
    #[error("password hashing task failed: {0}")]
    Hashing(String),
}

impl AuthError {
    /// Whether a retry later may succeed (map to HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        match self {
            AuthError::Store(e) => e.is_unavailable(),
            AuthError::Session(e) => e.is_unavailable(),
            AuthError::Hashing(_) => true,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, AuthError> {
    spawn_blocking(f)
        .await
        .map_err(|e| AuthError::Hashing(e.to_string()))
}

/// The active user with this username and password, or `None` (unknown user, wrong password,
/// unusable password or inactive user: the caller shows one message for all). On success the
/// hash is upgraded if old and `last_login` is recorded (the returned user has it).
pub async fn authenticate(
    store: &Store,
    username: &str,
    password: &str,
) -> Result<Option<User>, AuthError> {
    let password = password.to_owned();
    let Some(row) = store.user_with_hash(username).await? else {
        // Spend the same time as a real check so timing does not reveal unknown usernames.
        blocking(move || password::hash(&password)).await?;
        return Ok(None);
    };
    let (pw, old_hash) = (password.clone(), row.password.clone());
    if !blocking(move || password::verify(&pw, &old_hash)).await? || !row.user.is_active {
        return Ok(None);
    }
    let mut user = row.user;
    if password::needs_upgrade(&row.password) {
        let new_hash = blocking(move || password::hash(&password)).await?;
        // Best effort: a failed upgrade must not fail the login; it is retried next time.
        match store
            .replace_password_hash(user.id, &row.password, &new_hash)
            .await
        {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(user = %user.username, error = %e, "password hash upgrade failed")
            }
        }
    }
    let now = time::now();
    store.record_login(user.id, now).await?;
    user.last_login = Some(now);
    Ok(Some(user))
}

/// Log in: [`authenticate`], then replace the session `old_key` (if any) by a new one that
/// records the user's groups. Returns the new session key (for the `sessionid` cookie) and
/// record (its `csrf_token` is the CSRF token from now on), or `None` if the credentials are
/// refused (the old session is then left alone).
pub async fn login(
    store: &Store,
    sessions: &SessionStore,
    old_key: Option<&str>,
    username: &str,
    password: &str,
) -> Result<Option<(String, SessionRecord)>, AuthError> {
    let Some(user) = authenticate(store, username, password).await? else {
        return Ok(None);
    };
    let groups = store.user_group_names(user.id).await?;
    Ok(Some(sessions.rotate(old_key, &user, groups).await?))
}

/// Create a user for `wsredis createuser`: hashes `password` (or stores an unusable password
/// when `None`) off the runtime threads, then inserts the user and its memberships in one
/// transaction. Errors: [`StoreError::UsernameTaken`], [`StoreError::UnknownGroup`],
/// [`StoreError::Invalid`] (bad username).
pub async fn create_user(
    store: &Store,
    username: &str,
    password: Option<&str>,
    is_staff: bool,
    is_superuser: bool,
    groups: &[String],
) -> Result<User, AuthError> {
    crate::store::validate_username(username)?;
    let password_hash = match password {
        Some(pw) => {
            let pw = pw.to_owned();
            blocking(move || password::hash(&pw)).await?
        }
        None => password::unusable(),
    };
    let new = NewUser {
        username: username.to_owned(),
        password_hash,
        profile: UserUpdate {
            is_staff,
            ..UserUpdate::default()
        },
        is_superuser,
        groups: groups.to_vec(),
    };
    Ok(store.create_user(&new).await?)
}
