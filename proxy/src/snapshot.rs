//! The routing snapshot: a config compiled into what the request path reads.
//!
//! A snapshot is immutable and shared (`Arc`); the proxy publishes each new one on a
//! `tokio::sync::watch` channel. A connection takes the current snapshot when a request starts
//! and keeps it for that request, so a reload applies to new requests and never disturbs one in
//! flight. What must outlive a snapshot lives in the [`Registry`]: endpoint pools (with each
//! endpoint's load and health), handed to every snapshot that names the same endpoint with the
//! same settings, so a reload keeps warm connections and what the balancer has learnt; DNS
//! resolutions, so a reload does not start a discovered service from nothing; and retry
//! budgets, handed to the next snapshot when the service's `retryBudget` is unchanged, so a
//! reload does not refill a budget a failing service has spent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};

use herd_config::{Config, Protocol, Route, ServiceLimits, WeightedEndpoint};
use herd_identity::SpiffeId;
use tracing::debug;

use crate::authorize::Authorizer;
use crate::balance::{Balancer, Member};
use crate::control::subscription as control;
use crate::discover::{self, Discovery};
use crate::endpoint::{Endpoint, PoolKey, Wire};
use crate::identity::Identity;
use crate::listen::Direction;
use crate::metrics::{Metrics, RouteMetrics, TcpMetrics};
use crate::retry::RetryBudget;
use crate::route::{RouteTable, RouteTarget, ServiceTarget};

pub struct Snapshot {
    /// 1 for the config the proxy started with, +1 per applied reload.
    pub version: u64,
    pub file: PathBuf,
    pub config: Arc<Config>,
    /// Where inbound traffic goes: the app (`proxy.inbound.app`).
    pub inbound: Option<Arc<ServiceTarget>>,
    /// The app at the addresses redirected inbound connections meant (`proxy.inbound.transparent`).
    pub inbound_apps: Option<InboundApps>,
    /// Services by their `clusterIps`: what a redirected outbound connection's original
    /// destination may name.
    pub by_cluster_ip: HashMap<SocketAddr, Arc<ServiceTarget>>,
    /// Outbound HTTP services by authority.
    pub routes: RouteTable,
    /// Opaque services by the address of their own listener.
    pub by_listener: HashMap<SocketAddr, Arc<ServiceTarget>>,
    /// Every service, in file order (the inbound app first), for the admin endpoint.
    pub services: Vec<Arc<ServiceTarget>>,
    /// Where outbound requests for no known service are counted.
    pub unknown_route: Arc<RouteMetrics>,
    /// Where `CONNECT` tunnels to hosts outside the mesh are counted.
    pub egress: Arc<TcpMetrics>,
    /// Who may use the inbound ports under this configuration.
    pub authorizer: Arc<Authorizer>,
    /// `proxy.inbound.clientIdentityHeader`, parsed once.
    pub client_identity_header: Option<http::HeaderName>,
}

/// Endpoint pools by their settings, each with what the balancers learnt of it.
#[derive(Default)]
struct Pools {
    pools: HashMap<PoolKey, Weak<Member>>,
    /// This proxy's certificate, for meshed endpoints.
    identity: Option<Identity>,
}

impl Pools {
    fn get(&mut self, key: PoolKey) -> Arc<Member> {
        if let Some(ep) = self.pools.get(&key).and_then(Weak::upgrade) {
            return ep;
        }
        let ep = Member::new(Endpoint::with_identity(key.clone(), self.identity.clone()));
        self.pools.insert(key, Arc::downgrade(&ep));
        ep
    }
}

/// What snapshots share: endpoint pools, DNS resolutions, retry budgets and metric handles.
pub struct Registry {
    pools: Arc<Mutex<Pools>>,
    discovery: Arc<Discovery>,
    /// By service name; a budget lives as long as a snapshot holds it.
    budgets: HashMap<String, Weak<RetryBudget>>,
    metrics: Metrics,
    /// Subscriptions to endpoints from the control plane, when the services come from one.
    control: Option<Arc<control::Endpoints>>,
}

impl Registry {
    pub fn new(config: &Config, metrics: Metrics) -> Self {
        Registry {
            pools: Arc::default(),
            discovery: Arc::new(Discovery::new(&config.proxy.resolver)),
            budgets: HashMap::new(),
            metrics,
            control: None,
        }
    }

    /// Meshed endpoints are reached with `identity`'s certificate.
    pub fn with_identity(self, identity: Option<Identity>) -> Self {
        self.pools.lock().expect("pools lock poisoned").identity = identity;
        self
    }

    /// Services without `endpoints` or `dns` take theirs from `endpoints`' subscriptions.
    pub fn with_control(mut self, endpoints: Arc<control::Endpoints>) -> Self {
        self.control = Some(endpoints);
        self
    }

    /// The retry budget of service `name`: the one it has, if its settings are `config`.
    fn budget(&mut self, name: &str, config: &herd_config::RetryBudget) -> Arc<RetryBudget> {
        self.budgets.retain(|_, b| b.strong_count() > 0);
        if let Some(budget) = self.budgets.get(name).and_then(Weak::upgrade)
            && budget.config() == config
        {
            return budget;
        }
        let budget = Arc::new(RetryBudget::new(config));
        self.budgets
            .insert(name.to_owned(), Arc::downgrade(&budget));
        budget
    }
}

fn wire(protocol: Protocol) -> Wire {
    match protocol {
        Protocol::Http2 => Wire::Http2,
        Protocol::Http | Protocol::Opaque => Wire::Http1,
    }
}

/// Builds the endpoints of a service from addresses, through the shared pools.
#[derive(Clone)]
struct Endpoints {
    pools: Arc<Mutex<Pools>>,
    wire: Wire,
    limits: ServiceLimits,
}

/// An endpoint as the pools see it: address, weight, and the identity it must present when it
/// is meshed.
type Target = (SocketAddr, u32, Option<Arc<SpiffeId>>);

/// `ep` as a [`Target`]. Its identity was checked where it was read (the file, or the control
/// client), so it parses.
fn target(ep: &WeightedEndpoint) -> Target {
    let peer = ep
        .identity
        .as_deref()
        .and_then(|id| SpiffeId::parse(id).ok())
        .map(Arc::new);
    (ep.address, ep.weight, peer)
}

impl Endpoints {
    fn get(&self, addrs: impl IntoIterator<Item = Target>) -> Vec<(Arc<Member>, u32)> {
        let mut pools = self.pools.lock().expect("pools lock poisoned");
        pools.pools.retain(|_, ep| ep.strong_count() > 0);
        addrs
            .into_iter()
            .map(|(addr, weight, peer)| {
                let key = PoolKey {
                    addr,
                    wire: self.wire,
                    connect_timeout: self.limits.connect_timeout,
                    idle_timeout: self.limits.idle_timeout,
                    max_connections: self.limits.max_connections,
                    max_concurrent_streams: self.limits.max_concurrent_streams,
                    peer,
                };
                (pools.get(key), weight)
            })
            .collect()
    }
}

impl Snapshot {
    pub fn build(version: u64, file: PathBuf, config: Config, registry: &mut Registry) -> Snapshot {
        if registry.discovery.config() != &config.proxy.resolver {
            registry.discovery = Arc::new(Discovery::new(&config.proxy.resolver));
        }
        let mut services = Vec::new();
        let apps = config.proxy.inbound.as_ref().map(|inb| {
            let limits = ServiceLimits {
                connect_timeout: inb.upstream.connect_timeout,
                idle_timeout: inb.upstream.idle_timeout,
                ..ServiceLimits::default()
            };
            let fallback = Route {
                timeout: inb.timeout,
                ..Route::fallback()
            };
            InboundApps {
                endpoints: Endpoints {
                    pools: registry.pools.clone(),
                    wire: wire(inb.protocol),
                    limits,
                },
                protocol: inb.protocol,
                fallback: fallback.clone(),
                tunnel_idle: config.proxy.tunnel_idle(),
                route: registry
                    .metrics
                    .route(Direction::Inbound, "inbound", &fallback.name),
                service: registry.metrics.service("inbound"),
                tcp: registry.metrics.tcp(Direction::Inbound, "inbound"),
                targets: RwLock::default(),
            }
        });
        let inbound = config
            .proxy
            .inbound
            .as_ref()
            .and_then(|inb| inb.app)
            .zip(apps.as_ref())
            .map(|(app, apps)| {
                let target = apps.target(app);
                services.push(target.clone());
                target
            });
        let inbound_apps = apps.filter(|_| {
            config
                .proxy
                .inbound
                .as_ref()
                .is_some_and(|inb| inb.transparent)
        });

        let mut routes = RouteTable::default();
        let mut by_listener = HashMap::new();
        let mut by_cluster_ip = HashMap::new();
        for svc in &config.services {
            let endpoints = Endpoints {
                pools: registry.pools.clone(),
                wire: wire(svc.protocol),
                limits: svc.limits.clone(),
            };
            let resolution = svc.dns.as_ref().map(|dns| registry.discovery.resolve(dns));
            let subscription = match (&registry.control, &resolution) {
                (Some(control), None) if svc.endpoints.is_empty() => {
                    Some(control.subscription(&svc.name))
                }
                _ => None,
            };
            // One receiver reads the first set and then follows the changes: an answer that
            // arrives between the two is then seen by the follower, never lost in the gap.
            let mut dns_rx = resolution.as_ref().map(|r| r.subscribe());
            let mut control_rx = subscription.as_ref().map(|s| s.subscribe());
            let initial = match (&mut dns_rx, &mut control_rx) {
                (Some(rx), _) => endpoints.get(
                    rx.borrow_and_update()
                        .iter()
                        .flat_map(|a| a.iter().map(|&addr| (addr, 1, None))),
                ),
                (None, Some(rx)) => endpoints.get(
                    rx.borrow_and_update()
                        .iter()
                        .flat_map(|a| a.iter().map(target)),
                ),
                (None, None) => endpoints.get(svc.endpoints.iter().map(target)),
            };
            let balancer = Arc::new(
                Balancer::new(
                    &svc.name,
                    &svc.balancer,
                    &svc.outlier_detection,
                    &svc.limits,
                    initial,
                )
                .with_metrics(registry.metrics.service(&svc.name)),
            );
            if let (Some(rx), Some(dns)) = (dns_rx, &svc.dns) {
                tokio::spawn(follow(
                    rx,
                    dns.name.clone(),
                    Arc::downgrade(&balancer),
                    endpoints,
                ));
            } else if let Some(rx) = control_rx {
                tokio::spawn(follow_control(
                    rx,
                    svc.name.clone(),
                    Arc::downgrade(&balancer),
                    endpoints,
                ));
            }
            let retries = svc
                .routes
                .iter()
                .any(|r| r.retry.is_some() || r.hedge.is_some());
            let fallback = Route::fallback();
            let target = Arc::new(ServiceTarget {
                name: svc.name.as_str().into(),
                protocol: svc.protocol,
                routes: svc
                    .routes
                    .iter()
                    .map(|r| {
                        RouteTarget::new(
                            r,
                            registry
                                .metrics
                                .route(Direction::Outbound, &svc.name, &r.name),
                        )
                    })
                    .collect(),
                fallback: RouteTarget::new(
                    &fallback,
                    registry
                        .metrics
                        .route(Direction::Outbound, &svc.name, &fallback.name),
                ),
                balancer,
                tcp: registry.metrics.tcp(Direction::Outbound, &svc.name),
                tunnel_idle: svc.limits.tunnel_idle(&config.proxy),
                budget: retries.then(|| registry.budget(&svc.name, &svc.retry_budget)),
                resolution,
                subscription,
            });
            for authority in &svc.authorities {
                routes.insert(authority.as_str(), target.clone());
            }
            if let Some(listen) = svc.listen {
                by_listener.insert(listen, target.clone());
            }
            for &addr in &svc.cluster_ips {
                by_cluster_ip.insert(canonical(addr), target.clone());
            }
            services.push(target);
        }
        let client_identity_header = config
            .proxy
            .inbound
            .as_ref()
            .and_then(|i| i.client_identity_header.as_deref())
            .map(|name| {
                http::HeaderName::from_bytes(name.as_bytes()).expect("validated header name")
            });
        let authorizer = Arc::new(Authorizer::new(&config));
        Snapshot {
            version,
            file,
            authorizer,
            client_identity_header,
            config: Arc::new(config),
            inbound,
            inbound_apps,
            by_cluster_ip,
            routes,
            by_listener,
            services,
            unknown_route: registry
                .metrics
                .route(Direction::Outbound, "unknown", "unknown"),
            egress: registry.metrics.tcp(Direction::Outbound, "egress"),
        }
    }
}

/// How many app addresses [`InboundApps`] keeps a target for; beyond it (an app listening on
/// thousands of ports) each connection gets one of its own.
const MAX_INBOUND_APPS: usize = 4096;

/// The app behind a transparent inbound listener, at each address redirected connections meant
/// (the pod's address and the port the client chose). A target is made on first use and kept
/// while this snapshot is in force; its endpoint comes from the shared pools, so warm
/// connections outlive a reload. Every one counts under the service `inbound`, as `app` does.
pub struct InboundApps {
    endpoints: Endpoints,
    protocol: Protocol,
    /// The app's route: `proxy.inbound.timeout`, nothing else.
    fallback: Route,
    tunnel_idle: Option<std::time::Duration>,
    route: Arc<RouteMetrics>,
    service: Arc<crate::metrics::ServiceMetrics>,
    tcp: Arc<TcpMetrics>,
    targets: RwLock<HashMap<SocketAddr, Arc<ServiceTarget>>>,
}

impl InboundApps {
    /// The app at `app`.
    pub fn get(&self, app: SocketAddr) -> Arc<ServiceTarget> {
        let app = canonical(app);
        if let Some(target) = self.targets.read().expect("inbound apps lock").get(&app) {
            return target.clone();
        }
        let target = self.target(app);
        let mut targets = self.targets.write().expect("inbound apps lock");
        if targets.len() >= MAX_INBOUND_APPS {
            return target;
        }
        targets.entry(app).or_insert(target).clone()
    }

    fn target(&self, app: SocketAddr) -> Arc<ServiceTarget> {
        let limits = &self.endpoints.limits;
        let balancer = Balancer::new(
            "inbound",
            &Default::default(),
            &Default::default(),
            limits,
            self.endpoints.get([(app, 1, None)]),
        )
        .with_metrics(self.service.clone());
        Arc::new(ServiceTarget {
            name: "inbound".into(),
            protocol: self.protocol,
            routes: Vec::new(),
            fallback: RouteTarget::new(&self.fallback, self.route.clone()),
            balancer: Arc::new(balancer),
            budget: None,
            tcp: self.tcp.clone(),
            tunnel_idle: self.tunnel_idle,
            resolution: None,
            subscription: None,
        })
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 one it is, so both spellings find the same entry.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl Snapshot {
    /// The service whose `clusterIps` include `addr`.
    pub fn by_cluster_ip(&self, addr: SocketAddr) -> Option<&Arc<ServiceTarget>> {
        self.by_cluster_ip.get(&canonical(addr))
    }

    /// A meshed endpoint (one with an identity) at `addr`, among the endpoints this proxy
    /// holds now, with its service: how a connection to a meshed pod's own address is known.
    /// Looks through every held endpoint: a proxy holds those of the services it uses.
    pub fn meshed_endpoint(&self, addr: SocketAddr) -> Option<(Arc<ServiceTarget>, Arc<Member>)> {
        let addr = canonical(addr);
        self.services.iter().find_map(|service| {
            let endpoints = service.balancer.endpoints();
            endpoints
                .iter()
                .find(|(member, _)| {
                    canonical(member.addr()) == addr && member.endpoint.key().peer.is_some()
                })
                .map(|(member, _)| (service.clone(), member.clone()))
        })
    }

    /// Sets the gauges read from the balancers' state (endpoints by state, pending requests,
    /// endpoint latency) in `metrics`; called at each scrape.
    pub fn observe_balancers(&self, metrics: &Metrics) {
        let gauges = metrics.balancer_gauges();
        for service in &self.services {
            service.balancer.report(&service.name, &gauges);
        }
    }
}

/// Keeps a discovered service's balancer on the latest DNS answer, for as long as both exist.
/// `rx` has already given the balancer its first set.
async fn follow(
    mut rx: tokio::sync::watch::Receiver<discover::Answer>,
    name: String,
    balancer: Weak<Balancer>,
    endpoints: Endpoints,
) {
    while rx.changed().await.is_ok() {
        let Some(balancer) = balancer.upgrade() else {
            return;
        };
        let addrs: Vec<SocketAddr> = rx
            .borrow_and_update()
            .iter()
            .flat_map(|a| a.iter().copied())
            .collect();
        debug!(%name, ?addrs, "endpoints follow DNS");
        balancer.set_endpoints(endpoints.get(addrs.into_iter().map(|a| (a, 1, None))));
    }
}

/// Keeps a service's balancer on the endpoints the control plane sends, for as long as both
/// exist. Endpoints that left the set get no new requests; requests in flight on them finish.
/// `rx` has already given the balancer its first set.
async fn follow_control(
    mut rx: tokio::sync::watch::Receiver<control::Answer>,
    service: String,
    balancer: Weak<Balancer>,
    endpoints: Endpoints,
) {
    while rx.changed().await.is_ok() {
        let Some(balancer) = balancer.upgrade() else {
            return;
        };
        let addrs: Vec<Target> = rx
            .borrow_and_update()
            .iter()
            .flat_map(|a| a.iter().map(target))
            .collect();
        debug!(%service, ?addrs, "endpoints follow the control plane");
        balancer.set_endpoints(endpoints.get(addrs));
    }
}

#[cfg(test)]
mod tests;
