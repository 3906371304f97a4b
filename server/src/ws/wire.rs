//! The socket under tungstenite, and the one write path the session shares with it.
//!
//! Fanned-out messages are encoded once per message and worker ([`crate::bus::Delivery::wire_frame`])
//! and written to each socket as those bytes, several frames with one vectored write, instead of
//! going through tungstenite, which would frame and copy the payload into its write buffer once
//! per socket. Everything else (pings, pongs, heartbeats, envelopes, the close frame) still goes
//! through tungstenite.
//!
//! Invariants:
//! - Frames are only ever added at a frame boundary: the session flushes tungstenite (so its
//!   write buffer is empty) before [`Wire::push`], and tungstenite's own bytes reach the socket
//!   only through [`AsyncWrite`] here, which first writes out every pushed frame. The two kinds
//!   of frames can never interleave mid-frame, whoever is abandoned halfway (a write timeout,
//!   a shutdown): the rest of a frame written halfway stays here and goes out before the close
//!   frame.
//! - A wire that has run empty keeps at most [`KEEP_FRAMES`] slots, so an idle socket does not
//!   keep a burst's high-water mark.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most frames given to one vectored write.
const MAX_SLICES: usize = 64;
/// Slots an empty wire may keep.
const KEEP_FRAMES: usize = 4;

/// A socket with the encoded frames still to be written to it; see the module header.
#[derive(Debug)]
pub struct Wire<S> {
    io: S,
    frames: VecDeque<Bytes>,
}

impl<S> Wire<S> {
    /// Wrap a socket.
    pub fn new(io: S) -> Self {
        Wire {
            io,
            frames: VecDeque::new(),
        }
    }

    /// Queue one encoded frame. Only at a frame boundary: tungstenite must have been flushed.
    pub fn push(&mut self, frame: Bytes) {
        if !frame.is_empty() {
            self.frames.push_back(frame);
        }
    }

    /// Bytes queued and not yet written.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }
}

impl<S: AsyncWrite + Unpin> Wire<S> {
    /// Write the queued frames; ready once all are written.
    pub fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.frames.is_empty() {
            if self.frames.len() == 1 {
                // One frame (the usual fan-out): a plain write, cheaper in the kernel than writev.
                let front = &mut self.frames[0];
                let written = ready!(Pin::new(&mut self.io).poll_write(cx, front))?;
                if written == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                if written < front.len() {
                    front.advance(written);
                    continue;
                }
                self.frames.clear();
                break;
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, frame) in slices.iter_mut().zip(&self.frames) {
                *slot = IoSlice::new(frame);
                count += 1;
            }
            let mut written =
                ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            while written > 0 {
                let front = self
                    .frames
                    .front_mut()
                    .expect("written bytes come from a frame");
                if written >= front.len() {
                    written -= front.len();
                    self.frames.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        if self.frames.capacity() > KEEP_FRAMES {
            self.frames = VecDeque::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wire<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wire<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A frame written halfway (the peer stopped reading) is completed before anything that
    /// tungstenite writes after it, and nothing is lost or reordered: after one frame (a plain
    /// write) and after several (vectored).
    #[tokio::test]
    async fn a_frame_cut_by_a_full_socket_is_finished_before_later_bytes() {
        cut_then_written(&[]).await;
        cut_then_written(&[b"bb"]).await;
        cut_then_written(&[b"bb", b"", b"dd"]).await;
    }

    async fn cut_then_written(more: &[&'static [u8]]) {
        let (a, mut b) = tokio::io::duplex(1000);
        let mut wire = Wire::new(a);
        let big = Bytes::from(vec![b'a'; 3000]);
        wire.push(big.clone());
        let mut want = big.to_vec();
        for m in more {
            wire.push(Bytes::from_static(m));
            want.extend_from_slice(m);
        }
        let total = want.len();
        // The first write fills the pipe and stops mid-frame.
        let first = futures_util::poll!(std::future::poll_fn(|cx| wire.poll_drain(cx)));
        assert!(first.is_pending());
        assert!(wire.pending() > 0 && wire.pending() < total);
        let reader = tokio::spawn(async move {
            let mut all = Vec::new();
            b.read_to_end(&mut all).await.unwrap();
            all
        });
        wire.write_all(b"cc").await.unwrap();
        wire.shutdown().await.unwrap();
        drop(wire);
        let all = reader.await.unwrap();
        want.extend_from_slice(b"cc");
        assert_eq!(all, want);
    }

    #[tokio::test]
    async fn an_emptied_wire_gives_back_its_slots() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let mut wire = Wire::new(a);
        for _ in 0..100 {
            wire.push(Bytes::from_static(b"x"));
        }
        std::future::poll_fn(|cx| wire.poll_drain(cx))
            .await
            .unwrap();
        assert_eq!(wire.pending(), 0);
        assert!(wire.frames.capacity() <= KEEP_FRAMES);
        let mut got = [0u8; 100];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [b'x'; 100]);
    }
}
