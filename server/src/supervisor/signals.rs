//! The master's signals, read synchronously from a `signalfd` in its poll loop.
//!
//! The handled signals are blocked for the whole process, so they queue on the signalfd instead
//! of interrupting anything; nothing runs in a signal handler. Workers are started with an empty
//! mask (see `children.rs`), so they see signals normally.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What a signal asks the master to do; each signal has one meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// TERM/INT: stop gracefully.
    Stop,
    /// QUIT: stop at once.
    Quit,
    /// HUP: rolling reload.
    Reload,
    /// TTIN: one worker more.
    More,
    /// TTOU: one worker fewer.
    Fewer,
    /// USR1: reopen log files.
    ReopenLogs,
    /// CHLD: a child changed state; reap.
    Child,
}

const HANDLED: [Signal; 9] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGUSR1,
    Signal::SIGCHLD,
    Signal::SIGPIPE,
];

/// Block the handled signals and open a non-blocking signalfd for them.
pub(super) fn open() -> nix::Result<SignalFd> {
    let mut mask = SigSet::empty();
    for s in HANDLED {
        mask.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
}

/// Drain every pending signal into events.
pub(super) fn read(fd: &SignalFd) -> Vec<Event> {
    let mut out = Vec::new();
    while let Ok(Some(info)) = fd.read_signal() {
        let event = match Signal::try_from(info.ssi_signo as i32) {
            Ok(Signal::SIGTERM | Signal::SIGINT) => Event::Stop,
            Ok(Signal::SIGQUIT) => Event::Quit,
            Ok(Signal::SIGHUP) => Event::Reload,
            Ok(Signal::SIGTTIN) => Event::More,
            Ok(Signal::SIGTTOU) => Event::Fewer,
            Ok(Signal::SIGUSR1) => Event::ReopenLogs,
            Ok(Signal::SIGCHLD) => Event::Child,
            _ => continue,
        };
        out.push(event);
    }
    out
}
