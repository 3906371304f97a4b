//! The management commands: `wsredis migrate`, `wsredis loaddata FILE` and
//! `wsredis createuser USERNAME`, for operators and scripts.
//!
//! Each runs in its own short-lived process on a current-thread runtime that `main.rs` builds
//! for it (never in `serve`'s master, which must stay free of threads and runtimes). Each
//! returns one line for stdout on success, or a [`ManageError`] whose message says what to do.

use std::io::BufRead;

use crate::auth::{self, AuthError};
use crate::cli::{CreateuserArgs, DbArgs, LoaddataArgs};
use crate::store::{Store, StoreError, fixtures};

/// Environment variable that carries `createuser`'s password (else stdin's first line).
pub const ENV_PASSWORD: &str = "WSREDIS_PASSWORD";

/// Why a management command failed.
#[derive(Debug, thiserror::Error)]
pub enum ManageError {
    /// The database refused or failed.
    #[error("{0}{hint}", hint = schema_hint(.0))]
    Store(#[from] StoreError),
    /// The database could not be opened.
    #[error("cannot open the database {url}: {source}")]
    Connect {
        /// The database URL, without its password.
        url: String,
        /// Why.
        source: StoreError,
    },
    /// The fixture file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file named on the command line.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The fixture file is not a usable Django dump.
    #[error("{0}")]
    Fixture(#[from] fixtures::FixtureError),
    /// Creating the user failed.
    #[error("{0}{hint}", hint = auth_hint(.0))]
    Auth(#[from] AuthError),
    /// No password was given.
    #[error("no password: set {ENV_PASSWORD} or write it on stdin (or pass --no-password)")]
    NoPassword,
}

/// A hint for errors that mean "the tables are not there yet".
fn schema_hint(e: &StoreError) -> &'static str {
    let text = e.to_string();
    if text.contains("no such table") || text.contains("does not exist") {
        " (run `wsredis migrate` first)"
    } else {
        ""
    }
}

fn auth_hint(e: &AuthError) -> &'static str {
    match e {
        AuthError::Store(s) => schema_hint(s),
        _ => "",
    }
}

async fn open(db: &DbArgs) -> Result<Store, ManageError> {
    Store::connect(&db.database_url)
        .await
        .map_err(|source| ManageError::Connect {
            url: redact(&db.database_url),
            source,
        })
}

/// `wsredis migrate`: apply the embedded migrations.
pub async fn migrate(args: &DbArgs) -> Result<String, ManageError> {
    let store = open(args).await?;
    store.migrate().await?;
    store.close().await;
    Ok(format!(
        "migrations applied to {}",
        redact(&args.database_url)
    ))
}

/// `wsredis loaddata FILE`: load a Django dump of users and groups.
pub async fn loaddata(args: &LoaddataArgs) -> Result<String, ManageError> {
    let json = std::fs::read(&args.file).map_err(|source| ManageError::Read {
        path: args.file.display().to_string(),
        source,
    })?;
    let store = open(&args.db).await?;
    let summary = fixtures::loaddata(&store, &json).await;
    store.close().await;
    let summary = summary.map_err(|e| match e {
        fixtures::FixtureError::Store(s) => ManageError::Store(s),
        other => ManageError::Fixture(other),
    })?;
    Ok(format!("loaded {}: {summary}", args.file.display()))
}

/// `wsredis createuser`: `password` is the value of [`ENV_PASSWORD`] if set; otherwise the
/// first line of `stdin` is read.
pub async fn createuser(
    args: &CreateuserArgs,
    password: Option<String>,
    stdin: impl BufRead,
) -> Result<String, ManageError> {
    let password = if args.no_password {
        None
    } else {
        Some(match password {
            Some(p) if !p.is_empty() => p,
            _ => first_line(stdin).ok_or(ManageError::NoPassword)?,
        })
    };
    let store = open(&args.db).await?;
    let user = auth::create_user(
        &store,
        &args.username,
        password.as_deref(),
        args.staff || args.superuser,
        args.superuser,
        &args.groups,
    )
    .await;
    store.close().await;
    let user = user?;
    Ok(format!("created user {} (id {})", user.username, user.id))
}

fn first_line(mut stdin: impl BufRead) -> Option<String> {
    let mut line = String::new();
    stdin.read_line(&mut line).ok()?;
    let line = line.trim_end_matches(['\r', '\n']);
    (!line.is_empty()).then(|| line.to_owned())
}

/// The URL without a password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_appear_in_messages() {
        assert_eq!(
            redact("postgres://u:pw@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("sqlite://var/x.db"), "sqlite://var/x.db");
    }

    #[test]
    fn the_password_is_the_first_line() {
        assert_eq!(
            first_line(&b"s3cret\nmore\n"[..]).as_deref(),
            Some("s3cret")
        );
        assert_eq!(first_line(&b"pw\r\n"[..]).as_deref(), Some("pw"));
        assert_eq!(first_line(&b"\n"[..]), None);
        assert_eq!(first_line(&b""[..]), None);
    }
}
