//! A flood of large messages for the slow-consumer test (`chaos_consumers.rs`): numbered
//! messages padded with leading zeros to a fixed size (so a [`super::fleet::Fleet`] reads them
//! like the small ones), published straight to Redis (`PUBLISH` only: nothing is stored for
//! replay) at a steady rate. A failed publish stops it; [`Flood::stop`] fails the test then.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// Publishes numbered messages of a fixed size on one channel at a steady rate.
pub struct Flood {
    stop: Arc<AtomicBool>,
    last: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<Result<(), String>>,
}

impl Flood {
    /// Start publishing `1, 2, 3, …` padded to `bytes` on `channel` of the Redis at `port`,
    /// `rate` per second.
    pub fn start(port: u16, channel: &str, bytes: usize, rate: u64) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicU64::new(0));
        let (s, l, channel) = (stop.clone(), last.clone(), channel.to_owned());
        let task = tokio::spawn(async move {
            let tcp = TcpStream::connect(("127.0.0.1", port))
                .await
                .map_err(|e| e.to_string())?;
            let (r, mut w) = tcp.into_split();
            let mut r = BufReader::new(r);
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut line = String::new();
            while !s.load(Ordering::Relaxed) {
                tick.tick().await;
                let n = l.load(Ordering::Relaxed) + 1;
                let body = format!("{n:0>bytes$}");
                let cmd = format!(
                    "*3\r\n$7\r\nPUBLISH\r\n${}\r\n{channel}\r\n${}\r\n{body}\r\n",
                    channel.len(),
                    body.len()
                );
                w.write_all(cmd.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                line.clear();
                r.read_line(&mut line).await.map_err(|e| e.to_string())?;
                if !line.starts_with(':') {
                    return Err(format!("PUBLISH answered {line:?}"));
                }
                l.store(n, Ordering::Relaxed);
            }
            Ok(())
        });
        Flood { stop, last, task }
    }

    /// Stop; the last number Redis accepted.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let result = self.task.await.expect("the flood task");
        assert_eq!(result, Ok(()), "the flood publisher failed");
        self.last.load(Ordering::Relaxed)
    }
}
