//! Drive many requests through a proxy and count where they landed.
//!
//! [`fire`] sends `n` `GET`s for one authority over `concurrency` keep-alive connections (each
//! connection sends its next request as soon as the last one is answered, like a pool of app
//! threads), and returns a [`Tally`]: every [`Outcome`] with its status, the endpoint that
//! answered (the [`crate::fleet::HEADER`] header), the `herd-proxy-error` header and how long it
//! took. [`Client`] is one such connection, for tests that send requests one by one with
//! headers of their own (a hash key) or with other methods and bodies ([`Client::request`],
//! bodies from [`body`]), and [`send`] one request on a connection of its own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http::Request;
use http_body_util::BodyExt;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::TIMEOUT;

/// How one request ended.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The status, or 0 when no response came (the connection failed or closed).
    pub status: u16,
    /// The endpoint that answered, from its `x-endpoint` header.
    pub endpoint: Option<String>,
    /// The `herd-proxy-error` header, or what went wrong when there was no response.
    pub error: Option<String>,
    pub body: String,
    pub elapsed: Duration,
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        self.status == 200
    }

    /// The `herd-proxy-error` header, lowercased, or `""`.
    pub fn error_text(&self) -> String {
        self.error
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase()
    }
}

/// One keep-alive HTTP/1.1 connection to the proxy; reconnects after a failure.
pub struct Client {
    addr: SocketAddr,
    sender: Option<http1::SendRequest<body::Body>>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Client {
        Client { addr, sender: None }
    }

    /// `GET http://authority{path}` with extra `headers`.
    pub async fn get(&mut self, authority: &str, path: &str, headers: &[(&str, &str)]) -> Outcome {
        self.request("GET", authority, path, headers, body::empty())
            .await
    }

    /// `METHOD http://authority{path}` with extra `headers` and `body` (see [`body`]).
    pub async fn request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: body::Body,
    ) -> Outcome {
        let start = Instant::now();
        let result = crate::within(
            &format!("{method} {authority}{path}"),
            TIMEOUT,
            self.try_request(method, authority, path, headers, body),
        )
        .await;
        match result {
            Ok(mut outcome) => {
                outcome.elapsed = start.elapsed();
                outcome
            }
            Err(error) => {
                self.sender = None;
                Outcome {
                    status: 0,
                    endpoint: None,
                    error: Some(error),
                    body: String::new(),
                    elapsed: start.elapsed(),
                }
            }
        }
    }

    /// Sends `n` requests with `method` to `path` for `authority`, one after another; a
    /// `POST`, `PUT` or `PATCH` carries the body `METHOD i`.
    pub async fn repeat(&mut self, method: &str, authority: &str, path: &str, n: usize) -> Tally {
        let mut tally = Tally::default();
        for i in 0..n {
            let request_body = if matches!(method, "POST" | "PUT" | "PATCH") {
                body::full(format!("{method} {i}"))
            } else {
                body::empty()
            };
            let outcome = self
                .request(method, authority, path, &[], request_body)
                .await;
            tally.outcomes.push(outcome);
        }
        tally
    }

    async fn try_request(
        &mut self,
        method: &str,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: body::Body,
    ) -> Result<Outcome, String> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect to {}: {e}", self.addr))?;
            let _ = stream.set_nodelay(true);
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("a connection");
        sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let mut request = Request::builder()
            .method(method)
            .uri(format!("http://{authority}{path}"))
            .header("host", authority);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(body).expect("request");
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let status = response.status().as_u16();
        let endpoint = header(crate::fleet::HEADER);
        let error = header("herd-proxy-error");
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok(Outcome {
            status,
            endpoint,
            error,
            body: String::from_utf8_lossy(&body).into_owned(),
            elapsed: Duration::ZERO,
        })
    }
}

/// Request bodies for [`Client::request`].
pub mod body {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Empty, Full, StreamBody};
    use hyper::body::Frame;

    use crate::server::BoxError;

    /// A request body of any kind.
    pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

    /// No body at all (what a `GET` sends).
    pub fn empty() -> Body {
        Empty::new().map_err(|never| match never {}).boxed()
    }

    /// `bytes` with a `Content-Length`.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        Full::new(bytes.into())
            .map_err(|never| match never {})
            .boxed()
    }

    /// `bytes` sent `Transfer-Encoding: chunked`, in chunks of `chunk` bytes (no length known
    /// in advance, as a streamed upload).
    pub fn chunked(bytes: impl Into<Bytes>, chunk: usize) -> Body {
        let bytes: Bytes = bytes.into();
        let chunk = chunk.max(1);
        let pieces: Vec<Result<Frame<Bytes>, BoxError>> = (0..bytes.len())
            .step_by(chunk)
            .map(|at| Ok(Frame::data(bytes.slice(at..(at + chunk).min(bytes.len())))))
            .collect();
        StreamBody::new(futures_util::stream::iter(pieces)).boxed()
    }
}

/// `GET http://authority{path}` through `addr` on a connection of its own.
pub async fn send(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Outcome {
    Client::new(addr).get(authority, path, headers).await
}

/// Every outcome of a run (grouped by the connection that sent it).
#[derive(Clone, Debug, Default)]
pub struct Tally {
    pub outcomes: Vec<Outcome>,
}

impl Tally {
    pub fn len(&self) -> usize {
        self.outcomes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.outcomes.is_empty()
    }

    /// Responses per endpoint id (responses without an `x-endpoint` header are not counted).
    pub fn by_endpoint(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for endpoint in self.outcomes.iter().filter_map(|o| o.endpoint.clone()) {
            *counts.entry(endpoint).or_default() += 1;
        }
        counts
    }

    /// The fraction of all requests that endpoint `id` answered.
    pub fn share(&self, id: &str) -> f64 {
        let hits = self
            .outcomes
            .iter()
            .filter(|o| o.endpoint.as_deref() == Some(id))
            .count();
        hits as f64 / self.len().max(1) as f64
    }

    /// Responses per status (0: no response).
    pub fn statuses(&self) -> BTreeMap<u16, usize> {
        let mut counts = BTreeMap::new();
        for outcome in &self.outcomes {
            *counts.entry(outcome.status).or_default() += 1;
        }
        counts
    }

    /// How many got `200`.
    pub fn ok(&self) -> usize {
        self.outcomes.iter().filter(|o| o.is_ok()).count()
    }

    /// The outcomes that were not `200`.
    pub fn failures(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| !o.is_ok()).collect()
    }

    /// Each endpoint's share in percent, for a test's log: `a 33.3%, b 33.0%, ...`.
    pub fn shares(&self) -> String {
        self.by_endpoint()
            .iter()
            .map(|(id, n)| format!("{id} {:.1}%", 100.0 * *n as f64 / self.len().max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Sends `n` `GET /` for `authority` through `addr` over `concurrency` keep-alive connections.
pub async fn fire(addr: SocketAddr, authority: &str, n: usize, concurrency: usize) -> Tally {
    fire_path(addr, authority, "/", n, concurrency).await
}

/// [`fire`] with a path of the test's choosing.
pub async fn fire_path(
    addr: SocketAddr,
    authority: &str,
    path: &str,
    n: usize,
    concurrency: usize,
) -> Tally {
    let next = Arc::new(AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let next = next.clone();
        let authority = authority.to_owned();
        let path = path.to_owned();
        workers.spawn(async move {
            let mut client = Client::new(addr);
            let mut outcomes = Vec::new();
            while next.fetch_add(1, Ordering::SeqCst) < n {
                outcomes.push(client.get(&authority, &path, &[]).await);
            }
            outcomes
        });
    }
    let mut tally = Tally::default();
    while let Some(outcomes) = workers.join_next().await {
        tally
            .outcomes
            .extend(outcomes.expect("a load worker panicked"));
    }
    tally
}
