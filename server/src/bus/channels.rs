//! Redis channel names, exactly as django-websocket-redis (ws4redis) spells them, and the
//! decision which channels one socket may subscribe and publish to.
//!
//! With `P = prefix + ":"` when the prefix is non-empty (else `""`), the names are
//! `P broadcast:F`, `P user:U:F`, `P group:G:F` and `P session:S:F`, for facility `F`. The same
//! name is both the pub/sub channel and the key of the persisted last message.
//!
//! Invariants:
//! - An anonymous socket (no username) never gets a user, group or session channel. Asking for
//!   one is [`ChannelError::Forbidden`] (HTTP 403 before the upgrade). ws4redis silently gives
//!   such sockets a garbage channel (`user:<SELF_TYPE object at 0x…>:F`) or crashes after the
//!   upgrade; our issue asks for "a flag the socket's session may not use → 403".
//! - A socket with a username but no session key asking for a session flag is also Forbidden.
//! - A facility is validated before any name is built ([`ChannelError::InvalidFacility`], HTTP
//!   400): non-empty, at most [`MAX_FACILITY_BYTES`], no control characters, no whitespace and
//!   none of the Redis glob characters `*?[]`. ws4redis accepts anything, including the empty
//!   facility; we do not, because such names cannot be told apart in `PSUBSCRIBE`/`KEYS`.
//! - A facility of a user, group or session channel has no `:` ([`validate_personal_facility`]).
//!   Group names (and a Django site's usernames) may contain `:`, so with a `:` in the facility
//!   a member of group `a` on facility `b:c` would get `group:a:b:c`, the channel of group `a:b`
//!   on facility `c`. With the facility free of `:` it is the last field and every personal
//!   channel name has exactly one owner. Broadcast facilities may keep their `:`.
//! - The returned lists have no duplicates and keep a stable order: broadcast, user, groups (in
//!   the identity's order), session.

/// Longest facility accepted, in bytes.
pub const MAX_FACILITY_BYTES: usize = 200;

/// Who the socket belongs to, as resolved from its session before the upgrade.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user's `get_username()`; `None` for an anonymous socket.
    pub username: Option<String>,
    /// Names of the user's groups (ws4redis reads them from session key `ws4redis:memberof`).
    pub groups: Vec<String>,
    /// The session cookie's key, used verbatim in `session:` channel names.
    pub session_key: Option<String>,
    /// Whether the user is staff (not used for naming; kept for access policies).
    pub is_staff: bool,
}

impl Identity {
    /// An anonymous socket: no user, no groups, no session.
    pub fn anonymous() -> Self {
        Self::default()
    }
}

/// Which audiences one direction (subscribe or publish) asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Audiences {
    /// `broadcast:F`.
    pub broadcast: bool,
    /// `user:<own username>:F`.
    pub user: bool,
    /// `group:<each own group>:F`.
    pub group: bool,
    /// `session:<own session key>:F`.
    pub session: bool,
}

impl Audiences {
    fn any_personal(self) -> bool {
        self.user || self.group || self.session
    }
}

/// The Redis channels of one socket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Channels {
    /// Channels whose messages the socket receives (and whose stored message it replays).
    pub subscribe: Vec<String>,
    /// Channels each message from the socket is published (and stored) to.
    pub publish: Vec<String>,
}

/// Why a socket may not have the channels it asked for. Mapped to HTTP by the router.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// A user, group or session flag on a socket whose session cannot use it (HTTP 403).
    #[error("{0} channels need a logged-in session")]
    Forbidden(&'static str),
    /// The facility cannot be used in a channel name (HTTP 400).
    #[error("invalid facility: {0}")]
    InvalidFacility(&'static str),
}

/// Check a facility (the URL path after the websocket prefix, already percent-decoded).
pub fn validate_facility(facility: &str) -> Result<(), ChannelError> {
    if facility.is_empty() {
        return Err(ChannelError::InvalidFacility("empty"));
    }
    if facility.len() > MAX_FACILITY_BYTES {
        return Err(ChannelError::InvalidFacility("longer than 200 bytes"));
    }
    if facility.chars().any(char::is_control) {
        return Err(ChannelError::InvalidFacility("control character"));
    }
    if facility.chars().any(char::is_whitespace) {
        return Err(ChannelError::InvalidFacility("whitespace"));
    }
    if facility.contains(['*', '?', '[', ']']) {
        return Err(ChannelError::InvalidFacility("Redis glob character (*?[])"));
    }
    Ok(())
}

/// Check the facility of a user, group or session channel: [`validate_facility`] and no `:`
/// (see the module header: otherwise one group's channel can be another group's).
pub fn validate_personal_facility(facility: &str) -> Result<(), ChannelError> {
    validate_facility(facility)?;
    if facility.contains(':') {
        return Err(ChannelError::InvalidFacility(
            "`:` is not allowed with user, group or session channels",
        ));
    }
    Ok(())
}

/// Builds channel names for one prefix (cheap to keep per worker).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namer {
    /// `prefix + ":"`, or empty.
    head: String,
}

impl Namer {
    /// `prefix` is `WS4REDIS_PREFIX`; empty means no prefix at all (not even the colon).
    pub fn new(prefix: &str) -> Self {
        let head = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}:")
        };
        Self { head }
    }

    /// `prefix + ":"`, or empty: what every channel name starts with.
    pub fn head(&self) -> &str {
        &self.head
    }

    /// `P broadcast:F`.
    pub fn broadcast(&self, facility: &str) -> String {
        format!("{}broadcast:{facility}", self.head)
    }

    /// `P user:U:F`.
    pub fn user(&self, username: &str, facility: &str) -> String {
        format!("{}user:{username}:{facility}", self.head)
    }

    /// `P group:G:F`.
    pub fn group(&self, group: &str, facility: &str) -> String {
        format!("{}group:{group}:{facility}", self.head)
    }

    /// `P session:S:F`.
    pub fn session(&self, session_key: &str, facility: &str) -> String {
        format!("{}session:{session_key}:{facility}", self.head)
    }

    /// The channels of a socket on `facility` with `identity` asking for `subscribe` and
    /// `publish`. See the module header for the rules.
    pub fn plan(
        &self,
        facility: &str,
        identity: &Identity,
        subscribe: Audiences,
        publish: Audiences,
    ) -> Result<Channels, ChannelError> {
        validate_facility(facility)?;
        Ok(Channels {
            subscribe: self.names(facility, identity, subscribe)?,
            publish: self.names(facility, identity, publish)?,
        })
    }

    fn names(
        &self,
        facility: &str,
        identity: &Identity,
        want: Audiences,
    ) -> Result<Vec<String>, ChannelError> {
        let mut out = Vec::new();
        if want.broadcast {
            out.push(self.broadcast(facility));
        }
        if !want.any_personal() {
            return Ok(out);
        }
        let Some(username) = identity.username.as_deref() else {
            let what = if want.user {
                "user"
            } else if want.group {
                "group"
            } else {
                "session"
            };
            return Err(ChannelError::Forbidden(what));
        };
        validate_personal_facility(facility)?;
        if want.user {
            out.push(self.user(username, facility));
        }
        if want.group {
            for group in &identity.groups {
                let name = self.group(group, facility);
                if !out.contains(&name) {
                    out.push(name);
                }
            }
        }
        if want.session {
            let key = identity
                .session_key
                .as_deref()
                .ok_or(ChannelError::Forbidden("session"))?;
            out.push(self.session(key, facility));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Audiences = Audiences {
        broadcast: true,
        user: true,
        group: true,
        session: true,
    };
    const BROADCAST: Audiences = Audiences {
        broadcast: true,
        user: false,
        group: false,
        session: false,
    };
    const NONE: Audiences = Audiences {
        broadcast: false,
        user: false,
        group: false,
        session: false,
    };

    fn john() -> Identity {
        Identity {
            username: Some("john".into()),
            groups: vec!["chatters".into(), "staff".into(), "chatters".into()],
            session_key: Some("abc123".into()),
            is_staff: false,
        }
    }

    #[test]
    fn names_match_ws4redis_with_and_without_prefix() {
        for (prefix, head) in [("", ""), ("demo", "demo:")] {
            let n = Namer::new(prefix);
            assert_eq!(n.broadcast("foobar"), format!("{head}broadcast:foobar"));
            assert_eq!(n.user("john", "a/b"), format!("{head}user:john:a/b"));
            assert_eq!(n.group("g", "f"), format!("{head}group:g:f"));
            assert_eq!(n.session("s", "f"), format!("{head}session:s:f"));
        }
    }

    #[test]
    fn logged_in_socket_gets_every_kind_in_order_without_duplicates() {
        let c = Namer::new("demo").plan("chat", &john(), ALL, ALL).unwrap();
        let want = vec![
            "demo:broadcast:chat",
            "demo:user:john:chat",
            "demo:group:chatters:chat",
            "demo:group:staff:chat",
            "demo:session:abc123:chat",
        ];
        assert_eq!(c.subscribe, want);
        assert_eq!(c.publish, want);
    }

    #[test]
    fn directions_are_independent() {
        let c = Namer::new("").plan("f", &john(), BROADCAST, NONE).unwrap();
        assert_eq!(c.subscribe, vec!["broadcast:f"]);
        assert!(c.publish.is_empty());
        let only_user = Audiences { user: true, ..NONE };
        let c = Namer::new("").plan("f", &john(), NONE, only_user).unwrap();
        assert!(c.subscribe.is_empty());
        assert_eq!(c.publish, vec!["user:john:f"]);
    }

    #[test]
    fn user_without_groups_gets_no_group_channel() {
        let id = Identity {
            groups: vec![],
            ..john()
        };
        let group = Audiences {
            group: true,
            ..NONE
        };
        let c = Namer::new("").plan("f", &id, group, NONE).unwrap();
        assert!(c.subscribe.is_empty());
    }

    #[test]
    fn anonymous_gets_broadcast_only() {
        let anon = Identity::anonymous();
        let c = Namer::new("")
            .plan("f", &anon, BROADCAST, BROADCAST)
            .unwrap();
        assert_eq!(c.subscribe, vec!["broadcast:f"]);
        assert_eq!(c.publish, vec!["broadcast:f"]);
    }

    #[test]
    fn anonymous_personal_flags_are_forbidden() {
        let anon = Identity {
            session_key: Some("has-a-cookie".into()),
            ..Identity::anonymous()
        };
        for (want, what) in [
            (Audiences { user: true, ..NONE }, "user"),
            (
                Audiences {
                    group: true,
                    ..NONE
                },
                "group",
            ),
            (
                Audiences {
                    session: true,
                    ..NONE
                },
                "session",
            ),
        ] {
            let n = Namer::new("");
            assert_eq!(
                n.plan("f", &anon, want, NONE),
                Err(ChannelError::Forbidden(what))
            );
            assert_eq!(
                n.plan("f", &anon, NONE, want),
                Err(ChannelError::Forbidden(what))
            );
        }
    }

    #[test]
    fn session_flag_without_session_key_is_forbidden() {
        let id = Identity {
            session_key: None,
            ..john()
        };
        let s = Audiences {
            session: true,
            ..NONE
        };
        assert_eq!(
            Namer::new("").plan("f", &id, s, NONE),
            Err(ChannelError::Forbidden("session"))
        );
    }

    #[test]
    fn facility_rules() {
        assert!(validate_facility("foobar").is_ok());
        assert!(validate_facility("a/b").is_ok());
        assert!(validate_facility("a:b-c_d.é").is_ok());
        assert!(validate_facility(&"x".repeat(200)).is_ok());
        for bad in [
            "", "a b", "a\tb", "a\u{a0}b", "a\nb", "a\0b", "a\u{7f}", "a*", "a?", "[a]", "a]",
        ] {
            assert!(
                matches!(
                    validate_facility(bad),
                    Err(ChannelError::InvalidFacility(_))
                ),
                "{bad:?} must be rejected"
            );
        }
        assert!(validate_facility(&"x".repeat(201)).is_err());
        // 200 bytes, not 200 characters.
        assert!(validate_facility(&"é".repeat(101)).is_err());
    }

    #[test]
    fn a_colon_in_the_facility_cannot_reach_another_groups_channel() {
        let member_of_a = Identity {
            groups: vec!["a".into()],
            ..john()
        };
        let group = Audiences {
            group: true,
            ..NONE
        };
        let n = Namer::new("");
        // `group:a:b:c` would be the channel of group `a:b` on facility `c`.
        assert!(matches!(
            n.plan("b:c", &member_of_a, group, NONE),
            Err(ChannelError::InvalidFacility(_))
        ));
        assert!(n.plan("b:c", &member_of_a, NONE, group).is_err());
        let user = Audiences { user: true, ..NONE };
        assert!(n.plan("b:c", &member_of_a, user, NONE).is_err());
        // Broadcast channels have no name field and keep their colons.
        let broadcast = Audiences {
            broadcast: true,
            ..NONE
        };
        assert_eq!(
            n.plan("b:c", &member_of_a, broadcast, NONE)
                .unwrap()
                .subscribe,
            ["broadcast:b:c"]
        );
        assert!(n.plan("b-c", &member_of_a, group, NONE).is_ok());
    }

    #[test]
    fn invalid_facility_is_rejected_before_permissions() {
        let anon = Identity::anonymous();
        assert!(matches!(
            Namer::new("").plan("a b", &anon, ALL, NONE),
            Err(ChannelError::InvalidFacility(_))
        ));
    }
}
