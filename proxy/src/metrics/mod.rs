//! The proxy's Prometheus metrics.
//!
//! Names follow the design's conventions: `herd_` prefix, base units (seconds, bytes), counters
//! ending in `_total`, latency histograms with fixed buckets from 1 ms to 60 s. Labels are
//! bounded: direction, service, route, status code, classification, error kind; never a path, a
//! client address or a remote host's name (traffic to hosts outside the mesh is `egress`).
//!
//! Recording is cheap on the request path: label handles are resolved when a route or service is
//! installed (a snapshot is built), not per request, so recording is an atomic add. A status code
//! resolves its series the first time it is seen on a route and keeps it. Handles are shared
//! between snapshots that keep the same route or service, and when the last one goes (the route
//! was removed and its requests are done) its series are removed from the exposition.

mod handles;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, Weak};

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

pub use self::handles::{ErrorKind, RetryReason, RouteMetrics, ServiceMetrics, TcpMetrics};
use crate::balance::load::now_nanos;
use crate::balance::outlier::State;
use crate::listen::Direction;
use crate::snapshot::Snapshot;

/// Latency buckets, seconds: 1 ms to 60 s.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Per-endpoint latency gauges are exported only for services this small: beyond, one series per
/// pod is a cardinality an operator did not ask for.
const MAX_ENDPOINT_SERIES: usize = 32;

/// The metric families, shared by every handle.
pub struct Families {
    pub(crate) requests: IntCounterVec,
    pub(crate) responses: IntCounterVec,
    pub(crate) latency: HistogramVec,
    pub(crate) duration: HistogramVec,
    pub(crate) retries: IntCounterVec,
    pub(crate) retries_skipped: IntCounterVec,
    pub(crate) hedges: IntCounterVec,
    pub(crate) hedges_won: IntCounterVec,
    pub(crate) ejections: IntCounterVec,
    pub(crate) overload_rejections: IntCounterVec,
    pub(crate) tcp_opened: IntCounterVec,
    pub(crate) tcp_closed: IntCounterVec,
    pub(crate) tcp_open: IntGaugeVec,
    pub(crate) tcp_sent: IntCounterVec,
    pub(crate) tcp_received: IntCounterVec,
    endpoints: IntGaugeVec,
    pending: IntGaugeVec,
    endpoint_rtt: GaugeVec,
    listener_accepted: IntCounterVec,
    listener_open: IntGaugeVec,
}

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

/// Listener connection handles.
#[derive(Clone)]
pub struct ListenerMetrics {
    pub accepted: IntCounter,
    pub open: IntGauge,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn gauge(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric")
}

fn histogram(name: &str, help: &str) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        &["direction", "service", "route"],
    )
    .expect("valid metric")
}

const ROUTE: &[&str] = &["direction", "service", "route"];

impl Metrics {
    /// Adds a series owned elsewhere (the control-plane client's) to what `/metrics` serves.
    pub fn register(&self, collector: Box<dyn prometheus::core::Collector>) {
        self.registry
            .register(collector)
            .expect("metric registered once");
    }

    pub fn new() -> Self {
        let families = Families {
            requests: counter(
                "herd_http_requests_total",
                "Client requests routed, one per request (not per attempt).",
                ROUTE,
            ),
            responses: counter(
                "herd_http_responses_total",
                "Responses sent to clients, by status code, classification (failure: 5xx, or proxy-generated because of the app or the proxy; success: the app's non-5xx, or a bad request the client caused) and proxy error kind (empty for the app's own responses).",
                &[
                    "direction",
                    "service",
                    "route",
                    "status_code",
                    "classification",
                    "error",
                ],
            ),
            latency: histogram(
                "herd_http_response_latency_seconds",
                "Time from the request's arrival to the response headers.",
            ),
            duration: histogram(
                "herd_http_response_duration_seconds",
                "Time from the request's arrival to the end of the response body.",
            ),
            retries: counter(
                "herd_http_retries_total",
                "Retries sent, by reason (connect-failure, refused-stream, reset, status, per-try-timeout).",
                &["direction", "service", "route", "reason"],
            ),
            retries_skipped: counter(
                "herd_http_retries_skipped_total",
                "Retries not sent because the service's retry budget was spent.",
                ROUTE,
            ),
            hedges: counter("herd_http_hedges_total", "Hedged attempts sent.", ROUTE),
            hedges_won: counter(
                "herd_http_hedges_won_total",
                "Hedged attempts whose response was the one returned.",
                ROUTE,
            ),
            ejections: counter(
                "herd_balancer_ejections_total",
                "Endpoints ejected by outlier detection.",
                &["service"],
            ),
            overload_rejections: counter(
                "herd_balancer_overload_rejections_total",
                "Requests refused with 503 because maxPendingRequests were already waiting.",
                &["service"],
            ),
            tcp_opened: counter(
                "herd_tcp_connections_opened_total",
                "Opaque TCP connections (tunnels) opened to an endpoint.",
                &["direction", "service"],
            ),
            tcp_closed: counter(
                "herd_tcp_connections_closed_total",
                "Opaque TCP connections closed, by outcome (ok, error).",
                &["direction", "service", "outcome"],
            ),
            tcp_open: gauge(
                "herd_tcp_connections_open",
                "Opaque TCP connections open now.",
                &["direction", "service"],
            ),
            tcp_sent: counter(
                "herd_tcp_sent_bytes_total",
                "Bytes sent toward the endpoint over opaque connections.",
                &["direction", "service"],
            ),
            tcp_received: counter(
                "herd_tcp_received_bytes_total",
                "Bytes received from the endpoint over opaque connections.",
                &["direction", "service"],
            ),
            endpoints: gauge(
                "herd_balancer_endpoints",
                "Endpoints of a service by state (ready, ejected, probing).",
                &["service", "state"],
            ),
            pending: gauge(
                "herd_balancer_pending_requests",
                "Requests waiting for an endpoint or a connection.",
                &["service"],
            ),
            endpoint_rtt: GaugeVec::new(
                Opts::new(
                    "herd_balancer_endpoint_rtt_seconds",
                    "An endpoint's peak-EWMA latency estimate (services of at most 32 endpoints).",
                ),
                &["service", "endpoint"],
            )
            .expect("valid metric"),
            listener_accepted: counter(
                "herd_listener_connections_accepted_total",
                "Client connections accepted, by listener (inbound, outbound, or an opaque service's name).",
                &["direction", "listener"],
            ),
            listener_open: gauge(
                "herd_listener_connections_open",
                "Client connections open now, by listener.",
                &["direction", "listener"],
            ),
        };
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

    /// Series for one listener: `listener` is `inbound`, `outbound`, or an opaque service's name.
    pub fn listener(&self, direction: Direction, listener: &str) -> ListenerMetrics {
        let labels = [direction.as_str(), listener];
        ListenerMetrics {
            accepted: self.families.listener_accepted.with_label_values(&labels),
            open: self.families.listener_open.with_label_values(&labels),
        }
    }

    /// Drops the series of a listener that has stopped.
    pub fn forget_listener(&self, direction: Direction, listener: &str) {
        let labels = [direction.as_str(), listener];
        let _ = self.families.listener_accepted.remove_label_values(&labels);
        let _ = self.families.listener_open.remove_label_values(&labels);
    }

    /// Sets the gauges read from the balancers' state (endpoints by state, pending requests,
    /// endpoint latency) from `snapshot`; called at each scrape.
    pub fn observe_balancers(&self, snapshot: &Snapshot) {
        let f = &self.families;
        f.endpoints.reset();
        f.pending.reset();
        f.endpoint_rtt.reset();
        let now = now_nanos();
        for service in &snapshot.services {
            let set = service.balancer.endpoints();
            let mut counts = [0i64; 3];
            for (endpoint, _) in set.iter() {
                let state = endpoint.health.state(now);
                counts[match state {
                    State::Ready => 0,
                    State::Ejected => 1,
                    State::Probing => 2,
                }] += 1;
                if set.len() <= MAX_ENDPOINT_SERIES
                    && let Some(rtt) = endpoint.load.rtt_ns(now, service.balancer.decay())
                {
                    let gauge: Gauge = f
                        .endpoint_rtt
                        .with_label_values(&[&*service.name, &endpoint.addr().to_string()]);
                    gauge.set(rtt / 1e9);
                }
            }
            for (state, count) in [State::Ready, State::Ejected, State::Probing]
                .iter()
                .zip(counts)
            {
                f.endpoints
                    .with_label_values(&[&*service.name, state.as_str()])
                    .set(count);
            }
            f.pending
                .with_label_values(&[&*service.name])
                .set(service.balancer.pending() as i64);
        }
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
