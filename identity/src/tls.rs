//! rustls configurations for mesh connections: TLS 1.3 only, ring only, mutual.
//!
//! A client configuration carries the one server identity it accepts, because rustls asks the
//! verifier about a certificate without saying which connection it is for: a proxy keeps one
//! client configuration per peer identity it dials (they share the leaf, the key and the
//! bundle, and each its own session cache, so a resumed session is always with the identity it
//! was verified as). When the leaf is renewed or the bundle changes, the proxy builds new
//! configurations; connections already open keep the ones they started with.
//!
//! [`name_server_config`] is the one configuration outside the mesh: a server certificate for
//! DNS names and IP addresses (see `ca::server`), no client certificate asked for, for clients
//! that check names (the API server calling the injector webhook).
//!
//! The server name a client passes to rustls is not checked against anything (see `verify`);
//! it is still sent as SNI when it is a DNS name, so pass an IP address to send none.

use std::sync::Arc;

use rustls::version::TLS13;
use rustls::{ClientConfig, ServerConfig};

use crate::bundle::TrustBundle;
use crate::ca::{Leaf, ServerCertificate};
use crate::csr::Keypair;
use crate::spiffe::SpiffeId;
use crate::verify::{SpiffeClientVerifier, SpiffeServerVerifier, VerifierError, provider};

/// Why a configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error(transparent)]
    Verifier(#[from] VerifierError),
    #[error("the key is not the key of the leaf for {0}")]
    KeyMismatch(SpiffeId),
    #[error("the key is not the key of the server certificate for {0}")]
    NameKeyMismatch(String),
    #[error("rustls refused the configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// A client configuration that presents `leaf` (with `key`) and accepts only a server whose
/// chain verifies against `bundle` and whose SPIFFE ID is exactly `server`.
pub fn client_config(
    leaf: &Leaf,
    key: &Keypair,
    bundle: &TrustBundle,
    server: &SpiffeId,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsConfigError> {
    check_key(leaf, key)?;
    let verifier = SpiffeServerVerifier::new(bundle, server.clone())?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_auth_cert(leaf.chain(), key.private_key_der())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A server configuration that presents `leaf` (with `key`) and requires every client to
/// present a chain that verifies against `bundle` and names a SPIFFE ID.
pub fn server_config(
    leaf: &Leaf,
    key: &Keypair,
    bundle: &TrustBundle,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsConfigError> {
    mesh_server(leaf, key, SpiffeClientVerifier::new(bundle)?, alpn)
}

/// A client configuration that presents no certificate and accepts only a server whose chain
/// verifies against `bundle` and whose SPIFFE ID is exactly `server`: how a proxy reaches the
/// identity service before it has a certificate of its own.
pub fn anonymous_client_config(
    bundle: &TrustBundle,
    server: &SpiffeId,
    alpn: &[&[u8]],
) -> Result<ClientConfig, TlsConfigError> {
    let verifier = SpiffeServerVerifier::new(bundle, server.clone())?;
    let mut config = ClientConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A server configuration for the control plane's own ports: presents `leaf` (with `key`); a
/// client may present no certificate (a proxy asking for its first one), and one that does is
/// verified against `bundle` and must name a SPIFFE ID.
pub fn service_server_config(
    leaf: &Leaf,
    key: &Keypair,
    bundle: &TrustBundle,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsConfigError> {
    mesh_server(leaf, key, SpiffeClientVerifier::optional(bundle)?, alpn)
}

/// A server configuration that presents `leaf` and checks clients with `verifier`.
fn mesh_server(
    leaf: &Leaf,
    key: &Keypair,
    verifier: SpiffeClientVerifier,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsConfigError> {
    check_key(leaf, key)?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&TLS13])?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_single_cert(leaf.chain(), key.private_key_der())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A server configuration for clients outside the mesh: presents `certificate` (with `key`),
/// asks for no client certificate. TLS 1.3 only, like every configuration here.
pub fn name_server_config(
    certificate: &ServerCertificate,
    key: &Keypair,
    alpn: &[&[u8]],
) -> Result<ServerConfig, TlsConfigError> {
    if !key_matches(certificate.certificate(), key) {
        let names: Vec<String> = certificate
            .names()
            .iter()
            .map(ToString::to_string)
            .collect();
        return Err(TlsConfigError::NameKeyMismatch(names.join(", ")));
    }
    let mut config = ServerConfig::builder_with_provider(Arc::new(provider()))
        .with_protocol_versions(&[&TLS13])?
        .with_no_client_auth()
        .with_single_cert(certificate.chain(), key.private_key_der())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// A leaf renewed with a new key but configured with the old one would fail every handshake;
/// say so when the configuration is built instead.
fn check_key(leaf: &Leaf, key: &Keypair) -> Result<(), TlsConfigError> {
    if key_matches(leaf.certificate(), key) {
        Ok(())
    } else {
        Err(TlsConfigError::KeyMismatch(leaf.id().clone()))
    }
}

/// Whether `certificate` certifies `key`'s public key.
fn key_matches(certificate: &rustls::pki_types::CertificateDer<'_>, key: &Keypair) -> bool {
    crate::svid::parse(certificate)
        .is_ok_and(|parsed| parsed.public_key().raw == key.public_key_spki().as_slice())
}

#[cfg(test)]
mod tests;
