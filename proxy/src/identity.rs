//! Identity: the certificate that names this proxy in the mesh, and keeping it fresh.
//!
//! With `proxy.identity`, the proxy makes an ECDSA P-256 key in memory (never written anywhere,
//! never sent), asks herd-control's identity service to certify it (`Certify`: a CSR naming
//! `proxy.identity.id` and the token read from `tokenFile`), checks that the leaf it gets back
//! verifies against the trust bundle that came with it and names the identity asked for, and
//! publishes the result as [`Credentials`]: the leaf, the key, the bundle and the rustls
//! configurations built from them. It asks again, with a fresh key, at 70 % of the leaf's
//! remaining lifetime (minus up to a tenth of it at random, so a fleet certified together does
//! not renew together); a failed attempt is retried with full-jitter backoff until it succeeds
//! or the leaf expires.
//!
//! Connections take the credentials current when they start, so a renewal changes nothing for
//! connections already open: they keep the configuration (and the certificate) they were
//! established with. An expired leaf is withdrawn ([`Identity::current`] says `None`): strict
//! inbound ports refuse, and meshed endpoints cannot be reached, each with a message that says
//! why, rather than handshakes that fail at the peer for a reason the peer alone sees.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_api::identity::CertifyRequest;
use herd_api::identity::identity_client::IdentityClient;
use herd_config::IdentitySettings;
use herd_identity::{Keypair, Leaf, SpiffeId, TlsConfigError, TrustBundle};
use prometheus::{Gauge, IntCounterVec, Opts};
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::control::channel;
use crate::metrics::Metrics;

/// Bounds one attempt to certify: connecting and the call.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Waits between failed attempts: full jitter up to this cap, doubling from one second.
const RETRY_BASE: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// ALPN a proxy's server side accepts: HTTP/2 first, so a pod pair shares multiplexed
/// connections.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// What a client connection to another proxy will carry, said by ALPN so the server side needs
/// no detection: HTTP/2 (every request that is not an upgrade), HTTP/1.1 (an upgrade: a
/// WebSocket keeps a connection of its own), or bytes (an opaque service).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alpn {
    H2,
    Http1,
    Opaque,
}

impl Alpn {
    fn protocols(self) -> &'static [&'static [u8]] {
        match self {
            Alpn::H2 => &[b"h2"],
            Alpn::Http1 => &[b"http/1.1"],
            Alpn::Opaque => &[],
        }
    }
}

/// What this proxy presents and trusts right now.
pub struct Credentials {
    pub id: SpiffeId,
    pub leaf: Leaf,
    key: Keypair,
    pub bundle: TrustBundle,
    /// For inbound connections: presents the leaf, requires a client certificate from the bundle.
    pub server: Arc<ServerConfig>,
    /// For outbound connections, one per server identity and ALPN (see `herd_identity::tls`).
    clients: Mutex<HashMap<(SpiffeId, Alpn), Arc<ClientConfig>>>,
}

impl Credentials {
    fn new(
        id: SpiffeId,
        leaf: Leaf,
        key: Keypair,
        bundle: TrustBundle,
    ) -> Result<Self, TlsConfigError> {
        let server = herd_identity::server_config(&leaf, &key, &bundle, &ALPN)?;
        Ok(Credentials {
            id,
            leaf,
            key,
            bundle,
            server: Arc::new(server),
            clients: Mutex::default(),
        })
    }

    /// The client configuration that accepts only `server`, offering `alpn`.
    pub fn client_for(
        &self,
        server: &SpiffeId,
        alpn: Alpn,
    ) -> Result<Arc<ClientConfig>, TlsConfigError> {
        let mut clients = self.clients.lock().expect("client configs lock");
        let key = (server.clone(), alpn);
        if let Some(config) = clients.get(&key) {
            return Ok(config.clone());
        }
        let config = Arc::new(herd_identity::client_config(
            &self.leaf,
            &self.key,
            &self.bundle,
            server,
            alpn.protocols(),
        )?);
        clients.insert(key, config.clone());
        Ok(config)
    }

    fn expired(&self, now: SystemTime) -> bool {
        now >= self.leaf.not_after()
    }
}

/// The proxy's identity as it stands, shared by every listener and endpoint.
#[derive(Clone)]
pub struct Identity {
    rx: watch::Receiver<Option<Arc<Credentials>>>,
    /// What herd-control presents (`proxy.identity.controlIdentity`).
    control: Arc<SpiffeId>,
}

impl Identity {
    /// Valid credentials, or `None` before the first certificate and after the last one expired.
    pub fn current(&self) -> Option<Arc<Credentials>> {
        let credentials = self.rx.borrow().clone()?;
        (!credentials.expired(SystemTime::now())).then_some(credentials)
    }

    /// Why there are no credentials, for errors and logs.
    pub fn missing_reason(&self) -> &'static str {
        if self.rx.borrow().is_some() {
            "its certificate expired and could not be renewed"
        } else {
            "it has no certificate yet"
        }
    }

    /// Every certificate from the one in use now on: a receiver that sees each renewal (the
    /// control-plane session reports them). Holds the last one issued even after it expired.
    pub fn renewals(&self) -> watch::Receiver<Option<Arc<Credentials>>> {
        self.rx.clone()
    }

    /// The SPIFFE ID the control plane must present.
    pub fn control_identity(&self) -> &SpiffeId {
        &self.control
    }

    /// Waits until the first certificate is in.
    pub async fn ready(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(Option::is_some).await;
    }

    /// Identity fixed at `credentials`, for tests.
    #[cfg(test)]
    pub fn fixed(credentials: Option<Arc<Credentials>>) -> Self {
        let (tx, rx) = watch::channel(credentials);
        std::mem::forget(tx);
        let control = SpiffeId::parse("spiffe://cluster.local/ns/herd/sa/herd-control")
            .expect("a valid SPIFFE ID");
        Identity {
            rx,
            control: Arc::new(control),
        }
    }
}

/// The proxy's identity metrics.
#[derive(Clone)]
struct IdentityMetrics {
    expiry: Gauge,
    renewals: IntCounterVec,
}

impl IdentityMetrics {
    fn new(metrics: &Metrics) -> Self {
        let expiry = Gauge::new(
            "herd_identity_certificate_expiry_timestamp_seconds",
            "When the proxy's certificate expires (Unix time); 0 before the first.",
        )
        .expect("valid metric");
        let renewals = IntCounterVec::new(
            Opts::new(
                "herd_identity_renewals_total",
                "Attempts to get a certificate from the identity service, by result (ok, error).",
            ),
            &["result"],
        )
        .expect("valid metric");
        metrics.register(Box::new(expiry.clone()));
        metrics.register(Box::new(renewals.clone()));
        for result in ["ok", "error"] {
            renewals.with_label_values(&[result]);
        }
        IdentityMetrics { expiry, renewals }
    }
}

/// Why one attempt to certify failed.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("cannot read the token file {path}: {source}")]
    Token {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot resolve the identity service: {0}")]
    Resolve(std::io::Error),
    #[error("cannot read the trust anchors {path}: {reason}")]
    TrustAnchors { path: String, reason: String },
    #[error("cannot connect to the identity service at {addr}: {}", crate::errors::Chain(.source))]
    Connect {
        addr: std::net::SocketAddr,
        source: tonic::transport::Error,
    },
    #[error("the identity service refused: {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    #[error("no answer from the identity service within {0:?}")]
    Timeout(Duration),
    #[error("cannot make a key or CSR: {0}")]
    Csr(#[from] herd_identity::CsrError),
    #[error("the certificate sent back is unusable: {0}")]
    Answer(String),
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
}

/// Starts keeping this proxy certified; the returned handle sees every renewal.
pub fn start(settings: IdentitySettings, metrics: &Metrics) -> Identity {
    let (tx, rx) = watch::channel(None);
    let metrics = IdentityMetrics::new(metrics);
    let control =
        SpiffeId::parse(&settings.control_identity).expect("validated with the configuration");
    if settings.trust_anchors.is_none() && settings.trust_anchors_pem.is_none() {
        warn!(
            "proxy.identity has no trustAnchors: the token is sent to the identity service in \
             plaintext and the service is not authenticated (fine on loopback only)"
        );
    }
    tokio::spawn(renew_forever(settings, tx, metrics));
    Identity {
        rx,
        control: Arc::new(control),
    }
}

async fn renew_forever(
    settings: IdentitySettings,
    tx: watch::Sender<Option<Arc<Credentials>>>,
    metrics: IdentityMetrics,
) {
    let id = SpiffeId::parse(&settings.id).expect("validated with the configuration");
    let mut failures = 0u32;
    loop {
        match certify(&settings, &id).await {
            Ok(credentials) => {
                failures = 0;
                metrics.renewals.with_label_values(&["ok"]).inc();
                let not_after = credentials.leaf.not_after();
                metrics.expiry.set(unix_seconds(not_after));
                let renew_at =
                    jittered_renewal(&credentials.leaf, SystemTime::now(), fastrand::f64());
                info!(
                    identity = %credentials.id,
                    serial = %credentials.leaf.serial_hex(),
                    not_after = %humantime::format_rfc3339_seconds(not_after),
                    "certificate in use"
                );
                tx.send_replace(Some(Arc::new(credentials)));
                sleep_until(renew_at).await;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                metrics.renewals.with_label_values(&["error"]).inc();
                let held = tx.borrow().clone();
                match held {
                    Some(c) if !c.expired(SystemTime::now()) => {
                        warn!(%error, not_after = %humantime::format_rfc3339_seconds(c.leaf.not_after()), "cannot renew the certificate; the current one stays in use")
                    }
                    Some(_) => {
                        warn!(%error, "cannot renew the certificate, which has expired: mutual TLS is unavailable")
                    }
                    None => {
                        warn!(%error, "cannot get a certificate: mutual TLS is unavailable until one is issued")
                    }
                }
                let cap = RETRY_BASE
                    .saturating_mul(1 << failures.min(16))
                    .min(RETRY_MAX);
                tokio::time::sleep(cap.mul_f64(fastrand::f64())).await;
            }
        }
    }
}

/// One attempt: a fresh key, a CSR, the call, and the answer checked.
async fn certify(settings: &IdentitySettings, id: &SpiffeId) -> Result<Credentials, CertifyError> {
    let token = tokio::fs::read_to_string(&settings.token_file)
        .await
        .map_err(|source| CertifyError::Token {
            path: settings.token_file.clone(),
            source,
        })?;
    let key = Keypair::generate()?;
    let csr = herd_identity::build_csr(&key, id)?;
    let tls = match (&settings.trust_anchors, &settings.trust_anchors_pem) {
        (Some(path), _) => {
            let pem =
                tokio::fs::read_to_string(path)
                    .await
                    .map_err(|e| CertifyError::TrustAnchors {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
            Some(service_tls(&pem, path, &settings.control_identity)?)
        }
        (None, Some(pem)) => Some(service_tls(
            pem,
            "proxy.identity.trustAnchorsPem",
            &settings.control_identity,
        )?),
        (None, None) => None,
    };
    let targets = crate::control::resolve(&settings.target)
        .await
        .map_err(CertifyError::Resolve)?;
    let mut last = CertifyError::Resolve(std::io::Error::other("no address"));
    for addr in targets {
        let request = CertifyRequest {
            csr: csr.clone(),
            token: token.trim().to_owned(),
        };
        let call = async {
            let channel = channel::connect(addr, tls.clone(), ATTEMPT_TIMEOUT, false)
                .await
                .map_err(|source| CertifyError::Connect { addr, source })?;
            IdentityClient::new(channel)
                .certify(request)
                .await
                .map_err(CertifyError::Refused)
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, call).await {
            Ok(Ok(answer)) => return accept(answer.into_inner(), id, key),
            Ok(Err(error)) => last = error,
            Err(_) => last = CertifyError::Timeout(ATTEMPT_TIMEOUT),
        }
    }
    Err(last)
}

/// The TLS client configuration `Certify` goes over with `trustAnchors`: no certificate of
/// this proxy's (it is asking for one), the service's chain checked against the anchors and its
/// SPIFFE ID against `control`.
/// `pem` is the anchors' text, `source` where it came from (a file, or the configuration's
/// `trustAnchorsPem`).
fn service_tls(pem: &str, source: &str, control: &str) -> Result<Arc<ClientConfig>, CertifyError> {
    let anchors = TrustBundle::from_pem(pem).map_err(|e| CertifyError::TrustAnchors {
        path: source.to_owned(),
        reason: e.to_string(),
    })?;
    let control = SpiffeId::parse(control).expect("validated with the configuration");
    let config = herd_identity::tls::anonymous_client_config(&anchors, &control, &[b"h2"])?;
    Ok(Arc::new(config))
}

/// Checks what the identity service sent before anything uses it.
fn accept(
    answer: herd_api::identity::CertifyResponse,
    id: &SpiffeId,
    key: Keypair,
) -> Result<Credentials, CertifyError> {
    let unusable = |what: String| CertifyError::Answer(what);
    if answer.certificate_chain.is_empty() {
        return Err(unusable("no certificate".into()));
    }
    let chain_pem = pem_many("CERTIFICATE", &answer.certificate_chain);
    let leaf = Leaf::from_pem(&chain_pem).map_err(|e| unusable(e.to_string()))?;
    if leaf.id() != id {
        return Err(unusable(format!("it names {} instead of {id}", leaf.id())));
    }
    let bundle = TrustBundle::from_pem(&pem_many("CERTIFICATE", &answer.trust_bundle))
        .map_err(|e| unusable(format!("trust bundle: {e}")))?;
    herd_identity::verify_leaf(&bundle, &leaf, SystemTime::now())
        .map_err(|e| unusable(e.to_string()))?;
    Ok(Credentials::new(id.clone(), leaf, key, bundle)?)
}

fn pem_many(tag: &str, ders: &[Vec<u8>]) -> String {
    let blocks: Vec<pem::Pem> = ders.iter().map(|d| pem::Pem::new(tag, d.clone())).collect();
    pem::encode_many(&blocks)
}

/// 70 % of the way from `received` to the leaf's notAfter, less up to a tenth of that span at
/// random (`draw` in 0..1). Counted from when the leaf arrived rather than from its notBefore:
/// the issuer backdates notBefore for clocks behind its own (5 minutes), which for a short-lived
/// leaf would put 70 % of its validity in the past and renew in a loop.
fn jittered_renewal(leaf: &Leaf, received: SystemTime, draw: f64) -> SystemTime {
    let span = leaf
        .not_after()
        .duration_since(received)
        .unwrap_or_default();
    received + span * 7 / 10 - (span / 10).mul_f64(draw.clamp(0.0, 1.0))
}

async fn sleep_until(at: SystemTime) {
    let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait).await;
}

fn unix_seconds(at: SystemTime) -> f64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

#[cfg(test)]
pub(crate) mod tests;
