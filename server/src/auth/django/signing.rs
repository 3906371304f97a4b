//! Django's `django.core.signing` and `salted_hmac`, byte for byte, for reading what a Django
//! site signed with its `SECRET_KEY`: session data (Django ≥ 3.1), the older session format
//! (Django < 3.1), and connection tokens minted with `signing.dumps`.
//!
//! Signed format (`TimestampSigner.sign_object`): `[.]B64:TS:SIG` where `B64` is unpadded
//! urlsafe base64 of the JSON (zlib-compressed when the leading `.` is present), `TS` the
//! signing time in base 62, and `SIG` = unpadded urlsafe base64 of
//! HMAC-SHA256(key = SHA256(salt + "signer" + SECRET_KEY), msg = `[.]B64:TS`).
//!
//! Invariants: every input is attacker-controlled as far as this module knows; nothing here
//! panics on any input, signatures are compared in constant time before anything is decoded,
//! inputs over [`MAX_SIGNED_BYTES`] and decompressed data over [`MAX_DECODED_BYTES`] are
//! refused (a valid signature only proves the key holder wrote it, not that it is small).

use std::io::Read as _;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// Largest signed value accepted (a session is a few hundred bytes; tokens come in URLs).
pub const MAX_SIGNED_BYTES: usize = 1024 * 1024;
/// Largest JSON accepted after base64 and zlib decoding.
pub const MAX_DECODED_BYTES: usize = 1024 * 1024;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a signed value was refused. Callers treat every case as "no identity".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// Not of the shape `[.]B64:TS:SIG`, too large, bad base64/zlib/JSON.
    #[error("malformed signed value: {0}")]
    Malformed(&'static str),
    /// No key (current or fallback) produces this signature.
    #[error("signature does not match")]
    BadSignature,
    /// The signature is valid but older than the allowed age.
    #[error("signature expired ({age_secs} s old, at most {max_age_secs} s allowed)")]
    Expired {
        /// Seconds since signing.
        age_secs: i64,
        /// The limit that was passed.
        max_age_secs: u64,
    },
}

/// `SECRET_KEY` and `SECRET_KEY_FALLBACKS`: signatures by any of them verify.
#[derive(Clone, Default)]
pub struct Keys(Vec<Vec<u8>>);

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} secret(s))", self.0.len())
    }
}

impl Keys {
    /// The current key first, then the fallbacks (older keys still accepted).
    pub fn new(current: &str, fallbacks: &[String]) -> Keys {
        let mut keys = vec![current.as_bytes().to_vec()];
        keys.extend(fallbacks.iter().map(|k| k.as_bytes().to_vec()));
        Keys(keys)
    }

    /// The current key (`SECRET_KEY`).
    pub fn current(&self) -> &[u8] {
        self.0.first().map_or(&[], Vec::as_slice)
    }

    /// Every key, current first.
    pub fn all(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(Vec::as_slice)
    }
}

/// Django's `salted_hmac(key_salt, value, secret, algorithm="sha256")`: HMAC-SHA256 keyed with
/// SHA256(key_salt + secret).
pub fn salted_hmac_sha256(key_salt: &str, value: &[u8], secret: &[u8]) -> [u8; 32] {
    let key = Sha256::new()
        .chain_update(key_salt.as_bytes())
        .chain_update(secret)
        .finalize();
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
    mac.update(value);
    mac.finalize().into_bytes().into()
}

/// Django's `salted_hmac` with its historical default, SHA1 (sessions before Django 3.1).
pub fn salted_hmac_sha1(key_salt: &str, value: &[u8], secret: &[u8]) -> [u8; 20] {
    let key = sha1::Sha1::new()
        .chain_update(key_salt.as_bytes())
        .chain_update(secret)
        .finalize();
    let mut mac = <Hmac<Sha1> as Mac>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
    mac.update(value);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex, as Python's `hexdigest()`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Constant-time equality of two ASCII strings (length is not secret).
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn signature(salt: &str, value: &str, key: &[u8]) -> String {
    let signer_salt = format!("{salt}signer");
    URL_SAFE_NO_PAD.encode(salted_hmac_sha256(&signer_salt, value.as_bytes(), key))
}

fn b62_encode(mut n: i64) -> String {
    if n == 0 {
        return "0".into();
    }
    let negative = n < 0;
    let mut out = Vec::new();
    while n != 0 {
        let digit = (n % 62).unsigned_abs() as usize;
        out.push(BASE62[digit]);
        n /= 62;
    }
    if negative {
        out.push(b'-');
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn b62_decode(s: &str) -> Option<i64> {
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s),
    };
    if digits.is_empty() {
        return None;
    }
    digits
        .bytes()
        .try_fold(0i64, |acc, b| {
            let d = BASE62.iter().position(|&c| c == b)?;
            acc.checked_mul(62)?.checked_add(d as i64)
        })
        .map(|n| sign * n)
}

/// Django's `signing.loads(value, salt=salt, max_age=max_age)` with the JSON serializer, at
/// unix time `now`. Returns the object and its signing time (unix seconds).
pub fn loads(
    value: &str,
    keys: &Keys,
    salt: &str,
    max_age_secs: Option<u64>,
    now: i64,
) -> Result<(serde_json::Value, i64), SigningError> {
    if value.len() > MAX_SIGNED_BYTES {
        return Err(SigningError::Malformed("too large"));
    }
    let (signed, sig) = value
        .rsplit_once(':')
        .ok_or(SigningError::Malformed("no signature"))?;
    // Every key is tried, as Django does, so the time taken does not say which one matched.
    let matched = keys.all().fold(false, |ok, key| {
        ok | same(sig, &signature(salt, signed, key))
    });
    if !matched {
        return Err(SigningError::BadSignature);
    }
    let (payload, ts) = signed
        .rsplit_once(':')
        .ok_or(SigningError::Malformed("no timestamp"))?;
    let timestamp = b62_decode(ts).ok_or(SigningError::Malformed("bad timestamp"))?;
    if let Some(max_age) = max_age_secs {
        let age = now.saturating_sub(timestamp);
        if age > i64::try_from(max_age).unwrap_or(i64::MAX) {
            return Err(SigningError::Expired {
                age_secs: age,
                max_age_secs: max_age,
            });
        }
    }
    let (compressed, b64) = match payload.strip_prefix('.') {
        Some(rest) => (true, rest),
        None => (false, payload),
    };
    let raw = URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|_| SigningError::Malformed("bad base64"))?;
    let json = if compressed { inflate(&raw)? } else { raw };
    let obj = serde_json::from_slice(&json).map_err(|_| SigningError::Malformed("bad JSON"))?;
    Ok((obj, timestamp))
}

fn inflate(raw: &[u8]) -> Result<Vec<u8>, SigningError> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(raw)
        .take(MAX_DECODED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| SigningError::Malformed("bad zlib data"))?;
    if out.len() > MAX_DECODED_BYTES {
        return Err(SigningError::Malformed("decompresses to too much"));
    }
    Ok(out)
}

/// Django's `signing.dumps(obj, salt=salt, compress=compress)` with the current key, at unix
/// time `now`: what a Django site would produce (used to mint tokens and in tests).
pub fn dumps(obj: &serde_json::Value, keys: &Keys, salt: &str, compress: bool, now: i64) -> String {
    let json = obj.to_string().into_bytes();
    let mut payload = URL_SAFE_NO_PAD.encode(&json);
    if compress {
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        let packed = std::io::Write::write_all(&mut z, &json)
            .and_then(|()| z.finish())
            .ok();
        if let Some(packed) = packed.filter(|p| p.len() < json.len().saturating_sub(1)) {
            payload = format!(".{}", URL_SAFE_NO_PAD.encode(packed));
        }
    }
    let signed = format!("{payload}:{}", b62_encode(now));
    let sig = signature(salt, &signed, keys.current());
    format!("{signed}:{sig}")
}

/// The session format of Django before 3.1: standard base64 of `HEXHASH:JSON`, where HEXHASH
/// is `salted_hmac("django.contrib.sessions" + class name, JSON)` with SHA1.
pub fn legacy_session_loads(
    value: &str,
    keys: &Keys,
    class_name: &str,
) -> Result<serde_json::Value, SigningError> {
    if value.len() > MAX_SIGNED_BYTES {
        return Err(SigningError::Malformed("too large"));
    }
    let decoded = STANDARD
        .decode(value.trim())
        .map_err(|_| SigningError::Malformed("bad base64"))?;
    let colon = decoded
        .iter()
        .position(|&b| b == b':')
        .ok_or(SigningError::Malformed("no hash"))?;
    let (hash, json) = (&decoded[..colon], &decoded[colon + 1..]);
    let hash = std::str::from_utf8(hash).map_err(|_| SigningError::Malformed("bad hash"))?;
    let salt = format!("django.contrib.sessions{class_name}");
    let matched = keys.all().fold(false, |ok, key| {
        ok | same(hash, &hex(&salted_hmac_sha1(&salt, json, key)))
    });
    if !matched {
        return Err(SigningError::BadSignature);
    }
    serde_json::from_slice(json).map_err(|_| SigningError::Malformed("bad JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    // Produced by Django 4.2 (the venv of scripts/django-venv.sh) with
    // settings.configure(SECRET_KEY="vector-secret-key") and time.time = lambda: 1700000000.5:
    // signing.dumps(session, salt=SALT, compress=True) for COMPRESSED (session = the dict the
    // asserts read) and PLAIN ({"a": 1}), signing.dumps({"user_id": 2, "groups":
    // ["chatusers"]}, salt="wsredis.token") for TOKEN, key="another-secret" for OTHER_KEY, and
    // for LEGACY Django 3.0's base64(salted_hmac("django.contrib.sessionsSessionStore",
    // json).hexdigest() + ":" + json).
    const KEY: &str = "vector-secret-key";
    const SALT: &str = "django.contrib.sessions.SessionStore";
    const NOW: i64 = 1_700_000_000;
    const COMPRESSED: &str = ".eJyrVopPLC3JiC8tTi2Kz0xRslIyUtJBFktKTM5OzQNJpGQl5qXn6yXn55UUZSbpgZToQWWL9XzzU1JznKBqUQzISCzOAOpOoxAADS0vNilKTckstspNzU1KLcpPU7KKVkrOSCwB2VOsFFsLADyPTAI:1r31eq:2Q9jkAoQpjy8nP0UcKvilVwgqUfFrmI1su_OpyDLsRo";
    const PLAIN: &str = "eyJhIjoxfQ:1r31eq:X19-0GnnaeDGpUHNcotkTABDki1dZT_QQnOTJD20mz0";
    const TOKEN: &str = "eyJ1c2VyX2lkIjoyLCJncm91cHMiOlsiY2hhdHVzZXJzIl19:1r31eq:6IE-LdWFnS8jQHnRKC2zPNVEoOdQLvFcFLfVobOPHaI";
    const OTHER_KEY: &str = ".eJyrVopPLC3JiC8tTi2Kz0xRslIyUtJBFktKTM5OzQNJpGQl5qXn6yXn55UUZSbpgZToQWWL9XzzU1JznKBqUQzISCzOAOpOoxAADS0vNilKTckstspNzU1KLcpPU7KKVkrOSCwB2VOsFFsLADyPTAI:1r31eq:Sed_YCxyfMnOKsnxvKCAdc-jXXuzS_S8_i53iMSK9fQ";
    const LEGACY: &str = "NTVmMzg3YmY5Y2M4NjIxNzFiNjNmYzcyYmUxMTlkMzE2NmYxMDUxMzp7Il9hdXRoX3VzZXJfaWQiOiIyIiwiX2F1dGhfdXNlcl9iYWNrZW5kIjoiZGphbmdvLmNvbnRyaWIuYXV0aC5iYWNrZW5kcy5Nb2RlbEJhY2tlbmQiLCJfYXV0aF91c2VyX2hhc2giOiJmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmZmIiwid3M0cmVkaXM6bWVtYmVyb2YiOlsiY2hhdHVzZXJzIl19";

    fn keys() -> Keys {
        Keys::new(KEY, &[])
    }

    #[test]
    fn reads_what_django_signed() {
        let (obj, ts) = loads(COMPRESSED, &keys(), SALT, None, NOW).unwrap();
        assert_eq!(ts, NOW);
        assert_eq!(obj["_auth_user_id"], "2");
        assert_eq!(obj["ws4redis:memberof"][0], "chatusers");
        let (obj, _) = loads(PLAIN, &keys(), SALT, None, NOW).unwrap();
        assert_eq!(obj, serde_json::json!({"a": 1}));
        let (obj, _) = loads(TOKEN, &keys(), "wsredis.token", Some(60), NOW + 60).unwrap();
        assert_eq!(obj["user_id"], 2);
    }

    #[test]
    fn writes_what_django_writes() {
        let obj = serde_json::json!({"a": 1});
        assert_eq!(dumps(&obj, &keys(), SALT, true, NOW), PLAIN);
        let (back, _) = loads(COMPRESSED, &keys(), SALT, None, NOW).unwrap();
        let again = dumps(&back, &keys(), SALT, true, NOW);
        assert_eq!(loads(&again, &keys(), SALT, None, NOW).unwrap().0, back);
    }

    #[test]
    fn refuses_other_keys_salts_tampering_and_age() {
        assert_eq!(
            loads(OTHER_KEY, &keys(), SALT, None, NOW),
            Err(SigningError::BadSignature)
        );
        // A fallback key (SECRET_KEY_FALLBACKS) still verifies.
        let rotated = Keys::new("new-key", &["another-secret".into()]);
        assert!(loads(OTHER_KEY, &rotated, SALT, None, NOW).is_ok());
        assert_eq!(
            loads(TOKEN, &keys(), SALT, None, NOW),
            Err(SigningError::BadSignature)
        );
        let tampered = PLAIN.replacen("eyJhIjoxfQ", "eyJhIjoyfQ", 1);
        assert_eq!(
            loads(&tampered, &keys(), SALT, None, NOW),
            Err(SigningError::BadSignature)
        );
        assert!(matches!(
            loads(TOKEN, &keys(), "wsredis.token", Some(60), NOW + 61),
            Err(SigningError::Expired { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        for junk in [
            "",
            ":",
            "::",
            "a:b:c",
            ".:0:",
            "\u{0}:\u{1}",
            "é:é:é",
            ".!!!:1r31eq:x",
            "-:-:-",
            "zzzzzzzzzzzzzzzzzzzz:zzzz",
        ] {
            assert!(loads(junk, &keys(), SALT, Some(1), NOW).is_err());
            assert!(legacy_session_loads(junk, &keys(), "SessionStore").is_err());
        }
        assert_eq!(b62_decode("zzzzzzzzzzzzzzzzzzzz"), None);
        assert_eq!(b62_decode("-"), None);
        // A validly signed payload that is not zlib, or not JSON, is refused cleanly.
        let signed = format!("{}:{}", ".bm90emxpYg", b62_encode(NOW));
        let forged = format!("{signed}:{}", signature(SALT, &signed, KEY.as_bytes()));
        assert_eq!(
            loads(&forged, &keys(), SALT, None, NOW),
            Err(SigningError::Malformed("bad zlib data"))
        );
    }

    #[test]
    fn base62_round_trips() {
        for n in [0, 1, 61, 62, NOW, -5, i64::MAX] {
            assert_eq!(b62_decode(&b62_encode(n)), Some(n));
        }
        assert_eq!(b62_encode(NOW), "1r31eq");
    }

    #[test]
    fn legacy_format() {
        let obj = legacy_session_loads(LEGACY, &keys(), "SessionStore").unwrap();
        assert_eq!(obj["_auth_user_id"], "2");
        assert_eq!(
            legacy_session_loads(LEGACY, &Keys::new("x", &[]), "SessionStore"),
            Err(SigningError::BadSignature)
        );
    }

    #[test]
    fn session_auth_hash_matches_django() {
        let h = salted_hmac_sha256(
            "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash",
            b"md5$salt$abc",
            KEY.as_bytes(),
        );
        assert_eq!(
            hex(&h),
            "76159ac3546815601f6a0ec21f2814a02d1d6f95f36b2efd43cae3f97cf9813b"
        );
    }
}
