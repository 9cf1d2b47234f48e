//! The index: the mesh as the proxies need it, computed once per change and shared.
//!
//! Pure state, no I/O: sources apply what they see ([`Index::apply_mesh`] the mesh files,
//! [`Index::apply_discovered`] the Kubernetes source's services, merged as [`merge`] says);
//! subscribers get `tokio::sync::watch` receivers of the state they follow. Nothing is published
//! until every source the index was made for ([`Sources`]) has given a first state, so a proxy
//! never gets a mesh missing what a slower source would have added. A watch channel holds only the latest
//! value, which is the rule for slow subscribers: one that falls behind skips intermediate
//! versions and never grows a queue here.
//!
//! - **Routing** is every service with its routes and settings, without endpoints: small, and
//!   sent whole. It is encoded once per change ([`Routing::update`]), and its version is a hash of
//!   its content, so every replica that reads the same sources names it the same.
//! - **Endpoints** are per service ([`EndpointSet`]), followed only by the proxies that route to
//!   that service. Each change is encoded twice, once as the full set and once as the delta from
//!   the version before, and the last [`DELTA_LOG`] deltas are kept, so a subscriber a few
//!   versions behind gets the deltas it missed and one further behind, or new, the full set
//!   ([`EndpointSet::catch_up`]). The set's version is a hash of its content as well.
//!
//! A service a proxy asks about that the mesh does not have gets an entry marked `unknown`, so
//! the proxy hears when it appears; such entries go when nobody watches them any more, so
//! subscriptions to made-up names cost nothing lasting.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use herd_api::discovery::{Endpoint, EndpointsUpdate, RoutingUpdate};
use herd_api::encoded::Encoded;
use herd_config::{Policy, Service};
use tokio::sync::watch;
use tracing::info;
use xxhash_rust::xxh3::xxh3_64;

mod merge;

pub use merge::Discovered;

/// How many deltas each service keeps for subscribers that are behind.
pub const DELTA_LOG: usize = 8;

/// The routing state every proxy gets.
#[derive(Debug)]
pub struct Routing {
    /// Empty until the sources have produced a first state.
    pub version: String,
    /// The services as a mesh document (JSON), what [`RoutingUpdate::mesh`] carries.
    pub mesh: String,
    /// The [`RoutingUpdate`], encoded.
    pub update: Encoded,
    /// The services in force, for `herdctl config`.
    pub services: usize,
}

impl Routing {
    fn empty() -> Self {
        Routing {
            version: String::new(),
            mesh: String::new(),
            update: Encoded::new(&RoutingUpdate::default()),
            services: 0,
        }
    }

    fn new(services: &[Service], policies: &[Policy]) -> Self {
        // Endpoints travel on their own streams; `dns:` stays, the proxy resolves it itself.
        // Every proxy is sent this document whole, and each stream's encoder copies it into a
        // buffer that keeps that capacity for as long as the stream lives (tonic's encode
        // buffer). So it is compact and leaves out the settings at their defaults (the proxy's
        // parser fills them in the same): 1,000 services with default settings make 48 KiB
        // instead of 850.
        let defaults = &*SERVICE_DEFAULTS;
        let documents: Vec<serde_json::Value> = services
            .iter()
            .map(|s| {
                let mut document = serde_json::to_value(Service {
                    endpoints: Vec::new(),
                    ..s.clone()
                })
                .expect("a validated service serializes");
                if let serde_json::Value::Object(fields) = &mut document {
                    fields.retain(|key, value| defaults.get(key) != Some(value));
                }
                document
            })
            .collect();
        let mut document = serde_json::json!({ "services": documents });
        if !policies.is_empty() {
            document["policies"] =
                serde_json::to_value(policies).expect("a validated policy serializes");
        }
        let mesh = serde_json::to_string(&document).expect("a validated mesh serializes");
        let version = version_of(mesh.as_bytes());
        let update = Encoded::new(&RoutingUpdate {
            version: version.clone(),
            mesh: mesh.clone(),
        });
        Routing {
            version,
            mesh,
            update,
            services: services.len(),
        }
    }
}

/// The settings of a service written with nothing but its name, as the parser fills them in:
/// a routing document leaves out a setting with this value. Every one of them has a default of
/// its own (no default depends on another field), so leaving one out means the same whatever
/// the service's other fields; `name` and `authorities`, which have none, are never left out.
static SERVICE_DEFAULTS: std::sync::LazyLock<serde_json::Map<String, serde_json::Value>> =
    std::sync::LazyLock::new(|| {
        let bare = herd_config::parse_mesh("services:\n  - name: d\n", "defaults", None)
            .expect("a service with a name alone is valid in a control plane's mesh");
        let serde_json::Value::Object(mut fields) =
            serde_json::to_value(&bare.services[0]).expect("a validated service serializes")
        else {
            unreachable!("a service serializes as a mapping")
        };
        fields.remove("name");
        fields.remove("authorities");
        fields.remove("endpoints");
        fields
    });

/// One service's endpoints, and how to bring a subscriber up to date.
#[derive(Debug)]
pub struct EndpointSet {
    pub service: String,
    pub version: String,
    /// The service is not in the mesh (the set is then empty).
    pub unknown: bool,
    /// By address.
    pub endpoints: BTreeMap<String, Endpoint>,
    /// The whole set as an [`EndpointsUpdate`], encoded.
    pub full: Encoded,
    /// The last changes, oldest first: (base version, the delta to `version` after it).
    deltas: VecDeque<(String, String, Encoded)>,
}

impl EndpointSet {
    fn new(service: &str, unknown: bool, endpoints: BTreeMap<String, Endpoint>) -> Self {
        let version = set_version(unknown, &endpoints);
        let full = Encoded::new(&EndpointsUpdate {
            service: service.to_owned(),
            version: version.clone(),
            base_version: String::new(),
            endpoints: endpoints.values().cloned().collect(),
            removed: Vec::new(),
            unknown,
        });
        EndpointSet {
            service: service.to_owned(),
            version,
            unknown,
            endpoints,
            full,
            deltas: VecDeque::new(),
        }
    }

    /// The set after a change, with the delta from `self` logged.
    fn next(&self, unknown: bool, endpoints: BTreeMap<String, Endpoint>) -> Self {
        let mut next = EndpointSet::new(&self.service, unknown, endpoints);
        let changed = next
            .endpoints
            .iter()
            .filter(|(addr, ep)| self.endpoints.get(*addr) != Some(ep))
            .map(|(_, ep)| ep.clone())
            .collect();
        let removed = self
            .endpoints
            .keys()
            .filter(|addr| !next.endpoints.contains_key(*addr))
            .cloned()
            .collect();
        let delta = Encoded::new(&EndpointsUpdate {
            service: self.service.clone(),
            version: next.version.clone(),
            base_version: self.version.clone(),
            endpoints: changed,
            removed,
            unknown,
        });
        next.deltas = self.deltas.clone();
        next.deltas
            .push_back((self.version.clone(), next.version.clone(), delta));
        while next.deltas.len() > DELTA_LOG {
            next.deltas.pop_front();
        }
        next
    }

    /// What brings a subscriber holding version `have` (empty: nothing) to this one: nothing
    /// when it is current, the deltas since `have` when they are all still logged and smaller
    /// than the full set, the full set otherwise.
    pub fn catch_up(&self, have: &str) -> Vec<Encoded> {
        if have == self.version {
            return Vec::new();
        }
        if !have.is_empty()
            && let Some(start) = self.deltas.iter().rposition(|(base, _, _)| base == have)
        {
            let chain: Vec<Encoded> = self
                .deltas
                .range(start..)
                .map(|(_, _, d)| d.clone())
                .collect();
            let size: usize = chain.iter().map(Encoded::len).sum();
            if size < self.full.len() {
                return chain;
            }
        }
        vec![self.full.clone()]
    }
}

fn version_of(bytes: &[u8]) -> String {
    format!("{:016x}", xxh3_64(bytes))
}

fn set_version(unknown: bool, endpoints: &BTreeMap<String, Endpoint>) -> String {
    use prost::Message;
    let mut bytes = vec![u8::from(unknown)];
    for ep in endpoints.values() {
        ep.encode_length_delimited(&mut bytes)
            .expect("a Vec grows as needed");
    }
    version_of(&bytes)
}

/// The sources an index merges. One that is off counts as having given an empty state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sources {
    pub mesh: bool,
    pub kubernetes: bool,
}

/// The whole index.
pub struct Index {
    routing: watch::Sender<Arc<Routing>>,
    sets: HashMap<String, watch::Sender<Arc<EndpointSet>>>,
    /// Names in the mesh now.
    known: HashMap<String, ()>,
    /// Each source's latest state; `None` until its first.
    mesh: Option<Vec<Service>>,
    discovered: Option<Vec<Discovered>>,
    /// The mesh files' policies, sent to every proxy beside the services.
    policies: Vec<Policy>,
    /// The merge's notes in force, each logged once when it appears.
    notes: Vec<String>,
}

impl Default for Index {
    fn default() -> Self {
        Index::new()
    }
}

impl Index {
    /// An index of the mesh files alone.
    pub fn new() -> Self {
        Index::with_sources(Sources {
            mesh: true,
            kubernetes: false,
        })
    }

    /// An index that publishes once each source in `sources` has given a first state.
    pub fn with_sources(sources: Sources) -> Self {
        Index {
            routing: watch::Sender::new(Arc::new(Routing::empty())),
            sets: HashMap::new(),
            known: HashMap::new(),
            mesh: (!sources.mesh).then(Vec::new),
            discovered: (!sources.kubernetes).then(Vec::new),
            policies: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The routing state; its version is empty until every source has given a first state.
    pub fn routing(&self) -> watch::Receiver<Arc<Routing>> {
        self.routing.subscribe()
    }

    pub fn current_routing(&self) -> Arc<Routing> {
        self.routing.borrow().clone()
    }

    /// Makes `services` the mesh files' part of the mesh.
    pub fn apply_mesh(&mut self, services: &[Service]) {
        self.mesh = Some(services.to_vec());
        self.publish();
    }

    /// Makes `policies` the mesh's authorization policies (each proxy applies those naming it).
    pub fn apply_policies(&mut self, policies: &[Policy]) {
        if self.policies != policies {
            self.policies = policies.to_vec();
            self.publish();
        }
    }

    /// Makes `discovered` the Kubernetes source's part of the mesh (names unique).
    pub fn apply_discovered(&mut self, mut discovered: Vec<Discovered>) {
        discovered.sort_by(|a, b| a.service.name.cmp(&b.service.name));
        self.discovered = Some(discovered);
        self.publish();
    }

    /// Merges the sources' states and publishes only what changed: routing when any service's
    /// settings did, each service's endpoints when they did.
    fn publish(&mut self) {
        let (Some(mesh), Some(discovered)) = (&self.mesh, &self.discovered) else {
            return;
        };
        let merge::Merged {
            services,
            mut endpoints,
            notes,
        } = merge::merge(mesh, discovered);
        for note in &notes {
            if !self.notes.contains(note) {
                info!("{note}");
            }
        }
        self.notes = notes;
        let routing = Routing::new(&services, &self.policies);
        self.routing.send_if_modified(|current| {
            if current.version == routing.version {
                return false;
            }
            *current = Arc::new(routing);
            true
        });
        self.known = services.iter().map(|s| (s.name.clone(), ())).collect();
        for service in &services {
            let set = endpoints.remove(&service.name).unwrap_or_default();
            self.set_endpoints(&service.name, false, set);
        }
        let gone: Vec<String> = self
            .sets
            .keys()
            .filter(|name| !self.known.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.set_endpoints(&name, true, BTreeMap::new());
        }
        self.collect_garbage();
    }

    fn set_endpoints(
        &mut self,
        service: &str,
        unknown: bool,
        endpoints: BTreeMap<String, Endpoint>,
    ) {
        match self.sets.get(service) {
            Some(tx) => {
                tx.send_if_modified(|current| {
                    if current.unknown == unknown && current.endpoints == endpoints {
                        return false;
                    }
                    *current = Arc::new(current.next(unknown, endpoints));
                    true
                });
            }
            None => {
                let set = EndpointSet::new(service, unknown, endpoints);
                self.sets
                    .insert(service.to_owned(), watch::Sender::new(Arc::new(set)));
            }
        }
    }

    /// Follows `service`'s endpoints; an unknown service is followed too, as `unknown`.
    pub fn watch_endpoints(&mut self, service: &str) -> watch::Receiver<Arc<EndpointSet>> {
        if let Some(tx) = self.sets.get(service) {
            return tx.subscribe();
        }
        // Made-up names accumulate only while watched.
        if self.sets.len() > 2 * self.known.len() + 1024 {
            self.collect_garbage();
        }
        let set = EndpointSet::new(service, true, BTreeMap::new());
        let tx = watch::Sender::new(Arc::new(set));
        let rx = tx.subscribe();
        self.sets.insert(service.to_owned(), tx);
        rx
    }

    /// Drops unknown services nobody watches.
    fn collect_garbage(&mut self) {
        let known = &self.known;
        self.sets
            .retain(|name, tx| known.contains_key(name) || tx.receiver_count() > 0);
    }

    /// How many services' endpoints are held (known, or watched while unknown).
    pub fn sets(&self) -> usize {
        self.sets.len()
    }
}

#[cfg(test)]
mod tests;
