//! Opaque TCP: bytes both ways, never parsed.
//!
//! Used for services declared `protocol: opaque` (Redis, PostgreSQL: the server often speaks
//! first, so nothing waits for the client), for connections detection could not identify as
//! HTTP, and for `CONNECT` tunnels. Half-close is honoured: when one side finishes sending, the
//! other side's write half is shut down and bytes keep flowing the other way until it finishes
//! too. A tunnel runs until both sides are done or the drain deadline passes.

use tokio::io::{AsyncRead, AsyncWrite, copy_bidirectional};
use tracing::debug;

use crate::drain::Drain;

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
