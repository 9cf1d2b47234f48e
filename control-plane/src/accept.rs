//! Accept: the control plane's ports take TLS and plaintext on the same address.
//!
//! With a CA, herd-control presents its own certificate ([`crate::identity::own`]) on its
//! discovery and identity ports. A connection whose first byte is a TLS handshake record is
//! served over TLS; the client may present a mesh certificate (a certified proxy does, for
//! mutual TLS) or none (a proxy asking for its first certificate). Anything else is served as
//! plaintext gRPC, for proxies configured without identity and for `herdctl`. A connection
//! closed before its first byte (a TCP probe) is neither served nor counted. What a connection
//! proved travels with it to the gRPC services as [`Peer`], in each request's extensions.
//!
//! Handshakes run in their own tasks, bounded by [`HANDSHAKE_TIMEOUT`], so a client that
//! connects and says nothing holds up no one else.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use herd_identity::SpiffeId;
use herd_identity::verify::peer_identity;
use prometheus::IntCounterVec;
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::either::Either;
use tracing::debug;

/// Bounds the wait for a client's first byte and its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// First byte of a TLS record carrying a handshake message (a ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// What a connection proved, as the gRPC services see it
/// (`request.extensions().get::<Peer>()`).
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The client certificate's SPIFFE ID, verified against the trust bundle; `None` without
    /// TLS or without a client certificate.
    pub identity: Option<Arc<SpiffeId>>,
}

impl Peer {
    /// `plaintext`, `tls` (the server authenticated) or `mutual` (both sides).
    pub fn security(&self) -> &'static str {
        match (self.tls, &self.identity) {
            (false, _) => "plaintext",
            (true, None) => "tls",
            (true, Some(_)) => "mutual",
        }
    }
}

/// One accepted connection.
pub struct Conn {
    io: Either<TcpStream, TlsStream<TcpStream>>,
    peer: Peer,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        self.peer.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The connections of `listener`, TLS ones handshaken with the latest of `tls` (every
/// connection plaintext without it); `port` names the listener in the metrics.
pub fn incoming(
    listener: TcpListener,
    tls: Option<watch::Receiver<Arc<ServerConfig>>>,
    port: &'static str,
    connections: IntCounterVec,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // Out of file descriptors and the like: the server decides.
                        if tx.send(Err(error)).await.is_err() { return }
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let tls = tls.as_ref().map(|rx| rx.borrow().clone());
            let tx = tx.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                let conn = tokio::time::timeout(HANDSHAKE_TIMEOUT, accept(tcp, addr, tls)).await;
                match conn {
                    Ok(Ok(conn)) => {
                        connections
                            .with_label_values(&[port, conn.peer.security()])
                            .inc();
                        let _ = tx.send(Ok(conn)).await;
                    }
                    Ok(Err(error)) if error.kind() == io::ErrorKind::UnexpectedEof => {}
                    Ok(Err(error)) => {
                        connections.with_label_values(&[port, "failed"]).inc();
                        debug!(%addr, port, %error, "connection refused");
                    }
                    Err(_) => {
                        connections.with_label_values(&[port, "failed"]).inc();
                        debug!(%addr, port, "no handshake within {HANDSHAKE_TIMEOUT:?}");
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

async fn accept(
    tcp: TcpStream,
    addr: SocketAddr,
    tls: Option<Arc<ServerConfig>>,
) -> io::Result<Conn> {
    let plain = |tcp| Conn {
        io: Either::Left(tcp),
        peer: Peer {
            addr: Some(addr),
            ..Peer::default()
        },
    };
    let Some(config) = tls else {
        return Ok(plain(tcp));
    };
    let mut first = [0u8; 1];
    if tcp.peek(&mut first).await? == 0 {
        // Closed before a byte: a port probe, nothing to serve or count.
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if first[0] != TLS_HANDSHAKE {
        return Ok(plain(tcp));
    }
    let stream = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await?;
    let identity = peer_identity(stream.get_ref().1).map(Arc::new);
    Ok(Conn {
        io: Either::Right(stream),
        peer: Peer {
            addr: Some(addr),
            tls: true,
            identity,
        },
    })
}

#[cfg(test)]
mod tests;
