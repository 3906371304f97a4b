//! The presence half of a session: the socket's own entries (joined when the session starts,
//! left when it ends, whichever way) and, for envelope sockets of logged-in users, a `presence`
//! snapshot per channel after subscribing, then the channels' `join`/`leave` events.
//!
//! Invariants:
//! - The events come from separate Redis channels (`presence-events:…`), never from the
//!   ws4redis channels, so plain ws4redis sockets see nothing new.
//! - Anonymous sockets get no presence frames: presence lists user names, which the API also
//!   refuses to anonymous readers.
//! - The events subscription is confirmed and the socket's own join written before the
//!   snapshot is read, so no change between the snapshot and the live events is lost; one may
//!   show twice (join/leave are idempotent on a set of users, anonymous events carry the count).
//! - The session channel (label `session`) has no snapshot nor events: it is one user's own.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use super::{Session, SessionCtx};
use crate::bus::{Delivery, Overflowed, Subscription};
use crate::presence::{Joined, SESSION_LABEL};
use crate::ws::close::End;
use crate::ws::envelope;
use crate::ws::wire::Wire;

/// A session's presence: its entries and, for envelope sockets, the events it listens to.
pub(super) struct Present {
    /// Dropped with the session: leaves every channel.
    joined: Joined,
    /// Events of `labels` (envelope sockets of logged-in users only).
    events: Option<(Subscription, Vec<String>)>,
}

impl Present {
    /// Join the socket's channels and, for an envelope socket with a user, listen to their
    /// events. None when the socket's facility keeps no presence.
    pub(super) fn start(ctx: &SessionCtx) -> Option<Self> {
        let member = ctx.presence.as_ref()?;
        let joined = member.join();
        let events = (ctx.envelope.is_some() && member.user().is_some()).then(|| {
            let keys = member.presence().keys();
            let labels: Vec<String> = member
                .labels()
                .iter()
                .filter(|l| *l != SESSION_LABEL)
                .cloned()
                .collect();
            let channels: Vec<String> = labels
                .iter()
                .map(|l| keys.events(member.facility(), l))
                .collect();
            (ctx.bus.subscribe_labeled(&channels, &labels), labels)
        });
        Some(Present { joined, events })
    }

    /// The next event, or never when the socket gets none.
    pub(super) async fn next(this: &mut Option<Self>) -> Result<Delivery, Overflowed> {
        match this.as_mut().and_then(|p| p.events.as_mut()) {
            Some((sub, _)) => sub.recv().await,
            None => std::future::pending().await,
        }
    }
}

impl Session {
    /// Send the `presence` snapshot of each channel (envelope sockets of logged-in users).
    pub(super) async fn announce<S>(&mut self, ws: &mut WebSocketStream<Wire<S>>) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let wait = self.ctx.settings.subscribe_timeout;
        let Some(present) = self.present.as_mut() else {
            return Ok(());
        };
        let Some((sub, labels)) = present.events.as_ref() else {
            return Ok(());
        };
        let _ = tokio::time::timeout(wait, sub.ready()).await;
        present.joined.wait(wait.max(Duration::from_secs(1))).await;
        let Some(member) = self.ctx.presence.as_ref() else {
            return Ok(());
        };
        let mut frames = Vec::new();
        for label in labels.clone() {
            match member.presence().snapshot(member.facility(), &label).await {
                Ok(counts) => {
                    let users: Vec<String> = counts.users.into_iter().collect();
                    frames.push(Message::Text(
                        envelope::Frame::Presence {
                            ch: &label,
                            users: &users,
                            anonymous: counts.anonymous,
                        }
                        .encode(),
                    ));
                }
                Err(e) => tracing::debug!(error = %e, "no presence snapshot"),
            }
        }
        self.send_all(ws, frames).await
    }

    /// Forward one `join`/`leave` event (already in the envelope's JSON, written by the
    /// presence scripts) and whatever else is queued.
    pub(super) async fn deliver_presence<S>(
        &mut self,
        ws: &mut WebSocketStream<Wire<S>>,
        first: Delivery,
    ) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut frames = vec![first.wire_frame()];
        if let Some((sub, _)) = self.present.as_mut().and_then(|p| p.events.as_mut()) {
            while frames.len() < super::MAX_BATCH {
                let Some(d) = sub.try_recv() else { break };
                frames.push(d.wire_frame());
            }
        }
        self.send_wire(ws, frames).await.map(|_| ())
    }
}
