//! `chat`: U logged-in users, one socket each on `/ws/chat?subscribe-user`, and M messages
//! each from one user to another (user channels), published through the API or Redis. The
//! sessions are written to Redis the way the web app's login does (the session record of
//! `docs/sessions.md`), so the server identifies each socket by its cookie.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{Shared, connect_many, finish, nonce, receive, warm_up};
use crate::body::{self, Stamp};
use crate::cli::Chat;
use crate::env::Env;
use crate::publish::{self, Audience, Mode, Publisher};
use crate::report::Report;
use crate::tracker::Tracker;

/// The chat facility.
const FACILITY: &str = "chat";
/// A well-formed CSRF token for the session records (never used): 43 characters.
const CSRF: &str = "stresstokenstresstokenstresstokenstresstoke";

fn username(i: usize) -> String {
    format!("stress{i}")
}

fn session_key(i: usize, nonce: u64) -> String {
    // 40 characters of [a-z0-9], as the server checks before looking anything up.
    let s = format!("{:020}{:020}", nonce % 10u64.pow(19), i);
    s.chars()
        .map(|c| (b'a' + (c as u8 - b'0')) as char)
        .collect()
}

/// The recipient of message `i`: never the sender `i % users`.
fn recipient(i: u64, users: usize) -> usize {
    let u = users as u64;
    let from = i % u;
    ((from + 1 + (i / u) % (u - 1).max(1)) % u) as usize
}

/// Run `chat` against `env`.
pub async fn run(a: &Chat, env: &Env) -> Report {
    let c = &a.common;
    let deadline = Instant::now() + Duration::from_secs(c.timeout);
    let mut report = Report {
        scenario: "chat".into(),
        target: env.kind.into(),
        ..Report::default()
    };
    report.params.insert("users".into(), json!(a.users));
    report.params.insert("messages".into(), json!(a.messages));
    report.params.insert("rate".into(), json!(a.rate));
    report.params.insert("publisher".into(), json!(c.publisher));
    if c.publisher == Mode::Ws || a.users < 2 {
        report
            .errors
            .push("chat needs --publisher redis or api, and at least 2 users".into());
        return report;
    }
    let Some(redis) = env.targets.redis else {
        report
            .errors
            .push("chat needs Redis to log users in (--redis-url or --server-bin)".into());
        return report;
    };
    let nonce = nonce();
    if let Err(e) = log_in(redis, a, nonce).await {
        report.errors.push(format!("writing sessions: {e}"));
        return report;
    }

    let tracker = Tracker::new(1);
    let shared = Arc::new(Shared::default());
    let (conns, connect) = connect_many(
        env,
        a.users,
        c.connect_concurrency,
        |_| format!("/ws/{FACILITY}?subscribe-user"),
        |i| format!("Cookie: sessionid={}\r\n", session_key(i, nonce)),
        c.quiet,
        &shared.closes,
    )
    .await;
    report.connect = connect;
    let mut tasks = tokio::task::JoinSet::new();
    for conn in conns.into_iter().flatten() {
        tasks.spawn(receive(conn, tracker.clone(), shared.clone(), nonce));
    }
    let live = (a.users - report.connect.failed) as u64;
    let mut publisher = match Publisher::connect(c.publisher, &env.targets, FACILITY).await {
        Ok(p) => p,
        Err(e) => {
            report.errors.push(format!("publisher: {e}"));
            return report;
        }
    };
    let everyone: Vec<Audience> = (0..a.users).map(|i| Audience::User(username(i))).collect();
    let targets = env.targets.clone();
    let warm_start = Instant::now();
    let warm_deadline = (Instant::now() + Duration::from_secs(30)).min(deadline);
    match warm_up(
        &shared,
        live,
        warm_deadline,
        (&mut publisher, &targets, FACILITY),
        &everyone,
        nonce,
    )
    .await
    {
        Ok(true) => {}
        Ok(false) => report
            .errors
            .push("not every user became live before the deadline".into()),
        Err(e) => report.errors.push(format!("warm-up publish: {e}")),
    }

    report.warmup_seconds = warm_start.elapsed().as_secs_f64();
    report.warmup_rounds = shared
        .warm_publishes
        .load(std::sync::atomic::Ordering::Relaxed);
    let usage = super::Usage::start(env);
    let pb = super::bar(c.quiet, a.messages, "messages");
    let start = Instant::now();
    let first_ns = tracker.now_ns();
    let mut seq = 0;
    while seq < a.messages && Instant::now() < deadline {
        if a.rate > 0.0 {
            let at = start + Duration::from_secs_f64(seq as f64 / a.rate);
            tokio::time::sleep_until(at.into()).await;
        }
        let to = &everyone[recipient(seq, a.users)];
        let b = body::encode(
            Stamp {
                seq,
                sent_ns: tracker.now_ns(),
            },
            a.size,
        );
        if let Err(e) = publisher.publish(&targets, FACILITY, to, &b).await {
            report.errors.push(format!("publish {seq}: {e}"));
            break;
        }
        seq += 1;
        pb.set_position(seq);
    }
    pb.finish_and_clear();
    if let Err(e) = publisher.settle().await {
        report.errors.push(format!("publish: {e}"));
    }
    let drain = (Instant::now() + Duration::from_secs(10)).min(deadline.max(Instant::now()));
    while tracker.delivered() < seq && Instant::now() < drain {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    usage.record(env, &mut report);
    tasks.abort_all();
    finish(
        &mut report,
        &tracker.summary(),
        seq,
        seq,
        first_ns,
        start,
        &shared,
    );
    report
}

/// Write one session record per user into Redis, as the web app's login does.
async fn log_in(
    redis: std::net::SocketAddr,
    a: &Chat,
    nonce: u64,
) -> Result<(), publish::PublishError> {
    let mut conn = publish::redis(redis).await?;
    for i in 0..a.users {
        let record = json!({
            "user_id": i + 1, "username": username(i), "groups": [],
            "is_staff": false, "is_superuser": false, "csrf_token": CSRF, "created": 0,
        })
        .to_string();
        let key = format!("{}{}", a.session_prefix, session_key(i, nonce));
        conn.command(&[b"SET", key.as_bytes(), record.as_bytes(), b"EX", b"3600"])
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_well_formed_and_nobody_messages_themselves() {
        let k = session_key(7, 123_456_789);
        assert_eq!(k.len(), 40);
        assert!(k.bytes().all(|b| b.is_ascii_lowercase()));
        assert_ne!(session_key(1, 5), session_key(2, 5));
        for users in [2usize, 3, 10] {
            for i in 0..100u64 {
                assert_ne!(recipient(i, users), (i % users as u64) as usize);
                assert!(recipient(i, users) < users);
            }
        }
    }
}
