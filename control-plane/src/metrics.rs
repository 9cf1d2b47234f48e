//! herd-control's Prometheus series (`herd_control_*`), served on the admin port.

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Routing streams open: proxies connected to this replica.
    pub proxies: IntGauge,
    /// Service subscriptions open across endpoints streams.
    pub endpoint_watches: IntGauge,
    /// Updates written to streams, by `kind` (`routing`, `endpoints`).
    pub updates_sent: IntCounterVec,
    /// Proxies' verdicts, by `kind` and `result` (`ack`, `nack`).
    pub verdicts: IntCounterVec,
    /// Services in the mesh now.
    pub services: IntGauge,
    /// Problems in force per source (files refused, watches failing), by `source`.
    pub source_problems: IntGaugeVec,
    /// Changes to the mesh applied to the index.
    pub mesh_changes: prometheus::IntCounter,
    /// Leaf certificates the identity service signed.
    pub certificates_issued: prometheus::IntCounter,
    /// `Certify` calls refused, by bounded `reason` (see `identity::CertifyError::reason`).
    pub certify_refused: IntCounterVec,
    /// The CA certificate in force's notAfter, Unix seconds (0 without an identity service).
    pub issuer_not_after: IntGauge,
    /// Roots in the trust bundle in force.
    pub trust_bundle_roots: IntGauge,
    /// The control plane's own certificate's notAfter, Unix seconds (0 without a CA).
    pub own_not_after: IntGauge,
    /// Connections accepted on the gRPC ports, by `port` (`discovery`, `identity`) and
    /// `security` (`plaintext`, `tls`, `mutual`, or `failed` for a refused handshake).
    pub connections: IntCounterVec,
    /// Admission reviews the injector answered, by `result` (`injected`, `already-injected`,
    /// `not-wanted`, `refused`, `malformed`).
    pub injections: IntCounterVec,
    /// The injector webhook's certificate's notAfter, Unix seconds (0 without a CA).
    pub webhook_not_after: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let proxies = gauge(
            "herd_control_proxies",
            "Proxies connected to this replica (open routing streams).",
        );
        let endpoint_watches = gauge(
            "herd_control_endpoint_watches",
            "Service endpoint subscriptions open on this replica.",
        );
        let updates_sent = counter_vec(
            "herd_control_updates_sent_total",
            "Updates written to proxies' streams, by kind (routing, endpoints).",
            &["kind"],
        );
        let verdicts = counter_vec(
            "herd_control_verdicts_total",
            "Proxies' answers to updates, by kind and result (ack, nack).",
            &["kind", "result"],
        );
        let services = gauge("herd_control_services", "Services in the mesh.");
        let source_problems =
            IntGaugeVec::new(
                Opts::new(
                    "herd_control_source_problems",
                    "Problems in force per source: files refused (their last good version serves), watches failing.",
                ),
                &["source"],
            )
            .expect("valid metric");
        registry
            .register(Box::new(source_problems.clone()))
            .expect("unique metric");
        let mesh_changes = prometheus::IntCounter::new(
            "herd_control_mesh_changes_total",
            "Changes of the mesh applied to the index.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(mesh_changes.clone()))
            .expect("unique metric");
        let certificates_issued = prometheus::IntCounter::new(
            "herd_control_certificates_issued_total",
            "Leaf certificates the identity service signed.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(certificates_issued.clone()))
            .expect("unique metric");
        let certify_refused = counter_vec(
            "herd_control_certify_refused_total",
            "Certify calls refused, by reason (csr, token, audience, not-service-account, token-review-unavailable, identity, issuer).",
            &["reason"],
        );
        let issuer_not_after = gauge(
            "herd_control_issuer_not_after_timestamp_seconds",
            "When the CA certificate in force expires, in Unix seconds (0: no identity service).",
        );
        let trust_bundle_roots = gauge(
            "herd_control_trust_bundle_roots",
            "Root certificates in the trust bundle in force.",
        );
        let own_not_after = gauge(
            "herd_control_certificate_not_after_timestamp_seconds",
            "When the control plane's own certificate (presented on its gRPC ports) expires, in Unix seconds (0: no CA).",
        );
        let connections = counter_vec(
            "herd_control_connections_total",
            "Connections accepted on the gRPC ports, by port (discovery, identity) and security (plaintext; tls: the server authenticated; mutual: both sides; failed: a handshake refused or not finished within 10 s).",
            &["port", "security"],
        );
        let injections = counter_vec(
            "herd_control_injections_total",
            "Admission reviews the injector answered, by result (injected, already-injected, not-wanted, refused: herd cannot patch the pod, malformed: the review could not be read).",
            &["result"],
        );
        let webhook_not_after = gauge(
            "herd_control_webhook_certificate_not_after_timestamp_seconds",
            "When the injector webhook's serving certificate expires, in Unix seconds (0: no CA).",
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        Metrics {
            registry,
            proxies,
            endpoint_watches,
            updates_sent,
            verdicts,
            services,
            source_problems,
            mesh_changes,
            certificates_issued,
            certify_refused,
            issuer_not_after,
            trust_bundle_roots,
            own_not_after,
            connections,
            injections,
            webhook_not_after,
        }
    }

    pub fn verdict(&self, kind: &str, ack: bool) {
        self.verdicts
            .with_label_values(&[kind, if ack { "ack" } else { "nack" }])
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut out)
            .expect("text encoding cannot fail");
        out
    }
}
