//! Opaque TCP: bytes both ways, never parsed.
//!
//! Used for services declared `protocol: opaque` (Redis, PostgreSQL: the server often speaks
//! first, so nothing waits for the client), for connections detection could not identify as
//! HTTP, and for `CONNECT` tunnels. Half-close is honoured: when one side finishes sending, the
//! other side's write half is shut down and bytes keep flowing the other way until it finishes
//! too. A tunnel runs until both sides are done or the drain deadline passes.

use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, copy_bidirectional};
use tokio::net::TcpStream;
use tracing::debug;

use crate::balance::Lease;
use crate::drain::Drain;
use crate::errors::ProxyError;
use crate::metrics::TcpMetrics;
use crate::outcome::Outcome;
use crate::route::ServiceTarget;

/// Connects to an endpoint of `service` chosen by its balancer. The returned lease counts the
/// connection as the endpoint's load for as long as it is held (keep it for the tunnel's life:
/// least-request then balances long-lived connections).
pub async fn connect(
    service: &ServiceTarget,
    client: IpAddr,
) -> Result<(TcpStream, Option<Lease>), ProxyError> {
    let balancer = &service.balancer;
    let hash = balancer.hash_of(&http::HeaderMap::new(), client);
    let mut dispatch = balancer.dispatch(hash, false).await?;
    match dispatch.member.endpoint.connect().await {
        Ok(stream) => {
            balancer.record(&mut dispatch, Outcome::Status(200));
            Ok((stream, dispatch.take_lease()))
        }
        Err(error) => {
            balancer.record(&mut dispatch, Outcome::ConnectFailure);
            Err(error)
        }
    }
}

/// Copies between `client` and `server` until both directions end or the drain deadline,
/// counting the connection and its bytes in `metrics` as they flow (a long-lived connection's
/// traffic shows while it is open, not only when it closes).
pub async fn tunnel<A, B>(mut client: A, server: B, drain: &Drain, metrics: &TcpMetrics)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    metrics.opened.inc();
    metrics.open.inc();
    let mut server = Counted {
        inner: server,
        metrics,
    };
    let ok = tokio::select! {
        result = copy_bidirectional(&mut client, &mut server) => match result {
            Ok((sent, received)) => {
                debug!(sent, received, "tunnel closed");
                true
            }
            Err(error) => {
                debug!(%error, "tunnel failed");
                false
            }
        },
        _ = drain.deadline() => {
            debug!("tunnel cut at drain deadline");
            false
        }
    };
    metrics.open.dec();
    if ok {
        metrics.closed_ok.inc()
    } else {
        metrics.closed_error.inc()
    }
}

pin_project_lite::pin_project! {
    /// The endpoint's side of a tunnel, counting bytes each way.
    struct Counted<'m, T> {
        #[pin]
        inner: T,
        metrics: &'m TcpMetrics,
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
        this.metrics
            .received
            .inc_by((buf.filled().len() - before) as u64);
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
