//! herd-identity: who a proxy is, how it proves it, and how its peers check.
//!
//! The mesh's identity is a SPIFFE ID in the one URI SAN of a short-lived certificate. This crate
//! holds everything about it that is pure logic, so both ends share one definition:
//!
//! - [`spiffe`]: parsing IDs strictly, and the [`Matcher`] patterns policies name clients with;
//! - [`csr`]: the proxy's in-memory key and its CSR; the CA's check of a CSR it was sent;
//! - [`ca`]: the issuer, which signs a leaf setting every security-relevant field itself;
//! - [`bundle`]: the trust anchors, several at once so a root can be rotated;
//! - [`svid`]: reading the SPIFFE ID out of a certificate;
//! - [`verify`]: rustls verifiers that check a chain against the bundle, then compare the peer's
//!   SPIFFE ID (webpki checks DNS and IP names only, so the URI is ours to compare);
//! - [`tls`]: rustls client and server configurations, TLS 1.3 only, built from the above.
//!
//! There is no I/O here beyond what the caller hands in: the CA's gRPC service, token review
//! and the proxy's connections live in herd-control and herd-proxy. Cryptography is ring's,
//! through rcgen and rustls, like everywhere in the workspace.
#![forbid(unsafe_code)]

pub mod bundle;
pub mod ca;
pub mod csr;
pub mod spiffe;
pub mod svid;
pub mod tls;
pub mod verify;

#[cfg(test)]
mod testkit;

pub use bundle::{BundleError, TrustBundle};
pub use ca::{
    IssueError, Issuer, IssuerError, Leaf, LeafError, ServerCertificate, ServerName,
    ServerNameError,
};
pub use csr::{CsrError, CsrLimits, CsrRequest, KeyType, Keypair, build_csr, inspect_csr};
pub use spiffe::{Matcher, SpiffeId, SpiffeIdError};
pub use svid::SvidError;
pub use tls::{TlsConfigError, client_config, server_config};
pub use verify::{
    LeafVerifyError, PeerIdentityError, SpiffeClientVerifier, SpiffeServerVerifier, VerifierError,
    peer_identity, peer_not_after, verify_leaf,
};
