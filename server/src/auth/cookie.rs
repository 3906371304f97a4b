//! The two cookies of the web app: reading them from `Cookie` headers and writing their
//! `Set-Cookie` values.
//!
//! Parsing follows what browsers send (RFC 6265 §4.2.1: `name=value` pairs joined by `;`),
//! and is written to take any bytes: pairs that are not UTF-8, have no `=` or an empty name are
//! skipped, never an error, so a garbage header simply carries no cookie. Values are returned
//! raw (not percent-decoded) with one pair of surrounding double quotes removed; callers then
//! check their shape (`session::valid_key`, `csrf::valid_token`).
//!
//! - `sessionid`: the session key; `HttpOnly` (scripts never need it), `SameSite=Lax`,
//!   `Path=/`, `Max-Age` = the session TTL, `Secure` when served over HTTPS.
//! - `csrftoken`: the anonymous CSRF token; readable by scripts (not `HttpOnly`, as in Django),
//!   `SameSite=Lax`, `Path=/`, one year, `Secure` over HTTPS.

use http::HeaderMap;
use http::header::COOKIE;

/// Name of the session cookie (Django's default, which ws4redis reads too).
pub const SESSION_COOKIE: &str = "sessionid";
/// Name of the anonymous CSRF cookie (Django's default).
pub const CSRF_COOKIE: &str = "csrftoken";
/// Lifetime of the CSRF cookie, as Django's `CSRF_COOKIE_AGE` (one year, in seconds).
pub const CSRF_COOKIE_MAX_AGE: u64 = 31_449_600;

/// The `name=value` pairs of one `Cookie` header value, skipping malformed ones.
pub fn pairs(header: &[u8]) -> impl Iterator<Item = (&str, &str)> {
    header.split(|&b| b == b';').filter_map(|pair| {
        let pair = std::str::from_utf8(pair).ok()?;
        let (name, value) = pair.split_once('=')?;
        let name = name.trim_matches(is_space);
        if name.is_empty() {
            return None;
        }
        let value = value.trim_matches(is_space);
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        Some((name, value))
    })
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The first value of cookie `name` in one `Cookie` header value.
pub fn get<'a>(header: &'a [u8], name: &str) -> Option<&'a str> {
    pairs(header).find(|(n, _)| *n == name).map(|(_, v)| v)
}

/// The first value of cookie `name` across all `Cookie` headers of a request (HTTP/2 clients
/// may send one header per cookie).
pub fn find<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .find_map(|h| get(h.as_bytes(), name))
}

/// `Set-Cookie` value that stores session `key` for `max_age_secs`.
pub fn session_cookie(key: &str, max_age_secs: u64, secure: bool) -> String {
    set_cookie(SESSION_COOKIE, key, max_age_secs, true, secure)
}

/// `Set-Cookie` value that makes the browser drop the session cookie (logout).
pub fn session_cookie_removal(secure: bool) -> String {
    set_cookie(SESSION_COOKIE, "", 0, true, secure) + "; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
}

/// `Set-Cookie` value of the anonymous CSRF token (see `auth::csrf`).
pub fn csrf_cookie(token: &str, secure: bool) -> String {
    set_cookie(CSRF_COOKIE, token, CSRF_COOKIE_MAX_AGE, false, secure)
}

fn set_cookie(name: &str, value: &str, max_age: u64, http_only: bool, secure: bool) -> String {
    // Our values are session keys and base64url tokens; anything else would need quoting.
    debug_assert!(
        value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "cookie value {value:?} needs encoding"
    );
    let mut s = format!("{name}={value}; Path=/; Max-Age={max_age}; SameSite=Lax");
    if http_only {
        s.push_str("; HttpOnly");
    }
    if secure {
        s.push_str("; Secure");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cookies_as_browsers_send_them() {
        let h = b"csrftoken=abc; sessionid=k3y;theme=\"dark\"; empty=";
        assert_eq!(get(h, "sessionid"), Some("k3y"));
        assert_eq!(get(h, "csrftoken"), Some("abc"));
        assert_eq!(get(h, "theme"), Some("dark"));
        assert_eq!(get(h, "empty"), Some(""));
        assert_eq!(get(h, "missing"), None);
        assert_eq!(get(b"sessionid=a; sessionid=b", "sessionid"), Some("a"));
        assert_eq!(get(b"a=b=c", "a"), Some("b=c"));
    }

    #[test]
    fn garbage_is_skipped_not_fatal() {
        let h = b"\xff\xfe=1; noequals; =nameless; ;;; \tsessionid = k ; x=\xc3(";
        assert_eq!(get(h, "sessionid"), Some("k"));
        assert_eq!(pairs(h).count(), 1);
        assert_eq!(pairs(b"").count(), 0);
        assert_eq!(get(b"\"\"=\"", "\"\""), Some("\""));
        assert_eq!(get(b"sessionid=\"", "sessionid"), Some("\""));
    }

    #[test]
    fn finds_a_cookie_across_headers() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, "a=1".parse().unwrap());
        headers.append(COOKIE, "sessionid=s; b=2".parse().unwrap());
        assert_eq!(find(&headers, "sessionid"), Some("s"));
        assert_eq!(find(&headers, "a"), Some("1"));
        assert_eq!(find(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn set_cookie_values_carry_the_right_attributes() {
        assert_eq!(
            session_cookie("abc123", 1_209_600, false),
            "sessionid=abc123; Path=/; Max-Age=1209600; SameSite=Lax; HttpOnly"
        );
        assert!(session_cookie("abc123", 60, true).ends_with("; HttpOnly; Secure"));
        let removal = session_cookie_removal(true);
        assert!(
            removal.starts_with("sessionid=; Path=/; Max-Age=0;"),
            "{removal}"
        );
        assert!(removal.contains("Secure") && removal.contains("Expires=Thu, 01 Jan 1970"));
        let csrf = csrf_cookie("tok-en_1", false);
        assert_eq!(
            csrf,
            "csrftoken=tok-en_1; Path=/; Max-Age=31449600; SameSite=Lax"
        );
        assert!(!csrf.contains("HttpOnly"), "scripts read the CSRF cookie");
    }

    #[test]
    fn random_bytes_yield_only_well_formed_pairs() {
        use rand::{Rng as _, SeedableRng as _};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let alphabet = b"ab=; \t\"\xff\xc3\xa9sessionid";
        for _ in 0..5000 {
            let len = rng.random_range(0..40);
            let header: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            for (name, value) in pairs(&header) {
                assert!(!name.is_empty() && !name.contains(';') && !value.contains(';'));
                assert!(!name.starts_with([' ', '\t']) && !name.ends_with([' ', '\t']));
            }
        }
    }
}
