//! The session and bus under stress: slow consumers, Redis outages, many sockets on one
//! subscriber connection.

mod common;
mod ws_harness;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;
use wsredis::bus::Bus;
use wsredis::ws::{CloseReason, Identity};

use common::RedisServer;
use ws_harness::*;

fn anon() -> Identity {
    Identity::anonymous()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_cut_off_with_1013_while_others_keep_receiving() {
    let (redis, server) = setup(&["--send-queue", "8", "--expire", "0"]).await;
    let pq = "/ws/slow?subscribe-broadcast";
    let mut fast = server.connect(&redis, pq, &anon()).await;

    // A client with a tiny receive window that does not read.
    let before = server.stats.opened.load(Ordering::Relaxed);
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let (mut slow, _) = tokio_tungstenite::client_async(request(&server.url(pq), &anon()), tcp)
        .await
        .unwrap();
    server.wait_opened(before + 1).await;

    let body = "y".repeat(256 * 1024);
    let mut published = 0;
    let started = Instant::now();
    while server.stats.dropped.load(Ordering::Relaxed) == 0 {
        assert!(started.elapsed() < SOON, "slow consumer never overflowed");
        server
            .bus
            .publish(&["broadcast:slow".to_owned()], body.clone().into(), 0)
            .await
            .unwrap();
        published += 1;
        assert_eq!(next_text(&mut fast).await.len(), body.len());
    }
    eprintln!("slow consumer cut off after {published} messages of 256 KiB");
    // The fast one is unaffected.
    redis.cli(&["PUBLISH", "broadcast:slow", "after"]);
    assert_eq!(next_text(&mut fast).await, "after");
    // Once the slow client reads, it finds the 1013 close behind the data it had missed.
    server
        .expect_close(
            &mut slow,
            1013,
            "send queue overflow",
            CloseReason::Overloaded,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sockets_survive_a_redis_restart_and_get_the_next_message() {
    let (mut redis, server) = setup(&[]).await;
    let mut a = server.anon(&redis, "/ws/r?subscribe-broadcast").await;
    let john = user("john", &["g"], "s");
    let mut b = server.connect(&redis, "/ws/r?subscribe-user", &john).await;

    redis.stop();
    eventually("bus notices", || !server.bus.is_up()).await;
    redis.restart();
    eventually("bus reconnects", || server.bus.is_up()).await;
    // Resubscription follows the reconnect; publish until it lands (at-most-once pub/sub).
    wait_subscribed(&redis, &["broadcast:r".into(), "user:john:r".into()]).await;
    redis.cli(&["PUBLISH", "broadcast:r", "back"]);
    redis.cli(&["PUBLISH", "user:john:r", "back for john"]);
    assert_eq!(next_text(&mut a).await, "back");
    assert_eq!(next_text(&mut b).await, "back for john");
    assert_eq!(server.stats.open(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_while_redis_is_down_closes_1013_with_a_reason() {
    let (mut redis, server) = setup(&[]).await;
    let mut listener = server.anon(&redis, "/ws/d?subscribe-broadcast").await;
    let mut talker = server.anon(&redis, "/ws/d?publish-broadcast").await;
    redis.stop();
    eventually("bus notices", || !server.bus.is_up()).await;
    talker.send(Message::text("lost")).await.unwrap();
    let reason = "redis unavailable, message not published";
    server
        .expect_close(&mut talker, 1013, reason, CloseReason::RedisDown)
        .await;
    // The listener stays and hears the next message after Redis returns.
    redis.restart();
    wait_subscribed(&redis, &["broadcast:d".into()]).await;
    redis.cli(&["PUBLISH", "broadcast:d", "next"]);
    assert_eq!(next_text(&mut listener).await, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_starts_while_redis_is_down() {
    let mut redis = RedisServer::start();
    redis.stop();
    let mut bad = config(&redis, &[]);
    bad.redis_url = "http://not-redis".into();
    assert!(matches!(
        Bus::connect(&bad).await,
        Err(wsredis::bus::BusError::Config(_))
    ));
    let started = Instant::now();
    let bus = Bus::connect(&config(&redis, &[]))
        .await
        .expect("no fail-fast");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!bus.is_up());
    let mut sub = bus.subscribe(&["broadcast:late".to_owned()]);
    assert!(matches!(
        bus.publish(&["broadcast:late".to_owned()], "x".into(), 0)
            .await,
        Err(wsredis::bus::BusError::Unavailable)
    ));
    redis.restart();
    eventually("connected", || bus.is_up()).await;
    within(SOON, sub.ready()).await;
    redis.cli(&["PUBLISH", "broadcast:late", "hello"]);
    let d = within(SOON, sub.recv()).await.unwrap();
    assert_eq!(
        (&*d.channel, d.payload.as_bytes()),
        ("broadcast:late", &b"hello"[..])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_sockets_share_one_subscriber_connection() {
    let (redis, server) = setup(&["--expire", "0"]).await;
    let n = 1000;
    let started = Instant::now();
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        // Half on a shared channel, half also on a channel of their own.
        let pq = if i % 2 == 0 {
            "/ws/many?subscribe-broadcast".to_owned()
        } else {
            format!("/ws/many?subscribe-broadcast&subscribe-session&x={i}")
        };
        let who = user(&format!("u{i}"), &[], &format!("s{i}"));
        let (c, _) = tokio_tungstenite::connect_async(request(&server.url(&pq), &who))
            .await
            .unwrap();
        clients.push(c);
    }
    server.wait_opened(n as u64).await;
    wait_subscribed(
        &redis,
        &["broadcast:many".into(), "session:s999:many".into()],
    )
    .await;
    eprintln!("{n} sockets connected in {:?}", started.elapsed());

    // This test's redis-cli is the third client.
    let list = redis.cli(&["CLIENT", "LIST"]);
    assert_eq!(list.lines().count(), 3, "{list}");
    let numpat: usize = redis
        .cli(&["PUBSUB", "NUMSUB", "broadcast:many"])
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(numpat, 1, "one Redis subscription for {n} sockets");
    let channels = redis.cli(&["PUBSUB", "CHANNELS", "*"]).lines().count();
    assert_eq!(channels, 1 + n / 2);

    let sent = Instant::now();
    redis.cli(&["PUBLISH", "broadcast:many", "to all"]);
    eventually("all written", || {
        server.stats.delivered.load(Ordering::Relaxed) == n as u64
    })
    .await;
    eprintln!("one message written to {n} sockets: {:?}", sent.elapsed());
    for c in &mut clients {
        assert_eq!(next_text(c).await, "to all");
    }
    eprintln!(
        "fan-out of one message to {n} sockets: {:?}",
        sent.elapsed()
    );

    // Dropping every socket releases every channel.
    drop(clients);
    eventually("all closed", || server.stats.open() == 0).await;
    eventually("unsubscribed", || {
        redis.cli(&["PUBSUB", "CHANNELS", "*"]).trim().is_empty()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_churn_never_loses_the_redis_subscription() {
    let redis = RedisServer::start();
    let bus = Bus::connect(&config(&redis, &[])).await.unwrap();
    let ch = vec!["broadcast:churn".to_owned()];
    // The last one leaves while the next one joins, many times, across tasks.
    let mut keep = bus.subscribe(&ch);
    for round in 0..300 {
        let next = {
            let bus = bus.clone();
            let ch = ch.clone();
            tokio::spawn(async move { bus.subscribe(&ch) })
        };
        drop(keep);
        keep = next.await.unwrap();
        if round % 50 == 0 {
            tokio::task::yield_now().await;
        }
    }
    within(SOON, keep.ready()).await;
    assert_eq!(numsub(&redis, "broadcast:churn"), 1);
    redis.cli(&["PUBLISH", "broadcast:churn", "still subscribed"]);
    let d = within(SOON, keep.recv()).await.unwrap();
    assert_eq!(d.payload.as_bytes(), b"still subscribed");
    drop(keep);
    eventually("unsubscribed", || numsub(&redis, "broadcast:churn") == 0).await;
    assert_eq!(bus.channel_count(), 0);
}
