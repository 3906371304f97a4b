//! Login brute-force throttling: failed logins counted per username and per client address in
//! Redis, so every worker and every host shares the counts.
//!
//! - Keys: `wsredis:login-failures:user:<sha256 hex of the username>` and
//!   `wsredis:login-failures:addr:<ip>`; each is an `INCR` counter whose `EXPIRE … NX` is set by
//!   the first failure, so a window is fixed from the first failure (`--login-window` seconds)
//!   and the key vanishes on its own. The username is hashed so odd or huge usernames never
//!   become odd or huge keys.
//! - [`LoginThrottle::check`] runs *before* the password hash: once a username has
//!   `--login-max-failures` failures, or an address `--login-max-failures-address`, every
//!   attempt (even with the right password) is refused until the window ends, and costs one
//!   Redis round trip instead of a PBKDF2 hash.
//! - A successful login clears the username's counter, never the address's (an attacker with
//!   one valid account must not reset the count of the address they guess from).
//! - Redis down: **closed**. The check fails with [`SessionError::Unavailable`] and the page
//!   answers 503; a login could not succeed anyway, since the session is stored in Redis too.
//!   A failure that cannot be counted is logged and the answer stays "wrong password".

use std::net::IpAddr;

use fred::prelude::{Client, KeysInterface};
use fred::types::ExpireOptions;
use sha2::{Digest as _, Sha256};

use super::session::{SessionError, timed};

/// Prefix of every throttle key.
pub const KEY_PREFIX: &str = "wsredis:login-failures:";

/// The limits: failures allowed per username and per address within `window_secs`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Failures per username before attempts are refused (0 = no limit).
    pub per_user: u64,
    /// Failures per client address before attempts are refused (0 = no limit).
    pub per_address: u64,
    /// Seconds from a key's first failure until its count is forgotten.
    pub window_secs: u64,
}

/// Failed-login counters in Redis through the worker's command client.
#[derive(Clone)]
pub struct LoginThrottle {
    client: Client,
    limits: Limits,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The Redis key counting failures of `username`.
pub fn user_key(username: &str) -> String {
    let digest = Sha256::digest(username.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{KEY_PREFIX}user:{hex}")
}

/// The Redis key counting failures from `ip`.
pub fn address_key(ip: IpAddr) -> String {
    format!("{KEY_PREFIX}addr:{ip}")
}

impl LoginThrottle {
    /// A throttle with these limits on a connected command client.
    pub fn new(client: Client, limits: Limits) -> Self {
        LoginThrottle { client, limits }
    }

    fn keys(&self, username: &str, ip: Option<IpAddr>) -> Vec<(String, u64)> {
        let mut keys = Vec::with_capacity(2);
        if self.limits.per_user > 0 {
            keys.push((user_key(username), self.limits.per_user));
        }
        if let (Some(ip), true) = (ip, self.limits.per_address > 0) {
            keys.push((address_key(ip), self.limits.per_address));
        }
        keys
    }

    /// `Some(seconds)` to wait when `username` or `ip` has used up its failures, else `None`.
    pub async fn check(
        &self,
        username: &str,
        ip: Option<IpAddr>,
    ) -> Result<Option<u64>, SessionError> {
        let keys = self.keys(username, ip);
        if keys.is_empty() {
            return Ok(None);
        }
        let pipe = self.client.pipeline();
        for (key, _) in &keys {
            let () = pipe.get(key.as_str()).await?;
            let () = pipe.ttl(key.as_str()).await?;
        }
        let values: Vec<Option<i64>> = timed(pipe.all()).await?;
        let mut wait = None;
        for ((_, limit), pair) in keys.iter().zip(values.chunks(2)) {
            let count = pair.first().copied().flatten().unwrap_or(0);
            if count >= 0 && count.unsigned_abs() >= *limit {
                // A key without a TTL (should not happen) counts as a full window.
                let ttl = pair.get(1).copied().flatten().unwrap_or(-1);
                let secs = u64::try_from(ttl)
                    .ok()
                    .filter(|s| *s > 0)
                    .unwrap_or(self.limits.window_secs)
                    .max(1);
                wait = Some(wait.map_or(secs, |w: u64| w.max(secs)));
            }
        }
        Ok(wait)
    }

    /// Count one failed login of `username` from `ip`.
    pub async fn failed(&self, username: &str, ip: Option<IpAddr>) -> Result<(), SessionError> {
        let keys = self.keys(username, ip);
        if keys.is_empty() {
            return Ok(());
        }
        let window = i64::try_from(self.limits.window_secs)
            .unwrap_or(i64::MAX)
            .max(1);
        let pipe = self.client.pipeline();
        for (key, _) in &keys {
            let () = pipe.incr(key.as_str()).await?;
            let () = pipe
                .expire(key.as_str(), window, Some(ExpireOptions::NX))
                .await?;
        }
        let _: Vec<i64> = timed(pipe.all()).await?;
        Ok(())
    }

    /// A successful login of `username`: forget its failures (the address's stay).
    pub async fn succeeded(&self, username: &str) -> Result<(), SessionError> {
        if self.limits.per_user == 0 {
            return Ok(());
        }
        let _: i64 = timed(self.client.del(user_key(username))).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_and_plain() {
        let long = "x".repeat(10_000);
        for name in ["john", "a b\r\n*3", long.as_str(), ""] {
            let key = user_key(name);
            assert_eq!(key.len(), KEY_PREFIX.len() + 5 + 64, "{key}");
            assert!(key.bytes().all(|b| b.is_ascii_graphic()));
        }
        assert_ne!(user_key("john"), user_key("John"));
        assert_eq!(
            address_key("::1".parse().unwrap()),
            "wsredis:login-failures:addr:::1"
        );
    }
}
