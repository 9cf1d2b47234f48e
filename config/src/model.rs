//! The validated configuration: what the proxy acts on.
//!
//! Every value here has passed validation and had its default filled in, so the proxy never
//! re-checks a field. The types serialize back to YAML/JSON for the admin `/config` endpoint
//! (durations as humantime strings, addresses as `ip:port`).

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use crate::authority::Authority;

mod policy;
mod retry;

pub use policy::{Allow, DefaultPolicy, Policy};
pub use retry::{Backoff, Hedge, HedgeDelay, RetryBudget, RetryCondition, RetryPolicy};

/// A whole mesh file: the proxy's own listeners and the services it routes to.
///
/// `Config::default()` is what an empty file means.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    pub proxy: ProxySettings,
    pub services: Vec<Service>,
    /// Who may connect to which inbound ports (see [`Policy`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
}

/// What a mesh served by herd-control holds: services and policies, no `proxy:` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Mesh {
    pub services: Vec<Service>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Policy>,
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
    /// How `dns:` services are resolved.
    pub resolver: ResolverConfig,
    /// How long, after SIGTERM or `/shutdown`, in-flight requests and upgraded connections may
    /// run before the proxy exits anyway. Default 30s.
    #[serde(with = "crate::duration")]
    pub drain_timeout: Duration,
    /// Where services come from when not from this file: a herd-control. Absent (the default):
    /// the file's `services`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control: Option<ControlSettings>,
    /// A tunnel (an upgraded connection such as a WebSocket, a `CONNECT` tunnel, an opaque TCP
    /// connection) that carries no byte in either direction for this long is closed, both
    /// sides; a service's `limits.tunnelIdleTimeout` overrides it for that service. Default 1h;
    /// `0s` means never. Without it a tunnel whose client left (its FIN, or its host gone) while
    /// the upstream never closes is held forever.
    #[serde(with = "crate::duration")]
    pub tunnel_idle_timeout: Duration,
    /// Where this proxy gets the certificate naming its identity, for mutual TLS. Absent (the
    /// default): no identity, no TLS.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<IdentitySettings>,
}

/// `proxy.identity`: the identity service (herd-control's, port 8080) and what proves this
/// workload to it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentitySettings {
    /// The identity service's addresses, tried in random order, or a DNS name resolved at every
    /// attempt (`dns: NAME:PORT`).
    #[serde(flatten)]
    pub target: ControlTarget,
    /// The SPIFFE ID this proxy asks for, `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT`; the
    /// token must prove it.
    pub id: String,
    /// A file holding the token: a projected ServiceAccount token in Kubernetes, a bootstrap
    /// token outside. Read again at every renewal, since the kubelet rotates projected tokens.
    pub token_file: String,
    /// A PEM file of root certificates that authenticate the identity service before this proxy
    /// has a trust bundle of its own (the mesh's trust anchors; in Kubernetes a ConfigMap). With
    /// it, `Certify` goes over TLS and the service must present `controlIdentity`; without it,
    /// `Certify` is plaintext: the token crosses the network readable and the service is not
    /// authenticated, acceptable on loopback only. Read again at every attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_anchors: Option<String>,
    /// The same roots written in the configuration itself, as PEM: for a proxy whose whole
    /// configuration is one environment variable (the injector's `HERD_PROXY_CONFIG_YAML`), so
    /// no file has to be mounted. At most one of `trustAnchors` and `trustAnchorsPem`; checked
    /// to hold at least one CA certificate when the configuration is read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trust_anchors_pem: Option<String>,
    /// The SPIFFE ID herd-control presents (its `--control-identity`): the identity service
    /// must present it when `trustAnchors` is set, and the control plane (`proxy.control`) must
    /// present it on the mutual-TLS connection the proxy opens once certified. Default:
    /// `spiffe://TRUST-DOMAIN/ns/herd/sa/herd-control`, in `id`'s trust domain.
    pub control_identity: String,
}

impl ProxySettings {
    pub const DEFAULT_TUNNEL_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

    /// The tunnel idle timeout of tunnels no service's limits cover (the inbound app's, and
    /// those to hosts outside the mesh); `None` when it is `0s`: never.
    pub fn tunnel_idle(&self) -> Option<Duration> {
        Some(self.tunnel_idle_timeout).filter(|d| !d.is_zero())
    }
}

/// `proxy.control`: the control plane this proxy takes its services and endpoints from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlSettings {
    /// The replicas' discovery addresses (`addresses: [ip:port, ...]`), tried in random order, or
    /// a DNS name (`dns: NAME:PORT`, e.g. a headless Service) resolved at every connection
    /// attempt.
    #[serde(flatten)]
    pub target: ControlTarget,
    /// This proxy's id, unique in the mesh. Default: the host name (in Kubernetes, the pod's
    /// name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// This proxy's Kubernetes namespace. Default: empty.
    pub namespace: String,
    /// Whether `/ready` waits for the first routing state from the control plane. Default true:
    /// a pod whose proxy cannot route yet should not receive traffic. Once ready, the proxy never
    /// turns unready because the control plane is gone: it serves on its last state.
    pub wait_for_state: bool,
    /// A service's endpoints stay subscribed while requests use it; after this long without one
    /// the subscription is dropped (and taken again, from the last version held, at the next
    /// request). Default 5m; more than 0s.
    #[serde(with = "crate::duration")]
    pub unwatch_after: Duration,
}

impl ControlSettings {
    pub const DEFAULT_UNWATCH_AFTER: Duration = Duration::from_secs(300);
}

/// `proxy.control.addresses` or `proxy.control.dns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ControlTarget {
    Addresses(Vec<SocketAddr>),
    /// Serialized as `NAME:PORT`.
    #[serde(serialize_with = "dns_target")]
    Dns {
        name: String,
        port: u16,
    },
}

fn dns_target<S: serde::Serializer>(name: &str, port: &u16, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{name}:{port}"))
}

impl Default for ProxySettings {
    /// No inbound or outbound listener, the default admin listener, the system's resolver, a 30s
    /// drain, tunnels closed after an hour without traffic.
    fn default() -> Self {
        ProxySettings {
            inbound: None,
            outbound: None,
            admin: AdminListener::default(),
            resolver: ResolverConfig::default(),
            drain_timeout: Duration::from_secs(30),
            control: None,
            tunnel_idle_timeout: Self::DEFAULT_TUNNEL_IDLE_TIMEOUT,
            identity: None,
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
    /// One line per request to stdout, when set. Default: none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_log: Option<AccessLog>,
    /// Give a request without `x-request-id` one before forwarding it. Default true.
    pub request_id: bool,
}

/// `accessLog`: how requests are logged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct AccessLog {
    pub format: AccessLogFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// Apache's Combined Log Format, followed by duration, endpoint, attempts and request id.
    Apache,
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
            access_log: None,
            request_id: true,
        }
    }
}

/// `proxy.inbound`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InboundListener {
    pub listen: SocketAddr,
    /// Where the app listens: every connection goes there, except, with `transparent`, one
    /// that iptables redirected, which goes to its original destination. Absent only with
    /// `transparent`: a connection made to the listener itself is then refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app: Option<SocketAddr>,
    /// Connections redirected here by iptables (`herd-proxy init`) go to the app on the port
    /// the client meant (their original destination, `SO_ORIGINAL_DST`), at that address when it
    /// is this pod's. Default false.
    pub transparent: bool,
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
    /// Whether plaintext clients are served beside mutual-TLS ones. Default `permissive`.
    pub mtls: Mtls,
    /// Who may connect on a port no policy covers. Default `all`.
    pub default_policy: DefaultPolicy,
    /// The request header that tells the app the client's verified SPIFFE ID (set on requests
    /// that came over mutual TLS, removed from every other). Absent (the default): none is sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_identity_header: Option<String>,
    /// Ports whose connections are forwarded to the app as opaque TCP, never sniffed: the port
    /// the client connected to (in transparent mode, the original destination's). For protocols
    /// where the server speaks first (SMTP, MySQL), which detection would hold up until
    /// `detectTimeout`. Default: none (`protocol` decides for every port).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub opaque_ports: Vec<PortRange>,
}

impl InboundListener {
    /// Whether connections for `port` are opaque: `protocol: opaque`, or `port` in
    /// `opaquePorts`.
    pub fn is_opaque(&self, port: u16) -> bool {
        self.protocol == Protocol::Opaque || self.opaque_ports.iter().any(|r| r.contains(port))
    }
}

/// A port or an inclusive range of ports, written `5432` or `8000-8010`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Reads `5432` or `8000-8010` (ports 1 to 65535, the first not above the last).
    pub fn parse(text: &str) -> Result<Self, String> {
        let port = |s: &str| {
            s.trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| {
                    format!("`{text}` is not a port (1 to 65535) or a range of ports (`8000-8010`)")
                })
        };
        let range = match text.split_once('-') {
            Some((first, last)) => PortRange {
                first: port(first)?,
                last: port(last)?,
            },
            None => {
                let p = port(text)?;
                PortRange { first: p, last: p }
            }
        };
        if range.first > range.last {
            return Err(format!(
                "`{text}`: a range's first port must not be above its last"
            ));
        }
        Ok(range)
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl std::fmt::Display for PortRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `proxy.inbound.mtls`: what the inbound listener does with a client that does not speak
/// mutual TLS.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mtls {
    /// Mutual TLS from meshed proxies and plaintext from everyone else: a pod can join the mesh
    /// before all of its clients have.
    #[default]
    Permissive,
    /// Mutual TLS only: a plaintext connection is refused.
    Strict,
}

impl Mtls {
    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            Mtls::Permissive => "permissive",
            Mtls::Strict => "strict",
        }
    }
}

impl InboundListener {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
}

/// `proxy.outbound`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundListener {
    pub listen: SocketAddr,
    /// Connections redirected here by iptables (`herd-proxy init`) are routed by their original
    /// destination (`SO_ORIGINAL_DST`): a service's `clusterIps` address as that service, a meshed
    /// endpoint's address to that endpoint, anything else to where it was going, as TCP (counted
    /// under the service `egress`). Default false.
    pub transparent: bool,
    /// Where `CONNECT` may open a tunnel. Default [`Egress::Any`].
    pub egress: Egress,
    #[serde(flatten)]
    pub downstream: Downstream,
}

/// `proxy.outbound.egress`: which `CONNECT` targets the outbound listener tunnels to. Either
/// way, a target that is one of the proxy's own listeners is refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Egress {
    /// An authority a service claims goes to that service's endpoints; any other goes to the
    /// host it names (resolved by DNS).
    #[default]
    Any,
    /// Only authorities a service claims; any other is refused with 403.
    MeshOnly,
}

impl Egress {
    /// The name as written in YAML: `any`, `mesh-only`.
    pub fn as_str(self) -> &'static str {
        match self {
            Egress::Any => "any",
            Egress::MeshOnly => "mesh-only",
        }
    }
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

/// `proxy.resolver`: where `dns:` services are looked up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResolverConfig {
    /// DNS servers to ask, in order. Empty (the default): the system's `/etc/resolv.conf`, with
    /// its search domains and `ndots`, as the app itself resolves.
    pub nameservers: Vec<SocketAddr>,
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

/// Settings for connections the inbound listener opens to the app. (A service's are in
/// [`ServiceLimits`].)
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
    /// Unique; DNS labels (lowercase letters, digits and `-`) joined by `.`, at most 253
    /// characters (`web`, or `web.mastodon` as the Kubernetes source names a Service); used as a
    /// metric label.
    pub name: String,
    /// Normalized authorities that mean this service; unique across services.
    pub authorities: Vec<Authority>,
    pub protocol: Protocol,
    /// Static endpoints, each address once; empty when `dns` is set. Neither `endpoints` nor
    /// `dns` happens only in a mesh served by herd-control ([`crate::parse_mesh`]): the endpoints
    /// then come from the control plane.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<WeightedEndpoint>,
    /// Endpoints discovered by DNS instead of listed.
    pub dns: Option<DnsDiscovery>,
    /// Opaque services only: a listener of its own that forwards to the endpoints.
    pub listen: Option<SocketAddr>,
    /// Addresses (`ip:port`) that mean this service to a transparent outbound listener: a
    /// redirected connection whose original destination is one of them is routed as this
    /// service. A Kubernetes Service's cluster IPs with its port; unique across services.
    /// Default empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cluster_ips: Vec<SocketAddr>,
    pub balancer: BalancerConfig,
    pub outlier_detection: OutlierDetection,
    pub limits: ServiceLimits,
    /// Bounds the retries and hedges of all this service's routes together.
    pub retry_budget: RetryBudget,
    /// In order; the first match wins. A request matching none uses [`Route::fallback`].
    pub routes: Vec<Route>,
}

/// `services[].endpoints[]`: an address, its share of the traffic, and whether it is meshed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WeightedEndpoint {
    pub address: SocketAddr,
    /// Relative share of requests (connections, for opaque services) under every algorithm.
    /// Default 1; 1 to 10000.
    pub weight: u32,
    /// The endpoint is a meshed proxy, reached over mutual TLS, and must present exactly this
    /// SPIFFE ID (`spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT`). Default absent: the endpoint
    /// is outside the mesh and reached in plaintext.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
}

impl WeightedEndpoint {
    pub const DEFAULT_WEIGHT: u32 = 1;
    /// Accepted values of `weight`.
    pub const WEIGHT_RANGE: std::ops::RangeInclusive<u32> = 1..=10_000;

    /// `address` with the default weight.
    pub fn new(address: SocketAddr) -> Self {
        WeightedEndpoint {
            address,
            weight: Self::DEFAULT_WEIGHT,
            identity: None,
        }
    }

    /// Checks `identity` as an endpoint's: a SPIFFE ID that names a workload
    /// (`spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT`), the only kind the identity service
    /// certifies, so that a typo is refused where it is written rather than found as a
    /// handshake that can never succeed. The error is one line, without the text's location.
    pub fn check_identity(identity: &str) -> Result<(), String> {
        match herd_identity::SpiffeId::parse(identity) {
            Ok(id) if id.namespace().is_some() && id.service_account().is_some() => Ok(()),
            Ok(_) => Err(format!(
                "`{identity}` is not a workload identity: expected \
                 spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT"
            )),
            Err(error) => Err(format!("invalid SPIFFE ID `{identity}`: {error}")),
        }
    }

    /// `address` with `weight`, outside the mesh.
    pub fn weighted(address: SocketAddr, weight: u32) -> Self {
        WeightedEndpoint {
            weight,
            ..WeightedEndpoint::new(address)
        }
    }
}

impl From<SocketAddr> for WeightedEndpoint {
    fn from(address: SocketAddr) -> Self {
        WeightedEndpoint::new(address)
    }
}

/// `services[].dns`: endpoints are the A and AAAA records of `name`, each on `port`, weight 1.
///
/// Serializes as the YAML mapping form, `{name: NAME:PORT, minTtl, maxTtl}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsDiscovery {
    /// A DNS name as written (a trailing dot makes it absolute: no search domains).
    pub name: String,
    /// 1 to 65535.
    pub port: u16,
    /// Re-resolve no sooner than this after an answer, whatever its TTL. Default 1s; > 0.
    pub min_ttl: Duration,
    /// Re-resolve no later than this after an answer, whatever its TTL. Default 60s;
    /// at least `min_ttl`.
    pub max_ttl: Duration,
}

impl DnsDiscovery {
    pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
    pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(60);

    /// When to resolve again after an answer whose records live `ttl`.
    pub fn refresh_after(&self, ttl: Duration) -> Duration {
        ttl.clamp(self.min_ttl, self.max_ttl)
    }
}

impl Serialize for DnsDiscovery {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("name", &format!("{}:{}", self.name, self.port))?;
        map.serialize_entry(
            "minTtl",
            &humantime::format_duration(self.min_ttl).to_string(),
        )?;
        map.serialize_entry(
            "maxTtl",
            &humantime::format_duration(self.max_ttl).to_string(),
        )?;
        map.end()
    }
}

/// `services[].balancer`: how one endpoint is picked for a request (a connection, for opaque
/// services).
///
/// Every field holds a value whatever the algorithm; those of another algorithm are unused.
/// Serializes only the keys its algorithm uses, as the YAML must be written.
#[derive(Clone, Debug, PartialEq)]
pub struct BalancerConfig {
    /// Default [`Algorithm::PeakEwma`].
    pub algorithm: Algorithm,
    /// peak-ewma: how fast the latency average forgets. Default 10s; > 0.
    pub decay: Duration,
    /// peak-ewma: the latency assumed of an endpoint with no data yet. Default 30ms; > 0.
    pub default_rtt: Duration,
    /// ring-hash: the key that picks the endpoint. `Some` exactly when `algorithm` is
    /// [`Algorithm::RingHash`]; [`HashOn::ClientIp`] only, for opaque services.
    pub hash_on: Option<HashOn>,
    /// ring-hash: no endpoint takes more than this times the mean load; a key whose endpoint is
    /// full goes to the next on the ring. Default 1.25; at least 1.0.
    pub bounded_load: f64,
}

impl BalancerConfig {
    pub const DEFAULT_DECAY: Duration = Duration::from_secs(10);
    pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
    pub const DEFAULT_BOUNDED_LOAD: f64 = 1.25;
}

impl Default for BalancerConfig {
    fn default() -> Self {
        BalancerConfig {
            algorithm: Algorithm::PeakEwma,
            decay: Self::DEFAULT_DECAY,
            default_rtt: Self::DEFAULT_RTT,
            hash_on: None,
            bounded_load: Self::DEFAULT_BOUNDED_LOAD,
        }
    }
}

impl Serialize for BalancerConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let duration = |d: Duration| humantime::format_duration(d).to_string();
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("algorithm", &self.algorithm)?;
        match self.algorithm {
            Algorithm::PeakEwma => {
                map.serialize_entry("decay", &duration(self.decay))?;
                map.serialize_entry("defaultRtt", &duration(self.default_rtt))?;
            }
            Algorithm::RingHash => {
                map.serialize_entry("hashOn", &self.hash_on)?;
                map.serialize_entry("boundedLoad", &self.bounded_load)?;
            }
            Algorithm::LeastRequest | Algorithm::RoundRobin => {}
        }
        map.end()
    }
}

/// `services[].balancer.algorithm`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Power of two random choices over a peak-sensitive moving average of latency times
    /// requests in flight.
    #[default]
    PeakEwma,
    /// Power of two random choices over requests in flight.
    LeastRequest,
    RoundRobin,
    /// Consistent hashing on [`BalancerConfig::hash_on`], with bounded load.
    RingHash,
}

impl Algorithm {
    /// The name as written in YAML: `peak-ewma`, `least-request`, `round-robin`, `ring-hash`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::PeakEwma => "peak-ewma",
            Algorithm::LeastRequest => "least-request",
            Algorithm::RoundRobin => "round-robin",
            Algorithm::RingHash => "ring-hash",
        }
    }
}

/// `services[].balancer.hashOn`: `{header: NAME}`, `{cookie: NAME}` or `clientIp`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HashOn {
    /// A request header, by its lowercase name; a request without it goes to a random endpoint.
    Header(String),
    /// A cookie, by its name as written (cookie names are case-sensitive).
    Cookie(String),
    /// The client's IP address (the peer of the connection, not a forwarded header).
    ClientIp,
}

/// `services[].outlierDetection`: taking failing endpoints out of rotation for a while.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetection {
    /// Failures in a row (of the kinds in `failure_on`) that eject an endpoint. Default 7;
    /// 0 turns outlier detection off.
    pub consecutive_failures: u32,
    /// The first ejection's length; each ejection in a row doubles it, up to `max_ejection`.
    /// Default 1s; > 0.
    #[serde(with = "crate::duration")]
    pub min_ejection: Duration,
    /// Default 60s; at least `min_ejection`.
    #[serde(with = "crate::duration")]
    pub max_ejection: Duration,
    /// Never eject more than this share of the endpoints, in percent. Default 50; 0 to 100.
    pub max_ejected_percent: u8,
    /// What counts as a failure. Default `[connect-failure, 5xx]`; not empty, no duplicates.
    pub failure_on: Vec<FailureCondition>,
}

impl OutlierDetection {
    /// Whether endpoints are ever ejected.
    pub fn enabled(&self) -> bool {
        self.consecutive_failures > 0
    }
}

impl Default for OutlierDetection {
    fn default() -> Self {
        OutlierDetection {
            consecutive_failures: 7,
            min_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(60),
            max_ejected_percent: 50,
            failure_on: vec![
                FailureCondition::ConnectFailure,
                FailureCondition::Status5xx,
            ],
        }
    }
}

/// `services[].outlierDetection.failureOn[]`.
///
/// Serializes as written: `connect-failure`, `timeout`, `5xx`, `gateway-error`, or the status
/// code as an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FailureCondition {
    /// The connection could not be made (refused, reset, connect timeout).
    ConnectFailure,
    /// The response timeout of the request's route expired.
    Timeout,
    /// Any response status from 500 to 599.
    Status5xx,
    /// 502, 503 or 504: the endpoint is a gateway whose own upstream failed.
    GatewayError,
    /// This response status; 500 to 599.
    Status(u16),
}

impl FailureCondition {
    /// Whether a response with `status` counts as a failure under this condition.
    pub fn matches_status(self, status: u16) -> bool {
        match self {
            FailureCondition::Status5xx => (500..=599).contains(&status),
            FailureCondition::GatewayError => matches!(status, 502..=504),
            FailureCondition::Status(code) => code == status,
            FailureCondition::ConnectFailure | FailureCondition::Timeout => false,
        }
    }
}

impl std::fmt::Display for FailureCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureCondition::ConnectFailure => f.write_str("connect-failure"),
            FailureCondition::Timeout => f.write_str("timeout"),
            FailureCondition::Status5xx => f.write_str("5xx"),
            FailureCondition::GatewayError => f.write_str("gateway-error"),
            FailureCondition::Status(code) => write!(f, "{code}"),
        }
    }
}

impl Serialize for FailureCondition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FailureCondition::Status(code) => s.serialize_u16(*code),
            other => s.collect_str(other),
        }
    }
}

/// `services[].limits`: what one service may cost, per endpoint and in all.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceLimits {
    /// Connecting to an endpoint. Default 1s; > 0.
    #[serde(with = "crate::duration")]
    pub connect_timeout: Duration,
    /// An idle pooled connection is closed after this long. Default 10s (below Puma's 20s
    /// keep-alive); > 0.
    #[serde(with = "crate::duration")]
    pub idle_timeout: Duration,
    /// HTTP/1 connections open to one endpoint at once. Default 10000; at least 1.
    pub max_connections: usize,
    /// Requests of this service waiting for a connection or an endpoint; beyond it, 503 at
    /// once. Default 10000; at least 1.
    pub max_pending_requests: usize,
    /// Longest a request waits for a ready endpoint before it gets 503. Default 3s; > 0.
    #[serde(with = "crate::duration")]
    pub fail_fast_timeout: Duration,
    /// HTTP/2 streams on one connection before another connection is opened (or fewer, if
    /// the endpoint says so). Default 100; at least 1.
    pub max_concurrent_streams: u32,
    /// Tunnels to this service (opaque connections, upgrades, `CONNECT`) without a byte either
    /// way for this long are closed. Default: absent, `proxy.tunnelIdleTimeout` applies;
    /// `0s` means never.
    #[serde(
        serialize_with = "crate::duration::serialize_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub tunnel_idle_timeout: Option<Duration>,
}

impl ServiceLimits {
    /// The tunnel idle timeout in force for this service: its own, else the proxy's; `None`
    /// when that is `0s`: never.
    pub fn tunnel_idle(&self, proxy: &ProxySettings) -> Option<Duration> {
        self.tunnel_idle_timeout
            .map_or(proxy.tunnel_idle(), |d| Some(d).filter(|d| !d.is_zero()))
    }
}

impl Default for ServiceLimits {
    fn default() -> Self {
        ServiceLimits {
            connect_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_pending_requests: 10_000,
            fail_fast_timeout: Duration::from_secs(3),
            max_concurrent_streams: 100,
            tunnel_idle_timeout: None,
        }
    }
}

/// `services[].routes[]`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    /// Label for logs and metrics. Default: `routes[N]` by position.
    pub name: String,
    #[serde(rename = "match")]
    pub matches: RouteMatch,
    /// Response timeout: how long the request may take to get response headers once it has
    /// been forwarded in full, across every attempt, backoff and hedge. Default 30s; `0s` means
    /// none (streams).
    #[serde(with = "crate::duration")]
    pub timeout: Duration,
    /// Absent: no retries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Absent: no hedging.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hedge: Option<Hedge>,
}

impl Route {
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// The route of a request that matches no listed route: everything, default timeout, no
    /// retries, no hedging.
    pub fn fallback() -> Self {
        Route {
            name: "default".to_owned(),
            matches: RouteMatch::default(),
            timeout: Self::DEFAULT_TIMEOUT,
            retry: None,
            hedge: None,
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
