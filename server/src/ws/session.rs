//! One socket's life after the upgrade: replay, fan-in from the bus, publish, heartbeat, pings,
//! limits, and the closing handshake.
//!
//! Invariants:
//! - One task per socket, one `select!` loop; every write happens in an arm body (through
//!   `Session::send`, or `Session::deliver` for fanned-out messages, which writes their shared
//!   encoded frames through [`Wire`]), never as a branch future of the main loop. tungstenite
//!   and the wire both keep whole frames, so abandoning a blocked write (queue overflow,
//!   shutdown, write timeout) never tears a frame; the close frame follows it.
//! - The bus never waits for this socket: it `try_send`s into the subscription's bounded queue
//!   (`send_queue`); an overflow ends this socket with 1013 and nobody else notices.
//! - Every way out is an `End` whose close code is chosen in `close.rs` and counted in
//!   [`Stats`] exactly once.
//! - Redis down: a socket that does not publish stays open and receives again once the bus has
//!   reconnected; a socket that publishes during the outage is closed with 1013 and the reason
//!   "redis unavailable, message not published", so the client knows the message was lost and
//!   can retry after its reconnect backoff (ws4redis.js reconnects on close).

use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::Error as WsError;
use tokio_util::sync::CancellationToken;

use super::close::{End, finish};
use super::echo::EchoFilter;
use super::recovery::{EnvelopeCtx, Tracker};
use super::settings::Settings;
use super::stats::{CloseReason, Stats};
use super::wire::Wire;
use crate::bus::channels::Channels;
use crate::bus::{Bus, BusError, Delivery, Overflowed, Payload, Retention, Subscription};

mod envelope_io;
mod presence_io;

/// Most queued messages written with one flush.
const MAX_BATCH: usize = 64;
/// Most of a client's messages published with one Redis round trip.
const MAX_PUBLISH_BATCH: usize = 32;

/// Everything one session needs besides its socket; built by the upgrade handler.
#[derive(Clone, Debug)]
pub struct SessionCtx {
    /// The worker's bus.
    pub bus: Bus,
    /// The socket's channels, from [`crate::bus::channels::Namer::plan`].
    pub channels: Channels,
    /// The `echo` flag: deliver the socket's own messages back to it.
    pub echo: bool,
    /// The worker's session settings.
    pub settings: Arc<Settings>,
    /// The worker's socket counters.
    pub stats: Arc<Stats>,
    /// What history the socket's facility keeps; publishes go through it.
    pub history: Option<Retention>,
    /// `Some` when the client opted in to the `wsredis.v1` envelope dialect.
    pub envelope: Option<EnvelopeCtx>,
    /// The socket's place in presence (None: its facility keeps none).
    pub presence: Option<crate::presence::Member>,
}

/// Drive one upgraded socket until it ends; returns when the socket is closed (or dropped).
/// `shutdown` cancelled → close 1001 "going away".
pub async fn run<S>(mut ws: WebSocketStream<Wire<S>>, ctx: SessionCtx, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let close_timeout = ctx.settings.close_timeout;
    let stats = ctx.stats.clone();
    let mut session = Session::new(ctx, shutdown);
    // Counted once the socket is registered with the bus (tests wait on this).
    Stats::inc(&stats.opened);
    let end = session.drive(&mut ws).await;
    // Release the channels before the (bounded, possibly slow) closing handshake.
    drop(session);
    // Boxed, like the other rare paths (replay, publish): an async fn's state is as large as
    // its largest await, and every idle socket would carry the closing handshake's read buffer.
    Box::pin(finish(&mut ws, end, close_timeout)).await;
    stats.record_close(end.reason);
    tracing::debug!(reason = end.reason.as_str(), "websocket closed");
}

struct Session {
    ctx: SessionCtx,
    shutdown: CancellationToken,
    sub: Subscription,
    echo: EchoFilter,
    /// Last position sent per history channel (envelope sockets).
    tracker: Tracker,
    /// The socket's presence entries and events (facilities with presence).
    present: Option<presence_io::Present>,
    /// Last time any frame arrived from the client.
    last_seen: Instant,
}

impl Session {
    fn new(ctx: SessionCtx, shutdown: CancellationToken) -> Self {
        let sub = match &ctx.envelope {
            Some(env) => ctx
                .bus
                .subscribe_labeled(&ctx.channels.subscribe, &env.labels),
            None => ctx.bus.subscribe(&ctx.channels.subscribe),
        };
        let echo = if ctx.echo {
            EchoFilter::default()
        } else {
            EchoFilter::new(sub.channels(), &ctx.channels.publish)
        };
        Session {
            present: presence_io::Present::start(&ctx),
            ctx,
            shutdown,
            sub,
            echo,
            tracker: Tracker::default(),
            last_seen: Instant::now(),
        }
    }

    async fn drive<S>(&mut self, ws: &mut WebSocketStream<Wire<S>>) -> End
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // Boxed: the rare start-up paths must not size every idle socket's future.
        let started = match self.ctx.envelope.clone() {
            Some(env) => Box::pin(self.resume(ws, &env)).await,
            None => Box::pin(self.replay(ws)).await,
        };
        if let Err(end) = started {
            return end;
        }
        if let Err(end) = Box::pin(self.announce(ws)).await {
            return end;
        }
        let settings = self.ctx.settings.clone();
        // One timer serves the heartbeat and the ping: a timer costs a registration and memory
        // per socket. A late tick delays the next one by a full period (no burst of catch-ups).
        let start = Instant::now();
        let mut next_ping = start + settings.ping_interval;
        let mut next_heartbeat = settings
            .heartbeat
            .as_ref()
            .map(|_| start + settings.heartbeat_interval);
        let timer = sleep_until(earliest(next_ping, next_heartbeat));
        tokio::pin!(timer);
        // Registered with the worker's shutdown token once, not on every turn of the loop.
        let shutdown = self.shutdown.clone();
        let going_away = shutdown.cancelled();
        tokio::pin!(going_away);

        loop {
            let step = tokio::select! {
                biased;
                _ = &mut going_away => Err(End::new(CloseReason::GoingAway)),
                // Every arm but the plain delivery boxes its work: those are rare for most
                // sockets (a pong, a ping, a heartbeat, a presence event) and their state would
                // size every socket's future (the publish path alone: 400 bytes).
                frame = ws.next() => Box::pin(self.on_frames(ws, frame)).await,
                delivery = self.sub.recv() => match delivery {
                    Ok(d) => self.deliver(ws, d).await,
                    Err(Overflowed) => Err(End::new(CloseReason::Overloaded)),
                },
                event = presence_io::Present::next(&mut self.present) => match event {
                    Ok(d) => Box::pin(self.deliver_presence(ws, d)).await,
                    Err(Overflowed) => Err(End::new(CloseReason::Overloaded)),
                },
                _ = &mut timer => {
                    let now = Instant::now();
                    let mut step = Ok(());
                    if next_heartbeat.is_some_and(|t| now >= t) {
                        next_heartbeat = Some(now + settings.heartbeat_interval);
                        step = Box::pin(self.heartbeat(ws)).await;
                    }
                    if step.is_ok() && now >= next_ping {
                        next_ping = now + settings.ping_interval;
                        step = if self.last_seen.elapsed() > settings.ping_interval * 2 {
                            Err(End::new(CloseReason::PingTimeout))
                        } else {
                            Box::pin(self.send(ws, Message::Ping(Bytes::new()))).await
                        };
                    }
                    timer.as_mut().reset(earliest(next_ping, next_heartbeat));
                    step
                }
            };
            if let Err(end) = step {
                if end.reason == CloseReason::Overloaded {
                    Stats::inc(&self.ctx.stats.dropped);
                }
                return end;
            }
        }
    }

    /// Send the stored last message of each subscribed channel (ws4redis replay), after Redis
    /// confirmed the subscriptions so nothing published meanwhile falls in between.
    async fn replay<S>(&mut self, ws: &mut WebSocketStream<Wire<S>>) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let channels = &self.ctx.channels.subscribe;
        if channels.is_empty() || self.ctx.settings.expire == 0 || !self.ctx.bus.is_up() {
            return Ok(());
        }
        let _ = tokio::time::timeout(self.ctx.settings.subscribe_timeout, self.sub.ready()).await;
        let stored = match self.ctx.bus.stored(channels).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::debug!(error = %e, "no replay");
                return Ok(());
            }
        };
        for body in stored {
            self.send(ws, Payload::from_bytes(body).to_message())
                .await?;
            Stats::inc(&self.ctx.stats.replayed);
            Stats::inc(&self.ctx.stats.delivered);
        }
        Ok(())
    }

    /// Handle `first` and every further frame the client has already sent (up to
    /// [`MAX_PUBLISH_BATCH`] messages to publish): the messages are published together, in
    /// order, as one pipeline, so a client sending a burst waits one Redis round trip, not one
    /// per message. Whatever ends the socket ends it after the messages before it are published.
    async fn on_frames<S>(
        &mut self,
        ws: &mut WebSocketStream<Wire<S>>,
        first: Option<Result<Message, WsError>>,
    ) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut bodies = Vec::new();
        let mut outcome = Ok(());
        let mut next = Some(first);
        while let Some(frame) = next.take() {
            match self.on_frame(ws, frame).await {
                Ok(Some(body)) => bodies.push(body),
                Ok(None) => {}
                Err(end) => {
                    outcome = Err(end);
                    break;
                }
            }
            if bodies.len() < MAX_PUBLISH_BATCH {
                // Polled without this task's waker: the main loop polls the stream again
                // (with it) before it sleeps.
                next = ws.next().now_or_never();
            }
        }
        if !bodies.is_empty() {
            // Boxed: the Redis commands' state would otherwise be part of every idle socket.
            Box::pin(self.publish(bodies)).await?;
        }
        outcome
    }

    /// One frame from the client: `Some(body)` when it is a message to publish.
    async fn on_frame<S>(
        &mut self,
        ws: &mut WebSocketStream<Wire<S>>,
        frame: Option<Result<Message, WsError>>,
    ) -> Result<Option<Bytes>, End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.last_seen = Instant::now();
        let body: Bytes = match frame {
            Some(Ok(Message::Text(text))) => text.into(),
            Some(Ok(Message::Binary(bytes))) => bytes,
            // tungstenite answers pings itself; any frame proves the client alive.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => return Ok(None),
            Some(Ok(Message::Close(_))) => return Err(End::new(CloseReason::Client)),
            Some(Err(e)) => return Err(End::new(read_error_reason(&e))),
            None => return Err(End::new(CloseReason::Abnormal)),
        };
        Stats::inc(&self.ctx.stats.received);
        if let Some(hb) = &self.ctx.settings.heartbeat
            && body[..] == *hb.as_bytes()
        {
            // The client's heartbeat is answered, never published (ws4redis.js counts on it).
            self.heartbeat(ws).await?;
            return Ok(None);
        }
        if body.is_empty() || self.ctx.channels.publish.is_empty() {
            return Ok(None);
        }
        Ok(Some(body))
    }

    async fn publish(&mut self, bodies: Vec<Bytes>) -> Result<(), End> {
        for body in &bodies {
            self.echo.published(body);
        }
        let expire = self.ctx.settings.expire;
        match self
            .ctx
            .bus
            .publish_all(
                &self.ctx.channels.publish,
                &bodies,
                expire,
                self.ctx.history,
            )
            .await
        {
            Ok(_) => {
                Stats::add(&self.ctx.stats.published, bodies.len() as u64);
                Ok(())
            }
            Err(e) => {
                // Newest first: each undoes the last one remembered.
                for body in bodies.iter().rev() {
                    self.echo.unpublished(body);
                }
                tracing::info!(error = %e, "publish failed; closing the socket");
                Err(End::new(match e {
                    BusError::Unavailable => CloseReason::RedisDown,
                    BusError::Config(_) | BusError::Redis(_) => CloseReason::RedisError,
                }))
            }
        }
    }

    /// Send `first` and whatever else is already queued for this socket (up to
    /// [`MAX_BATCH`]) with one flush, so a burst costs one write instead of one per message.
    /// The frames are taken from the queue as they are written: no list is built, and the
    /// clock is read once per batch (each delivery's fan-out latency is measured to the moment
    /// its batch goes to the socket).
    async fn deliver<S>(
        &mut self,
        ws: &mut WebSocketStream<Wire<S>>,
        first: Delivery,
    ) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if self.ctx.envelope.is_some() {
            // Boxed, like every path but the plain delivery: it would size every socket's future.
            return Box::pin(self.deliver_envelope(ws, first)).await;
        }
        let now = std::time::Instant::now();
        let Session {
            ctx,
            shutdown,
            sub,
            echo,
            ..
        } = self;
        let stats = &ctx.stats;
        let max_outgoing = ctx.settings.max_outgoing;
        let mut next = Some(first);
        let mut taken = 0;
        let frames = std::iter::from_fn(|| {
            loop {
                let d = match next.take() {
                    Some(d) => d,
                    None if taken <= MAX_BATCH => sub.try_recv()?,
                    None => return None,
                };
                taken += 1;
                if admit(echo, stats, &d, max_outgoing) {
                    stats
                        .fanout
                        .observe(now.saturating_duration_since(d.arrived));
                    return Some(d.wire_frame());
                }
            }
        });
        let sent = write_wire(ws, frames, ctx.settings.write_timeout(), shutdown, sub).await?;
        Stats::add(&stats.delivered, sent);
        Ok(())
    }

    /// Write encoded frames with one flush; see [`write_wire`].
    async fn send_wire<S>(
        &mut self,
        ws: &mut WebSocketStream<Wire<S>>,
        frames: Vec<Bytes>,
    ) -> Result<u64, End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let write_timeout = self.ctx.settings.write_timeout();
        write_wire(ws, frames, write_timeout, &self.shutdown, &self.sub).await
    }

    async fn heartbeat<S>(&mut self, ws: &mut WebSocketStream<Wire<S>>) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(hb) = self.ctx.settings.heartbeat.clone() else {
            return Ok(());
        };
        self.send(ws, Message::Text(hb)).await?;
        Stats::inc(&self.ctx.stats.heartbeats);
        Ok(())
    }

    /// Send one frame; see [`Session::send_all`].
    async fn send<S>(&mut self, ws: &mut WebSocketStream<Wire<S>>, msg: Message) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.send_all(ws, std::iter::once(msg)).await
    }

    /// Send frames with one flush; see [`write_frames`].
    async fn send_all<S, I>(
        &mut self,
        ws: &mut WebSocketStream<Wire<S>>,
        msgs: I,
    ) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
        I: IntoIterator<Item = Message>,
    {
        write_frames(
            ws,
            msgs,
            self.ctx.settings.write_timeout(),
            &self.ctx.stats,
            &self.shutdown,
            &self.sub,
        )
        .await
        .map(|_| ())
    }
}

/// Whether a delivery goes out: not when it is empty, the socket's own echo, or longer than
/// the socket may send (counted).
fn admit(echo: &mut EchoFilter, stats: &Stats, d: &Delivery, max_outgoing: usize) -> bool {
    if d.payload.is_empty() {
        return false;
    }
    if echo.is_own(&d.channel, d.payload.as_bytes()) {
        Stats::inc(&stats.echo_suppressed);
        return false;
    }
    if d.payload.len() > max_outgoing {
        Stats::inc(&stats.too_large);
        return false;
    }
    true
}

/// Send frames with one flush, giving up when the socket overflows, the worker shuts down,
/// or the write has not completed within `write_timeout`. A message too large for the write
/// buffer is skipped (counted), the socket stays. A socket with room takes the frames on the
/// first poll, without arming the write timer. Returns how many frames were written.
async fn write_frames<S, I>(
    ws: &mut WebSocketStream<Wire<S>>,
    msgs: I,
    write_timeout: Duration,
    stats: &Stats,
    shutdown: &CancellationToken,
    sub: &Subscription,
) -> Result<u64, End>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: IntoIterator<Item = Message>,
{
    let write = async {
        let mut written = 0u64;
        for msg in msgs {
            match ws.feed(msg).await {
                Ok(()) => written += 1,
                Err(WsError::WriteBufferFull(_)) => Stats::inc(&stats.too_large),
                Err(e) => return Err(e),
            }
        }
        ws.flush().await.map(|()| written)
    };
    bounded(write, write_timeout, shutdown, sub).await
}

/// Write frames already encoded for the wire (shared by every socket that gets them) through
/// [`Wire`], after whatever tungstenite holds (a pong it owes goes first: frames are only added
/// at a frame boundary), within the bounds of [`bounded`]. Returns how many were written.
async fn write_wire<S, I>(
    ws: &mut WebSocketStream<Wire<S>>,
    frames: I,
    write_timeout: Duration,
    shutdown: &CancellationToken,
    sub: &Subscription,
) -> Result<u64, End>
where
    S: AsyncRead + AsyncWrite + Unpin,
    I: IntoIterator<Item = Bytes>,
{
    let write = async {
        ws.flush().await?;
        let wire = ws.get_mut();
        let mut sent = 0u64;
        for frame in frames {
            wire.push(frame);
            sent += 1;
        }
        std::future::poll_fn(|cx| wire.poll_drain(cx)).await?;
        Ok::<_, WsError>(sent)
    };
    bounded(write, write_timeout, shutdown, sub).await
}

/// Run a write to the end unless the worker shuts down, the queue overflows, or it has not
/// completed within `write_timeout`. A socket with room completes it on the first poll,
/// without arming the write timer.
async fn bounded<F>(
    write: F,
    write_timeout: Duration,
    shutdown: &CancellationToken,
    sub: &Subscription,
) -> Result<u64, End>
where
    F: Future<Output = Result<u64, WsError>>,
{
    tokio::pin!(write);
    match futures_util::poll!(&mut write) {
        Poll::Ready(r) => r.map_err(|_| End::new(CloseReason::Abnormal)),
        // Boxed: a socket without room is rare, and the timer would size every socket's future.
        Poll::Pending => {
            Box::pin(async {
                tokio::select! {
                    biased;
                    r = &mut write => r.map_err(|_| End::new(CloseReason::Abnormal)),
                    _ = shutdown.cancelled() => Err(End::new(CloseReason::GoingAway)),
                    _ = sub.overflowed() => Err(End::new(CloseReason::Overloaded)),
                    _ = tokio::time::sleep(write_timeout) => Err(End::new(CloseReason::Abnormal)),
                }
            })
            .await
        }
    }
}

/// The earlier of the next ping and the next heartbeat (if heartbeats are on).
fn earliest(ping: Instant, heartbeat: Option<Instant>) -> Instant {
    heartbeat.map_or(ping, |h| h.min(ping))
}

/// The close reason for an error from tungstenite's reader.
fn read_error_reason(e: &WsError) -> CloseReason {
    match e {
        WsError::Capacity(_) => CloseReason::TooBig,
        WsError::Utf8(_) => CloseReason::InvalidData,
        WsError::Protocol(_) => CloseReason::Protocol,
        _ => CloseReason::Abnormal,
    }
}

/// The session future must be `Send` so the worker can spawn it on a multi-thread runtime.
#[allow(dead_code)]
fn assert_send(ctx: SessionCtx, ws: WebSocketStream<Wire<tokio::net::TcpStream>>) {
    fn is_send<T: Send>(_: T) {}
    is_send(run(ws, ctx, CancellationToken::new()));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(
            WebSocketStream<Wire<tokio::net::TcpStream>>,
            SessionCtx,
            CancellationToken,
        ) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every idle socket holds one session future, so its size is memory per socket: the rare
    /// paths (replay, recovery, gap reads, publish, the closing handshake) are boxed so they do
    /// not size it, nor do the rarer arms of the main loop (frames from the client, heartbeats,
    /// pings, presence events, envelope deliveries). A path awaited inline once made it 10 KiB
    /// (3.4 KiB with the rare paths boxed, 2.7 KiB with the rare arms too).
    #[test]
    fn the_session_future_stays_small() {
        let size = future_size(run::<tokio::net::TcpStream>);
        eprintln!("session future: {size} bytes");
        assert!(size <= 3 * 1024, "the session future grew to {size} bytes");
    }
}
