//! One Kubernetes Service and its EndpointSlices -> herd services ([`Discovered`]).
//!
//! Pure: the watchers keep the objects, this turns the objects of one Service into what the
//! index takes, and says what it had to leave out. Each TCP port of the Service is one herd
//! service, because a port is what a client addresses and what an EndpointSlice lists
//! endpoints for:
//!
//! - **Names.** `NAME.NAMESPACE` for a Service with one TCP port; `NAME.NAMESPACE.PORT-NAME` for
//!   each port of one with several (Kubernetes requires port names then). Adding a second port
//!   renames the first: the name says which port.
//! - **Authorities** (HTTP ports only): `NAME`, `NAME.NAMESPACE`, `NAME.NAMESPACE.svc` and
//!   `NAME.NAMESPACE.svc.DOMAIN`, each with `:PORT`; and without a port for the Service's
//!   default HTTP port (port 80 if it has one, else its first HTTP port), since a client that
//!   names no port in its URL sends none. Opaque ports have none: nothing sends them a Host.
//! - **Protocol** from the port's `appProtocol`: `http` and `kubernetes.io/ws` are `http`;
//!   `http2`, `h2c`, `kubernetes.io/h2c` and `grpc` are `http2`; any other value (`tcp`,
//!   `https`, `kubernetes.io/wss`, a database's name, ...) is `opaque`, since herd must not
//!   sniff what it does not know to be HTTP. Without `appProtocol`, the well-known ports of
//!   protocols where the server speaks first or that are never HTTP ([`OPAQUE_PORTS`]) are
//!   `opaque`, and everything else `http` (detected, so an HTTP/2 client still works).
//! - **Endpoints** from every slice labelled `kubernetes.io/service-name: NAME`, on the slice
//!   port whose name matches the Service port's: the endpoint's first address (the API says to
//!   use only that one) at that port. `ready` is the slice's `ready` condition (unset means
//!   ready), `terminating` its `terminating` one; `zone` and `pod` (`NAMESPACE/NAME` of a Pod
//!   `targetRef`) are carried along. An address listed by two slices (a slice being replaced)
//!   counts once, as its most usable entry.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use herd_api::discovery::Endpoint;
use herd_config::{
    Authority, BalancerConfig, OutlierDetection, Protocol, RetryBudget, Service, ServiceLimits,
};
use k8s_openapi::api::core::v1::{Service as KubeService, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::index::Discovered;

/// Ports opaque without an `appProtocol`: SMTP (25, 587), MySQL (3306), PostgreSQL (5432),
/// PgBouncer (6432), Redis (6379), memcached (11211).
pub const OPAQUE_PORTS: [i32; 7] = [25, 587, 3306, 5432, 6432, 6379, 11211];

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// What one Service became, and what of it was left out (one line each, naming the object).
#[derive(Debug, Default, PartialEq)]
pub struct Translated {
    pub discovered: Vec<Discovered>,
    pub skipped: Vec<String>,
}

/// The herd protocol of a Service port.
pub fn protocol(app_protocol: Option<&str>, port: i32) -> Protocol {
    match app_protocol.map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "kubernetes.io/ws") => Protocol::Http,
        Some("http2" | "h2c" | "kubernetes.io/h2c" | "grpc") => Protocol::Http2,
        Some(_) => Protocol::Opaque,
        None if OPAQUE_PORTS.contains(&port) => Protocol::Opaque,
        None => Protocol::Http,
    }
}

/// Translates `service` with its `slices` (those labelled with its name, in its namespace);
/// `domain` is the cluster's DNS domain (`cluster.local`).
pub fn translate(service: &KubeService, slices: &[&EndpointSlice], domain: &str) -> Translated {
    let mut out = Translated::default();
    let namespace = service.metadata.namespace.as_deref().unwrap_or_default();
    let name = service.metadata.name.as_deref().unwrap_or_default();
    let what = format!("Service {namespace}/{name}");
    let Some(spec) = &service.spec else {
        out.skipped.push(format!("{what}: no spec"));
        return out;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        out.skipped.push(format!(
            "{what}: type ExternalName (a DNS alias, no endpoints to balance); skipped"
        ));
        return out;
    }
    let ports = spec.ports.as_deref().unwrap_or_default();
    let tcp: Vec<&ServicePort> = ports
        .iter()
        .filter(|p| p.protocol.as_deref().unwrap_or("TCP") == "TCP")
        .collect();
    if tcp.is_empty() {
        out.skipped.push(if ports.is_empty() {
            format!("{what}: no ports; skipped")
        } else {
            format!("{what}: no TCP port (herd carries TCP only); skipped")
        });
        return out;
    }
    let base = format!("{name}.{namespace}");
    if !herd_config::is_service_name(&base) {
        out.skipped.push(format!(
            "{what}: `{base}` is not a usable service name; skipped"
        ));
        return out;
    }
    let cluster_ips: Vec<IpAddr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .filter_map(|ip| ip.parse().ok())
        .collect::<BTreeSet<IpAddr>>()
        .into_iter()
        .collect();
    let hosts = [
        name.to_owned(),
        base.clone(),
        format!("{base}.svc"),
        format!("{base}.svc.{domain}"),
    ];
    let http = |p: &ServicePort| protocol(p.app_protocol.as_deref(), p.port) != Protocol::Opaque;
    let default_port = tcp
        .iter()
        .find(|p| p.port == 80 && http(p))
        .or_else(|| tcp.iter().find(|p| http(p)))
        .map(|p| p.port);

    for port in &tcp {
        let port_name = port.name.as_deref().unwrap_or_default();
        let service_name = if tcp.len() == 1 {
            base.clone()
        } else if port_name.is_empty() {
            format!("{base}.{}", port.port)
        } else {
            format!("{base}.{port_name}")
        };
        if !herd_config::is_service_name(&service_name) || !(1..=65535).contains(&port.port) {
            out.skipped.push(format!(
                "{what}: port `{port_name}` ({}) cannot be named `{service_name}`; skipped",
                port.port
            ));
            continue;
        }
        let protocol = protocol(port.app_protocol.as_deref(), port.port);
        let mut authorities: Vec<Authority> = Vec::new();
        if protocol != Protocol::Opaque {
            let bare = default_port == Some(port.port);
            for host in &hosts {
                let with_port = format!("{host}:{}", port.port);
                let forms = [Some(with_port.as_str()), bare.then_some(host.as_str())];
                for form in forms.into_iter().flatten() {
                    if let Some(authority) = Authority::parse(form)
                        && !authorities.contains(&authority)
                    {
                        authorities.push(authority);
                    }
                }
            }
        }
        let endpoints = endpoints(port, namespace, slices, &mut out.skipped);
        out.discovered.push(Discovered {
            service: Service {
                name: service_name,
                authorities,
                protocol,
                endpoints: Vec::new(),
                dns: None,
                listen: None,
                balancer: BalancerConfig::default(),
                outlier_detection: OutlierDetection::default(),
                limits: ServiceLimits::default(),
                retry_budget: RetryBudget::default(),
                routes: Vec::new(),
            },
            cluster_ips: cluster_ips
                .iter()
                .map(|ip| SocketAddr::new(*ip, port.port as u16))
                .collect(),
            endpoints,
        });
    }
    out
}

/// The endpoints of one Service port across its slices, by address.
fn endpoints(
    port: &ServicePort,
    namespace: &str,
    slices: &[&EndpointSlice],
    skipped: &mut Vec<String>,
) -> BTreeMap<String, Endpoint> {
    let wanted = port.name.as_deref().unwrap_or_default();
    let mut found: BTreeMap<String, Endpoint> = BTreeMap::new();
    for slice in slices {
        let what = format!(
            "EndpointSlice {namespace}/{}",
            slice.metadata.name.as_deref().unwrap_or_default()
        );
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            skipped.push(format!(
                "{what}: addressType {} (herd balances over IP addresses); skipped",
                slice.address_type
            ));
            continue;
        }
        let Some(number) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| {
                p.name.as_deref().unwrap_or_default() == wanted
                    && p.protocol.as_deref().unwrap_or("TCP") == "TCP"
            })
            .and_then(|p| p.port)
        else {
            continue;
        };
        let Ok(number) = u16::try_from(number) else {
            skipped.push(format!("{what}: port {number} is out of range; skipped"));
            continue;
        };
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(first) = endpoint.addresses.first() else {
                continue;
            };
            let Ok(ip) = first.parse::<IpAddr>() else {
                skipped.push(format!(
                    "{what}: address `{first}` is not an IP address; skipped"
                ));
                continue;
            };
            let conditions = endpoint.conditions.clone().unwrap_or_default();
            let pod = endpoint
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))
                .and_then(|r| {
                    let name = r.name.as_deref()?;
                    Some(format!(
                        "{}/{name}",
                        r.namespace.as_deref().unwrap_or(namespace)
                    ))
                })
                .unwrap_or_default();
            let address = SocketAddr::new(ip, number).to_string();
            let candidate = Endpoint {
                address: address.clone(),
                weight: 1,
                ready: conditions.ready.unwrap_or(true),
                terminating: conditions.terminating.unwrap_or(false),
                zone: endpoint.zone.clone().unwrap_or_default(),
                meshed: false,
                identity: String::new(),
                pod,
            };
            let usable = |e: &Endpoint| e.ready && !e.terminating;
            match found.get(&address) {
                Some(held) if usable(held) || !usable(&candidate) => {}
                _ => {
                    found.insert(address, candidate);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests;
