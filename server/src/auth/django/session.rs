//! A Django session's stored data, decoded as `SessionBase.decode` does, reduced to what a
//! websocket needs: the user id and session auth hash, the `ws4redis:memberof` groups and
//! whether the session has outlived its age.
//!
//! Django ≥ 3.1 stores `signing.dumps(session, salt="django.contrib.sessions.SessionStore",
//! compress=True)` (the salt is the same for the database backend and django-redis-sessions,
//! whose classes are both named `SessionStore`); Django < 3.1 stored the legacy format, which
//! Django 3.1 and 3.2 still read and so do we. Only the JSON serializer is supported (the pickle
//! one is gone from Django 5.0 and is never unpickled here).
//!
//! Invariant: [`decode`] returns `None` for anything that is not a valid, current session,
//! which callers treat as "no session at all" (Django returns an empty session).

use super::signing::{self, Keys};
use crate::store::time;

/// Salt of `SessionStore.key_salt` ("django.contrib.sessions." + the class's qualname).
pub const SESSION_SALT: &str = "django.contrib.sessions.SessionStore";
/// Longest group name taken from `ws4redis:memberof` (Django's `Group.name` max_length).
pub const MAX_GROUP_CHARS: usize = 150;
/// Most groups taken from one session.
pub const MAX_GROUPS: usize = 1024;

/// What the websocket pool takes from a Django session.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SessionData {
    /// `_auth_user_id` as an integer primary key; `None` for an anonymous session.
    pub user_id: Option<i64>,
    /// `_auth_user_hash`, the HMAC of the user's password hash (checked against `auth_user`).
    pub auth_hash: Option<String>,
    /// `ws4redis:memberof`, written by django-websocket-redis's `user_logged_in` receiver.
    pub groups: Vec<String>,
}

/// Decode `data` as Django would, refusing it when it is tampered, signed with another key,
/// malformed, or signed longer ago than the session's age (`_session_expiry` or
/// `cookie_age_secs`, Django's `SESSION_COOKIE_AGE`). The store's own expiry (Redis TTL,
/// `expire_date`) is checked by the caller; this check is the same rule on the signature.
pub fn decode(data: &str, keys: &Keys, cookie_age_secs: u64, now: i64) -> Option<SessionData> {
    let (obj, signed_at) = match signing::loads(data, keys, SESSION_SALT, None, now) {
        Ok((obj, ts)) => (obj, Some(ts)),
        Err(signing::SigningError::BadSignature | signing::SigningError::Malformed(_)) => (
            signing::legacy_session_loads(data, keys, "SessionStore").ok()?,
            None,
        ),
        Err(signing::SigningError::Expired { .. }) => return None,
    };
    let map = obj.as_object()?;
    if let Some(signed_at) = signed_at
        && expired(map.get("_session_expiry"), signed_at, cookie_age_secs, now)
    {
        return None;
    }
    let user_id = match map.get("_auth_user_id") {
        Some(serde_json::Value::String(s)) => Some(s.parse::<i64>().ok().filter(|id| *id > 0)?),
        Some(serde_json::Value::Number(n)) => Some(n.as_i64().filter(|id| *id > 0)?),
        Some(_) => return None,
        None => None,
    };
    let auth_hash = map
        .get("_auth_user_hash")
        .and_then(|h| h.as_str())
        .map(str::to_owned);
    let groups = group_list(map.get("ws4redis:memberof"));
    Some(SessionData {
        user_id,
        auth_hash,
        groups,
    })
}

/// The usable group names of a JSON list (others skipped), at most [`MAX_GROUPS`].
pub fn group_list(list: Option<&serde_json::Value>) -> Vec<String> {
    list.and_then(|g| g.as_array())
        .map(|list| {
            list.iter()
                .filter_map(|g| g.as_str())
                .filter(|g| valid_name(g, MAX_GROUP_CHARS))
                .take(MAX_GROUPS)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a name can be used in a channel name: non-empty, not too long, no control
/// characters (Django's own validators are stricter).
pub fn valid_name(name: &str, max_chars: usize) -> bool {
    !name.is_empty() && name.chars().count() <= max_chars && !name.chars().any(char::is_control)
}

/// `SessionBase.get_expiry_age` applied to the signing time: an integer `_session_expiry` is
/// the age in seconds (0 or absent: `SESSION_COOKIE_AGE`), a string is an absolute ISO time.
fn expired(expiry: Option<&serde_json::Value>, signed_at: i64, cookie_age: u64, now: i64) -> bool {
    let cookie_age = i64::try_from(cookie_age).unwrap_or(i64::MAX);
    let ends = match expiry {
        Some(serde_json::Value::Number(n)) => match n.as_i64() {
            Some(0) | None => signed_at.saturating_add(cookie_age),
            Some(age) => signed_at.saturating_add(age),
        },
        Some(serde_json::Value::String(s)) => {
            time::parse_iso8601(s).unwrap_or_else(|| signed_at.saturating_add(cookie_age))
        }
        _ => signed_at.saturating_add(cookie_age),
    };
    ends <= now
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_700_000_000;
    const AGE: u64 = 1_209_600;

    fn keys() -> Keys {
        Keys::new("k", &[])
    }

    fn signed(obj: serde_json::Value, at: i64) -> String {
        signing::dumps(&obj, &keys(), SESSION_SALT, true, at)
    }

    #[test]
    fn takes_user_hash_and_groups() {
        let data = signed(
            json!({"_auth_user_id": "7", "_auth_user_hash": "ab", "ws4redis:memberof": ["a", "b", 3, ""]}),
            NOW,
        );
        let s = decode(&data, &keys(), AGE, NOW).unwrap();
        assert_eq!(s.user_id, Some(7));
        assert_eq!(s.auth_hash.as_deref(), Some("ab"));
        assert_eq!(s.groups, ["a", "b"]);
        let anon = decode(&signed(json!({"cart": 1}), NOW), &keys(), AGE, NOW).unwrap();
        assert_eq!(anon, SessionData::default());
    }

    #[test]
    fn refuses_bad_ids_and_non_objects() {
        for obj in [
            json!({"_auth_user_id": "x"}),
            json!({"_auth_user_id": -1}),
            json!([1]),
        ] {
            assert_eq!(decode(&signed(obj, NOW), &keys(), AGE, NOW), None);
        }
        let other = signing::dumps(
            &json!({}),
            &Keys::new("other", &[]),
            SESSION_SALT,
            true,
            NOW,
        );
        assert_eq!(decode(&other, &keys(), AGE, NOW), None);
    }

    #[test]
    fn expiry_follows_session_expiry_or_cookie_age() {
        let old = NOW - 100;
        assert!(decode(&signed(json!({}), old), &keys(), 100, NOW).is_none());
        assert!(decode(&signed(json!({}), old), &keys(), 101, NOW).is_some());
        let short = signed(json!({"_session_expiry": 50}), old);
        assert!(decode(&short, &keys(), AGE, NOW).is_none());
        let browser = signed(json!({"_session_expiry": 0}), old);
        assert!(decode(&browser, &keys(), AGE, NOW).is_some());
        let until = signed(json!({"_session_expiry": "2023-11-14T22:13:21+00:00"}), old);
        assert!(decode(&until, &keys(), AGE, NOW).is_some());
        let past = signed(json!({"_session_expiry": "2023-11-14T22:13:19+00:00"}), old);
        assert!(decode(&past, &keys(), AGE, NOW).is_none());
    }
}
