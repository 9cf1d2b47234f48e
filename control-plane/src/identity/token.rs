//! Tokens: how a workload proves which identity it may be certified as.
//!
//! The identity service does not care how a token is checked, only which SPIFFE ID it proves, so
//! every way of checking one is an [`Authenticate`]: [`crate::identity::bootstrap`] (a file of
//! tokens, outside a cluster) and [`crate::identity::review`] (Kubernetes' TokenReview API, in
//! one). [`Chain`] asks each in turn; the first that knows the token decides, so a replica can
//! accept bootstrap tokens for machines outside the cluster beside the cluster's own accounts.
//!
//! A token is a bearer secret: no error here repeats it, and nothing logs it.

use futures_util::future::BoxFuture;
use herd_identity::SpiffeId;

/// The longest token accepted, in bytes. A projected ServiceAccount token is about 1 KiB; the
/// bound keeps a hostile caller from making us hash or forward megabytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a token proves no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token was sent")]
    Missing,
    #[error("the token has {0} bytes, more than the limit of {MAX_TOKEN_BYTES}")]
    TooLong(usize),
    /// No authenticator knows the token (for the bootstrap file: it is not in it).
    #[error("the token is not valid here")]
    Unknown,
    /// The Kubernetes API server refused it, with its reason.
    #[error("the token was refused: {0}")]
    Refused(String),
    #[error("the token is not for audience {expected:?} (it is for {got:?})")]
    Audience { expected: String, got: Vec<String> },
    #[error("the token is for {0:?}, not a service account")]
    NotServiceAccount(String),
    #[error("the token's service account {0:?} makes no SPIFFE ID")]
    BadAccount(String),
    /// The token could not be checked now (the API server did not answer); a retry may pass.
    #[error("the token could not be checked: {0}")]
    Unavailable(String),
}

impl TokenError {
    /// The bounded label of `herd_control_certify_refused_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            TokenError::Missing
            | TokenError::TooLong(_)
            | TokenError::Unknown
            | TokenError::Refused(_) => "token",
            TokenError::Audience { .. } => "audience",
            TokenError::NotServiceAccount(_) | TokenError::BadAccount(_) => "not-service-account",
            TokenError::Unavailable(_) => "token-review-unavailable",
        }
    }
}

/// One way of checking tokens.
pub trait Authenticate: Send + Sync {
    /// The identity `token` proves, or why it proves none. [`TokenError::Unknown`] means "not
    /// mine": a [`Chain`] then asks the next authenticator.
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<SpiffeId, TokenError>>;
}

/// Several authenticators, asked in order until one knows the token.
#[derive(Default)]
pub struct Chain {
    links: Vec<Box<dyn Authenticate>>,
}

impl Chain {
    pub fn new() -> Self {
        Chain::default()
    }

    pub fn with(mut self, link: impl Authenticate + 'static) -> Self {
        self.links.push(Box::new(link));
        self
    }

    pub fn is_empty(&self) -> bool {
        self.links.is_empty()
    }
}

impl Authenticate for Chain {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<SpiffeId, TokenError>> {
        Box::pin(async move {
            if token.is_empty() {
                return Err(TokenError::Missing);
            }
            if token.len() > MAX_TOKEN_BYTES {
                return Err(TokenError::TooLong(token.len()));
            }
            for link in &self.links {
                match link.authenticate(token).await {
                    Err(TokenError::Unknown) => continue,
                    decided => return decided,
                }
            }
            Err(TokenError::Unknown)
        })
    }
}
