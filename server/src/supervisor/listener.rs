//! The listening socket, bound once by the master and kept for its whole life.
//!
//! Workers inherit it across exec (see `children.rs`), so a worker that dies or is replaced
//! never closes the kernel's accept queue. The socket is non-blocking (the flag lives on the
//! shared open file description, so it covers every worker) and close-on-exec in the master:
//! only the fd a worker is given on purpose crosses exec.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::config::BindAddr;

/// Pending connections the kernel queues for us.
const BACKLOG: i32 = 4096;

/// A bound, listening socket owned by the master.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// The unix socket path to remove on exit, when we created it.
    unix_path: Option<PathBuf>,
}

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// bind() failed; the most common cause is an address already in use.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// What we tried to bind.
        addr: String,
        /// The system error.
        source: io::Error,
    },
}

impl Listener {
    /// Bind and listen on `addr`; a unix socket gets file mode `mode`.
    pub fn bind(addr: &BindAddr, mode: u32) -> Result<Self, ListenError> {
        let err = |source| ListenError::Bind {
            addr: addr.to_string(),
            source,
        };
        match addr {
            BindAddr::Tcp(sa) => {
                let s = Socket::new(Domain::for_address(*sa), Type::STREAM, Some(Protocol::TCP))
                    .map_err(err)?;
                s.set_reuse_address(true).map_err(err)?;
                s.set_nonblocking(true).map_err(err)?;
                s.bind(&(*sa).into()).map_err(err)?;
                s.listen(BACKLOG).map_err(err)?;
                Ok(Listener {
                    fd: s.into(),
                    unix_path: None,
                })
            }
            BindAddr::Unix(path) => {
                remove_stale_socket(path).map_err(err)?;
                let s = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(err)?;
                s.set_nonblocking(true).map_err(err)?;
                s.bind(&SockAddr::unix(path).map_err(err)?).map_err(err)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(err)?;
                s.listen(BACKLOG).map_err(err)?;
                Ok(Listener {
                    fd: s.into(),
                    unix_path: Some(path.clone()),
                })
            }
        }
    }

    /// Adopt an already-listening socket (systemd socket activation).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        let s = Socket::from(fd);
        s.set_nonblocking(true)?;
        Ok(Listener {
            fd: s.into(),
            unix_path: None,
        })
    }

    /// The fd handed to workers.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.unix_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A leftover socket file from a previous run is removed, but only if nothing answers on it:
/// a live server's socket is never stolen.
fn remove_stale_socket(path: &std::path::Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    "another server is listening on this socket",
                ));
            }
            std::fs::remove_file(path)
        }
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "the path exists and is not a socket",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
