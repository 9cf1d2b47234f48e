//! Control: routing and endpoints from herd-control instead of the proxy's own file.
//!
//! With `proxy.control` in its file, the proxy keeps its own listeners (the `proxy:` section) and
//! takes its services from the control plane, over two gRPC streams on one connection (the API
//! is `api/proto/herd/discovery/v1/discovery.proto`):
//!
//! - **routing**: every update is the whole set of services. It is validated with the code that
//!   validates a mesh file, against this proxy's own listeners; a valid one becomes the next
//!   snapshot (a reload, as a file change would be) and is acknowledged, an invalid one is
//!   refused with the reason (a NACK) and the last good snapshot stays.
//! - **endpoints**: one stream carrying a subscription per service in use. A service's
//!   [`Subscription`] is taken when a request is first routed to it ([`Subscription::touch`],
//!   from the route stage) and dropped after `unwatchAfter` without one; the endpoints it held
//!   stay with the balancer, and the next use resumes from their version, so nothing unchanged
//!   is sent again.
//!
//! Losing the control plane changes nothing that is serving: the last snapshot and endpoints
//! stay in force indefinitely. The proxy reconnects to any replica (addresses in random order,
//! or a DNS name resolved afresh) with full-jitter exponential backoff, and says which versions
//! it holds so that only what changed is sent. `/ready` waits for the first routing state when
//! `waitForState` is set, and never turns unready afterwards because of the control plane.
//!
//! A proxy with `proxy.identity` also tells the control plane which certificate it presents
//! (SPIFFE ID, serial, notAfter) on the routing stream: once connected and after every renewal,
//! so `herdctl identity` shows what peers see in a handshake, not what was last issued.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_api::discovery::discovery_client::DiscoveryClient;
use herd_api::discovery::{
    Certificate, Endpoint, EndpointsRequest, EndpointsUpdate, EndpointsVerdict, Hello, Node,
    RoutingRequest, RoutingSubscribe, RoutingUpdate, Unwatch, Verdict, Watch, endpoints_request,
    routing_request,
};
use herd_config::{Config, ControlSettings, ControlTarget, WeightedEndpoint};
use prometheus::{Gauge, IntCounterVec, IntGauge, Opts};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tracing::{debug, info, warn};

pub mod channel;
pub mod subscription;

use self::subscription::Command;
pub use self::subscription::{Answer, Endpoints, EndpointsCommands, Subscription, endpoints};
use crate::balance::load::now_nanos;
use crate::identity::{Credentials, Identity};
use crate::metrics::Metrics;
use crate::snapshot::{Registry, Snapshot};

/// First wait before reconnecting; doubles per failure up to [`BACKOFF_MAX`], full jitter.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A connection that lived this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The proxy's metrics of its control-plane connection.
#[derive(Clone)]
struct ControlMetrics {
    connected: IntGauge,
    updates: IntCounterVec,
    state_time: Gauge,
}

impl ControlMetrics {
    fn new(metrics: &Metrics) -> Self {
        let connected = IntGauge::new(
            "herd_control_connected",
            "1 while the proxy holds a connection to the control plane, else 0.",
        )
        .expect("valid metric");
        let updates = IntCounterVec::new(
            Opts::new(
                "herd_control_updates_total",
                "Updates from the control plane, by kind (routing, endpoints) and result (applied, refused).",
            ),
            &["kind", "result"],
        )
        .expect("valid metric");
        let state_time = Gauge::new(
            "herd_control_state_timestamp_seconds",
            "When the routing state in force was received (Unix time); 0 before the first.",
        )
        .expect("valid metric");
        metrics.register(Box::new(connected.clone()));
        metrics.register(Box::new(updates.clone()));
        metrics.register(Box::new(state_time.clone()));
        for kind in ["routing", "endpoints"] {
            for result in ["applied", "refused"] {
                updates.with_label_values(&[kind, result]);
            }
        }
        ControlMetrics {
            connected,
            updates,
            state_time,
        }
    }
}

/// Everything the connection loop needs.
pub struct Control {
    pub settings: ControlSettings,
    /// The proxy's own file, whose `proxy:` section stays in force.
    pub file: PathBuf,
    pub bootstrap: Config,
    pub tx: watch::Sender<Arc<Snapshot>>,
    pub registry: Registry,
    pub endpoints: Arc<Endpoints>,
    pub metrics: Metrics,
    /// Set once the first routing state is applied.
    pub ready: Arc<AtomicBool>,
    /// This proxy's certificate, reported to the control plane as it is renewed.
    pub identity: Option<Identity>,
}

/// Runs the connection to the control plane for the life of the process.
pub fn start(control: Control, commands: EndpointsCommands) {
    let metrics = ControlMetrics::new(&control.metrics);
    let node = Node {
        id: control.settings.id.clone().unwrap_or_else(hostname),
        namespace: control.settings.namespace.clone(),
        proxy_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    info!(id = %node.id, "taking services from the control plane");
    let unwatch_after = control.settings.unwatch_after;
    let endpoints = control.endpoints.clone();
    // Subscriptions unused for `unwatchAfter` are dropped; the stream task does the sending.
    let (sweep_tx, sweep_rx) = mpsc::unbounded_channel::<String>();
    tokio::spawn(sweep(endpoints.clone(), unwatch_after, sweep_tx));
    tokio::spawn(connection_loop(
        control, node, metrics, commands.0, sweep_rx,
    ));
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "herd-proxy".to_owned())
}

async fn sweep(endpoints: Arc<Endpoints>, after: Duration, tx: mpsc::UnboundedSender<String>) {
    let every = (after / 4).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let now = now_nanos();
        for sub in endpoints.active() {
            let idle = now.saturating_sub(sub.last_used.load(Ordering::Relaxed));
            if idle >= after.as_nanos() as u64 && sub.active.swap(false, Ordering::AcqRel) {
                debug!(service = %sub.service, "endpoints unused: unwatching");
                if tx.send(sub.service.clone()).is_err() {
                    return;
                }
            }
        }
    }
}

/// A service's endpoints by address, as the control plane sent them.
type Set = BTreeMap<String, Endpoint>;
/// Those of them that take new requests, in the model's terms.
type Usable = Vec<WeightedEndpoint>;

/// What the proxy holds of each service's endpoints, across reconnects.
#[derive(Default)]
struct Held {
    /// Version and endpoints by address.
    sets: HashMap<String, (String, Set)>,
}

struct State {
    control: Control,
    node: Node,
    metrics: ControlMetrics,
    routing_version: String,
    held: Held,
    commands: mpsc::UnboundedReceiver<Command>,
    unwatches: mpsc::UnboundedReceiver<String>,
    /// The certificates in use, one after another; `None` without `proxy.identity`.
    certificates: Option<watch::Receiver<Option<Arc<Credentials>>>>,
}

async fn connection_loop(
    control: Control,
    node: Node,
    metrics: ControlMetrics,
    commands: mpsc::UnboundedReceiver<Command>,
    unwatches: mpsc::UnboundedReceiver<String>,
) {
    let certificates = control.identity.as_ref().map(Identity::renewals);
    let mut state = State {
        control,
        node,
        metrics,
        routing_version: String::new(),
        held: Held::default(),
        commands,
        unwatches,
        certificates,
    };
    let mut failures = 0u32;
    loop {
        let targets = match resolve(&state.control.settings.target).await {
            Ok(targets) => targets,
            Err(error) => {
                warn!(%error, "cannot resolve the control plane");
                Vec::new()
            }
        };
        for addr in targets {
            let started = std::time::Instant::now();
            match state.session(addr).await {
                Ok(()) => debug!(%addr, "control plane closed the connection"),
                Err(error) => warn!(%addr, %error, "control plane connection lost"),
            }
            state.metrics.connected.set(0);
            if started.elapsed() >= STABLE {
                failures = 0;
            }
        }
        failures = failures.saturating_add(1);
        let wait = backoff(failures, fastrand::f64());
        debug!(?wait, "reconnecting to the control plane");
        tokio::time::sleep(wait).await;
    }
}

/// With `proxy.identity`, the control plane is reached over mutual TLS only: this proxy
/// presents its certificate and accepts only `controlIdentity`. Before the first certificate
/// (and after the last expired) there is nothing to present: wait for one rather than fall back
/// to plaintext, since the routing and endpoints decide where this proxy sends traffic.
async fn mutual_tls(identity: &Identity) -> Result<Arc<rustls::ClientConfig>, SessionError> {
    let mut renewals = identity.renewals();
    let credentials = loop {
        if let Some(credentials) = identity.current() {
            break credentials;
        }
        info!(
            reason = identity.missing_reason(),
            "waiting for a certificate before connecting to the control plane"
        );
        if renewals.changed().await.is_err() {
            // The identity task is gone: this process is shutting down.
            std::future::pending::<()>().await;
        }
    };
    Ok(credentials.client_for(identity.control_identity(), crate::identity::Alpn::H2)?)
}

/// The replicas to try, in random order.
pub(crate) async fn resolve(target: &ControlTarget) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = match target {
        ControlTarget::Addresses(addrs) => addrs.clone(),
        ControlTarget::Dns { name, port } => tokio::net::lookup_host((name.as_str(), *port))
            .await?
            .collect(),
    };
    fastrand::shuffle(&mut addrs);
    Ok(addrs)
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("connect: {}", crate::errors::Chain(.0))]
    Connect(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] herd_identity::TlsConfigError),
    #[error("{0}")]
    Status(#[from] tonic::Status),
    #[error("stream ended")]
    Ended,
}

impl State {
    /// One connection to one replica: both streams until either ends.
    async fn session(&mut self, addr: SocketAddr) -> Result<(), SessionError> {
        let tls = match &self.control.identity {
            Some(identity) => Some(mutual_tls(identity).await?),
            None => None,
        };
        let channel = channel::connect(addr, tls, CONNECT_TIMEOUT, true).await?;
        let mut client = DiscoveryClient::new(channel);

        let (routing_tx, routing_rx) = mpsc::unbounded_channel();
        let _ = routing_tx.send(RoutingRequest {
            request: Some(routing_request::Request::Subscribe(RoutingSubscribe {
                node: Some(self.node.clone()),
                have_version: self.routing_version.clone(),
            })),
        });
        // A new connection is a new record on the server: say which certificate is in use.
        if let Some(certificate) = self
            .certificates
            .as_mut()
            .and_then(|rx| rx.borrow_and_update().as_deref().map(certificate_of))
        {
            let _ = routing_tx.send(certificate_request(certificate));
        }
        let mut routing = client
            .routing(UnboundedReceiverStream::new(routing_rx))
            .await?
            .into_inner();

        let (endpoints_tx, endpoints_rx) = mpsc::unbounded_channel();
        let _ = endpoints_tx.send(EndpointsRequest {
            request: Some(endpoints_request::Request::Hello(Hello {
                node: Some(self.node.clone()),
            })),
        });
        // Resume every subscription in use, from the version held.
        for sub in self.control.endpoints.active() {
            let have = self
                .held
                .sets
                .get(&sub.service)
                .map(|(v, _)| v.clone())
                .unwrap_or_default();
            let _ = endpoints_tx.send(watch_request(&sub.service, have));
        }
        let mut endpoints = client
            .endpoints(UnboundedReceiverStream::new(endpoints_rx))
            .await?
            .into_inner();
        self.metrics.connected.set(1);
        info!(%addr, "connected to the control plane");

        loop {
            tokio::select! {
                update = routing.message() => {
                    let update = update?.ok_or(SessionError::Ended)?;
                    let verdict = self.apply_routing(update);
                    let _ = routing_tx.send(RoutingRequest {
                        request: Some(routing_request::Request::Verdict(verdict)),
                    });
                }
                update = endpoints.message() => {
                    let update = update?.ok_or(SessionError::Ended)?;
                    let service = update.service.clone();
                    let verdict = self.apply_endpoints(update);
                    let _ = endpoints_tx.send(EndpointsRequest {
                        request: Some(endpoints_request::Request::Verdict(EndpointsVerdict {
                            service,
                            verdict: Some(verdict),
                        })),
                    });
                }
                Some(Command::Watch(service)) = self.commands.recv() => {
                    let have = self.held.sets.get(&service).map(|(v, _)| v.clone()).unwrap_or_default();
                    let _ = endpoints_tx.send(watch_request(&service, have));
                }
                Some(service) = self.unwatches.recv() => {
                    let _ = endpoints_tx.send(EndpointsRequest {
                        request: Some(endpoints_request::Request::Unwatch(Unwatch { service })),
                    });
                }
                certificate = renewed(self.certificates.as_mut()) => {
                    let _ = routing_tx.send(certificate_request(certificate));
                }
            }
        }
    }

    fn apply_routing(&mut self, update: RoutingUpdate) -> Verdict {
        let bootstrap = &self.control.bootstrap;
        match herd_config::parse_mesh(&update.mesh, "control", Some(&bootstrap.proxy)) {
            Ok(mesh) => {
                // The mesh's policies, and any in the proxy's own file beside them.
                let mut policies = mesh.policies;
                policies.extend(bootstrap.policies.iter().cloned());
                let config = Config {
                    proxy: bootstrap.proxy.clone(),
                    services: mesh.services,
                    policies,
                };
                let current = self.control.tx.borrow().clone();
                let version = current.version + 1;
                let snapshot = Snapshot::build(
                    version,
                    self.control.file.clone(),
                    config,
                    &mut self.control.registry,
                );
                self.control.tx.send_replace(Arc::new(snapshot));
                self.control.metrics.config_version.set(version as i64);
                self.metrics
                    .updates
                    .with_label_values(&["routing", "applied"])
                    .inc();
                self.metrics.state_time.set(
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64()),
                );
                info!(version, control = %update.version, "routing from the control plane applied");
                self.routing_version = update.version.clone();
                self.control.ready.store(true, Ordering::Release);
                Verdict {
                    version: update.version,
                    error: String::new(),
                }
            }
            Err(error) => {
                self.metrics
                    .updates
                    .with_label_values(&["routing", "refused"])
                    .inc();
                let current = self.control.tx.borrow().version;
                warn!(control = %update.version, "routing refused: {error}; keeping configuration version {current}");
                Verdict {
                    version: update.version,
                    error: error.to_string(),
                }
            }
        }
    }

    fn apply_endpoints(&mut self, update: EndpointsUpdate) -> Verdict {
        let result = self.merge_endpoints(&update);
        let result_label = if result.is_ok() { "applied" } else { "refused" };
        self.metrics
            .updates
            .with_label_values(&["endpoints", result_label])
            .inc();
        match result {
            Ok(()) => Verdict {
                version: update.version,
                error: String::new(),
            },
            Err(error) => {
                warn!(service = %update.service, %error, "endpoints refused");
                Verdict {
                    version: update.version,
                    error,
                }
            }
        }
    }

    fn merge_endpoints(&mut self, update: &EndpointsUpdate) -> Result<(), String> {
        let (set, usable) = merge(self.held.sets.get(&update.service), update)?;
        if let Some(sub) = self.control.endpoints.get(&update.service) {
            debug!(service = %update.service, endpoints = usable.len(), "endpoints from the control plane");
            sub.tx.send_replace(Some(usable.into()));
        }
        self.held
            .sets
            .insert(update.service.clone(), (update.version.clone(), set));
        Ok(())
    }
}

/// The set after `update`, given what is held of its service, and the endpoints of it that may
/// take new requests. A delta must start from the version held; an address must parse, and an
/// identity must be a workload's SPIFFE ID.
fn merge(held: Option<&(String, Set)>, update: &EndpointsUpdate) -> Result<(Set, Usable), String> {
    let mut set = if update.base_version.is_empty() {
        BTreeMap::new()
    } else {
        match held {
            Some((version, set)) if *version == update.base_version => set.clone(),
            held => {
                return Err(format!(
                    "a delta from version {} to a proxy holding {}",
                    update.base_version,
                    held.map_or("nothing", |(v, _)| v.as_str())
                ));
            }
        }
    };
    for addr in &update.removed {
        set.remove(addr);
    }
    for ep in &update.endpoints {
        set.insert(ep.address.clone(), ep.clone());
    }
    if update.unknown {
        set.clear();
    }
    let mut usable = Vec::with_capacity(set.len());
    for ep in set.values() {
        let addr: SocketAddr = ep
            .address
            .parse()
            .map_err(|e| format!("endpoint address `{}`: {e}", ep.address))?;
        // Empty is the wire's "outside the mesh": reached in plaintext.
        let identity = if ep.identity.is_empty() {
            None
        } else {
            WeightedEndpoint::check_identity(&ep.identity)
                .map_err(|e| format!("endpoint `{}`: identity: {e}", ep.address))?;
            Some(ep.identity.clone())
        };
        if ep.ready && !ep.terminating {
            usable.push(WeightedEndpoint {
                address: addr,
                weight: ep.weight.clamp(1, 10_000),
                identity,
            });
        }
    }
    Ok((set, usable))
}

/// How long to wait before the next attempt after `failures` in a row: a uniform draw from
/// zero to the exponential cap (full jitter), so a fleet that lost its control plane together
/// does not come back together.
fn backoff(failures: u32, draw: f64) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(1 << failures.min(16))
        .min(BACKOFF_MAX);
    cap.mul_f64(draw.clamp(0.0, 1.0))
}

/// The next certificate put in use; never resolves without an identity (or once its task is
/// gone), so it can sit in a `select!`.
async fn renewed(
    certificates: Option<&mut watch::Receiver<Option<Arc<Credentials>>>>,
) -> Certificate {
    let Some(rx) = certificates else {
        return std::future::pending().await;
    };
    loop {
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Some(certificate) = rx.borrow_and_update().as_deref().map(certificate_of) {
            return certificate;
        }
    }
}

/// What the control plane is told of a certificate.
fn certificate_of(credentials: &Credentials) -> Certificate {
    Certificate {
        identity: credentials.id.to_string(),
        serial: credentials.leaf.serial_hex(),
        not_after: credentials
            .leaf
            .not_after()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
    }
}

fn certificate_request(certificate: Certificate) -> RoutingRequest {
    RoutingRequest {
        request: Some(routing_request::Request::Certificate(certificate)),
    }
}

fn watch_request(service: &str, have_version: String) -> EndpointsRequest {
    EndpointsRequest {
        request: Some(endpoints_request::Request::Watch(Watch {
            service: service.to_owned(),
            have_version,
        })),
    }
}

#[cfg(test)]
mod tests;
