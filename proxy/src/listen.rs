//! The listen stage: accept connections, one task and one span each.
//!
//! A listener holds at most `maxConnections` connections; beyond that it stops accepting and
//! new clients wait in the kernel's backlog until one closes, so a flood costs the proxy no
//! memory. Each accepted connection becomes an [`Accepted`], which carries the connection's
//! original destination: on a transparent listener (behind `herd-proxy init`'s iptables rules),
//! where the client meant to connect, read with `SO_ORIGINAL_DST` ([`original`]); `None` when
//! the listener is not transparent or the connection was made to the listener itself.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::drain::Drain;

mod original;

pub use original::original_destination;

/// A client connection, with everything later stages need to know about where it came from and
/// where it was going.
pub struct Accepted {
    pub stream: TcpStream,
    pub client: SocketAddr,
    /// The address of the listener that accepted it.
    pub local: SocketAddr,
    /// Where the client meant to connect, when iptables redirected it to a transparent
    /// listener.
    pub orig_dst: Option<SocketAddr>,
}

/// Which listener a connection came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Inbound,
    Outbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// Accepts on `listener` until draining starts or `stop` fires, running `handle` for each
/// connection as a task the drain tracks. A `transparent` listener reads each connection's
/// original destination.
pub async fn serve<H, F>(
    name: &'static str,
    listener: TcpListener,
    transparent: bool,
    max_connections: usize,
    drain: Drain,
    stop: CancellationToken,
    handle: H,
) where
    H: Fn(Accepted) -> F + Send + Sync + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(max_connections));
    let local = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            warn!(%error, listener = name, "listener has no address");
            return;
        }
    };
    loop {
        let accepted = tokio::select! {
            biased;
            _ = drain.started() => break,
            _ = stop.cancelled() => break,
            accepted = accept(&listener, &permits) => accepted,
        };
        let (stream, client, permit) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off rather than spin.
                warn!(%error, listener = name, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        // An IPv4 client of a dual-stack (`[::]`) listener as the IPv4 address it is: what
        // X-Forwarded-For, access logs and policies' IPv4 networks expect.
        let client = SocketAddr::new(client.ip().to_canonical(), client.port());
        let orig_dst = if transparent {
            original_destination(&stream)
        } else {
            None
        };
        let span = match orig_dst {
            Some(dst) => info_span!("conn", listener = name, client = %client, original = %dst),
            None => info_span!("conn", listener = name, client = %client),
        };
        let conn = Accepted {
            stream,
            client,
            local,
            orig_dst,
        };
        // The permit travels with the connection's future rather than in an `async` block
        // around it: such a block would hold the future twice (captured, then awaited), doubling
        // every connection's task.
        drain.spawn(
            Holding {
                future: handle(conn),
                _permit: permit,
            }
            .instrument(span),
        );
    }
    debug!(listener = name, %local, "stopped accepting");
}

pin_project_lite::pin_project! {
    /// A connection's future and its place under the listener's `maxConnections`, released when
    /// the connection ends.
    struct Holding<F> {
        #[pin]
        future: F,
        _permit: OwnedSemaphorePermit,
    }
}

impl<F: Future> Future for Holding<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().future.poll(cx)
    }
}

async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
) -> io::Result<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .expect("listener semaphore is never closed");
    let (stream, client) = listener.accept().await?;
    Ok((stream, client, permit))
}
