//! The command-line and environment settings of the Django identity source
//! (`--session-backend django-redis|django-db`), flattened into `config::Config`.
//!
//! Secrets come from the environment (`DJANGO_SECRET_KEY`, `DJANGO_SECRET_KEY_FALLBACKS`) or a
//! file (`--django-secret-key-file`), never from a command line, where `ps` would show them.

use clap::Args;
use serde::{Deserialize, Serialize};

use super::signing::Keys;

/// Django's `SECRET_KEY` and `SECRET_KEY_FALLBACKS`; `Debug` never shows them.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SecretKeys {
    /// `SECRET_KEY`.
    pub current: String,
    /// `SECRET_KEY_FALLBACKS`, still accepted for reading.
    pub fallbacks: Vec<String>,
}

impl std::fmt::Debug for SecretKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKeys(1 + {} fallback(s))", self.fallbacks.len())
    }
}

impl SecretKeys {
    /// The keys for `signing`.
    pub fn keys(&self) -> Keys {
        Keys::new(&self.current, &self.fallbacks)
    }
}

/// One key per line: the first is `SECRET_KEY`, the others `SECRET_KEY_FALLBACKS`. Surrounding
/// whitespace and empty lines are ignored.
fn read_keys_file(path: &str) -> Result<SecretKeys, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut keys = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let current = keys.next().ok_or_else(|| format!("{path} is empty"))?;
    Ok(SecretKeys {
        current: current.to_owned(),
        fallbacks: keys.map(str::to_owned).collect(),
    })
}

/// `DJANGO_SECRET_KEY`, plus `DJANGO_SECRET_KEY_FALLBACKS` (one per line, or comma-separated).
fn keys_from_env() -> Option<SecretKeys> {
    let current = std::env::var("DJANGO_SECRET_KEY")
        .ok()
        .filter(|k| !k.trim().is_empty())?;
    let fallbacks = std::env::var("DJANGO_SECRET_KEY_FALLBACKS").unwrap_or_default();
    Some(SecretKeys {
        current: current.trim().to_owned(),
        fallbacks: fallbacks
            .split(['\n', ','])
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_owned)
            .collect(),
    })
}

/// Where and how a Django site keeps its sessions and users.
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
pub struct DjangoSettings {
    /// File holding Django's SECRET_KEY (first line) and SECRET_KEY_FALLBACKS (further lines);
    /// or set DJANGO_SECRET_KEY (and DJANGO_SECRET_KEY_FALLBACKS) in the environment.
    #[arg(long, env = "WSREDIS_DJANGO_SECRET_KEY_FILE", value_parser = read_keys_file)]
    pub django_secret_key_file: Option<SecretKeys>,

    /// The keys from the environment only.
    #[arg(skip = keys_from_env())]
    pub django_secret_key_env: Option<SecretKeys>,

    /// Django's database (read-only: auth_user, and django_session with the db backend):
    /// sqlite:///path/to/db.sqlite3 or postgres://…
    #[arg(long, env = "WSREDIS_DJANGO_DATABASE_URL")]
    pub django_database_url: Option<String>,

    /// Django's SESSION_COOKIE_NAME.
    #[arg(
        long,
        env = "WSREDIS_DJANGO_SESSION_COOKIE",
        default_value = "sessionid"
    )]
    pub django_session_cookie: String,

    /// Django's SESSION_COOKIE_AGE in seconds: a session signed longer ago is anonymous.
    #[arg(long, env = "WSREDIS_DJANGO_SESSION_AGE", default_value_t = 1_209_600)]
    pub django_session_age: u64,

    /// django-redis-sessions' SESSION_REDIS['prefix']: sessions live at `<prefix>:<key>`
    /// (just `<key>` when empty, its default).
    #[arg(long, env = "WSREDIS_DJANGO_SESSION_REDIS_PREFIX", default_value = "")]
    pub django_session_redis_prefix: String,

    /// Seconds a worker keeps an auth_user row before reading it again.
    #[arg(long, env = "WSREDIS_DJANGO_USER_CACHE", default_value_t = 10)]
    pub django_user_cache: u64,

    /// Oldest connection token accepted, in seconds (0 = tokens off). A token is
    /// `django.core.signing.dumps({"user_id": …, "groups": […]}, salt=<--django-token-salt>)`,
    /// sent as `?token=` or `Authorization: Bearer`.
    #[arg(long, env = "WSREDIS_DJANGO_TOKEN_MAX_AGE", default_value_t = 300)]
    pub django_token_max_age: u64,

    /// The salt Django signs connection tokens with.
    #[arg(
        long,
        env = "WSREDIS_DJANGO_TOKEN_SALT",
        default_value = "wsredis.token"
    )]
    pub django_token_salt: String,
}

impl DjangoSettings {
    /// The secret keys: the file wins over the environment.
    pub fn secret_keys(&self) -> Option<&SecretKeys> {
        self.django_secret_key_file
            .as_ref()
            .or(self.django_secret_key_env.as_ref())
    }
}
