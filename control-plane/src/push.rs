//! Push: the gRPC streams that carry the index to the proxies, and the Admin service herdctl
//! asks about them.
//!
//! One task per stream. It holds a `watch` receiver of what its proxy follows (routing, or each
//! service it watches) and the version it last sent of each; when a receiver says something
//! changed, the task sends what brings the proxy from the version sent to the latest
//! ([`crate::index::EndpointSet::catch_up`]), bytes encoded once in the index and shared by
//! every stream. The task's outgoing channel holds one message: a proxy that does not read
//! holds one message and its HTTP/2 window here, never a queue, and the watch channels let it
//! skip to the latest state when it reads again. No lock is held while sending.
//!
//! Hostile or broken clients: a stream must say who it is within [`HELLO_TIMEOUT`] or is cut;
//! a proxy may watch at most [`MAX_WATCHES`] services on one stream; HTTP/2 allows
//! [`MAX_STREAMS_PER_CONNECTION`] streams per connection (a proxy uses two); a malformed
//! message ends its stream with `INVALID_ARGUMENT`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_api::discovery::admin_server::Admin;
use herd_api::discovery::{
    Certificate, EndpointsRequest, HealthRequest, HealthResponse, Node, ProxiesRequest,
    ProxiesResponse, ProxyConfigRequest, ProxyConfigResponse, ProxyStatus, RoutingRequest,
    SourceHealth, endpoints_request, routing_request,
};
use herd_api::encoded::Encoded;
use herd_api::fanout::{Discovery, Updates};
use herd_identity::SpiffeId;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use crate::accept::Peer;
use crate::index::{EndpointSet, Index, Routing};
use crate::metrics::Metrics;

/// A stream's first message must arrive within this.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Services one endpoints stream may watch at once.
pub const MAX_WATCHES: usize = 10_000;
/// Concurrent HTTP/2 streams per client connection.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 64;
/// Longest proxy id and service name accepted.
const MAX_NAME: usize = 253;
/// Longest SPIFFE ID and serial a proxy may report of its certificate.
const MAX_CERTIFICATE_IDENTITY: usize = 2048;
const MAX_CERTIFICATE_SERIAL: usize = 64;

/// What the sources report about themselves, for `/ready` and `herdctl check`.
#[derive(Clone, Debug, Default)]
pub struct SourceStatus {
    pub name: String,
    pub synced: bool,
    pub problems: Vec<String>,
}

/// The state the push stage serves from: the index, the proxies connected to this replica, the
/// sources' health.
#[derive(Clone)]
pub struct Push {
    pub index: Arc<Mutex<Index>>,
    pub proxies: Arc<Proxies>,
    pub sources: Arc<Mutex<Vec<SourceStatus>>>,
    pub metrics: Metrics,
}

impl Push {
    pub fn new(index: Arc<Mutex<Index>>, metrics: Metrics) -> Self {
        Push {
            index,
            proxies: Arc::default(),
            sources: Arc::default(),
            metrics,
        }
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().expect("index lock poisoned")
    }
}

/// What this replica knows of each proxy, by id.
#[derive(Default)]
pub struct Proxies {
    by_id: Mutex<HashMap<String, ProxyRecord>>,
}

struct ProxyRecord {
    node: Node,
    address: String,
    connected: Instant,
    /// Routing streams open for this id (a proxy reconnecting may briefly have two).
    streams: usize,
    routing_sent: Option<Arc<Routing>>,
    routing_acked: String,
    nacks: u64,
    last_nack: String,
    stuck: bool,
    watching: BTreeSet<String>,
    /// The certificate it last said it presents.
    certificate: Option<Certificate>,
    /// What its routing stream's connection authenticated with mutual TLS.
    tls_identity: Option<Arc<SpiffeId>>,
}

impl Proxies {
    fn with<R>(&self, id: &str, f: impl FnOnce(&mut ProxyRecord) -> R) -> Option<R> {
        self.by_id.lock().expect("proxies lock").get_mut(id).map(f)
    }

    fn connect(&self, node: &Node, peer: &Peer) {
        let address = peer
            .addr
            .map_or_else(|| "unknown".to_owned(), |a| a.to_string());
        let mut by_id = self.by_id.lock().expect("proxies lock");
        let record = by_id.entry(node.id.clone()).or_insert_with(|| ProxyRecord {
            node: node.clone(),
            address: address.clone(),
            connected: Instant::now(),
            streams: 0,
            routing_sent: None,
            routing_acked: String::new(),
            nacks: 0,
            last_nack: String::new(),
            stuck: false,
            watching: BTreeSet::new(),
            certificate: None,
            tls_identity: None,
        });
        if record.streams == 0 {
            record.connected = Instant::now();
        }
        record.node = node.clone();
        record.address = address;
        record.tls_identity = peer.identity.clone();
        record.streams += 1;
    }

    fn disconnect(&self, id: &str) {
        let mut by_id = self.by_id.lock().expect("proxies lock");
        if let Some(record) = by_id.get_mut(id) {
            record.streams -= 1;
            if record.streams == 0 {
                by_id.remove(id);
            }
        }
    }

    /// Proxies whose latest routing verdict was a refusal.
    pub fn stuck(&self) -> Vec<(String, String)> {
        self.by_id
            .lock()
            .expect("proxies lock")
            .values()
            .filter(|r| r.stuck)
            .map(|r| (r.node.id.clone(), r.last_nack.clone()))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().expect("proxies lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes a routing stream's proxy from [`Proxies`] when the stream ends, however it ends.
struct Connected {
    proxies: Arc<Proxies>,
    id: String,
    metrics: Metrics,
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.proxies.disconnect(&self.id);
        self.metrics.proxies.dec();
    }
}

fn check_node(node: Option<Node>) -> Result<Node, Status> {
    let node = node.ok_or_else(|| Status::invalid_argument("the first message names no node"))?;
    if node.id.is_empty() || node.id.len() > MAX_NAME {
        return Err(Status::invalid_argument(format!(
            "node.id must be 1 to {MAX_NAME} bytes"
        )));
    }
    Ok(node)
}

/// A certificate report is kept per proxy: bound what it may hold. Over mutual TLS, the report
/// must name the identity the connection proved: a proxy cannot claim to be another workload.
fn check_certificate(certificate: &Certificate, peer: &Peer) -> Result<(), Status> {
    if let Some(proved) = &peer.identity
        && certificate.identity != proved.as_str()
    {
        return Err(Status::permission_denied(format!(
            "certificate.identity `{}` is not the identity this connection proved, `{proved}`",
            certificate.identity
        )));
    }
    if certificate.identity.len() > MAX_CERTIFICATE_IDENTITY {
        return Err(Status::invalid_argument(format!(
            "certificate.identity must be at most {MAX_CERTIFICATE_IDENTITY} bytes"
        )));
    }
    if certificate.serial.len() > MAX_CERTIFICATE_SERIAL {
        return Err(Status::invalid_argument(format!(
            "certificate.serial must be at most {MAX_CERTIFICATE_SERIAL} characters"
        )));
    }
    Ok(())
}

/// The first message of a stream, within [`HELLO_TIMEOUT`].
async fn first<T>(inbound: &mut Streaming<T>) -> Result<T, Status> {
    match tokio::time::timeout(HELLO_TIMEOUT, inbound.message()).await {
        Ok(Ok(Some(message))) => Ok(message),
        Ok(Ok(None)) => Err(Status::cancelled("stream closed before its first message")),
        Ok(Err(status)) => Err(status),
        Err(_) => Err(Status::deadline_exceeded(format!(
            "no first message within {HELLO_TIMEOUT:?}"
        ))),
    }
}

/// What the request's connection proved (see [`crate::accept`]); nothing for a request that
/// came another way (tests calling the service directly).
fn peer<T>(request: &Request<T>) -> Peer {
    request
        .extensions()
        .get::<Peer>()
        .cloned()
        .unwrap_or_default()
}

#[tonic::async_trait]
impl Discovery for Push {
    async fn routing(
        &self,
        request: Request<Streaming<RoutingRequest>>,
    ) -> Result<Response<Updates>, Status> {
        let peer = peer(&request);
        let mut inbound = request.into_inner();
        let Some(routing_request::Request::Subscribe(subscribe)) =
            first(&mut inbound).await?.request
        else {
            return Err(Status::invalid_argument(
                "the first message must be `subscribe`",
            ));
        };
        let node = check_node(subscribe.node)?;
        let address = peer.addr.map(|a| a.to_string()).unwrap_or_default();
        let tls = peer
            .identity
            .as_deref()
            .map(ToString::to_string)
            .unwrap_or_default();
        info!(proxy = %node.id, namespace = %node.namespace, %address, security = peer.security(), identity = %tls, "proxy connected");
        self.proxies.connect(&node, &peer);
        self.metrics.proxies.inc();
        let connected = Connected {
            proxies: self.proxies.clone(),
            id: node.id.clone(),
            metrics: self.metrics.clone(),
        };
        let routing = self.index().routing();
        let (tx, rx) = mpsc::channel(1);
        let push = self.clone();
        tokio::spawn(async move {
            let _connected = connected;
            let result = push
                .serve_routing(
                    &node.id,
                    &peer,
                    subscribe.have_version,
                    routing,
                    inbound,
                    &tx,
                )
                .await;
            if let Err(status) = result {
                debug!(proxy = %node.id, %status, "routing stream ended");
                let _ = tx.send(Err(status)).await;
            }
            info!(proxy = %node.id, "proxy disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn endpoints(
        &self,
        request: Request<Streaming<EndpointsRequest>>,
    ) -> Result<Response<Updates>, Status> {
        let mut inbound = request.into_inner();
        let Some(endpoints_request::Request::Hello(hello)) = first(&mut inbound).await?.request
        else {
            return Err(Status::invalid_argument(
                "the first message must be `hello`",
            ));
        };
        let node = check_node(hello.node)?;
        let (tx, rx) = mpsc::channel(1);
        let push = self.clone();
        tokio::spawn(async move {
            let mut watches = Watches {
                push: &push,
                id: &node.id,
                streams: tokio_stream::StreamMap::new(),
                sent: HashMap::new(),
            };
            let result = watches.serve(inbound, &tx).await;
            watches.clear();
            if let Err(status) = result {
                debug!(proxy = %node.id, %status, "endpoints stream ended");
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

impl Push {
    async fn serve_routing(
        &self,
        id: &str,
        peer: &Peer,
        mut sent: String,
        mut routing: watch::Receiver<Arc<Routing>>,
        mut inbound: Streaming<RoutingRequest>,
        tx: &mpsc::Sender<Result<Encoded, Status>>,
    ) -> Result<(), Status> {
        loop {
            let current = routing.borrow_and_update().clone();
            if !current.version.is_empty() && current.version != sent {
                if tx.send(Ok(current.update.clone())).await.is_err() {
                    return Ok(());
                }
                self.metrics
                    .updates_sent
                    .with_label_values(&["routing"])
                    .inc();
                sent = current.version.clone();
                self.proxies.with(id, |r| r.routing_sent = Some(current));
            }
            tokio::select! {
                changed = routing.changed() => if changed.is_err() { return Ok(()) },
                message = inbound.message() => match message? {
                    None => return Ok(()),
                    Some(RoutingRequest { request: Some(routing_request::Request::Verdict(v)) }) => {
                        let ack = v.error.is_empty();
                        self.metrics.verdict("routing", ack);
                        if !ack {
                            warn!(proxy = %id, version = %v.version, error = %v.error, "proxy refused routing");
                        }
                        self.proxies.with(id, |r| {
                            if ack {
                                r.routing_acked = v.version;
                                r.last_nack.clear();
                            } else {
                                r.nacks += 1;
                                r.last_nack = v.error;
                            }
                            r.stuck = !ack;
                        });
                    }
                    Some(RoutingRequest { request: Some(routing_request::Request::Certificate(c)) }) => {
                        check_certificate(&c, peer)?;
                        debug!(proxy = %id, identity = %c.identity, serial = %c.serial, not_after = c.not_after, "proxy certificate");
                        self.proxies.with(id, |r| r.certificate = Some(c));
                    }
                    Some(_) => return Err(Status::invalid_argument("only verdicts and certificates may follow `subscribe`")),
                },
                () = tx.closed() => return Ok(()),
            }
        }
    }
}

/// One endpoints stream's subscriptions.
struct Watches<'a> {
    push: &'a Push,
    id: &'a str,
    streams: tokio_stream::StreamMap<String, WatchStream<Arc<EndpointSet>>>,
    /// The version last sent of each watched service (empty: none).
    sent: HashMap<String, String>,
}

impl Watches<'_> {
    async fn serve(
        &mut self,
        mut inbound: Streaming<EndpointsRequest>,
        tx: &mpsc::Sender<Result<Encoded, Status>>,
    ) -> Result<(), Status> {
        use endpoints_request::Request as R;
        loop {
            tokio::select! {
                message = inbound.message() => match message?.map(|m| m.request) {
                    None => return Ok(()),
                    Some(Some(R::Watch(watch))) => self.watch(watch.service, watch.have_version)?,
                    Some(Some(R::Unwatch(unwatch))) => self.unwatch(&unwatch.service),
                    Some(Some(R::Verdict(v))) => self.verdict(v.service, v.verdict.unwrap_or_default()),
                    Some(_) => return Err(Status::invalid_argument("`hello` comes once, first")),
                },
                Some((service, set)) = self.streams.next() => {
                    let have = self.sent.get(&service).map_or("", String::as_str);
                    for update in set.catch_up(have) {
                        if tx.send(Ok(update)).await.is_err() {
                            return Ok(());
                        }
                        self.push.metrics.updates_sent.with_label_values(&["endpoints"]).inc();
                    }
                    self.sent.insert(service, set.version.clone());
                },
                () = tx.closed() => return Ok(()),
            }
        }
    }

    fn watch(&mut self, service: String, have: String) -> Result<(), Status> {
        if service.is_empty() || service.len() > MAX_NAME {
            return Err(Status::invalid_argument(format!(
                "service names are 1 to {MAX_NAME} bytes"
            )));
        }
        if !self.streams.contains_key(&service) && self.streams.len() >= MAX_WATCHES {
            return Err(Status::resource_exhausted(format!(
                "at most {MAX_WATCHES} services may be watched on one stream"
            )));
        }
        let rx = self.push.index().watch_endpoints(&service);
        if self
            .streams
            .insert(service.clone(), WatchStream::new(rx))
            .is_none()
        {
            self.push.metrics.endpoint_watches.inc();
        }
        self.push
            .proxies
            .with(self.id, |r| r.watching.insert(service.clone()));
        self.sent.insert(service, have);
        Ok(())
    }

    fn unwatch(&mut self, service: &str) {
        if self.streams.remove(service).is_some() {
            self.push.metrics.endpoint_watches.dec();
        }
        self.sent.remove(service);
        self.push
            .proxies
            .with(self.id, |r| r.watching.remove(service));
    }

    /// A refused delta means the proxy holds something else than its base: start it over from a
    /// full set.
    fn verdict(&mut self, service: String, verdict: herd_api::discovery::Verdict) {
        let ack = verdict.error.is_empty();
        self.push.metrics.verdict("endpoints", ack);
        if ack {
            return;
        }
        warn!(proxy = %self.id, %service, version = %verdict.version, error = %verdict.error, "proxy refused endpoints; sending the full set");
        self.push.proxies.with(self.id, |r| {
            r.nacks += 1;
        });
        if self.streams.contains_key(&service) {
            let rx = self.push.index().watch_endpoints(&service);
            self.streams.insert(service.clone(), WatchStream::new(rx));
            self.sent.insert(service, String::new());
        }
    }

    fn clear(&mut self) {
        let services: Vec<String> = self.streams.keys().cloned().collect();
        for service in services {
            self.unwatch(&service);
        }
    }
}

#[tonic::async_trait]
impl Admin for Push {
    async fn proxies(
        &self,
        _request: Request<ProxiesRequest>,
    ) -> Result<Response<ProxiesResponse>, Status> {
        let by_id = self.proxies.by_id.lock().expect("proxies lock");
        let mut proxies: Vec<ProxyStatus> = by_id
            .values()
            .map(|r| ProxyStatus {
                node: Some(r.node.clone()),
                address: r.address.clone(),
                routing_sent: r
                    .routing_sent
                    .as_ref()
                    .map_or_else(String::new, |s| s.version.clone()),
                routing_acked: r.routing_acked.clone(),
                nacks: r.nacks,
                last_nack: r.last_nack.clone(),
                stuck: r.stuck,
                connected_seconds: r.connected.elapsed().as_secs(),
                watching: r.watching.iter().cloned().collect(),
                certificate: r.certificate.clone(),
                tls_identity: r
                    .tls_identity
                    .as_deref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
            })
            .collect();
        proxies.sort_by(|a, b| {
            let key =
                |p: &ProxyStatus| p.node.as_ref().map(|n| (n.namespace.clone(), n.id.clone()));
            key(a).cmp(&key(b))
        });
        Ok(Response::new(ProxiesResponse { proxies }))
    }

    async fn proxy_config(
        &self,
        request: Request<ProxyConfigRequest>,
    ) -> Result<Response<ProxyConfigResponse>, Status> {
        let id = request.into_inner().id;
        let sent = self
            .proxies
            .with(&id, |r| r.routing_sent.clone())
            .ok_or_else(|| {
                Status::not_found(format!("no proxy `{id}` is connected to this replica"))
            })?
            .ok_or_else(|| Status::not_found(format!("proxy `{id}` has been sent no state yet")))?;
        let mut value: serde_json::Value = serde_json::from_str(&sent.mesh)
            .map_err(|e| Status::internal(format!("routing document: {e}")))?;
        drop_nulls(&mut value);
        let yaml = serde_saphyr::to_string(&value)
            .map_err(|e| Status::internal(format!("routing document as YAML: {e}")))?;
        Ok(Response::new(ProxyConfigResponse {
            version: sent.version.clone(),
            yaml,
        }))
    }

    async fn health(
        &self,
        _request: Request<HealthRequest>,
    ) -> Result<Response<HealthResponse>, Status> {
        let sources = self.sources.lock().expect("sources lock").clone();
        Ok(Response::new(HealthResponse {
            ready: !sources.is_empty() && sources.iter().all(|s| s.synced),
            sources: sources
                .into_iter()
                .map(|s| SourceHealth {
                    name: s.name,
                    synced: s.synced,
                    problems: s.problems,
                })
                .collect(),
            routing_version: self.index().current_routing().version.clone(),
        }))
    }
}

/// Absent settings serialize as `null`; a mesh file leaves them out.
fn drop_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}
