//! Header rewriting a proxy owes both sides (RFC 9110 §7.6).
//!
//! Hop-by-hop headers describe one connection and must not cross the proxy: `Connection` and
//! every header it names, `Keep-Alive`, `Proxy-Connection`, `TE`, `Transfer-Encoding` and
//! `Upgrade`. Two exceptions keep protocols working: `TE: trailers` (HTTP/2 and gRPC need it to
//! reach the server) and, on an upgrade request and its 101 answer, `Connection: upgrade` with its
//! `Upgrade` header. `X-Forwarded-For` gains the client's address, so the app (Mastodon rate
//! limits by it) still sees who called.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Whether any `Connection` header lists `token`.
fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// An HTTP/1 upgrade request: `Connection: upgrade` and an `Upgrade` header.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

/// Removes hop-by-hop headers. With `upgrade`, keeps `Upgrade` and sets `Connection: upgrade`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    // Most messages carry none, or only `Connection: keep-alive`: one pass over the names
    // (standard names compare as integers) finds which are there, so only those are hashed to
    // be removed.
    let mut present = [false; HOPS];
    let mut any = false;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
            any = true;
        }
    }
    if any {
        remove_hop_by_hop(headers, &present, upgrade);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

const HOPS: usize = 6;

/// Headers that are hop-by-hop whatever `Connection` names; `Connection` first.
static HOP_BY_HOP: [HeaderName; HOPS] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::TE,
    header::UPGRADE,
    KEEP_ALIVE,
    PROXY_CONNECTION,
];

/// Removes the [`HOP_BY_HOP`] headers marked `present` and any header `Connection` names.
/// `TE: trailers` stays (HTTP/2 and gRPC need it); `Upgrade` stays on an upgrade.
fn remove_hop_by_hop(headers: &mut HeaderMap, present: &[bool; HOPS], upgrade: bool) {
    if present[0] {
        // Headers named by `Connection` are hop-by-hop too. Most requests name only standard
        // tokens, so only an unusual one costs an allocation.
        let mut named: Vec<HeaderName> = Vec::new();
        for value in headers.get_all(header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                if token.is_empty()
                    || ["close", "keep-alive", "upgrade"]
                        .iter()
                        .any(|t| token.eq_ignore_ascii_case(t))
                {
                    continue;
                }
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    named.push(name);
                }
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| **p) {
        if upgrade && name == header::UPGRADE {
            continue;
        }
        if name == header::TE
            && headers
                .get(header::TE)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"))
        {
            continue;
        }
        headers.remove(name);
    }
}

/// The client's address as an `X-Forwarded-For` element: made once per connection, so a request
/// from a client that sends no `X-Forwarded-For` of its own (the common case) costs a reference
/// count, not formatting and an allocation.
pub fn forwarded_for(client: IpAddr) -> HeaderValue {
    HeaderValue::from_maybe_shared(bytes::Bytes::from(client.to_string()))
        .expect("an IP address is a valid header value")
}

/// Appends `client` (see [`forwarded_for`]) to `X-Forwarded-For`, merging repeated headers into
/// one list.
pub fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    if !headers.contains_key(&X_FORWARDED_FOR) {
        headers.insert(X_FORWARDED_FOR, client.clone());
        return;
    }
    let client = client.to_str().expect("made from an IP address");
    let values = || {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::trim)
    };
    // Sized exactly: the list's buffer then becomes the value as it is (validated, neither
    // copied nor wrapped), one allocation in all.
    let len = values().map(|v| v.len() + 2).sum::<usize>() + client.len();
    let mut list = String::with_capacity(len);
    for value in values() {
        list.push_str(value);
        list.push_str(", ");
    }
    list.push_str(client);
    if let Ok(v) = HeaderValue::from_maybe_shared(bytes::Bytes::from(list)) {
        headers.insert(X_FORWARDED_FOR, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Foo"),
            ("x-foo", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1);
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn te_trailers_and_upgrades_survive() {
        let mut h = map(&[
            ("te", "trailers"),
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["te"], "trailers");
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
        ]);
        append_forwarded_for(&mut h, &forwarded_for("127.0.0.1".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 5.6.7.8, 127.0.0.1");
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, &forwarded_for("::1".parse().unwrap()));
        assert_eq!(h["x-forwarded-for"], "::1");
    }
}
