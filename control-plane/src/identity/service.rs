//! The `Certify` call: CSR and token in, leaf chain and trust bundle out.
//!
//! The steps, cheapest and least trusting first:
//!
//! 1. the CSR is inspected ([`herd_identity::inspect_csr`]): bounded in size before parsing, its
//!    self-signature verified, anything beyond its key and one SPIFFE URI refused. This comes
//!    before the token so that garbage never costs a TokenReview round trip to the API server;
//! 2. the token is checked ([`Authenticate`]), which yields the identity it proves;
//! 3. the issuer signs, refusing a CSR that names any identity but that one, and setting every
//!    security-relevant field itself ([`herd_identity::Issuer::issue`]);
//! 4. the answer carries the chain, every root of the bundle in force, and the leaf's notAfter.
//!
//! Every refusal is counted by a bounded reason and logged with the caller's address and what
//! was wrong; never with the token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use herd_api::identity::identity_server::Identity;
use herd_api::identity::{CertifyRequest, CertifyResponse};
use herd_identity::{CsrError, CsrLimits, IssueError, Leaf, SpiffeId, inspect_csr};
use tokio::sync::watch;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::identity::authority::Ca;
use crate::identity::token::{Authenticate, TokenError};
use crate::metrics::Metrics;

/// The identity service of one herd-control replica.
#[derive(Clone)]
pub struct IdentityService {
    ca: watch::Receiver<Arc<Ca>>,
    tokens: Arc<dyn Authenticate>,
    lifetime: Duration,
    limits: CsrLimits,
    metrics: Metrics,
}

/// A signed leaf and the bundle it goes out with.
#[derive(Debug)]
pub struct Certified {
    pub leaf: Leaf,
    /// Every root of the bundle in force, DER.
    pub bundle: Vec<Vec<u8>>,
}

/// Why a `Certify` call was refused.
#[derive(Debug, thiserror::Error)]
pub enum CertifyError {
    #[error("{0}")]
    Csr(#[from] CsrError),
    #[error("{0}")]
    Token(#[from] TokenError),
    #[error("{0}")]
    Issue(#[from] IssueError),
}

impl CertifyError {
    /// The bounded label of `herd_control_certify_refused_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            CertifyError::Csr(_) => "csr",
            CertifyError::Token(e) => e.reason(),
            CertifyError::Issue(IssueError::IdentityMismatch { .. }) => "identity",
            CertifyError::Issue(_) => "issuer",
        }
    }

    /// The gRPC status the caller gets; its message is this error's, which never holds a token.
    pub fn status(&self) -> Status {
        let message = self.to_string();
        match self {
            CertifyError::Csr(CsrError::Crypto(_)) => Status::internal(message),
            CertifyError::Csr(_) => Status::invalid_argument(message),
            CertifyError::Token(TokenError::Unavailable(_)) => Status::unavailable(message),
            CertifyError::Token(_) => Status::unauthenticated(message),
            CertifyError::Issue(IssueError::IdentityMismatch { .. }) => {
                Status::permission_denied(message)
            }
            CertifyError::Issue(IssueError::IssuerExpired { .. }) => Status::unavailable(message),
            CertifyError::Issue(_) => Status::internal(message),
        }
    }
}

impl IdentityService {
    pub fn new(
        ca: watch::Receiver<Arc<Ca>>,
        tokens: Arc<dyn Authenticate>,
        lifetime: Duration,
        metrics: Metrics,
    ) -> Self {
        IdentityService {
            ca,
            tokens,
            lifetime,
            limits: CsrLimits::default(),
            metrics,
        }
    }

    /// The steps of the module doc, without gRPC.
    pub async fn certify(&self, csr: &[u8], token: &str) -> Result<Certified, CertifyError> {
        let request = inspect_csr(csr, &self.limits)?;
        let proven: SpiffeId = self.tokens.authenticate(token).await?;
        let ca = self.ca.borrow().clone();
        let leaf = ca.issuer.issue(&request, &proven, self.lifetime)?;
        Ok(Certified {
            leaf,
            bundle: ca.bundle.roots().iter().map(|r| r.to_vec()).collect(),
        })
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn certify(
        &self,
        request: Request<CertifyRequest>,
    ) -> Result<Response<CertifyResponse>, Status> {
        let peer = request
            .extensions()
            .get::<crate::accept::Peer>()
            .and_then(|p| p.addr)
            .map_or_else(|| "unknown".to_owned(), |a: SocketAddr| a.to_string());
        let CertifyRequest { csr, token } = request.into_inner();
        match IdentityService::certify(self, &csr, &token).await {
            Ok(Certified { leaf, bundle }) => {
                self.metrics.certificates_issued.inc();
                let not_after = leaf
                    .not_after()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64);
                info!(
                    %peer,
                    identity = %leaf.id(),
                    serial = %leaf.serial_hex(),
                    not_after = %humantime::format_rfc3339_seconds(leaf.not_after()),
                    "certificate issued"
                );
                Ok(Response::new(CertifyResponse {
                    certificate_chain: leaf.chain().iter().map(|c| c.to_vec()).collect(),
                    trust_bundle: bundle,
                    not_after,
                }))
            }
            Err(refused) => {
                let reason = refused.reason();
                self.metrics
                    .certify_refused
                    .with_label_values(&[reason])
                    .inc();
                warn!(%peer, reason, error = %refused, "certify refused");
                Err(refused.status())
            }
        }
    }
}
