//! The upgrade: from a request under the websocket prefix to a running session.
//!
//! Everything that can refuse the socket happens before the 101, so the client gets an HTTP
//! status that says why: a malformed handshake (400/426), a foreign `Origin` or a flag the
//! session may not use (403), a bad facility (400), a full or draining worker (503). After the
//! 101 the session runs on the worker's session tracker, which the drain waits for.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::header::{CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use http::{HeaderValue, StatusCode};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::handshake::{self, HandshakeError};
use super::{
    ChannelError, EnvelopeCtx, Flags, Identity, SessionCtx, envelope, flags, websocket_config,
};
use crate::auth::django::{Django, DjangoError};
use crate::auth::{cookie, session};
use crate::http::response::{self, Response};
use crate::worker::App;
use crate::worker::net::{Peer, Stream};
use crate::worker::state::Gauge;

/// Answer a request under the websocket prefix: 101 and a spawned session, or an HTTP error.
pub async fn upgrade(app: Arc<App>, mut req: Request<Incoming>, _peer: Peer) -> Response {
    match prepare(&app, &req).await {
        Ok((accept, ctx)) => {
            let envelope = ctx.envelope.is_some();
            let on_upgrade = hyper::upgrade::on(&mut req);
            let gauge = Gauge::enter(&app, |s| &s.ws_open);
            let app2 = app.clone();
            app.sessions.spawn(async move {
                let _gauge = gauge;
                match on_upgrade.await {
                    Ok(upgraded) => {
                        let config = Some(websocket_config(&app2.config));
                        let shutdown = app2.shutdown.clone();
                        // The worker's own socket, taken back from hyper's boxed one: every read
                        // and write then skips two layers of dynamic dispatch, and the socket
                        // drops hyper's buffers. Bytes the client sent after its handshake are
                        // kept. (Any other io, should one ever be served, runs through hyper's.)
                        match upgraded.downcast::<TokioIo<Stream>>() {
                            Ok(parts) => {
                                // `read_buf` is a slice of hyper's connection buffer (~8 KiB):
                                // copied out and dropped here, not kept for the socket's life.
                                let hyper::upgrade::Parts { io, read_buf, .. } = parts;
                                let early = read_buf.to_vec();
                                drop(read_buf);
                                let ws = WebSocketStream::from_partially_read(
                                    super::Wire::new(io.into_inner()),
                                    early,
                                    Role::Server,
                                    config,
                                )
                                .await;
                                // Boxed so the task does not keep a second copy of the socket
                                // and context beside the session's own (rustc lays the two out
                                // apart).
                                Box::pin(super::run(ws, ctx, shutdown)).await;
                            }
                            Err(upgraded) => {
                                let ws = WebSocketStream::from_raw_socket(
                                    super::Wire::new(TokioIo::new(upgraded)),
                                    Role::Server,
                                    config,
                                )
                                .await;
                                Box::pin(super::run(ws, ctx, shutdown)).await;
                            }
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            switching_protocols(&accept, envelope)
        }
        Err(e) => {
            app.slot.ws_refused.fetch_add(1, Ordering::Relaxed);
            if matches!(e, HandshakeError::Busy) {
                app.slot.overload.fetch_add(1, Ordering::Relaxed);
            }
            response::handshake_error(&e)
        }
    }
}

/// Validate everything; returns the accept key and the session's context.
async fn prepare(
    app: &App,
    req: &Request<Incoming>,
) -> Result<(String, SessionCtx), HandshakeError> {
    let accept = handshake::check(req, &app.config.allowed_origins)?;
    if app.shutdown.is_cancelled()
        || app.slot.ws_open.load(Ordering::Relaxed) >= app.config.max_connections as u64
    {
        return Err(HandshakeError::Busy);
    }
    let flags = Flags::parse(req.uri().query().unwrap_or(""));
    let facility = flags::facility(req.uri().path(), &app.config.websocket_url)
        .ok_or_else(|| HandshakeError::BadRequest("the facility is not valid".into()))?;
    let identity = identity_of(app, req).await?;
    let flags = match app.config.allowed_channels(&identity) {
        Some(allowed) => flags.restrict(allowed),
        None => flags,
    };
    let channels = app
        .namer
        .plan(&facility, &identity, flags.subscribe(), flags.publish())
        .map_err(|e| match e {
            ChannelError::Forbidden(why) => HandshakeError::Forbidden(why.to_string()),
            other => HandshakeError::BadRequest(other.to_string()),
        })?;
    let presence = app.presence.member(&facility, &identity, flags.subscribe());
    // The envelope dialect only when the client offers it: everyone else gets ws4redis.
    let envelope = envelope::offered(req.headers()).then(|| {
        let recover = envelope::parse_recover(req.uri().query().unwrap_or(""));
        let labels = channels
            .subscribe
            .iter()
            .map(|name| envelope::label(app.namer.head(), &facility, name))
            .collect();
        EnvelopeCtx { labels, recover }
    });
    let ctx = SessionCtx {
        presence,
        bus: app.bus.clone(),
        channels,
        echo: flags.echo,
        settings: app.ws_settings.clone(),
        stats: app.ws_stats.clone(),
        history: app.config.history_for(&facility),
        envelope,
    };
    Ok((accept, ctx))
}

/// Who sent `req`: the web app's session, or the Django site's with `--session-backend
/// django-*`; anonymous without a (valid) session. Also used by the presence API.
pub(crate) async fn identity_of(
    app: &App,
    req: &Request<Incoming>,
) -> Result<Identity, HandshakeError> {
    match &app.django {
        Some(django) => identify_django(django, req).await,
        None => identify(app, req).await,
    }
}

/// Who is on the socket: the web app's session (cookie `sessionid`), else anonymous. A
/// cookie that is malformed, unknown or expired is anonymous; it never reaches Redis with odd
/// bytes, because the key's shape is checked first.
async fn identify(app: &App, req: &Request<Incoming>) -> Result<Identity, HandshakeError> {
    let Some(key) = cookie::find(req.headers(), cookie::SESSION_COOKIE) else {
        return Ok(Identity::anonymous());
    };
    if !session::valid_key(key) {
        return Ok(Identity::anonymous());
    }
    match app.sessions_store.load(key).await {
        Ok(Some(record)) => Ok(Identity {
            username: Some(record.username),
            groups: record.groups,
            session_key: Some(key.to_owned()),
            is_staff: record.is_staff,
        }),
        Ok(None) => Ok(Identity::anonymous()),
        Err(e) if e.is_unavailable() => Err(HandshakeError::Unavailable),
        Err(e) => {
            tracing::warn!(error = %e, "session lookup failed; treating the socket as anonymous");
            Ok(Identity::anonymous())
        }
    }
}

/// Who is on the socket according to the Django site (`--session-backend django-*`).
async fn identify_django(
    django: &Django,
    req: &Request<Incoming>,
) -> Result<Identity, HandshakeError> {
    match django
        .identify(req.headers(), req.uri().query().unwrap_or(""))
        .await
    {
        Ok(identity) => Ok(identity),
        Err(DjangoError::Unavailable(why)) => {
            tracing::warn!(%why, "django session lookup unavailable");
            Err(HandshakeError::Unavailable)
        }
        Err(e) => {
            tracing::warn!(error = %e, "django session lookup failed; treating the socket as anonymous");
            Ok(Identity::anonymous())
        }
    }
}

fn switching_protocols(accept: &str, envelope: bool) -> Response {
    let mut r = response::text(StatusCode::SWITCHING_PROTOCOLS, "");
    let h = r.headers_mut();
    h.remove(http::header::CONTENT_TYPE);
    h.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    if envelope {
        h.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(envelope::SUBPROTOCOL),
        );
    }
    r
}
