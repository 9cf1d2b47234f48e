//! Transparent mode: what a redirected connection's original destination means.
//!
//! `herd-proxy init` redirects the pod's TCP to the listeners; the listen stage reads where each
//! connection was going. Then:
//!
//! - inbound, the connection goes to the app at that address: the pod's own address and the port
//!   the client chose, so the app is reached exactly as it would be without the proxy (an app
//!   bound to 127.0.0.1 only stays unreachable from outside the pod). An address that is not
//!   this pod's is refused: the proxy is no relay to wherever a packet claims to be going.
//! - outbound, an address a service claims (`clusterIps`) is that service: HTTP detected, routed
//!   by the service's routes and balanced, with mutual TLS to meshed endpoints; an opaque service
//!   (and bytes that are not HTTP) tunnelled to one of its endpoints. The address of a meshed
//!   endpoint the proxy holds is that endpoint: the client chose the pod, so the connection is
//!   not balanced, but goes to that pod's proxy over mutual TLS (bytes, which the far proxy
//!   detects). Any other address gets what it would have without the mesh: a TCP connection to
//!   it, never sniffed (Sidekiq's TLS to remote instances, SMTP where the server speaks first),
//!   counted under the service `egress`, with no label naming the host.
//!
//! Either way an original destination that is one of the proxy's own listeners is refused: the
//! proxy never connects to itself, which is how a redirect loop would show (a proxy running as
//! another uid than `--proxy-uid` is exempt from nothing).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use herd_config::{Downstream, Egress, Protocol};
use tracing::{debug, info};

use super::{Listening, Peer, forward_opaque};
use crate::http::own;
use crate::identity::Alpn;
use crate::listen::{Accepted, Direction};
use crate::metrics::TlsPeer;
use crate::route::ServiceTarget;
use crate::snapshot::Snapshot;
use crate::{endpoint, opaque};

/// Connecting to a redirected connection's original destination outside the mesh: such hosts
/// are remote (federation peers), so this is longer than the in-cluster `connectTimeout`.
const ORIG_DST_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl Listening {
    /// The app an inbound connection goes to, and the address it goes to it at when the
    /// connection was redirected; why it must be closed instead.
    pub(super) fn inbound_app(
        &self,
        conn: &Accepted,
        snapshot: &Snapshot,
    ) -> Result<(Arc<ServiceTarget>, Option<SocketAddr>), &'static str> {
        match (conn.orig_dst, &snapshot.inbound_apps) {
            (Some(dst), Some(apps)) => {
                let local = conn.stream.local_addr().ok().map(|a| a.ip());
                if self.is_own_listener(snapshot, dst, local) {
                    return Err("loop");
                }
                if !is_local(dst.ip(), local) {
                    return Err("not-local");
                }
                Ok((apps.get(dst), Some(dst)))
            }
            _ => snapshot
                .inbound
                .clone()
                .map(|app| (app, None))
                .ok_or("no-destination"),
        }
    }

    /// Closes a redirected connection that may not be forwarded, counted and logged.
    pub(super) fn refuse(&self, direction: Direction, reason: &str, conn: &Accepted) {
        self.all_metrics.transparent_refused(direction, reason);
        let original = conn.orig_dst.map(|d| d.to_string());
        info!(
            client = %conn.client,
            original = original.as_deref().unwrap_or("none"),
            reason,
            "redirected connection refused"
        );
    }

    /// An outbound connection iptables redirected here, by where it was going.
    pub(super) async fn outbound_redirected(
        self,
        conn: Accepted,
        dst: SocketAddr,
        settings: &Downstream,
    ) {
        let snapshot = self.rx.borrow().clone();
        if self.is_own_listener(&snapshot, dst, None) {
            return self.refuse(Direction::Outbound, "loop", &conn);
        }
        if let Some(service) = snapshot.by_cluster_ip(dst).cloned() {
            drop(snapshot);
            return self.to_service(conn, dst, service, settings).await;
        }
        if let Some((service, member)) = snapshot.meshed_endpoint(dst) {
            drop(snapshot);
            if let Some(subscription) = &service.subscription {
                subscription.touch();
            }
            return match member.endpoint.connect_io(Alpn::Opaque).await {
                Ok(upstream) => {
                    debug!(service = %service.name, endpoint = %dst, "to a meshed endpoint");
                    let idle = service.tunnel_idle;
                    let tls = TlsPeer::server(member.endpoint.key().peer.as_deref());
                    opaque::tunnel(conn.stream, upstream, idle, &self.drain, &service.tcp, tls)
                        .await
                }
                Err(error) => debug!(%error, service = %service.name, "closing"),
            };
        }
        let mode = snapshot.config.proxy.outbound.as_ref().map(|o| o.egress);
        if mode == Some(Egress::MeshOnly) {
            return self.refuse(Direction::Outbound, "egress-refused", &conn);
        }
        let (egress, idle) = (snapshot.egress.clone(), snapshot.config.proxy.tunnel_idle());
        let upstream = match endpoint::connect(dst, ORIG_DST_CONNECT_TIMEOUT).await {
            Ok(upstream) => upstream,
            Err(error) => return debug!(%error, "egress connect failed"),
        };
        // Only now is it known whether `dst` is an address of this host (the connection's own
        // address is then `dst`'s).
        let local = upstream.local_addr().ok().map(|a| a.ip());
        if self.is_own_listener(&snapshot, dst, local) {
            return self.refuse(Direction::Outbound, "loop", &conn);
        }
        drop(snapshot);
        opaque::tunnel(
            conn.stream,
            upstream,
            idle,
            &self.drain,
            &egress,
            TlsPeer::Plaintext,
        )
        .await
    }

    /// A redirected connection to a service's cluster address: HTTP routed as that service's
    /// (detected, like any outbound connection), anything else to one of its endpoints.
    async fn to_service(
        &self,
        conn: Accepted,
        dst: SocketAddr,
        service: Arc<ServiceTarget>,
        settings: &Downstream,
    ) {
        let peer = Peer {
            addr: conn.client,
            identity: None,
            expires: None,
            port: conn.local.port(),
            original_dst: Some(dst),
        };
        if service.protocol == Protocol::Opaque {
            return forward_opaque(conn.stream, &peer, &service, &self.drain).await;
        }
        if let Some(io) = self
            .serve_http(Direction::Outbound, conn.stream, peer.clone(), settings)
            .await
        {
            Box::pin(forward_opaque(io, &peer, &service, &self.drain)).await;
        }
    }

    /// Whether a connection to `dst` reaches one of this proxy's listeners (`local`: the local
    /// address of a connection made to, or redirected from, `dst`, which tells whether `dst`
    /// is this host's).
    fn is_own_listener(&self, snapshot: &Snapshot, dst: SocketAddr, local: Option<IpAddr>) -> bool {
        let listeners = self.own_listeners.iter().chain(snapshot.by_listener.keys());
        own::reaches(listeners.copied(), dst, local)
    }
}

/// Whether `ip` is an address of this host: loopback, the address a connection arrived at
/// (`local`), or one the kernel lets a socket bind (a pod's other addresses).
fn is_local(ip: IpAddr, local: Option<IpAddr>) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback()
        || local.is_some_and(|l| l.to_canonical() == ip)
        || std::net::UdpSocket::bind((ip, 0)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_hosts_addresses_are_local() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(is_local(ip("127.0.0.1"), None));
        assert!(is_local(ip("::1"), None));
        assert!(is_local(ip("198.18.0.2"), Some(ip("::ffff:198.18.0.2"))));
        // TEST-NET-3: never an address of a test machine.
        assert!(!is_local(ip("203.0.113.7"), Some(ip("127.0.0.1"))));
        assert!(!is_local(ip("2001:db8::7"), None));
    }
}
