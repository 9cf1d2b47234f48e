//! A leaf certificate with what a proxy needs to know about it: whom it names, the chain it is
//! presented with, and when to replace it.
//!
//! The CA makes one with [`crate::Issuer::issue`]; a proxy reads the CA's answer back with
//! [`Leaf::from_pem`], which checks that the certificate names exactly one SPIFFE ID, so a
//! wrong answer fails when it arrives rather than at the first handshake.

use std::time::SystemTime;

use rustls::pki_types::CertificateDer;

use crate::bundle::{BundleError, certificates_from_pem, certificates_to_pem};
use crate::spiffe::SpiffeId;
use crate::svid::{self, SvidError};

/// A workload's certificate and the intermediates sent after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    id: SpiffeId,
    certificate: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
}

/// Why a certificate chain is not a usable leaf.
#[derive(Debug, thiserror::Error)]
pub enum LeafError {
    #[error("the certificate chain: {0}")]
    Pem(#[from] BundleError),
    #[error("the leaf certificate: {0}")]
    Identity(#[from] SvidError),
    #[error("the leaf certificate is a CA certificate")]
    IsCa,
}

impl Leaf {
    pub(crate) fn new(
        id: SpiffeId,
        certificate: CertificateDer<'static>,
        intermediates: Vec<CertificateDer<'static>>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Self {
        Leaf {
            id,
            certificate,
            intermediates,
            not_before,
            not_after,
        }
    }

    /// Reads a chain, leaf first: its SPIFFE ID and validity come from the leaf. The chain is
    /// not verified here; a peer does that against its bundle at every handshake.
    pub fn from_pem(chain_pem: &str) -> Result<Self, LeafError> {
        let mut chain = certificates_from_pem(chain_pem)?;
        let certificate = chain.remove(0);
        let (id, not_before, not_after) = {
            let parsed = svid::parse(&certificate)?;
            if parsed.is_ca() {
                return Err(LeafError::IsCa);
            }
            let id = svid::identity_in(&parsed)?;
            let (not_before, not_after) = svid::validity_in(&parsed);
            (id, not_before, not_after)
        };
        Ok(Leaf::new(id, certificate, chain, not_before, not_after))
    }

    /// The SPIFFE ID the leaf names.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// The leaf certificate alone.
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// What a TLS peer is sent: the leaf, then its intermediates (never the root).
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        std::iter::once(&self.certificate)
            .chain(&self.intermediates)
            .cloned()
            .collect()
    }

    /// [`Leaf::chain`] as PEM, what the CA answers with.
    pub fn to_pem(&self) -> String {
        certificates_to_pem(&self.chain())
    }

    /// The leaf's serial number as upper-case hex, two digits per byte of its DER integer (what
    /// `openssl x509 -noout -serial` prints after `serial=`), for logs and `herdctl certify`.
    pub fn serial_hex(&self) -> String {
        match svid::parse(&self.certificate) {
            Ok(parsed) => parsed
                .raw_serial()
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect(),
            // A leaf is only made from a certificate that parsed.
            Err(_) => String::new(),
        }
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}
