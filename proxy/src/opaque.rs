//! Opaque TCP: bytes both ways, never parsed.
//!
//! Used for services declared `protocol: opaque` (Redis, PostgreSQL: the server often speaks
//! first, so nothing waits for the client), for connections detection could not identify as
//! HTTP, and for `CONNECT` tunnels. Half-close is honoured: when one side finishes sending, the
//! other side's write half is shut down and bytes keep flowing the other way until it finishes
//! too. A tunnel runs until both sides are done, the drain deadline passes, or no byte has
//! crossed it either way for the tunnel idle timeout.
//!
//! The idle timeout is what frees a tunnel one side has left without closing: a client's FIN
//! to an upstream that never closes its side (a Redis or Postgres server, a WebSocket app), or
//! a peer whose host vanished. Nothing else ends such a tunnel before shutdown, and each one
//! holds two sockets and a slot of the listener's `maxConnections`. Activity is a flag set by
//! every read and write on the endpoint's side (every byte either way crosses it: what the
//! client sends is written there), checked every eighth of the timeout, so the hot path costs
//! one store and no clock read; a tunnel is closed after between one and one and an eighth
//! timeouts of silence, never sooner.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use herd_identity::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, copy_bidirectional};
use tokio::time::Instant;
use tracing::debug;

use crate::balance::Lease;
use crate::drain::Drain;
use crate::endpoint::Io;
use crate::errors::ProxyError;
use crate::identity::Alpn;
use crate::metrics::{TcpMetrics, TlsPeer};
use crate::outcome::Outcome;
use crate::route::ServiceTarget;

/// A connection to an endpoint of an opaque service.
pub struct Upstream {
    pub io: Io,
    /// Counts the connection as the endpoint's load for as long as it is held (keep it for the
    /// tunnel's life: least-request then balances long-lived connections).
    pub lease: Option<Lease>,
    /// The SPIFFE ID the endpoint presented, when it is meshed (reached over mutual TLS).
    pub identity: Option<Arc<SpiffeId>>,
}

/// Connects to an endpoint of `service` chosen by its balancer (over mutual TLS when it is
/// meshed).
pub async fn connect(service: &ServiceTarget, client: IpAddr) -> Result<Upstream, ProxyError> {
    let balancer = &service.balancer;
    let hash = balancer.hash_of(&http::HeaderMap::new(), client);
    let mut dispatch = balancer.dispatch(hash, false).await?;
    match dispatch.member.endpoint.connect_io(Alpn::Opaque).await {
        Ok(io) => {
            balancer.record(&mut dispatch, Outcome::Status(200));
            Ok(Upstream {
                io,
                lease: dispatch.take_lease(),
                identity: dispatch.member.endpoint.key().peer.clone(),
            })
        }
        Err(error) => {
            balancer.record(&mut dispatch, Outcome::ConnectFailure);
            Err(error)
        }
    }
}

/// Copies between `client` and `server` until both directions end, the drain deadline, or
/// `idle_timeout` without a byte either way (`None`: never), counting the connection and its
/// bytes in `metrics` as they flow (a long-lived connection's traffic shows while it is open,
/// not only when it closes); its opening and closing are counted with what mutual TLS proved of
/// `peer`. Both connections are closed when this returns (dropped).
pub async fn tunnel<A, B>(
    mut client: A,
    server: B,
    idle_timeout: Option<Duration>,
    drain: &Drain,
    metrics: &TcpMetrics,
    peer: TlsPeer<'_>,
) where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let connections = metrics.connections(peer);
    connections.opened.inc();
    metrics.open.inc();
    let active = AtomicBool::new(false);
    let mut server = Counted {
        inner: server,
        metrics,
        active: &active,
    };
    let closed = tokio::select! {
        result = copy_bidirectional(&mut client, &mut server) => match result {
            Ok((sent, received)) => {
                debug!(sent, received, "tunnel closed");
                &connections.closed_ok
            }
            Err(error) => {
                debug!(%error, "tunnel failed");
                &connections.closed_error
            }
        },
        _ = drain.deadline() => {
            debug!("tunnel cut at drain deadline");
            &connections.closed_error
        }
        _ = silence(&active, idle_timeout) => {
            debug!(?idle_timeout, "tunnel closed: idle");
            &connections.closed_idle
        }
    };
    metrics.open.dec();
    closed.inc();
}

/// How many times per idle timeout the activity flag is checked: the timeout is overshot by at
/// most this fraction of it.
const IDLE_CHECKS: u32 = 8;

/// Resolves once `active` has stayed unset for `timeout` (never, for `None`), clearing it at
/// each check. Silence is counted from the first check that found the flag unset, so it is
/// never shorter than `timeout`.
async fn silence(active: &AtomicBool, timeout: Option<Duration>) {
    let Some(timeout) = timeout else {
        return std::future::pending().await;
    };
    let period = (timeout / IDLE_CHECKS).max(Duration::from_millis(1));
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(period).await;
        let now = Instant::now();
        if active.swap(false, Ordering::Relaxed) {
            quiet_since = now;
        } else if now.duration_since(quiet_since) >= timeout {
            return;
        }
    }
}

pin_project_lite::pin_project! {
    /// The endpoint's side of a tunnel, counting bytes each way and flagging that some moved.
    struct Counted<'m, T> {
        #[pin]
        inner: T,
        metrics: &'m TcpMetrics,
        active: &'m AtomicBool,
    }
}

impl<T: AsyncRead> AsyncRead for Counted<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.metrics.received.inc_by(n as u64);
            this.active.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.metrics.sent.inc_by(n as u64);
            this.active.store(true, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
