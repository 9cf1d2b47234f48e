//! Opaque TCP: bytes both ways, never parsed.
//!
//! Used for services declared `protocol: opaque` (Redis, PostgreSQL: the server often speaks
//! first, so nothing waits for the client), for connections detection could not identify as
//! HTTP, and for `CONNECT` tunnels. Half-close is honoured: when one side finishes sending, the
//! other side's write half is shut down and bytes keep flowing the other way until it finishes
//! too. A tunnel runs until both sides are done or the drain deadline passes.

use std::net::IpAddr;

use tokio::io::{AsyncRead, AsyncWrite, copy_bidirectional};
use tokio::net::TcpStream;
use tracing::debug;

use crate::balance::{Lease, Outcome};
use crate::drain::Drain;
use crate::errors::ProxyError;
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
    match dispatch.endpoint.connect().await {
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

/// Copies between `client` and `server` until both directions end or the drain deadline.
pub async fn tunnel<A, B>(mut client: A, mut server: B, drain: &Drain)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    tokio::select! {
        result = copy_bidirectional(&mut client, &mut server) => match result {
            Ok((sent, received)) => debug!(sent, received, "tunnel closed"),
            Err(error) => debug!(%error, "tunnel failed"),
        },
        _ = drain.deadline() => debug!("tunnel cut at drain deadline"),
    }
}
