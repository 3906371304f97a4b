//! Websockets in the ws4redis dialect: the handshake ([`handshake`]), what the URL asks for
//! ([`flags`]), the tungstenite settings ([`settings`]), the upgrade itself ([`upgrade()`]),
//! and one socket's life after it ([`session`]).
//!
//! # The seam with the worker
//! The worker detects the upgrade and validates the handshake, then, before answering 101:
//! 1. `let flags = Flags::parse(uri.query().unwrap_or(""))` and
//!    `let facility = flags::facility(uri.path(), &config.websocket_url)`;
//! 2. gets the [`Identity`] of the request from the session store;
//! 3. `let channels = namer.plan(&facility, &identity, flags.subscribe(), flags.publish())?`
//!    ([`ChannelError::Forbidden`] → 403, [`ChannelError::InvalidFacility`] → 400);
//!
//! and after the upgrade builds
//! `WebSocketStream::from_raw_socket(Wire::new(io), Role::Server, Some(websocket_config(&config)))`
//! and runs [`session::run`] with a [`SessionCtx`] and the worker's shutdown token.
//!
//! A client that offers the `wsredis.v1` subprotocol ([`envelope`]) gets JSON envelopes with
//! history positions and recovery (docs/protocol.md) through [`EnvelopeCtx`]; everyone else
//! gets the ws4redis frames.

mod close;
mod echo;
pub mod envelope;
pub mod flags;
pub mod handshake;
mod recovery;
pub mod session;
pub mod settings;
pub mod stats;
mod upgrade;
pub mod wire;

pub use crate::bus::channels::{ChannelError, Channels, Identity, Namer};
pub use flags::Flags;
pub use recovery::EnvelopeCtx;
pub use session::{SessionCtx, run};
pub use settings::{Settings, websocket_config};
pub use stats::{CloseReason, Stats};
pub(crate) use upgrade::identity_of;
pub use upgrade::upgrade;
pub use wire::Wire;
