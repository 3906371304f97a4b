//! A real Django site (fixtures/django: Django 4.2, django-websocket-redis, django-redis-sessions,
//! installed into a private virtualenv by scripts/django-venv.sh) and `wsredis serve --mode
//! websocket` in front of the same Redis: users log in through Django, sockets carry Django's
//! cookie, Django's `RedisPublisher` publishes, `fetch_message` reads what sockets sent. Both
//! session engines (django-redis-sessions, the database), tokens, foreign keys and expiry.
//!
//! Skips, saying so, when the virtualenv cannot be built (no python3-venv or no PyPI access).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::RedisServer;
use common::server::Server;
use common::ws::{connect, next_text, silent};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "django-insecure-test-key-7f3a9c2e1b";
/// The ws4redis prefix, given to both sides under its Django name `WS4REDIS_PREFIX`.
const PREFIX: &str = "ws4redis";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The venv's python, or `None` (after saying why) when it cannot be set up here.
fn python() -> Option<PathBuf> {
    let out = Command::new(repo().join("scripts/django-venv.sh")).output();
    match out {
        Ok(o) if o.status.success() => {
            Some(PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        }
        Ok(o) => {
            eprintln!(
                "SKIP: scripts/django-venv.sh failed: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("SKIP: cannot run scripts/django-venv.sh: {e}");
            None
        }
    }
}

/// The Django site of one test: its SQLite file, session engine, and the shared Redis.
struct Site {
    python: PathBuf,
    dir: PathBuf,
    engine: &'static str,
    redis_port: u16,
}

impl Site {
    fn new(python: PathBuf, engine: &'static str, redis: &RedisServer) -> Site {
        let dir = std::env::temp_dir().join(format!(
            "wsredis-django-{}-{engine}-{}",
            std::process::id(),
            redis.port
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let site = Site {
            python,
            dir,
            engine,
            redis_port: redis.port,
        };
        site.manage(&["migrate", "-v0"]);
        site.manage(&["wsfixture", "setup"]);
        site
    }

    fn db(&self) -> PathBuf {
        self.dir.join("db.sqlite3")
    }

    /// `manage.py ARGS` with this site's settings and SECRET_KEY; its stdout.
    fn manage(&self, args: &[&str]) -> String {
        self.manage_with_key(SECRET, args)
    }

    fn manage_with_key(&self, secret: &str, args: &[&str]) -> String {
        let out = Command::new(&self.python)
            .arg(repo().join("fixtures/django/manage.py"))
            .args(args)
            .env("DJANGO_SECRET_KEY", secret)
            .env("DJANGO_DB", self.db())
            .env("DJANGO_SESSION_ENGINE", self.engine)
            .env("DJANGO_REDIS_PORT", self.redis_port.to_string())
            .env("WS4REDIS_PREFIX", PREFIX)
            .env("SESSION_REDIS_PREFIX", "session")
            .output()
            .expect("run manage.py");
        assert!(
            out.status.success(),
            "manage.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Log `user` in through Django; the session key (the `sessionid` cookie).
    fn login(&self, user: &str) -> String {
        self.manage(&["wsfixture", "login", user])
    }

    /// `RedisPublisher(facility=F, <audience>=[<who>]).publish_message(RedisMessage(msg))`.
    fn publish(&self, facility: &str, audience: &str, who: &str, msg: &str) {
        self.manage(&["wsfixture", "publish", "-f", facility, audience, who, msg]);
    }

    /// The `wsredis serve --mode websocket` of this site.
    fn wsredis(&self, redis: &RedisServer, extra: &[&str]) -> Server {
        let backend = if self.engine == "db" {
            "django-db"
        } else {
            "django-redis"
        };
        let db_url = format!("sqlite://{}", self.db().display());
        let redis_url = redis.url();
        let mut args = vec![
            "--mode",
            "websocket",
            "--workers",
            "1",
            "--redis-url",
            &redis_url,
            "--session-backend",
            backend,
            "--django-database-url",
            &db_url,
            "--django-session-redis-prefix",
            "session",
        ];
        args.extend_from_slice(extra);
        Server::start_env(
            &args,
            &[("DJANGO_SECRET_KEY", SECRET), ("WS4REDIS_PREFIX", PREFIX)],
        )
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Wait until `channel` has a subscriber, so a publish is not lost before the socket listens.
async fn subscribed(redis: &RedisServer, channel: &str) {
    assert!(
        common::eventually(Duration::from_secs(5), || redis.numsub(channel) > 0).await,
        "nobody subscribed to {channel}"
    );
}

/// The scenario both session engines must pass.
async fn users_groups_sessions_and_fetch(engine: &'static str) {
    let Some(python) = python() else { return };
    let redis = RedisServer::start();
    let site = Site::new(python, engine, &redis);
    let server = site.wsredis(&redis, &[]);
    let mary = site.login("mary");
    let john = site.login("john");

    let mut m = connect(
        &server.base(),
        "/ws/chat?subscribe-user&subscribe-group&subscribe-session&publish-user&echo",
        Some(&mary),
    )
    .await
    .unwrap();
    let mut j = connect(&server.base(), "/ws/chat?subscribe-user", Some(&john))
        .await
        .unwrap();
    subscribed(&redis, "ws4redis:user:mary:chat").await;
    subscribed(&redis, "ws4redis:user:john:chat").await;

    // RedisPublisher(facility="chat", users=["mary"]): mary's socket only.
    site.publish("chat", "-u", "mary", "hello mary");
    assert_eq!(next_text(&mut m).await.as_deref(), Some("hello mary"));
    assert!(
        silent(&mut j, Duration::from_secs(1)).await,
        "john got mary's message"
    );

    // groups follow ws4redis:memberof (mary is in chatusers, john in none).
    site.publish("chat", "-g", "chatusers", "hello chatusers");
    assert_eq!(next_text(&mut m).await.as_deref(), Some("hello chatusers"));
    assert!(silent(&mut j, Duration::from_secs(1)).await);

    // sessions follow the session key.
    site.publish("chat", "-s", &mary, "hello session");
    assert_eq!(next_text(&mut m).await.as_deref(), Some("hello session"));

    // publish-user from the socket, read back by RedisPublisher.fetch_message.
    m.send(Message::text("from the socket")).await.unwrap();
    assert_eq!(next_text(&mut m).await.as_deref(), Some("from the socket"));
    let fetched = site.manage(&[
        "wsfixture",
        "fetch",
        "-f",
        "chat",
        "--session",
        &mary,
        "--audience",
        "user",
    ]);
    assert_eq!(fetched, "from the socket");

    // No cookie, or a made-up one: anonymous, so user channels are refused.
    assert!(
        connect(&server.base(), "/ws/chat?subscribe-user", None)
            .await
            .is_err()
    );
    let forged = "abcdefghijklmnopqrstuvwxyz012345";
    assert!(
        connect(&server.base(), "/ws/chat?subscribe-user", Some(forged))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn django_redis_sessions_identify_sockets() {
    users_groups_sessions_and_fetch("redis").await;
}

#[tokio::test]
async fn django_database_sessions_identify_sockets() {
    users_groups_sessions_and_fetch("db").await;
}

#[tokio::test]
async fn foreign_key_and_expired_sessions_are_anonymous() {
    let Some(python) = python() else { return };
    let redis = RedisServer::start();
    let site = Site::new(python, "db", &redis);
    let server = site.wsredis(&redis, &[]);

    // Signed with another SECRET_KEY (the session row exists and is current).
    let foreign = site.manage_with_key("another-secret-key", &["wsfixture", "login", "john"]);
    let err = connect(&server.base(), "/ws/chat?subscribe-user", Some(&foreign))
        .await
        .unwrap_err();
    assert!(err.contains("403"), "{err}");

    // Expired: set_expiry(4), then past expire_date. The session is written before `manage`
    // returns, so it has expired 4 s after that; 4 s leave room for a slow Python exit (with
    // 1 s, a loaded CI machine once saw it expire before the first connect).
    let short = site.manage(&["wsfixture", "login", "john", "--expiry", "4"]);
    let written = tokio::time::Instant::now();
    assert!(
        connect(&server.base(), "/ws/chat?subscribe-user", Some(&short))
            .await
            .is_ok()
    );
    tokio::time::sleep_until(written + Duration::from_millis(4100)).await;
    let err = connect(&server.base(), "/ws/chat?subscribe-user", Some(&short))
        .await
        .unwrap_err();
    assert!(err.contains("403"), "{err}");
}

#[tokio::test]
async fn tokens_and_allow_lists() {
    let Some(python) = python() else { return };
    let redis = RedisServer::start();
    let site = Site::new(python, "redis", &redis);
    let server = site.wsredis(
        &redis,
        &[
            "--allowed-channels-anonymous",
            "subscribe-broadcast",
            "--allowed-channels-authenticated",
            "subscribe-broadcast,subscribe-user",
            "--allowed-channels-staff",
            "all",
        ],
    );

    // A token minted by Django (signing.dumps) stands in for the cookie.
    let token = site.manage(&["wsfixture", "token", "mary"]);
    let mut t = connect(
        &server.base(),
        &format!("/ws/chat?subscribe-user&subscribe-group&token={token}"),
        None,
    )
    .await
    .unwrap();
    subscribed(&redis, "ws4redis:user:mary:chat").await;
    // subscribe-group is not allowed for plain users: dropped silently, not refused.
    assert_eq!(redis.numsub("ws4redis:group:chatusers:chat"), 0);
    site.publish("chat", "-u", "mary", "by token");
    assert_eq!(next_text(&mut t).await.as_deref(), Some("by token"));

    // A token signed with another key is anonymous; anonymous personal flags are dropped,
    // so the socket opens with no user channel.
    let foreign = site.manage_with_key("another-secret-key", &["wsfixture", "token", "mary"]);
    let mut anon = connect(
        &server.base(),
        &format!("/ws/chat?subscribe-user&token={foreign}"),
        None,
    )
    .await
    .unwrap();
    site.publish("chat", "-u", "mary", "not for the forger");
    assert!(silent(&mut anon, Duration::from_secs(1)).await);
    assert_eq!(redis.numsub("ws4redis:user:mary:chat"), 1);

    // Staff may do everything.
    let boss = site.login("boss");
    let _b = connect(
        &server.base(),
        "/ws/chat?subscribe-group&subscribe-user",
        Some(&boss),
    )
    .await
    .unwrap();
    subscribed(&redis, "ws4redis:user:boss:chat").await;
}
