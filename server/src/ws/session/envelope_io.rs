//! The envelope half of a session (`wsredis.v1` sockets): resuming each channel on connect and
//! delivering live messages exactly once and in order. The decisions are in `ws::recovery`;
//! this file does the Redis reads and the writes.
//!
//! Invariants:
//! - Resuming runs after Redis confirmed the subscriptions (bounded by `subscribe_timeout`), so a
//!   message published meanwhile is either in the history read or in the live queue, or both;
//!   the tracker drops the second copy.
//! - A live message is never written before the gap in front of it is closed or reported.
//! - Reads are bounded by the facility's history size; a failed read is a `recovery_failed`,
//!   never a silent gap.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use super::{MAX_BATCH, Session};
use crate::bus::{Delivery, Position, text_wire};
use crate::ws::close::End;
use crate::ws::envelope;
use crate::ws::recovery::{self, EnvelopeCtx, Resumed, Verdict};
use crate::ws::stats::Stats;
use crate::ws::wire::Wire;

impl Session {
    /// Connect-time work of an envelope socket: per channel, recovery from the client's position
    /// (history channels) or the ws4redis replay as a `message` frame.
    pub(super) async fn resume<S>(
        &mut self,
        ws: &mut WebSocketStream<Wire<S>>,
        env: &EnvelopeCtx,
    ) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let stats = self.ctx.stats.clone();
        let unknown = env
            .recover
            .positions
            .keys()
            .filter(|l| !env.labels.contains(l))
            .count() as u64;
        let mut ignored = env.recover.ignored + unknown;
        let channels = self.ctx.channels.subscribe.clone();
        if !channels.is_empty() && self.ctx.bus.is_up() {
            let wait = self.ctx.settings.subscribe_timeout;
            let _ = tokio::time::timeout(wait, self.sub.ready()).await;
        }
        let replay = self.ctx.settings.expire > 0;
        for (i, channel) in channels.iter().enumerate() {
            let label = env.labels.get(i).map_or(channel.as_str(), String::as_str);
            let requested = env.recover.positions.get(label);
            let frames = match self.ctx.history {
                Some(retention) => {
                    let read = self
                        .ctx
                        .bus
                        .read_history(channel, requested.map(|p| p.offset), retention.size)
                        .await
                        .inspect_err(|e| tracing::debug!(error = %e, "history read failed"))
                        .ok();
                    let (frames, at, outcome) =
                        recovery::resume(label, requested, read.as_ref(), replay);
                    self.tracker.start(Arc::from(channel.as_str()), at);
                    match outcome {
                        Resumed::Fresh => Stats::add(&stats.replayed, frames.len() as u64),
                        Resumed::Recovered(n) => Stats::add(&stats.recovered, n),
                        Resumed::Failed => Stats::inc(&stats.recovery_failed),
                    }
                    frames
                }
                None => {
                    ignored += u64::from(requested.is_some());
                    if replay {
                        self.replay_one(label, channel).await
                    } else {
                        Vec::new()
                    }
                }
            };
            let messages = frames
                .iter()
                .filter(|f| f.as_str().starts_with(r#"{"type":"message""#))
                .count() as u64;
            self.send_all(ws, frames.into_iter().map(Message::Text))
                .await?;
            Stats::add(&stats.delivered, messages);
        }
        Stats::add(&stats.recover_ignored, ignored);
        Ok(())
    }

    /// The ws4redis stored message of a channel without history, as a `message` frame.
    async fn replay_one(&self, label: &str, channel: &str) -> Vec<Utf8Bytes> {
        if !self.ctx.bus.is_up() {
            return Vec::new();
        }
        let stored = self.ctx.bus.stored(&[channel.to_owned()]).await;
        let frames: Vec<Utf8Bytes> = stored
            .unwrap_or_default()
            .iter()
            .map(|body| envelope::message(label, body, None))
            .collect();
        Stats::add(&self.ctx.stats.replayed, frames.len() as u64);
        frames
    }

    /// [`Session::deliver`] for envelope sockets: each message through the tracker (gaps
    /// filled or reported first, duplicates dropped), then its shared envelope frame.
    pub(super) async fn deliver_envelope<S>(
        &mut self,
        ws: &mut WebSocketStream<Wire<S>>,
        first: Delivery,
    ) -> Result<(), End>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut frames: Vec<Bytes> = Vec::new();
        let mut sent = 0u64;
        let mut arrivals = Vec::new();
        let mut next = Some(first);
        while let Some(d) = next {
            if self
                .admit_envelope(d, &mut frames, &mut sent, &mut arrivals)
                .await
            {
                break;
            }
            next = if frames.len() < MAX_BATCH {
                self.sub.try_recv()
            } else {
                None
            };
        }
        if frames.is_empty() {
            return Ok(());
        }
        self.send_wire(ws, frames).await?;
        Stats::add(&self.ctx.stats.delivered, sent);
        // One clock read per batch.
        let now = std::time::Instant::now();
        for arrived in arrivals {
            self.ctx
                .stats
                .fanout
                .observe(now.saturating_duration_since(arrived));
        }
        Ok(())
    }

    /// Queue the frames for one live delivery. Returns whether to stop batching (a history
    /// read happened: write what we have before looking at more).
    async fn admit_envelope(
        &mut self,
        d: Delivery,
        frames: &mut Vec<Bytes>,
        sent: &mut u64,
        arrivals: &mut Vec<std::time::Instant>,
    ) -> bool {
        let stats = self.ctx.stats.clone();
        let mut read_history = false;
        match (
            self.tracker.check(&d.channel, d.position.as_ref()),
            &d.position,
        ) {
            (Verdict::Drop, _) => return false,
            (Verdict::Send, _) | (_, None) => {}
            (Verdict::Gap { after }, Some(pos)) => {
                read_history = true;
                let size = self.ctx.history.map_or(0, |r| u64::from(r.size));
                let missing = pos.offset.saturating_sub(after + 1);
                let read = if missing <= size {
                    let max = u32::try_from(missing).unwrap_or(u32::MAX);
                    // Boxed: a rare Redis read must not size every idle socket's future.
                    Box::pin(self.ctx.bus.read_history(&d.channel, Some(after), max))
                        .await
                        .inspect_err(|e| tracing::debug!(error = %e, "gap read failed"))
                        .ok()
                } else {
                    None
                };
                let (fill, ok) = recovery::fill(d.label(), after, pos, read.as_ref());
                if ok {
                    Stats::inc(&stats.gaps_filled);
                    *sent += fill.len() as u64;
                } else {
                    Stats::inc(&stats.recovery_failed);
                }
                frames.extend(fill.into_iter().map(text_wire));
                self.tracker.advance(&d.channel, pos);
            }
            (Verdict::NewEpoch, Some(pos)) => {
                let before = Position {
                    epoch: pos.epoch.clone(),
                    offset: pos.offset.saturating_sub(1),
                };
                Stats::inc(&stats.recovery_failed);
                frames.push(text_wire(envelope::recovery_failed(d.label(), &before)));
                self.tracker.advance(&d.channel, pos);
            }
        }
        if !super::admit(&mut self.echo, &stats, &d, self.ctx.settings.max_outgoing) {
            return read_history;
        }
        let frame = d.shared_frame(|d| {
            envelope::message(d.label(), d.payload.as_bytes(), d.position.as_ref())
        });
        frames.push(frame);
        *sent += 1;
        arrivals.push(d.arrived);
        read_history
    }
}
