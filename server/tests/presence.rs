//! Presence on the real binary: `GET /api/presence/{facility}` after joins and leaves over
//! several workers, a user with several sockets, anonymous counts, a worker killed with -9 (its
//! entries expire within `--presence-ttl`), a second host sharing Redis, who may read the API,
//! and that no session key ever shows.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::RedisServer;
use common::server::{Server, request_with};
use common::web::{Client, Database};
use common::ws::{Ws, connect};
use serde_json::Value;

const TOKEN: &str = "presence-test-token-0123456789";
/// A short TTL so a killed worker's entries go quickly; refreshed every second.
const FAST: [&str; 4] = ["--presence-ttl", "3", "--presence-refresh", "1"];
/// Generous for a loaded 2-core machine; every wait ends as soon as its condition holds.
const DEADLINE: Duration = Duration::from_secs(30);

fn serve(db: &Database, host: &str, redis: Option<&RedisServer>, extra: &[&str]) -> Server {
    let url = redis.map(RedisServer::url);
    let mut args = vec!["--database-url", &db.url, "--workers", "2"];
    if let Some(url) = &url {
        args.extend(["--redis-url", url.as_str()]);
    }
    args.extend_from_slice(extra);
    Server::start_at(host, &args, &[("WSREDIS_API_TOKEN", TOKEN)])
}

/// Log in through the form; returns the session cookie's value.
async fn login(base: &str, user: &str) -> String {
    let mut c = Client::new(base);
    c.login(user, "secret", "/chat/").await;
    c.cookies.get("sessionid").cloned().expect("logged in")
}

/// `GET /api/presence/chat` with the token, a session cookie, or nothing: (status, body).
async fn api(base: &str, token: Option<&str>, session: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let cookie = session.map(|s| format!("sessionid={s}"));
    let mut headers = Vec::new();
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    if let Some(c) = &cookie {
        headers.push(("cookie", c.as_str()));
    }
    let r = request_with(base, "GET", "/api/presence/chat", &headers, Bytes::new())
        .await
        .unwrap();
    (r.status, r.body)
}

/// The channels of the token's view of facility `chat`, or `None` while the worker is
/// reconnecting to Redis (503, saying so).
async fn channels_unless_reconnecting(base: &str) -> Option<Value> {
    let (status, body) = api(base, Some(TOKEN), None).await;
    if status == 503 {
        assert!(
            body.contains("redis unavailable: nothing could be read"),
            "{body}"
        );
        return None;
    }
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    Some(v["channels"].clone())
}

fn users(ch: &Value, label: &str) -> BTreeSet<String> {
    ch[label]["users"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn anonymous(ch: &Value, label: &str) -> u64 {
    ch[label]["anonymous"].as_u64().unwrap_or(0)
}

/// Poll the API until `cond` holds on the channels (or the deadline passes); returns the last
/// channels seen (null if none) and how long it took. A worker reconnecting to Redis answers
/// 503 meanwhile (checked in [`channels_unless_reconnecting`]).
async fn until(base: &str, cond: impl Fn(&Value) -> bool) -> (Value, Duration) {
    let start = Instant::now();
    let mut last = Value::Null;
    loop {
        if let Some(ch) = channels_unless_reconnecting(base).await {
            last = ch;
        }
        if cond(&last) || start.elapsed() > DEADLINE {
            return (last, start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

async fn open(base: &str, flags: &str, session: Option<&str>) -> Ws {
    connect(base, &format!("/ws/chat?{flags}"), session)
        .await
        .unwrap()
}

async fn close(mut ws: Ws) {
    let _ = ws.close(None).await;
}

/// Pids of the workers holding entries on the broadcast channel (from the entry names,
/// `host:pid:random/connection`).
fn holders(redis: &RedisServer) -> BTreeSet<i32> {
    redis
        .cli(&["HKEYS", "presence:chat broadcast"])
        .lines()
        .filter_map(|f| f.split(':').nth(1)?.parse().ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_over_workers_with_several_sockets_and_anonymous() {
    let db = Database::with_fixtures();
    let server = serve(&db, "127.0.0.1", None, &FAST);
    let base = server.base();
    let redis = server.redis.as_ref().unwrap();
    let (john, mary) = (login(&base, "john").await, login(&base, "mary").await);

    let both = "subscribe-broadcast&subscribe-user&subscribe-group";
    let mut johns = Vec::new();
    for _ in 0..3 {
        johns.push(open(&base, both, Some(&john)).await);
    }
    let marys = open(&base, both, Some(&mary)).await;
    let mut anons = vec![
        open(&base, "subscribe-broadcast", None).await,
        open(&base, "subscribe-broadcast", None).await,
    ];
    // A socket's channels are joined one script each: wait for the whole picture.
    let everyone = |ch: &Value| {
        users(ch, "broadcast") == set(&["john", "mary"])
            && anonymous(ch, "broadcast") == 2
            && users(ch, "user:john") == set(&["john"])
            && users(ch, "user:mary") == set(&["mary"])
            && users(ch, "group:chatusers") == set(&["john", "mary"])
    };
    let (ch, took) = until(&base, everyone).await;
    println!("6 sockets seen in {took:?}: {ch}");
    assert!(everyone(&ch), "{ch}");
    // The accept balancing spreads sockets, but a loaded machine may not: more tabs of john
    // until both workers hold some.
    while holders(redis).len() < 2 && johns.len() < 40 {
        johns.push(open(&base, both, Some(&john)).await);
        common::eventually(Duration::from_secs(1), || holders(redis).len() == 2).await;
    }
    let pids = holders(redis);
    println!(
        "entries held by workers {pids:?}, john has {} tabs",
        johns.len()
    );
    assert_eq!(pids.len(), 2, "the sockets are spread over both workers");

    // All of john's tabs but one close: he is still there.
    while johns.len() > 1 {
        close(johns.pop().unwrap()).await;
    }
    close(anons.pop().unwrap()).await;
    let (ch, _) = until(&base, |ch| anonymous(ch, "broadcast") == 1).await;
    assert_eq!(anonymous(&ch, "broadcast"), 1, "{ch}");
    let one_john = || {
        redis
            .cli(&["HGET", "presence-users:chat broadcast", "john"])
            .trim()
            == "1"
    };
    assert!(
        common::eventually(DEADLINE, one_john).await,
        "one john connection left"
    );
    assert_eq!(users(&ch, "broadcast"), set(&["john", "mary"]), "{ch}");
    assert_eq!(users(&ch, "user:john"), set(&["john"]), "{ch}");

    // The last one closes: john leaves every channel; nobody left on his user channel.
    close(johns.pop().unwrap()).await;
    let (ch, _) = until(&base, |ch| {
        users(ch, "broadcast") == set(&["mary"]) && ch.get("user:john").is_none()
    })
    .await;
    assert_eq!(users(&ch, "broadcast"), set(&["mary"]), "{ch}");
    assert_eq!(users(&ch, "group:chatusers"), set(&["mary"]), "{ch}");
    assert!(ch.get("user:john").is_none(), "{ch}");

    close(marys).await;
    close(anons.pop().unwrap()).await;
    let (ch, _) = until(&base, |ch| ch.as_object().is_some_and(|m| m.is_empty())).await;
    assert_eq!(ch, serde_json::json!({}), "nobody is left");
    let stats = redis.cli(&["INFO", "commandstats"]);
    for line in stats.lines().filter(|l| l.contains("evalsha")) {
        println!("redis cost of presence: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_entries_disappear_within_the_ttl() {
    let db = Database::with_fixtures();
    let server = serve(&db, "127.0.0.1", None, &FAST);
    let base = server.base();
    let redis = server.redis.as_ref().unwrap();
    let john = login(&base, "john").await;
    // Enough sockets that both workers hold some: john's and anonymous ones.
    let mut sockets = Vec::new();
    for i in 0..8 {
        let who = (i % 2 == 0).then_some(john.as_str());
        sockets.push(open(&base, "subscribe-broadcast", who).await);
    }
    // Entry name → (worker pid, user).
    let entries = || -> Vec<(i32, String)> {
        let flat = redis.cli(&["HGETALL", "presence:chat broadcast"]);
        let lines: Vec<&str> = flat.lines().collect();
        lines
            .chunks_exact(2)
            .filter_map(|p| Some((p[0].split(':').nth(1)?.parse().ok()?, p[1].to_owned())))
            .collect()
    };
    assert!(
        common::eventually(DEADLINE, || holders(redis).len() == 2).await,
        "both workers hold entries"
    );
    let anonymous_on = |pid: i32| {
        entries()
            .iter()
            .filter(|(p, u)| *p == pid && u.is_empty())
            .count()
    };
    let victim = *holders(redis)
        .iter()
        .max_by_key(|pid| anonymous_on(**pid))
        .unwrap();
    let survivors_anonymous = 4 - anonymous_on(victim) as u64;
    println!(
        "victim {victim} holds {} anonymous entries",
        anonymous_on(victim)
    );

    // A watcher (envelope, mary) on the surviving worker: reconnect until it lands there.
    let mary = login(&base, "mary").await;
    let mut watch = None;
    for _ in 0..20 {
        let mut ws = open_envelope(&base, "subscribe-broadcast", Some(&mary)).await;
        next_of(&mut ws, &["presence"]).await.expect("a snapshot");
        let on = entries()
            .iter()
            .filter(|(_, u)| u == "mary")
            .map(|(p, _)| *p)
            .collect::<Vec<_>>();
        if on == [victim] {
            close(ws).await;
            continue;
        }
        if on.len() == 1 {
            watch = Some(ws);
            break;
        }
    }
    let mut watch = watch.expect("a watcher on the surviving worker");

    let count = |pid: i32| entries().iter().filter(|(p, _)| *p == pid).count();
    let before = count(victim);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = Instant::now();
    // The survivor's refresher (or any read) sweeps the dead entries.
    assert!(
        common::eventually(DEADLINE, || count(victim) == 0).await,
        "the killed worker's {before} entries are still there"
    );
    println!(
        "{before} entries of killed worker {victim} gone after {:?} (TTL 3 s, refresh 1 s)",
        killed.elapsed()
    );
    // The watcher hears the dead anonymous sockets leave, down to the survivors' count.
    let mut last = None;
    while killed.elapsed() < DEADLINE {
        match next_of(&mut watch, &["leave"]).await {
            Some(ev) if ev["user"].is_null() => {
                last = ev["anonymous"].as_u64();
                if last == Some(survivors_anonymous) {
                    break;
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        last,
        Some(survivors_anonymous),
        "leave events of the dead sockets"
    );
    let (ch, _) = until(&base, |ch| {
        anonymous(ch, "broadcast") == survivors_anonymous
    })
    .await;
    assert_eq!(anonymous(&ch, "broadcast"), survivors_anonymous, "{ch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_host_is_seen_and_a_graceful_stop_leaves_at_once() {
    let db = Database::with_fixtures();
    let redis = RedisServer::start();
    // A TTL far longer than the wait below: what disappears was removed, not expired.
    let slow = ["--presence-ttl", "300", "--presence-refresh", "100"];
    let a = serve(&db, "127.0.0.1", Some(&redis), &slow);
    let mut b = serve(&db, "127.0.0.2", Some(&redis), &slow);
    let (john, mary) = (
        login(&a.base(), "john").await,
        login(&b.base(), "mary").await,
    );
    let _on_a = open(&a.base(), "subscribe-broadcast", Some(&john)).await;
    let _on_b = open(&b.base(), "subscribe-broadcast", Some(&mary)).await;
    let (ch, _) = until(&a.base(), |ch| {
        users(ch, "broadcast") == set(&["john", "mary"])
    })
    .await;
    assert_eq!(users(&ch, "broadcast"), set(&["john", "mary"]), "{ch}");
    let (ch, _) = until(&b.base(), |ch| {
        users(ch, "broadcast") == set(&["john", "mary"])
    })
    .await;
    assert_eq!(
        users(&ch, "broadcast"),
        set(&["john", "mary"]),
        "host B agrees: {ch}"
    );

    b.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(b.wait_exit(DEADLINE).is_some(), "host B stops");
    let (ch, took) = until(&a.base(), |ch| users(ch, "broadcast") == set(&["john"])).await;
    println!("host B's entries gone {took:?} after its stop (TTL 300 s)");
    assert_eq!(users(&ch, "broadcast"), set(&["john"]), "{ch}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_may_read_presence_and_no_session_key_shows() {
    let db = Database::with_fixtures();
    let server = serve(&db, "127.0.0.1", None, &FAST);
    let base = server.base();
    let (john, mary) = (login(&base, "john").await, login(&base, "mary").await);
    let all = "subscribe-broadcast&subscribe-user&subscribe-group&subscribe-session";
    let _j = open(&base, all, Some(&john)).await;
    let _m = open(&base, all, Some(&mary)).await;
    // A socket joins its channels one script each: wait for the last of them.
    let (ch, _) = until(&base, |ch| {
        ch["session"]["connections"] == 2
            && users(ch, "group:chatusers").len() == 2
            && users(ch, "user:mary") == set(&["mary"])
            && users(ch, "user:john") == set(&["john"])
    })
    .await;

    // The token sees every channel; session channels as a count only.
    assert_eq!(ch["session"], serde_json::json!({"connections": 2}), "{ch}");
    assert_eq!(users(&ch, "user:mary"), set(&["mary"]));

    // John's session sees what he could subscribe to himself: not mary's channel, no sessions.
    let (status, body) = api(&base, None, Some(&john)).await;
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let labels: BTreeSet<&str> = v["channels"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        labels,
        ["broadcast", "group:chatusers", "user:john"].into(),
        "{body}"
    );

    // Anonymous: 403. A wrong token: 401, even with a valid session. Unknown facility: 404.
    assert_eq!(api(&base, None, None).await.0, 403);
    assert_eq!(
        api(&base, Some("wrong-token-wrong-token"), Some(&john))
            .await
            .0,
        401
    );
    let off = request_with(
        &base,
        "GET",
        "/api/presence/bad%20facility",
        &[("authorization", &format!("Bearer {TOKEN}"))],
        Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!(off.status, 400, "{}", off.body);

    // No session key anywhere: API answers, Redis keys and values of presence.
    let redis = server.redis.as_ref().unwrap();
    let mut seen = api(&base, Some(TOKEN), None).await.1;
    seen += &api(&base, None, Some(&john)).await.1;
    for key in redis.cli(&["KEYS", "presence*"]).lines() {
        seen += key;
        seen += &redis.cli(&["HGETALL", key]);
    }
    for key in [&john, &mary] {
        assert!(!seen.contains(key.as_str()), "a session key leaked: {seen}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_can_be_limited_to_some_facilities() {
    let db = Database::with_fixtures();
    let server = serve(&db, "127.0.0.1", None, &["--presence", "lobby"]);
    let base = server.base();
    let john = login(&base, "john").await;
    let _ws = open(&base, "subscribe-broadcast", Some(&john)).await;
    let (status, _) = api(&base, Some(TOKEN), None).await;
    assert_eq!(status, 404, "facility chat keeps no presence");
    let redis = server.redis.as_ref().unwrap();
    assert_eq!(
        redis.cli(&["KEYS", "presence*"]).trim(),
        "",
        "nothing written"
    );
}

/// Open `/ws/chat?FLAGS` offering `wsredis.v1`, with a session cookie when given.
async fn open_envelope(base: &str, flags: &str, session: Option<&str>) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{base}/ws/chat?{flags}")
        .into_client_request()
        .unwrap();
    let h = req.headers_mut();
    h.insert("sec-websocket-protocol", "wsredis.v1".parse().unwrap());
    if let Some(s) = session {
        h.insert("cookie", format!("sessionid={s}").parse().unwrap());
    }
    let (ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("wsredis.v1")
    );
    ws
}

/// The next envelope frame whose type is one of `types` (others, e.g. replays, skipped).
async fn next_of(ws: &mut Ws, types: &[&str]) -> Option<Value> {
    loop {
        let text = common::ws::next_text(ws).await?;
        let v: Value = serde_json::from_str(&text).unwrap();
        if types.iter().any(|t| v["type"] == *t) {
            return Some(v);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_sockets_get_a_snapshot_then_coalesced_joins_and_leaves() {
    let db = Database::with_fixtures();
    let server = serve(&db, "127.0.0.1", None, &FAST);
    let base = server.base();
    let (john, mary) = (login(&base, "john").await, login(&base, "mary").await);
    let plain = open(&base, "subscribe-broadcast", Some(&mary)).await;
    // Wait until mary's plain socket is in presence, so john's snapshot holds her.
    until(&base, |ch| users(ch, "broadcast") == set(&["mary"])).await;

    let mut watch = open_envelope(&base, "subscribe-broadcast&subscribe-user", Some(&john)).await;
    let mut snapshots = Vec::new();
    for _ in 0..2 {
        snapshots.push(
            next_of(&mut watch, &["presence"])
                .await
                .expect("a snapshot"),
        );
    }
    snapshots.sort_by_key(|v| v["ch"].as_str().unwrap_or_default().to_owned());
    assert_eq!(
        snapshots,
        [
            serde_json::json!({"type": "presence", "ch": "broadcast", "users": ["john", "mary"], "anonymous": 0}),
            serde_json::json!({"type": "presence", "ch": "user:john", "users": ["john"], "anonymous": 0}),
        ]
    );
    // A john join on broadcast may race the snapshot (documented); skip past it.
    let presence_events = ["join", "leave"];

    // Mary opens two more tabs: one join at most (she is already there: none at all).
    let tab1 = open(&base, "subscribe-broadcast", Some(&mary)).await;
    let tab2 = open(&base, "subscribe-broadcast", Some(&mary)).await;
    // An anonymous socket: a join with user null and the anonymous count.
    let anon = open(&base, "subscribe-broadcast", None).await;
    let ev = loop {
        let ev = next_of(&mut watch, &presence_events)
            .await
            .expect("an event");
        if ev["user"] != "john" {
            break ev;
        }
    };
    assert_eq!(
        ev,
        serde_json::json!({"type": "join", "ch": "broadcast", "user": null, "anonymous": 1}),
        "mary's extra tabs are no news; the anonymous socket is"
    );
    close(anon).await;
    let ev = next_of(&mut watch, &presence_events)
        .await
        .expect("an event");
    assert_eq!(
        ev,
        serde_json::json!({"type": "leave", "ch": "broadcast", "user": null, "anonymous": 0})
    );
    // Mary closes all three: one leave, after the last.
    close(tab1).await;
    close(tab2).await;
    close(plain).await;
    let ev = next_of(&mut watch, &presence_events)
        .await
        .expect("a leave");
    assert_eq!(
        ev,
        serde_json::json!({"type": "leave", "ch": "broadcast", "user": "mary"})
    );
    // Plain ws4redis sockets never see presence: a fresh one stays silent through a join.
    let mut plain = open(&base, "subscribe-broadcast", Some(&john)).await;
    let _other = open(&base, "subscribe-broadcast", Some(&mary)).await;
    let ev = next_of(&mut watch, &presence_events)
        .await
        .expect("mary's join");
    assert_eq!(ev["user"], "mary");
    assert!(common::ws::silent(&mut plain, Duration::from_millis(500)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_comes_back_after_redis_restarts_empty_and_is_in_the_metrics() {
    let db = Database::with_fixtures();
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let mut args = FAST.to_vec();
    args.extend(["--metrics-bind", metrics.as_str()]);
    let mut server = serve(&db, "127.0.0.1", None, &args);
    let base = server.base();
    let john = login(&base, "john").await;
    let _john = open(&base, "subscribe-broadcast&subscribe-user", Some(&john)).await;
    let _anons = [
        open(&base, "subscribe-broadcast", None).await,
        open(&base, "subscribe-broadcast", None).await,
    ];
    let whole = |ch: &Value| {
        users(ch, "broadcast") == set(&["john"])
            && anonymous(ch, "broadcast") == 2
            && users(ch, "user:john") == set(&["john"])
    };
    let (ch, _) = until(&base, whole).await;
    assert!(whole(&ch), "{ch}");
    // 2 entries for john's socket (broadcast, user:john), 1 per anonymous socket.
    let series = "wsredis_presence_entries{pool=\"all\"}";
    let start = Instant::now();
    let mut entries = None;
    while start.elapsed() < DEADLINE {
        entries = common::server::sample(&common::server::scrape(&metrics).await, series);
        if entries == Some(4.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(entries, Some(4.0), "{series}");

    // Redis restarts empty: every worker rewrites its entries at its next refresh. Until a
    // worker's command connection is back, the API says Redis is unavailable.
    server.redis.as_mut().unwrap().restart();
    let restarted = Instant::now();
    let (ch, _) = until(&base, whole).await;
    assert!(whole(&ch), "presence is whole again: {ch}");
    let text = common::server::scrape(&metrics).await;
    println!(
        "presence whole again {:?} after the Redis restart (refresh 1 s); presence errors: {:?}",
        restarted.elapsed(),
        common::server::sample(&text, "wsredis_presence_errors_total{pool=\"all\"}")
    );
}
