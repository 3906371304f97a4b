//! Django password hashes: `pbkdf2_sha256$<iterations>$<salt>$<base64 of 32 bytes>`.
//!
//! Hashes written by Django (any iteration count, e.g. the 12000 of old fixtures) verify here,
//! and hashes written here verify in Django, so a user table can move either way. New hashes
//! use [`ITERATIONS`] and a random 22-character alphanumeric salt, as Django 5.1 does.
//! A hash starting with `!` is Django's unusable password and never verifies.
//!
//! Hashing and verifying cost [`ITERATIONS`] HMAC-SHA256 rounds (about 0.1 s optimized, far more
//! in a debug build): async callers must run [`hash`] and [`verify`] in
//! `tokio::task::spawn_blocking`, as `auth::authenticate` does, never on a runtime thread.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::Rng as _;
use rand::distr::Alphanumeric;
use subtle::ConstantTimeEq as _;

/// The one algorithm supported, as Django names it.
pub const ALGORITHM: &str = "pbkdf2_sha256";
/// Iterations of new hashes (Django 5.1's default; OWASP asks for at least 600 000).
pub const ITERATIONS: u32 = 870_000;
/// Characters of a new salt (Django: 22 alphanumerics, about 131 bits).
pub const SALT_CHARS: usize = 22;
/// A stored hash asking for more iterations than this is refused rather than computed, so a
/// bad row or fixture cannot make a login take minutes of CPU.
pub const MAX_ITERATIONS: u32 = 20_000_000;
/// Bytes of the derived key (SHA-256 output, as Django).
const KEY_BYTES: usize = 32;

/// The parts of a well-formed `pbkdf2_sha256` hash.
struct Parsed<'a> {
    iterations: u32,
    salt: &'a str,
    key: [u8; KEY_BYTES],
}

fn parse(encoded: &str) -> Option<Parsed<'_>> {
    let mut parts = encoded.splitn(4, '$');
    let (Some(ALGORITHM), Some(iterations), Some(salt), Some(b64)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    // u32::from_str accepts a leading '+'; Django writes plain digits only.
    if !iterations.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let iterations: u32 = iterations.parse().ok()?;
    if !(1..=MAX_ITERATIONS).contains(&iterations) || salt.is_empty() {
        return None;
    }
    let key = STANDARD.decode(b64).ok()?.try_into().ok()?;
    Some(Parsed {
        iterations,
        salt,
        key,
    })
}

fn derive(password: &str, salt: &str, iterations: u32) -> [u8; KEY_BYTES] {
    let mut key = [0u8; KEY_BYTES];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password.as_bytes(), salt.as_bytes(), iterations, &mut key);
    key
}

/// Whether `password` matches `encoded`. Constant-time in the comparison of the derived key;
/// false for anything that is not a well-formed `pbkdf2_sha256` hash (including `!…`).
/// CPU-heavy: see the module header.
pub fn verify(password: &str, encoded: &str) -> bool {
    let Some(p) = parse(encoded) else {
        return false;
    };
    derive(password, p.salt, p.iterations).ct_eq(&p.key).into()
}

/// A new hash of `password` with a random salt and [`ITERATIONS`]. CPU-heavy: see the header.
pub fn hash(password: &str) -> String {
    let salt: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(SALT_CHARS)
        .map(char::from)
        .collect();
    hash_with(password, &salt, ITERATIONS)
}

/// A hash with a given salt and iteration count (for tests and reproducible fixtures).
/// `salt` must not contain `$`.
pub fn hash_with(password: &str, salt: &str, iterations: u32) -> String {
    let key = derive(password, salt, iterations);
    format!("{ALGORITHM}${iterations}${salt}${}", STANDARD.encode(key))
}

/// A password that never verifies (Django's `set_unusable_password`): `!` and 40 random
/// alphanumerics, so two such hashes differ.
pub fn unusable() -> String {
    let tail: String = rand::rng()
        .sample_iter(Alphanumeric)
        .take(40)
        .map(char::from)
        .collect();
    format!("!{tail}")
}

/// Whether a hash that just verified should be replaced by a new [`hash`] of the same
/// password: true when it has fewer iterations than [`ITERATIONS`].
pub fn needs_upgrade(encoded: &str) -> bool {
    parse(encoded).is_some_and(|p| p.iterations < ITERATIONS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed with Python's `hashlib.pbkdf2_hmac`, exactly what Django's hasher does.
    const KNOWN: &str =
        "pbkdf2_sha256$1000000$Zq1n2XrQ8yVbC4sGm5Tt0a$wMRtC/xheU6bQ43YB7rzuUegTSSZe6LKuKA45e2zL98=";
    /// `secret` from django-websocket-redis's demo fixture (user john).
    const OLD_DJANGO: &str =
        "pbkdf2_sha256$12000$An09CtL2zmjl$QCiPQnPLCo5jNrDZHbNuA9JRtL32dXjlLvO3+f/NVCw=";

    #[test]
    fn verifies_a_known_django_hash() {
        assert!(verify("s3cret-pässword", KNOWN));
        assert!(!verify("s3cret-password", KNOWN));
        assert!(!needs_upgrade(KNOWN), "more iterations than ours is fine");
    }

    #[test]
    fn verifies_old_12000_iteration_hashes_and_asks_to_upgrade_them() {
        assert!(verify("secret", OLD_DJANGO));
        assert!(!verify("Secret", OLD_DJANGO));
        assert!(!verify("", OLD_DJANGO));
        assert!(needs_upgrade(OLD_DJANGO));
    }

    #[test]
    fn new_hashes_look_like_djangos_and_verify() {
        let h = hash("correct horse");
        let parts: Vec<&str> = h.split('$').collect();
        assert_eq!(parts[0], "pbkdf2_sha256");
        assert_eq!(parts[1], "870000");
        assert_eq!(parts[2].len(), SALT_CHARS);
        assert!(parts[2].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(STANDARD.decode(parts[3]).unwrap().len(), 32);
        assert!(verify("correct horse", &h));
        assert!(!verify("correct horse ", &h));
        assert!(!needs_upgrade(&h));
        assert_ne!(hash("correct horse"), h, "salts are random");
    }

    #[test]
    fn hash_with_reproduces_djangos_output() {
        assert_eq!(hash_with("secret", "An09CtL2zmjl", 12000), OLD_DJANGO);
    }

    #[test]
    fn malformed_and_unusable_hashes_never_verify() {
        let h = hash_with("pw", "salt", 10);
        assert!(verify("pw", &h));
        let bad = [
            String::new(),
            "!".to_owned(),
            unusable(),
            format!("!{h}"),
            h.replacen("pbkdf2_sha256", "pbkdf2_sha1", 1),
            h.replacen("$10$", "$0$", 1),
            h.replacen("$10$", "$+10$", 1),
            h.replacen("$10$", "$99999999999$", 1),
            h.replacen("$10$", "$30000000$", 1),
            h.replacen("$salt$", "$$", 1),
            format!("{h}$"),
            h[..h.len() - 4].to_owned(),
            "pbkdf2_sha256$10$salt".to_owned(),
            "argon2$argon2id$v=19$m=102400,t=2,p=8$c2FsdA$aGFzaA".to_owned(),
        ];
        for b in &bad {
            assert!(!verify("pw", b), "{b}");
            assert!(!needs_upgrade(b), "{b}");
        }
        assert_ne!(unusable(), unusable());
    }
}
