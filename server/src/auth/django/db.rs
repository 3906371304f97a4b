//! Django's database, read-only: the `django_session` table (database session backend) and
//! `auth_user` (who a session's user is), on SQLite or PostgreSQL.
//!
//! Invariants: nothing here writes (SQLite is opened read-only; only `SELECT`s are sent), so
//! pointing it at the production database is safe; users are cached for a short time per
//! worker ([`UserCache`]) so a burst of sockets costs one query per user, not one per socket.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use crate::store::{Backend, StoreError, backend_of};

/// Connections per worker: lookups are short and cached.
const MAX_CONNECTIONS: u32 = 2;
/// How long a lookup waits for a connection before the socket gets 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Users kept per worker before the cache is emptied (a bound, not a tuning knob).
const MAX_CACHED_USERS: usize = 10_000;

/// A row of `auth_user`, as far as a websocket cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DjangoUser {
    /// `username` (Django's default `USERNAME_FIELD`), the `user:` channel.
    pub username: String,
    /// The password hash, only to recompute `get_session_auth_hash()`.
    pub password: String,
    /// `is_active`: inactive users are anonymous, as `ModelBackend.get_user` makes them.
    pub is_active: bool,
    /// `is_staff`, for the staff allow-list.
    pub is_staff: bool,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A read-only handle on Django's database. Cheap to clone.
#[derive(Clone, Debug)]
pub struct DjangoDb {
    pool: Pool,
}

impl DjangoDb {
    /// A lazy pool on `sqlite://path` (opened read-only, never created) or `postgres://…`;
    /// nothing is connected until the first lookup.
    pub fn connect_lazy(url: &str) -> Result<DjangoDb, StoreError> {
        let bad = |e: sqlx::Error| StoreError::Url(format!("{url}: {e}"));
        let pool = match backend_of(url)? {
            Backend::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)
                    .map_err(bad)?
                    .read_only(true)
                    .busy_timeout(ACQUIRE_TIMEOUT);
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_lazy_with(opts),
                )
            }
            Backend::Postgres => {
                let opts = PgConnectOptions::from_str(url).map_err(bad)?;
                Pool::Postgres(
                    PgPoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_lazy_with(opts),
                )
            }
        };
        Ok(DjangoDb { pool })
    }

    /// `session_data` of a row of `django_session` whose `expire_date` is after `now` (unix
    /// seconds), as Django's `SessionStore._get_session_from_db` selects it.
    pub async fn session(&self, key: &str, now: i64) -> Result<Option<String>, StoreError> {
        let row: Option<(String, i64)> = match &self.pool {
            // Django writes `expire_date` as text `YYYY-MM-DD HH:MM:SS[.ffffff]` in UTC.
            Pool::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT session_data, CAST(strftime('%s', expire_date) AS INTEGER) \
                 FROM django_session WHERE session_key = $1",
                )
                .bind(key)
                .fetch_optional(pool)
                .await
            }
            Pool::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT session_data, CAST(EXTRACT(EPOCH FROM expire_date) AS BIGINT) \
                 FROM django_session WHERE session_key = $1",
                )
                .bind(key)
                .fetch_optional(pool)
                .await
            }
        }
        .map_err(StoreError::from_sqlx)?;
        Ok(row
            .filter(|(_, expires)| *expires > now)
            .map(|(data, _)| data))
    }

    /// The `auth_user` row with primary key `id`.
    pub async fn user(&self, id: i64) -> Result<Option<DjangoUser>, StoreError> {
        const SQL: &str =
            "SELECT username, password, is_active, is_staff FROM auth_user WHERE id = $1";
        let row: Option<(String, String, bool, bool)> = match &self.pool {
            Pool::Sqlite(pool) => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await,
            Pool::Postgres(pool) => sqlx::query_as(SQL).bind(id).fetch_optional(pool).await,
        }
        .map_err(StoreError::from_sqlx)?;
        Ok(
            row.map(|(username, password, is_active, is_staff)| DjangoUser {
                username,
                password,
                is_active,
                is_staff,
            }),
        )
    }
}

/// `auth_user` rows by id, each kept for a fixed time (`--django-user-cache`), including "no
/// such user", so a user changed in Django is seen within that time.
#[derive(Debug)]
pub struct UserCache {
    ttl: Duration,
    entries: Mutex<HashMap<i64, (Instant, Option<DjangoUser>)>>,
}

impl UserCache {
    /// Entries live `ttl` (zero: no caching).
    pub fn new(ttl: Duration) -> UserCache {
        UserCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The user with `id`, from the cache or from `db`.
    pub async fn get(&self, db: &DjangoDb, id: i64) -> Result<Option<DjangoUser>, StoreError> {
        if let Some(hit) = self.lookup(id) {
            return Ok(hit);
        }
        let user = db.user(id).await?;
        if !self.ttl.is_zero()
            && let Ok(mut map) = self.entries.lock()
        {
            if map.len() >= MAX_CACHED_USERS {
                map.clear();
            }
            map.insert(id, (Instant::now() + self.ttl, user.clone()));
        }
        Ok(user)
    }

    fn lookup(&self, id: i64) -> Option<Option<DjangoUser>> {
        let map = self.entries.lock().ok()?;
        let (until, user) = map.get(&id)?;
        (Instant::now() < *until).then(|| user.clone())
    }
}
