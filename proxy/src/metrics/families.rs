//! The metric families: every series' name, help, labels and buckets, in one place.
//!
//! The label handles ([`super::handles`]) and the registry ([`super::Metrics`]) both use them;
//! they live apart from both so that neither needs the other.

use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

/// Latency buckets, seconds: 1 ms to 60 s.
pub const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The metric families, shared by every handle.
pub struct Families {
    pub(super) requests: IntCounterVec,
    pub(super) responses: IntCounterVec,
    pub(super) latency: HistogramVec,
    pub(super) duration: HistogramVec,
    pub(super) retries: IntCounterVec,
    pub(super) retries_skipped: IntCounterVec,
    pub(super) hedges: IntCounterVec,
    pub(super) hedges_won: IntCounterVec,
    pub(super) ejections: IntCounterVec,
    pub(super) overload_rejections: IntCounterVec,
    pub(super) tcp_opened: IntCounterVec,
    pub(super) tcp_closed: IntCounterVec,
    pub(super) tcp_open: IntGaugeVec,
    pub(super) tcp_sent: IntCounterVec,
    pub(super) tcp_received: IntCounterVec,
    pub(super) endpoints: IntGaugeVec,
    pub(super) pending: IntGaugeVec,
    pub(super) endpoint_rtt: GaugeVec,
    pub(super) listener_accepted: IntCounterVec,
    pub(super) listener_open: IntGaugeVec,
    pub(super) tls_accepted: IntCounterVec,
    pub(super) tls_failures: IntCounterVec,
    pub(super) plaintext_refused: IntCounterVec,
    pub(super) authorizations: IntCounterVec,
    pub(super) transparent_refused: IntCounterVec,
}

impl Families {
    pub(super) fn new() -> Self {
        Families {
            requests: counter(
                "herd_http_requests_total",
                "Client requests routed, one per request (not per attempt).",
                ROUTE,
            ),
            responses: counter(
                "herd_http_responses_total",
                "Responses sent to clients, by mutual TLS (tls; inbound: the client's verified SPIFFE ID as client_identity; outbound: the answering endpoint's as server_identity), status code, classification (failure: 5xx, or proxy-generated because of the app or the proxy; success: the app's non-5xx, or a bad request the client caused) and proxy error kind (empty for the app's own responses).",
                &[
                    "direction",
                    "service",
                    "route",
                    PEER[0],
                    PEER[1],
                    PEER[2],
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
                "Opaque TCP connections (tunnels) opened to an endpoint, by mutual TLS (tls; inbound: the client's verified SPIFFE ID as client_identity; outbound: the endpoint's as server_identity).",
                &["direction", "service", PEER[0], PEER[1], PEER[2]],
            ),
            tcp_closed: counter(
                "herd_tcp_connections_closed_total",
                "Opaque TCP connections closed, by mutual TLS (as opened) and outcome (ok, error, idle).",
                &["direction", "service", PEER[0], PEER[1], PEER[2], "outcome"],
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
            tls_accepted: counter(
                "herd_tls_handshakes_total",
                "Mutual-TLS handshakes completed with clients (other proxies), by listener.",
                &["direction", "listener"],
            ),
            tls_failures: counter(
                "herd_tls_handshake_failures_total",
                "Mutual-TLS handshakes with clients that failed, by listener and reason.",
                &["direction", "listener", "reason"],
            ),
            plaintext_refused: counter(
                "herd_tls_plaintext_refused_total",
                "Plaintext connections refused by a listener whose mtls is strict.",
                &["direction", "listener"],
            ),
            authorizations: counter(
                "herd_authorization_decisions_total",
                "Inbound requests (HTTP) and connections (opaque) checked against authorization policy, by port, client (its SPIFFE ID, or unauthenticated) and result (allowed, denied).",
                &["port", "client", "result"],
            ),
            transparent_refused: counter(
                "herd_transparent_refused_total",
                "Connections redirected to a transparent listener that were closed unforwarded, by reason (loop: the original destination is one of the proxy's own listeners; not-local: an inbound destination that is not this pod's; no-destination: an inbound connection made to the listener itself with no app configured; egress-refused: an outbound destination no service claims under egress mesh-only).",
                &["direction", "reason"],
            ),
        }
    }
}

pub(super) fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
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

/// The labels of what mutual TLS proved about the other end (values from [`super::peer`]), in
/// this order: the `prometheus` crate tells a family's series apart by a hash of their label
/// values run together, so the same SPIFFE ID as client (`ID`, `true`, ``) and as server (``,
/// `true`, `ID`) must not be the same bytes, as they would be with the identities side by side.
/// (The exposition lists labels by name, whatever the order here.)
pub(super) const PEER: [&str; 3] = ["client_identity", "tls", "server_identity"];
