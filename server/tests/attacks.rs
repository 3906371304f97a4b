//! Trying to reach channels one may not, on the real binary with its own Redis: odd facility
//! names and query strings, other users' / groups' / sessions' channels, and anonymous
//! sockets publishing where they may not. What a socket reached is read from Redis itself
//! (`PUBSUB CHANNELS`, `NUMSUB`) and by publishing to near-miss channels.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::web::{Client, Database};
use common::ws::{Ws, connect, next_text};
use common::{RedisServer, wait_until};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio_tungstenite::tungstenite::Message;

const WAIT: Duration = Duration::from_secs(20);
const ALL_SUBSCRIBE: &str =
    "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session&publish-broadcast";

fn channels(redis: &RedisServer) -> BTreeSet<String> {
    redis
        .cli(&["PUBSUB", "CHANNELS", "*"])
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Wait until every channel in `want` has a subscriber (one per worker that has a socket
/// on it).
fn subscribed(redis: &RedisServer, want: &[String]) {
    let ok = wait_until(WAIT, || want.iter().all(|c| redis.numsub(c) >= 1));
    assert!(
        ok,
        "not all subscribed: {want:?}; Redis has {:?}",
        channels(redis)
    );
}

/// Publish `decoys` and then `marker` straight to Redis; the socket must get the marker
/// first, so none of the decoys reached it (one Redis connection delivers in order).
async fn only_marker_arrives(redis: &RedisServer, ws: &mut Ws, decoys: &[String], marker: &str) {
    for d in decoys {
        redis.cli(&["PUBLISH", d, "decoy"]);
    }
    redis.cli(&["PUBLISH", marker, "marker"]);
    assert_eq!(
        next_text(ws).await.as_deref(),
        Some("marker"),
        "decoys {decoys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_facilities_and_query_strings_reach_only_the_sockets_own_channels() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);
    let redis = server.redis.as_ref().unwrap();
    let base = server.base();
    let mut john = Client::new(&base);
    john.login("john", "secret", "/chat/").await;
    let key = john.cookies["sessionid"].clone();
    let before = channels(redis);
    let own = |f: &str| {
        vec![
            format!("broadcast:{f}"),
            format!("user:john:{f}"),
            format!("group:chatusers:{f}"),
            format!("session:{key}:{f}"),
        ]
    };

    // (path after /ws/, facility it decodes to, or None when it must be refused with 400)
    let long_ok = "x".repeat(200);
    let long_bad = "y".repeat(201);
    let cases: Vec<(String, Option<&str>)> = vec![
        ("plain".into(), Some("plain")),
        (long_ok.clone(), Some(long_ok.as_str())),
        (long_bad, None),
        ("%C3%A9t%C3%A9".into(), Some("été")),
        ("..".into(), Some("..")),
        ("..%2F..%2Fadmin".into(), Some("../../admin")),
        ("a%2Fb".into(), Some("a/b")),
        ("a+b".into(), Some("a+b")),
        ("100%25".into(), Some("100%")),
        ("a%2Ab".into(), None),
        ("a%3Fb".into(), None),
        ("%5Bab%5D".into(), None),
        ("a%00b".into(), None),
        ("a%0Ab".into(), None),
        ("a%0D%0APUBLISH".into(), None),
        ("a%20b".into(), None),
        ("a%09b".into(), None),
        ("%FF%FE".into(), None),
        ("".into(), None),
        // `group:chatusers:b:c` would be the channel of a group `chatusers:b` on `c`.
        ("b:c".into(), None),
        ("b%3Ac".into(), None),
    ];
    let mut expected = BTreeSet::new();
    let mut open = Vec::new();
    for (path, facility) in &cases {
        let url = format!("/ws/{path}?{ALL_SUBSCRIBE}");
        let result = connect(&base, &url, Some(&key)).await;
        match facility {
            None => {
                let err = result.err().unwrap_or_else(|| panic!("{url} was accepted"));
                assert!(err.contains("400"), "{url}: {err}");
            }
            Some(f) => {
                let ws = result.unwrap_or_else(|e| panic!("{url}: {e}"));
                let mine = own(f);
                subscribed(redis, &mine);
                expected.extend(mine);
                open.push((f.to_string(), ws));
            }
        }
    }
    // A colon is fine where no name field precedes the facility: broadcast only.
    let ws = connect(&base, "/ws/b:c?subscribe-broadcast", Some(&key))
        .await
        .unwrap();
    subscribed(redis, &["broadcast:b:c".to_owned()]);
    expected.insert("broadcast:b:c".into());
    open.push(("b:c".into(), ws));

    // Query strings: names are matched as ws4redis does (case, `+`, percent escapes), values
    // and unknown keys are ignored, and no parameter can name someone else.
    let queries = [
        ("q1", "SUBSCRIBE-USER", vec![format!("user:john:q1")]),
        ("q2", "subscribe%2Duser", vec![format!("user:john:q2")]),
        (
            "q3",
            "subscribe-user=mary&user=mary&group=admins",
            vec![format!("user:john:q3")],
        ),
        (
            "q4",
            "subscribe-session=x&session=0123456789abcdefghij0123456789abcdefghij",
            vec![format!("session:{key}:q4")],
        ),
        (
            "q5",
            "+subscribe-group+=1&subscribe-group",
            vec![format!("group:chatusers:q5")],
        ),
        // Not flag names (ws4redis strips whitespace, so `%0A` and `+` around a name count).
        (
            "q6",
            "subscribe-user%00&subscribe-user*&subscribe-users&subscribe_user",
            vec![],
        ),
        ("q8", "subscribe-user%0A", vec![format!("user:john:q8")]),
    ];
    for (f, query, want) in queries {
        let ws = connect(&base, &format!("/ws/{f}?{query}"), Some(&key))
            .await
            .unwrap();
        subscribed(redis, &want);
        expected.extend(want);
        open.push((f.to_owned(), ws));
    }
    let long_query = format!("{}&subscribe-broadcast", "&junk=%2A%3A".repeat(3_000));
    let ws = connect(&base, &format!("/ws/q7?{long_query}"), Some(&key))
        .await
        .unwrap();
    subscribed(redis, &["broadcast:q7".to_owned()]);
    expected.insert("broadcast:q7".into());
    open.push(("q7".into(), ws));

    let now: BTreeSet<String> = channels(redis).difference(&before).cloned().collect();
    assert_eq!(
        now, expected,
        "Redis has exactly the channels the sockets may have"
    );

    // Near misses published straight to Redis never reach john's sockets.
    for (f, ws) in open.iter_mut().filter(|(f, _)| f == "plain" || f == "..") {
        let decoys = [
            format!("user:mary:{f}"),
            format!("user:john:{f}x"),
            format!("user:john::{f}"),
            format!("group:admins:{f}"),
            format!("session:0123456789abcdefghij0123456789abcdefghij:{f}"),
            format!("broadcast:{f}/"),
            "broadcast:*".to_owned(),
        ];
        only_marker_arrives(redis, ws, &decoys, &format!("user:john:{f}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_reads_or_writes_another_users_groups_or_sessions_channel() {
    let db = Database::with_fixtures();
    let server = db.serve(&["--workers", "2"]);
    let redis = server.redis.as_ref().unwrap();
    let base = server.base();
    // Mary is alone in a group john is not in.
    let mut admin = Client::new(&base);
    admin.login("admin", "secret", "/admin/").await;
    admin.get("/admin/groups/").await;
    let r = admin
        .post("/admin/groups/add/", &[("name", "chatusers:secret")])
        .await;
    assert_eq!(r.status, 302, "{}", r.body);
    let users = admin.get("/admin/").await;
    let mary_id = users
        .body
        .split("href=\"/admin/users/")
        .find_map(|s| s.split_once("/\">mary<").map(|(id, _)| id.to_owned()))
        .expect("mary is listed");
    admin.get(&format!("/admin/users/{mary_id}/")).await;
    let r = admin
        .post(
            &format!("/admin/users/{mary_id}/"),
            &[
                ("first_name", "Mary"),
                ("is_active", "on"),
                ("groups", "chatusers:secret"),
            ],
        )
        .await;
    assert_eq!(r.status, 302, "{}", r.body);

    let mut john = Client::new(&base);
    john.login("john", "secret", "/chat/").await;
    let mut mary = Client::new(&base);
    mary.login("mary", "secret", "/chat/").await;
    let (jk, mk) = (
        john.cookies["sessionid"].clone(),
        mary.cookies["sessionid"].clone(),
    );
    let flags = "subscribe-user&subscribe-group&subscribe-session";
    let mut mary_ws = connect(&base, &format!("/ws/room?{flags}"), Some(&mk))
        .await
        .unwrap();
    let mary_own = [
        "user:mary:room".to_owned(),
        "group:chatusers:secret:room".to_owned(),
        format!("session:{mk}:room"),
    ];
    subscribed(redis, &mary_own);

    // John tries: the colon trick onto mary's group, and publishing to her.
    for path in [
        "/ws/secret:room?subscribe-group",
        "/ws/secret%3Aroom?publish-group",
    ] {
        let err = connect(&base, path, Some(&jk)).await.expect_err(path);
        assert!(err.contains("400"), "{path}: {err}");
    }
    let all = "subscribe-user&subscribe-group&subscribe-session&publish-user&publish-group&\
               publish-session&echo";
    let mut john_ws = connect(&base, &format!("/ws/room?{all}"), Some(&jk))
        .await
        .unwrap();
    subscribed(
        redis,
        &["user:john:room".to_owned(), format!("session:{jk}:room")],
    );
    john_ws.send(Message::text("from john")).await.unwrap();
    assert_eq!(
        next_text(&mut john_ws).await.as_deref(),
        Some("from john"),
        "echo"
    );
    // A cookie header with two session ids: the first one counts, never a mix.
    let two = format!("{jk}; sessionid={mk}");
    let mut mixed = connect(&base, "/ws/room?subscribe-user", Some(&two))
        .await
        .unwrap();
    // It replays john's stored message: it is on john's channel.
    assert_eq!(next_text(&mut mixed).await.as_deref(), Some("from john"));
    assert_eq!(redis.numsub("user:mary:room"), 1);
    // Nothing john published reached any of mary's channels.
    only_marker_arrives(redis, &mut mary_ws, &[], "user:mary:room").await;

    // Forged, tampered and foreign-shaped cookies are anonymous: no personal channel at all.
    let forged = [
        "0123456789abcdefghij0123456789abcdefghij".to_owned(),
        format!("{}x", &mk[..39]),
        mk.to_uppercase(),
        format!("{mk}%00"),
        format!("{mk}:1"),
        "' OR 1=1 --".to_owned(),
        "*".to_owned(),
    ];
    for flag in [
        "publish-user",
        "publish-group",
        "publish-session",
        "subscribe-session",
    ] {
        let err = connect(&base, &format!("/ws/room?{flag}"), None)
            .await
            .expect_err(flag);
        assert!(err.contains("403"), "anonymous {flag}: {err}");
    }
    for cookie in &forged {
        let err = connect(&base, "/ws/room?subscribe-user", Some(cookie))
            .await
            .err();
        let err = err.unwrap_or_else(|| panic!("cookie {cookie:?} got a user channel"));
        assert!(err.contains("403"), "{cookie:?}: {err}");
    }
    assert_eq!(redis.numsub("user:mary:room"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sockets_publish_only_where_allowed() {
    let db = Database::with_fixtures();
    let server = db.serve(&[
        "--workers",
        "2",
        "--allowed-channels-anonymous",
        "subscribe-broadcast",
    ]);
    let redis = server.redis.as_ref().unwrap();
    let base = server.base();
    let mut john = Client::new(&base);
    john.login("john", "secret", "/chat/").await;
    let key = john.cookies["sessionid"].clone();
    let mut listener = connect(&base, "/ws/f?subscribe-broadcast", Some(&key))
        .await
        .unwrap();
    subscribed(redis, &["broadcast:f".to_owned()]);
    let mut anon = connect(
        &base,
        "/ws/f?subscribe-broadcast&publish-broadcast&echo",
        None,
    )
    .await
    .unwrap();
    anon.send(Message::text("anonymous spam")).await.unwrap();
    // The server reads a socket's frames in order: once our ping is answered, the spam was
    // handled (and would have been published by then).
    anon.send(Message::Ping("after spam".into())).await.unwrap();
    loop {
        let frame = tokio::time::timeout(WAIT, anon.next())
            .await
            .expect("pong in time");
        match frame.expect("socket open").expect("frame") {
            Message::Pong(p) if &p[..] == b"after spam" => break,
            Message::Text(t) => panic!("anonymous socket got {t}"),
            _ => {}
        }
    }
    // The dropped flag means the message went nowhere: not to Redis, not stored.
    only_marker_arrives(redis, &mut listener, &[], "broadcast:f").await;
    assert_eq!(redis.cli(&["GET", "broadcast:f"]).trim(), "");
}
