//! The worker's end of its control pipe to the master: ready, heartbeat, recycle.
//!
//! One byte per message (see `supervisor::Control`). The heartbeat is written by a task on the
//! worker's own runtime, so a stalled runtime stops beating and the master replaces it.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::supervisor::Control;

/// How often the heartbeat is written.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);

/// Handle on the control pipe; cheap to clone. A no-op when the worker runs without a master
/// (in-process tests).
#[derive(Clone, Debug, Default)]
pub struct ControlPipe {
    file: Option<Arc<Mutex<File>>>,
}

impl ControlPipe {
    /// Wrap the inherited write end.
    pub fn new(fd: OwnedFd) -> Self {
        let _ = nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        );
        ControlPipe {
            file: Some(Arc::new(Mutex::new(File::from(fd)))),
        }
    }

    /// Tell the master something. Never blocks: if the pipe is full the master is not reading,
    /// and a lost heartbeat byte is harmless.
    pub fn send(&self, msg: Control) {
        if let Some(f) = &self.file {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let _ = f.write(&[msg as u8]);
        }
    }

    /// Beat forever (spawn this on the worker runtime).
    pub async fn heartbeat(self) {
        let mut tick = tokio::time::interval(HEARTBEAT_INTERVAL);
        loop {
            tick.tick().await;
            self.send(Control::Heartbeat);
        }
    }
}
