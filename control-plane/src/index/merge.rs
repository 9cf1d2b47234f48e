//! The mesh files and the Kubernetes source together: one list of services and their endpoints.
//!
//! The mesh files are the operator's word and the cluster is what exists, so:
//!
//! - a discovered service (`web.mastodon`) that a mesh file names too, without `endpoints` or
//!   `dns`, takes that entry's settings (protocol, routes, balancer, retries, limits, outlier
//!   detection, `listen`) and keeps its own endpoints; its authorities are the file's followed
//!   by the discovered ones. This is how a file gives a discovered service its routes.
//! - a mesh-file service of the same name that lists `endpoints` or `dns` replaces the discovered
//!   one whole: the operator pinned it.
//! - an authority a mesh-file service claims stays with it; a discovered service that would
//!   claim it too goes without. An authority that two discovered services claim (`web`, for
//!   Services named `web` in two watched namespaces) goes to neither: which one a client meant
//!   depends on the client's namespace, and the routing state is the same for every proxy.
//!
//! The proxy refuses a routing state in which two services claim one authority, so this is also
//! what keeps a cluster's contents from ever making the whole state unusable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;

use herd_api::discovery::Endpoint;
use herd_config::{Authority, Service};

/// One service found by a discovery source (Kubernetes): its settings and where it runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Discovered {
    /// Name, authorities, protocol and cluster IPs (`clusterIps`: the Service's cluster IPs
    /// with this port, `10.96.0.10:3000`, how a transparent proxy knows a connection is for it)
    /// as discovered, other settings at their defaults; no `endpoints` or `dns`.
    pub service: Service,
    /// By address.
    pub endpoints: BTreeMap<String, Endpoint>,
}

/// What [`merge`] makes.
#[derive(Debug, Default)]
pub(super) struct Merged {
    /// Mesh-file services in their order (a discovered service a file names in that file's
    /// place), then the other discovered services in name order.
    pub services: Vec<Service>,
    /// Every service's endpoints, by name.
    pub endpoints: HashMap<String, BTreeMap<String, Endpoint>>,
    /// What was decided that an operator may wonder about (an override, an authority not
    /// given), one line each.
    pub notes: Vec<String>,
}

/// Merges the mesh files' services (already checked together: names and authorities unique)
/// with the discovered ones (names unique, sorted by name).
pub(super) fn merge(mesh: &[Service], discovered: &[Discovered]) -> Merged {
    let mut merged = Merged::default();
    let mut notes = Vec::new();
    let by_name: HashMap<&str, &Service> = mesh.iter().map(|s| (s.name.as_str(), s)).collect();
    let mut claimed: HashMap<&Authority, &str> = HashMap::new();
    for service in mesh {
        for authority in &service.authorities {
            claimed.insert(authority, &service.name);
        }
    }

    // Those replaced whole by a mesh file take part in nothing else.
    let mut kept: Vec<&Discovered> = Vec::with_capacity(discovered.len());
    for found in discovered {
        match by_name.get(found.service.name.as_str()) {
            Some(file) if !file.endpoints.is_empty() || file.dns.is_some() => {
                notes.push(format!(
                    "service `{}` is listed in the mesh files with its own {}: that entry replaces the discovered one",
                    file.name,
                    if file.dns.is_some() { "dns" } else { "endpoints" }
                ));
            }
            _ => kept.push(found),
        }
    }
    let mut claims: HashMap<&Authority, Vec<&str>> = HashMap::new();
    for found in &kept {
        for authority in &found.service.authorities {
            claims
                .entry(authority)
                .or_default()
                .push(&found.service.name);
        }
    }
    let mut noted: HashSet<Authority> = HashSet::new();
    let mut usable = |found: &Discovered, authority: &Authority| -> bool {
        let name = found.service.name.as_str();
        if let Some(owner) = claimed.get(authority) {
            if *owner != name && noted.insert(authority.clone()) {
                notes.push(format!(
                    "authority `{authority}` of discovered service `{name}` is claimed by mesh-file service `{owner}`, which keeps it"
                ));
            }
            return false;
        }
        let claimants = &claims[authority];
        if claimants.len() > 1 {
            if noted.insert(authority.clone()) {
                notes.push(format!(
                    "authority `{authority}` is claimed by discovered services `{}`: none gets it",
                    claimants.join("`, `")
                ));
            }
            return false;
        }
        true
    };

    // A cluster address goes to one service: a mesh-file service keeps those it lists, and a
    // discovered service gets only those no other service has (a cluster gives each Service
    // its own; two at once means a state caught mid-change).
    let mut addresses: HashMap<SocketAddr, &str> = mesh
        .iter()
        .flat_map(|s| s.cluster_ips.iter().map(|a| (*a, s.name.as_str())))
        .collect();
    let mut address_notes = Vec::new();
    let mut overrides: HashMap<&str, Service> = HashMap::new();
    let mut others = Vec::new();
    for found in kept {
        let authorities: Vec<Authority> = found
            .service
            .authorities
            .iter()
            .filter(|a| usable(found, a))
            .cloned()
            .collect();
        let name = found.service.name.as_str();
        let mut cluster_ips = Vec::new();
        for &addr in &found.service.cluster_ips {
            match addresses.get(&addr) {
                // The file entry that shapes this service lists it already.
                Some(owner) if *owner == name => {}
                Some(owner) => address_notes.push(format!(
                    "cluster address {addr} of discovered service `{name}` is claimed by service `{owner}`, which keeps it"
                )),
                None => {
                    addresses.insert(addr, name);
                    cluster_ips.push(addr);
                }
            }
        }
        merged
            .endpoints
            .insert(name.to_owned(), found.endpoints.clone());
        match by_name.get(name) {
            Some(file) => {
                let mut service = (*file).clone();
                service.authorities.extend(authorities);
                service.cluster_ips.extend(cluster_ips);
                overrides.insert(name, service);
            }
            None => others.push(Service {
                authorities,
                cluster_ips,
                ..found.service.clone()
            }),
        }
    }
    for service in mesh {
        match overrides.remove(service.name.as_str()) {
            Some(combined) => merged.services.push(combined),
            None => {
                merged
                    .endpoints
                    .insert(service.name.clone(), static_endpoints(service));
                merged.services.push(service.clone());
            }
        }
    }
    merged.services.extend(others);
    notes.extend(address_notes);
    merged.notes = notes;
    merged
}

/// A service's static endpoints from its mesh file: all ready; meshed exactly when the file
/// names the identity the endpoint presents. Empty for a service whose endpoints come from a
/// source that has not found it (yet).
fn static_endpoints(service: &Service) -> BTreeMap<String, Endpoint> {
    service
        .endpoints
        .iter()
        .map(|ep| {
            let address = ep.address.to_string();
            let endpoint = Endpoint {
                address: address.clone(),
                weight: ep.weight,
                ready: true,
                meshed: ep.identity.is_some(),
                identity: ep.identity.clone().unwrap_or_default(),
                ..Endpoint::default()
            };
            (address, endpoint)
        })
        .collect()
}
