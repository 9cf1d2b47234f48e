//! The trust bundle: the root certificates a proxy accepts peers' chains from.
//!
//! A bundle holds several roots so that a CA can be replaced without a moment where half the
//! mesh distrusts the other half: add the new root to the bundle, wait until every proxy has
//! picked it up, switch the issuer to the new root, wait for every leaf of the old one to expire
//! (24 h by default), then remove the old root. During the overlap, leaves of either root verify.
//!
//! Every root must be a CA certificate (basicConstraints CA=true); a leaf put in a bundle by
//! mistake is refused when the bundle is read rather than trusted as an anchor.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

/// The PEM label of a certificate.
const CERTIFICATE: &str = "CERTIFICATE";

/// An ordered set of root certificates (DER), without duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustBundle {
    roots: Vec<CertificateDer<'static>>,
}

/// Why a bundle (or a root for it) was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not PEM: {0}")]
    Pem(#[from] pem::PemError),
    #[error("the PEM has a {0:?} block; a trust bundle holds only CERTIFICATE blocks")]
    NotACertificateBlock(String),
    #[error("the PEM has no certificate")]
    NoCertificate,
    #[error("root {index} is not a readable X.509 certificate: {reason}")]
    Unreadable { index: usize, reason: String },
    #[error("root {index} ({subject}) is not a CA certificate (basicConstraints CA=true)")]
    NotCa { index: usize, subject: String },
    #[error("root {index} cannot be a trust anchor: {reason}")]
    NotAnAnchor { index: usize, reason: String },
    #[error("the trust bundle is empty: it would trust no one")]
    Empty,
}

impl TrustBundle {
    /// A bundle of the CERTIFICATE blocks of `pem`, in order; at least one, each a CA.
    pub fn from_pem(pem: &str) -> Result<Self, BundleError> {
        let mut bundle = TrustBundle::default();
        for root in certificates_from_pem(pem)? {
            bundle.add(root)?;
        }
        Ok(bundle)
    }

    /// Adds `root` (at the end) unless it is already here; says whether it was added.
    pub fn add(&mut self, root: CertificateDer<'static>) -> Result<bool, BundleError> {
        let index = self.roots.len();
        check_root(&root, index)?;
        if self.roots.contains(&root) {
            return Ok(false);
        }
        self.roots.push(root);
        Ok(true)
    }

    /// Removes `root`; says whether it was here. Removing the last root is allowed, but an
    /// empty bundle cannot build a verifier ([`BundleError::Empty`]).
    pub fn remove(&mut self, root: &CertificateDer<'_>) -> bool {
        let before = self.roots.len();
        self.roots.retain(|r| r.as_ref() != root.as_ref());
        self.roots.len() != before
    }

    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    /// The roots as concatenated PEM CERTIFICATE blocks (LF line endings).
    pub fn to_pem(&self) -> String {
        certificates_to_pem(&self.roots)
    }

    /// The roots as rustls trust anchors.
    pub(crate) fn root_store(&self) -> Result<Arc<RootCertStore>, BundleError> {
        if self.roots.is_empty() {
            return Err(BundleError::Empty);
        }
        let mut store = RootCertStore::empty();
        for (index, root) in self.roots.iter().enumerate() {
            store
                .add(root.clone())
                .map_err(|e| BundleError::NotAnAnchor {
                    index,
                    reason: e.to_string(),
                })?;
        }
        Ok(Arc::new(store))
    }
}

fn check_root(root: &CertificateDer<'_>, index: usize) -> Result<(), BundleError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(root).map_err(|e| BundleError::Unreadable {
            index,
            reason: e.to_string(),
        })?;
    if !cert.is_ca() {
        return Err(BundleError::NotCa {
            index,
            subject: cert.subject().to_string(),
        });
    }
    // webpki's own reading of the anchor, so that a bundle that loads also verifies.
    RootCertStore::empty()
        .add(root.clone().into_owned())
        .map_err(|e| BundleError::NotAnAnchor {
            index,
            reason: e.to_string(),
        })
}

/// The CERTIFICATE blocks of `pem`, in order; any other block is an error, none is too.
pub(crate) fn certificates_from_pem(
    pem: &str,
) -> Result<Vec<CertificateDer<'static>>, BundleError> {
    let blocks = pem::parse_many(pem)?;
    if blocks.is_empty() {
        return Err(BundleError::NoCertificate);
    }
    blocks
        .into_iter()
        .map(|block| match block.tag() {
            CERTIFICATE => Ok(CertificateDer::from(block.into_contents())),
            other => Err(BundleError::NotACertificateBlock(other.to_owned())),
        })
        .collect()
}

pub(crate) fn certificates_to_pem(certificates: &[CertificateDer<'_>]) -> String {
    let blocks: Vec<pem::Pem> = certificates
        .iter()
        .map(|c| pem::Pem::new(CERTIFICATE, c.as_ref()))
        .collect();
    pem::encode_many_config(
        &blocks,
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

#[cfg(test)]
mod tests;
