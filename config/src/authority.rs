//! Authorities, compared the way an operator means them.
//!
//! `Web.Local`, `web.local.` and `web.local:80` all name the same thing: a Host header is
//! case-insensitive (RFC 9110 §4.2.3), a fully-qualified name may carry its root dot, and port 80
//! is HTTP's default. Both the config (once, when a file loads) and the proxy (once per request,
//! into a stack buffer, without allocating) normalize through [`normalize`], so the two can never
//! disagree.

use std::fmt;

use serde::Serialize;

/// Longest authority accepted: a 253-byte DNS name, `:`, a five-digit port, with room to spare.
pub const MAX_AUTHORITY: usize = 272;

/// A normalized authority: lowercase host without a trailing dot, `:port` unless the port is 80.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Authority(String);

impl Authority {
    /// Normalizes `raw`; `None` if it is not a valid `host[:port]`.
    pub fn parse(raw: &str) -> Option<Self> {
        let mut buf = [0u8; MAX_AUTHORITY];
        normalize(raw, &mut buf).map(|s| Authority(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Writes the normalized form of `raw` into `buf` and returns it, or `None` when `raw` is not a
/// `host[:port]` (a DNS name, an IPv4 address, or a bracketed IPv6 address) that fits.
pub fn normalize<'b>(raw: &str, buf: &'b mut [u8; MAX_AUTHORITY]) -> Option<&'b str> {
    let raw = raw.as_bytes();
    if raw.is_empty() || raw.len() > MAX_AUTHORITY {
        return None;
    }
    // Split host and port; a bracketed IPv6 literal keeps its colons.
    let (host, port) = if raw[0] == b'[' {
        let close = raw.iter().position(|&b| b == b']')?;
        let rest = &raw[close + 1..];
        match rest {
            [] => (&raw[..=close], None),
            [b':', port @ ..] => (&raw[..=close], Some(port)),
            _ => return None,
        }
    } else {
        match raw.iter().rposition(|&b| b == b':') {
            Some(i) => (&raw[..i], Some(&raw[i + 1..])),
            None => (raw, None),
        }
    };
    let host = match host {
        [rest @ .., b'.'] if !rest.is_empty() && host[0] != b'[' => rest,
        _ => host,
    };
    if host.is_empty() || host == b"." {
        return None;
    }
    let bracketed = host[0] == b'[';
    if bracketed {
        // `[` ... `]` must hold an IPv6 address, and nothing else.
        let inner = std::str::from_utf8(&host[1..host.len() - 1]).ok()?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
    }
    let mut len = 0;
    for &b in host {
        let ok = if bracketed {
            b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'[' | b']')
        } else {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
        };
        if !ok {
            return None;
        }
        buf[len] = b.to_ascii_lowercase();
        len += 1;
    }
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let value: u32 = port.iter().fold(0, |n, &d| n * 10 + u32::from(d - b'0'));
        if value == 0 || value > u32::from(u16::MAX) {
            return None;
        }
        if value != 80 {
            buf[len] = b':';
            len += 1;
            buf[len..len + port.len()].copy_from_slice(port);
            len += port.len();
        }
    }
    // Every byte written is ASCII.
    std::str::from_utf8(&buf[..len]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> Option<String> {
        let mut buf = [0u8; MAX_AUTHORITY];
        normalize(s, &mut buf).map(str::to_owned)
    }

    #[test]
    fn case_trailing_dot_and_default_port_are_ignored() {
        for raw in [
            "web.local",
            "Web.Local",
            "web.local.",
            "web.local:80",
            "WEB.LOCAL.:80",
        ] {
            assert_eq!(norm(raw).as_deref(), Some("web.local"), "{raw}");
        }
        assert_eq!(norm("web.local:3000").as_deref(), Some("web.local:3000"));
        assert_eq!(norm("[::1]:8080").as_deref(), Some("[::1]:8080"));
        assert_eq!(norm("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(norm("[FE80::1]").as_deref(), Some("[fe80::1]"));
        assert_eq!(norm("10.0.0.1:3000").as_deref(), Some("10.0.0.1:3000"));
    }

    #[test]
    fn garbage_is_refused() {
        for raw in [
            "",
            ":80",
            "web local",
            "web.local:",
            "web.local:99999",
            "web.local:0",
            "[::1",
            "[::1]x",
            "[[::1]]",
            "[::1::2]",
            "[1.2.3.4]",
            "[]:80",
            "evil@web.local",
            "a/b",
            ".",
        ] {
            assert_eq!(norm(raw), None, "{raw:?}");
        }
        assert_eq!(norm(&"a".repeat(MAX_AUTHORITY + 1)), None);
    }
}
