//! The admin listener: health, configuration, metrics and shutdown, for kubelets, operators and
//! Prometheus.
//!
//! | path | answers |
//! | --- | --- |
//! | `GET /live` | 200 while the process runs |
//! | `GET /ready` | 200 once every listener is bound and a config is loaded; 503 before, and while draining |
//! | `GET /ready?wait=DURATION` | the same, answered as soon as the proxy is ready or after DURATION (at most 10m), whichever comes first: the injector's `postStart` hook, which holds the app's start until the proxy can carry its traffic |
//! | `GET /config` | the configuration in force, its version and file, as JSON |
//! | `GET /endpoints` | every service's endpoints as the balancer sees them: state, load, latency |
//! | `GET /metrics` | Prometheus text |
//! | `POST /shutdown` | 202 and a graceful shutdown, from loopback only (a Job's last step); 403 otherwise |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::balance::load::now_nanos;
use crate::drain::Drain;
use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

#[derive(Clone)]
pub struct Admin {
    pub ready: Arc<AtomicBool>,
    /// False until the first certificate is in, with `proxy.identity`; else true.
    pub certified: Arc<AtomicBool>,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub drain: Drain,
    pub metrics: Metrics,
}

impl Admin {
    /// Serves admin connections until the process exits. (The admin listener keeps answering
    /// while the proxy drains, so probes see `/ready` turn 503.)
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let admin = admin.clone();
                    async move {
                        if req.uri().path() == "/ready"
                            && let Some(wait) = req.uri().query().and_then(wait_param)
                        {
                            match wait {
                                Ok(wait) => admin.wait_ready(wait).await,
                                Err(message) => {
                                    return Ok(text_owned(StatusCode::BAD_REQUEST, message));
                                }
                            }
                        }
                        Ok::<_, Infallible>(admin.handle(req, peer))
                    }
                });
                if let Err(error) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(%error, "admin connection ended");
                }
            });
        }
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
            && self.certified.load(Ordering::Acquire)
            && !self.drain.is_draining()
    }

    /// Returns when the proxy is ready, is draining (it will not turn ready), or after `wait`.
    /// Readiness is a few flags set once, so they are looked at every 50 ms.
    async fn wait_ready(&self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.is_ready() && !self.drain.is_draining() {
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET | &Method::HEAD, "/live") => text(StatusCode::OK, "live\n"),
            (&Method::GET | &Method::HEAD, "/ready") => {
                if self.is_ready() {
                    text(StatusCode::OK, "ready\n")
                } else {
                    text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
                }
            }
            (&Method::GET | &Method::HEAD, "/config") => {
                let snapshot = self.snapshot.borrow().clone();
                let body = serde_json::json!({
                    "version": snapshot.version,
                    "file": snapshot.file,
                    "config": &*snapshot.config,
                });
                let mut resp = Response::new(Full::new(Bytes::from(
                    serde_json::to_vec_pretty(&body).unwrap_or_default(),
                )));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp
            }
            (&Method::GET | &Method::HEAD, "/endpoints") => {
                let snapshot = self.snapshot.borrow().clone();
                json(&endpoints(&snapshot))
            }
            (&Method::GET | &Method::HEAD, "/metrics") => {
                let snapshot = self.snapshot.borrow().clone();
                snapshot.observe_balancers(&self.metrics);
                let mut resp = Response::new(Full::new(Bytes::from(self.metrics.encode())));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                resp
            }
            (&Method::POST, "/shutdown") => {
                if !peer.ip().is_loopback() {
                    return text(
                        StatusCode::FORBIDDEN,
                        "shutdown is accepted from loopback only\n",
                    );
                }
                info!(%peer, "shutdown requested");
                self.drain.start();
                text(StatusCode::ACCEPTED, "shutting down\n")
            }
            (_, "/live" | "/ready" | "/config" | "/endpoints" | "/metrics" | "/shutdown") => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found: try /live, /ready, /config, /endpoints, /metrics, POST /shutdown\n",
            ),
        }
    }
}

/// How often `/ready?wait=` looks at the flags.
const READY_POLL: Duration = Duration::from_millis(50);
/// The longest `/ready?wait=` holds a request.
const READY_WAIT_MAX: Duration = Duration::from_secs(600);

/// The `wait=DURATION` of a query string, if there is one: the duration, or why it is refused.
fn wait_param(query: &str) -> Option<Result<Duration, String>> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("wait="))?;
    Some(match humantime::parse_duration(value) {
        Ok(wait) if wait <= READY_WAIT_MAX => Ok(wait),
        Ok(_) => Err(format!("wait={value}: at most 10m\n")),
        Err(e) => Err(format!("wait={value}: {e}\n")),
    })
}

fn text_owned(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn json(body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(
        serde_json::to_vec_pretty(body).unwrap_or_default(),
    )));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The balancer's view of every service: for operators asking "why does this pod get no
/// traffic?", and for tests.
fn endpoints(snapshot: &Snapshot) -> serde_json::Value {
    let now = now_nanos();
    let services: Vec<serde_json::Value> = snapshot
        .services
        .iter()
        .map(|service| {
            let balancer = &service.balancer;
            let set = balancer.endpoints();
            let endpoints: Vec<serde_json::Value> = set
                .iter()
                .map(|(e, weight)| {
                    serde_json::json!({
                        "address": e.addr().to_string(),
                        "weight": weight,
                        "state": e.health.state(now).as_str(),
                        "inFlight": e.load.in_flight(),
                        "rttMs": e.load.rtt_ns(now, balancer.decay()).map(|ns| ns / 1e6),
                        "consecutiveFailures": e.health.consecutive_failures(),
                        "ejections": e.health.ejections(),
                        "idleConnections": e.endpoint.idle_connections(),
                    })
                })
                .collect();
            serde_json::json!({
                "name": &*service.name,
                "algorithm": balancer.algorithm(),
                "pending": balancer.pending(),
                "endpoints": endpoints,
            })
        })
        .collect();
    serde_json::json!({ "version": snapshot.version, "services": services })
}
