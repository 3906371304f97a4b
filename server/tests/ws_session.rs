//! The websocket session against a real redis-server over loopback TCP: ws4redis wire
//! behaviour (channels, replay, echo, heartbeat, text/binary) and our limits (sizes, slow
//! consumers, Redis outages, one subscriber connection per worker).

mod common;
mod ws_harness;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use wsredis::ws::{CloseReason, Identity};

use common::RedisServer;
use ws_harness::*;

fn anon() -> Identity {
    Identity::anonymous()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_publish_reaches_broadcast_subscribers() {
    let (redis, server) = setup(&[]).await;
    let mut a = server.anon(&redis, "/ws/foo?subscribe-broadcast").await;
    let mut b = server.anon(&redis, "/ws/foo?Subscribe-Broadcast=0").await;
    assert_eq!(
        redis.cli(&["PUBLISH", "broadcast:foo", "hello"]).trim(),
        "1"
    );
    assert_eq!(next_text(&mut a).await, "hello");
    assert_eq!(next_text(&mut b).await, "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_channel_kind_with_prefix() {
    let (redis, server) = setup(&["--redis-prefix", "demo"]).await;
    let john = user("john", &["g1", "g2"], "s1");
    let mut sub = server
        .connect(
            &redis,
            "/ws/f?subscribe-user&subscribe-group&subscribe-session&echo",
            &john,
        )
        .await;
    for ch in [
        "demo:user:john:f",
        "demo:group:g1:f",
        "demo:group:g2:f",
        "demo:session:s1:f",
    ] {
        redis.cli(&["PUBLISH", ch, ch]);
        assert_eq!(next_text(&mut sub).await, ch);
    }
    // Another user's channels are not ours.
    redis.cli(&["PUBLISH", "demo:user:jane:f", "not for john"]);
    redis.cli(&["PUBLISH", "demo:broadcast:f", "not subscribed"]);
    redis.cli(&["PUBLISH", "demo:user:john:f", "marker"]);
    assert_eq!(next_text(&mut sub).await, "marker");

    // Publishing goes to the socket's own user, groups and session (and is stored).
    let mut publisher = server
        .connect(
            &redis,
            "/ws/f?publish-user&publish-group&publish-session&publish-broadcast",
            &john,
        )
        .await;
    publisher.send(Message::text("from ws")).await.unwrap();
    for _ in 0..4 {
        assert_eq!(next_text(&mut sub).await, "from ws");
    }
    for key in [
        "demo:broadcast:f",
        "demo:user:john:f",
        "demo:group:g1:f",
        "demo:group:g2:f",
        "demo:session:s1:f",
    ] {
        assert_eq!(redis.cli(&["GET", key]).trim(), "from ws", "{key}");
        let ttl: i64 = redis.cli(&["TTL", key]).trim().parse().unwrap();
        assert!((3590..=3600).contains(&ttl), "{key} ttl {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_flags_and_bad_facilities_are_refused_before_the_upgrade() {
    let (_redis, server) = setup(&[]).await;
    for (pq, status) in [
        ("/ws/f?subscribe-user", 403),
        ("/ws/f?publish-group", 403),
        ("/ws/f?subscribe-session", 403),
        ("/ws/a*b?subscribe-broadcast", 400),
        ("/ws/?subscribe-broadcast", 400),
        ("/ws/a%20b", 400),
    ] {
        let err = tokio_tungstenite::connect_async(request(&server.url(pq), &anon()))
            .await
            .unwrap_err();
        assert_eq!(refused_status(err), status, "{pq}");
    }
    assert_eq!(server.stats.opened.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_message_is_replayed_on_connect() {
    let (redis, server) = setup(&[]).await;
    let mut p = server.anon(&redis, "/ws/r?publish-broadcast").await;
    p.send(Message::text("last words")).await.unwrap();
    eventually("stored", || {
        redis.cli(&["GET", "broadcast:r"]).trim() == "last words"
    })
    .await;
    let mut late = server.anon(&redis, "/ws/r?subscribe-broadcast").await;
    assert_eq!(next_text(&mut late).await, "last words");
    assert_eq!(server.stats.replayed.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expire_zero_stores_nothing() {
    let (redis, server) = setup(&["--expire", "0"]).await;
    let mut sub = server.anon(&redis, "/ws/z?subscribe-broadcast").await;
    let mut p = server.anon(&redis, "/ws/z?publish-broadcast").await;
    p.send(Message::text("fleeting")).await.unwrap();
    assert_eq!(next_text(&mut sub).await, "fleeting");
    assert_eq!(redis.cli(&["EXISTS", "broadcast:z"]).trim(), "0");
    // A key left by someone else is not replayed either when expire is 0.
    redis.cli(&["SET", "broadcast:z", "old"]);
    let mut late = server.anon(&redis, "/ws/z?subscribe-broadcast").await;
    redis.cli(&["PUBLISH", "broadcast:z", "live"]);
    assert_eq!(next_text(&mut late).await, "live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_messages_are_not_echoed_without_echo() {
    let (redis, server) = setup(&[]).await;
    let pq = "/ws/e?subscribe-broadcast&publish-broadcast";
    let mut me = server.connect(&redis, pq, &anon()).await;
    let mut other = server.connect(&redis, pq, &anon()).await;
    me.send(Message::text("mine")).await.unwrap();
    assert_eq!(next_text(&mut other).await, "mine", "others get it");
    // Redis keeps order on the channel: had "mine" come back, it would precede the marker.
    redis.cli(&["PUBLISH", "broadcast:e", "marker"]);
    assert_eq!(next_text(&mut me).await, "marker");
    // The same content from someone else is delivered (ws4redis would swallow it).
    redis.cli(&["PUBLISH", "broadcast:e", "mine"]);
    assert_eq!(next_text(&mut me).await, "mine");
    assert_eq!(server.stats.echo_suppressed.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_messages_come_back_with_echo() {
    let (redis, server) = setup(&[]).await;
    let mut me = server
        .connect(
            &redis,
            "/ws/e?subscribe-broadcast&publish-broadcast&echo",
            &anon(),
        )
        .await;
    me.send(Message::text("mine")).await.unwrap();
    assert_eq!(next_text(&mut me).await, "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_is_sent_answered_and_never_published() {
    let redis = RedisServer::start();
    let cfg = config(
        &redis,
        &["--heartbeat=--heartbeat--", "--heartbeat-interval", "1"],
    );
    let server = Server::start(cfg).await;
    let pq = "/ws/h?subscribe-broadcast&publish-broadcast&echo";
    let mut me = server.connect(&redis, pq, &anon()).await;
    // Unprompted, on the timer.
    assert_eq!(next_text(&mut me).await, "--heartbeat--");
    // The client's heartbeat is answered and not published.
    me.send(Message::text("--heartbeat--")).await.unwrap();
    assert_eq!(next_text(&mut me).await, "--heartbeat--");
    me.send(Message::text("real")).await.unwrap();
    assert_eq!(
        next_data(&mut me, Some("--heartbeat--")).await,
        Message::text("real")
    );
    assert_eq!(redis.cli(&["GET", "broadcast:h"]).trim(), "real");
    assert_eq!(server.stats.published.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_1000_arrives_complete_and_in_order() {
    let (redis, server) = setup(&["--expire", "0"]).await;
    let mut sub = server.anon(&redis, "/ws/b?subscribe-broadcast").await;
    let started = std::time::Instant::now();
    let pipe = server.bus.commands().pipeline();
    for i in 0..1000 {
        use fred::interfaces::PubsubInterface;
        let _: () = pipe.publish("broadcast:b", i.to_string()).await.unwrap();
    }
    let _: Vec<fred::types::Value> = pipe.all().await.unwrap();
    for i in 0..1000 {
        assert_eq!(next_text(&mut sub).await, i.to_string());
    }
    eprintln!("burst of 1000 delivered in {:?}", started.elapsed());
    assert_eq!(server.bus.stats().lagged.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_frames_in_one_segment_are_both_published() {
    let (redis, server) = setup(&[]).await;
    let mut sub = server.anon(&redis, "/ws/t?subscribe-broadcast").await;
    let mut p = server.anon(&redis, "/ws/t?publish-broadcast").await;
    // `feed` only buffers; one flush writes both frames with a single write.
    p.feed(Message::text("one")).await.unwrap();
    p.feed(Message::text("two")).await.unwrap();
    p.flush().await.unwrap();
    assert_eq!(next_text(&mut sub).await, "one");
    assert_eq!(next_text(&mut sub).await, "two");
    assert_eq!(redis.cli(&["GET", "broadcast:t"]).trim(), "two");
}

/// A client sending faster than Redis answers: its frames are published in batches (one
/// pipeline each), and nothing may be reordered, lost, echoed or stored out of turn. `n`
/// frames go out in one write, followed by a close in the same write when `close`.
async fn burst_from_one_socket(extra: &[&str], facility: &str, n: usize, close: bool) {
    let (redis, server) = setup(extra).await;
    let sq = format!("/ws/{facility}?subscribe-broadcast");
    let mut sub = server.anon(&redis, &sq).await;
    let pq = format!("/ws/{facility}?subscribe-broadcast&publish-broadcast");
    let mut me = server.anon(&redis, &pq).await;
    for i in 0..n {
        me.feed(Message::text(format!("m{i}"))).await.unwrap();
    }
    if close {
        me.close(None).await.unwrap();
    } else {
        me.flush().await.unwrap();
    }
    for i in 0..n {
        assert_eq!(next_text(&mut sub).await, format!("m{i}"));
    }
    let key = format!("broadcast:{facility}");
    assert_eq!(redis.cli(&["GET", &key]).trim(), format!("m{}", n - 1));
    assert_eq!(server.stats.published.load(Ordering::Relaxed), n as u64);
    if !close {
        // Had any of its own come back, it would precede the marker (Redis keeps order).
        redis.cli(&["PUBLISH", &key, "marker"]);
        assert_eq!(next_text(&mut me).await, "marker");
        assert_eq!(
            server.stats.echo_suppressed.load(Ordering::Relaxed),
            n as u64
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_one_socket_is_published_in_order_without_echo() {
    // Within the echo filter's memory (64 own messages not yet come back).
    burst_from_one_socket(&[], "burst", 60, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_then_a_close_publishes_every_message_first() {
    burst_from_one_socket(&[], "burstc", 300, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_keeps_its_order_in_the_history() {
    burst_from_one_socket(&["--history", "hburst=500:600"], "hburst", 300, true).await;
    burst_from_one_socket(&["--history", "hb2=500:600"], "hb2", 60, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_stays_binary_and_text_stays_text() {
    let (redis, server) = setup(&[]).await;
    let mut sub = server.anon(&redis, "/ws/bin?subscribe-broadcast").await;
    let mut p = server.anon(&redis, "/ws/bin?publish-broadcast").await;
    let raw = Bytes::from_static(b"\x00\x01\xff");
    p.send(Message::Binary(raw.clone())).await.unwrap();
    assert_eq!(next_data(&mut sub, None).await, Message::Binary(raw));
    p.send(Message::text("plain")).await.unwrap();
    assert_eq!(next_data(&mut sub, None).await, Message::text("plain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_message_passes_when_allowed() {
    let (redis, server) = setup(&["--max-message-size", "2097152"]).await;
    let mut sub = server.anon(&redis, "/ws/big?subscribe-broadcast").await;
    let mut p = server.anon(&redis, "/ws/big?publish-broadcast").await;
    let big = "x".repeat(1 << 20);
    p.send(Message::text(big.clone())).await.unwrap();
    assert_eq!(next_text(&mut sub).await.len(), big.len());
}

/// A message from Redis longer than the socket may send (a Django publisher is not bound by
/// the incoming limit) is skipped and counted; the socket stays and gets the next one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outgoing_message_over_the_limit_is_skipped_and_counted() {
    let redis = RedisServer::start();
    let server = Server::start_with(config(&redis, &[]), |s| s.max_outgoing = 10).await;
    let mut sub = server.anon(&redis, "/ws/lim?subscribe-broadcast").await;
    redis.cli(&["PUBLISH", "broadcast:lim", "eleven char"]);
    redis.cli(&["PUBLISH", "broadcast:lim", "ten chars!"]);
    assert_eq!(next_text(&mut sub).await, "ten chars!");
    assert_eq!(server.stats.too_large.load(Ordering::Relaxed), 1);
    assert_eq!(server.stats.delivered.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_message_closes_1009() {
    let (redis, server) = setup(&[]).await; // 64 KiB default
    let mut p = server.anon(&redis, "/ws/big?publish-broadcast").await;
    // The server may close while we are still writing; only the close frame matters.
    let _ = p.send(Message::text("x".repeat(1 << 20))).await;
    server
        .expect_close(&mut p, 1009, "message too big", CloseReason::TooBig)
        .await;
    assert_eq!(redis.cli(&["EXISTS", "broadcast:big"]).trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_text_closes_1007() {
    let (redis, server) = setup(&[]).await;
    let mut p = server.anon(&redis, "/ws/u?publish-broadcast").await;
    let frame = Frame::message(
        Bytes::from_static(b"\xff\xfe"),
        OpCode::Data(Data::Text),
        true,
    );
    p.send(Message::Frame(frame)).await.unwrap();
    server
        .expect_close(&mut p, 1007, "", CloseReason::InvalidData)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_1001_going_away() {
    let (redis, server) = setup(&[]).await;
    let mut c = server.anon(&redis, "/ws/s?subscribe-broadcast").await;
    server.shutdown.cancel();
    server
        .expect_close(&mut c, 1001, "going away", CloseReason::GoingAway)
        .await;
    eventually("released", || server.bus.channel_count() == 0).await;
    eventually("unsubscribed", || numsub(&redis, "broadcast:s") == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_client_is_closed_after_two_ping_intervals() {
    let (redis, server) = setup(&["--ping-interval", "1"]).await;
    // Never polled: it neither reads pings nor answers them.
    let _mute = server.anon(&redis, "/ws/p?subscribe-broadcast").await;
    let mut alive = server.anon(&redis, "/ws/p?subscribe-broadcast").await;
    let started = std::time::Instant::now();
    // Polling makes tungstenite answer pings, so this one stays.
    let ping_timeout = || server.stats.closed(CloseReason::PingTimeout) == 1;
    while !ping_timeout() {
        assert!(started.elapsed() < SOON, "mute client not closed");
        let _ = tokio::time::timeout(Duration::from_millis(100), alive.next()).await;
    }
    assert!(started.elapsed() >= Duration::from_secs(2));
    redis.cli(&["PUBLISH", "broadcast:p", "still here"]);
    assert_eq!(next_text(&mut alive).await, "still here");
}
