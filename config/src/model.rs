//! The validated configuration: what the proxy acts on.
//!
//! Every value here has passed validation and had its default filled in, so the proxy never
//! re-checks a field. The types serialize back to YAML/JSON for the admin `/config` endpoint
//! (durations as humantime strings, addresses as `ip:port`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::authority::Authority;

/// A whole mesh file: the proxy's own listeners and the services it routes to.
///
/// `Config::default()` is what an empty file means.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub proxy: ProxySettings,
    pub services: Vec<Service>,
}

/// `proxy:`: the listeners of this proxy and how it shuts down.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySettings {
    /// Traffic for this pod, forwarded to the app. Absent: no inbound listener.
    pub inbound: Option<InboundListener>,
    /// The app's own calls, routed by authority. Absent: no outbound listener.
    pub outbound: Option<OutboundListener>,
    pub admin: AdminListener,
    /// How long, after SIGTERM or `/shutdown`, in-flight requests and upgraded connections may
    /// run before the proxy exits anyway. Default 30s.
    #[serde(with = "crate::duration")]
    pub drain_timeout: Duration,
}

impl Default for ProxySettings {
    /// No inbound or outbound listener, the default admin listener, a 30s drain.
    fn default() -> Self {
        ProxySettings {
            inbound: None,
            outbound: None,
            admin: AdminListener::default(),
            drain_timeout: Duration::from_secs(30),
        }
    }
}

/// Settings every data listener shares: they bound what one client connection may cost.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Downstream {
    /// Connections accepted at once on this listener; the rest wait in the kernel's backlog.
    /// Default 10000.
    pub max_connections: usize,
    /// A client must send a complete request head within this time, or the connection is
    /// closed. Default 10s.
    #[serde(with = "crate::duration")]
    pub header_timeout: Duration,
    /// Largest request head accepted; larger gets 431. Default 65536, at least 8192.
    pub max_header_bytes: usize,
    /// How long protocol detection waits for a client's first bytes before treating the
    /// connection as opaque TCP. Default 10s.
    #[serde(with = "crate::duration")]
    pub detect_timeout: Duration,
}

impl Downstream {
    /// Accepted values of `maxHeaderBytes`: from what any real client needs to 1 MiB.
    pub const MAX_HEADER_BYTES_RANGE: std::ops::RangeInclusive<u64> = 8192..=1_048_576;
}

impl Default for Downstream {
    fn default() -> Self {
        Downstream {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            max_header_bytes: 65_536,
            detect_timeout: Duration::from_secs(10),
        }
    }
}

/// `proxy.inbound`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundListener {
    pub listen: SocketAddr,
    /// Where the app listens.
    pub app: SocketAddr,
    /// How to speak to the app: `http` (HTTP/1.1 to the app, any HTTP from clients; non-HTTP
    /// is forwarded as opaque TCP), `http2` (HTTP/2 to the app), `opaque` (never sniffed).
    pub protocol: Protocol,
    #[serde(flatten)]
    pub downstream: Downstream,
    #[serde(flatten)]
    pub upstream: Upstream,
    /// Response timeout for requests to the app. Default 30s; `0s` means none.
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
}

impl InboundListener {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

/// `proxy.outbound`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundListener {
    pub listen: SocketAddr,
    #[serde(flatten)]
    pub downstream: Downstream,
}

/// `proxy.admin`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminListener {
    /// Default 127.0.0.1:4191.
    pub listen: SocketAddr,
}

impl AdminListener {
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 4191);
}

impl Default for AdminListener {
    fn default() -> Self {
        AdminListener {
            listen: Self::DEFAULT_LISTEN,
        }
    }
}

/// How a service (or the inbound app) speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1 or HTTP/2 from clients (detected); HTTP/1.1 to the endpoints.
    Http,
    /// HTTP/2 (prior knowledge, h2c) to the endpoints.
    Http2,
    /// Bytes, never sniffed.
    Opaque,
}

impl Protocol {
    /// The name as written in YAML: `http`, `http2`, `opaque`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Http2 => "http2",
            Protocol::Opaque => "opaque",
        }
    }
}

/// Settings for connections the proxy opens to endpoints.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// Default 1s.
    #[serde(with = "crate::duration")]
    pub connect_timeout: Duration,
    /// An idle pooled connection is closed after this long. Default 10s: below Puma's 20s
    /// keep-alive, so the proxy never reuses a socket the app is about to close.
    #[serde(with = "crate::duration")]
    pub idle_timeout: Duration,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// `services[]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// Unique; lowercase letters, digits and `-`; used as a metric label.
    pub name: String,
    /// Normalized authorities that mean this service; unique across services.
    pub authorities: Vec<Authority>,
    pub protocol: Protocol,
    /// At least one.
    pub endpoints: Vec<SocketAddr>,
    /// Opaque services only: a listener of its own that forwards to the endpoints.
    pub listen: Option<SocketAddr>,
    #[serde(flatten)]
    pub upstream: Upstream,
    /// In order; the first match wins. A request matching none uses [`Route::fallback`].
    pub routes: Vec<Route>,
}

/// `services[].routes[]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Label for logs and metrics. Default: `routes[N]` by position.
    pub name: String,
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Response timeout: how long the endpoint may take to send response headers once the
    /// request has been forwarded in full. Default 30s; `0s` means none (streams).
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
}

impl Route {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// The route of a request that matches no listed route: everything, default timeout.
    pub fn fallback() -> Self {
        Route {
            name: "default".to_owned(),
            matches: RouteMatch::default(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }
}

/// `services[].routes[].match`. All given conditions must hold; none given matches everything.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteMatch {
    /// Exact path (no query string).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Path prefix on segment boundaries: `/api` matches `/api` and `/api/x`, not `/apix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    /// Upper-case method names; empty means any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}
