//! Trying to break into the web app on the real binary: SQL meta-characters in every form
//! field, non-staff and anonymous visitors on odd admin URLs, session fixation, a spoofed
//! `X-Forwarded-Proto`, and passwords in trace-level logs.

mod common;

use common::server::{Reply, Server, request_with};
use common::web::{Client, Database, POST_FORMS, location};
use common::ws::{connect, next_text};

/// Every SQL meta-character of the issue, and the classic.
const META: &str = "' \" ; -- /* \\ % ' OR 1=1 --";

/// `text` as askama escapes it in HTML.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&#34;")
        .replace('\'', "&#39;")
}

fn no_server_error(what: &str, r: &Reply) {
    assert!(r.status < 500, "{what}: {} {}", r.status, r.body);
}

fn user_id(list: &Reply, name: &str) -> String {
    list.body
        .split("href=\"/admin/users/")
        .find_map(|s| {
            s.split_once(&format!("/\">{name}<"))
                .map(|(id, _)| id.to_owned())
        })
        .unwrap_or_else(|| panic!("{name} is listed"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_meta_characters_in_every_form_field_are_text() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);
    let base = server.base();

    // Login form: every field.
    let mut probe = Client::new(&base);
    let r = probe.login(META, META, META).await;
    no_server_error("login", &r);
    assert!(
        r.body
            .contains("Please enter a correct username and password")
    );
    let r = probe.login("john", META, META).await;
    assert!(
        r.body
            .contains("Please enter a correct username and password")
    );

    let mut admin = Client::new(&base);
    admin.login("admin", "secret", "/admin/").await;
    // Group forms: add and rename.
    admin.get("/admin/groups/").await;
    let r = admin.post("/admin/groups/add/", &[("name", META)]).await;
    assert_eq!(r.status, 302, "{}", r.body);
    let groups = admin.get("/admin/groups/").await;
    let shown = groups.body.find("Groups").map_or("", |i| &groups.body[i..]);
    assert!(groups.body.contains(&html(META)), "{shown}");
    let renamed = format!("{META} 2");
    let gid = groups.body.split("action=\"/admin/groups/").find_map(|s| {
        let (id, rest) = s.split_once("/\"")?;
        let rest = rest.split("</form>").next()?;
        rest.contains(&format!("value=\"{}\"", html(META)))
            .then(|| id.to_owned())
    });
    if let Some(gid) = gid {
        let r = admin
            .post(&format!("/admin/groups/{gid}/"), &[("name", &renamed)])
            .await;
        no_server_error("rename group", &r);
    }

    // Add-user form: every field. The username (tested in webapp_admin), the email and an
    // unknown group are refused with a sentence; each refusal is retried without that field,
    // so every other field is stored.
    admin.get("/admin/users/add/").await;
    let mut fields = vec![
        ("username", "sqlmeta"),
        ("password", META),
        ("first_name", META),
        ("last_name", META),
        ("is_active", META),
        ("is_staff", META),
        ("groups", META),
        ("email", META),
    ];
    loop {
        let r = admin.post("/admin/users/add/", &fields).await;
        no_server_error("add user", &r);
        if r.status == 302 {
            break;
        }
        assert_eq!(r.status, 400, "{}", r.body);
        assert!(
            fields.len() > 6,
            "refused with only plain fields: {}",
            r.body
        );
        fields.pop();
    }
    let list = admin.get("/admin/").await;
    let id = user_id(&list, "sqlmeta");
    let form = admin.get(&format!("/admin/users/{id}/")).await;
    assert!(
        form.body.contains(&format!("value=\"{}\"", html(META))),
        "{}",
        form.body
    );
    // The password with every meta-character logs in, and only that one.
    let r = Client::new(&base).login("sqlmeta", META, "/chat/").await;
    assert_eq!((r.status, location(&r)), (302, "/chat/"), "{}", r.body);
    assert_eq!(
        Client::new(&base)
            .login("sqlmeta", "' OR 1=1 --", "/")
            .await
            .status,
        200
    );

    // Edit-user and set-password forms: every field.
    let john = user_id(&list, "john");
    admin.get(&format!("/admin/users/{john}/")).await;
    let edit = [
        ("first_name", META),
        ("last_name", META),
        ("email", META),
        ("is_active", "on"),
        ("is_staff", META),
        ("groups", "chatusers"),
        ("groups", META),
    ];
    let r = admin.post(&format!("/admin/users/{john}/"), &edit).await;
    no_server_error("edit user", &r);
    let r = admin
        .post(
            &format!("/admin/users/{id}/password/"),
            &[("password", &format!("{META}!"))],
        )
        .await;
    no_server_error("set password", &r);
    assert_eq!(
        Client::new(&base)
            .login("sqlmeta", &format!("{META}!"), "/")
            .await
            .status,
        302
    );

    // Chat forms: recipient and message. The message arrives as it was typed.
    let mut mary = Client::new(&base);
    mary.login("mary", "secret", "/userchat/").await;
    let key = mary.cookies["sessionid"].clone();
    let mut ws = connect(&base, "/ws/chat?subscribe-user", Some(&key))
        .await
        .unwrap();
    let redis = server.redis.as_ref().unwrap();
    assert!(common::wait_until(
        std::time::Duration::from_secs(20),
        || { redis.numsub("user:mary:chat") >= 1 }
    ));
    let mut sender = Client::new(&base);
    sender.login("admin", "secret", "/userchat/").await;
    sender.get("/userchat/").await;
    for (path, fields, want) in [
        ("/userchat/", [("user", META), ("message", "x")], [404, 404]),
        (
            "/groupchat/",
            [("group", META), ("message", "x")],
            [200, 404],
        ),
        (
            "/groupchat/",
            [("group", "chatusers"), ("message", META)],
            [200, 200],
        ),
    ] {
        let r = sender.post(path, &fields).await;
        assert!(
            want.contains(&r.status),
            "{path} {fields:?}: {} {}",
            r.status,
            r.body
        );
    }
    let r = sender
        .post("/userchat/", &[("user", "mary"), ("message", META)])
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(next_text(&mut ws).await, Some(format!("admin: {META}")));
    let r = sender.post("/accounts/logout/", &[("next", META)]).await;
    assert_eq!((r.status, location(&r)), (302, "/accounts/login/"));

    // Everything is still there.
    let list = admin.get("/admin/").await;
    for user in ["admin", "john", "mary", "sqlmeta"] {
        assert!(list.body.contains(&format!("\">{user}</a>")), "{user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_admin_urls_are_closed_to_non_staff_and_anonymous_visitors() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);
    let base = server.base();
    let odd = [
        "/admin/users/2/password/",
        "/admin/users/2/deactivate/",
        "/admin/groups/1/",
        "/admin/groups/1/delete/",
        "/admin/nope/",
        "/admin/users/../",
        "/admin//",
        "/admin/users/2",
        "/admin/users/0/",
        "/admin/users/-1/",
        "/admin/users/99999999999999999999/",
        "/admin/users/2%2F/",
        "/admin/users/2/?is_staff=on",
        "/admin/%2e%2e/",
    ];
    let mut john = Client::new(&base);
    john.login("john", "secret", "/chat/").await;
    for path in odd {
        let r = john.get(path).await;
        assert_eq!(r.status, 403, "GET {path} as john: {}", r.body);
    }
    let mut anon = Client::new(&base);
    anon.get("/accounts/login/").await;
    for path in odd {
        let r = anon.get(path).await;
        assert_eq!(r.status, 302, "GET {path} anonymous");
        assert!(location(&r).starts_with("/accounts/login/"), "{path}");
    }
    // Anonymous with a valid (anonymous) CSRF token on every admin form: nothing changes.
    for (path, fields) in POST_FORMS.iter().filter(|(p, _)| p.starts_with("/admin/")) {
        let r = anon.post(path, fields).await;
        assert!(matches!(r.status, 302 | 403), "POST {path}: {}", r.status);
        assert!(
            !location(&r).starts_with("/admin/"),
            "POST {path} went through"
        );
    }
    let mut admin = Client::new(&base);
    admin.login("admin", "secret", "/admin/").await;
    let list = admin.get("/admin/").await;
    assert!(!list.body.contains("mallory") && list.body.contains("\">john</a>"));
    assert!(
        admin
            .get("/admin/groups/")
            .await
            .body
            .contains("value=\"chatusers\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_rotates_the_session_and_a_spoofed_proxy_header_is_ignored() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);
    let base = server.base();
    let redis = server.redis.as_ref().unwrap();
    let record = |key: &str| redis.cli(&["GET", &format!("wsredis:session:{key}")]);

    // Fixation: the attacker plants their own session (or a made-up key) in the victim's
    // browser; logging in gives the victim a new key and leaves the planted one alone.
    let mut mary = Client::new(&base);
    mary.login("mary", "secret", "/chat/").await;
    let planted = mary.cookies["sessionid"].clone();
    for plant in [
        planted.clone(),
        "0123456789abcdefghij0123456789abcdefghij".into(),
    ] {
        let mut victim = Client::new(&base);
        victim.cookies.insert("sessionid".into(), plant.clone());
        let r = victim.login("john", "secret", "/chat/").await;
        assert_eq!(r.status, 302, "{}", r.body);
        let key = victim.cookies["sessionid"].clone();
        assert_ne!(key, plant, "the session key rotates on login");
        assert!(record(&key).contains("\"username\":\"john\""));
        let old = record(&plant);
        assert!(
            !old.contains("john"),
            "the planted session did not become john's: {old}"
        );
    }
    // The second login of the same browser rotates too.
    let mut john = Client::new(&base);
    john.login("john", "secret", "/chat/").await;
    let first = john.cookies["sessionid"].clone();
    john.login("john", "secret", "/chat/").await;
    assert_ne!(john.cookies["sessionid"], first);

    // `X-Forwarded-Proto: https` from a peer that is not a trusted proxy: no `Secure`
    // (this server has no --trusted-proxies).
    let page = request_with(&base, "GET", "/accounts/login/", &[], Default::default())
        .await
        .unwrap();
    let csrf = common::web::csrf_in(&page.body).unwrap();
    let r = request_with(
        &base,
        "POST",
        "/accounts/login/",
        &[
            ("cookie", &format!("csrftoken={csrf}")),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-proto", "https"),
        ],
        format!("csrfmiddlewaretoken={csrf}&username=mary&password=secret").into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 302);
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert!(set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Path=/"));
    assert!(!set.contains("Secure"), "spoofed header believed: {set}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_never_reach_the_logs_even_at_trace_level() {
    let db = Database::with_fixtures();
    let server = Server::start(&[
        "--database-url",
        &db.url,
        "--workers",
        "2",
        "--log",
        "trace",
    ]);
    let base = server.base();
    let passwords = [
        "Pw-add-7f3a9c",
        "Pw-set-8d1e02",
        "Pw-wrong-41b2aa",
        "Pw-in-username-c0ffee",
    ];
    let mut admin = Client::new(&base);
    admin.login("admin", "secret", "/admin/").await;
    admin.get("/admin/users/add/").await;
    let r = admin
        .post(
            "/admin/users/add/",
            &[
                ("username", "logcheck"),
                ("password", passwords[0]),
                ("is_active", "on"),
            ],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let id = user_id(&admin.get("/admin/").await, "logcheck");
    admin.get(&format!("/admin/users/{id}/")).await;
    let r = admin
        .post(
            &format!("/admin/users/{id}/password/"),
            &[("password", passwords[1])],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let r = Client::new(&base)
        .login("logcheck", passwords[2], "/")
        .await;
    assert_eq!(r.status, 200);
    let r = Client::new(&base)
        .login("logcheck", passwords[1], "/")
        .await;
    assert_eq!(r.status, 302);
    // The password typed into the username field: the failed login is logged without it.
    let r = Client::new(&base)
        .login(passwords[3], "logcheck", "/")
        .await;
    assert_eq!(r.status, 200);

    let log = server.log_text();
    assert!(
        log.contains("logged in") && log.contains("TRACE"),
        "trace logging is on"
    );
    assert!(
        log.contains("login failed") && log.contains("(no such account)"),
        "failed logins are logged"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("login failed") && l.contains("logcheck")),
        "a failed login of an existing account names it"
    );
    println!("{} log lines at trace level checked", log.lines().count());
    for pw in passwords.iter().chain(&["secret"]) {
        assert!(!log.contains(pw), "password {pw} is in the log");
    }
}
