//! Sessions in a real, private redis-server: the stored format the websocket pool relies on,
//! TTL renewal, rotation at login, forged cookies that never reach Redis, and Redis outages
//! reported as "unavailable".

mod common;

use std::time::{Duration, Instant};

use common::RedisServer;
use fred::prelude::{Builder, ClientLike as _, Config, ReconnectPolicy};
use wsredis::auth::session::{self, SessionStore};
use wsredis::auth::{self, SessionError, csrf};
use wsredis::store::{Store, User, fixtures};

const PREFIX: &str = "wsredis:session:";
const TTL: u64 = 1_209_600;

async fn client(redis: &RedisServer) -> fred::prelude::Client {
    let client = Builder::from_config(Config::from_url(&redis.url()).unwrap())
        .set_policy(ReconnectPolicy::new_constant(0, 100))
        .build()
        .unwrap();
    client.init().await.unwrap();
    client
}

fn john() -> User {
    User {
        id: 2,
        username: "john".into(),
        first_name: "John".into(),
        last_name: "Doe".into(),
        email: String::new(),
        is_active: true,
        is_staff: false,
        is_superuser: false,
        last_login: None,
        date_joined: 0,
    }
}

fn ttl_of(redis: &RedisServer, key: &str) -> i64 {
    redis
        .cli(&["TTL", &format!("{PREFIX}{key}")])
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_session_is_stored_in_the_agreed_format_and_loads_back() {
    let redis = RedisServer::start();
    let sessions = SessionStore::new(client(&redis).await, PREFIX, TTL);
    let (key, record) = sessions
        .create(&john(), vec!["chatusers".into()])
        .await
        .unwrap();
    assert!(session::valid_key(&key));
    assert_eq!((record.user_id, record.username.as_str()), (2, "john"));
    assert!(csrf::valid_token(&record.csrf_token));

    // What another process (the websocket pool) reads from Redis, without our types.
    let raw = redis.cli(&["GET", &format!("{PREFIX}{key}")]);
    let json: serde_json::Value = serde_json::from_str(raw.trim()).unwrap();
    let mut fields: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "created",
            "csrf_token",
            "groups",
            "is_staff",
            "is_superuser",
            "user_id",
            "username"
        ]
    );
    assert_eq!(json["groups"], serde_json::json!(["chatusers"]));
    assert_eq!(json["csrf_token"], record.csrf_token.as_str());
    assert!(json["created"].as_i64().unwrap() > 1_700_000_000);
    assert_eq!(session::parse(raw.trim().as_bytes()), Some(record.clone()));
    let ttl = ttl_of(&redis, &key);
    assert!((TTL as i64 - 5..=TTL as i64).contains(&ttl), "TTL {ttl}");

    assert_eq!(sessions.load(&key).await.unwrap(), Some(record));
    assert_eq!(sessions.load(&session::new_key()).await.unwrap(), None);
}

#[tokio::test]
async fn loading_renews_the_ttl_and_delete_ends_the_session() {
    let redis = RedisServer::start();
    let sessions = SessionStore::new(client(&redis).await, PREFIX, TTL);
    let (key, _) = sessions.create(&john(), vec![]).await.unwrap();
    redis.cli(&["EXPIRE", &format!("{PREFIX}{key}"), "100"]);
    assert!(ttl_of(&redis, &key) <= 100);
    assert!(sessions.load(&key).await.unwrap().is_some());
    assert!(ttl_of(&redis, &key) > 100_000, "load renews the TTL");

    redis.cli(&["EXPIRE", &format!("{PREFIX}{key}"), "100"]);
    assert!(sessions.touch(&key).await.unwrap());
    assert!(ttl_of(&redis, &key) > 100_000, "touch renews the TTL");

    sessions.delete(&key).await.unwrap();
    assert_eq!(sessions.load(&key).await.unwrap(), None);
    assert!(!sessions.touch(&key).await.unwrap());
    assert_eq!(ttl_of(&redis, &key), -2, "the key is gone");
    sessions.delete(&key).await.unwrap(); // deleting twice is fine
}

#[tokio::test]
async fn a_session_expires_after_its_ttl() {
    let redis = RedisServer::start();
    let sessions = SessionStore::new(client(&redis).await, PREFIX, 1);
    let (key, _) = sessions.create(&john(), vec![]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while redis.cli(&["EXISTS", &format!("{PREFIX}{key}")]).trim() == "1" {
        assert!(Instant::now() < deadline, "session outlived its 1 s TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sessions.load(&key).await.unwrap(), None);
}

#[tokio::test]
async fn forged_cookies_never_reach_redis() {
    let redis = RedisServer::start();
    let sessions = SessionStore::new(client(&redis).await, PREFIX, TTL);
    redis.cli(&["CONFIG", "RESETSTAT"]);
    let real = session::new_key();
    for forged in [
        "",
        "*",
        "../../etc/passwd",
        &real[..39],
        &format!("{real}0"),
        &real.to_uppercase(),
        &format!("{}\r\nFLUSHALL", &real[..30]),
        "ｓｅｓｓｉｏｎ",
    ] {
        assert_eq!(sessions.load(forged).await.unwrap(), None, "{forged:?}");
        assert!(!sessions.touch(forged).await.unwrap());
        sessions.delete(forged).await.unwrap();
    }
    let stats = redis.cli(&["INFO", "commandstats"]);
    for cmd in ["cmdstat_get:", "cmdstat_expire:", "cmdstat_del:"] {
        assert!(!stats.contains(cmd), "{cmd} was sent:\n{stats}");
    }
    // The check above can see a lookup: a well-formed key does reach Redis.
    assert_eq!(sessions.load(&real).await.unwrap(), None);
    assert!(
        redis
            .cli(&["INFO", "commandstats"])
            .contains("cmdstat_get:")
    );
}

#[tokio::test]
async fn a_malformed_stored_record_is_no_session() {
    let redis = RedisServer::start();
    let sessions = SessionStore::new(client(&redis).await, PREFIX, TTL);
    let key = session::new_key();
    for bad in [
        "not json",
        r#"{"user_id":1,"username":"john"}"#,
        r#"{"user_id":1,"username":"john","groups":[],"is_staff":false,"is_superuser":false,"csrf_token":"short","created":1}"#,
    ] {
        redis.cli(&["SET", &format!("{PREFIX}{key}"), bad]);
        assert_eq!(sessions.load(&key).await.unwrap(), None, "{bad}");
    }
    redis.cli(&["DEL", &format!("{PREFIX}{key}")]);
    redis.cli(&["HSET", &format!("{PREFIX}{key}"), "a", "b"]);
    let err = sessions.load(&key).await.unwrap_err();
    assert!(
        matches!(err, SessionError::Redis(_)),
        "wrong type is a Redis error: {err:?}"
    );
}

#[tokio::test]
async fn login_rotates_the_session_and_logout_deletes_it() {
    let redis = RedisServer::start();
    let sessions = SessionStore::new(client(&redis).await, PREFIX, TTL);
    let dir = std::env::temp_dir().join(format!("wsredis-test-login-{}", std::process::id()));
    let store = Store::connect(&format!("sqlite://{}/db.sqlite3", dir.display()))
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fixtures/data.json"
    ))
    .unwrap();
    fixtures::loaddata(&store, &fixture).await.unwrap();

    // An anonymous (or attacker-planted) session key before login.
    let (planted, _) = sessions.create(&john(), vec![]).await.unwrap();
    let refused = auth::login(&store, &sessions, Some(&planted), "john", "wrong")
        .await
        .unwrap();
    assert!(refused.is_none());
    assert!(
        sessions.load(&planted).await.unwrap().is_some(),
        "a failed login changes nothing"
    );

    let (key, record) = auth::login(&store, &sessions, Some(&planted), "john", "secret")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(key, planted);
    assert_eq!(
        sessions.load(&planted).await.unwrap(),
        None,
        "the old key is dead"
    );
    assert_eq!(record.groups, ["chatusers"]);
    assert_eq!(record.username, "john");
    assert_eq!(sessions.load(&key).await.unwrap(), Some(record.clone()));

    let (again, second) = auth::login(&store, &sessions, Some(&key), "john", "secret")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(again, key);
    assert_ne!(
        second.csrf_token, record.csrf_token,
        "each login has a new CSRF token"
    );

    sessions.delete(&again).await.unwrap(); // logout
    assert_eq!(sessions.load(&again).await.unwrap(), None);
    store.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn redis_down_is_unavailable_and_recovers() {
    let mut redis = RedisServer::start();
    let sessions = SessionStore::new(client(&redis).await, PREFIX, TTL);
    let (key, _) = sessions.create(&john(), vec![]).await.unwrap();

    redis.stop();
    let started = Instant::now();
    let err = sessions.load(&key).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < session::COMMAND_TIMEOUT + Duration::from_secs(2));
    let err = sessions.create(&john(), vec![]).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");

    // A restarted Redis is empty: the old session is gone, new ones work.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (fresh, _) = loop {
        match sessions.create(&john(), vec![]).await {
            Ok(created) => break created,
            Err(e) if Instant::now() < deadline => assert!(e.is_unavailable(), "{e:?}"),
            Err(e) => panic!("no recovery after restart: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(sessions.load(&fresh).await.unwrap().is_some());
    assert_eq!(sessions.load(&key).await.unwrap(), None);
}
