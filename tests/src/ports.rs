//! Free loopback ports for peers the kit cannot hand a bound socket to (the proxy, Puma, redis).
//!
//! Binding port 0 and closing it again leaves a window in which the kernel may give the same
//! port to someone else, and the likeliest someone is a client socket: Linux picks outgoing
//! ports from its ephemeral range (32768-60999), and the tests open thousands of connections.
//! So ports come from below that range instead, at random (parallel test processes rarely pick
//! the same one), never twice from one process, and only after a trial bind shows them free.

use std::collections::HashSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener};
use std::sync::Mutex;

const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

static ISSUED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port nothing listens on right now (on 127.0.0.1).
pub fn free() -> u16 {
    free_on(Ipv4Addr::LOCALHOST.into())
}

fn free_on(ip: IpAddr) -> u16 {
    let random = RandomState::new();
    let mut issued = ISSUED.lock().unwrap_or_else(|e| e.into_inner());
    let issued = issued.get_or_insert_with(HashSet::new);
    for attempt in 0u64..10_000 {
        let mut hasher = random.build_hasher();
        hasher.write_u64(attempt);
        hasher.write_u32(std::process::id());
        let port = FIRST + (hasher.finish() % u64::from(LAST - FIRST)) as u16;
        if issued.contains(&port) {
            continue;
        }
        if TcpListener::bind((ip, port)).is_ok() {
            issued.insert(port);
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {LAST}");
}

/// `127.0.0.1:` a [`free`] port.
pub fn addr() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, free()))
}

/// `[::1]:` a free port.
pub fn addr_v6() -> SocketAddr {
    SocketAddr::from((Ipv6Addr::LOCALHOST, free_on(Ipv6Addr::LOCALHOST.into())))
}

/// A loopback address where connections are refused: an app that is down.
pub fn closed() -> SocketAddr {
    addr()
}
