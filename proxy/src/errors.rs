//! Every way a proxied request can fail, and the one place each becomes an HTTP status.
//!
//! An operator looking at a 502 needs to know whether the app sent it or the proxy did, and
//! why. So every failure the proxy itself answers for is a [`ProxyError`], tagged with where it
//! came from ([`Origin`]) and what it says about the endpoint ([`ProxyError::outcome`]), and
//! [`ProxyError::respond`] is the only code that turns one into a response: it sets the status
//! and a `herd-proxy-error` header naming the cause. Whether a failed request may be sent again
//! depends also on whether any of it was written, which only the attempt knows: [`crate::retry`]
//! decides that.
//!
//! Every stage fails with these, so this module sits below them all and knows none of them: a
//! failure is classified by what it is, not by who met it, and the response's body type is the
//! caller's ([`crate::response`] gives it the proxy's own).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::outcome::Outcome;

/// Any error, boxed: what bodies fail with once they come from more than one source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The header on every response the proxy generated itself.
pub const PROXY_ERROR_HEADER: &str = "herd-proxy-error";

/// The client's request body failed as the proxy read it: malformed (a chunk size that
/// overflows, a bad chunk extension), cut short (the client reset or closed half-way), or over
/// its length (HTTP/2 DATA beyond `content-length`). Whatever the endpoint's connection reports
/// when the body it was sending breaks, this is what the failure is: the client's.
///
/// Cloned (it is shared: the body hands one to the endpoint's connection and records another
/// for the request's other stages), so it holds hyper's error behind an `Arc`.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{}", Chain(&**.0))]
pub struct ClientBodyError(#[source] Arc<hyper::Error>);

impl ClientBodyError {
    pub fn new(error: hyper::Error) -> Self {
        ClientBodyError(Arc::new(error))
    }
}

/// An error and its causes, `: `-separated (hyper's own text only names the kind of failure:
/// `error reading a body from connection`; its cause says what it was).
pub(crate) struct Chain<'a>(pub(crate) &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// Where a failure came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The client sent something the proxy cannot forward.
    Downstream,
    /// The endpoint could not be reached or misbehaved.
    Upstream,
    /// The proxy's own configuration or state.
    Proxy,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no service for authority {0}")]
    NoService(String),
    #[error("request has no authority")]
    NoAuthority,
    #[error("invalid authority")]
    InvalidAuthority,
    #[error("request has no host header")]
    MissingHost,
    #[error("request has more than one host header")]
    DuplicateHost,
    #[error("invalid host header")]
    InvalidHost,
    #[error("host header differs from :authority")]
    AuthorityMismatch,
    #[error("{0} is this proxy's own listener")]
    OwnListener(SocketAddr),
    #[error("CONNECT to {0} refused: egress is mesh-only")]
    EgressRefused(String),
    #[error("request has both content-length and transfer-encoding")]
    Smuggling,
    #[error("service {service} is overloaded: {pending} requests already wait for an endpoint")]
    Overloaded { service: String, pending: usize },
    #[error("no ready endpoint for service {service} within {waited:?}")]
    NoReadyEndpoint { service: String, waited: Duration },
    #[error("connect refused: {0}")]
    ConnectRefused(SocketAddr),
    #[error("connect timeout after {timeout:?}: {addr}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("connect failed: {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("cannot resolve {authority}: {source}")]
    Resolve {
        authority: String,
        source: io::Error,
    },
    #[error("upstream handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
    #[error("upstream connection failed: {0}")]
    Upstream(#[source] BoxError),
    #[error("upstream refused the stream")]
    RefusedStream,
    #[error("the client's request body is malformed or cut short: {0}")]
    ClientBody(#[source] ClientBodyError),
    #[error("response timeout after {0:?}")]
    ResponseTimeout(Duration),
    #[error("upstream does not support upgrades over HTTP/2")]
    UpgradeToHttp2,
    /// The TLS handshake with a meshed endpoint failed; when the endpoint's proxy presented
    /// another identity than the one expected, the message names both.
    #[error("mutual TLS with {addr} failed: {}", Chain(.source))]
    MeshTls { addr: SocketAddr, source: io::Error },
    /// The inbound port's authorization policy does not allow this client (`who`: its SPIFFE ID,
    /// or its address when it has none).
    #[error("unauthorized: {who} on port {port}")]
    Unauthorized { who: String, port: u16 },
    /// A meshed endpoint, but this proxy has no valid certificate to present.
    #[error("cannot reach meshed endpoint {addr}: this proxy {reason}")]
    NoIdentity {
        addr: SocketAddr,
        reason: &'static str,
    },
}

impl ProxyError {
    pub fn origin(&self) -> Origin {
        match self {
            Self::NoAuthority
            | Self::InvalidAuthority
            | Self::MissingHost
            | Self::DuplicateHost
            | Self::InvalidHost
            | Self::AuthorityMismatch
            | Self::OwnListener(_)
            | Self::EgressRefused(_)
            | Self::Unauthorized { .. }
            | Self::Smuggling
            | Self::ClientBody(_) => Origin::Downstream,
            Self::NoService(_)
            | Self::Overloaded { .. }
            | Self::NoReadyEndpoint { .. }
            | Self::NoIdentity { .. }
            | Self::UpgradeToHttp2 => Origin::Proxy,
            Self::ConnectRefused(_)
            | Self::ConnectTimeout { .. }
            | Self::Connect { .. }
            | Self::Resolve { .. }
            | Self::Handshake(_)
            | Self::Upstream(_)
            | Self::RefusedStream
            | Self::MeshTls { .. }
            | Self::ResponseTimeout(_) => Origin::Upstream,
        }
    }

    /// What this failure tells the balancer about the endpoint, if it involved one.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Self::ConnectRefused(_)
            | Self::ConnectTimeout { .. }
            | Self::Connect { .. }
            | Self::MeshTls { .. }
            | Self::Handshake(_) => Some(Outcome::ConnectFailure),
            Self::ResponseTimeout(_) => Some(Outcome::Timeout),
            Self::Upstream(_) | Self::RefusedStream => Some(Outcome::Reset),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NoService(_) => StatusCode::NOT_FOUND,
            Self::NoAuthority
            | Self::InvalidAuthority
            | Self::MissingHost
            | Self::DuplicateHost
            | Self::InvalidHost
            | Self::AuthorityMismatch
            | Self::Smuggling
            | Self::ClientBody(_) => StatusCode::BAD_REQUEST,
            Self::OwnListener(_) | Self::EgressRefused(_) | Self::Unauthorized { .. } => {
                StatusCode::FORBIDDEN
            }
            Self::Overloaded { .. } | Self::NoReadyEndpoint { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::ResponseTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::ConnectRefused(_)
            | Self::ConnectTimeout { .. }
            | Self::Connect { .. }
            | Self::Resolve { .. }
            | Self::Handshake(_)
            | Self::Upstream(_)
            | Self::RefusedStream
            | Self::MeshTls { .. }
            | Self::NoIdentity { .. }
            | Self::UpgradeToHttp2 => StatusCode::BAD_GATEWAY,
        }
    }

    /// Classifies a failed exchange: HTTP/2's REFUSED_STREAM means the server did not process the
    /// request, which makes it safe to send again.
    pub fn upstream(error: hyper::Error) -> Self {
        let mut source = std::error::Error::source(&error);
        while let Some(s) = source {
            if let Some(h2) = s.downcast_ref::<h2::Error>() {
                if h2.reason() == Some(h2::Reason::REFUSED_STREAM) {
                    return Self::RefusedStream;
                }
                break;
            }
            source = s.source();
        }
        Self::Upstream(error.into())
    }

    /// Classifies a failed connect.
    pub fn connect(addr: SocketAddr, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::ConnectionRefused => Self::ConnectRefused(addr),
            _ => Self::Connect { addr, source },
        }
    }

    /// The response the client sees, its body made by `body` from the error's text. A
    /// downstream error closes the connection: after a request the proxy could not make sense
    /// of, the rest of the byte stream cannot be trusted.
    pub fn respond<B>(&self, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        let text = self.to_string();
        let mut resp = Response::new(body(Bytes::from(format!("{text}\n"))));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Ok(v) = HeaderValue::from_str(&text) {
            headers.insert(PROXY_ERROR_HEADER, v);
        }
        if self.origin() == Origin::Downstream {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
