//! Giving the heap back after a burst of connections.
//!
//! A handshake allocates far more than the socket it leaves behind (hyper's connection buffers,
//! the request, the response), and thousands arriving at once leave the freed memory scattered
//! between long-lived sockets, where glibc's allocator keeps it: measured with 50,000 idle
//! sockets over 4 workers, about 0.8 KiB per socket of the workers' RSS was such free heap.
//! Once a burst is over (at least [`BURST`] websockets opened since the last trim, and none in
//! the last [`QUIET`]), the worker asks glibc to return free pages (`malloc_trim`).
//!
//! Invariant: nothing is trimmed while connections keep arriving, so a steady stream of
//! handshakes never pays for it; a trim takes a few milliseconds of the worker's thread.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::App;

/// Websockets opened since the last trim that make a burst.
const BURST: u64 = 1000;
/// How long no websocket may have opened before the trim.
const QUIET: Duration = Duration::from_secs(1);

/// Watch the worker's websocket count; trim after each burst. Runs until the worker exits.
pub(super) async fn after_bursts(app: Arc<App>) {
    let opened = || app.ws_stats.opened.load(Ordering::Relaxed);
    let mut at_trim = opened();
    let mut last = at_trim;
    let mut tick = tokio::time::interval(QUIET);
    loop {
        tick.tick().await;
        let now = opened();
        if now == last && now.saturating_sub(at_trim) >= BURST {
            let started = std::time::Instant::now();
            trim();
            tracing::debug!(
                opened = now - at_trim,
                took_ms = started.elapsed().as_millis() as u64,
                "heap trimmed after a burst of websockets"
            );
            at_trim = now;
        }
        last = now;
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() {
    // SAFETY: malloc_trim only walks and releases the allocator's free memory; it takes the
    // allocator's own locks and has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
