//! The issuer: the CA key that signs proxies' leaf certificates.
//!
//! herd-control's identity service checks a proxy's token, derives the SPIFFE ID the token
//! proves, and hands it to [`Issuer::issue`] with the [`CsrRequest`]. The issuer refuses a CSR
//! that asks for any other ID, then writes every security-relevant field itself, whatever the CSR
//! said (and `csr::inspect_csr` has already refused CSRs that ask for more):
//!
//! - validity: from now minus [`CLOCK_SKEW`] (so a peer whose clock is a little behind does not
//!   see a certificate from the future) to now plus the lifetime, cut at the issuer's own
//!   notAfter, since a leaf cannot outlive the certificate that vouches for it;
//! - a random 127-bit serial number, so no two leaves share one and none can be predicted;
//! - basicConstraints CA=false: a proxy can never sign for another;
//! - keyUsage digitalSignature only. TLS 1.3 authenticates with signatures alone; the
//!   keyEncipherment bit exists for RSA key transport, which TLS 1.3 removed and which an ECDSA
//!   or Ed25519 key cannot do anyway;
//! - extendedKeyUsage serverAuth and clientAuth: every proxy is both ends of mTLS;
//! - the SPIFFE ID as the only subjectAltName (a URI), an empty subject (so the SAN is marked
//!   critical, as RFC 5280 asks), the authority key identifier of the issuer.
//!
//! [`Issuer::issue_server`] signs the other kind: a server certificate for DNS names and IP
//! addresses, for clients that check names rather than SPIFFE IDs (the API server calling the
//! injector webhook); see `server`.
//!
//! An issuer is loaded from a CA certificate and its key ([`Issuer::from_pem`], the files or the
//! Kubernetes Secret an operator provides) or generated ([`Issuer::generate`], for tests and for
//! `herdctl install`). The CA certificate may be an intermediate: the certificates after the
//! first in its PEM are its chain, and leaves are sent with it; only the root goes in the
//! trust bundle.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use rustls::pki_types::CertificateDer;

use crate::bundle::{BundleError, certificates_from_pem, certificates_to_pem};
use crate::csr::{CsrRequest, KeyType};
use crate::spiffe::{SpiffeId, SpiffeIdError};
use crate::svid;

mod leaf;
mod server;

pub use leaf::{Leaf, LeafError};
pub use server::{ServerCertificate, ServerName, ServerNameError};

/// How far before "now" a leaf's validity starts.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The default leaf lifetime.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The PEM label of a PKCS#8 private key, the one key format accepted.
const PRIVATE_KEY: &str = "PRIVATE KEY";
const RSA_PRIVATE_KEY: &str = "RSA PRIVATE KEY";

/// A CA certificate and its key, ready to sign leaves.
pub struct Issuer {
    signer: rcgen::Issuer<'static, rcgen::KeyPair>,
    certificate: CertificateDer<'static>,
    /// What a leaf is sent with: empty for a root, else the CA certificate and its own chain.
    chain: Vec<CertificateDer<'static>>,
    not_after: SystemTime,
}

/// Why a CA certificate and key cannot issue.
#[derive(Debug, thiserror::Error)]
pub enum IssuerError {
    #[error("the CA certificate file: {0}")]
    Certificate(#[from] BundleError),
    #[error("the CA certificate is not readable X.509: {0}")]
    Unreadable(String),
    #[error("the CA certificate ({0}) is not a CA (basicConstraints CA=true)")]
    NotCa(String),
    #[error("the CA certificate ({0}) has a keyUsage without keyCertSign")]
    CannotSign(String),
    #[error("the CA certificate ({subject}) expired {ago:?} ago")]
    Expired { subject: String, ago: Duration },
    #[error(
        "the CA key file has a {0:?} block; give it as PKCS#8 (\"PRIVATE KEY\") or, for RSA, \
         PKCS#1 (\"RSA PRIVATE KEY\"), e.g. `openssl pkcs8 -topk8 -nocrypt -in KEY`"
    )]
    KeyFormat(String),
    #[error("the CA key file: {0}")]
    KeyPem(#[from] pem::PemError),
    #[error("the CA key is not a usable key: {0}")]
    Key(rcgen::Error),
    #[error("the CA key does not belong to the CA certificate ({0})")]
    KeyMismatch(String),
    #[error("the trust domain: {0}")]
    TrustDomain(#[from] SpiffeIdError),
    #[error("a CA validity of {0:?} ends after the year 9999, which a certificate cannot say")]
    Validity(Duration),
    #[error("signing the CA certificate failed: {0}")]
    Sign(rcgen::Error),
}

/// Why a leaf was not issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the CSR asks for {requested}, but the token proves {expected}")]
    IdentityMismatch {
        requested: SpiffeId,
        expected: SpiffeId,
    },
    #[error("a leaf lifetime must be more than zero")]
    ZeroLifetime,
    #[error("the issuer's certificate is no longer valid (it expired {ago:?} ago)")]
    IssuerExpired { ago: Duration },
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoServerNames,
    #[error("signing the leaf failed: {0}")]
    Sign(#[from] rcgen::Error),
}

impl Issuer {
    /// Loads a CA from PEM: `cert_pem` holds the CA certificate first, then (for an intermediate)
    /// its chain; `key_pem` holds its PKCS#8 key. Checks that the certificate is a CA allowed to
    /// sign certificates, has not expired, and that the key is its key.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, IssuerError> {
        let certificates = certificates_from_pem(cert_pem)?;
        let certificate = certificates[0].clone();
        let (not_after, self_issued, spki) = {
            let parsed = svid::parse(&certificate).map_err(|e| match e {
                svid::SvidError::Unreadable(why) => IssuerError::Unreadable(why),
                other => IssuerError::Unreadable(other.to_string()),
            })?;
            let subject = parsed.subject().to_string();
            if !parsed.is_ca() {
                return Err(IssuerError::NotCa(subject));
            }
            match parsed.key_usage() {
                Ok(Some(usage)) if !usage.value.key_cert_sign() => {
                    return Err(IssuerError::CannotSign(subject));
                }
                Ok(_) => {}
                Err(e) => return Err(IssuerError::Unreadable(e.to_string())),
            }
            let (_, not_after) = svid::validity_in(&parsed);
            if let Ok(ago) = SystemTime::now().duration_since(not_after) {
                return Err(IssuerError::Expired { subject, ago });
            }
            let self_issued = parsed.subject().as_raw() == parsed.issuer().as_raw();
            (not_after, self_issued, parsed.public_key().raw.to_vec())
        };

        let key_block = pem::parse(key_pem)?;
        let pkcs8 = match key_block.tag() {
            PRIVATE_KEY => key_block.contents().to_vec(),
            // What Helm's `genCA` and `openssl genrsa -traditional` write.
            RSA_PRIVATE_KEY => rsa_pkcs1_to_pkcs8(key_block.contents()),
            other => return Err(IssuerError::KeyFormat(other.to_owned())),
        };
        let key = rcgen::KeyPair::try_from(pkcs8).map_err(IssuerError::Key)?;
        if rcgen::PublicKeyData::subject_public_key_info(&key) != spki {
            let subject = svid::parse(&certificate)
                .map(|c| c.subject().to_string())
                .unwrap_or_default();
            return Err(IssuerError::KeyMismatch(subject));
        }
        let signer = rcgen::Issuer::from_ca_cert_der(&certificate, key)
            .map_err(|e| IssuerError::Unreadable(e.to_string()))?;
        Ok(Issuer {
            signer,
            chain: if self_issued {
                Vec::new()
            } else {
                certificates
            },
            certificate,
            not_after,
        })
    }

    /// A fresh self-signed root for `trust_domain`, valid for `validity` from now (less
    /// [`CLOCK_SKEW`] before). Its key is ECDSA P-256; it may sign leaves only (path length 0);
    /// it names `spiffe://TRUST-DOMAIN` as its URI SAN and a random tag in its common name, so
    /// that two roots of one trust domain, old and new, are told apart in a bundle and in logs.
    pub fn generate(trust_domain: &str, validity: Duration) -> Result<Self, IssuerError> {
        let domain = SpiffeId::trust_domain_id(trust_domain)?;
        let key = rcgen::KeyPair::generate_for(KeyType::EcdsaP256.algorithm())
            .map_err(IssuerError::Sign)?;
        let now = whole_seconds(SystemTime::now());
        let not_after = now
            .checked_add(validity)
            .filter(|&end| end < latest_certificate_time())
            .ok_or(IssuerError::Validity(validity))?;
        let serial = random_serial().map_err(IssuerError::Sign)?;
        let tag: String = serial.to_bytes()[..4]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();

        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("herd root CA {tag}"));
        params.subject_alt_names = vec![SanType::URI(
            domain.as_str().try_into().map_err(IssuerError::Sign)?,
        )];
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = not_after.into();
        params.serial_number = Some(serial);
        let certificate = params.self_signed(&key).map_err(IssuerError::Sign)?;
        Ok(Issuer {
            signer: rcgen::Issuer::new(params, key),
            certificate: certificate.der().clone(),
            chain: Vec::new(),
            not_after,
        })
    }

    /// The CA certificate (DER).
    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// The CA certificate as PEM.
    pub fn certificate_pem(&self) -> String {
        certificates_to_pem(std::slice::from_ref(&self.certificate))
    }

    /// The CA key as PKCS#8 PEM, for `herdctl install` to store in a Secret.
    pub fn key_pem(&self) -> String {
        self.signer.key().serialize_pem()
    }

    /// When the CA certificate expires; no leaf outlives it.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Signs a leaf for `request` if it asks for `expected` (the identity its token proves),
    /// valid for `lifetime` from now; see the module doc for every field it sets.
    pub fn issue(
        &self,
        request: &CsrRequest,
        expected: &SpiffeId,
        lifetime: Duration,
    ) -> Result<Leaf, IssueError> {
        self.issue_at(request, expected, lifetime, SystemTime::now())
    }

    /// [`Issuer::issue`] with the clock as an argument (tests make leaves that have expired).
    pub fn issue_at(
        &self,
        request: &CsrRequest,
        expected: &SpiffeId,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Leaf, IssueError> {
        if request.id() != expected {
            return Err(IssueError::IdentityMismatch {
                requested: request.id().clone(),
                expected: expected.clone(),
            });
        }
        let (not_before, not_after) = self.validity(lifetime, whole_seconds(now))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(expected.as_str().try_into()?)];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let certificate = params.signed_by(request, &self.signer)?;
        Ok(Leaf::new(
            expected.clone(),
            certificate.der().clone(),
            self.chain.clone(),
            not_before,
            not_after,
        ))
    }
}

/// An RSA key in PKCS#1 (`RSAPrivateKey`) as PKCS#8 (`PrivateKeyInfo`), the one form ring
/// reads: version 0, the rsaEncryption algorithm with NULL parameters, and the PKCS#1 bytes as
/// the private key octet string (RFC 5208 section 5, RFC 8017 appendix A.1). Nothing is checked
/// here; ring parses the result and refuses what is not a key.
fn rsa_pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    /// `SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }`.
    const RSA_ENCRYPTION: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    /// `INTEGER 0`.
    const VERSION: &[u8] = &[0x02, 0x01, 0x00];
    let mut body = Vec::with_capacity(pkcs1.len() + 32);
    body.extend_from_slice(VERSION);
    body.extend_from_slice(RSA_ENCRYPTION);
    der_tlv(0x04, pkcs1, &mut body);
    let mut out = Vec::with_capacity(body.len() + 4);
    der_tlv(0x30, &body, &mut out);
    out
}

/// Appends a DER tag, definite length and value.
fn der_tlv(tag: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(tag);
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
}

impl Issuer {
    /// A new certificate's validity when issued at `now` for `lifetime`: from [`CLOCK_SKEW`]
    /// before now, to the lifetime's end or the issuer's, whichever comes first.
    fn validity(
        &self,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<(SystemTime, SystemTime), IssueError> {
        if lifetime.is_zero() {
            return Err(IssueError::ZeroLifetime);
        }
        if let Ok(ago) = now.duration_since(self.not_after) {
            return Err(IssueError::IssuerExpired { ago });
        }
        let not_after = now
            .checked_add(lifetime)
            .map_or(self.not_after, |end| end.min(self.not_after));
        Ok((now - CLOCK_SKEW, not_after))
    }
}

#[cfg(test)]
impl Issuer {
    /// Signs whatever `params` say: for tests that need certificates the issuer never makes.
    pub(crate) fn sign_anything(
        &self,
        params: &CertificateParams,
        key: &impl rcgen::PublicKeyData,
    ) -> CertificateDer<'static> {
        params.signed_by(key, &self.signer).unwrap().der().clone()
    }
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("signer", &self.signer)
            .field("chain", &self.chain.len())
            .field("not_after", &self.not_after)
            .finish_non_exhaustive()
    }
}

/// 16 random bytes with the top bit cleared: a positive serial of up to 127 bits, within the
/// 20 octets RFC 5280 allows.
fn random_serial() -> Result<SerialNumber, rcgen::Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| rcgen::Error::RingUnspecified)?;
    bytes[0] &= 0x7f;
    // A zero serial is not allowed; 2^-127 odds, but cheap to rule out.
    bytes[15] |= u8::from(bytes.iter().all(|&b| b == 0));
    Ok(SerialNumber::from_slice(&bytes))
}

/// The end of 9999, the last time a certificate can hold (GeneralizedTime has four digits).
fn latest_certificate_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(253_402_300_799)
}

/// Certificates hold whole seconds; a leaf's recorded times match what it carries.
fn whole_seconds(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(since) => UNIX_EPOCH + Duration::from_secs(since.as_secs()),
        Err(_) => t,
    }
}

#[cfg(test)]
mod tests;
