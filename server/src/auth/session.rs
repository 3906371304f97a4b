//! Web-app sessions in Redis, readable by the websocket pool without the database.
//!
//! The contract (also in `docs/sessions.md`; the websocket side depends on it):
//! - key `{session_prefix}{session_key}`; the session key is 40 characters of `[a-z0-9]` from a
//!   CSPRNG (about 206 bits), sent as the `sessionid` cookie;
//! - value: the JSON of [`SessionRecord`], e.g. `{"user_id":1,"username":"john",
//!   "groups":["chatusers"],"is_staff":false,"is_superuser":false,"csrf_token":"…","created":…}`;
//! - the key's TTL is the session TTL, renewed each time the session is loaded.
//!
//! Invariants: a cookie value is checked with [`valid_key`] before any Redis command, so forged
//! cookies never reach Redis with odd bytes; a stored value is accepted only through [`parse`],
//! which rejects anything malformed; logging in always creates a new key ([`SessionStore::rotate`])
//! and logging out deletes it. Group names are copied at login: membership changes take effect
//! at the next login, as in django-websocket-redis.

use std::time::Duration;

use bytes::Bytes;
use fred::prelude::{
    Client, Error as RedisError, ErrorKind, Expiration, KeysInterface, SetOptions,
};
use rand::Rng as _;
use serde::{Deserialize, Serialize};

use super::csrf;
use crate::store::{User, time, validate_group_name, validate_username};

/// Characters of a session key.
pub const KEY_CHARS: usize = 40;
/// Largest stored record accepted by [`parse`]; a real one is a few hundred bytes.
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Most groups a record may list.
pub const MAX_GROUPS: usize = 1024;
/// A Redis command that takes longer than this counts as "Redis unavailable", so a request
/// does not hang while the client waits to reconnect.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
const KEY_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// What a session knows about its user, frozen at login. Field names and meaning are a fixed
/// contract with the websocket pool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRecord {
    /// The user's id in the store.
    pub user_id: i64,
    /// The username (the ws4redis `user:` channel).
    pub username: String,
    /// Group names at login (the ws4redis `group:` channels).
    pub groups: Vec<String>,
    /// May use the admin pages.
    pub is_staff: bool,
    /// Has every permission.
    pub is_superuser: bool,
    /// The CSRF token of this session's forms (see `auth::csrf`).
    pub csrf_token: String,
    /// Unix seconds of the login.
    pub created: i64,
}

/// Whether `key` has the shape of a session key (40 of `[a-z0-9]`). Check a cookie with this
/// before it goes anywhere near Redis.
pub fn valid_key(key: &str) -> bool {
    key.len() == KEY_CHARS
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A new random session key (CSPRNG, uniform over the 36 characters).
pub fn new_key() -> String {
    let mut rng = rand::rng();
    (0..KEY_CHARS)
        .map(|_| char::from(KEY_ALPHABET[rng.random_range(0..KEY_ALPHABET.len())]))
        .collect()
}

/// The record in a stored value, or `None` if it is not exactly a well-formed record: JSON of
/// the right shape, a positive user id, a valid username and group names, a well-formed CSRF
/// token, a non-negative creation time, within size limits. Unknown extra fields are ignored
/// (so a newer writer can add fields without locking out older readers).
pub fn parse(bytes: &[u8]) -> Option<SessionRecord> {
    if bytes.len() > MAX_RECORD_BYTES {
        return None;
    }
    let record: SessionRecord = serde_json::from_slice(bytes).ok()?;
    let well_formed = record.user_id > 0
        && validate_username(&record.username).is_ok()
        && record.groups.len() <= MAX_GROUPS
        && record
            .groups
            .iter()
            .all(|g| validate_group_name(g).is_ok_and(|trimmed| trimmed == g))
        && csrf::valid_token(&record.csrf_token)
        && record.created >= 0;
    well_formed.then_some(record)
}

/// A Redis failure while reading or writing sessions.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Redis is down, unreachable or too slow; the request may succeed later (HTTP 503).
    #[error("session store unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error (wrong type at the key, authentication, …).
    #[error("session store error: {0}")]
    Redis(#[source] RedisError),
}

impl SessionError {
    /// Whether a retry later may succeed (map to HTTP 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, SessionError::Unavailable(_))
    }
}

impl From<RedisError> for SessionError {
    fn from(e: RedisError) -> Self {
        match e.kind() {
            ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Routing => {
                SessionError::Unavailable(e.to_string())
            }
            _ => SessionError::Redis(e),
        }
    }
}

/// Sessions of the web app, stored in Redis through the caller's fred [`Client`].
#[derive(Clone)]
pub struct SessionStore {
    /// A connected command client (not a subscriber); the bus module owns its setup.
    client: Client,
    /// `--session-prefix`, e.g. `wsredis:session:`.
    prefix: String,
    /// `--session-ttl` in seconds: how long a session lives without use.
    ttl: i64,
}

impl std::fmt::Debug for SessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionStore")
            .field("prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl SessionStore {
    /// Sessions under `prefix` that live `ttl_secs` without use (at least 1 s).
    pub fn new(client: Client, prefix: impl Into<String>, ttl_secs: u64) -> SessionStore {
        SessionStore {
            client,
            prefix: prefix.into(),
            ttl: i64::try_from(ttl_secs).unwrap_or(i64::MAX).max(1),
        }
    }

    /// The Redis key of a session key.
    pub fn redis_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Store a new session for `user` with these group names; returns its key and record.
    pub async fn create(
        &self,
        user: &User,
        groups: Vec<String>,
    ) -> Result<(String, SessionRecord), SessionError> {
        let record = SessionRecord {
            user_id: user.id,
            username: user.username.clone(),
            groups,
            is_staff: user.is_staff,
            is_superuser: user.is_superuser,
            csrf_token: csrf::new_token(),
            created: time::now(),
        };
        let json = serde_json::to_string(&record).map_err(|e| {
            SessionError::Redis(RedisError::new(ErrorKind::InvalidArgument, e.to_string()))
        })?;
        // NX: a key collision (about 2^-206) must not hand over someone else's session.
        for _ in 0..3 {
            let key = new_key();
            let set: Option<String> = timed(self.client.set(
                self.redis_key(&key),
                json.as_str(),
                Some(Expiration::EX(self.ttl)),
                Some(SetOptions::NX),
                false,
            ))
            .await?;
            if set.is_some() {
                return Ok((key, record));
            }
        }
        Err(SessionError::Unavailable(
            "could not find a free session key".into(),
        ))
    }

    /// The session with this key, renewing its TTL; `None` if the key is malformed, unknown,
    /// expired, or holds a malformed record.
    pub async fn load(&self, key: &str) -> Result<Option<SessionRecord>, SessionError> {
        if !valid_key(key) {
            return Ok(None);
        }
        let redis_key = self.redis_key(key);
        let pipe = self.client.pipeline();
        let () = pipe.get(redis_key.as_str()).await?;
        let () = pipe.expire(redis_key.as_str(), self.ttl, None).await?;
        let (value, _renewed): (Option<Bytes>, i64) = timed(pipe.all()).await?;
        Ok(value.as_deref().and_then(parse))
    }

    /// Renew a session's TTL without reading it; returns whether it exists.
    pub async fn touch(&self, key: &str) -> Result<bool, SessionError> {
        if !valid_key(key) {
            return Ok(false);
        }
        let renewed: i64 = timed(self.client.expire(self.redis_key(key), self.ttl, None)).await?;
        Ok(renewed == 1)
    }

    /// Delete a session (logout). Deleting a malformed or unknown key is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), SessionError> {
        if !valid_key(key) {
            return Ok(());
        }
        let _: i64 = timed(self.client.del(self.redis_key(key))).await?;
        Ok(())
    }

    /// Login: delete the session `old_key` (if any) and create a new one, so a session key
    /// known before login (e.g. planted by an attacker) is worthless after it.
    pub async fn rotate(
        &self,
        old_key: Option<&str>,
        user: &User,
        groups: Vec<String>,
    ) -> Result<(String, SessionRecord), SessionError> {
        if let Some(old) = old_key {
            self.delete(old).await?;
        }
        self.create(user, groups).await
    }
}

/// Run one Redis command with [`COMMAND_TIMEOUT`].
pub(crate) async fn timed<T>(
    fut: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, fut).await {
        Ok(result) => result.map_err(SessionError::from),
        Err(_) => Err(SessionError::Unavailable(format!(
            "no answer from Redis within {COMMAND_TIMEOUT:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> SessionRecord {
        SessionRecord {
            user_id: 2,
            username: "john".into(),
            groups: vec!["chatusers".into()],
            is_staff: false,
            is_superuser: false,
            csrf_token: csrf::new_token(),
            created: 1_700_000_000,
        }
    }

    #[test]
    fn keys_are_40_lowercase_alphanumerics_and_differ() {
        let a = new_key();
        assert!(valid_key(&a), "{a}");
        assert_ne!(a, new_key());
        // Every character of the alphabet shows up over enough keys (uniform, not biased).
        let seen: std::collections::HashSet<u8> =
            (0..200).flat_map(|_| new_key().into_bytes()).collect();
        assert_eq!(seen.len(), 36);
    }

    #[test]
    fn forged_cookie_values_are_not_keys() {
        let good = new_key();
        for bad in [
            String::new(),
            good[..39].to_owned(),
            format!("{good}a"),
            good.to_uppercase(),
            format!("{}*", &good[..39]),
            format!("{}\r\n", &good[..38]),
            format!("{}é", &good[..38]),
            "\u{0}".repeat(40),
        ] {
            assert!(!valid_key(&bad), "{bad:?}");
        }
    }

    #[test]
    fn parse_round_trips_the_contract_json() {
        let r = record();
        let json = serde_json::to_vec(&r).unwrap();
        assert_eq!(parse(&json), Some(r.clone()));
        let text = String::from_utf8(json).unwrap();
        for field in [
            "\"user_id\":2",
            "\"username\":\"john\"",
            "\"groups\":[\"chatusers\"]",
            "\"is_staff\":false",
            "\"is_superuser\":false",
            "\"csrf_token\":",
            "\"created\":1700000000",
        ] {
            assert!(text.contains(field), "{text} lacks {field}");
        }
        let extra = text.replacen('{', "{\"future\":1,", 1);
        assert_eq!(parse(extra.as_bytes()), Some(r));
    }

    #[test]
    fn parse_rejects_malformed_records() {
        let r = record();
        let with = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v = serde_json::to_value(&r).unwrap();
            f(&mut v);
            serde_json::to_vec(&v).unwrap()
        };
        let cases = [
            with(&|v| v["user_id"] = 0.into()),
            with(&|v| v["user_id"] = "2".into()),
            with(&|v| v["username"] = "".into()),
            with(&|v| v["username"] = "a:b".into()),
            with(&|v| v["groups"] = serde_json::json!(["ok", ""])),
            with(&|v| v["groups"] = serde_json::json!([" padded"])),
            with(&|v| v["groups"] = "chatusers".into()),
            with(&|v| v["csrf_token"] = "short".into()),
            with(&|v| v["is_staff"] = 1.into()),
            with(&|v| v["created"] = (-1).into()),
            with(&|v| {
                v.as_object_mut().unwrap().remove("csrf_token");
            }),
            b"".to_vec(),
            b"null".to_vec(),
            b"[]".to_vec(),
            b"{\"user_id\":1".to_vec(),
            vec![0xff; 100],
        ];
        for c in &cases {
            assert_eq!(parse(c), None, "{}", String::from_utf8_lossy(c));
        }
        let mut huge = serde_json::to_value(&r).unwrap();
        huge["pad"] = "x".repeat(MAX_RECORD_BYTES).into();
        assert_eq!(parse(&serde_json::to_vec(&huge).unwrap()), None);
    }

    #[test]
    fn parse_survives_mutated_records() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let valid = serde_json::to_vec(&record()).unwrap();
        for _ in 0..5000 {
            let mut input = valid.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..input.len());
                match rng.random_range(0..3) {
                    0 => input[i] = rng.random(),
                    1 => drop(input.remove(i)),
                    _ => input.insert(i, rng.random()),
                }
            }
            // Whatever is accepted is a record that round-trips and passes every check.
            if let Some(r) = parse(&input) {
                assert_eq!(parse(&serde_json::to_vec(&r).unwrap()), Some(r));
            }
        }
    }
}
