//! One authority per request: the rule both listeners apply before a request goes anywhere.
//!
//! A request can name its authority twice: in its target (HTTP/1 absolute-form or `CONNECT`'s
//! authority-form, HTTP/2 `:authority`) and in `Host`. If the proxy routed by one and the app
//! read the other, the app would serve a virtual host the proxy never chose (Rails builds URLs
//! and host checks from `Host`). So a request passes only if it names one authority, once,
//! validly, and the app is then given exactly that one (see `forward::for_wire`):
//!
//! - more than one `Host` field line: 400 (RFC 9112 §3.2), whatever their values;
//! - a `Host` that is not `host[:port]` as the config reads authorities ([`normalize`]: a DNS
//!   name, an IPv4 address or a bracketed IPv6 address, an optional port 1-65535; so no
//!   userinfo, spaces or empty value): 400 (RFC 9112 §3.2);
//! - a target authority that is not one either (`http://evil@web.local/`): 400 (RFC 9110 §4.2.4
//!   has userinfo in an `http` URI treated as an error);
//! - an HTTP/1.1 request without `Host`, absolute-form or not: 400 (RFC 9112 §3.2); HTTP/1.0
//!   predates `Host` and may name no authority;
//! - HTTP/2 with both `:authority` and `host` that name different authorities once normalized
//!   (case, trailing dot, default port): 400. RFC 9113 §8.3.1 has a server treat that as
//!   malformed, and an intermediary must not forward a malformed request (§8.1.1), so the
//!   request is refused rather than repaired; equal ones pass, and the app sees `:authority`;
//! - HTTP/2 with neither: 400 (RFC 9113 §8.3.1: `http` requires an authority).
//!
//! An HTTP/1 absolute-form request's `Host` is not compared with its target: RFC 9112 §3.2.2 has
//! a proxy replace it with the target's authority, which is what the app then sees.

use herd_config::authority::{MAX_AUTHORITY, normalize};
use http::{Request, Version, header};

use crate::errors::ProxyError;

/// The authority `req` is for, once it passes the rule above: its target's, else its `Host`.
/// `None` only for an HTTP/1.0 request that names none.
pub fn of<B>(req: &Request<B>) -> Result<Option<&str>, ProxyError> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::DuplicateHost);
    }
    let mut host_buf = [0u8; MAX_AUTHORITY];
    let host = match host {
        None => None,
        Some(value) => {
            let text = value.to_str().map_err(|_| ProxyError::InvalidHost)?;
            let normalized = normalize(text, &mut host_buf).ok_or(ProxyError::InvalidHost)?;
            Some((text, normalized))
        }
    };
    let mut target_buf = [0u8; MAX_AUTHORITY];
    let target = match req.uri().authority() {
        None => None,
        Some(authority) => {
            let text = authority.as_str();
            let normalized =
                normalize(text, &mut target_buf).ok_or(ProxyError::InvalidAuthority)?;
            Some((text, normalized))
        }
    };
    match (req.version(), target, host) {
        (Version::HTTP_11, _, None) => Err(ProxyError::MissingHost),
        (Version::HTTP_2, Some((_, t)), Some((_, h))) if t != h => {
            Err(ProxyError::AuthorityMismatch)
        }
        (Version::HTTP_2, None, None) => Err(ProxyError::NoAuthority),
        (_, Some((t, _)), _) | (_, None, Some((t, _))) => Ok(Some(t)),
        (_, None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests;
