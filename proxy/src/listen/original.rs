//! The original destination of a connection iptables redirected to a listener.
//!
//! `REDIRECT` rewrites a connection's destination to the proxy's listener; conntrack remembers
//! the one the client chose, and `SO_ORIGINAL_DST` (`IP6T_SO_ORIGINAL_DST` for IPv6) reads it
//! back. nix wraps both getsockopts, so there is no `unsafe` here. A connection made to the
//! listener itself (no redirect) reads back its own local address, or nothing when conntrack
//! has no entry for it: both mean "not redirected".

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use nix::sys::socket::getsockopt;
use nix::sys::socket::sockopt::{Ip6tOriginalDst, OriginalDst};
use tokio::net::TcpStream;

/// Where the client of `stream` meant to connect, when that is not where it arrived.
pub fn original_destination(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    // An IPv4 client of a dual-stack (`[::]`) listener is IPv4 to conntrack.
    let original = if local.ip().to_canonical().is_ipv4() {
        let addr = getsockopt(stream, OriginalDst).ok()?;
        SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr)),
            u16::from_be(addr.sin_port),
        ))
    } else {
        let addr = getsockopt(stream, Ip6tOriginalDst).ok()?;
        SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(addr.sin6_addr.s6_addr),
            u16::from_be(addr.sin6_port),
            0,
            0,
        ))
    };
    redirected(original, local)
}

/// `original`, unless it is `local` (the connection was made to the listener itself).
fn redirected(original: SocketAddr, local: SocketAddr) -> Option<SocketAddr> {
    let same = original.port() == local.port()
        && original.ip().to_canonical() == local.ip().to_canonical();
    (!same).then_some(original)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_to_the_listener_itself_was_not_redirected() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(
            redirected(addr("10.96.0.10:80"), addr("127.0.0.1:4140")),
            Some(addr("10.96.0.10:80"))
        );
        assert_eq!(
            redirected(addr("127.0.0.1:4140"), addr("127.0.0.1:4140")),
            None
        );
        assert_eq!(
            redirected(addr("198.18.0.2:4143"), addr("[::ffff:198.18.0.2]:4143")),
            None
        );
        assert_eq!(
            redirected(addr("198.18.0.2:3000"), addr("[::ffff:198.18.0.2]:4143")),
            Some(addr("198.18.0.2:3000"))
        );
    }

    #[tokio::test]
    async fn a_plain_loopback_connection_has_no_original_destination() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let ((accepted, _), _client) = tokio::try_join!(listener.accept(), client).unwrap();
        assert_eq!(original_destination(&accepted), None);
    }
}
