//! A fleet of upstream endpoints that say who they are, for balancing and health tests.
//!
//! Each [`Endpoint`] is an in-test HTTP/1.1 server with a short id (`"a"`, `"slow"`): it answers
//! every request with that id as the body and in an `x-endpoint` header, so a client can tell
//! where a request landed, and it counts what it served, so the test can also ask the upstream
//! side. An endpoint can be made slow ([`Builder::delay`]) or sick ([`Builder::status`]), any
//! request can ask to be held (`/sleep/MS` adds MS milliseconds), and an endpoint can be
//! stopped (its port then refuses connections) and started again on the same address:
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
use std::time::Duration;

use http::{HeaderValue, StatusCode};

use crate::TIMEOUT;
use crate::server::{self, Server, reply};

/// The header every [`Endpoint`] names itself in.
pub const HEADER: &str = "x-endpoint";

/// An endpoint being configured; [`Builder::start`] runs it.
#[must_use]
pub struct Builder {
    id: String,
    delay: Duration,
    status: u16,
    addr: Option<SocketAddr>,
}

/// An endpoint with id `id`: answers `200 id` at once, on a fresh `127.0.0.1` port.
pub fn endpoint(id: &str) -> Builder {
    Builder {
        id: id.to_owned(),
        delay: Duration::ZERO,
        status: 200,
        addr: None,
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

    /// Binds `addr` instead of a fresh port: another loopback address (`127.0.0.2:P`, `[::1]:P`)
    /// or the address of an endpoint the test stopped.
    pub fn on(mut self, addr: SocketAddr) -> Self {
        self.addr = Some(addr);
        self
    }

    pub async fn start(self) -> Endpoint {
        let Builder {
            id,
            delay,
            status,
            addr,
        } = self;
        let status = StatusCode::from_u16(status).expect("a valid status");
        let handler = {
            let id = id.clone();
            move |req: http::Request<hyper::body::Incoming>| {
                let id = id.clone();
                async move {
                    let hold = req
                        .uri()
                        .path()
                        .strip_prefix("/sleep/")
                        .and_then(|ms| ms.parse().ok())
                        .map(Duration::from_millis)
                        .unwrap_or_default();
                    let wait = delay + hold;
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                    let mut response = reply::text_owned(id.clone());
                    *response.status_mut() = status;
                    response.headers_mut().insert(
                        HEADER,
                        HeaderValue::from_str(&id).expect("an endpoint id is a header value"),
                    );
                    response
                }
            }
        };
        let server = match addr {
            Some(addr) => server::http1_on(addr, handler).await,
            None => server::http1(handler).await,
        };
        Endpoint { id, server }
    }
}

/// A running endpoint; stops (its port refuses connections) when dropped.
pub struct Endpoint {
    id: String,
    server: Server,
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
