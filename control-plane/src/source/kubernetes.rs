//! The Kubernetes source: Services and EndpointSlices of the watched namespaces become herd
//! services ([`translate`] says how), and their Pods say which endpoints are meshed and with
//! what identity.
//!
//! One kube-rs [`watcher`] per kind and namespace (one per kind for all namespaces) feeds one
//! task that holds the objects ([`Cluster`]) and re-translates only the Services an event
//! touched. Of a Pod only what identity needs is kept ([`PodInfo`]), and a Pod's change touches
//! the Services whose slices name it, and only when that changed: Pods' status updates, by far
//! their most frequent events, cost a comparison. What comes out is a [`Snapshot`] on a `watch` channel: the latest state wins, so a
//! slow index skips to it rather than queueing.
//!
//! Failure is the normal case for a watch, and the mesh must outlive it:
//!
//! - Until every watch has listed its objects once, the snapshot is not `synced`: the index
//!   publishes nothing from a cluster it has only half seen.
//! - A watch that fails (the API server restarting, a network cut, RBAC refusing) is reported
//!   in `problems` and started over, after a backoff, from a fresh list. Meanwhile its objects
//!   stay as they were: a failure never reads as "everything was deleted". The fresh list
//!   replaces them whole once it is complete, so what changed while the watch was down
//!   (deletions included) is caught up, and the problem clears.
//! - An object herd cannot use (an ExternalName Service, a UDP-only one, an address that is not
//!   an IP) is skipped and logged once, while it lasts; the rest of the Service, and every other
//!   Service, stands.

mod translate;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::NamespaceResourceScope;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

pub use translate::{
    Context, INJECT_ANNOTATION, INJECT_ENABLED, OPAQUE_PORTS, PROXY_CONTAINER, PodInfo, PodKey,
    SERVICE_NAME_LABEL, Translated, has_proxy, protocol, translate,
};

use crate::index::Discovered;
use crate::push::Push;

/// First wait before a failed watch starts over; doubles per failure up to [`BACKOFF_MAX`],
/// half of it jittered. A complete list resets it.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// What the source watches.
#[derive(Clone, Debug)]
pub struct Options {
    /// Namespaces to watch; empty: all of them.
    pub namespaces: Vec<String>,
    /// The cluster's DNS domain, for the `NAME.NAMESPACE.svc.DOMAIN` authorities.
    pub cluster_domain: String,
    /// The SPIFFE trust domain of meshed pods' identities (herd-control's `--trust-domain`).
    pub trust_domain: String,
}

/// What the source has found.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every watch has listed its objects at least once: `discovered` is the whole cluster.
    pub synced: bool,
    /// Every usable Service port, in no particular order.
    pub discovered: Arc<Vec<Discovered>>,
    /// The watches failing now, one line each; the last state stays meanwhile.
    pub problems: Vec<String>,
}

/// Applies the snapshots to the index as they come, once synced, and reports the source's
/// status (as `kubernetes`) until the snapshots end.
pub async fn feed(mut snapshots: watch::Receiver<Snapshot>, push: Push, ready: Arc<AtomicBool>) {
    let mut applied: Option<Arc<Vec<Discovered>>> = None;
    loop {
        let snapshot = snapshots.borrow_and_update().clone();
        let fresh = !applied
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(a, &snapshot.discovered));
        if snapshot.synced && fresh {
            let mut index = push.index.lock().expect("index lock");
            index.apply_discovered(snapshot.discovered.to_vec());
            push.metrics
                .services
                .set(index.current_routing().services as i64);
            drop(index);
            push.metrics.mesh_changes.inc();
            applied = Some(snapshot.discovered.clone());
        }
        super::report(&push, &ready, NAME, snapshot.synced, snapshot.problems);
        if snapshots.changed().await.is_err() {
            return;
        }
    }
}

/// The source's name in `herdctl check`, `/ready` and the `herd_control_source_problems` label.
pub const NAME: &str = "kubernetes";

/// Starts the watches; the snapshot changes with the cluster. Everything stops when the
/// receiver (and its clones) are dropped.
pub fn spawn(client: Client, options: Options) -> watch::Receiver<Snapshot> {
    let (snapshots, rx) = watch::channel(Snapshot::default());
    let (events, events_rx) = mpsc::channel(1024);
    let scopes: Vec<Option<String>> = if options.namespaces.is_empty() {
        vec![None]
    } else {
        options.namespaces.iter().cloned().map(Some).collect()
    };
    let mut keys = Vec::new();
    for namespace in scopes {
        let services = WatchKey {
            kind: Kind::Services,
            namespace: namespace.clone(),
        };
        let slices = WatchKey {
            kind: Kind::Slices,
            namespace: namespace.clone(),
        };
        let pods = WatchKey {
            kind: Kind::Pods,
            namespace,
        };
        spawn_watch::<KubeService>(&client, services.clone(), events.clone());
        spawn_watch::<EndpointSlice>(&client, slices.clone(), events.clone());
        spawn_watch::<Pod>(&client, pods.clone(), events.clone());
        keys.extend([services, slices, pods]);
    }
    let cluster = Cluster::new(keys, options.cluster_domain, options.trust_domain);
    tokio::spawn(cluster.run(events_rx, snapshots));
    rx
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Services,
    Slices,
    Pods,
}

/// One watch: a kind in a namespace, or in all of them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct WatchKey {
    kind: Kind,
    namespace: Option<String>,
}

impl WatchKey {
    fn covers(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }
}

impl fmt::Display for WatchKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Services => "Services",
            Kind::Slices => "EndpointSlices",
            Kind::Pods => "Pods",
        };
        match &self.namespace {
            Some(ns) => write!(f, "watch of {kind} in namespace {ns}"),
            None => write!(f, "watch of {kind} in all namespaces"),
        }
    }
}

/// What the watch tasks tell the cluster task (objects boxed: a Service is large; a Pod is
/// cut down to its [`PodInfo`] before it leaves its watch task).
enum Message {
    Services(WatchKey, Box<Event<KubeService>>),
    Slices(WatchKey, Box<Event<EndpointSlice>>),
    Pods(WatchKey, Event<(PodKey, PodInfo)>),
    Failed(WatchKey, String),
}

/// The object types watched, and how their events travel.
trait Watched:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + fmt::Debug
    + Send
{
    fn message(key: WatchKey, event: Event<Self>) -> Message;
}

impl Watched for KubeService {
    fn message(key: WatchKey, event: Event<Self>) -> Message {
        Message::Services(key, Box::new(event))
    }
}

impl Watched for EndpointSlice {
    fn message(key: WatchKey, event: Event<Self>) -> Message {
        Message::Slices(key, Box::new(event))
    }
}

impl Watched for Pod {
    fn message(key: WatchKey, event: Event<Self>) -> Message {
        let keep = |pod: Pod| (object_key(&pod.metadata), PodInfo::of(&pod));
        let event = match event {
            Event::Apply(pod) => Event::Apply(keep(pod)),
            Event::Delete(pod) => Event::Delete(keep(pod)),
            Event::Init => Event::Init,
            Event::InitApply(pod) => Event::InitApply(keep(pod)),
            Event::InitDone => Event::InitDone,
        };
        Message::Pods(key, event)
    }
}

/// Runs one watch until the cluster task is gone: a failure is reported and the watch started
/// over from a fresh list after a backoff.
fn spawn_watch<K: Watched + Sync + 'static>(
    client: &Client,
    key: WatchKey,
    tx: mpsc::Sender<Message>,
) {
    let api: Api<K> = match &key.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    tokio::spawn(async move {
        let mut failures: u32 = 0;
        loop {
            let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
            let failure = loop {
                let item = tokio::select! {
                    item = stream.next() => item,
                    () = tx.closed() => return,
                };
                match item {
                    Some(Ok(event)) => {
                        if matches!(event, Event::InitDone) {
                            failures = 0;
                        }
                        if tx.send(K::message(key.clone(), event)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(error)) => break error_chain(&error),
                    None => break "the watch ended".to_owned(),
                }
            };
            drop(stream);
            if tx
                .send(Message::Failed(key.clone(), failure))
                .await
                .is_err()
            {
                return;
            }
            let wait = backoff(failures);
            failures = failures.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = tx.closed() => return,
            }
        }
    });
}

/// The wait before the next attempt after `failures` failures in a row: exponential, capped,
/// the upper half jittered so that replicas restarted together do not list together.
fn backoff(failures: u32) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(1 << failures.min(16))
        .min(BACKOFF_MAX);
    cap / 2 + cap.mul_f64(fastrand::f64() / 2.0)
}

/// An error with its causes, on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

/// (namespace, name) of a Service.
type ServiceKey = (String, String);

/// The objects the watches have seen, and what they translate to.
struct Cluster {
    keys: Vec<WatchKey>,
    domain: String,
    services: BTreeMap<ServiceKey, KubeService>,
    /// By (namespace, Service name from the label, slice name).
    slices: BTreeMap<(String, String, String), EndpointSlice>,
    /// The Service each slice (namespace, name) is filed under.
    slice_owner: HashMap<(String, String), String>,
    trust_domain: String,
    pods: BTreeMap<PodKey, PodInfo>,
    /// The slices (namespace, name) whose endpoints name each Pod: whom a Pod's change touches.
    pod_refs: HashMap<PodKey, BTreeSet<(String, String)>>,
    /// Objects of a list in progress, by watch.
    listing_services: HashMap<WatchKey, Vec<KubeService>>,
    listing_slices: HashMap<WatchKey, Vec<EndpointSlice>>,
    listing_pods: HashMap<WatchKey, Vec<(PodKey, PodInfo)>>,
    listed: BTreeSet<WatchKey>,
    failing: BTreeMap<WatchKey, String>,
    translated: BTreeMap<ServiceKey, Translated>,
    /// Services touched since the last snapshot.
    dirty: BTreeSet<ServiceKey>,
}

impl Cluster {
    fn new(keys: Vec<WatchKey>, domain: String, trust_domain: String) -> Self {
        Cluster {
            keys,
            domain,
            services: BTreeMap::new(),
            slices: BTreeMap::new(),
            slice_owner: HashMap::new(),
            trust_domain,
            pods: BTreeMap::new(),
            pod_refs: HashMap::new(),
            listing_services: HashMap::new(),
            listing_slices: HashMap::new(),
            listing_pods: HashMap::new(),
            listed: BTreeSet::new(),
            failing: BTreeMap::new(),
            translated: BTreeMap::new(),
            dirty: BTreeSet::new(),
        }
    }

    /// Folds messages into the state; after each burst (whatever is queued), publishes.
    async fn run(mut self, mut rx: mpsc::Receiver<Message>, snapshots: watch::Sender<Snapshot>) {
        while let Some(message) = rx.recv().await {
            let mut status_changed = self.apply(message);
            while let Ok(message) = rx.try_recv() {
                status_changed |= self.apply(message);
            }
            if self.dirty.is_empty() && !status_changed {
                continue;
            }
            self.retranslate();
            let snapshot = Snapshot {
                synced: self.listed.len() == self.keys.len(),
                discovered: Arc::new(
                    self.translated
                        .values()
                        .flat_map(|t| t.discovered.iter().cloned())
                        .collect(),
                ),
                problems: self
                    .failing
                    .iter()
                    .map(|(key, error)| format!("{key}: {error}"))
                    .collect(),
            };
            if snapshots.send(snapshot).is_err() {
                return;
            }
        }
    }

    /// One message; true when the source's status (synced, failing) changed.
    fn apply(&mut self, message: Message) -> bool {
        match message {
            Message::Failed(key, error) => {
                if self.failing.get(&key) != Some(&error) {
                    if self.listed.contains(&key) {
                        warn!("{key}: {error}; keeping what it saw, starting over");
                    } else {
                        warn!("{key}: {error}; retrying");
                    }
                }
                // A list cut short is dropped: the state it would have replaced stays.
                self.listing_services.remove(&key);
                self.listing_slices.remove(&key);
                self.listing_pods.remove(&key);
                let changed = self.failing.get(&key) != Some(&error);
                self.failing.insert(key, error);
                changed
            }
            Message::Services(key, event) => match *event {
                Event::Init => {
                    self.listing_services.insert(key, Vec::new());
                    false
                }
                Event::InitApply(service) => {
                    self.listing_services.entry(key).or_default().push(service);
                    false
                }
                Event::InitDone => {
                    let listed = self.listing_services.remove(&key).unwrap_or_default();
                    let gone: Vec<ServiceKey> = self
                        .services
                        .keys()
                        .filter(|(ns, _)| key.covers(ns))
                        .cloned()
                        .collect();
                    for id in gone {
                        self.services.remove(&id);
                        self.dirty.insert(id);
                    }
                    for service in listed {
                        self.put_service(service);
                    }
                    self.listed_once(key)
                }
                Event::Apply(service) => {
                    self.put_service(service);
                    false
                }
                Event::Delete(service) => {
                    let id = service_key(&service);
                    self.services.remove(&id);
                    self.dirty.insert(id);
                    false
                }
            },
            Message::Slices(key, event) => match *event {
                Event::Init => {
                    self.listing_slices.insert(key, Vec::new());
                    false
                }
                Event::InitApply(slice) => {
                    self.listing_slices.entry(key).or_default().push(slice);
                    false
                }
                Event::InitDone => {
                    let listed = self.listing_slices.remove(&key).unwrap_or_default();
                    let gone: Vec<(String, String)> = self
                        .slice_owner
                        .keys()
                        .filter(|(ns, _)| key.covers(ns))
                        .cloned()
                        .collect();
                    for (ns, name) in gone {
                        self.remove_slice(&ns, &name);
                    }
                    for slice in listed {
                        self.put_slice(slice);
                    }
                    self.listed_once(key)
                }
                Event::Apply(slice) => {
                    self.put_slice(slice);
                    false
                }
                Event::Delete(slice) => {
                    let (ns, name) = object_key(&slice.metadata);
                    self.remove_slice(&ns, &name);
                    false
                }
            },
            Message::Pods(key, event) => match event {
                Event::Init => {
                    self.listing_pods.insert(key, Vec::new());
                    false
                }
                Event::InitApply(pod) => {
                    self.listing_pods.entry(key).or_default().push(pod);
                    false
                }
                Event::InitDone => {
                    let listed: HashMap<PodKey, PodInfo> = self
                        .listing_pods
                        .remove(&key)
                        .unwrap_or_default()
                        .into_iter()
                        .collect();
                    let gone: Vec<PodKey> = self
                        .pods
                        .keys()
                        .filter(|(ns, name)| {
                            key.covers(ns) && !listed.contains_key(&(ns.clone(), name.clone()))
                        })
                        .cloned()
                        .collect();
                    for pod in gone {
                        self.remove_pod(&pod);
                    }
                    for (pod, info) in listed {
                        self.put_pod(pod, info);
                    }
                    self.listed_once(key)
                }
                Event::Apply((pod, info)) => {
                    self.put_pod(pod, info);
                    false
                }
                Event::Delete((pod, _)) => {
                    self.remove_pod(&pod);
                    false
                }
            },
        }
    }

    fn put_pod(&mut self, pod: PodKey, info: PodInfo) {
        if self.pods.get(&pod) != Some(&info) {
            self.touch_pod(&pod);
            self.pods.insert(pod, info);
        }
    }

    fn remove_pod(&mut self, pod: &PodKey) {
        if self.pods.remove(pod).is_some() {
            self.touch_pod(pod);
        }
    }

    /// Marks the Services whose slices name `pod` for translation.
    fn touch_pod(&mut self, pod: &PodKey) {
        for slice in self.pod_refs.get(pod).into_iter().flatten() {
            if let Some(owner) = self.slice_owner.get(slice) {
                self.dirty.insert((slice.0.clone(), owner.clone()));
            }
        }
    }

    /// Records (`add`) or forgets the Pods `slice`'s endpoints name.
    fn refer(&mut self, slice: &EndpointSlice, add: bool) {
        let (ns, name) = object_key(&slice.metadata);
        for endpoint in slice.endpoints.iter().flatten() {
            let Some(pod) = translate::pod_of(endpoint, &ns) else {
                continue;
            };
            if add {
                self.pod_refs
                    .entry(pod)
                    .or_default()
                    .insert((ns.clone(), name.clone()));
            } else if let Some(refs) = self.pod_refs.get_mut(&pod) {
                refs.remove(&(ns.clone(), name.clone()));
                if refs.is_empty() {
                    self.pod_refs.remove(&pod);
                }
            }
        }
    }

    fn listed_once(&mut self, key: WatchKey) -> bool {
        let recovered = self.failing.remove(&key).is_some();
        if recovered {
            info!("{key}: listed again; in force");
        }
        self.listed.insert(key) || recovered
    }

    fn put_service(&mut self, service: KubeService) {
        let id = service_key(&service);
        self.dirty.insert(id.clone());
        self.services.insert(id, service);
    }

    fn put_slice(&mut self, slice: EndpointSlice) {
        let (ns, name) = object_key(&slice.metadata);
        self.remove_slice(&ns, &name);
        // A slice without the label belongs to no Service (someone else's, or mid-edit).
        let Some(owner) = slice
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .cloned()
        else {
            return;
        };
        self.dirty.insert((ns.clone(), owner.clone()));
        self.slice_owner
            .insert((ns.clone(), name.clone()), owner.clone());
        self.refer(&slice, true);
        self.slices.insert((ns, owner, name), slice);
    }

    fn remove_slice(&mut self, ns: &str, name: &str) {
        if let Some(owner) = self.slice_owner.remove(&(ns.to_owned(), name.to_owned())) {
            if let Some(slice) =
                self.slices
                    .remove(&(ns.to_owned(), owner.clone(), name.to_owned()))
            {
                self.refer(&slice, false);
            }
            self.dirty.insert((ns.to_owned(), owner));
        }
    }

    /// Translates the Services touched since the last time; logs what is newly skipped.
    fn retranslate(&mut self) {
        for id in std::mem::take(&mut self.dirty) {
            let Some(service) = self.services.get(&id) else {
                self.translated.remove(&id);
                continue;
            };
            let (ns, name) = &id;
            let slices: Vec<&EndpointSlice> = self
                .slices
                .range((ns.clone(), name.clone(), String::new())..)
                .take_while(|((n, s, _), _)| n == ns && s == name)
                .map(|(_, slice)| slice)
                .collect();
            let context = Context {
                domain: &self.domain,
                trust_domain: &self.trust_domain,
                pods: &self.pods,
            };
            let next = translate(service, &slices, &context);
            let before = self.translated.get(&id);
            for line in &next.skipped {
                if !before.is_some_and(|b| b.skipped.contains(line)) {
                    warn!("{line}");
                }
            }
            self.translated.insert(id, next);
        }
    }
}

fn object_key(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> (String, String) {
    (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn service_key(service: &KubeService) -> ServiceKey {
    object_key(&service.metadata)
}

#[cfg(test)]
mod tests;
