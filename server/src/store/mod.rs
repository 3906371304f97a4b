//! The database of users and groups: one [`Store`] over SQLite or PostgreSQL, chosen by URL.
//!
//! The store owns the connection pool, the embedded migrations and the mapping of database
//! errors to [`StoreError`]. Queries are plain unchecked `sqlx::query` with `$1`-style
//! placeholders, which both SQLite and PostgreSQL accept, so each query is written once and
//! [`on_pool!`] runs it against whichever pool the URL chose.
//!
//! SQLite is shared by every worker process: each connection is opened in WAL mode with a
//! 5 s busy timeout, `synchronous = NORMAL` and foreign keys on, and any transaction that reads
//! and then writes starts with `BEGIN IMMEDIATE` ([`WritePool::begin_write`]), because a deferred
//! transaction that loses the read-to-write upgrade race fails at once with `SQLITE_BUSY`,
//! without waiting for the busy timeout. Migrations must run once (`wsredis migrate`), not in
//! every worker: sqlx's SQLite migration lock is a no-op.
//!
//! Password hashes are stored as Django encodes them and never leave this module inside a
//! [`User`]; hashing and verifying is the business of `crate::auth`.

mod error;
pub mod fixtures;
mod groups;
mod memberships;
pub mod time;
mod users;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Postgres, Sqlite, Transaction};

pub use error::StoreError;
pub use groups::{Group, MAX_GROUP_NAME_CHARS, validate_group_name};
pub use users::{MAX_USERNAME_CHARS, NewUser, User, UserUpdate, validate_username};

/// Connections per worker process. SQLite allows one writer at a time anyway, and every pooled
/// SQLite connection is an OS thread, so more would only cost threads.
const MAX_CONNECTIONS: u32 = 4;
/// How long a query waits for a free connection before the store reports itself unavailable.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long SQLite waits on another process's write lock before giving up with "locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Which database a [`Store`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (`sqlite://path`).
    Sqlite,
    /// A PostgreSQL server (`postgres://…`).
    Postgres,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The users-and-groups database. Cheap to clone (it is a pool handle).
#[derive(Clone, Debug)]
pub struct Store {
    pool: Pool,
}

/// Run one body against the store's pool, whichever backend it is. Inside the body `$pool` is
/// a `&SqlitePool` or a `&PgPool`; the body is compiled once for each.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            $crate::store::Pool::Sqlite($pool) => $body,
            $crate::store::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

/// Run one `UPDATE`/`DELETE` (`$sql` with `$args` bound in order) and make the enclosing
/// function return [`StoreError::NotFound`]`($what)` when it touched no row. `map_err` turns
/// the sqlx error into a [`StoreError`] (default: [`StoreError::from_sqlx`]).
macro_rules! change_one {
    ($store:expr, $what:expr, $sql:literal $(, $arg:expr)* $(; map_err = $map:expr)?) => {{
        let result = $crate::store::on_pool!($store, |pool| {
            sqlx::query($sql)$(.bind($arg))*.execute(pool).await.map(|r| r.rows_affected())
        });
        #[allow(unused_variables)]
        let map = $crate::store::StoreError::from_sqlx;
        $(let map = $map;)?
        if result.map_err(map)? == 0 {
            return Err($crate::store::StoreError::NotFound($what));
        }
        Ok(())
    }};
}
pub(crate) use change_one;

/// Starting a transaction that will write, the right way for each backend.
pub(crate) trait WritePool {
    /// The sqlx database of this pool.
    type Db: sqlx::Database;
    /// Begin a transaction that is allowed to read then write without a lock-upgrade failure.
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Self::Db>, sqlx::Error>> + Send;
}

impl WritePool for SqlitePool {
    type Db = Sqlite;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Sqlite>, sqlx::Error>> + Send {
        // Take the write lock up front: a deferred BEGIN that reads and then writes can fail
        // with SQLITE_BUSY immediately instead of waiting for busy_timeout.
        self.begin_with("BEGIN IMMEDIATE")
    }
}

impl WritePool for PgPool {
    type Db = Postgres;
    fn begin_write(
        &self,
    ) -> impl Future<Output = Result<Transaction<'static, Postgres>, sqlx::Error>> + Send {
        self.begin()
    }
}

impl Store {
    /// Open a pool on `sqlite://path` (the file and its directory are created if missing) or
    /// `postgres://…`. Does not run migrations: see [`Store::migrate`].
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let pool = match backend_of(url)? {
            Backend::Sqlite => {
                let opts = sqlite_options(url)?;
                if !is_sqlite_memory(url) {
                    create_parent_dir(opts.get_filename())?;
                }
                let pool = SqlitePoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(opts)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                Pool::Sqlite(pool)
            }
            Backend::Postgres => {
                let pool = PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_with(pg_options(url)?)
                    .await
                    .map_err(StoreError::from_sqlx)?;
                Pool::Postgres(pool)
            }
        };
        Ok(Store { pool })
    }

    /// A store that connects on first use, for workers: a database that is down at start-up
    /// must not stop the worker (websockets do not need it), and queries made while it is down
    /// fail with [`StoreError::Unavailable`] (HTTP 503) until it is back. Only a URL that can
    /// never work is an error here.
    pub fn connect_lazy(url: &str) -> Result<Store, StoreError> {
        let pool = match backend_of(url)? {
            Backend::Sqlite => {
                // A worker never creates the database: a file that is gone (deleted, or a
                // volume not mounted) must answer 503, not be replaced by an empty database
                // whose missing tables answer 500. `wsredis migrate` creates it.
                let opts = sqlite_options(url)?.create_if_missing(is_sqlite_memory(url));
                if !is_sqlite_memory(url)
                    && let Err(e) = create_parent_dir(opts.get_filename())
                {
                    tracing::warn!(error = %e, "the database directory is missing");
                }
                Pool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(MAX_CONNECTIONS)
                        .acquire_timeout(ACQUIRE_TIMEOUT)
                        .connect_lazy_with(opts),
                )
            }
            Backend::Postgres => Pool::Postgres(
                PgPoolOptions::new()
                    .max_connections(MAX_CONNECTIONS)
                    .acquire_timeout(ACQUIRE_TIMEOUT)
                    .connect_lazy_with(pg_options(url)?),
            ),
        };
        Ok(Store { pool })
    }

    /// Which database this store talks to.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// Apply the migrations embedded in the binary (`server/migrations/<backend>/`). Run once
    /// per deployment (`wsredis migrate`), before any worker starts; running it again is a no-op.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        match &self.pool {
            Pool::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
            Pool::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        }
        .map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => StoreError::from_sqlx(e),
            other => StoreError::Migrate(other.to_string()),
        })
    }

    /// Close every connection (waits for queries in flight).
    pub async fn close(&self) {
        on_pool!(self, |pool| pool.close().await)
    }
}

/// The backend a database URL names, from its scheme.
pub fn backend_of(url: &str) -> Result<Backend, StoreError> {
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "sqlite" => Ok(Backend::Sqlite),
        "postgres" | "postgresql" => Ok(Backend::Postgres),
        _ => Err(StoreError::Url(format!(
            "`{url}` is neither sqlite://path nor postgres://…"
        ))),
    }
}

/// SQLite options for several processes sharing one file (see the module header).
fn sqlite_options(url: &str) -> Result<SqliteConnectOptions, StoreError> {
    let opts =
        SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Url(format!("{url}: {e}")))?;
    Ok(opts
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true))
}

fn pg_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url).map_err(|e| StoreError::Url(format!("{url}: {e}")))
}

fn is_sqlite_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

fn create_parent_dir(file: &std::path::Path) -> Result<(), StoreError> {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create directory {}: {e}", dir.display()))
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_from_scheme() {
        assert_eq!(backend_of("sqlite://var/x.db").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(backend_of("postgres://u@h/db").unwrap(), Backend::Postgres);
        assert_eq!(
            backend_of("postgresql://u@h/db").unwrap(),
            Backend::Postgres
        );
        assert!(matches!(
            backend_of("mysql://u@h/db"),
            Err(StoreError::Url(_))
        ));
        assert!(backend_of("var/x.db").is_err());
    }
}
