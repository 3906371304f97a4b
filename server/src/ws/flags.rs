//! What a websocket URL asks for: the ws4redis flags in its query string and the facility in
//! its path.
//!
//! ws4redis iterates over the *keys* of Django's `request.GET`, `strip().lower()`s each one and
//! ignores values and unknown keys, so `?SUBSCRIBE-Broadcast=0&echo` means subscribe-broadcast
//! plus echo. We do the same: split on `&`, take the part before the first `=`, decode `+` and
//! percent escapes (invalid UTF-8 becomes U+FFFD), trim and lowercase.
//!
//! Invariant: parsing is total. Any byte string gives some [`Flags`]; nothing here panics or
//! allocates more than the input's size.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use crate::bus::channels::Audiences;

/// The flags of one websocket URL. All false by default (a socket with no flags is accepted and
/// only receives heartbeats, as in ws4redis).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flags {
    /// `subscribe-broadcast`.
    pub subscribe_broadcast: bool,
    /// `publish-broadcast`.
    pub publish_broadcast: bool,
    /// `subscribe-user`.
    pub subscribe_user: bool,
    /// `publish-user`.
    pub publish_user: bool,
    /// `subscribe-group`.
    pub subscribe_group: bool,
    /// `publish-group`.
    pub publish_group: bool,
    /// `subscribe-session`.
    pub subscribe_session: bool,
    /// `publish-session`.
    pub publish_session: bool,
    /// `echo`: also deliver the socket's own messages back to it.
    pub echo: bool,
}

impl Flags {
    /// Parse a raw query string (the part after `?`, without it).
    pub fn parse(query: &str) -> Self {
        let mut flags = Flags::default();
        for pair in query.split('&') {
            let raw_key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if raw_key.is_empty() {
                continue;
            }
            let key = decode(raw_key);
            let _known = flags.set(&key.trim().to_lowercase());
        }
        flags
    }

    /// Parse an allow-list (`--allowed-channels-*`, the counterpart of
    /// `WS4REDIS_ALLOWED_CHANNELS`): comma-separated channel flag names, e.g.
    /// `subscribe-broadcast,publish-broadcast`; `all` for every one, `none` or empty for none.
    /// `echo` is not a channel and cannot be listed.
    pub fn parse_allowed(list: &str) -> Result<Flags, String> {
        let mut flags = Flags::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "none" => {}
                "all" => flags = Flags::ALL,
                _ if name != "echo" && flags.set(name) => {}
                _ => {
                    return Err(format!(
                        "`{name}` is not a channel flag (subscribe-/publish- followed by \
                         broadcast, user, group or session; or all, none)"
                    ));
                }
            }
        }
        Ok(flags)
    }

    /// Every flag set.
    const ALL: Flags = Flags {
        subscribe_broadcast: true,
        publish_broadcast: true,
        subscribe_user: true,
        publish_user: true,
        subscribe_group: true,
        publish_group: true,
        subscribe_session: true,
        publish_session: true,
        echo: true,
    };

    /// The channel flags of `self` that `allowed` also has; `echo` is kept as asked. Flags
    /// outside the allow-list are dropped silently, as ws4redis drops what
    /// `WS4REDIS_ALLOWED_CHANNELS` does not return.
    pub fn restrict(self, allowed: Flags) -> Flags {
        Flags {
            subscribe_broadcast: self.subscribe_broadcast && allowed.subscribe_broadcast,
            publish_broadcast: self.publish_broadcast && allowed.publish_broadcast,
            subscribe_user: self.subscribe_user && allowed.subscribe_user,
            publish_user: self.publish_user && allowed.publish_user,
            subscribe_group: self.subscribe_group && allowed.subscribe_group,
            publish_group: self.publish_group && allowed.publish_group,
            subscribe_session: self.subscribe_session && allowed.subscribe_session,
            publish_session: self.publish_session && allowed.publish_session,
            echo: self.echo,
        }
    }

    /// Set the flag called `name`; whether it is one.
    fn set(&mut self, name: &str) -> bool {
        let field = match name {
            "subscribe-broadcast" => &mut self.subscribe_broadcast,
            "publish-broadcast" => &mut self.publish_broadcast,
            "subscribe-user" => &mut self.subscribe_user,
            "publish-user" => &mut self.publish_user,
            "subscribe-group" => &mut self.subscribe_group,
            "publish-group" => &mut self.publish_group,
            "subscribe-session" => &mut self.subscribe_session,
            "publish-session" => &mut self.publish_session,
            "echo" => &mut self.echo,
            _ => return false,
        };
        *field = true;
        true
    }

    /// The audiences the socket subscribes to.
    pub fn subscribe(&self) -> Audiences {
        Audiences {
            broadcast: self.subscribe_broadcast,
            user: self.subscribe_user,
            group: self.subscribe_group,
            session: self.subscribe_session,
        }
    }

    /// The audiences the socket publishes to.
    pub fn publish(&self) -> Audiences {
        Audiences {
            broadcast: self.publish_broadcast,
            user: self.publish_user,
            group: self.publish_group,
            session: self.publish_session,
        }
    }
}

/// `application/x-www-form-urlencoded` decoding of one key: `+` is a space, then `%XX`.
fn decode(raw: &str) -> Cow<'_, str> {
    if raw.contains('+') {
        let spaced = raw.replace('+', " ");
        Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned())
    } else {
        percent_decode_str(raw).decode_utf8_lossy()
    }
}

/// The facility of a websocket request: the percent-decoded path after `websocket_url`
/// (`/ws/`). `None` when the path does not start with it or does not decode to UTF-8.
/// Slashes are kept (`/ws/a/b` → `a/b`), as in ws4redis; validity is checked later by
/// [`crate::bus::channels::validate_facility`].
pub fn facility(path: &str, websocket_url: &str) -> Option<String> {
    let rest = path.strip_prefix(websocket_url)?;
    percent_decode_str(rest)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_and_valued_flags_count() {
        let f = Flags::parse("subscribe-broadcast&publish-broadcast=0&echo=");
        assert!(f.subscribe_broadcast && f.publish_broadcast && f.echo);
        assert!(!f.subscribe_user && !f.publish_user);
    }

    #[test]
    fn every_flag_is_recognised() {
        let f = Flags::parse(
            "subscribe-broadcast&publish-broadcast&subscribe-user&publish-user&\
             subscribe-group&publish-group&subscribe-session&publish-session&echo",
        );
        assert_eq!(f, Flags::ALL);
        assert_eq!(
            f.subscribe(),
            Audiences {
                broadcast: true,
                user: true,
                group: true,
                session: true
            }
        );
    }

    #[test]
    fn case_whitespace_and_encoding() {
        let f = Flags::parse("SUBSCRIBE-Broadcast=0&%20Publish-User%20&subscribe%2Dgroup&+echo+");
        assert!(f.subscribe_broadcast && f.publish_user && f.subscribe_group && f.echo);
        // Unicode lowercasing (as Python's str.lower()) turns U+0130 into "i\u{307}", not "i".
        assert!(!Flags::parse("publish-user%C4%B0").publish_user);
    }

    #[test]
    fn value_does_not_matter_and_unknown_keys_are_ignored() {
        let f = Flags::parse("foo=subscribe-user&subscribe-user-x&=echo&bar");
        assert_eq!(f, Flags::default());
    }

    #[test]
    fn garbage_never_panics() {
        for q in [
            "",
            "&&&",
            "=",
            "==&=",
            "%",
            "%zz",
            "%ff%fe",
            "%e2%82",
            "echo%",
            "\u{0}",
            "é=é&€",
        ] {
            let _ = Flags::parse(q);
        }
        // A cheap deterministic fuzz over every 2-byte key.
        for a in 0u8..=255 {
            for b in [b'%', b'+', b'=', b'&', b'e', 0xff] {
                let bytes = [a, b, b'%', a];
                let s = String::from_utf8_lossy(&bytes);
                let _ = Flags::parse(&s);
            }
        }
        assert!(Flags::parse("%65cho").echo);
    }

    #[test]
    fn allow_lists() {
        let a = Flags::parse_allowed("subscribe-broadcast, publish-broadcast").unwrap();
        let asked = Flags::parse("subscribe-broadcast&subscribe-user&publish-broadcast&echo");
        let kept = asked.restrict(a);
        assert!(kept.subscribe_broadcast && kept.publish_broadcast && kept.echo);
        assert!(!kept.subscribe_user);
        assert_eq!(Flags::parse_allowed("none").unwrap(), Flags::default());
        assert_eq!(Flags::parse_allowed("").unwrap(), Flags::default());
        assert_eq!(asked.restrict(Flags::parse_allowed("all").unwrap()), asked);
        assert!(Flags::parse_allowed("echo").is_err());
        assert!(Flags::parse_allowed("subscribe-everything").is_err());
    }

    #[test]
    fn facility_from_path() {
        assert_eq!(facility("/ws/foobar", "/ws/").as_deref(), Some("foobar"));
        assert_eq!(facility("/ws/a/b", "/ws/").as_deref(), Some("a/b"));
        assert_eq!(facility("/ws/caf%C3%A9", "/ws/").as_deref(), Some("café"));
        assert_eq!(facility("/ws/", "/ws/").as_deref(), Some(""));
        assert_eq!(facility("/other/x", "/ws/"), None);
        assert_eq!(facility("/ws/%ff", "/ws/"), None);
    }
}
