//! The simulated proxies: each on its own TCP connection (a tonic `Channel` of its own), with a
//! Routing stream and an Endpoints stream watching its services, answering every update with a
//! verdict, as herd-proxy does (`proxy/src/control.rs`): it acknowledges what it can apply and
//! refuses a delta whose base is not the version it holds, and when a stream ends it reconnects
//! with full-jitter exponential backoff (100 ms doubling to 10 s) and says which versions it
//! holds, so that unchanged state is not sent again.
//!
//! One task per proxy. What the measurement needs of each is in its [`Slot`] (atomics, and the
//! versions it holds behind an uncontended lock), counted in [`Counters`], and, for the services
//! a change is being followed on, logged with its arrival time by the [`Recorder`]. A simulated
//! proxy does not parse what it is sent ([`crate::wire`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use herd_api::discovery::{
    EndpointsRequest, EndpointsVerdict, Hello, Node, RoutingRequest, RoutingSubscribe, Verdict,
    Watch, endpoints_request, routing_request,
};
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::wire::{self, EndpointsView, RoutingView};

/// herd-proxy's reconnect backoff: the first wait is up to this, doubling per failure.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A session that lived this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The versions a proxy holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    pub routing: String,
    /// One per watched service, in the order of [`Slot::services`]; empty: none yet.
    pub sets: Vec<String>,
}

/// One simulated proxy, as the measurement sees it.
pub struct Slot {
    /// Watched services (indices into the fleet's names).
    pub services: Box<[u32]>,
    held: Mutex<Held>,
    /// When it first held routing and every watched set ([`Fleet::now`]; 0: not yet).
    pub synced_at: AtomicU64,
    /// When both its streams were last opened.
    pub opened_at: AtomicU64,
    /// When it last received a routing update.
    pub routing_at: AtomicU64,
    /// Both streams open now.
    pub open: AtomicBool,
    /// Sessions opened.
    pub sessions: AtomicU32,
}

impl Slot {
    pub fn held(&self) -> MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the whole fleet received and did.
#[derive(Default)]
pub struct Counters {
    routing: AtomicU64,
    routing_bytes: AtomicU64,
    full: AtomicU64,
    deltas: AtomicU64,
    unknown: AtomicU64,
    endpoint_bytes: AtomicU64,
    nacks: AtomicU64,
    connect_failures: AtomicU64,
    session_ends: AtomicU64,
}

/// [`Counters`] at one moment (or the difference of two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    /// Routing updates received.
    pub routing: u64,
    pub routing_bytes: u64,
    /// Endpoints updates received: full sets, deltas, and of either, sets marked `unknown`.
    pub full: u64,
    pub deltas: u64,
    pub unknown: u64,
    /// Encoded bytes of the endpoints in them.
    pub endpoint_bytes: u64,
    /// Deltas refused because their base was not the version held.
    pub nacks: u64,
    pub connect_failures: u64,
    /// Sessions that ended (a stream failed or closed).
    pub session_ends: u64,
}

impl Count {
    pub fn since(self, before: Count) -> Count {
        Count {
            routing: self.routing - before.routing,
            routing_bytes: self.routing_bytes - before.routing_bytes,
            full: self.full - before.full,
            deltas: self.deltas - before.deltas,
            unknown: self.unknown - before.unknown,
            endpoint_bytes: self.endpoint_bytes - before.endpoint_bytes,
            nacks: self.nacks - before.nacks,
            connect_failures: self.connect_failures - before.connect_failures,
            session_ends: self.session_ends - before.session_ends,
        }
    }
}

/// An update of a followed service, as one proxy received it.
#[derive(Clone, Debug)]
pub struct Arrival {
    pub proxy: u32,
    /// [`Fleet::now`] when it was decoded.
    pub at: u64,
    pub service: u32,
    pub version: String,
    pub full: bool,
    /// The endpoints' addresses (all of a full set, the added or changed of a delta).
    pub addresses: Vec<String>,
    pub removed: Vec<String>,
}

/// Logs the updates of the followed services while on.
pub struct Recorder {
    followed: Vec<u32>,
    on: AtomicBool,
    log: Mutex<Vec<Arrival>>,
}

impl Recorder {
    fn log(&self) -> MutexGuard<'_, Vec<Arrival>> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Empties the log and starts logging.
    pub fn start(&self) {
        self.log().clear();
        self.on.store(true, Ordering::SeqCst);
    }

    /// Stops logging; what was logged.
    pub fn stop(&self) -> Vec<Arrival> {
        self.on.store(false, Ordering::SeqCst);
        std::mem::take(&mut *self.log())
    }

    /// Looks at the log so far.
    pub fn inspect<R>(&self, f: impl FnOnce(&[Arrival]) -> R) -> R {
        f(&self.log())
    }
}

pub struct Fleet {
    uri: String,
    names: Arc<[String]>,
    pub slots: Vec<Slot>,
    counters: Counters,
    pub recorder: Recorder,
    /// Bounds how many proxies connect and sync at once while the fleet first comes up.
    gate: Semaphore,
    epoch: Instant,
}

impl Fleet {
    /// A fleet of `subscriptions.len()` proxies for the server at `target`, not started;
    /// `followed` are the services whose updates the [`Recorder`] logs.
    pub fn new(
        target: SocketAddr,
        names: &[String],
        subscriptions: &[Vec<u32>],
        followed: Vec<u32>,
        connect_concurrency: usize,
    ) -> Arc<Self> {
        let slots = subscriptions
            .iter()
            .map(|services| Slot {
                services: services.clone().into_boxed_slice(),
                held: Mutex::new(Held {
                    routing: String::new(),
                    sets: vec![String::new(); services.len()],
                }),
                synced_at: AtomicU64::new(0),
                opened_at: AtomicU64::new(0),
                routing_at: AtomicU64::new(0),
                open: AtomicBool::new(false),
                sessions: AtomicU32::new(0),
            })
            .collect();
        Arc::new(Fleet {
            uri: format!("http://{target}"),
            names: names.into(),
            slots,
            counters: Counters::default(),
            recorder: Recorder {
                followed,
                on: AtomicBool::new(false),
                log: Mutex::new(Vec::new()),
            },
            gate: Semaphore::new(connect_concurrency.max(1)),
            epoch: Instant::now(),
        })
    }

    /// Nanoseconds since the fleet was made (never 0), the clock of every stamp.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64 + 1
    }

    /// Starts every proxy.
    pub fn start(self: &Arc<Self>) {
        for proxy in 0..self.slots.len() {
            tokio::spawn(run(self.clone(), proxy));
        }
    }

    /// Lets every proxy connect without waiting for the others (after the first sync).
    pub fn open_gate(&self) {
        self.gate.add_permits(self.slots.len());
    }

    pub fn count(&self) -> Count {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Count {
            routing: get(&c.routing),
            routing_bytes: get(&c.routing_bytes),
            full: get(&c.full),
            deltas: get(&c.deltas),
            unknown: get(&c.unknown),
            endpoint_bytes: get(&c.endpoint_bytes),
            nacks: get(&c.nacks),
            connect_failures: get(&c.connect_failures),
            session_ends: get(&c.session_ends),
        }
    }

    /// Proxies holding routing and every watched set.
    pub fn synced(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| s.synced_at.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Proxies with both streams open now, and of those, the ones opened after `since`.
    pub fn open(&self, since: u64) -> (usize, usize) {
        let open: Vec<&Slot> = self
            .slots
            .iter()
            .filter(|s| s.open.load(Ordering::Relaxed))
            .collect();
        let fresh = open
            .iter()
            .filter(|s| s.opened_at.load(Ordering::Relaxed) > since)
            .count();
        (open.len(), fresh)
    }

    pub fn held(&self) -> Vec<Held> {
        self.slots.iter().map(|s| s.held().clone()).collect()
    }

    fn on_routing(&self, proxy: usize, update: RoutingView) -> Verdict {
        let slot = &self.slots[proxy];
        slot.routing_at.store(self.now(), Ordering::Relaxed);
        self.counters.routing.fetch_add(1, Ordering::Relaxed);
        self.counters
            .routing_bytes
            .fetch_add(update.mesh.len() as u64, Ordering::Relaxed);
        let mut held = slot.held();
        held.routing = update.version.clone();
        self.mark_synced(slot, &held);
        Verdict {
            version: update.version,
            error: String::new(),
        }
    }

    fn on_endpoints(&self, proxy: usize, update: EndpointsView) -> EndpointsVerdict {
        let at = self.now();
        let slot = &self.slots[proxy];
        let c = &self.counters;
        let full = update.base_version.is_empty();
        c.full.fetch_add(u64::from(full), Ordering::Relaxed);
        c.deltas.fetch_add(u64::from(!full), Ordering::Relaxed);
        c.unknown
            .fetch_add(u64::from(update.unknown), Ordering::Relaxed);
        let bytes: usize = update.endpoints.iter().map(|e| e.len()).sum();
        c.endpoint_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        let watched = slot
            .services
            .iter()
            .position(|&s| self.names[s as usize] == update.service);
        let mut held = slot.held();
        let error = match watched {
            None => format!("`{}` is not watched", update.service),
            Some(i) if !full && held.sets[i] != update.base_version => format!(
                "a delta from {} but {} is held",
                update.base_version, held.sets[i]
            ),
            Some(i) => {
                held.sets[i] = update.version.clone();
                String::new()
            }
        };
        if !error.is_empty() {
            c.nacks.fetch_add(1, Ordering::Relaxed);
        }
        self.mark_synced(slot, &held);
        drop(held);
        let recorder = &self.recorder;
        if let Some(i) = watched
            && recorder.on.load(Ordering::Relaxed)
            && recorder.followed.contains(&slot.services[i])
        {
            let arrival = Arrival {
                proxy: proxy as u32,
                at,
                service: slot.services[i],
                version: update.version.clone(),
                full,
                addresses: wire::addresses(&update),
                removed: update.removed.clone(),
            };
            recorder.log().push(arrival);
        }
        EndpointsVerdict {
            service: update.service,
            verdict: Some(Verdict {
                version: update.version,
                error,
            }),
        }
    }

    fn mark_synced(&self, slot: &Slot, held: &Held) {
        if slot.synced_at.load(Ordering::Relaxed) == 0
            && !held.routing.is_empty()
            && held.sets.iter().all(|v| !v.is_empty())
        {
            slot.synced_at.store(self.now(), Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
enum SessionError {
    Connect,
    Stream,
}

/// One proxy, for ever: sessions, and backoff between them.
async fn run(fleet: Arc<Fleet>, proxy: usize) {
    let mut failures = 0u32;
    loop {
        let started = Instant::now();
        let Err(error) = session(&fleet, proxy).await;
        fleet.slots[proxy].open.store(false, Ordering::Relaxed);
        let counter = match error {
            SessionError::Connect => &fleet.counters.connect_failures,
            SessionError::Stream => &fleet.counters.session_ends,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if started.elapsed() >= STABLE {
            failures = 0;
        }
        failures = failures.saturating_add(1);
        let cap = BACKOFF_BASE
            .saturating_mul(1 << failures.min(16))
            .min(BACKOFF_MAX);
        tokio::time::sleep(cap.mul_f64(fastrand::f64())).await;
    }
}

/// One connection, both streams, until either ends.
async fn session(fleet: &Fleet, proxy: usize) -> Result<Infallible, SessionError> {
    let slot = &fleet.slots[proxy];
    let permit = fleet
        .gate
        .acquire()
        .await
        .expect("the gate is never closed");
    let channel = tonic::transport::Endpoint::from_shared(fleet.uri.clone())
        .expect("a socket address makes a valid URI")
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|_| SessionError::Connect)?;
    let mut grpc = tonic::client::Grpc::new(channel);
    let node = Node {
        id: format!("sim-{proxy:05}"),
        namespace: "bench".into(),
        proxy_version: env!("CARGO_PKG_VERSION").into(),
    };
    let held = slot.held().clone();

    let (routing_tx, routing_rx) = mpsc::unbounded_channel();
    let _ = routing_tx.send(RoutingRequest {
        request: Some(routing_request::Request::Subscribe(RoutingSubscribe {
            node: Some(node.clone()),
            have_version: held.routing,
        })),
    });
    let mut routing = wire::routing(&mut grpc, UnboundedReceiverStream::new(routing_rx))
        .await
        .map_err(|_| SessionError::Connect)?;

    let (endpoints_tx, endpoints_rx) = mpsc::unbounded_channel();
    let _ = endpoints_tx.send(EndpointsRequest {
        request: Some(endpoints_request::Request::Hello(Hello {
            node: Some(node),
        })),
    });
    for (&service, have) in slot.services.iter().zip(held.sets) {
        let _ = endpoints_tx.send(EndpointsRequest {
            request: Some(endpoints_request::Request::Watch(Watch {
                service: fleet.names[service as usize].clone(),
                have_version: have,
            })),
        });
    }
    let mut endpoints = wire::endpoints(&mut grpc, UnboundedReceiverStream::new(endpoints_rx))
        .await
        .map_err(|_| SessionError::Connect)?;
    slot.opened_at.store(fleet.now(), Ordering::Relaxed);
    slot.open.store(true, Ordering::Relaxed);
    slot.sessions.fetch_add(1, Ordering::Relaxed);
    // While the fleet first comes up, a proxy holds its place at the gate until it has synced:
    // the first sync is a ramp of at most `connect_concurrency` proxies at a time.
    let mut permit = Some(permit);

    loop {
        if permit.is_some() && slot.synced_at.load(Ordering::Relaxed) != 0 {
            permit = None;
        }
        tokio::select! {
            update = routing.message() => {
                let update = update.map_err(|_| SessionError::Stream)?.ok_or(SessionError::Stream)?;
                let verdict = fleet.on_routing(proxy, update);
                let _ = routing_tx.send(RoutingRequest {
                    request: Some(routing_request::Request::Verdict(verdict)),
                });
            }
            update = endpoints.message() => {
                let update = update.map_err(|_| SessionError::Stream)?.ok_or(SessionError::Stream)?;
                let verdict = fleet.on_endpoints(proxy, update);
                let _ = endpoints_tx.send(EndpointsRequest {
                    request: Some(endpoints_request::Request::Verdict(verdict)),
                });
            }
        }
    }
}
