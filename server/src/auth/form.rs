//! `application/x-www-form-urlencoded` request bodies (login, user and group forms) into typed
//! structs, with a size limit and strict decoding.
//!
//! `serde_urlencoded` replaces bytes that are not UTF-8 after percent-decoding with U+FFFD;
//! this module refuses them first ([`FormError::Encoding`]), so a password or username is never
//! silently altered. A missing or repeated field of the target struct is [`FormError::Fields`];
//! fields the struct does not name are ignored.

use percent_encoding::percent_decode;
use serde::de::DeserializeOwned;

/// Largest form body accepted by default (the forms of this app are tiny).
pub const MAX_FORM_BYTES: usize = 16 * 1024;
/// The media type of HTML form posts.
pub const CONTENT_TYPE: &str = "application/x-www-form-urlencoded";

/// Why a form body was refused (HTTP 400, or 413 for [`FormError::TooLarge`], 415 for
/// [`FormError::ContentType`]).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FormError {
    /// The body is larger than the limit.
    #[error("form body larger than {limit} bytes")]
    TooLarge {
        /// The limit that was passed.
        limit: usize,
    },
    /// The request is not a URL-encoded form.
    #[error("expected Content-Type {CONTENT_TYPE}")]
    ContentType,
    /// A name or value is not UTF-8 once percent-decoded.
    #[error("form field is not valid UTF-8")]
    Encoding,
    /// A field is missing, repeated or has the wrong type.
    #[error("form fields: {0}")]
    Fields(String),
}

/// Whether a `Content-Type` value names a URL-encoded form (parameters such as
/// `charset=UTF-8` allowed, case-insensitive).
pub fn is_form_content_type(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(CONTENT_TYPE))
}

/// Decode a form body (at most `limit` bytes) into `T`.
pub fn parse<T: DeserializeOwned>(body: &[u8], limit: usize) -> Result<T, FormError> {
    if body.len() > limit {
        return Err(FormError::TooLarge { limit });
    }
    let utf8 = body
        .split(|&b| b == b'&')
        .flat_map(|pair| pair.splitn(2, |&b| b == b'='))
        .all(|part| percent_decode(part).decode_utf8().is_ok());
    if !utf8 {
        return Err(FormError::Encoding);
    }
    serde_urlencoded::from_bytes(body).map_err(|e| FormError::Fields(e.to_string()))
}

/// [`parse`] after checking the request's `Content-Type`.
pub fn parse_request<T: DeserializeOwned>(
    content_type: Option<&str>,
    body: &[u8],
    limit: usize,
) -> Result<T, FormError> {
    if !content_type.is_some_and(is_form_content_type) {
        return Err(FormError::ContentType);
    }
    parse(body, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Login {
        username: String,
        password: String,
        csrfmiddlewaretoken: String,
        #[serde(default)]
        next: Option<String>,
    }

    #[test]
    fn decodes_a_login_form() {
        let body = b"csrfmiddlewaretoken=t0k&username=john&password=s%C3%A9cret+%26+more&x=1";
        let form: Login = parse(body, MAX_FORM_BYTES).unwrap();
        assert_eq!(form.username, "john");
        assert_eq!(form.password, "s\u{e9}cret & more");
        assert_eq!(form.csrfmiddlewaretoken, "t0k");
        assert_eq!(form.next, None);
        let form: Login = parse(
            b"username=&password=&csrfmiddlewaretoken=&next=%2Fchat%2F",
            100,
        )
        .unwrap();
        assert_eq!(form.next.as_deref(), Some("/chat/"));
    }

    #[test]
    fn refuses_bad_bodies_with_a_reason() {
        let p = |b: &[u8]| parse::<Login>(b, 64);
        assert_eq!(p(&[b'a'; 65]), Err(FormError::TooLarge { limit: 64 }));
        assert_eq!(
            p(b"username=%FF&password=x&csrfmiddlewaretoken=t"),
            Err(FormError::Encoding)
        );
        assert_eq!(p(b"user%C3=x"), Err(FormError::Encoding));
        assert_eq!(p(b"username=\xe9"), Err(FormError::Encoding));
        assert!(matches!(
            p(b"username=a&password=b"),
            Err(FormError::Fields(_))
        ));
        assert!(matches!(
            p(b"username=a&username=b&password=b&csrfmiddlewaretoken=t"),
            Err(FormError::Fields(_))
        ));
        // Truncated escapes are kept literally, as browsers and Django do.
        assert_eq!(
            p(b"username=%&password=%4&csrfmiddlewaretoken=t")
                .unwrap()
                .password,
            "%4"
        );
    }

    #[test]
    fn content_type_must_be_a_form() {
        assert!(is_form_content_type("application/x-www-form-urlencoded"));
        assert!(is_form_content_type(
            "Application/X-WWW-Form-Urlencoded; charset=UTF-8"
        ));
        assert!(!is_form_content_type("multipart/form-data; boundary=x"));
        assert!(!is_form_content_type("application/json"));
        assert_eq!(
            parse_request::<Login>(None, b"", 10),
            Err(FormError::ContentType)
        );
    }
}
