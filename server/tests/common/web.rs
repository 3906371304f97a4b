//! The web app in tests: a migrated database with the demo fixture, a server on it, and a
//! small cookie-keeping client that fills in CSRF tokens the way a browser's forms do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bytes::Bytes;

use super::server::{self, Reply, Server};

/// A fresh SQLite database under a temporary directory, migrated, with `fixtures/data.json`
/// loaded (admin, john, mary, password `secret`; group `chatusers`). Removed when dropped.
pub struct Database {
    /// `sqlite://…` URL to pass as `--database-url`.
    pub url: String,
    dir: PathBuf,
}

impl Database {
    /// Create, migrate and load the fixture.
    pub fn with_fixtures() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "wsredis-test-db-{}-{}",
            std::process::id(),
            super::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Database {
            url: format!("sqlite://{}/db.sqlite3", dir.display()),
            dir,
        };
        let out = db.manage(&["migrate"], &[]);
        assert!(out.status.success(), "migrate: {}", stderr(&out));
        let fixture = fixture_path();
        let out = db.manage(&["loaddata", fixture.to_str().unwrap()], &[]);
        assert!(out.status.success(), "loaddata: {}", stderr(&out));
        db
    }

    /// Run `wsredis ARGS --database-url URL` with extra environment variables.
    pub fn manage(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(server::binary())
            .args(args)
            .args(["--database-url", &self.url])
            .env_remove("WSREDIS_PASSWORD")
            .envs(env.iter().copied())
            .output()
            .expect("run wsredis")
    }

    /// Start `wsredis serve` on this database with a private Redis and `args`.
    pub fn serve(&self, args: &[&str]) -> Server {
        let mut all = vec!["--database-url", &self.url];
        all.extend_from_slice(args);
        Server::start(&all)
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The repository's `fixtures/data.json`.
pub fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/data.json")
}

/// A process's stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every URL that accepts a state-changing POST, with fields that would succeed with a token.
pub const POST_FORMS: &[(&str, &[(&str, &str)])] = &[
    ("/accounts/logout/", &[]),
    ("/userchat/", &[("user", "mary"), ("message", "hi")]),
    ("/groupchat/", &[("group", "chatusers"), ("message", "hi")]),
    (
        "/admin/users/add/",
        &[
            ("username", "mallory"),
            ("password", "pw"),
            ("is_active", "on"),
        ],
    ),
    (
        "/admin/users/2/",
        &[("first_name", "Hacked"), ("is_active", "on")],
    ),
    ("/admin/users/2/password/", &[("password", "owned")]),
    ("/admin/users/2/deactivate/", &[]),
    ("/admin/groups/add/", &[("name", "evil")]),
    ("/admin/groups/1/", &[("name", "renamed")]),
    ("/admin/groups/1/delete/", &[]),
];

/// A client that keeps cookies and knows the CSRF token of the last page it saw.
pub struct Client {
    addr: String,
    /// Cookies by name, as the server set them.
    pub cookies: BTreeMap<String, String>,
    /// The `csrfmiddlewaretoken` of the last HTML page.
    pub csrf: Option<String>,
}

impl Client {
    /// A client with no cookies for the server at `addr` (`127.0.0.1:PORT`).
    pub fn new(addr: &str) -> Self {
        Client {
            addr: addr.to_owned(),
            cookies: BTreeMap::new(),
            csrf: None,
        }
    }

    /// The `Cookie` header value.
    pub fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn remember(&mut self, reply: &Reply) {
        for set in reply.headers.get_all("set-cookie") {
            let set = set.to_str().unwrap();
            let pair = set.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            if value.is_empty() || set.contains("Max-Age=0") {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        if let Some(token) = csrf_in(&reply.body) {
            self.csrf = Some(token);
        }
    }

    /// GET `path` with this client's cookies.
    pub async fn get(&mut self, path: &str) -> Reply {
        let cookie = self.cookie_header();
        let reply = server::request_with(
            &self.addr,
            "GET",
            path,
            &[("cookie", &cookie)],
            Bytes::new(),
        )
        .await
        .unwrap();
        self.remember(&reply);
        reply
    }

    /// POST a form (fields as given: no token added).
    pub async fn post_raw(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let cookie = self.cookie_header();
        let body = serde_urlencoded::to_string(fields).unwrap();
        let reply = server::request_with(
            &self.addr,
            "POST",
            path,
            &[
                ("cookie", &cookie),
                ("content-type", "application/x-www-form-urlencoded"),
            ],
            Bytes::from(body),
        )
        .await
        .unwrap();
        self.remember(&reply);
        reply
    }

    /// POST a form with the current CSRF token added, as the page's form would.
    pub async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let token = self.csrf.clone().expect("GET a page with a form first");
        let mut all = fields.to_vec();
        all.push(("csrfmiddlewaretoken", &token));
        self.post_raw(path, &all).await
    }

    /// Log in through the login form; returns the reply to the POST.
    pub async fn login(&mut self, username: &str, password: &str, next: &str) -> Reply {
        self.get("/accounts/login/").await;
        self.post(
            "/accounts/login/",
            &[
                ("username", username),
                ("password", password),
                ("next", next),
            ],
        )
        .await
    }
}

/// The first `csrfmiddlewaretoken` value in an HTML page.
pub fn csrf_in(html: &str) -> Option<String> {
    let start = html.find("name=\"csrfmiddlewaretoken\" value=\"")? + 34;
    let end = html[start..].find('"')? + start;
    Some(html[start..end].to_owned())
}

/// The `Location` header of a reply.
pub fn location(reply: &Reply) -> &str {
    reply
        .headers
        .get("location")
        .map(|v| v.to_str().unwrap())
        .unwrap_or_default()
}
