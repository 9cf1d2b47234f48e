//! The proxy's Prometheus metrics.
//!
//! Names follow the design's conventions: `herd_` prefix, base units (seconds, bytes), counters
//! ending in `_total`, latency histograms with fixed buckets from 1 ms to 60 s. Labels are
//! bounded: direction, service, route, status code, classification, error kind, and the SPIFFE
//! IDs mutual TLS proved (one per ServiceAccount, see [`TlsPeer`]); never a path, a client
//! address or a remote host's name (traffic to hosts outside the mesh is `egress`).
//!
//! Recording is cheap on the request path: label handles are resolved when a route or service is
//! installed (a snapshot is built), not per request, so recording is an atomic add. A status code
//! resolves its series the first time it is seen on a route and keeps it, and so does a peer's
//! identity (its series are kept beside the route's plaintext ones). Handles are shared
//! between snapshots that keep the same route or service, and when the last one goes (the route
//! was removed and its requests are done) its series are removed from the exposition.

//!
//! Metrics sit below the stages that record them and know none of them: the balancers' gauges,
//! for one, are set by the balancers through [`BalancerGauges`].

mod families;
mod handles;
mod peer;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::Hash;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};

use prometheus::core::Collector;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Registry, TextEncoder};

pub use self::families::BUCKETS;
use self::families::{Families, counter};
pub use self::handles::{
    ErrorKind, RetryReason, RouteMetrics, ServiceMetrics, TcpConnections, TcpMetrics,
};
pub use self::peer::TlsPeer;
use crate::listen::Direction;

/// Per-endpoint latency gauges are exported only for services this small: beyond, one series per
/// pod is a cardinality an operator did not ask for.
const MAX_ENDPOINT_SERIES: usize = 32;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    families: Arc<Families>,
    pub config_version: IntGauge,
    pub config_reloads: IntCounterVec,
    pub access_log_dropped: IntCounter,
    routes: Arc<Shared<RouteKey, RouteMetrics>>,
    services: Arc<Shared<Arc<str>, ServiceMetrics>>,
    tcp: Arc<Shared<(Direction, Arc<str>), TcpMetrics>>,
}

/// A route's labels: direction, service, route.
type RouteKey = (Direction, Arc<str>, Arc<str>);

/// Handles by their labels, shared while anyone holds them.
struct Shared<K, V>(Mutex<HashMap<K, Weak<V>>>);

impl<K: Eq + Hash + Clone, V> Shared<K, V> {
    fn new() -> Self {
        Shared(Mutex::new(HashMap::new()))
    }

    fn get(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        let mut map = self.0.lock().expect("metrics lock poisoned");
        if let Some(existing) = map.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        map.retain(|_, v| v.strong_count() > 0);
        let made = Arc::new(make());
        map.insert(key, Arc::downgrade(&made));
        made
    }
}

/// One inbound client's authorization counters (see [`Metrics::authorizations`]).
#[derive(Clone)]
pub struct Authorizations {
    pub allowed: IntCounter,
    pub denied: IntCounter,
}

/// Listener connection handles.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub accepted: IntCounter,
    pub open: IntGauge,
    pub tls_accepted: IntCounter,
    pub plaintext_refused: IntCounter,
    /// Failed handshakes by reason: the family and this listener's labels.
    tls_failures: (IntCounterVec, [&'static str; 1], Arc<str>),
}

impl ListenerMetrics {
    /// Counts a failed mutual-TLS handshake (`reason` is one of a few fixed words).
    pub fn handshake_failure(&self, reason: &'static str) {
        let (family, [direction], listener) = &self.tls_failures;
        family
            .with_label_values(&[direction, &**listener, reason])
            .inc();
    }
}

impl Metrics {
    /// Adds a series owned elsewhere (the control-plane client's) to what `/metrics` serves.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("metric registered once");
    }

    pub fn new() -> Self {
        let families = Families::new();
        let registry = Registry::new();
        let config_version = IntGauge::new(
            "herd_config_version",
            "Version of the configuration in force (1 at start, +1 per applied reload).",
        )
        .expect("valid metric");
        let access_log_dropped = IntCounter::new(
            "herd_access_log_dropped_total",
            "Access log lines dropped because the writer fell behind (stdout blocked).",
        )
        .expect("valid metric");
        let config_reloads = counter(
            "herd_config_reloads_total",
            "Configuration reloads attempted, by result (applied, rejected).",
            &["result"],
        );
        let f = &families;
        let collectors: Vec<Box<dyn Collector>> = vec![
            Box::new(config_version.clone()),
            Box::new(config_reloads.clone()),
            Box::new(access_log_dropped.clone()),
            Box::new(f.requests.clone()),
            Box::new(f.responses.clone()),
            Box::new(f.latency.clone()),
            Box::new(f.duration.clone()),
            Box::new(f.retries.clone()),
            Box::new(f.retries_skipped.clone()),
            Box::new(f.hedges.clone()),
            Box::new(f.hedges_won.clone()),
            Box::new(f.ejections.clone()),
            Box::new(f.overload_rejections.clone()),
            Box::new(f.tcp_opened.clone()),
            Box::new(f.tcp_closed.clone()),
            Box::new(f.tcp_open.clone()),
            Box::new(f.tcp_sent.clone()),
            Box::new(f.tcp_received.clone()),
            Box::new(f.endpoints.clone()),
            Box::new(f.pending.clone()),
            Box::new(f.endpoint_rtt.clone()),
            Box::new(f.listener_accepted.clone()),
            Box::new(f.listener_open.clone()),
            Box::new(f.tls_accepted.clone()),
            Box::new(f.tls_failures.clone()),
            Box::new(f.plaintext_refused.clone()),
            Box::new(f.authorizations.clone()),
            Box::new(f.transparent_refused.clone()),
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
        ];
        for c in collectors {
            registry.register(c).expect("metric registered once");
        }
        for result in ["applied", "rejected"] {
            config_reloads.with_label_values(&[result]);
        }
        Metrics {
            registry,
            families: Arc::new(families),
            config_version,
            config_reloads,
            access_log_dropped,
            routes: Arc::new(Shared::new()),
            services: Arc::new(Shared::new()),
            tcp: Arc::new(Shared::new()),
        }
    }

    /// The handles of one route's series.
    pub fn route(&self, direction: Direction, service: &str, route: &str) -> Arc<RouteMetrics> {
        let key = (
            direction,
            Arc::<str>::from(service),
            Arc::<str>::from(route),
        );
        self.routes.get(key, || {
            RouteMetrics::new(self.families.clone(), direction, service, route)
        })
    }

    /// The handles of one service's balancer series.
    pub fn service(&self, service: &str) -> Arc<ServiceMetrics> {
        self.services.get(service.into(), || {
            ServiceMetrics::new(self.families.clone(), service)
        })
    }

    /// The handles of one service's opaque-connection series.
    pub fn tcp(&self, direction: Direction, service: &str) -> Arc<TcpMetrics> {
        self.tcp.get((direction, service.into()), || {
            TcpMetrics::new(self.families.clone(), direction, service)
        })
    }

    /// The allowed and denied counters of clients `client` (a SPIFFE ID, or `unauthenticated`)
    /// on inbound port `port`. Resolved once per connection: a connection's port and client do
    /// not change.
    pub fn authorizations(&self, port: u16, client: &str) -> Authorizations {
        let port = port.to_string();
        let family = &self.families.authorizations;
        Authorizations {
            allowed: family.with_label_values(&[&port, client, "allowed"]),
            denied: family.with_label_values(&[&port, client, "denied"]),
        }
    }

    /// Counts a redirected connection closed unforwarded (`reason`: see the family's help).
    pub fn transparent_refused(&self, direction: Direction, reason: &str) {
        self.families
            .transparent_refused
            .with_label_values(&[direction.as_str(), reason])
            .inc();
    }

    /// Series for one listener: `listener` is `inbound`, `outbound`, or an opaque service's name.
    pub fn listener(&self, direction: Direction, listener: &str) -> ListenerMetrics {
        let labels = [direction.as_str(), listener];
        ListenerMetrics {
            accepted: self.families.listener_accepted.with_label_values(&labels),
            open: self.families.listener_open.with_label_values(&labels),
            tls_accepted: self.families.tls_accepted.with_label_values(&labels),
            plaintext_refused: self.families.plaintext_refused.with_label_values(&labels),
            tls_failures: (
                self.families.tls_failures.clone(),
                [direction.as_str()],
                listener.into(),
            ),
        }
    }

    /// Drops the series of a listener that has stopped.
    pub fn forget_listener(&self, direction: Direction, listener: &str) {
        let labels = [direction.as_str(), listener];
        let _ = self.families.listener_accepted.remove_label_values(&labels);
        let _ = self.families.listener_open.remove_label_values(&labels);
        let _ = self.families.tls_accepted.remove_label_values(&labels);
        let _ = self.families.plaintext_refused.remove_label_values(&labels);
    }

    /// The gauges read from the balancers' state (endpoints by state, pending requests,
    /// endpoint latency), cleared, for the balancers to set now: at each scrape.
    pub fn balancer_gauges(&self) -> BalancerGauges<'_> {
        let f = &self.families;
        f.endpoints.reset();
        f.pending.reset();
        f.endpoint_rtt.reset();
        BalancerGauges(f)
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

/// The gauges of the balancers' state, which the balancers set at each scrape (see
/// [`Metrics::balancer_gauges`]): metrics only names the series.
pub struct BalancerGauges<'a>(&'a Families);

impl BalancerGauges<'_> {
    /// `count` endpoints of `service` are in `state` (`ready`, `ejected` or `probing`).
    pub fn endpoints(&self, service: &str, state: &str, count: i64) {
        self.0
            .endpoints
            .with_label_values(&[service, state])
            .set(count);
    }

    /// `pending` requests of `service` wait for an endpoint.
    pub fn pending(&self, service: &str, pending: usize) {
        self.0
            .pending
            .with_label_values(&[service])
            .set(pending as i64);
    }

    /// Whether a service of `endpoints` endpoints gets a latency series per endpoint.
    pub fn per_endpoint(&self, endpoints: usize) -> bool {
        endpoints <= MAX_ENDPOINT_SERIES
    }

    /// `endpoint`'s latency estimate in `service` (set only where [`Self::per_endpoint`]).
    pub fn endpoint_rtt(&self, service: &str, endpoint: SocketAddr, seconds: f64) {
        let gauge: Gauge = self
            .0
            .endpoint_rtt
            .with_label_values(&[service, &endpoint.to_string()]);
        gauge.set(seconds);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
