//! Identity from an existing Django site, so `wsredis serve --mode websocket` can replace the
//! uWSGI websocket pool of a django-websocket-redis deployment with Django left unchanged.
//!
//! What django-websocket-redis's `process_request` does, without Python: read the session
//! cookie (`SESSION_COOKIE_NAME`), load the session where Django keeps it — Redis as
//! django-redis-sessions lays it out (`[prefix:]key`, [`SessionSource::Redis`]) or the
//! `django_session` table ([`SessionSource::Db`]) — decode it as Django does ([`session`],
//! [`signing`]), then `get_user`: the `auth_user` row of `_auth_user_id` ([`db`]), active, whose
//! `get_session_auth_hash()` equals the session's `_auth_user_hash`. Groups are the session's
//! `ws4redis:memberof`. The counterpart of `WS4REDIS_PROCESS_REQUEST` for clients without
//! cookies is a connection token signed by Django (`?token=` or `Authorization: Bearer`).
//!
//! Invariants:
//! - An unknown, expired, tampered or foreign-key session is anonymous, never an error; so is
//!   a session whose user is gone or inactive (that one keeps its session channel, as in
//!   Django, where such a session still exists). A session whose auth hash does not verify is
//!   one Django would flush: fully anonymous.
//! - Redis or the database being unreachable is an error (HTTP 503), never anonymous.
//! - A cookie reaches Redis or SQL only if it has the shape of a Django session key.

pub mod db;
pub mod session;
pub mod settings;
pub mod signing;

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{Client, KeysInterface};
use http::HeaderMap;
use http::header::AUTHORIZATION;
use percent_encoding::percent_decode_str;

use super::cookie;
use super::session::{SessionError, timed};
use crate::bus::channels::Identity;
use crate::store::{StoreError, time};
use db::{DjangoDb, DjangoUser, UserCache};
use session::{SessionData, valid_name};

use signing::Keys;

/// Salt of Django's `AbstractBaseUser.get_session_auth_hash`.
const AUTH_HASH_SALT: &str = "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash";
/// Longest username used in a channel name (Django's `username` max_length).
const MAX_USERNAME_CHARS: usize = 150;
/// Longest token accepted from a URL or header.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Where the Django site keeps its sessions.
#[derive(Clone, Debug)]
pub enum SessionSource {
    /// django-redis-sessions: `GET [prefix:]key` on this client.
    Redis {
        /// A command client (the bus's).
        client: Client,
        /// `SESSION_REDIS['prefix']`, empty for none.
        prefix: String,
    },
    /// `django.contrib.sessions.backends.db`: the `django_session` table.
    Db,
}

/// Why a Django identity could not be decided.
#[derive(Debug, thiserror::Error)]
pub enum DjangoError {
    /// Required settings are missing or unusable (the worker does not start).
    #[error("django identity: {0}")]
    Config(String),
    /// Redis or the database is down or too slow (HTTP 503).
    #[error("django identity unavailable: {0}")]
    Unavailable(String),
    /// Redis or the database answered with an error (a broken schema, wrong key type).
    #[error("django identity lookup failed: {0}")]
    Lookup(String),
}

impl From<StoreError> for DjangoError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(why) => DjangoError::Unavailable(why),
            other => DjangoError::Lookup(other.to_string()),
        }
    }
}

impl From<SessionError> for DjangoError {
    fn from(e: SessionError) -> Self {
        if e.is_unavailable() {
            DjangoError::Unavailable(e.to_string())
        } else {
            DjangoError::Lookup(e.to_string())
        }
    }
}

/// The identity source of one worker for a Django site.
#[derive(Debug)]
pub struct Django {
    keys: Keys,
    source: SessionSource,
    db: DjangoDb,
    users: UserCache,
    cookie: String,
    session_age: u64,
    token_salt: String,
    token_max_age: u64,
}

impl Django {
    /// Build from the settings; `source` says where sessions are read.
    pub fn new(s: &settings::DjangoSettings, source: SessionSource) -> Result<Django, DjangoError> {
        let keys = s
            .secret_keys()
            .ok_or_else(|| {
                DjangoError::Config(
                    "set DJANGO_SECRET_KEY or --django-secret-key-file (Django's SECRET_KEY)"
                        .into(),
                )
            })?
            .keys();
        let url = s.django_database_url.as_deref().ok_or_else(|| {
            DjangoError::Config("--django-database-url is needed to read auth_user".into())
        })?;
        let db = DjangoDb::connect_lazy(url).map_err(|e| DjangoError::Config(e.to_string()))?;
        Ok(Django {
            keys,
            source,
            db,
            users: UserCache::new(Duration::from_secs(s.django_user_cache)),
            cookie: s.django_session_cookie.clone(),
            session_age: s.django_session_age,
            token_salt: s.django_token_salt.clone(),
            token_max_age: s.django_token_max_age,
        })
    }

    /// Who is on a websocket request: a connection token if one is sent, else the session
    /// cookie, else anonymous.
    pub async fn identify(
        &self,
        headers: &HeaderMap,
        query: &str,
    ) -> Result<Identity, DjangoError> {
        if self.token_max_age > 0
            && let Some(token) = token(headers, query)
        {
            return self.user_of_token(&token).await;
        }
        let Some(key) = cookie::find(headers, &self.cookie).filter(|k| valid_session_key(k)) else {
            return Ok(Identity::anonymous());
        };
        let now = time::now();
        let data = match &self.source {
            SessionSource::Redis { client, prefix } => {
                let redis_key = if prefix.is_empty() {
                    key.to_owned()
                } else {
                    format!("{prefix}:{key}")
                };
                let value: Option<Bytes> = timed(client.get(redis_key)).await?;
                value.and_then(|v| String::from_utf8(v.to_vec()).ok())
            }
            SessionSource::Db => self.db.session(key, now).await?,
        };
        let Some(session) =
            data.and_then(|d| session::decode(&d, &self.keys, self.session_age, now))
        else {
            return Ok(Identity::anonymous());
        };
        self.user_of_session(key, session).await
    }

    /// Django's `get_user` on a decoded session.
    async fn user_of_session(
        &self,
        key: &str,
        session: SessionData,
    ) -> Result<Identity, DjangoError> {
        let with_session = Identity {
            session_key: Some(key.to_owned()),
            ..Identity::anonymous()
        };
        let Some(id) = session.user_id else {
            return Ok(with_session);
        };
        let Some(user) = self.active_user(id).await? else {
            return Ok(with_session);
        };
        let verified = session
            .auth_hash
            .as_deref()
            .is_some_and(|h| self.verify_auth_hash(&user, h));
        if !verified {
            // Django flushes such a session (password changed, or forged id): nothing is left.
            return Ok(Identity::anonymous());
        }
        Ok(Identity {
            username: Some(user.username),
            groups: session.groups,
            session_key: Some(key.to_owned()),
            is_staff: user.is_staff,
        })
    }

    /// A connection token: `signing.loads(token, salt=<salt>, max_age=<max age>)` giving
    /// `{"user_id": …, "groups": [...]}`; the user must exist and be active. No session.
    async fn user_of_token(&self, token: &str) -> Result<Identity, DjangoError> {
        let now = time::now();
        let Ok((obj, _)) = signing::loads(
            token,
            &self.keys,
            &self.token_salt,
            Some(self.token_max_age),
            now,
        ) else {
            return Ok(Identity::anonymous());
        };
        let Some(id) = obj.get("user_id").and_then(serde_json::Value::as_i64) else {
            return Ok(Identity::anonymous());
        };
        Ok(match self.active_user(id).await? {
            Some(user) => Identity {
                username: Some(user.username),
                groups: session::group_list(obj.get("groups")),
                session_key: None,
                is_staff: user.is_staff,
            },
            None => Identity::anonymous(),
        })
    }

    /// The user with `id` if it exists, is active and has a usable username.
    async fn active_user(&self, id: i64) -> Result<Option<DjangoUser>, DjangoError> {
        Ok(self
            .users
            .get(&self.db, id)
            .await?
            .filter(|u| u.is_active && valid_name(&u.username, MAX_USERNAME_CHARS)))
    }

    /// `constant_time_compare(hash, user.get_session_auth_hash())`, for SECRET_KEY and each
    /// fallback (Django 4.1+ accepts hashes made with a fallback key).
    fn verify_auth_hash(&self, user: &DjangoUser, hash: &str) -> bool {
        self.keys.all().fold(false, |ok, key| {
            let expected =
                signing::salted_hmac_sha256(AUTH_HASH_SALT, user.password.as_bytes(), key);
            ok | signing::same(hash, &signing::hex(&expected))
        })
    }
}

/// Whether a cookie value can be a Django session key: Django's keys are 32 characters of
/// `[a-z0-9]` and it accepts any of length 8 or more; we accept 8 to 64 of `[a-z0-9]`.
pub fn valid_session_key(key: &str) -> bool {
    (8..=64).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A connection token from `Authorization: Bearer …` or the `token` query parameter (browsers
/// cannot set headers on a websocket).
fn token(headers: &HeaderMap, query: &str) -> Option<String> {
    let from_header = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned());
    let from_query = || {
        query.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "token").then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
        })
    };
    from_header
        .or_else(from_query)
        .filter(|t| !t.is_empty() && t.len() <= MAX_TOKEN_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_key_shape() {
        assert!(valid_session_key("f37zeyhgn7oje0w2wgh50s4uk9qg3z07"));
        assert!(!valid_session_key("short"));
        assert!(!valid_session_key("F37ZEYHGN7OJE0W2"));
        assert!(!valid_session_key("abc*defgh"));
        assert!(!valid_session_key(&"a".repeat(65)));
    }

    #[test]
    fn token_from_header_or_query() {
        let mut h = HeaderMap::new();
        assert_eq!(
            token(&h, "subscribe-user&token=a%3Ab%3Ac"),
            Some("a:b:c".into())
        );
        assert_eq!(token(&h, "subscribe-user"), None);
        assert_eq!(token(&h, "token="), None);
        h.insert(AUTHORIZATION, "Bearer x:y:z".parse().unwrap());
        assert_eq!(token(&h, "token=q"), Some("x:y:z".into()));
    }
}
