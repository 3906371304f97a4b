//! The chat web app's pages over HTTP, against the real binary with several workers, a private
//! Redis and a fixture-loaded SQLite database: redirects and static files, login and logout,
//! CSRF on every form, sending to one user or group, 503 pages when the database is
//! unreachable (with websockets still working).

mod common;

use std::time::Duration;

use common::server::{Server, request_with};
use common::web::{Client, Database, POST_FORMS, location};
use futures_util::StreamExt as _;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

fn session_keys(server: &Server) -> Vec<String> {
    let redis = server.redis.as_ref().unwrap();
    redis
        .cli(&["--scan", "--pattern", "wsredis:session:*"])
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_redirects_and_static_files_are_versioned() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);
    let mut c = Client::new(&server.base());
    let r = c.get("/").await;
    assert_eq!((r.status, location(&r)), (302, "/chat/"));
    let page = c.get("/chat/").await;
    assert_eq!(page.status, 200);
    let js = page
        .body
        .split('"')
        .find(|s| s.starts_with("/static/js/wsredis.js?v="))
        .expect("the chat page links the versioned client")
        .to_owned();
    let r = c.get(&js).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("function WSRedis"), "{}", r.body);
    assert_eq!(
        r.headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/javascript")
    );
    assert!(
        !page.body.contains("http://") && !page.body.contains("https://"),
        "no CDN"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_and_logout() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2", "--trusted-proxies", "127.0.0.1"]);
    let mut c = Client::new(&server.base());

    let r = c.login("john", "wrong", "/userchat/").await;
    assert_eq!(r.status, 200);
    assert!(
        r.body
            .contains("Please enter a correct username and password"),
        "{}",
        r.body
    );
    assert!(!c.cookies.contains_key("sessionid"));
    let r = c.login("nobody", "secret", "/").await;
    assert!(
        r.body
            .contains("Please enter a correct username and password")
    );

    let r = c.login("john", "secret", "/userchat/").await;
    assert_eq!((r.status, location(&r)), (302, "/userchat/"));
    let set = r.headers["set-cookie"].to_str().unwrap();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "plain HTTP: no Secure flag: {set}");
    assert_eq!(session_keys(&server).len(), 1);
    let page = c.get("/userchat/").await;
    assert!(
        page.body.contains("<span id=\"whoami\">john</span>"),
        "{}",
        page.body
    );

    // An off-site `next` is ignored.
    let mut other = Client::new(&server.base());
    let r = other.login("mary", "secret", "https://evil.example/").await;
    assert_eq!(location(&r), "/chat/");

    // GET /accounts/logout/ only asks; the POST logs out and deletes the session.
    let r = c.get("/accounts/logout/").await;
    assert!(r.body.contains("Log out?"));
    assert_eq!(session_keys(&server).len(), 2);
    let old = c.cookies.clone();
    let r = c.post("/accounts/logout/", &[("next", "/chat/")]).await;
    assert_eq!((r.status, location(&r)), (302, "/chat/"));
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        session_keys(&server).len(),
        1,
        "john's session is gone from Redis"
    );
    let mut replay = Client::new(&server.base());
    replay.cookies = old;
    let r = replay.get("/userchat/").await;
    assert_eq!(r.status, 302, "the old session cookie no longer logs in");

    // Behind a trusted proxy that terminated TLS, the session cookie is Secure.
    let login = request_with(
        &server.base(),
        "GET",
        "/accounts/login/",
        &[],
        Default::default(),
    )
    .await
    .unwrap();
    let csrf = common::web::csrf_in(&login.body).unwrap();
    let body = format!("csrfmiddlewaretoken={csrf}&username=mary&password=secret");
    let cookie = format!("csrftoken={csrf}");
    let r = request_with(
        &server.base(),
        "POST",
        "/accounts/login/",
        &[
            ("cookie", &cookie),
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-proto", "https"),
        ],
        body.into(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 302);
    assert!(
        r.headers["set-cookie"]
            .to_str()
            .unwrap()
            .contains("; Secure")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_form_needs_a_csrf_token() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);

    // Anonymous: the login form needs the cookie and the field, equal.
    let mut anon = Client::new(&server.base());
    let r = anon
        .post_raw(
            "/accounts/login/",
            &[("username", "admin"), ("password", "secret")],
        )
        .await;
    assert_eq!(r.status, 403);
    anon.get("/accounts/login/").await;
    let r = anon
        .post_raw(
            "/accounts/login/",
            &[("username", "admin"), ("password", "secret")],
        )
        .await;
    assert_eq!(r.status, 403, "cookie without the field");
    anon.cookies.clear();
    let r = anon
        .post(
            "/accounts/login/",
            &[("username", "admin"), ("password", "secret")],
        )
        .await;
    assert_eq!(r.status, 403, "field without the cookie");

    let mut admin = Client::new(&server.base());
    assert_eq!(admin.login("admin", "secret", "/admin/").await.status, 302);
    admin.get("/admin/").await;
    let forged = "A".repeat(43);
    for (path, fields) in POST_FORMS {
        let r = admin.post_raw(path, fields).await;
        assert_eq!(r.status, 403, "POST {path} without a token: {}", r.body);
        assert!(r.body.contains("CSRF"), "{}", r.body);
        let mut with_forged = fields.to_vec();
        with_forged.push(("csrfmiddlewaretoken", &forged));
        let r = admin.post_raw(path, &with_forged).await;
        assert_eq!(r.status, 403, "POST {path} with a forged token");
    }
    // Nothing changed: john can still log in with his password, the group is still there.
    let mut john = Client::new(&server.base());
    assert_eq!(john.login("john", "secret", "/chat/").await.status, 302);
    let groups = admin.get("/admin/groups/").await;
    assert!(
        groups.body.contains("value=\"chatusers\""),
        "{}",
        groups.body
    );
    assert!(!groups.body.contains("evil"));
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn socket(addr: &str, path: &str, cookie: &str) -> Socket {
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let (ws, resp) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket");
    assert_eq!(resp.status(), 101);
    ws
}

async fn next_text(ws: &mut Socket) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
            Ok(Some(Ok(_))) => continue,
            _ => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_to_a_user_reaches_only_that_user() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);
    let (mut john, mut mary) = (Client::new(&server.base()), Client::new(&server.base()));
    john.login("john", "secret", "/").await;
    mary.login("mary", "secret", "/").await;
    let mut john_ws = socket(
        &server.base(),
        "/ws/chat?subscribe-user",
        &john.cookie_header(),
    )
    .await;
    let mut mary_ws = socket(
        &server.base(),
        "/ws/chat?subscribe-user",
        &mary.cookie_header(),
    )
    .await;

    let page = john.get("/userchat/").await;
    assert!(
        page.body
            .contains("<option value=\"mary\">Mary Lou (mary)</option>"),
        "{}",
        page.body
    );
    let r = john
        .post("/userchat/", &[("user", "mary"), ("message", "hello mary")])
        .await;
    assert_eq!((r.status, r.body.as_str()), (200, "OK"));
    assert_eq!(
        next_text(&mut mary_ws).await.as_deref(),
        Some("john: hello mary")
    );

    // Group: both members receive it.
    let r = john
        .post(
            "/groupchat/",
            &[("group", "chatusers"), ("message", "hi all")],
        )
        .await;
    assert_eq!(r.status, 200);
    let mut john_group = socket(
        &server.base(),
        "/ws/chat?subscribe-group",
        &john.cookie_header(),
    )
    .await;
    assert_eq!(
        next_text(&mut john_group).await.as_deref(),
        Some("john: hi all"),
        "replayed"
    );

    assert_eq!(
        john.post("/userchat/", &[("user", "nobody"), ("message", "x")])
            .await
            .status,
        404
    );
    assert_eq!(
        john.post("/userchat/", &[("user", "mary"), ("message", "  ")])
            .await
            .status,
        400
    );
    // John's own user channel got nothing.
    let _ = tokio::time::timeout(Duration::from_millis(300), john_ws.next())
        .await
        .map(|m| {
            panic!("john received {m:?}");
        });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_answer_503_when_the_database_is_unreachable() {
    let dead = format!(
        "postgres://wsredis@127.0.0.1:{}/wsredis",
        common::free_port()
    );
    let server = Server::start(&["--workers", "2", "--database-url", &dead]);
    let mut c = Client::new(&server.base());
    assert_eq!(
        c.get("/chat/").await.status,
        200,
        "the broadcast page needs no database"
    );
    let r = c.login("john", "secret", "/").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body.contains("the user database"), "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));

    // A staff session (written as the login would have) gets 503 on the admin, not 403.
    let key = "a".repeat(40);
    let record = serde_json::json!({"user_id":1,"username":"admin","groups":[],"is_staff":true,
        "is_superuser":true,"csrf_token":"B".repeat(43),"created":0});
    server.redis.as_ref().unwrap().cli(&[
        "SET",
        &format!("wsredis:session:{key}"),
        &record.to_string(),
    ]);
    let mut admin = Client::new(&server.base());
    admin.cookies.insert("sessionid".into(), key);
    assert_eq!(admin.get("/admin/").await.status, 503);
    assert_eq!(admin.get("/userchat/").await.status, 503);

    // Websockets go on.
    let mut a = socket(
        &server.base(),
        "/ws/chat?subscribe-broadcast&publish-broadcast&echo",
        "x=y",
    )
    .await;
    use futures_util::SinkExt as _;
    a.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_text(&mut a).await.as_deref(), Some("still here"));
}
