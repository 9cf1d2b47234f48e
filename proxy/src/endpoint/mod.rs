//! The endpoint stage: a pool of connections to one address.
//!
//! HTTP/1 connections carry one request at a time, so the pool keeps the idle ones and hands the
//! most recently used out first (it is the one least likely to have been closed by the app). An
//! idle connection is closed after `idleTimeout` (10 s by default, below Puma's 20 s keep-alive:
//! the proxy must never write a request onto a socket the app is in the middle of closing). One
//! reaper task per pool runs only while the pool holds idle connections, so a quiet endpoint costs
//! no timer. HTTP/2 multiplexes: one connection, shared by every request, closed likewise once it
//! has carried no request for `idleTimeout` (see [`streams`]).
//!
//! HTTP/1 connections per endpoint are capped at `maxConnections`: a request takes a slot (a
//! semaphore permit, which the balancer waits for, bounded by `failFastTimeout`) and the busy
//! connection holds it until the response ends. HTTP/2 opens another connection once each open
//! one carries `maxConcurrentStreams` requests.
//!
//! A connection is handed back (see [`Lease`]) only when its response body has ended cleanly; a
//! response abandoned half-way, or cancelled by a timeout, drops the connection, which closes it,
//! and so also cancels the request on the app's side.
//!
//! Most HTTP/1 requests (no upgrade, no streamed body) are exchanged by [`direct`] from the
//! request's own task, on plain sockets pooled here; the rest go through hyper's client, whose
//! connections are pooled beside them. Both kinds share the endpoint's slots and idle timeout.
//!
//! A meshed endpoint (one whose proxy must present a given SPIFFE ID) is reached over mutual
//! TLS with this proxy's certificate ([`crate::identity`]): every request that is not an
//! upgrade goes as an HTTP/2 stream (ALPN `h2`), whatever the service's protocol, so a pod pair
//! shares a few multiplexed connections instead of one per request in flight; the peer's proxy
//! turns it back into HTTP/1 for its app. An upgrade (a WebSocket) gets an HTTP/1.1 connection
//! of its own, and an opaque service's connection carries bytes. A handshake with a server that
//! presents another identity fails, naming both.
//!
//! A meshed HTTP/2 connection takes new requests only while what authenticated it holds (see
//! [`Trust`]): both certificates of its handshake unexpired, and every root trusted then still
//! trusted. Under steady traffic such a connection never idles out, and TLS checks certificates
//! only in the handshake, so without this a connection would outlive the certificates that
//! authenticated it (by hours, on a busy pod pair) and a root removed from the bundle would
//! keep authenticating the connections made under it. A retired connection finishes what it
//! carries and closes once idle; the next request opens a new one with the current certificate.
//!
//! An endpoint knows nothing of the balancer: the balancer wraps it (with its load and health,
//! see [`crate::balance::Member`]), and the lease of a response here is only the connection.
//! Nothing here imports the stages above, so the endpoint can be read, and tested, alone.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use herd_identity::SpiffeId;
use http::header::{self, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;
use tracing::{debug, trace};

use crate::body::{BodyProgress, RequestBody};
use crate::errors::{BoxError, ProxyError};
use crate::identity::{Alpn, Credentials, Identity};

pub mod direct;
mod streams;

use streams::{Stream, Streams};

/// How the proxy speaks to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    Http1,
    Http2,
}

/// Settings that identify a pool: two services naming the same address with the same settings
/// share one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub wire: Wire,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// HTTP/1 connections at once.
    pub max_connections: usize,
    /// HTTP/2 streams per connection before another is opened.
    pub max_concurrent_streams: u32,
    /// The SPIFFE ID the endpoint's proxy must present: the endpoint is meshed, reached over
    /// mutual TLS. `None`: plaintext.
    pub peer: Option<Arc<SpiffeId>>,
}

/// A connection to an endpoint: plain TCP, or mutual TLS to a meshed one.
pub type Io = Either<TcpStream, TlsStream<TcpStream>>;

pub struct Endpoint {
    key: PoolKey,
    /// This proxy's certificate, for meshed endpoints.
    identity: Option<Identity>,
    state: Mutex<State>,
    /// Serializes HTTP/2 connection attempts so a burst of requests opens one connection.
    h2_connect: tokio::sync::Mutex<()>,
    /// HTTP/1 connection slots.
    slots: Arc<Semaphore>,
}

#[derive(Default)]
struct State {
    /// Idle connections of hyper's client, oldest at the front; reuse takes from the back.
    idle: VecDeque<Idle<http1::SendRequest<RequestBody>>>,
    /// Idle connections for direct exchanges, likewise.
    direct: VecDeque<Idle<direct::Conn>>,
    reaper: bool,
    h2: Vec<H2Conn>,
}

struct H2Conn {
    tx: http2::SendRequest<RequestBody>,
    streams: Arc<Streams>,
    /// What authenticated it, when it is meshed.
    trust: Option<Trust>,
}

/// What a meshed connection was authenticated with. It may take new requests while both
/// certificates of its handshake are valid and the bundle in use still holds every root that
/// the bundle of its handshake held (a renewal that keeps the roots, or adds one, changes
/// nothing; removing a root retires every connection made while it was trusted).
/// How long before this proxy's certificate expires a meshed connection made with it takes no
/// new requests, once a renewed certificate is in use (renewal comes at 60-70 % of the
/// lifetime, so long before). It also absorbs that much clock difference between the two
/// proxies' nodes.
const HANDOVER: Duration = Duration::from_secs(10);

struct Trust {
    /// The earlier notAfter of this proxy's certificate and the peer's.
    until: SystemTime,
    /// This proxy's certificate's notAfter, when the peer closes the connection.
    own_until: SystemTime,
    /// This proxy's credentials when the connection was made.
    made_with: Arc<Credentials>,
    /// The latest credentials found to keep `made_with`'s roots (so the roots are compared once
    /// per renewal, not per request).
    checked: Arc<Credentials>,
}

impl Trust {
    fn new(made_with: Arc<Credentials>, peer_not_after: Option<SystemTime>) -> Self {
        let own = made_with.leaf.not_after();
        Trust {
            until: peer_not_after.map_or(own, |peer| peer.min(own)),
            own_until: own,
            checked: made_with.clone(),
            made_with,
        }
    }

    /// Whether the connection may take a new request at `now`, given this proxy's credentials
    /// now (`None`: it has none valid).
    fn holds(
        &mut self,
        now: SystemTime,
        current: Option<&Arc<Credentials>>,
    ) -> Result<(), &'static str> {
        if now >= self.until {
            return Err("a certificate of its handshake expired");
        }
        let current = current.ok_or("this proxy has no valid certificate")?;
        // The peer closes the connection (GOAWAY) when this proxy's certificate expires, by its
        // own clock; a request sent just before would race it and be refused. With a renewed
        // certificate in hand, hand over early: new requests go on a connection made with it.
        if !Arc::ptr_eq(current, &self.made_with) && now + HANDOVER >= self.own_until {
            return Err("its certificate is about to expire and a renewed one is in use");
        }
        if Arc::ptr_eq(current, &self.checked) {
            return Ok(());
        }
        let roots = current.bundle.roots();
        if self
            .made_with
            .bundle
            .roots()
            .iter()
            .all(|root| roots.contains(root))
        {
            self.checked = current.clone();
            Ok(())
        } else {
            Err("a root it was made under left the trust bundle")
        }
    }
}

/// A request that failed; `unsent` holds it when none of it was written, so it can be sent again
/// as it is (its body untouched).
pub struct SendError {
    pub error: ProxyError,
    pub unsent: Option<Request<RequestBody>>,
}

impl SendError {
    /// A request that failed before any of it was written.
    fn unsent(error: ProxyError, req: Request<RequestBody>) -> Self {
        SendError {
            error,
            unsent: Some(req),
        }
    }
}

/// Every HTTP/1 connection slot of the endpoint is busy.
#[derive(Debug)]
pub struct AllBusy;

/// What a response body holds of the endpoint until it ends: hyper's HTTP/1 connection (to hand
/// back) or its HTTP/2 stream (to count). (A direct exchange's body holds its connection itself.)
pub struct Lease {
    conn: Conn,
}

enum Conn {
    Http1(Checkin, http1::SendRequest<RequestBody>),
    Direct,
    Http2(#[allow(dead_code)] Stream),
}

impl Lease {
    fn of(conn: Conn) -> Self {
        Lease { conn }
    }

    /// The body ended cleanly: hyper's HTTP/1 connection goes back to its pool.
    pub fn finish(self) {
        if let Conn::Http1(checkin, tx) = self.conn {
            checkin.checkin_hyper(tx);
        }
    }
}

struct Idle<C> {
    conn: C,
    since: Instant,
}

/// Where an HTTP/1 connection on loan to one response goes back, with the connection slot it
/// holds until then.
pub struct Checkin {
    endpoint: Arc<Endpoint>,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Checkin {
    /// Returns hyper's connection to its pool (and the slot to the endpoint).
    fn checkin_hyper(self, tx: http1::SendRequest<RequestBody>) {
        if tx.is_closed() {
            return;
        }
        self.put_back(|state| &mut state.idle, tx);
    }

    fn put_back<C>(self, list: impl FnOnce(&mut State) -> &mut VecDeque<Idle<C>>, conn: C) {
        let endpoint = &self.endpoint;
        let spawn_reaper = {
            let mut state = endpoint.state.lock().expect("pool lock poisoned");
            list(&mut state).push_back(Idle {
                conn,
                since: Instant::now(),
            });
            !std::mem::replace(&mut state.reaper, true)
        };
        if spawn_reaper {
            tokio::spawn(reap(Arc::downgrade(endpoint), endpoint.key.idle_timeout));
        }
    }
}

impl direct::Pool for Checkin {
    /// Returns a direct connection to its pool (and the slot to the endpoint).
    fn checkin(self, conn: direct::Conn) {
        self.put_back(|state| &mut state.direct, conn);
    }
}

/// Closes idle connections as they pass `idle_timeout`; ends when none are left.
async fn reap(endpoint: Weak<Endpoint>, idle_timeout: Duration) {
    /// Drops the expired (or closed) connections at the front of `list`; says when the next
    /// one expires.
    fn expire<C>(
        list: &mut VecDeque<Idle<C>>,
        now: Instant,
        idle_timeout: Duration,
        closed: impl Fn(&C) -> bool,
    ) -> Option<Instant> {
        while let Some(first) = list.front() {
            if now.duration_since(first.since) >= idle_timeout || closed(&first.conn) {
                list.pop_front();
                trace!("closed idle connection");
            } else {
                break;
            }
        }
        list.front().map(|first| first.since + idle_timeout)
    }
    loop {
        let next = {
            let Some(endpoint) = endpoint.upgrade() else {
                return;
            };
            let mut state = endpoint.state.lock().expect("pool lock poisoned");
            let now = Instant::now();
            let hyper = expire(&mut state.idle, now, idle_timeout, |tx| tx.is_closed());
            let direct = expire(&mut state.direct, now, idle_timeout, |c| !c.is_usable());
            match hyper.into_iter().chain(direct).min() {
                Some(next) => next,
                None => {
                    state.reaper = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

/// A response body from an endpoint: read by hyper's client, or straight off the connection.
pub enum UpstreamBody {
    Hyper(Incoming),
    Direct(direct::Body<Checkin>),
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            UpstreamBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Direct(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Hyper(b) => b.is_end_stream(),
            UpstreamBody::Direct(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Hyper(b) => b.size_hint(),
            UpstreamBody::Direct(b) => b.size_hint(),
        }
    }
}

impl Endpoint {
    pub fn new(key: PoolKey) -> Arc<Self> {
        Self::with_identity(key, None)
    }

    /// An endpoint that presents `identity`'s certificate when it is meshed.
    pub fn with_identity(key: PoolKey, identity: Option<Identity>) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(
            key.max_connections.clamp(1, Semaphore::MAX_PERMITS),
        ));
        Arc::new(Endpoint {
            key,
            identity,
            state: Mutex::default(),
            h2_connect: tokio::sync::Mutex::new(()),
            slots,
        })
    }

    /// A free HTTP/1 connection slot, if this request needs one.
    pub fn try_slot(&self, needs_slot: bool) -> Result<Option<OwnedSemaphorePermit>, AllBusy> {
        // A meshed endpoint multiplexes its requests on HTTP/2: no connection slots.
        if !needs_slot || self.key.wire != Wire::Http1 || self.key.peer.is_some() {
            return Ok(None);
        }
        self.slots
            .clone()
            .try_acquire_owned()
            .map(Some)
            .map_err(|_| AllBusy)
    }

    /// Waits for an HTTP/1 connection slot.
    pub async fn slot(&self) -> OwnedSemaphorePermit {
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("endpoint slots are never closed")
    }

    pub fn addr(&self) -> SocketAddr {
        self.key.addr
    }

    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// Idle HTTP/1 connections held right now.
    pub fn idle_connections(&self) -> usize {
        let state = self.state.lock().expect("pool lock poisoned");
        state.idle.len() + state.direct.len()
    }

    /// Opens a TCP connection, bounded by `connectTimeout`.
    pub async fn connect(&self) -> Result<TcpStream, ProxyError> {
        connect(self.key.addr, self.key.connect_timeout).await
    }

    /// Opens a connection that will carry `alpn`: TCP, then mutual TLS when the endpoint is
    /// meshed (the handshake bounded by `connectTimeout` as well).
    pub async fn connect_io(&self, alpn: Alpn) -> Result<Io, ProxyError> {
        self.connect_trusted(alpn).await.map(|(io, _)| io)
    }

    /// [`Endpoint::connect_io`], and what authenticated the connection when it is meshed.
    async fn connect_trusted(&self, alpn: Alpn) -> Result<(Io, Option<Trust>), ProxyError> {
        let tcp = self.connect().await?;
        let Some(peer) = &self.key.peer else {
            return Ok((Either::Left(tcp), None));
        };
        let addr = self.key.addr;
        let credentials = match &self.identity {
            Some(identity) => identity.current().ok_or_else(|| ProxyError::NoIdentity {
                addr,
                reason: identity.missing_reason(),
            })?,
            None => {
                return Err(ProxyError::NoIdentity {
                    addr,
                    reason: "has no proxy.identity",
                });
            }
        };
        let config = credentials
            .client_for(peer, alpn)
            .map_err(|e| ProxyError::MeshTls {
                addr,
                source: io::Error::other(e),
            })?;
        // The server's identity is checked against `peer`, not a name: the address goes as the
        // server name, which sends no SNI.
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
        match tokio::time::timeout(self.key.connect_timeout, handshake).await {
            Ok(Ok(tls)) => {
                let peer_not_after = herd_identity::peer_not_after(tls.get_ref().1);
                let trust = Trust::new(credentials, peer_not_after);
                Ok((Either::Right(tls), Some(trust)))
            }
            Ok(Err(source)) => Err(ProxyError::MeshTls { addr, source }),
            Err(_) => Err(ProxyError::MeshTls {
                addr,
                source: io::Error::new(io::ErrorKind::TimedOut, "handshake timed out"),
            }),
        }
    }

    /// Sends `req` on a pooled or new connection (HTTP/1 under `slot`). The returned [`Lease`]
    /// must travel with the response body and be finished when it ends. On failure the request
    /// comes back when none of it was sent, so it can go elsewhere as it is.
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<RequestBody>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(Response<UpstreamBody>, Lease), SendError> {
        let wire = match (&self.key.peer, self.key.wire) {
            // Upgrades keep an HTTP/1.1 connection of their own; everything else multiplexes.
            (Some(_), Wire::Http1) if req.headers().contains_key(header::UPGRADE) => Wire::Http1,
            (Some(_), _) => {
                return match for_wire(req, Wire::Http2) {
                    Ok(req) => self.send_h2(req, self.key.wire).await,
                    Err(error) => Err(SendError {
                        error,
                        unsent: None,
                    }),
                };
            }
            (None, wire) => wire,
        };
        match wire {
            Wire::Http1 if self.key.peer.is_none() && direct::eligible(&req) => {
                self.send_direct(req, slot).await
            }
            Wire::Http1 => {
                let body = req.body().progress().cloned();
                // An idle connection the app closed just as it was reused hands the request back
                // unsent: that is the pool's race, not a failure, so try once on a new connection.
                let mut fresh = false;
                loop {
                    let (mut tx, reused) = match self.checkout_h1(fresh).await {
                        Ok(conn) => conn,
                        Err(error) => return Err(SendError::unsent(error, req)),
                    };
                    match tx.try_send_request(req).await {
                        Ok(resp) => {
                            let checkin = Checkin {
                                endpoint: self.clone(),
                                _slot: slot,
                            };
                            return Ok((
                                resp.map(UpstreamBody::Hyper),
                                Lease::of(Conn::Http1(checkin, tx)),
                            ));
                        }
                        Err(mut e) => match e.take_message() {
                            Some(unsent) if reused && !fresh => {
                                debug!(addr = %self.key.addr, "pooled connection closed; retrying on a new one");
                                req = unsent;
                                fresh = true;
                            }
                            unsent => {
                                return Err(SendError {
                                    error: failed(e.into_error(), body.as_ref()),
                                    unsent,
                                });
                            }
                        },
                    }
                }
            }
            Wire::Http2 => self.send_h2(req, Wire::Http2).await,
        }
    }

    /// Sends `req` (in HTTP/2 form) on a shared HTTP/2 connection. A request handed back unsent
    /// is put in `unsent_form` again, for whichever endpoint it goes to next.
    async fn send_h2(
        self: &Arc<Self>,
        req: Request<RequestBody>,
        unsent_form: Wire,
    ) -> Result<(Response<UpstreamBody>, Lease), SendError> {
        let body = req.body().progress().cloned();
        let back = |req: Request<RequestBody>| for_wire(req, unsent_form).ok();
        // A request handed back unsent met a connection that was closing (the peer's GOAWAY, a
        // certificate's end): the pool's race, not a failure, so it gets one more connection.
        let mut req = req;
        let mut again = true;
        loop {
            let (mut tx, stream) = match self.checkout_h2().await {
                Ok(conn) => conn,
                Err(error) => {
                    return Err(SendError {
                        error,
                        unsent: back(req),
                    });
                }
            };
            match tx.try_send_request(req).await {
                Ok(resp) => {
                    return Ok((
                        resp.map(UpstreamBody::Hyper),
                        Lease::of(Conn::Http2(stream)),
                    ));
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if again => {
                        debug!(addr = %self.key.addr, "HTTP/2 connection closing; sending on another");
                        again = false;
                        req = unsent;
                    }
                    unsent => {
                        return Err(SendError {
                            error: failed(e.into_error(), body.as_ref()),
                            unsent: unsent.and_then(back),
                        });
                    }
                },
            }
        }
    }

    /// Sends `req` (which must be [`direct::eligible`]) from this task, on a pooled or new
    /// connection.
    async fn send_direct(
        self: &Arc<Self>,
        req: Request<RequestBody>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<(Response<UpstreamBody>, Lease), SendError> {
        let mut fresh = false;
        loop {
            let (mut conn, reused) = match self.checkout_direct(fresh).await {
                Ok(conn) => conn,
                Err(error) => return Err(SendError::unsent(error, req)),
            };
            match direct::exchange(&mut conn, &req).await {
                Ok(head) => {
                    let checkin = Checkin {
                        endpoint: self.clone(),
                        _slot: slot,
                    };
                    let body = direct::Body::new(conn, &head, checkin);
                    let resp = Response::from_parts(head.parts, UpstreamBody::Direct(body));
                    return Ok((resp, Lease::of(Conn::Direct)));
                }
                // A pooled connection the app closed just as it was reused fails before a
                // response byte arrives: that is the pool's race, not a failure. Once, on a new
                // connection, send again what the app cannot have seen, or what is safe to
                // send twice.
                Err(failed)
                    if reused
                        && !fresh
                        && !failed.received
                        && (!failed.written || is_idempotent(req.method())) =>
                {
                    debug!(addr = %self.key.addr, error = %failed.error, "pooled connection closed; retrying on a new one");
                    fresh = true;
                }
                Err(failed) => {
                    return Err(SendError {
                        error: ProxyError::Upstream(failed.error.into()),
                        unsent: (!failed.written).then_some(req),
                    });
                }
            }
        }
    }

    /// The most recently used idle connection of `list`, taken out of the pool.
    fn pop_idle<C>(&self, list: impl FnOnce(&mut State) -> &mut VecDeque<Idle<C>>) -> Option<C> {
        let mut state = self.state.lock().expect("pool lock poisoned");
        list(&mut state).pop_back().map(|idle| idle.conn)
    }

    /// A connection for a direct exchange: the most recently used idle one still open unless
    /// `fresh`, else a new one. Also says whether it was reused.
    async fn checkout_direct(&self, fresh: bool) -> Result<(direct::Conn, bool), ProxyError> {
        if !fresh {
            while let Some(conn) = self.pop_idle(|state| &mut state.direct) {
                if conn.is_usable() {
                    return Ok((conn, true));
                }
            }
        }
        // Opening a connection is the rare path: boxed, so every request's future stays small.
        let io = Box::pin(self.connect()).await?;
        Ok((direct::Conn::new(io), false))
    }

    /// An HTTP/1 connection: the most recently used idle one unless `fresh`, else a new one.
    /// Also says whether it was reused.
    async fn checkout_h1(
        &self,
        fresh: bool,
    ) -> Result<(http1::SendRequest<RequestBody>, bool), ProxyError> {
        if !fresh {
            while let Some(mut tx) = self.pop_idle(|state| &mut state.idle) {
                // A connection whose response just ended may need a moment to become ready; one the
                // app closed reports an error here and is dropped.
                if tx.ready().await.is_ok() {
                    return Ok((tx, true));
                }
            }
        }
        // Opening a connection is the rare path: boxed, so every request's future stays small.
        Box::pin(self.open_h1()).await.map(|tx| (tx, false))
    }

    /// Opens a new HTTP/1 connection and spawns the task that drives it.
    async fn open_h1(&self) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        let io = TokioIo::new(self.connect_io(Alpn::Http1).await?);
        let (tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(ProxyError::Handshake)?;
        let addr = self.key.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                debug!(%addr, %error, "upstream connection ended");
            }
        });
        Ok(tx)
    }

    async fn checkout_h2(&self) -> Result<(http2::SendRequest<RequestBody>, Stream), ProxyError> {
        if let Some(shared) = self.shared_h2() {
            return Ok(shared);
        }
        Box::pin(self.open_h2()).await
    }

    /// Opens another HTTP/2 connection (one at a time: a burst of requests shares it).
    async fn open_h2(&self) -> Result<(http2::SendRequest<RequestBody>, Stream), ProxyError> {
        let _connecting = self.h2_connect.lock().await;
        if let Some(shared) = self.shared_h2() {
            return Ok(shared);
        }
        let (io, trust) = self.connect_trusted(Alpn::H2).await?;
        let io = TokioIo::new(io);
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(ProxyError::Handshake)?;
        let (count, stream) = Streams::with_first();
        tokio::spawn(streams::drive(
            conn,
            count.clone(),
            self.key.idle_timeout,
            self.key.addr,
        ));
        self.state
            .lock()
            .expect("pool lock poisoned")
            .h2
            .push(H2Conn {
                tx: tx.clone(),
                streams: count,
                trust,
            });
        Ok((tx, stream))
    }

    /// An open HTTP/2 connection with room for another stream.
    fn shared_h2(&self) -> Option<(http2::SendRequest<RequestBody>, Stream)> {
        // Only a meshed endpoint's connections have certificates to outlive.
        let (now, current) = match &self.identity {
            Some(identity) if self.key.peer.is_some() => (SystemTime::now(), identity.current()),
            _ => (SystemTime::UNIX_EPOCH, None),
        };
        let addr = self.key.addr;
        let mut state = self.state.lock().expect("pool lock poisoned");
        state.h2.retain_mut(|c| {
            if c.tx.is_closed() || c.streams.is_closing() {
                return false;
            }
            let Some(trust) = &mut c.trust else {
                return true;
            };
            match trust.holds(now, current.as_ref()) {
                Ok(()) => true,
                Err(why) => {
                    debug!(%addr, why, "meshed HTTP/2 connection retired: new requests open another");
                    false
                }
            }
        });
        let max = self.key.max_concurrent_streams;
        state
            .h2
            .iter()
            .find_map(|c| c.streams.open(max).map(|stream| (c.tx.clone(), stream)))
    }
}

/// HTTP/1 endpoints get origin-form (`/path?q`) with a `Host` header; HTTP/2 endpoints get an
/// absolute URI, whose authority becomes `:authority`. Either way the app is told one authority:
/// the one the request was routed by (see `crate::http::authority`). A target's authority (absolute-form,
/// `:authority`) replaces any `Host` the client sent (RFC 9112 §3.2.2), and an HTTP/2 endpoint
/// gets no `host` beside its `:authority`.
pub fn for_wire(
    mut req: Request<RequestBody>,
    wire: Wire,
) -> Result<Request<RequestBody>, ProxyError> {
    match wire {
        Wire::Http1 => {
            *req.version_mut() = Version::HTTP_11;
            if let Some(authority) = req.uri().authority().cloned() {
                let host = req.headers().get(header::HOST).map(HeaderValue::as_bytes);
                if host != Some(authority.as_str().as_bytes()) {
                    let host = HeaderValue::from_str(authority.as_str())
                        .map_err(|_| ProxyError::InvalidAuthority)?;
                    req.headers_mut().insert(header::HOST, host);
                }
                let pq = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::from(pq);
            }
        }
        Wire::Http2 => {
            *req.version_mut() = Version::HTTP_2;
            if req.uri().authority().is_none() {
                let host = req
                    .headers()
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("localhost");
                let pq = req
                    .uri()
                    .path_and_query()
                    .cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/"));
                *req.uri_mut() = Uri::builder()
                    .scheme(Scheme::HTTP)
                    .authority(host)
                    .path_and_query(pq)
                    .build()
                    .map_err(|_| ProxyError::InvalidAuthority)?;
            }
            req.headers_mut().remove(header::HOST);
        }
    }
    Ok(req)
}

/// Whether `method` is idempotent (RFC 9110 §9.2.2): sending it twice has the effect of sending
/// it once, so a request the app may have seen can be sent again. Used here for the pool's race,
/// and by [`crate::retry`].
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// What an exchange through hyper's client that failed with `error` was. When the request's
/// streamed `body` broke on the client's side, the exchange failed because of it, whatever the
/// connection reports (over HTTP/1 it fails as a whole, over HTTP/2 the app's stream is reset):
/// that is the client's failure, which says nothing about the endpoint.
fn failed(error: hyper::Error, body: Option<&BodyProgress>) -> ProxyError {
    match body.and_then(BodyProgress::broken) {
        Some(broken) => ProxyError::ClientBody(broken.clone()),
        None => ProxyError::upstream(error),
    }
}

/// Opens a TCP connection to `addr` within `timeout`, with Nagle off (the proxy writes whole
/// messages; delaying small ones only adds latency).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(ProxyError::connect(addr, e)),
        Err(_) => return Err(ProxyError::ConnectTimeout { addr, timeout }),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

#[cfg(test)]
mod tests;
