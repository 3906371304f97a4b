//! Entry points for the fuzz targets in `fuzz/` and for `tests/fuzz_corpus.rs`, which runs
//! every committed corpus file through them in `make test` (no fuzzer needed).
//!
//! Each function takes any bytes, feeds them to the parsers that read outside input exactly
//! as the server does, and asserts the invariants those parsers promise (a socket's channels
//! are its own, a decoded session is well formed, a redirect stays local, …). A failed
//! assertion or a panic inside a parser is a bug: the fuzzer reports it as a crash.
//!
//! Not part of the public API (`#[doc(hidden)]`); it exists so the fuzz crate and the tests
//! share one definition of "what a target does".

use http::{HeaderName, HeaderValue, Method, Request, Version};

use crate::auth::django::{self, session as dsession, signing};
use crate::auth::{cookie, csrf, form, session};
use crate::bus::channels::{self, Identity, Namer};
use crate::http::pages::safe_next;
use crate::ws::{Flags, flags, handshake};

/// One target: it takes any bytes and panics only on a bug.
pub type Target = fn(&[u8]);

/// The targets, by the name of their fuzz binary and corpus directory.
pub const TARGETS: &[(&str, Target)] = &[
    ("query_flags", query_flags),
    ("cookies", cookies),
    ("session_record", session_record),
    ("django_session", django_session),
    ("form_body", form_body),
    ("fixture", fixture),
    ("handshake", handshake),
];

const SECRET: &str = "fuzzing-secret-key";
const FALLBACK: &str = "fuzzing-old-key";
const NOW: i64 = 1_750_000_000;

/// A websocket URL: `path?query` (as the upgrade reads it) for a logged-in user in two
/// groups and for an anonymous socket. Checks that every planned channel is one of the
/// socket's own: broadcast, its user, its groups, its session, on exactly its facility.
pub fn query_flags(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (path, query) = text.split_once('?').unwrap_or((&text, ""));
    let asked = Flags::parse(query);
    let _ = Flags::parse_allowed(query);
    let Some(facility) = flags::facility(path, "/ws/") else {
        return;
    };
    let namer = Namer::new("ws");
    let user = Identity {
        username: Some("john".into()),
        groups: vec!["chatusers".into(), "a:b".into()],
        session_key: Some("k".repeat(session::KEY_CHARS)),
        is_staff: false,
    };
    let own = |id: &Identity| -> Vec<String> {
        let mut names = vec![namer.broadcast(&facility)];
        if let Some(u) = &id.username {
            names.push(namer.user(u, &facility));
        }
        names.extend(id.groups.iter().map(|g| namer.group(g, &facility)));
        if let Some(k) = &id.session_key {
            names.push(namer.session(k, &facility));
        }
        names
    };
    for id in [user, Identity::anonymous()] {
        let Ok(plan) = namer.plan(&facility, &id, asked.subscribe(), asked.publish()) else {
            continue;
        };
        assert!(channels::validate_facility(&facility).is_ok());
        let own = own(&id);
        for name in plan.subscribe.iter().chain(&plan.publish) {
            assert!(own.contains(name), "{name:?} is not one of {own:?}");
            assert!(name.ends_with(&format!(":{facility}")));
            // In a personal channel the facility is the last `:` field, so no channel of one
            // name and facility can equal a channel of another name and facility.
            let personal = !name.starts_with("ws:broadcast:");
            assert!(!personal || !facility.contains(':'), "{name:?}");
        }
        if id.username.is_none() {
            let personal = |a: channels::Audiences| a.user || a.group || a.session;
            assert!(!personal(asked.subscribe()) && !personal(asked.publish()));
        }
    }
}

/// A `Cookie` header: the session key and CSRF token as pages and the upgrade read them,
/// and the value as a Django connection token.
pub fn cookies(data: &[u8]) {
    for (name, value) in cookie::pairs(data) {
        assert!(!name.is_empty() && !name.contains(';') && !value.contains(';'));
    }
    if let Some(key) = cookie::get(data, cookie::SESSION_COOKIE) {
        if session::valid_key(key) {
            assert!(
                key.len() == session::KEY_CHARS && key.bytes().all(|b| b.is_ascii_alphanumeric())
            );
        }
        if django::valid_session_key(key) {
            assert!(key.bytes().all(|b| b.is_ascii_alphanumeric()));
        }
        let keys = signing::Keys::new(SECRET, &[FALLBACK.to_owned()]);
        let _ = signing::loads(key, &keys, "wsredis.token", Some(60), NOW);
    }
    if let Some(token) = cookie::get(data, cookie::CSRF_COOKIE) {
        let valid = csrf::valid_token(token);
        assert_eq!(csrf::check(Some(token), Some(token)), valid);
    }
}

/// A stored web-app session record (`session::parse`): a record it accepts must survive a
/// write and a read unchanged, and hold only names that are safe in channel names.
pub fn session_record(data: &[u8]) {
    let Some(record) = session::parse(data) else {
        return;
    };
    assert!(record.user_id > 0 && record.created >= 0);
    assert!(!record.username.contains(':'));
    let again = serde_json::to_vec(&record).expect("a record serializes");
    assert_eq!(session::parse(&again), Some(record));
}

/// A Django session's stored data, three ways: the bytes as they are (which never carry a
/// valid signature), the bytes as JSON signed with our key (so the fuzzer reaches the
/// decoding of the session's fields), and the same JSON in Django's pre-3.1 format.
pub fn django_session(data: &[u8]) {
    let keys = signing::Keys::new(SECRET, &[FALLBACK.to_owned()]);
    let text = String::from_utf8_lossy(data);
    let _ = dsession::decode(&text, &keys, 1_209_600, NOW);
    let _ = signing::legacy_session_loads(&text, &keys, "SessionStore");
    let Ok(obj) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    for compress in [false, true] {
        let signed = signing::dumps(&obj, &keys, dsession::SESSION_SALT, compress, NOW - 60);
        let (back, ts) = signing::loads(&signed, &keys, dsession::SESSION_SALT, None, NOW)
            .expect("what we signed verifies");
        // Compared with the JSON text parsed again: serde_json's float parsing is not exact
        // (1.1111111111111111e23 comes back one ulp off), which is no concern of the server.
        assert_eq!((back, ts), (reparsed(&obj), NOW - 60));
        if let Some(s) = dsession::decode(&signed, &keys, 1_209_600, NOW) {
            assert!(s.user_id.is_none_or(|id| id > 0));
            assert!(s.groups.len() <= dsession::MAX_GROUPS);
            let ok = |g: &String| dsession::valid_name(g, dsession::MAX_GROUP_CHARS);
            assert!(s.groups.iter().all(ok));
        }
        // Signed with a key we do not hold: never accepted.
        let foreign = signing::Keys::new("someone-else", &[]);
        let forged = signing::dumps(&obj, &foreign, dsession::SESSION_SALT, compress, NOW);
        assert!(dsession::decode(&forged, &keys, 1_209_600, NOW).is_none());
    }
    let json = obj.to_string();
    let salt = "django.contrib.sessionsSessionStore";
    let hash = signing::hex(&signing::salted_hmac_sha1(
        salt,
        json.as_bytes(),
        SECRET.as_bytes(),
    ));
    use base64::Engine as _;
    let legacy = base64::engine::general_purpose::STANDARD.encode(format!("{hash}:{json}"));
    if json.len() <= signing::MAX_SIGNED_BYTES / 2 {
        let back = signing::legacy_session_loads(&legacy, &keys, "SessionStore");
        assert_eq!(back.ok(), Some(reparsed(&obj)));
    }
}

fn reparsed(obj: &serde_json::Value) -> serde_json::Value {
    serde_json::from_str(&obj.to_string()).expect("serde_json reads what it writes")
}

/// A form body as every page reads it, plus the `next` redirect of the login form.
pub fn form_body(data: &[u8]) {
    let _ = form::is_form_content_type(&String::from_utf8_lossy(data));
    let Ok(pairs) = form::parse::<Vec<(String, String)>>(data, form::MAX_FORM_BYTES) else {
        return;
    };
    for (_, value) in pairs.iter().filter(|(n, _)| n == "next") {
        let to = safe_next(Some(value), "/chat/");
        assert!(to.starts_with('/') && !to.starts_with("//") && !to.starts_with("/\\"));
        assert!(to.bytes().all(|b| b.is_ascii_graphic()), "{to:?}");
    }
}

/// A `wsredis loaddata` fixture, checked up to (not including) the database writes.
pub fn fixture(data: &[u8]) {
    let _ = crate::store::fixtures::check(data);
}

/// A websocket upgrade request, one `Name: value` header per line after a first line
/// `METHOD /path HTTP/1.x`, checked against three `--allowed-origins` settings.
pub fn handshake(data: &[u8]) {
    let Some(req) = request(data) else {
        return;
    };
    let _ = handshake::wants_upgrade(&req);
    let foreign_origin = req
        .headers()
        .get(http::header::ORIGIN)
        .is_some_and(|o| o.as_bytes() != b"https://chat.example");
    let lists = [
        vec![],
        vec!["*".to_owned()],
        vec!["https://chat.example/".to_owned()],
    ];
    for allowed in &lists {
        let Ok(accept) = handshake::check(&req, allowed) else {
            continue;
        };
        assert_eq!(accept.len(), 28, "the base64 of a SHA-1");
        assert!(req.method() == Method::GET && req.version() == Version::HTTP_11);
        if allowed.len() == 1 && allowed[0] != "*" && foreign_origin {
            let origin = req.headers().get(http::header::ORIGIN);
            let same =
                origin.is_some_and(|o| o.as_bytes().eq_ignore_ascii_case(b"https://chat.example"));
            assert!(same, "origin {origin:?} passed an allow-list without it");
        }
    }
}

fn request(data: &[u8]) -> Option<Request<()>> {
    let mut lines = data
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = std::str::from_utf8(lines.next()?).ok()?;
    let mut parts = first.split(' ');
    let method = Method::from_bytes(parts.next()?.as_bytes()).ok()?;
    let uri = parts.next()?;
    let version = match parts.next() {
        Some("HTTP/1.0") => Version::HTTP_10,
        Some("HTTP/2") => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    let mut req = Request::builder()
        .method(method)
        .uri(uri)
        .version(version)
        .body(())
        .ok()?;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            req.headers_mut().append(n, v);
        }
    }
    Some(req)
}
