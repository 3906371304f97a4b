//! [`StoreError`]: what can go wrong in the store, sorted by what the caller should do about it.
//!
//! The HTTP layer maps these in one place: `Unavailable` → 503 (retry later), `UsernameTaken`
//! and `GroupNameTaken` → 409 or a form error, `Invalid` → 400 or a form error, `NotFound` and
//! `UnknownGroup` → 404 or a form error, everything else → 500.

/// An error of the users-and-groups store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database is locked past the busy timeout, unreachable, or out of connections;
    /// the request may succeed later (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// A user with this username already exists.
    #[error("username `{0}` is already taken")]
    UsernameTaken(String),
    /// A group with this name already exists.
    #[error("group name `{0}` is already taken")]
    GroupNameTaken(String),
    /// A group named in a request does not exist.
    #[error("no group named `{0}`")]
    UnknownGroup(String),
    /// The user or group with this id does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// A value breaks a rule of the data model (empty username, bad characters, too long).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field at fault, as named in forms (`username`, `name`, …).
        field: &'static str,
        /// What is wrong with it, in words for the user.
        reason: String,
    },
    /// The database URL cannot be used.
    #[error("database URL: {0}")]
    Url(String),
    /// Migrations could not be applied (e.g. the database has a newer or edited migration).
    #[error("migration failed: {0}")]
    Migrate(String),
    /// Any other database error (a bug or a broken schema rather than a passing condition).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
}

impl StoreError {
    /// Sort a sqlx error: passing conditions become [`StoreError::Unavailable`].
    pub(crate) fn from_sqlx(e: sqlx::Error) -> StoreError {
        if is_unavailable(&e) {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Database(e)
        }
    }

    /// Sort a sqlx error from an insert or update that may break a unique constraint.
    pub(crate) fn from_sqlx_unique(e: sqlx::Error, taken: impl FnOnce() -> StoreError) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => taken(),
            _ => StoreError::from_sqlx(e),
        }
    }

    /// Whether a retry later may succeed (map to HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// SQLite result codes (primary, the low byte of the extended code) that mean "try again".
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;

fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            // SQLite reports its extended result code as a number; PostgreSQL an SQLSTATE.
            if let Ok(n) = code.parse::<i64>() {
                return matches!(
                    n & 0xff,
                    SQLITE_BUSY | SQLITE_LOCKED | SQLITE_IOERR | SQLITE_FULL | SQLITE_CANTOPEN
                );
            }
            // 08: connection exception; 53: insufficient resources; 57P0x: server shutting
            // down; 40001/40P01: serialization failure, deadlock; 55P03: lock not available.
            code.starts_with("08")
                || code.starts_with("53")
                || code.starts_with("57P0")
                || matches!(&*code, "40001" | "40P01" | "55P03")
        }
        _ => false,
    }
}
