//! rustls verifiers that authenticate a peer by its SPIFFE ID.
//!
//! Verifying a mesh peer takes two steps, and webpki only does the first:
//!
//! 1. the chain: the peer's leaf, through the intermediates it sent, chains to a root of our
//!    [`TrustBundle`], every certificate is within its validity, the leaf is not a CA and its
//!    extended key usage allows the role (serverAuth for a server, clientAuth for a client).
//!    rustls' trust-anchor helpers do this: `verify_server_cert_signed_by_trust_anchor` for a
//!    server, `WebPkiClientVerifier` for a client.
//! 2. the name: webpki knows DNS names and IP addresses, not URIs, so we read the leaf's one URI
//!    SAN ourselves (`svid`). A client then requires the server's ID to equal the expected one
//!    exactly, the one its route's service names; the DNS name a client dialed is not looked at
//!    (a mesh server certificate names no DNS name). A server accepts any client whose chain
//!    verifies and whose certificate names a valid ID; which clients may do what is the
//!    business of authorization policy, which reads the ID with [`peer_identity`].
//!
//! Both verifiers refuse TLS 1.2 signatures: the configurations in `tls` offer TLS 1.3 only,
//! and a verifier that could not be tricked into 1.2 is one less thing to get right there.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    CertificateError, CommonState, DigitallySignedStruct, DistinguishedName, Error, OtherError,
    RootCertStore, SignatureScheme,
};

use std::time::SystemTime;

use crate::bundle::{BundleError, TrustBundle};
use crate::ca::Leaf;
use crate::spiffe::SpiffeId;
use crate::svid::{self, SvidError};

/// Why a peer that presented a verified chain was refused.
///
/// rustls prints the error a verifier returns with `{:?}`, so `Debug` here says the same
/// sentence as `Display`: that is what ends up in a proxy's log line.
#[derive(thiserror::Error)]
pub enum PeerIdentityError {
    #[error("the server is {presented}, not the expected {expected}")]
    WrongServer {
        expected: SpiffeId,
        presented: SpiffeId,
    },
    #[error("the peer's certificate names no identity: {0}")]
    NoIdentity(#[from] SvidError),
}

impl fmt::Debug for PeerIdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<PeerIdentityError> for Error {
    fn from(e: PeerIdentityError) -> Self {
        Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
    }
}

/// Why a verifier could not be built.
#[derive(Debug, thiserror::Error)]
pub enum VerifierError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error("building the client verifier: {0}")]
    Client(#[from] rustls::server::VerifierBuilderError),
}

/// The SPIFFE ID a peer authenticated with, read from a finished handshake (either side).
/// `None` before the handshake, or for a peer without a certificate.
pub fn peer_identity(connection: &CommonState) -> Option<SpiffeId> {
    let leaf = connection.peer_certificates()?.first()?;
    svid::identity_of(leaf).ok()
}

/// When the peer's certificate on `connection` expires, if it presented one that parses.
pub fn peer_not_after(connection: &CommonState) -> Option<SystemTime> {
    let leaf = connection.peer_certificates()?.first()?;
    svid::not_after_of(leaf).ok()
}

/// Checks `leaf` as a peer would at `now`: its chain verifies against `bundle` (for the server
/// role, which also requires serverAuth) and it names its own SPIFFE ID. What the CA's callers
/// (herd-control at start and on reload, `herdctl certify`) use to see that what the issuer signs
/// is trusted by the bundle it hands out.
pub fn verify_leaf(
    bundle: &TrustBundle,
    leaf: &Leaf,
    now: SystemTime,
) -> Result<(), LeafVerifyError> {
    let verifier = SpiffeServerVerifier::new(bundle, leaf.id().clone())?;
    let now = UnixTime::since_unix_epoch(
        now.duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let chain = leaf.chain();
    verifier.verify_server_cert(
        &chain[0],
        &chain[1..],
        &ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
        &[],
        now,
    )?;
    Ok(())
}

/// Why [`verify_leaf`] refused a leaf.
#[derive(Debug, thiserror::Error)]
pub enum LeafVerifyError {
    #[error(transparent)]
    Verifier(#[from] VerifierError),
    #[error("the leaf does not verify against the trust bundle: {0}")]
    Chain(#[from] Error),
}

/// A client's check of a mesh server: chain to the bundle, then exactly `expected`.
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: SpiffeId,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SpiffeServerVerifier {
    pub fn new(bundle: &TrustBundle, expected: SpiffeId) -> Result<Self, VerifierError> {
        Ok(SpiffeServerVerifier {
            roots: bundle.root_store()?,
            expected,
            algorithms: provider().signature_verification_algorithms,
        })
    }

    /// The identity the server must present.
    pub fn expected(&self) -> &SpiffeId {
        &self.expected
    }
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("roots", &self.roots.len())
            .field("expected", &self.expected)
            .finish()
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        let presented = svid::identity_of(end_entity).map_err(PeerIdentityError::from)?;
        if presented != self.expected {
            return Err(PeerIdentityError::WrongServer {
                expected: self.expected.clone(),
                presented,
            }
            .into());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A server's check of a mesh client: chain to the bundle, then a valid SPIFFE ID, whichever it
/// is. Client authentication is mandatory for a proxy's inbound side; the control plane's
/// ports make it optional ([`SpiffeClientVerifier::optional`]), since a proxy asks for its
/// first certificate before it has one.
pub struct SpiffeClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl SpiffeClientVerifier {
    pub fn new(bundle: &TrustBundle) -> Result<Self, VerifierError> {
        Self::build(bundle, true)
    }

    /// As [`SpiffeClientVerifier::new`], but a client may present no certificate at all; one
    /// that presents a certificate is held to the same checks.
    pub fn optional(bundle: &TrustBundle) -> Result<Self, VerifierError> {
        Self::build(bundle, false)
    }

    fn build(bundle: &TrustBundle, mandatory: bool) -> Result<Self, VerifierError> {
        let builder =
            WebPkiClientVerifier::builder_with_provider(bundle.root_store()?, Arc::new(provider()));
        let inner = if mandatory {
            builder.build()?
        } else {
            builder.allow_unauthenticated().build()?
        };
        Ok(SpiffeClientVerifier { inner })
    }
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .finish_non_exhaustive()
    }
}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        svid::identity_of(end_entity).map_err(PeerIdentityError::from)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        Err(tls12_refused())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn tls12_refused() -> Error {
    Error::General("TLS 1.2 is refused: mesh peers speak TLS 1.3 only".into())
}

/// ring, the one crypto provider of the workspace (DESIGN: aws-lc-rs doubles cold builds).
///
/// rustls 0.23.48 deprecates ring's provider because it lacks post-quantum key exchange
/// (X25519MLKEM768 is aws-lc-rs only); choosing ring is a project decision, recorded here.
#[allow(deprecated)]
pub(crate) fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

#[cfg(test)]
mod tests;
