//! The certificate signing request: built by a proxy, inspected by the CA.
//!
//! A proxy makes its key pair in memory ([`Keypair::generate`], ECDSA P-256) and never writes or
//! sends the private half: what leaves the process is a CSR ([`build_csr`]) naming its SPIFFE ID
//! as the one URI SAN, signed with that key to prove the proxy holds it.
//!
//! The CA runs [`inspect_csr`] on whatever bytes arrive, which may come from anyone holding a
//! token, so it is written for hostile input: the size is bounded before parsing, the request's
//! self-signature must verify, and the CA takes exactly two things from a CSR, the public key and
//! the SPIFFE ID. Every other thing a CSR can ask for is refused, not ignored: CA=true, key usage,
//! extended key usage, name constraints, any other extension or attribute (a challenge password).
//! The CA would overwrite those fields anyway (see `ca`), so ignoring them would be safe too; we
//! refuse because a herd proxy never asks for them, so a CSR that does is a misbehaving or hostile
//! client, and an error naming what it asked for is worth more to an operator than a silently
//! different certificate. The one part of a CSR that is ignored is its subject name: tools such as
//! `openssl req` insist on writing one, and the leaf never carries it.
//!
//! Keys are limited to what a herd proxy makes and rustls' ring provider verifies in TLS 1.3:
//! ECDSA P-256 and P-384, and Ed25519. RSA is refused: proxies never make it, and refusing it
//! keeps SHA-1 signatures (which the CSR parser would accept for RSA) out of the CA's path.

use rcgen::{CertificateParams, DistinguishedName, PublicKeyData, SanType, SignatureAlgorithm};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::ParsedCriAttribute;
use x509_parser::extensions::{GeneralName, ParsedExtension, X509Extension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_SIG_ED25519,
};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

use crate::spiffe::{SpiffeId, SpiffeIdError};

/// The CSR size limit by default: a herd proxy's CSR is about 300 bytes.
pub const DEFAULT_MAX_CSR_BYTES: usize = 16 * 1024;

/// How much of a hostile string an error message repeats.
const QUOTE_BYTES: usize = 128;

/// A key pair held in memory only. There is no way to serialize it to PEM: the private key goes
/// to rustls as DER ([`Keypair::private_key_der`]) and nowhere else.
pub struct Keypair {
    inner: rcgen::KeyPair,
}

impl Keypair {
    /// A fresh ECDSA P-256 key pair from ring's system random source.
    pub fn generate() -> Result<Self, CsrError> {
        Self::generate_for(KeyType::EcdsaP256)
    }

    /// A fresh key pair of the given type (tests use the others; proxies use P-256).
    pub fn generate_for(key_type: KeyType) -> Result<Self, CsrError> {
        Ok(Keypair {
            inner: rcgen::KeyPair::generate_for(key_type.algorithm())?,
        })
    }

    /// The private key as PKCS#8 DER, for rustls.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.inner.serialize_der()).into()
    }

    /// The public key as a DER SubjectPublicKeyInfo (what a certificate for this key carries).
    pub fn public_key_spki(&self) -> Vec<u8> {
        self.inner.subject_public_key_info()
    }

    pub(crate) fn signing_key(&self) -> &rcgen::KeyPair {
        &self.inner
    }
}

impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keypair({:?}, private key elided)",
            self.inner.algorithm()
        )
    }
}

/// The key types a CSR may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    EcdsaP256,
    EcdsaP384,
    Ed25519,
}

impl KeyType {
    pub(crate) fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyType::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyType::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }

    fn of(spki: &SubjectPublicKeyInfo<'_>) -> Result<Self, CsrError> {
        let algorithm = &spki.algorithm.algorithm;
        if *algorithm == OID_SIG_ED25519 {
            return Ok(KeyType::Ed25519);
        }
        if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok());
            return match curve {
                Some(curve) if curve == OID_EC_P256 => Ok(KeyType::EcdsaP256),
                Some(curve) if curve == OID_NIST_EC_P384 => Ok(KeyType::EcdsaP384),
                Some(curve) => Err(CsrError::UnsupportedKey(format!(
                    "an EC key on curve {}",
                    curve.to_id_string()
                ))),
                None => Err(CsrError::UnsupportedKey(
                    "an EC key without a named curve".into(),
                )),
            };
        }
        Err(CsrError::UnsupportedKey(format!(
            "of algorithm {}",
            algorithm.to_id_string()
        )))
    }
}

/// Builds the DER CSR a proxy sends: `key`'s public key, `id` as the only URI SAN, no subject,
/// no other extension, signed with `key`.
pub fn build_csr(key: &Keypair, id: &SpiffeId) -> Result<Vec<u8>, CsrError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.as_str().try_into()?)];
    Ok(params.serialize_request(key.signing_key())?.der().to_vec())
}

/// Bounds on what [`inspect_csr`] will read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsrLimits {
    /// The largest CSR accepted, in DER bytes; checked before any parsing.
    pub max_der_bytes: usize,
}

impl Default for CsrLimits {
    fn default() -> Self {
        CsrLimits {
            max_der_bytes: DEFAULT_MAX_CSR_BYTES,
        }
    }
}

/// A CSR that passed [`inspect_csr`]: a key its sender holds, and the identity it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsrRequest {
    id: SpiffeId,
    key_type: KeyType,
    /// The subjectPublicKey bits (an EC point or an Ed25519 key).
    public_key: Vec<u8>,
}

impl CsrRequest {
    /// The SPIFFE ID the CSR asks for (not yet checked against any token: see `ca::Issuer::issue`).
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    pub fn key_type(&self) -> KeyType {
        self.key_type
    }
}

impl PublicKeyData for CsrRequest {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.key_type.algorithm()
    }
}

/// Why a CSR was refused, or a key or CSR could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR has {size} bytes, more than the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the CSR is not a DER certification request: {0}")]
    Malformed(String),
    #[error("the CSR is followed by {0} more bytes")]
    TrailingBytes(usize),
    #[error("the CSR's signature does not verify with its own public key")]
    BadSignature,
    #[error("the CSR's key is {0}; accepted are ECDSA P-256, ECDSA P-384 and Ed25519")]
    UnsupportedKey(String),
    #[error("the CSR has the attribute {0}; only one extensionRequest is accepted")]
    UnsupportedAttribute(String),
    #[error("the CSR asks for {0}; the CA sets every extension but the subjectAltName itself")]
    UnsupportedExtension(String),
    #[error("the CSR has no subjectAltName; it must name its SPIFFE ID as its one URI SAN")]
    NoSan,
    #[error("the CSR has {0} subjectAltNames; exactly one, a SPIFFE URI, is accepted")]
    SeveralSans(usize),
    #[error("the CSR's subjectAltName is {0}, not a URI")]
    NotUri(&'static str),
    #[error("the CSR's URI SAN {uri:?} is not a SPIFFE ID: {source}")]
    NotSpiffe { uri: String, source: SpiffeIdError },
    #[error("the CSR names the trust domain {0} itself, not a workload in it")]
    NoWorkload(SpiffeId),
    #[error("making the key or the CSR failed: {0}")]
    Crypto(#[from] rcgen::Error),
}

/// Parses and checks a CSR as the CA receives it (see the module doc for what is refused).
pub fn inspect_csr(der: &[u8], limits: &CsrLimits) -> Result<CsrRequest, CsrError> {
    if der.len() > limits.max_der_bytes {
        return Err(CsrError::TooLarge {
            size: der.len(),
            limit: limits.max_der_bytes,
        });
    }
    let (rest, csr) =
        X509CertificationRequest::from_der(der).map_err(|e| CsrError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::TrailingBytes(rest.len()));
    }
    let info = &csr.certification_request_info;
    // The key type first: it is cheap, and the signature check needs a supported key anyway.
    let key_type = KeyType::of(&info.subject_pki)?;
    csr.verify_signature().map_err(|_| CsrError::BadSignature)?;

    let mut requested: Option<&[X509Extension<'_>]> = None;
    for attribute in info.iter_attributes() {
        match attribute.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(request) if requested.is_none() => {
                requested = Some(&request.extensions);
            }
            ParsedCriAttribute::ExtensionRequest(_) => {
                return Err(CsrError::UnsupportedAttribute(
                    "extensionRequest a second time".into(),
                ));
            }
            ParsedCriAttribute::ChallengePassword(_) => {
                return Err(CsrError::UnsupportedAttribute("challengePassword".into()));
            }
            ParsedCriAttribute::UnsupportedAttribute => {
                return Err(CsrError::UnsupportedAttribute(attribute.oid.to_id_string()));
            }
        }
    }

    let mut san = None;
    for extension in requested.unwrap_or_default() {
        match extension.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(names) if san.is_none() => san = Some(names),
            ParsedExtension::SubjectAlternativeName(_) => {
                return Err(CsrError::UnsupportedExtension(
                    "a second subjectAltName".into(),
                ));
            }
            ParsedExtension::ParseError { error } => {
                return Err(CsrError::Malformed(format!(
                    "extension {}: {error}",
                    extension.oid.to_id_string()
                )));
            }
            other => {
                return Err(CsrError::UnsupportedExtension(extension_name(
                    extension, other,
                )));
            }
        }
    }

    let uri = match san.map(|san| san.general_names.as_slice()) {
        None | Some([]) => return Err(CsrError::NoSan),
        Some([GeneralName::URI(uri)]) => *uri,
        Some([other]) => return Err(CsrError::NotUri(general_name_kind(other))),
        Some(several) => return Err(CsrError::SeveralSans(several.len())),
    };
    let id = SpiffeId::parse(uri).map_err(|source| CsrError::NotSpiffe {
        uri: quote(uri),
        source,
    })?;
    if id.path().is_empty() {
        return Err(CsrError::NoWorkload(id));
    }
    Ok(CsrRequest {
        id,
        key_type,
        public_key: info.subject_pki.subject_public_key.data.to_vec(),
    })
}

fn extension_name(extension: &X509Extension<'_>, parsed: &ParsedExtension<'_>) -> String {
    match parsed {
        ParsedExtension::BasicConstraints(bc) if bc.ca => "basicConstraints with CA=true".into(),
        ParsedExtension::BasicConstraints(_) => "basicConstraints".into(),
        ParsedExtension::KeyUsage(_) => "keyUsage".into(),
        ParsedExtension::ExtendedKeyUsage(_) => "extendedKeyUsage".into(),
        ParsedExtension::NameConstraints(_) => "nameConstraints".into(),
        _ => format!("extension {}", extension.oid.to_id_string()),
    }
}

pub(crate) fn general_name_kind(name: &GeneralName<'_>) -> &'static str {
    match name {
        GeneralName::OtherName(..) => "an otherName",
        GeneralName::RFC822Name(_) => "an email address",
        GeneralName::DNSName(_) => "a DNS name",
        GeneralName::X400Address(_) => "an X.400 address",
        GeneralName::DirectoryName(_) => "a directory name",
        GeneralName::EDIPartyName(_) => "an EDI party name",
        GeneralName::URI(_) => "a URI",
        GeneralName::IPAddress(_) => "an IP address",
        GeneralName::RegisteredID(_) => "a registered ID",
        GeneralName::Invalid(..) => "an unreadable name",
    }
}

/// The first [`QUOTE_BYTES`] of a string a peer sent, for an error message.
pub(crate) fn quote(s: &str) -> String {
    if s.len() <= QUOTE_BYTES {
        return s.to_owned();
    }
    let mut end = QUOTE_BYTES;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests;
