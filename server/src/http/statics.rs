//! Static files (`/static/…`): the JS client, the chat page script and the stylesheet,
//! embedded in the binary so a deployment is one file.
//!
//! Caching: every asset has an ETag (a digest of its bytes). Pages link assets through
//! [`url`], which appends `?v=<etag>`; a request with the current version gets
//! `Cache-Control: public, max-age=31536000, immutable`, any other request `no-cache` (the
//! browser revalidates and gets 304 while the ETag matches). A new binary changes the digest,
//! hence the URL, so browsers never run a stale client against a new server.

use std::sync::LazyLock;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, ETAG, IF_NONE_MATCH, X_CONTENT_TYPE_OPTIONS};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use sha2::{Digest as _, Sha256};

use super::response::{self, Response};

/// URL prefix of the static files.
pub const PREFIX: &str = "/static/";

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "js/wsredis.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/js/wsredis.js"),
    },
    Asset {
        path: "js/chat.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/js/chat.js"),
    },
    Asset {
        path: "css/wsredis.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../static/css/wsredis.css"),
    },
];

/// The version of each asset, in [`ASSETS`] order: 16 hex digits of its SHA-256.
static VERSIONS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body);
            digest[..8].iter().map(|b| format!("{b:02x}")).collect()
        })
        .collect()
});

fn find(path: &str) -> Option<(&'static Asset, &'static str)> {
    ASSETS
        .iter()
        .zip(VERSIONS.iter())
        .find(|(a, _)| a.path == path)
        .map(|(a, v)| (a, v.as_str()))
}

/// The versioned URL of an embedded asset (`js/wsredis.js` → `/static/js/wsredis.js?v=…`).
/// An unknown path (a bug in a template) gives the unversioned URL, which 404s visibly.
pub fn url(path: &str) -> String {
    match find(path) {
        Some((_, v)) => format!("{PREFIX}{path}?v={v}"),
        None => format!("{PREFIX}{path}"),
    }
}

/// Answer `GET`/`HEAD` `/static/<path>[?v=…]`.
pub fn serve(method: &Method, path: &str, query: Option<&str>, headers: &HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return response::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    let Some((asset, version)) = path.strip_prefix(PREFIX).and_then(find) else {
        return response::not_found("no such static file\n");
    };
    let etag = format!("\"{version}\"");
    let fresh = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let versioned = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .any(|pair| pair == format!("v={version}"));
    let mut r = if fresh {
        response::with_type(StatusCode::NOT_MODIFIED, asset.content_type, Bytes::new())
    } else {
        response::with_type(
            StatusCode::OK,
            asset.content_type,
            Bytes::from_static(asset.body),
        )
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(ETAG, v);
    }
    h.insert(
        CACHE_CONTROL,
        HeaderValue::from_static(if versioned {
            "public, max-age=31536000, immutable"
        } else {
            "no-cache"
        }),
    );
    h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versioned_urls_are_cached_for_good_and_revalidate_otherwise() {
        let url = url("js/wsredis.js");
        let (path, query) = url.split_once('?').unwrap();
        let r = serve(&Method::GET, path, Some(query), &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert!(
            r.headers()[CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
        let etag = r.headers()[ETAG].clone();

        let r = serve(&Method::GET, path, None, &HeaderMap::new());
        assert_eq!(r.headers()[CACHE_CONTROL], "no-cache");
        let mut conditional = HeaderMap::new();
        conditional.insert(IF_NONE_MATCH, etag);
        let r = serve(&Method::GET, path, None, &conditional);
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

        let r = serve(
            &Method::GET,
            "/static/../Cargo.toml",
            None,
            &HeaderMap::new(),
        );
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            serve(&Method::POST, path, None, &HeaderMap::new()).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
