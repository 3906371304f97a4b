//! The plain TCP baseline: the least a server can do to relay the same messages. It accepts
//! websocket upgrades without checking them, and relays each text frame a `publish` socket
//! sends as the same server frame bytes to every other socket, through one shared buffer
//! (`Bytes`) and one `write` per socket per batch of pending frames. No Redis, no flags, no
//! heartbeats, no limits: what the machine can do, for the report to put ours against.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::broadcast;

use crate::client::find;
use crate::frame;

/// Frames buffered per subscriber before it lags (the windowed publisher stays far below).
const CHANNEL: usize = 16 * 1024;
/// Most frames gathered into one write.
const BATCH: usize = 64;

/// Serve on `bind` with a multi-thread runtime of `threads` threads until killed.
pub fn run(bind: SocketAddr, threads: usize) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(bind).await?;
        let (tx, _) = broadcast::channel::<Bytes>(CHANNEL);
        loop {
            let (stream, _) = listener.accept().await?;
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = serve(stream, tx).await;
            });
        }
    })
}

async fn serve(mut stream: TcpStream, tx: broadcast::Sender<Bytes>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = BytesMut::with_capacity(1024);
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    };
    let head = buf.split_to(head_end);
    let publisher = find(&head, b"publish").is_some();
    // Subscribe before answering, so nothing sent after the upgrade is missed.
    let rx = (!publisher).then(|| tx.subscribe());
    stream
        .write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
        )
        .await?;
    match rx {
        None => relay(stream, buf, tx).await,
        Some(rx) => fan_out(stream, rx).await,
    }
}

async fn relay(
    mut stream: TcpStream,
    mut buf: BytesMut,
    tx: broadcast::Sender<Bytes>,
) -> std::io::Result<()> {
    loop {
        while let Some(f) = frame::parse(&mut buf).map_err(std::io::Error::other)? {
            match f.opcode {
                frame::OP_TEXT | frame::OP_BINARY => {
                    let _ = tx.send(frame::encode_server(f.opcode, &f.payload));
                }
                frame::OP_CLOSE => return Ok(()),
                _ => {}
            }
        }
        buf.reserve(4096);
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

async fn fan_out(mut stream: TcpStream, mut rx: broadcast::Receiver<Bytes>) -> std::io::Result<()> {
    let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH);
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            m = rx.recv() => match m {
                Ok(first) => {
                    batch.push(first);
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(b) => batch.push(b),
                            Err(_) => break,
                        }
                    }
                    if batch.len() == 1 {
                        stream.write_all(&batch[0]).await?;
                    } else {
                        let joined: Vec<u8> = batch.concat();
                        stream.write_all(&joined).await?;
                    }
                    batch.clear();
                }
                // A lagging reader loses messages: the client sees the gap and counts it.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            },
            // A close frame or EOF from the client ends the socket.
            n = stream.read(&mut scratch) => if n? == 0 { return Ok(()) },
        }
    }
}
