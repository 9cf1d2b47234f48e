//! `CONNECT host:port` on the outbound listener (what an app with `HTTPS_PROXY` sends): a byte
//! tunnel to an endpoint of the service claiming the authority, else, under `egress: any`, to the
//! host itself (DNS, [`EGRESS_CONNECT_TIMEOUT`]).
//!
//! Two rules bound where a tunnel to a host outside the mesh may go, each answered with 403 and
//! counted (`herd_http_responses_total{service="unknown", error=...}`):
//! - `proxy.outbound.egress: mesh-only` refuses every authority no service claims
//!   (`egress-refused`), before any DNS lookup or connection;
//! - a target that is one of the proxy's own listeners ([`own`]) is refused (`own-listener`):
//!   checked on the names that need no DNS (IP literals, `localhost`), then on every address the
//!   name resolves to, and last on the connection made, whose own address tells whether the
//!   target is an address of this host.

use std::time::Duration;

use herd_config::Egress;
use http::uri::Authority;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tracing::debug;

use super::ConnCtx;
use super::own::{self, Listeners};
use crate::endpoint;
use crate::errors::ProxyError;
use crate::metrics::TlsPeer;
use crate::opaque;
use crate::response::ResponseBody;
use crate::snapshot::Snapshot;

/// How long a `CONNECT` to a host outside the mesh may take to connect: such hosts are remote
/// (federation peers), so this is longer than the in-cluster `connectTimeout`.
const EGRESS_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens the tunnel `req` asks for, answers 200, then carries bytes both ways.
pub async fn tunnel(
    mut req: Request<Incoming>,
    snapshot: &Snapshot,
    ctx: &ConnCtx,
) -> Result<Response<ResponseBody>, ProxyError> {
    let authority = req
        .uri()
        .authority()
        .ok_or(ProxyError::NoAuthority)?
        .clone();
    let (upstream, tcp, idle) = match snapshot.routes.lookup(authority.as_str()) {
        Ok(service) => (
            opaque::connect(service, ctx.client.ip()).await?,
            service.tcp.clone(),
            service.tunnel_idle,
        ),
        Err(ProxyError::NoService(_)) => (
            opaque::Upstream {
                io: tokio_util::either::Either::Left(egress(&authority, snapshot, ctx).await?),
                lease: None,
                identity: None,
            },
            snapshot.egress.clone(),
            snapshot.config.proxy.tunnel_idle(),
        ),
        Err(error) => return Err(error),
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let drain = ctx.drain.clone();
    ctx.drain.spawn(async move {
        let opaque::Upstream {
            io,
            lease: _lease,
            identity,
        } = upstream;
        match on_upgrade.await {
            Ok(client) => {
                let peer = TlsPeer::server(identity.as_deref());
                opaque::tunnel(TokioIo::new(client), io, idle, &drain, &tcp, peer).await
            }
            Err(error) => debug!(%error, "CONNECT upgrade failed"),
        }
    });
    Ok(Response::new(ResponseBody::empty()))
}

/// Connects to `authority`, a host outside the mesh, unless a rule refuses it.
async fn egress(
    authority: &Authority,
    snapshot: &Snapshot,
    ctx: &ConnCtx,
) -> Result<TcpStream, ProxyError> {
    let egress = snapshot
        .config
        .proxy
        .outbound
        .as_ref()
        .map_or(Egress::default(), |o| o.egress);
    if egress == Egress::MeshOnly {
        return Err(ProxyError::EgressRefused(authority.to_string()));
    }
    let port = authority.port_u16().ok_or(ProxyError::InvalidAuthority)?;
    let listeners = Listeners {
        fixed: &ctx.own_listeners,
        opaque: &snapshot.by_listener,
    };
    let own = |addr: std::net::SocketAddr| {
        if listeners.reached_by(addr, None) {
            Err(ProxyError::OwnListener(addr))
        } else {
            Ok(())
        }
    };
    for ip in own::literal(authority.host()).into_iter().flatten() {
        own((ip, port).into())?;
    }
    let resolve_error = |source| ProxyError::Resolve {
        authority: authority.to_string(),
        source,
    };
    let addrs: Vec<_> = tokio::net::lookup_host((authority.host().trim_matches(['[', ']']), port))
        .await
        .map_err(resolve_error)?
        .collect();
    for &addr in &addrs {
        own(addr)?;
    }
    let addr = *addrs
        .first()
        .ok_or_else(|| resolve_error(std::io::Error::other("no addresses")))?;
    let stream = endpoint::connect(addr, EGRESS_CONNECT_TIMEOUT).await?;
    if let (Ok(peer), Ok(local)) = (stream.peer_addr(), stream.local_addr())
        && listeners.reached_by(peer, Some(local.ip()))
    {
        return Err(ProxyError::OwnListener(peer));
    }
    Ok(stream)
}
