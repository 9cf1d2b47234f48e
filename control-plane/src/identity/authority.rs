//! The CA's files: the issuer (certificate and key) and the trust bundle, loaded together.
//!
//! The three come from files an operator (or `herdctl install`, or a Kubernetes Secret mounted
//! as a volume) provides, and are read again when they change (see `files`), so the CA can be
//! rotated without a restart: add the new root to the bundle, wait for every proxy to have
//! renewed (and so to hold the new bundle), switch the issuer to the new root's key and
//! certificate, wait one leaf lifetime, remove the old root.
//!
//! One rule holds the steps together: the bundle must trust what the issuer signs. Each load
//! signs a throwaway leaf with the issuer and verifies it against the bundle exactly as a peer
//! would (chain, validity, key usage), which also covers an intermediate issuer whose root is the
//! one in the bundle. A bundle that would leave the CA's own leaves untrusted is refused: at
//! start, herd-control exits; on a reload, the files' last good version stays in force and the
//! refusal is logged, so a rotation done in the wrong order is caught before any proxy fails.
//! Without a bundle file the bundle is the issuer's own certificate.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use herd_identity::{
    BundleError, CsrLimits, Issuer, IssuerError, Keypair, LeafVerifyError, SpiffeId, TrustBundle,
    build_csr, inspect_csr, verify_leaf,
};

/// Where the CA's files are.
#[derive(Debug, Clone)]
pub struct CaFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The trust bundle; `None`: the issuer's certificate alone.
    pub bundle: Option<PathBuf>,
    pub trust_domain: String,
}

/// A loaded issuer and the bundle it is handed out with.
#[derive(Debug)]
pub struct Ca {
    pub issuer: Issuer,
    pub bundle: TrustBundle,
}

/// Why the CA's files cannot be used (one line, naming the file at fault).
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{cert}, {key}: {source}")]
    Issuer {
        cert: String,
        key: String,
        source: IssuerError,
    },
    #[error("{path}: {source}")]
    Bundle { path: String, source: BundleError },
    #[error(
        "the trust bundle {bundle} does not trust the CA certificate {cert} (add its root to the bundle first): {source}"
    )]
    Untrusted {
        bundle: String,
        cert: String,
        source: LeafVerifyError,
    },
    #[error("the CA certificate {cert} cannot sign a leaf: {reason}")]
    CannotIssue { cert: String, reason: String },
}

impl CaFiles {
    /// Every file this CA reads, for the watcher.
    pub fn paths(&self) -> Vec<PathBuf> {
        [Some(&self.cert), Some(&self.key), self.bundle.as_ref()]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Reads and checks the files (see the module doc).
    pub fn load(&self) -> Result<Ca, CaError> {
        let cert_pem = read(&self.cert)?;
        let key_pem = read(&self.key)?;
        let issuer = Issuer::from_pem(&cert_pem, &key_pem).map_err(|source| CaError::Issuer {
            cert: self.cert.display().to_string(),
            key: self.key.display().to_string(),
            source,
        })?;
        let bundle = match &self.bundle {
            Some(path) => {
                TrustBundle::from_pem(&read(path)?).map_err(|source| CaError::Bundle {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => TrustBundle::from_pem(&issuer.certificate_pem()).map_err(|source| {
                CaError::Bundle {
                    path: self.cert.display().to_string(),
                    source,
                }
            })?,
        };
        self.probe(&issuer, &bundle)?;
        Ok(Ca { issuer, bundle })
    }

    /// Signs a throwaway leaf and verifies it against `bundle`.
    fn probe(&self, issuer: &Issuer, bundle: &TrustBundle) -> Result<(), CaError> {
        let cannot = |reason: String| CaError::CannotIssue {
            cert: self.cert.display().to_string(),
            reason,
        };
        let id = SpiffeId::kubernetes(&self.trust_domain, "herd", "probe")
            .map_err(|e| cannot(e.to_string()))?;
        let key = Keypair::generate().map_err(|e| cannot(e.to_string()))?;
        let csr = build_csr(&key, &id).map_err(|e| cannot(e.to_string()))?;
        let request =
            inspect_csr(&csr, &CsrLimits::default()).map_err(|e| cannot(e.to_string()))?;
        let leaf = issuer
            .issue(&request, &id, Duration::from_secs(60))
            .map_err(|e| cannot(e.to_string()))?;
        verify_leaf(bundle, &leaf, SystemTime::now()).map_err(|source| CaError::Untrusted {
            bundle: self
                .bundle
                .as_deref()
                .unwrap_or(&self.cert)
                .display()
                .to_string(),
            cert: self.cert.display().to_string(),
            source,
        })
    }
}

fn read(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(|source| CaError::Read {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests;
