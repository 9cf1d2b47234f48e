//! The webhook server: HTTPS on `--webhook-listen` (default `0.0.0.0:8443`), `POST /inject`.
//!
//! **Its certificate.** The API server checks the webhook's certificate as any web client does:
//! the host of the webhook's URL (the Service's DNS name, `herd-control.herd.svc`, or the
//! address of a `url:` webhook) must be among its names, and it must chain to the
//! configuration's `caBundle`, which holds herd's trust anchors. So herd-control signs a server
//! certificate for `--webhook-dns-names` (DNS names and IP addresses) with its own CA, as it
//! signs its SPIFFE certificate (`identity::own`): a fresh key in memory, the leaf lifetime,
//! renewed at 70 % of it and whenever the CA files change. Nothing is written to disk and no
//! Secret holds a key.
//!
//! **Each review** is read ([`review::parse`]), its namespace looked up when the pod does not
//! say for itself (a GET of the Namespace with herd-control's Kubernetes client: its
//! `herd.io/inject` annotation, else label), decided ([`plan`]) with the trust anchors in force
//! and answered. Only `CREATE` is injected (a pod's containers cannot change after). A review
//! that cannot be read or a pod that cannot be patched is answered `allowed` without a patch,
//! with a warning, and logged at WARN; the counter `herd_control_injections_total` says how
//! each review went.
//!
//! **Native sidecars** ([`NativeSidecars`]): `auto` asks the API server's `/version` at start
//! and every 10 minutes (an upgrade does not need a restart), and injects native sidecars from
//! 1.29 on (where they are on by default); without a Kubernetes client, or while `/version`
//! has not answered, `auto` injects regular sidecars, which every version runs.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use herd_identity::tls::name_server_config;
use herd_identity::{Keypair, ServerName};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::core::v1::Namespace;
use rustls::ServerConfig;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use super::annotations::INJECT;
use super::patch::{Decision, plan};
use super::review::{self, Malformed};
use super::sidecar::Settings;
use crate::identity::authority::Ca;
use crate::identity::own::{Signed, keep_signed};
use crate::metrics::Metrics;

/// The path reviews are posted to.
pub const PATH: &str = "/inject";
/// The largest review read: a Pod is at most 1.5 MiB in etcd, and the review holds it once
/// (twice for an update).
const MAX_BODY: usize = 4 * 1024 * 1024;
/// Bounds a client's TLS handshake and the reading of its request.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a namespace lookup may take; the API server's own wait for the webhook is 10 s.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);
/// How often `auto` asks the API server's version again.
const VERSION_EVERY: Duration = Duration::from_secs(600);
/// How long the first `/version` answer is waited for.
const FIRST_VERSION: Duration = Duration::from_secs(5);
/// The first minor version of Kubernetes 1 with native sidecars on by default.
const NATIVE_FROM_MINOR: u32 = 29;

/// `--native-sidecars`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeSidecars {
    /// Native from Kubernetes 1.29 on, asked of the API server; regular without a client.
    Auto,
    Always,
    Never,
}

/// Whether a server of this `/version` runs native sidecars (1.29 on); `None` when the version
/// cannot be read. Minor versions such as `29+` (some distributions) count as 29.
pub fn supports_native(major: &str, minor: &str) -> Option<bool> {
    let number = |text: &str| {
        let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u32>().ok()
    };
    let (major, minor) = (number(major)?, number(minor)?);
    Some(major > 1 || (major == 1 && minor >= NATIVE_FROM_MINOR))
}

/// The current choice, kept up to date for `auto` with a client (see the module doc). The
/// first answer is waited for (up to 5 s), so the first pods get the right shape.
pub async fn native_sidecars(
    mode: NativeSidecars,
    client: Option<kube::Client>,
) -> Arc<AtomicBool> {
    let native = Arc::new(AtomicBool::new(mode == NativeSidecars::Always));
    let (NativeSidecars::Auto, Some(client)) = (mode, client) else {
        if mode == NativeSidecars::Auto {
            info!(
                "injector: no Kubernetes client to ask for its version; injecting regular sidecars"
            );
        }
        return native;
    };
    let mut last = None;
    if let Ok(answer) = tokio::time::timeout(FIRST_VERSION, client.apiserver_version()).await {
        last = ask(answer, &native, None);
    }
    let shared = native.clone();
    tokio::spawn(async move {
        loop {
            let wait = if last.is_some() {
                VERSION_EVERY
            } else {
                Duration::from_secs(5)
            };
            tokio::time::sleep(wait).await;
            last = ask(client.apiserver_version().await, &shared, last);
        }
    });
    native
}

/// Sets `native` from a `/version` answer; returns the choice (`last` when there is none).
fn ask(
    answer: Result<k8s_openapi::apimachinery::pkg::version::Info, kube::Error>,
    native: &AtomicBool,
    last: Option<bool>,
) -> Option<bool> {
    match answer {
        Ok(info) => {
            let choice = supports_native(&info.major, &info.minor);
            if choice != last {
                info!(
                    version = %info.git_version,
                    native = choice.unwrap_or(false),
                    "injector: sidecar shape for this API server"
                );
            }
            native.store(choice.unwrap_or(false), Ordering::Release);
            choice.or(last)
        }
        Err(error) => {
            warn!(%error, "injector: cannot read the API server's version");
            last
        }
    }
}

/// Why the webhook's certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot make a key for the webhook certificate: {0}")]
    Key(herd_identity::CsrError),
    #[error("the CA cannot sign the webhook certificate for {names}: {reason}")]
    Issue { names: String, reason: String },
    #[error("cannot build the webhook's TLS configuration: {0}")]
    Tls(herd_identity::TlsConfigError),
}

/// Signs the webhook's certificate for `names` now and keeps it fresh (see the module doc).
pub fn keep_certified(
    ca: watch::Receiver<Arc<Ca>>,
    names: Vec<ServerName>,
    lifetime: Duration,
    metrics: Metrics,
) -> Result<watch::Receiver<Arc<ServerConfig>>, CertError> {
    let shown: Vec<String> = names.iter().map(ToString::to_string).collect();
    let shown = shown.join(", ");
    let sign = move |ca: &Ca| -> Result<Signed, CertError> {
        let key = Keypair::generate().map_err(CertError::Key)?;
        let certificate = ca
            .issuer
            .issue_server(&key, &names, lifetime)
            .map_err(|e| CertError::Issue {
                names: shown.clone(),
                reason: e.to_string(),
            })?;
        let config =
            name_server_config(&certificate, &key, &[b"http/1.1"]).map_err(CertError::Tls)?;
        Ok(Signed {
            config: Arc::new(config),
            not_before: certificate.not_before(),
            not_after: certificate.not_after(),
            serial: String::new(),
        })
    };
    keep_signed("webhook certificate", ca, sign, move |signed| {
        info!(
            not_after = %humantime::format_rfc3339_seconds(signed.not_after),
            "injector: webhook certificate signed"
        );
        metrics.webhook_not_after.set(
            signed
                .not_after
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        );
    })
}

/// What every review is answered with.
#[derive(Clone)]
pub struct Webhook {
    /// The settings; `trust_anchors_pem` is replaced by the bundle in force at each review.
    pub settings: Settings,
    pub ca: watch::Receiver<Arc<Ca>>,
    pub native: Arc<AtomicBool>,
    /// For namespace lookups; without it only a pod's own annotation counts.
    pub client: Option<kube::Client>,
    pub metrics: Metrics,
}

impl Webhook {
    /// Serves HTTPS on `listener` with the configuration `tls` holds at each handshake.
    pub async fn serve(self, listener: TcpListener, tls: watch::Receiver<Arc<ServerConfig>>) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "injector: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(tls.borrow().clone());
            let webhook = self.clone();
            tokio::spawn(async move {
                let stream =
                    match tokio::time::timeout(CLIENT_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            return debug!(%peer, %error, "injector: TLS handshake failed");
                        }
                        Err(_) => return debug!(%peer, "injector: TLS handshake timed out"),
                    };
                let service = service_fn(move |req| {
                    let webhook = webhook.clone();
                    async move { Ok::<_, Infallible>(webhook.handle(req).await) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(CLIENT_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(error) = served {
                    debug!(%peer, %error, "injector: connection ended");
                }
            });
        }
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.uri().path() != PATH {
            return text(
                StatusCode::NOT_FOUND,
                "not found: reviews go to POST /inject\n",
            );
        }
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "POST only\n");
        }
        let body = match tokio::time::timeout(
            CLIENT_TIMEOUT,
            Limited::new(req.into_body(), MAX_BODY).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(error)) => {
                return self.malformed(&Malformed {
                    uid: None,
                    reason: format!("the body could not be read: {error}"),
                });
            }
            Err(_) => {
                return self.malformed(&Malformed {
                    uid: None,
                    reason: "the body did not arrive in time".into(),
                });
            }
        };
        let request = match review::parse(&body) {
            Ok(request) => request,
            Err(malformed) => return self.malformed(&malformed),
        };
        let decision = self.decide(&request).await;
        let pod = request.pod_name();
        let result = match &decision {
            Decision::Inject(_) => {
                info!(%pod, "injector: proxy added");
                "injected"
            }
            Decision::AlreadyInjected => {
                debug!(%pod, "injector: already injected");
                "already-injected"
            }
            Decision::NotWanted(why) => {
                debug!(%pod, why, "injector: not injected");
                "not-wanted"
            }
            Decision::Refused(why) => {
                warn!(%pod, "injector: not injected: {why}");
                "refused"
            }
        };
        self.metrics.injections.with_label_values(&[result]).inc();
        json(&review::respond(&request.uid, &decision))
    }

    fn malformed(&self, malformed: &Malformed) -> Response<Full<Bytes>> {
        warn!(uid = ?malformed.uid, "injector: review not understood: {}", malformed.reason);
        self.metrics
            .injections
            .with_label_values(&["malformed"])
            .inc();
        json(&review::respond_malformed(malformed))
    }

    /// The decision for a review's pod: its namespace looked up if needed, the trust anchors
    /// and sidecar shape in force.
    pub async fn decide(&self, request: &review::Request) -> Decision {
        if request.operation != "CREATE" {
            return Decision::NotWanted("only pod creation is injected");
        }
        let own = request
            .object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(INJECT))
            .is_some();
        let namespace = match (&request.namespace, own) {
            (Some(name), false) => match self.namespace_says(name).await {
                Ok(says) => says,
                Err(why) => return Decision::Refused(why),
            },
            _ => None,
        };
        let mut settings = self.settings.clone();
        settings.trust_anchors_pem = self.ca.borrow().bundle.to_pem();
        settings.native_sidecars = self.native.load(Ordering::Acquire);
        plan(&request.object, namespace.as_deref(), &settings)
    }

    /// What namespace `name` says of injection (its `herd.io/inject` annotation, else label).
    async fn namespace_says(&self, name: &str) -> Result<Option<String>, String> {
        let Some(client) = &self.client else {
            return Ok(None);
        };
        let api: kube::Api<Namespace> = kube::Api::all(client.clone());
        let namespace = match tokio::time::timeout(LOOKUP_TIMEOUT, api.get_opt(name)).await {
            Ok(Ok(namespace)) => namespace,
            Ok(Err(error)) => return Err(format!("cannot read namespace {name}: {error}")),
            Err(_) => {
                return Err(format!(
                    "cannot read namespace {name}: no answer within {LOOKUP_TIMEOUT:?}"
                ));
            }
        };
        let Some(namespace) = namespace else {
            return Ok(None);
        };
        let metadata = namespace.metadata;
        Ok(metadata
            .annotations
            .and_then(|mut a| a.remove(INJECT))
            .or_else(|| metadata.labels.and_then(|mut l| l.remove(INJECT))))
    }
}

fn json(value: &Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec(value).expect("JSON serializes"),
        )))
        .expect("valid response")
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("valid response")
}
