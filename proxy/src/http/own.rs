//! The proxy's own listeners as a destination: never one a client may name.
//!
//! A `CONNECT` (or an absolute-form request) whose target is one of the proxy's own listeners
//! would loop back into the proxy, or reach the admin port through the data path and so around
//! the admin port's own rules (bound to loopback, `/shutdown` from loopback peers only). Such a
//! target is refused with 403. The listeners are the inbound, outbound and admin listeners as
//! bound, and every opaque service's `listen`.
//!
//! Which addresses reach a listener: its own address; and, when it is bound to `0.0.0.0` (or
//! `[::]`, which takes IPv4 too), every address of this host on its port. Addresses of this host
//! are loopback (all of 127.0.0.0/8 and `::1`), the unspecified address (the kernel connects
//! `0.0.0.0` to loopback), IPv4-mapped forms of these, and the host's other addresses, which are
//! only known once connected: a connection to one of them has it as its own local address (the
//! kernel picks the destination itself as the source of a connection to a local address).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::uri::Scheme;
use http::{Method, Request, Version};

use crate::errors::ProxyError;
use crate::route::ServiceTarget;

/// The proxy's listeners: the inbound, outbound and admin listeners as bound at start, and the
/// opaque services' listeners of the snapshot in force.
#[derive(Clone, Copy)]
pub struct Listeners<'a> {
    pub fixed: &'a [SocketAddr],
    pub opaque: &'a HashMap<SocketAddr, Arc<ServiceTarget>>,
}

impl Listeners<'_> {
    /// See [`reaches`].
    pub fn reached_by(&self, target: SocketAddr, local: Option<IpAddr>) -> bool {
        let all = self.fixed.iter().chain(self.opaque.keys()).copied();
        reaches(all, target, local)
    }

    /// Refuses an HTTP/1 absolute-form request (`GET http://127.0.0.1:4191/config HTTP/1.1`)
    /// whose target is an IP literal or `localhost` that reaches one of the listeners. (Such a
    /// request is routed by authority, never resolved, so a name is not looked up here.)
    pub fn check_absolute_form<B>(&self, req: &Request<B>) -> Result<(), ProxyError> {
        if req.version() == Version::HTTP_2 || req.method() == Method::CONNECT {
            return Ok(());
        }
        let Some(authority) = req.uri().authority() else {
            return Ok(());
        };
        let default_port = if req.uri().scheme() == Some(&Scheme::HTTPS) {
            443
        } else {
            80
        };
        let port = authority.port_u16().unwrap_or(default_port);
        for ip in literal(authority.host()).into_iter().flatten() {
            let target = SocketAddr::new(ip, port);
            if self.reached_by(target, None) {
                return Err(ProxyError::OwnListener(target));
            }
        }
        Ok(())
    }
}

/// Whether a connection to `target` reaches one of `listeners`. `local` is the local address of
/// a connection already made to `target`, `None` before connecting.
pub fn reaches(
    listeners: impl IntoIterator<Item = SocketAddr>,
    target: SocketAddr,
    local: Option<IpAddr>,
) -> bool {
    let ip = match target.ip().to_canonical() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let on_host = ip.is_loopback() || local.is_some_and(|l| l.to_canonical() == ip);
    listeners.into_iter().any(|listener| {
        let bound = listener.ip().to_canonical();
        listener.port() == target.port()
            && (bound == ip
                || (on_host && bound.is_unspecified() && (bound.is_ipv6() || ip.is_ipv4())))
    })
}

/// The addresses `host` (from a request target, without its port) names without asking DNS: an
/// IP literal, or `localhost` (RFC 6761: always loopback). None for any other name.
pub fn literal(host: &str) -> [Option<IpAddr>; 2] {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return [Some(ip), None];
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    if name.eq_ignore_ascii_case("localhost") {
        return [
            Some(Ipv4Addr::LOCALHOST.into()),
            Some(Ipv6Addr::LOCALHOST.into()),
        ];
    }
    [None, None]
}

#[cfg(test)]
mod tests;
