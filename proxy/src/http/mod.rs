//! HTTP connections: serve a client connection with hyper and proxy each request.
//!
//! HTTP/1 is served with keep-alive and pipelining (answers in order), a deadline for each request
//! head (`headerTimeout`: a client trickling its headers is closed) and a cap on its size
//! (`maxHeaderBytes`: 431 beyond it). hyper answers malformed requests with 400 and closes. HTTP/2
//! is served with prior knowledge (h2c). HTTP/1 bytes pass a [`framing`] guard on their way to
//! hyper, which refuses requests framed two ways (request smuggling). Every request, on either
//! listener and in either version, must name one authority, once, validly ([`authority`]); the
//! app is told that one. `CONNECT` ([`connect`]) and absolute-form requests may not name the
//! proxy's own listeners ([`own`]). When the drain starts, HTTP/1 connections finish the
//! request in flight and close (`Connection: close`); HTTP/2 connections send GOAWAY and finish
//! their streams.

mod authority;
mod connect;
mod forward;
pub mod framing;
pub mod headers;
pub(crate) mod own;

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};

use herd_config::{AccessLogFormat, Downstream};
use herd_identity::SpiffeId;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tracing::debug;

use crate::access_log::AccessLog;
use crate::drain::Drain;
use crate::errors::ProxyError;
use crate::listen::Direction;
use crate::metrics::{Authorizations, Metrics};
use crate::response::ResponseBody;
use crate::snapshot::Snapshot;
use framing::{Conflict, FramingGuard};

/// What every request on one client connection shares.
pub struct ConnCtx {
    pub direction: Direction,
    pub client: SocketAddr,
    /// The client's SPIFFE ID when it came over mutual TLS (inbound only).
    pub client_identity: Option<Arc<SpiffeId>>,
    /// The same as a header value, made once per connection (`clientIdentityHeader`).
    pub client_identity_value: Option<http::HeaderValue>,
    /// The inbound port the client connected to, as authorization policies name it (the
    /// original destination's in transparent mode, else the listener's).
    pub port: u16,
    /// When the client's certificate expires (mutual TLS): the connection takes no new request
    /// after that (it is shut down gracefully).
    pub expires: Option<tokio::time::Instant>,
    /// This connection's authorization counters, resolved at its first decision.
    pub authorizations: OnceLock<Authorizations>,
    pub metrics: Metrics,
    /// The client's address as an `X-Forwarded-For` element.
    pub forwarded_for: http::HeaderValue,
    pub drain: Drain,
    /// Whether the client speaks HTTP/2.
    pub http2: bool,
    /// Give requests without `x-request-id` one.
    pub request_id: bool,
    /// Where and how to log each request, when the listener logs.
    pub access_log: Option<(AccessLog, AccessLogFormat)>,
    /// Where a connection redirected by iptables was going (transparent mode): inbound, the
    /// app address its requests go to; outbound, the service address (`clusterIps`) that routes
    /// them, whatever authority they name.
    pub original_dst: Option<SocketAddr>,
    /// The inbound, outbound and admin listeners' addresses as bound: a request may not name
    /// them as its destination (nor an opaque service's listener, which the snapshot lists).
    pub own_listeners: Arc<[SocketAddr]>,
}

/// The per-connection service hyper calls for each request.
///
/// It caches the connection's current snapshot and swaps it only when the watch channel says a
/// new one was published: the common case costs one atomic load and one reference-count
/// increment, with no lock. (hyper drives a connection's requests from one task, so a `RefCell`
/// suffices.)
pub struct ConnService {
    ctx: Arc<ConnCtx>,
    snapshot: RefCell<(watch::Receiver<Arc<Snapshot>>, Weak<Snapshot>)>,
    /// HTTP/1: requests seen so far, and which one (if any) the framing guard refused.
    requests: Cell<u64>,
    conflict: Option<Arc<Conflict>>,
}

impl ConnCtx {
    /// Checks an inbound request against the authorization policy in force.
    pub fn authorize(&self, snapshot: &Snapshot) -> Result<(), ProxyError> {
        let identity = self.client_identity.as_deref();
        snapshot
            .authorizer
            .check(self.port, self.client.ip(), identity, || {
                self.authorizations.get_or_init(|| {
                    self.metrics
                        .authorizations(self.port, crate::authorize::client_label(identity))
                })
            })
    }
}

impl ConnService {
    pub fn new(ctx: ConnCtx, mut rx: watch::Receiver<Arc<Snapshot>>) -> Self {
        let current = Arc::downgrade(&rx.borrow_and_update());
        ConnService {
            ctx: Arc::new(ctx),
            snapshot: RefCell::new((rx, current)),
            requests: Cell::new(0),
            conflict: None,
        }
    }

    /// The snapshot in force. The cache holds it weakly, so an idle keep-alive connection does
    /// not keep an old snapshot (its pools, its metric series) alive after a reload; while it is
    /// current the channel holds it, and upgrading the weak reference cannot fail.
    fn snapshot(&self) -> Arc<Snapshot> {
        let mut cache = self.snapshot.borrow_mut();
        let (rx, current) = &mut *cache;
        if !rx.has_changed().unwrap_or(false)
            && let Some(snapshot) = current.upgrade()
        {
            return snapshot;
        }
        let snapshot = rx.borrow_and_update().clone();
        *current = Arc::downgrade(&snapshot);
        snapshot
    }
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, req: Request<Incoming>) -> ResponseFuture {
        let n = self.requests.get() + 1;
        self.requests.set(n);
        if self.conflict.as_ref().is_some_and(|c| c.is(n)) {
            let error = ProxyError::Smuggling;
            debug!(%error, "request refused");
            return Box::pin(std::future::ready(Ok(error.to_response())));
        }
        let snapshot = self.snapshot();
        let ctx = self.ctx.clone();
        Box::pin(async move { Ok(forward::forward(req, &snapshot, &ctx).await) })
    }
}

/// Resolves at `at`, or never. The timer is boxed: only connections with a client certificate
/// have one, and every other connection's task stays a pointer smaller for it.
pub async fn expiry(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
        None => std::future::pending().await,
    }
}

/// Resolves when a connection should take no new request: the drain started, or the client's
/// certificate expired.
async fn stop_taking_requests(drain: &Drain, expires: Option<tokio::time::Instant>) {
    tokio::select! {
        _ = drain.started() => {}
        () = expiry(expires) => {
            debug!("the client's certificate expired: no new requests on its connection");
        }
    }
}

/// Serves one HTTP connection until it ends, draining it when the drain starts (or when the
/// client's certificate expires).
pub async fn serve<I>(
    io: I,
    http2: bool,
    settings: &Downstream,
    service: ConnService,
    drain: &Drain,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if http2 {
        // An HTTP/2 connection's state is several times an HTTP/1 one's: boxed, so the task of
        // every HTTP/1 connection does not reserve room for it.
        Box::pin(serve_h2(io, settings, service, drain)).await;
    } else {
        serve_h1(io, settings, service, drain).await;
    }
}

async fn serve_h2<I>(io: I, settings: &Downstream, service: ConnService, drain: &Drain)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let expires = service.ctx.expires;
    let io = TokioIo::new(io);
    let conn = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop_taking_requests(drain, expires) => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => result,
                _ = drain.deadline() => return,
            }
        }
    };
    if let Err(error) = result {
        debug!(%error, "HTTP/2 connection ended");
    }
}

// serve_h2 and serve_h1 repeat their drain `select!` on purpose: a generic helper holding the
// connection (tried) made every idle HTTP/1 connection's task 1.7 KiB larger (13.5 -> 15.2 KiB
// with 1,000 idle connections), as its future nests another layer around hyper's.
async fn serve_h1<I>(io: I, settings: &Downstream, mut service: ConnService, drain: &Drain)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let expires = service.ctx.expires;
    let (io, conflict) = FramingGuard::new(io, settings.max_header_bytes);
    service.conflict = Some(conflict);
    let io = TokioIo::new(io);
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_timeout)
        .max_header_size(settings.max_header_bytes)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop_taking_requests(drain, expires) => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => result,
                _ = drain.deadline() => return,
            }
        }
    };
    if let Err(error) = result {
        debug!(%error, "HTTP/1 connection ended");
    }
}
