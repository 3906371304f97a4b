//! CSRF protection for form posts, in the manner of Django.
//!
//! # Scheme
//! - Every state-changing form carries a hidden field `csrfmiddlewaretoken` ([`FORM_FIELD`]);
//!   scripts may send the same token in an `X-CSRFToken` header ([`HEADER`]) instead.
//! - **Anonymous** forms (the login page): the server sets a `csrftoken` cookie
//!   ([`super::cookie::CSRF_COOKIE`], a fresh [`new_token`] when absent or malformed) and puts
//!   the same value in the form. A POST is accepted only if field and cookie are equal. A
//!   foreign site can make the browser send the cookie but can neither read it nor set it on
//!   our domain, so it cannot fill in the field.
//! - **Logged-in** users: the token is the session record's `csrf_token`, created at login (so
//!   a token seen before login is useless after it) and stored server-side in Redis.
//! - The expected token is chosen by [`expected_token`]; the comparison ([`check`]) is
//!   constant-time and refuses empty or malformed tokens on either side.
//! - Tokens are 32 CSPRNG bytes in unpadded base64url (43 characters). Unlike Django they are
//!   not masked per response: masking defends against BREACH, which needs compressed
//!   responses, and pages are served uncompressed.
//! - Safe methods (GET, HEAD, OPTIONS) are never checked and must not change state. The
//!   websocket upgrade is protected by its Origin check, not by this.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

use super::session::SessionRecord;

/// Name of the hidden form field that carries the token.
pub const FORM_FIELD: &str = "csrfmiddlewaretoken";
/// Header that may carry the token for script requests (Django's name).
pub const HEADER: &str = "x-csrftoken";
/// Random bytes in a token.
pub const TOKEN_BYTES: usize = 32;
/// Characters of a token made by [`new_token`].
pub const TOKEN_CHARS: usize = 43;
/// Longest token accepted (so a huge cookie or field is refused before comparing).
pub const MAX_TOKEN_CHARS: usize = 128;

/// A new random token (43 characters of base64url).
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether `token` has the shape of a token: 43 to 128 characters of `[A-Za-z0-9_-]`.
pub fn valid_token(token: &str) -> bool {
    (TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The token a POST must carry: the session's when logged in, else the `csrftoken` cookie's
/// (`None`: no usable cookie, so the POST fails and the form should be shown again with a
/// new cookie).
pub fn expected_token<'a>(
    session: Option<&'a SessionRecord>,
    cookie_token: Option<&'a str>,
) -> Option<&'a str> {
    match session {
        Some(s) => Some(s.csrf_token.as_str()),
        None => cookie_token.filter(|t| valid_token(t)),
    }
}

/// Whether the token sent with a form (or header) matches the expected one. Constant-time
/// for equal lengths; false when either is missing or malformed.
pub fn check(form_token: Option<&str>, expected: Option<&str>) -> bool {
    match (form_token, expected) {
        (Some(sent), Some(expected)) if valid_token(sent) && valid_token(expected) => {
            sent.as_bytes().ct_eq(expected.as_bytes()).into()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_differ() {
        let t = new_token();
        assert_eq!(t.len(), TOKEN_CHARS);
        assert!(valid_token(&t));
        assert_ne!(t, new_token());
    }

    #[test]
    fn check_accepts_only_the_same_well_formed_token() {
        let t = new_token();
        assert!(check(Some(&t), Some(&t)));
        assert!(!check(Some(&new_token()), Some(&t)));
        assert!(!check(None, Some(&t)));
        assert!(!check(Some(&t), None));
        assert!(!check(Some(""), Some("")));
        let short = "a".repeat(42);
        assert!(
            !check(Some(&short), Some(&short)),
            "too short to be a token"
        );
        let odd = format!("{}+/", &t[..41]);
        assert!(!check(Some(&odd), Some(&odd)), "not base64url");
        assert!(!check(Some(&t[..42]), Some(&t)));
    }

    #[test]
    fn session_token_wins_over_the_cookie() {
        let cookie = new_token();
        let session = SessionRecord {
            user_id: 1,
            username: "john".into(),
            groups: vec![],
            is_staff: false,
            is_superuser: false,
            csrf_token: new_token(),
            created: 0,
        };
        assert_eq!(
            expected_token(Some(&session), Some(&cookie)),
            Some(session.csrf_token.as_str())
        );
        assert_eq!(expected_token(None, Some(&cookie)), Some(cookie.as_str()));
        assert_eq!(expected_token(None, Some("garbage")), None);
        assert_eq!(expected_token(None, None), None);
        // A logged-in form posted with the anonymous cookie's token is refused.
        assert!(!check(
            Some(&cookie),
            expected_token(Some(&session), Some(&cookie))
        ));
    }
}
