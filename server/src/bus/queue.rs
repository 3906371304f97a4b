//! One socket's delivery queue: a bounded FIFO filled by the dispatcher and drained by the
//! socket's session, with an overflow flag.
//!
//! It replaces a tokio mpsc channel per socket, which preallocates a 32-slot block (~2.3 KiB)
//! and needs a cancellation token beside it for the overflow flag; an idle socket here costs one
//! small allocation, and a queue that has been empty allocates nothing.
//!
//! Invariants:
//! - One consumer (the session) and any number of producers; the lock is held only for the
//!   queue operation and the wake-up, never across an await.
//! - Once overflowed, the queue stays overflowed: nothing more is queued and nothing more is
//!   handed out, so a subscriber that fell behind never sees a gap in what it does receive.
//! - The consumer is woken when an item lands in an empty queue and when the queue overflows;
//!   a consumer that finds an item never sleeps, so those wake-ups are enough.
//! - Capacity beyond [`KEEP_ITEMS`] is released once the queue runs empty, so a burst does not
//!   leave every socket holding its high-water mark.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use super::registry::Delivery;

/// Capacity an empty queue may keep (a socket receiving a steady trickle reuses it instead of
/// allocating per message).
const KEEP_ITEMS: usize = 4;

/// What [`Queue::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued for the consumer.
    Queued,
    /// The queue was full: it is now overflowed and the item dropped.
    Overflowed,
    /// The queue had overflowed before; the item was dropped.
    Dropped,
}

/// A bounded single-consumer queue of deliveries; see the module header.
#[derive(Default)]
pub(crate) struct Queue {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    items: VecDeque<Delivery>,
    overflowed: bool,
    /// The task waiting in [`Queue::poll_recv`].
    recv: Option<Waker>,
    /// The task waiting in [`Queue::poll_overflowed`].
    overflow: Option<Waker>,
}

impl Queue {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queue `d` unless the queue already holds `bound` items.
    pub(crate) fn push(&self, d: Delivery, bound: usize) -> Pushed {
        let mut inner = self.lock();
        if inner.overflowed {
            return Pushed::Dropped;
        }
        if inner.items.len() >= bound {
            inner.overflowed = true;
            inner.items = VecDeque::new();
            for waker in [inner.recv.take(), inner.overflow.take()]
                .into_iter()
                .flatten()
            {
                waker.wake();
            }
            return Pushed::Overflowed;
        }
        let was_empty = inner.items.is_empty();
        inner.items.push_back(d);
        if was_empty && let Some(waker) = &inner.recv {
            // Kept for the next time: the consumer polls with the same task's waker.
            waker.wake_by_ref();
        }
        Pushed::Queued
    }

    /// The next item: `Ready(Err)` once overflowed, `Pending` (consumer registered) when empty.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Result<Delivery, ()>> {
        let mut inner = self.lock();
        if inner.overflowed {
            return Poll::Ready(Err(()));
        }
        if let Some(d) = pop(&mut inner) {
            return Poll::Ready(Ok(d));
        }
        register(&mut inner.recv, cx);
        Poll::Pending
    }

    /// The next item if one is queued (none once overflowed).
    pub(crate) fn try_recv(&self) -> Option<Delivery> {
        let mut inner = self.lock();
        if inner.overflowed {
            return None;
        }
        pop(&mut inner)
    }

    /// `Ready` once the queue has overflowed.
    pub(crate) fn poll_overflowed(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.lock();
        if inner.overflowed {
            return Poll::Ready(());
        }
        register(&mut inner.overflow, cx);
        Poll::Pending
    }

    /// Whether the queue has overflowed.
    pub(crate) fn is_overflowed(&self) -> bool {
        self.lock().overflowed
    }
}

fn pop(inner: &mut Inner) -> Option<Delivery> {
    let d = inner.items.pop_front()?;
    if inner.items.is_empty() && inner.items.capacity() > KEEP_ITEMS {
        inner.items = VecDeque::new();
    }
    Some(d)
}

/// Remember the polling task, without cloning its waker again when it is the one stored.
fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use super::*;
    use crate::bus::Payload;

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn item(body: &'static [u8]) -> Delivery {
        Delivery::detached("c", Payload::from_bytes(bytes::Bytes::from_static(body)))
    }

    #[test]
    fn wakes_on_the_first_item_and_on_overflow_only() {
        let q = Queue::default();
        let count = Arc::new(Count::default());
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(q.poll_recv(&mut cx).is_pending());
        assert_eq!(q.push(item(b"a"), 2), Pushed::Queued);
        assert_eq!(q.push(item(b"b"), 2), Pushed::Queued);
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "one wake per empty → non-empty"
        );
        let Poll::Ready(Ok(d)) = q.poll_recv(&mut cx) else {
            panic!("an item was queued")
        };
        assert_eq!(d.payload.as_bytes(), b"a");
        assert_eq!(
            q.try_recv().map(|d| d.payload.clone()),
            Some(item(b"b").payload.clone())
        );
        assert!(q.try_recv().is_none());
        assert!(q.poll_overflowed(&mut cx).is_pending());
        q.push(item(b"c"), 2);
        q.push(item(b"d"), 2);
        assert_eq!(q.push(item(b"e"), 2), Pushed::Overflowed);
        assert_eq!(q.push(item(b"f"), 2), Pushed::Dropped);
        assert!(q.is_overflowed());
        assert!(
            q.try_recv().is_none(),
            "nothing is handed out after an overflow"
        );
        assert!(matches!(q.poll_recv(&mut cx), Poll::Ready(Err(()))));
        assert!(q.poll_overflowed(&mut cx).is_ready());
    }

    #[test]
    fn a_drained_queue_gives_back_what_a_burst_took() {
        let q = Queue::default();
        for _ in 0..100 {
            q.push(item(b"x"), 1000);
        }
        while q.try_recv().is_some() {}
        assert!(q.lock().items.capacity() <= KEEP_ITEMS);
    }
}
