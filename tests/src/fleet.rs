//! A fleet of upstream endpoints that say who they are, for balancing, health and retry tests.
//!
//! Each [`Endpoint`] is an in-test HTTP/1.1 server with a short id (`"a"`, `"slow"`): it answers
//! every request with that id as the body and in an `x-endpoint` header, so a client can tell
//! where a request landed, and it counts what it served, so the test can also ask the upstream
//! side. An endpoint can be made slow ([`Builder::delay`]) or sick ([`Builder::status`]), any
//! request can ask to be held (`/sleep/MS` adds MS milliseconds), and an endpoint can be
//! stopped (its port then refuses connections) and started again on the same address.
//!
//! For retry and hedging tests an endpoint also fails on cue ([`Builder::fail_every`]), reads
//! request bodies at a set pace ([`Builder::read_rate`]), speaks HTTP/2 ([`Builder::http2`]),
//! changes its delay while running ([`Endpoint::set_delay`]), and keeps a [`Seen`] record of
//! every request it finished: method, path, headers, the body's size and [`crate::Digest`], the
//! status it answered, or that the request was cancelled (its connection closed, or its HTTP/2
//! stream reset) before it could answer. Every endpoint reads a request's whole body before it
//! answers (requests without a body are answered as before). An endpoint can also answer with a
//! body of the test's choosing instead of its id ([`Builder::body`]), for tests that count
//! response bytes:
//!
//! ```
//! use std::time::Duration;
//! use herd_tests::fleet;
//!
//! # async fn demo() {
//! let fast = fleet::endpoint("fast").start().await;
//! let slow = fleet::endpoint("slow").delay(Duration::from_millis(50)).start().await;
//! let sick = fleet::endpoint("sick").status(500).start().await;
//! let yaml = fleet::list(&[&fast, &slow, &sick]); // "[127.0.0.1:P1, 127.0.0.1:P2, ...]"
//! # }
//! ```

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;

use crate::server::{self, Server, reply};
use crate::{Digest, TIMEOUT};

/// The header every [`Endpoint`] names itself in.
pub const HEADER: &str = "x-endpoint";

/// An endpoint being configured; [`Builder::start`] runs it.
#[must_use]
pub struct Builder {
    id: String,
    delay: Duration,
    status: u16,
    fail_every: Option<(usize, u16)>,
    read_rate: Option<u64>,
    http2: bool,
    addr: Option<SocketAddr>,
    body: Option<Bytes>,
}

/// An endpoint with id `id`: answers `200 id` at once, on a fresh `127.0.0.1` port.
pub fn endpoint(id: &str) -> Builder {
    Builder {
        id: id.to_owned(),
        delay: Duration::ZERO,
        status: 200,
        fail_every: None,
        read_rate: None,
        http2: false,
        addr: None,
        body: None,
    }
}

impl Builder {
    /// Adds `delay` to every response (a busy or sick pod).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Answers every request with `status` instead of 200 (still naming itself).
    pub fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// Answers every `n`-th request it receives (the `n`-th, the `2n`-th, ...) with `status`,
    /// the others as usual: `fail_every(2, 503)` fails half of them, alternately.
    pub fn fail_every(mut self, n: usize, status: u16) -> Self {
        assert!(n > 0, "fail_every(0, ..) fails nothing; leave it out");
        self.fail_every = Some((n, status));
        self
    }

    /// Reads request bodies at no more than `bytes_per_second` (a slow app), so a client that
    /// sends faster is held back by backpressure, or piles up in whoever buffers.
    pub fn read_rate(mut self, bytes_per_second: u64) -> Self {
        self.read_rate = Some(bytes_per_second);
        self
    }

    /// Speaks HTTP/2 (h2c, prior knowledge) instead of HTTP/1.1: a cancelled request is then a
    /// reset stream on a connection that stays open.
    pub fn http2(mut self) -> Self {
        self.http2 = true;
        self
    }

    /// Binds `addr` instead of a fresh port: another loopback address (`127.0.0.2:P`, `[::1]:P`)
    /// or the address of an endpoint the test stopped.
    pub fn on(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    /// Answers with `body` instead of its id (the `x-endpoint` header still names it).
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    pub async fn start(self) -> Endpoint {
        let Builder {
            id,
            delay,
            status,
            fail_every,
            read_rate,
            http2,
            addr,
            body,
        } = self;
        let status = StatusCode::from_u16(status).expect("a valid status");
        if let Some((_, failure)) = fail_every {
            StatusCode::from_u16(failure).expect("a valid status");
        }
        let state = Arc::new(State {
            delay: Mutex::new(delay),
            received: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let handler = {
            let id = id.clone();
            let state = state.clone();
            move |req: http::Request<hyper::body::Incoming>| {
                let id = id.clone();
                let state = state.clone();
                let body = body.clone();
                let number = state.received.fetch_add(1, Ordering::SeqCst) + 1;
                let status = match fail_every {
                    Some((n, failure)) if number.is_multiple_of(n) => {
                        StatusCode::from_u16(failure).expect("checked at start")
                    }
                    _ => status,
                };
                // Written into the log when the handler's future ends, answered or dropped. Made
                // as the request is handed over, not when the future first runs: hyper may drop
                // the future unpolled when the client closed at once, and that request was
                // counted and cancelled all the same.
                let mut record = Record {
                    state: state.clone(),
                    seen: Some(Seen {
                        method: req.method().to_string(),
                        path: req.uri().path().to_owned(),
                        headers: req.headers().clone(),
                        bytes: 0,
                        digest: Digest::default().value(),
                        status: None,
                        arrived: Instant::now(),
                        ended: Instant::now(),
                    }),
                };
                async move {
                    let hold = req
                        .uri()
                        .path()
                        .strip_prefix("/sleep/")
                        .and_then(|ms| ms.parse().ok())
                        .map(Duration::from_millis)
                        .unwrap_or_default();
                    let Some((bytes, digest)) = read_body(req.into_body(), read_rate).await else {
                        // The body broke off: the client (the proxy) went away mid-request.
                        return reply::status(400);
                    };
                    if let Some(seen) = record.seen.as_mut() {
                        seen.bytes = bytes;
                        seen.digest = digest.value();
                    }
                    let wait = *state.delay.lock().unwrap() + hold;
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    let mut response = match body {
                        Some(body) => reply::bytes(body),
                        None => reply::text_owned(id.clone()),
                    };
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        HEADER,
                        HeaderValue::from_str(&id).expect("an endpoint id is a header value"),
                    );
                    if let Some(seen) = record.seen.as_mut() {
                        seen.status = Some(status.as_u16());
                    }
                    response
                }
            }
        };
        let server = match (addr, http2) {
            (Some(addr), false) => server::http1_on(addr, handler).await,
            (None, false) => server::http1(handler).await,
            (None, true) => server::http2(handler).await,
            (Some(_), true) => panic!("an HTTP/2 endpoint binds a fresh port; leave out on()"),
        };
        Endpoint { id, server, state }
    }
}

/// Reads a request body to its end, at most `rate` bytes a second if given; `None` if it broke
/// off.
async fn read_body(mut body: hyper::body::Incoming, rate: Option<u64>) -> Option<(u64, Digest)> {
    let start = Instant::now();
    let mut bytes = 0u64;
    let mut digest = Digest::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if let Some(data) = frame.data_ref() {
            digest.update(data);
            bytes += data.len() as u64;
            if let Some(rate) = rate {
                let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
    Some((bytes, digest))
}

/// What an endpoint keeps across its requests.
struct State {
    delay: Mutex<Duration>,
    received: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

/// Logs a request when its handler ends: answered, or dropped (cancelled) before it could be.
struct Record {
    state: Arc<State>,
    seen: Option<Seen>,
}

impl Drop for Record {
    fn drop(&mut self) {
        if let Some(mut seen) = self.seen.take() {
            seen.ended = Instant::now();
            self.state.seen.lock().unwrap().push(seen);
        }
    }
}

/// One request an endpoint finished with, answered or cancelled.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    /// The request's headers as they arrived.
    pub headers: HeaderMap,
    /// The request body's size and [`Digest`] value as received.
    pub bytes: u64,
    pub digest: u64,
    /// The status the endpoint answered; `None` when the request was cancelled first (its
    /// connection closed or its stream reset while the endpoint was still reading or waiting).
    pub status: Option<u16>,
    pub arrived: Instant,
    /// When the endpoint answered, or noticed the cancellation.
    pub ended: Instant,
}

impl Seen {
    pub fn cancelled(&self) -> bool {
        self.status.is_none()
    }

    /// Every value of header `name` the request arrived with, as bytes, in order.
    pub fn header_values(&self, name: &str) -> Vec<Vec<u8>> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| v.as_bytes().to_vec())
            .collect()
    }

    /// The request's header `name`, if it arrived exactly once and is text; panics if it
    /// arrived more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let mut values = self.headers.get_all(name).iter();
        let first = values.next()?;
        assert!(
            values.next().is_none(),
            "header {name} arrived more than once: {:?}",
            self.headers
        );
        first.to_str().ok()
    }
}

/// A running endpoint; stops (its port refuses connections) when dropped.
pub struct Endpoint {
    id: String,
    server: Server,
    state: Arc<State>,
}

impl Endpoint {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.server.requests()
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.server.in_flight()
    }

    /// The underlying server, for its other counters.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Changes the delay added to every response from now on.
    pub fn set_delay(&self, delay: Duration) {
        *self.state.delay.lock().unwrap() = delay;
    }

    /// Every request finished so far (answered or cancelled), in the order they finished.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The requests finished so far that were answered.
    pub fn answered(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(|s| !s.cancelled()).collect()
    }

    /// The requests cancelled so far before the endpoint answered them.
    pub fn cancelled(&self) -> Vec<Seen> {
        self.seen().into_iter().filter(Seen::cancelled).collect()
    }

    /// Requests with `method` received so far (finished ones only).
    pub fn seen_with_method(&self, method: &str) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method.eq_ignore_ascii_case(method))
            .collect()
    }

    /// Waits until every request received so far has finished (answered or cancelled), and
    /// returns the log.
    pub async fn settled(&self) -> Vec<Seen> {
        crate::eventually(
            &format!("endpoint {} to finish its requests", self.id),
            TIMEOUT,
            || async {
                let seen = self.seen();
                (seen.len() >= self.requests()).then_some(seen)
            },
        )
        .await
    }

    /// Stops the endpoint and returns once its address refuses connections (every connection
    /// to it is closed too); the address is returned so the test can start another endpoint
    /// there later.
    pub async fn stop(self) -> SocketAddr {
        let addr = self.addr();
        drop(self);
        crate::eventually(
            &format!("{addr} to refuse connections"),
            TIMEOUT,
            || async {
                match tokio::net::TcpStream::connect(addr).await {
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                    _ => None,
                }
            },
        )
        .await;
        addr
    }
}

/// Endpoints as a YAML flow list: `[127.0.0.1:P1, 127.0.0.1:P2]`.
pub fn list(endpoints: &[&Endpoint]) -> String {
    let addrs: Vec<String> = endpoints.iter().map(|e| e.addr().to_string()).collect();
    format!("[{}]", addrs.join(", "))
}

/// Each endpoint's requests so far, as `id: n` pairs.
pub fn counts(endpoints: &[&Endpoint]) -> Vec<(String, usize)> {
    endpoints
        .iter()
        .map(|e| (e.id().to_owned(), e.requests()))
        .collect()
}

/// The authority every [`mesh`] routes to its service `web`.
pub const AUTHORITY: &str = "web.local";

/// A proxy config with an outbound listener and one service, `web` (authority [`AUTHORITY`]),
/// whose settings are `settings`: YAML lines for the service, each in flow style
/// (`"endpoints: [...]\nbalancer: { algorithm: round-robin }"`); indentation is ignored.
pub fn mesh(settings: &str) -> String {
    mesh_with("", settings)
}

/// [`mesh`] for retry, timeout and hedging tests: service `web` over `endpoints` with round
/// robin (attempts alternate predictably; unless `service` names a `balancer:` of its own) and
/// outlier detection off (a failing endpoint stays in rotation, so every retry decision shows),
/// the extra service lines `service` (flow style, one setting a line, may be empty) and
/// `routes`, one flow mapping each (`"{ match: { pathPrefix: / }, retry: { attempts: 2 } }"`).
pub fn routed(endpoints: &[SocketAddr], service: &str, routes: &[&str]) -> String {
    let list: Vec<String> = endpoints.iter().map(SocketAddr::to_string).collect();
    let balancer = if service.contains("balancer:") {
        ""
    } else {
        "balancer: round-robin\n"
    };
    let mut settings = format!(
        "endpoints: [{}]\n{balancer}outlierDetection: {{ consecutiveFailures: 0 }}\n\
         {service}\nroutes:\n",
        list.join(", ")
    );
    for route in routes {
        settings.push_str(&format!("- {route}\n"));
    }
    mesh(&settings)
}

/// The endpoints' addresses, for [`routed`].
pub fn addrs(endpoints: &[&Endpoint]) -> Vec<SocketAddr> {
    endpoints.iter().map(|e| e.addr()).collect()
}

/// [`mesh`] whose resolver is the DNS server at `nameserver` (a [`crate::dns::Dnsmasq`]).
pub fn mesh_resolving(nameserver: SocketAddr, settings: &str) -> String {
    mesh_with(
        &format!("resolver: {{ nameservers: [\"{nameserver}\"] }}"),
        settings,
    )
}

fn mesh_with(proxy_settings: &str, settings: &str) -> String {
    let indent = |text: &str, by: &str| -> String {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| format!("{by}{l}\n"))
            .collect()
    };
    format!(
        "proxy:\n  outbound:\n    listen: $OUTBOUND\n  admin:\n    listen: $ADMIN\n{}\
         services:\n  - name: web\n    authorities: [{AUTHORITY}]\n{}",
        indent(proxy_settings, "  "),
        indent(settings, "    "),
    )
}
