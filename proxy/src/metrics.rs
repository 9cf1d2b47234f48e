//! The proxy's Prometheus registry.
//!
//! Label handles are resolved once, when a listener starts, never per connection or request, so
//! recording is an atomic add. Names follow the design's conventions: `herd_` prefix, base units,
//! counters ending in `_total`.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::listen::Direction;

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub config_version: IntGauge,
    pub config_reloads: IntCounterVec,
    connections_opened: IntCounterVec,
    connections_open: IntGaugeVec,
}

/// Handles for one listener's connection series.
#[derive(Clone)]
pub struct ConnectionMetrics {
    pub opened: IntCounter,
    pub open: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let config_version = IntGauge::new(
            "herd_config_version",
            "Version of the configuration in force (1 at start, +1 per applied reload).",
        )
        .expect("valid metric");
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "herd_config_reloads_total",
                "Configuration reloads attempted, by result (applied, rejected).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let connections_opened = IntCounterVec::new(
            Opts::new(
                "herd_tcp_connections_opened_total",
                "Client connections accepted, by direction and listener.",
            ),
            &["direction", "listener"],
        )
        .expect("valid metric");
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "herd_tcp_connections_open",
                "Client connections open now, by direction and listener.",
            ),
            &["direction", "listener"],
        )
        .expect("valid metric");
        for c in [
            Box::new(config_version.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(config_reloads.clone()),
            Box::new(connections_opened.clone()),
            Box::new(connections_open.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        for result in ["applied", "rejected"] {
            config_reloads.with_label_values(&[result]);
        }
        Metrics {
            registry,
            config_version,
            config_reloads,
            connections_opened,
            connections_open,
        }
    }

    /// Series for one listener: `listener` is `inbound`, `outbound`, or an opaque service's name.
    pub fn connections(&self, direction: Direction, listener: &str) -> ConnectionMetrics {
        let labels = [direction.as_str(), listener];
        ConnectionMetrics {
            opened: self.connections_opened.with_label_values(&labels),
            open: self.connections_open.with_label_values(&labels),
        }
    }

    /// Drops the series of a listener that has stopped.
    pub fn forget_listener(&self, direction: Direction, listener: &str) {
        let labels = [direction.as_str(), listener];
        let _ = self.connections_opened.remove_label_values(&labels);
        let _ = self.connections_open.remove_label_values(&labels);
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
