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
//! - **Identity.** An endpoint whose `targetRef` Pod is meshed ([`PodInfo::meshed`]: it asked for
//!   the sidecar with the annotation `herd.io/inject: enabled`, or it has a container or init
//!   container named `herd-proxy`) is `meshed`, with the identity its proxy is certified for:
//!   `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT` of the Pod's service account. A Pod not (or
//!   not yet) seen is not meshed: reaching a meshed pod in plaintext works while its inbound
//!   port is permissive, while expecting TLS of a pod without a proxy never does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use herd_api::discovery::Endpoint;
use herd_config::{
    Authority, BalancerConfig, OutlierDetection, Protocol, RetryBudget, Service, ServiceLimits,
};
use herd_identity::SpiffeId;
use k8s_openapi::api::core::v1::{Pod, Service as KubeService, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::index::Discovered;

/// Ports opaque without an `appProtocol`: SMTP (25, 587), MySQL (3306), PostgreSQL (5432),
/// PgBouncer (6432), Redis (6379), memcached (11211).
pub const OPAQUE_PORTS: [i32; 7] = [25, 587, 3306, 5432, 6432, 6379, 11211];

/// The label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The annotation a Pod asks for the herd sidecar with (value [`INJECT_ENABLED`]).
pub const INJECT_ANNOTATION: &str = "herd.io/inject";
pub const INJECT_ENABLED: &str = "enabled";
/// The name of the sidecar's container (or native-sidecar init container) in a meshed Pod.
pub const PROXY_CONTAINER: &str = "herd-proxy";

/// Whether `pod` carries herd's proxy, as a native sidecar or a container.
pub fn has_proxy(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| c.name == PROXY_CONTAINER)
    })
}

/// (namespace, name) of a Pod.
pub type PodKey = (String, String);

/// What the source keeps of a Pod: all an endpoint's identity needs, nothing more (a Pod object
/// is large, and a cluster has many).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// It runs a herd proxy: annotated `herd.io/inject: enabled`, or with a container or init
    /// container named `herd-proxy` (injected, or written into the manifest by hand).
    pub meshed: bool,
    /// `spec.serviceAccountName` (or the deprecated `serviceAccount`), `default` when unset as
    /// the API server's admission fills it in.
    pub service_account: String,
}

impl PodInfo {
    pub fn of(pod: &Pod) -> Self {
        let annotated = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(INJECT_ANNOTATION))
            .is_some_and(|v| v == INJECT_ENABLED);
        let spec = pod.spec.as_ref();
        let has_proxy = has_proxy(pod);
        let service_account = spec
            .and_then(|s| s.service_account_name.clone().or(s.service_account.clone()))
            .filter(|sa| !sa.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        PodInfo {
            meshed: annotated || has_proxy,
            service_account,
        }
    }
}

/// What a translation reads besides the Service and its slices.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The cluster's DNS domain (`cluster.local`), for authorities.
    pub domain: &'a str,
    /// The SPIFFE trust domain meshed pods' identities are in (herd-control's `--trust-domain`).
    pub trust_domain: &'a str,
    /// The Pods of the watched namespaces.
    pub pods: &'a BTreeMap<PodKey, PodInfo>,
}

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

/// Translates `service` with its `slices` (those labelled with its name, in its namespace).
pub fn translate(
    service: &KubeService,
    slices: &[&EndpointSlice],
    context: &Context,
) -> Translated {
    let domain = context.domain;
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
        let endpoints = endpoints(port, namespace, slices, context, &mut out.skipped);
        out.discovered.push(Discovered {
            service: Service {
                name: service_name,
                authorities,
                protocol,
                endpoints: Vec::new(),
                dns: None,
                listen: None,
                cluster_ips: cluster_ips
                    .iter()
                    .map(|ip| SocketAddr::new(*ip, port.port as u16))
                    .collect(),
                balancer: BalancerConfig::default(),
                outlier_detection: OutlierDetection::default(),
                limits: ServiceLimits::default(),
                retry_budget: RetryBudget::default(),
                routes: Vec::new(),
            },
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
    context: &Context,
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
            let pod_key = pod_of(endpoint, namespace);
            let pod = pod_key
                .as_ref()
                .map(|(ns, name)| format!("{ns}/{name}"))
                .unwrap_or_default();
            let identity = pod_key
                .as_ref()
                .and_then(|key| Some((key, context.pods.get(key)?)))
                .filter(|(_, info)| info.meshed)
                .and_then(|((ns, name), info)| {
                    match SpiffeId::kubernetes(context.trust_domain, ns, &info.service_account) {
                        Ok(id) => Some(id.as_str().to_owned()),
                        Err(e) => {
                            skipped.push(format!(
                                "Pod {ns}/{name}: service account `{}` makes no identity ({e}); \
                                 its endpoints are reached as not meshed",
                                info.service_account
                            ));
                            None
                        }
                    }
                });
            let address = SocketAddr::new(ip, number).to_string();
            let candidate = Endpoint {
                address: address.clone(),
                weight: 1,
                ready: conditions.ready.unwrap_or(true),
                terminating: conditions.terminating.unwrap_or(false),
                zone: endpoint.zone.clone().unwrap_or_default(),
                meshed: identity.is_some(),
                identity: identity.unwrap_or_default(),
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

/// The Pod an EndpointSlice endpoint's `targetRef` names, if it names one.
pub fn pod_of(
    endpoint: &k8s_openapi::api::discovery::v1::Endpoint,
    namespace: &str,
) -> Option<PodKey> {
    let target = endpoint.target_ref.as_ref()?;
    if target.kind.as_deref() != Some("Pod") {
        return None;
    }
    let name = target.name.clone()?;
    let ns = target.namespace.as_deref().unwrap_or(namespace).to_owned();
    Some((ns, name))
}

#[cfg(test)]
mod tests;
