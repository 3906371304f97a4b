//! The load tool's websocket client: connect (optionally from a chosen loopback source
//! address), upgrade, then read messages and send masked frames. It is deliberately small so
//! that the tool measures the server, not itself; the baseline is read by this same code.
//!
//! Invariants: pings are answered with pongs as they arrive (the server closes sockets that
//! stay silent); a close frame or EOF ends the stream; fragmented messages are reassembled.

use std::net::{IpAddr, SocketAddr};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use crate::frame::{self, Frame, FrameError};

/// Read buffer per socket at the start; it grows for larger messages.
const READ_BUFFER_BYTES: usize = 2048;
/// Largest response head accepted during the upgrade.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// What can go wrong on a client socket.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connect, read or write failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The server did not answer the upgrade with 101.
    #[error("upgrade refused: {0}")]
    Refused(String),
    /// The server sent bytes that are not a websocket frame.
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    /// The server closed the socket (close frame with this code, or EOF = 1006).
    #[error("closed by the server with code {0}")]
    Closed(u16),
}

/// Where and how to open a socket.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The server's address.
    pub addr: SocketAddr,
    /// The value of the `Host` header.
    pub host: String,
}

impl Endpoint {
    /// An endpoint on `addr` with `Host: addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint {
            addr,
            host: addr.to_string(),
        }
    }
}

/// Open a TCP connection to `addr`, bound first to `source` when given (to use more than one
/// loopback address and so more than one ephemeral port range).
pub async fn tcp_connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        // Let connect choose the port (by the whole 4-tuple) instead of bind reserving one:
        // bind searches the source's ephemeral range for a port no socket holds, which grows
        // slow as tens of thousands of them fill it.
        #[cfg(target_os = "linux")]
        nix::sys::socket::setsockopt(
            &socket,
            nix::sys::socket::sockopt::IpBindAddressNoPort,
            &true,
        )
        .map_err(std::io::Error::from)?;
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One client websocket.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    out: BytesMut,
    /// Fragments of a message in progress.
    partial: Option<(u8, BytesMut)>,
}

/// A data message from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Whether it came as a text frame.
    pub text: bool,
    /// Its body.
    pub body: Bytes,
}

impl Conn {
    /// Connect and upgrade `GET path` (path includes the query), with extra header lines
    /// (`"Cookie: …\r\n"`), from `source` when given.
    pub async fn open(
        endpoint: &Endpoint,
        path: &str,
        extra_headers: &str,
        source: Option<IpAddr>,
    ) -> Result<Conn, ClientError> {
        let mut stream = tcp_connect(endpoint.addr, source).await?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             {extra_headers}\r\n",
            endpoint.host
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD_BYTES {
                return Err(ClientError::Refused("response head too large".into()));
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(ClientError::Refused(
                    "connection closed during upgrade".into(),
                ));
            }
        };
        let head = buf.split_to(head_end);
        let status = head[..]
            .split(|b: &u8| *b == b'\r')
            .next()
            .unwrap_or_default();
        if !status.starts_with(b"HTTP/1.1 101") {
            return Err(ClientError::Refused(
                String::from_utf8_lossy(status).into_owned(),
            ));
        }
        Ok(Conn {
            stream,
            buf,
            out: BytesMut::new(),
            partial: None,
        })
    }

    /// The next data message; pings are answered on the way. `Err(Closed)` at the end.
    pub async fn recv(&mut self) -> Result<Message, ClientError> {
        loop {
            while let Some(f) = frame::parse(&mut self.buf)? {
                if let Some(m) = self.on_frame(f).await? {
                    return Ok(m);
                }
            }
            if self.buf.capacity() - self.buf.len() < 512 {
                self.buf.reserve(READ_BUFFER_BYTES);
            }
            if self.stream.read_buf(&mut self.buf).await? == 0 {
                return Err(ClientError::Closed(1006));
            }
        }
    }

    async fn on_frame(&mut self, f: Frame) -> Result<Option<Message>, ClientError> {
        match f.opcode {
            frame::OP_PING => {
                self.send_frame(frame::OP_PONG, &f.payload).await?;
                Ok(None)
            }
            frame::OP_PONG => Ok(None),
            frame::OP_CLOSE => {
                let code = if f.payload.len() >= 2 {
                    u16::from_be_bytes([f.payload[0], f.payload[1]])
                } else {
                    1005
                };
                // Answer the close so the server's handshake completes; ignore failures.
                let _ = self
                    .send_frame(frame::OP_CLOSE, &f.payload[..f.payload.len().min(2)])
                    .await;
                Err(ClientError::Closed(code))
            }
            op @ (frame::OP_TEXT | frame::OP_BINARY) if f.fin => Ok(Some(Message {
                text: op == frame::OP_TEXT,
                body: f.payload,
            })),
            op @ (frame::OP_TEXT | frame::OP_BINARY) => {
                self.partial = Some((op, BytesMut::from(&f.payload[..])));
                Ok(None)
            }
            frame::OP_CONTINUATION => {
                let Some((op, mut acc)) = self.partial.take() else {
                    return Ok(None);
                };
                acc.extend_from_slice(&f.payload);
                if f.fin {
                    Ok(Some(Message {
                        text: op == frame::OP_TEXT,
                        body: acc.freeze(),
                    }))
                } else {
                    self.partial = Some((op, acc));
                    Ok(None)
                }
            }
            _ => Ok(None),
        }
    }

    /// Send one text message.
    pub async fn send_text(&mut self, body: &[u8]) -> Result<(), ClientError> {
        self.send_frame(frame::OP_TEXT, body).await
    }

    async fn send_frame(&mut self, opcode: u8, payload: &[u8]) -> Result<(), ClientError> {
        self.out.clear();
        frame::encode_client(&mut self.out, opcode, payload);
        self.stream.write_all(&self.out).await?;
        Ok(())
    }

    /// Drop the connection abruptly: no close frame, and a zero linger so the kernel sends a
    /// reset instead of a FIN, as when a phone loses its network or a NAT forgets the flow.
    pub fn abort(self) {
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(std::time::Duration::ZERO));
        drop(self.stream);
    }

    /// Send a close frame (1000) and drop the connection without waiting for the answer.
    pub async fn close(mut self) {
        let _ = self
            .send_frame(frame::OP_CLOSE, &1000u16.to_be_bytes())
            .await;
        let _ = self.stream.shutdown().await;
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
