//! The balance stage: which endpoint of a service gets the next request (or TCP connection).
//!
//! Algorithms (`balancer.algorithm`), each honouring endpoint weights:
//!
//! - `peak-ewma` (default): power of two choices. Two endpoints are drawn at random (weighted),
//!   and the one with the lower cost wins, cost being its peak-EWMA latency times its requests in
//!   flight plus one, over its weight (see [`load`]). Two random choices avoid the herd behaviour
//!   of always picking the single best endpoint, and comparing two costs is enough to keep
//!   traffic off a slow or queueing Puma pod.
//! - `least-request`: power of two choices over requests in flight per weight: what nginx's
//!   `least_conn` gives the streaming server, whose requests are long-lived streams.
//! - `round-robin`: in turn, each endpoint as many times as its weight.
//! - `ring-hash`: consistent hashing of a header, a cookie or the client's address, with bounded
//!   load (see [`ring`]).
//!
//! The balancer wraps endpoints, not the other way round: each [`Member`] of a service's set is
//! an endpoint (its connection pool) with what the balancer has learnt of it, its load and its
//! health, and the endpoint stage below knows nothing of either.
//!
//! Ejected endpoints (see [`outlier`]) are skipped by every algorithm. A pick reads the endpoint
//! set through an `ArcSwap` (no lock), draws from a thread-local generator, and allocates nothing.
//!
//! Waiting is bounded: a request that finds no endpoint ready (none yet, or all of an endpoint's
//! `maxConnections` busy) waits at most `failFastTimeout` and then fails with 503; and when
//! `maxPendingRequests` requests of the service are already waiting, it fails with 503 at once
//! rather than join an unbounded queue.

pub mod load;
pub mod outlier;
pub mod ring;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use herd_config::{
    Algorithm, BalancerConfig, FailureCondition, HashOn, OutlierDetection, ServiceLimits,
};
use http::HeaderMap;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use self::load::{InFlight, Load, now_nanos};
use self::outlier::{Health, State};
use self::ring::{Ring, hash_key};
use crate::endpoint::{self, AllBusy, Endpoint};
use crate::errors::ProxyError;
use crate::metrics::{BalancerGauges, ServiceMetrics};
use crate::outcome::Outcome;

/// How often a request waiting for an endpoint re-checks, besides being woken by a change:
/// ejections end by the clock, not by an event.
const RECHECK: Duration = Duration::from_millis(50);

/// An endpoint as its balancers know it: the endpoint, its load (requests in flight, peak-EWMA
/// latency) and its health (outlier detection).
///
/// Members are shared as their endpoints are: the snapshot's registry keeps one per pool, so what
/// was learnt of an endpoint survives reloads that keep it, and services that name the same
/// endpoint with the same settings learn together.
pub struct Member {
    pub endpoint: Arc<Endpoint>,
    pub load: Arc<Load>,
    pub health: Health,
}

impl Member {
    pub fn new(endpoint: Arc<Endpoint>) -> Arc<Self> {
        Arc::new(Member {
            endpoint,
            load: Arc::default(),
            health: Health::default(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.endpoint.addr()
    }
}

/// The endpoints of a service at one moment, with what picking needs precomputed.
pub struct EndpointSet {
    endpoints: Vec<Arc<Member>>,
    weights: Vec<u32>,
    /// `cumulative[i]` = sum of `weights[..=i]`.
    cumulative: Vec<u64>,
    total: u64,
    ring: Ring,
}

impl EndpointSet {
    fn new(endpoints: Vec<(Arc<Member>, u32)>, ring_hash: bool) -> Self {
        let ring = if ring_hash {
            Ring::new(
                &endpoints
                    .iter()
                    .map(|(e, w)| (e.addr(), *w))
                    .collect::<Vec<_>>(),
            )
        } else {
            Ring::default()
        };
        let weights: Vec<u32> = endpoints.iter().map(|(_, w)| (*w).max(1)).collect();
        let cumulative: Vec<u64> = weights
            .iter()
            .scan(0u64, |sum, &w| {
                *sum += u64::from(w);
                Some(*sum)
            })
            .collect();
        let total = cumulative.last().copied().unwrap_or(0);
        EndpointSet {
            endpoints: endpoints.into_iter().map(|(e, _)| e).collect(),
            weights,
            cumulative,
            total,
            ring,
        }
    }

    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Arc<Member>, u32)> {
        self.endpoints.iter().zip(self.weights.iter().copied())
    }

    /// The endpoint owning position `at` of the weighted line `0..total`.
    fn at(&self, at: u64) -> usize {
        self.cumulative.partition_point(|&c| c <= at)
    }

    fn sample(&self) -> usize {
        self.at(fastrand::u64(..self.total))
    }
}

/// An endpoint chosen for one request.
pub struct Picked {
    pub member: Arc<Member>,
    /// This request is the probe that decides whether an ejected endpoint returns.
    pub probe: bool,
}

pub struct Balancer {
    service: Arc<str>,
    algorithm: Algorithm,
    decay: Duration,
    default_rtt: Duration,
    hash_on: Option<HashOn>,
    bounded_load: f64,
    outlier: OutlierDetection,
    max_pending: usize,
    fail_fast: Duration,
    set: ArcSwap<EndpointSet>,
    rr: AtomicUsize,
    pending: AtomicUsize,
    in_flight: Arc<AtomicUsize>,
    changed: Notify,
    /// Serializes ejection decisions against `maxEjectedPercent`.
    ejecting: Mutex<()>,
    metrics: Arc<ServiceMetrics>,
}

impl Balancer {
    pub fn new(
        service: &str,
        config: &BalancerConfig,
        outlier: &OutlierDetection,
        limits: &ServiceLimits,
        endpoints: Vec<(Arc<Member>, u32)>,
    ) -> Self {
        let ring_hash = config.algorithm == Algorithm::RingHash;
        Balancer {
            service: service.into(),
            algorithm: config.algorithm,
            decay: config.decay,
            default_rtt: config.default_rtt,
            hash_on: config.hash_on.clone(),
            bounded_load: config.bounded_load,
            outlier: outlier.clone(),
            max_pending: limits.max_pending_requests,
            fail_fast: limits.fail_fast_timeout,
            set: ArcSwap::from_pointee(EndpointSet::new(endpoints, ring_hash)),
            rr: AtomicUsize::new(fastrand::usize(..)),
            pending: AtomicUsize::new(0),
            in_flight: Arc::new(AtomicUsize::new(0)),
            changed: Notify::new(),
            ejecting: Mutex::new(()),
            metrics: Arc::new(ServiceMetrics::detached()),
        }
    }

    /// Counts this balancer's ejections and overload rejections in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ServiceMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The peak-EWMA decay, for reading latency estimates.
    pub fn decay(&self) -> Duration {
        self.decay
    }

    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    /// The current endpoint set.
    pub fn endpoints(&self) -> Arc<EndpointSet> {
        self.set.load_full()
    }

    /// Replaces the endpoint set (discovery, reload): requests in flight keep their endpoint;
    /// new ones see the new set at once, and waiting ones are woken.
    pub fn set_endpoints(&self, endpoints: Vec<(Arc<Member>, u32)>) {
        self.set.store(Arc::new(EndpointSet::new(
            endpoints,
            self.algorithm == Algorithm::RingHash,
        )));
        self.changed.notify_waiters();
    }

    /// The ring-hash key of a request, when the service hashes and the request has one.
    pub fn hash_of(&self, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
        match self.hash_on.as_ref()? {
            HashOn::Header(name) => headers.get(name.as_str()).map(|v| hash_key(v.as_bytes())),
            HashOn::Cookie(name) => headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == name).then(|| hash_key(v.as_bytes()))
                }),
            HashOn::ClientIp => Some(match client {
                IpAddr::V4(ip) => hash_key(&ip.octets()),
                IpAddr::V6(ip) => hash_key(&ip.octets()),
            }),
        }
    }

    /// Picks an endpoint now, or `None` when none is available.
    pub fn pick(&self, hash: Option<u64>) -> Option<Picked> {
        let set = self.set.load();
        if set.is_empty() {
            return None;
        }
        let now = now_nanos();
        match self.algorithm {
            Algorithm::PeakEwma => self.p2c(&set, now, |e| {
                e.load.cost(now, self.decay, self.default_rtt)
            }),
            Algorithm::LeastRequest => self.p2c(&set, now, |e| f64::from(e.load.in_flight() + 1)),
            Algorithm::RoundRobin => self.round_robin(&set, now),
            Algorithm::RingHash => match hash {
                Some(hash) => self.ring_hash(&set, now, hash),
                None => self.round_robin(&set, now),
            },
        }
    }

    fn admit(set: &EndpointSet, i: usize, now: u64) -> Option<Picked> {
        let endpoint = &set.endpoints[i];
        endpoint.health.admit(now).map(|probe| Picked {
            member: endpoint.clone(),
            probe,
        })
    }

    /// Power of two choices: of two weighted random draws, the lower cost per weight.
    fn p2c(&self, set: &EndpointSet, now: u64, cost: impl Fn(&Member) -> f64) -> Option<Picked> {
        if set.len() == 1 {
            return Self::admit(set, 0, now);
        }
        for _ in 0..3 {
            let a = set.sample();
            let mut b = set.sample();
            if a == b {
                b = (a + 1 + fastrand::usize(..set.len() - 1)) % set.len();
            }
            let per_weight = |i: usize| cost(&set.endpoints[i]) / f64::from(set.weights[i]);
            let (first, second) = if per_weight(a) <= per_weight(b) {
                (a, b)
            } else {
                (b, a)
            };
            if let Some(p) = Self::admit(set, first, now).or_else(|| Self::admit(set, second, now))
            {
                return Some(p);
            }
        }
        self.any(set, now)
    }

    fn round_robin(&self, set: &EndpointSet, now: u64) -> Option<Picked> {
        for _ in 0..set.len() {
            let at = self.rr.fetch_add(1, Ordering::Relaxed) as u64 % set.total;
            if let Some(p) = Self::admit(set, set.at(at), now) {
                return Some(p);
            }
        }
        self.any(set, now)
    }

    fn ring_hash(&self, set: &EndpointSet, now: u64, hash: u64) -> Option<Picked> {
        // An endpoint may take at most `boundedLoad` × the average load, counting this request.
        let total = self.in_flight.load(Ordering::Relaxed) as f64 + 1.0;
        let limit = (self.bounded_load * total / set.len() as f64).ceil();
        for i in set.ring.walk(hash) {
            let endpoint = &set.endpoints[i];
            if f64::from(endpoint.load.in_flight() + 1) <= limit
                && !endpoint.health.is_ejected(now)
                && let Some(p) = Self::admit(set, i, now)
            {
                return Some(p);
            }
        }
        self.any(set, now)
    }

    /// A pick that is not `avoid` (a retry's or a hedge's previous endpoint) when the service has
    /// another available one: for ring-hash the key's next endpoint on the ring, otherwise any
    /// other, from a random start.
    fn pick_avoiding(&self, hash: Option<u64>, avoid: Option<&Arc<Member>>) -> Option<Picked> {
        let picked = self.pick(hash)?;
        let Some(avoid) = avoid.filter(|a| Arc::ptr_eq(&picked.member, a)) else {
            return Some(picked);
        };
        let set = self.set.load();
        let now = now_nanos();
        let other = |i: &usize| !Arc::ptr_eq(&set.endpoints[*i], avoid);
        let instead = match (self.algorithm, hash) {
            (Algorithm::RingHash, Some(hash)) => set
                .ring
                .walk(hash)
                .filter(other)
                .find_map(|i| Self::admit(&set, i, now)),
            _ => {
                let start = fastrand::usize(..set.len());
                (0..set.len())
                    .map(|k| (start + k) % set.len())
                    .filter(other)
                    .find_map(|i| Self::admit(&set, i, now))
            }
        };
        match instead {
            Some(instead) => {
                if picked.probe {
                    picked.member.health.abandon_probe();
                }
                Some(instead)
            }
            None => Some(picked),
        }
    }

    /// Any available endpoint, scanning from a random start.
    fn any(&self, set: &EndpointSet, now: u64) -> Option<Picked> {
        let start = fastrand::usize(..set.len());
        (0..set.len()).find_map(|k| Self::admit(set, (start + k) % set.len(), now))
    }

    /// An endpoint and, for pooled HTTP/1 endpoints, one of its connection slots; waits up to
    /// `failFastTimeout` for either, and refuses at once when `maxPendingRequests` already wait.
    pub async fn dispatch(
        &self,
        hash: Option<u64>,
        needs_slot: bool,
    ) -> Result<Dispatch, ProxyError> {
        self.dispatch_avoiding(hash, needs_slot, None).await
    }

    /// As [`Balancer::dispatch`], preferring an endpoint other than `avoid` (a retry's or a
    /// hedge's previous one) when the service has another available.
    pub async fn dispatch_avoiding(
        &self,
        hash: Option<u64>,
        needs_slot: bool,
        avoid: Option<&Arc<Member>>,
    ) -> Result<Dispatch, ProxyError> {
        let busy = match self.pick_avoiding(hash, avoid) {
            Some(picked) => match picked.member.endpoint.try_slot(needs_slot) {
                Ok(slot) => return Ok(self.start(picked, slot)),
                Err(AllBusy) => Some(picked),
            },
            None => None,
        };
        // Waiting is the rare path: boxed, so every request's future does not carry its timers.
        Box::pin(self.wait_for_endpoint(busy, hash, needs_slot, avoid)).await
    }

    /// Waits, within `failFastTimeout`, for a slot on `busy` (an endpoint picked whose slots are
    /// all taken) or, with none picked, for an endpoint to become ready.
    async fn wait_for_endpoint(
        &self,
        busy: Option<Picked>,
        hash: Option<u64>,
        needs_slot: bool,
        avoid: Option<&Arc<Member>>,
    ) -> Result<Dispatch, ProxyError> {
        let _waiting = self.wait()?;
        let deadline = Instant::now() + self.fail_fast;
        if let Some(picked) = busy {
            return self.slot_within(picked, deadline).await;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(picked) = self.pick_avoiding(hash, avoid) {
                return match picked.member.endpoint.try_slot(needs_slot) {
                    Ok(slot) => Ok(self.start(picked, slot)),
                    Err(AllBusy) => self.slot_within(picked, deadline).await,
                };
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready());
            }
            let wake = deadline.min(Instant::now() + RECHECK);
            let _ = tokio::time::timeout_at(wake, changed).await;
        }
    }

    async fn slot_within(&self, picked: Picked, deadline: Instant) -> Result<Dispatch, ProxyError> {
        match tokio::time::timeout_at(deadline, picked.member.endpoint.slot()).await {
            Ok(slot) => Ok(self.start(picked, Some(slot))),
            Err(_) => {
                if picked.probe {
                    picked.member.health.abandon_probe();
                }
                Err(self.not_ready())
            }
        }
    }

    fn not_ready(&self) -> ProxyError {
        ProxyError::NoReadyEndpoint {
            service: self.service.to_string(),
            waited: self.fail_fast,
        }
    }

    /// Joins the requests waiting for an endpoint, or refuses when too many already are.
    fn wait(&self) -> Result<Waiting<'_>, ProxyError> {
        let before = self.pending.fetch_add(1, Ordering::AcqRel);
        if before >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.metrics.overload_rejections.inc();
            return Err(ProxyError::Overloaded {
                service: self.service.to_string(),
                pending: self.max_pending,
            });
        }
        Ok(Waiting(&self.pending))
    }

    fn start(&self, picked: Picked, slot: Option<OwnedSemaphorePermit>) -> Dispatch {
        let in_flight = picked.member.load.start();
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        Dispatch {
            member: picked.member,
            probe: picked.probe,
            slot,
            in_flight: Some(Lease {
                _endpoint: in_flight,
                service: self.in_flight.clone(),
            }),
            started: Instant::now(),
            recorded: false,
        }
    }

    /// Feeds a request's outcome back: latency into the endpoint's average, success or failure
    /// into its outlier state.
    pub fn record(&self, dispatch: &mut Dispatch, outcome: Outcome) {
        dispatch.recorded = true;
        let now = now_nanos();
        let endpoint = &dispatch.member;
        let rtt = dispatch.started.elapsed();
        if self.is_failure(outcome) {
            // A failure is expensive however fast it came back: a refused connection must not
            // look like the quickest endpoint.
            endpoint
                .load
                .observe(rtt.max(self.default_rtt * 10), now, self.decay);
            if endpoint.health.failure(dispatch.probe, now, &self.outlier) {
                // Counting the ejected and ejecting one more must be one step, or two endpoints
                // failing at once could both take the last place under the cap. Only failures
                // at the threshold come here.
                let _one_at_a_time = self.ejecting.lock().expect("ejection lock poisoned");
                if self.may_eject(now) && endpoint.health.eject_if_ready(now, &self.outlier) {
                    self.metrics.ejections.inc();
                }
            }
        } else {
            endpoint.load.observe(rtt, now, self.decay);
            endpoint.health.success(dispatch.probe, now, &self.outlier);
        }
    }

    fn is_failure(&self, outcome: Outcome) -> bool {
        self.outlier.failure_on.iter().any(|c| match (c, outcome) {
            (FailureCondition::ConnectFailure, Outcome::ConnectFailure) => true,
            (FailureCondition::Timeout, Outcome::Timeout) => true,
            (FailureCondition::Status5xx, Outcome::Reset) => true,
            (FailureCondition::GatewayError, Outcome::Reset) => true,
            (FailureCondition::Status5xx, Outcome::Status(s)) => (500..600).contains(&s),
            (FailureCondition::GatewayError, Outcome::Status(s)) => matches!(s, 502..=504),
            (FailureCondition::Status(code), Outcome::Status(s)) => *code == s,
            _ => false,
        })
    }

    /// Sets `gauges` from this balancer's state now: its endpoints by state, its requests
    /// waiting, and (for a small service) each endpoint's latency estimate.
    pub fn report(&self, service: &str, gauges: &BalancerGauges<'_>) {
        let now = now_nanos();
        let set = self.endpoints();
        let mut counts = [0i64; 3];
        for (member, _) in set.iter() {
            let state = member.health.state(now);
            counts[match state {
                State::Ready => 0,
                State::Ejected => 1,
                State::Probing => 2,
            }] += 1;
            if gauges.per_endpoint(set.len())
                && let Some(rtt) = member.load.rtt_ns(now, self.decay)
            {
                gauges.endpoint_rtt(service, member.addr(), rtt / 1e9);
            }
        }
        for (state, count) in [State::Ready, State::Ejected, State::Probing]
            .iter()
            .zip(counts)
        {
            gauges.endpoints(service, state.as_str(), count);
        }
        gauges.pending(service, self.pending());
    }

    /// Whether one more endpoint may be ejected under `maxEjectedPercent`.
    fn may_eject(&self, now: u64) -> bool {
        let set = self.set.load();
        let cap = set.len() * usize::from(self.outlier.max_ejected_percent) / 100;
        set.endpoints
            .iter()
            .filter(|e| e.health.is_ejected(now))
            .count()
            < cap
    }
}

/// A request counted as waiting for an endpoint.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts a request against its endpoint and its service until dropped: travels with the
/// response body (or an upgraded tunnel), so long-lived streams count as load.
pub struct Lease {
    /// Decrements the endpoint's count when dropped.
    _endpoint: InFlight,
    service: Arc<AtomicUsize>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.service.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What a response holds of its endpoint until its body ends (or an upgraded tunnel closes): the
/// connection (see [`endpoint::Lease`]) and the request's count in the endpoint's and the
/// service's load.
pub struct ResponseLease {
    conn: endpoint::Lease,
    _load: Option<Lease>,
}

impl ResponseLease {
    /// The body ended cleanly: the connection goes back to its pool.
    pub fn finish(self) {
        self.conn.finish();
    }
}

/// One request's hold on an endpoint.
pub struct Dispatch {
    pub member: Arc<Member>,
    probe: bool,
    slot: Option<OwnedSemaphorePermit>,
    in_flight: Option<Lease>,
    started: Instant,
    recorded: bool,
}

impl Dispatch {
    /// The HTTP/1 connection slot, for the connection to hold while it is busy.
    pub fn take_slot(&mut self) -> Option<OwnedSemaphorePermit> {
        self.slot.take()
    }

    /// The in-flight count, for the response body or tunnel to hold.
    pub fn take_lease(&mut self) -> Option<Lease> {
        self.in_flight.take()
    }

    /// What the response to this request holds until it ends: `conn`, the connection it came
    /// on, and the in-flight count.
    pub fn hold(&mut self, conn: endpoint::Lease) -> ResponseLease {
        ResponseLease {
            conn,
            _load: self.in_flight.take(),
        }
    }
}

impl Drop for Dispatch {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.member.health.abandon_probe();
        }
    }
}

#[cfg(test)]
mod tests;
