//! Reading the identity out of a certificate (an X.509-SVID, in SPIFFE's words).
//!
//! webpki verifies chains and DNS or IP names, but it does not read URI SANs, so once a chain
//! is verified this module finds the SPIFFE ID with x509-parser. The rule is the SPIFFE one: a
//! workload certificate has exactly one URI SAN and it is a valid SPIFFE ID naming a workload
//! (a path, not the bare trust domain). Other names beside it (a DNS name) are ignored; two
//! URIs are refused, since either could be the one a peer meant to present.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::csr::quote;
use crate::spiffe::{SpiffeId, SpiffeIdError};

/// Why a certificate names no usable SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SvidError {
    #[error("the certificate is not readable X.509: {0}")]
    Unreadable(String),
    #[error("the certificate has no URI SAN")]
    NoUri,
    #[error("the certificate has {0} URI SANs; a workload certificate has exactly one")]
    SeveralUris(usize),
    #[error("the certificate's URI SAN {uri:?} is not a SPIFFE ID: {source}")]
    NotSpiffe { uri: String, source: SpiffeIdError },
    #[error("the certificate names the trust domain {0} itself, not a workload in it")]
    NoWorkload(SpiffeId),
}

/// The certificate's SPIFFE ID, by the rule of the module doc.
pub fn identity_of(certificate: &CertificateDer<'_>) -> Result<SpiffeId, SvidError> {
    identity_in(&parse(certificate)?)
}

pub(crate) fn parse<'a>(
    certificate: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, SvidError> {
    match x509_parser::parse_x509_certificate(certificate) {
        Ok(([], parsed)) => Ok(parsed),
        Ok((rest, _)) => Err(SvidError::Unreadable(format!(
            "{} bytes after the certificate",
            rest.len()
        ))),
        Err(e) => Err(SvidError::Unreadable(e.to_string())),
    }
}

pub(crate) fn identity_in(certificate: &X509Certificate<'_>) -> Result<SpiffeId, SvidError> {
    // `subject_alternative_name` refuses a certificate with the extension twice.
    let san = certificate
        .subject_alternative_name()
        .map_err(|e| SvidError::Unreadable(e.to_string()))?
        .ok_or(SvidError::NoUri)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    let uri = match uris.as_slice() {
        [] => return Err(SvidError::NoUri),
        [uri] => *uri,
        several => return Err(SvidError::SeveralUris(several.len())),
    };
    let id = SpiffeId::parse(uri).map_err(|source| SvidError::NotSpiffe {
        uri: quote(uri),
        source,
    })?;
    if id.path().is_empty() {
        return Err(SvidError::NoWorkload(id));
    }
    Ok(id)
}

/// The certificate's notAfter: how long a connection it authenticated may be trusted.
pub fn not_after_of(certificate: &CertificateDer<'_>) -> Result<SystemTime, SvidError> {
    Ok(validity_in(&parse(certificate)?).1)
}

/// The certificate's notBefore and notAfter.
pub(crate) fn validity_in(certificate: &X509Certificate<'_>) -> (SystemTime, SystemTime) {
    let validity = certificate.validity();
    (
        system_time(validity.not_before.timestamp()),
        system_time(validity.not_after.timestamp()),
    )
}

fn system_time(unix_seconds: i64) -> SystemTime {
    match u64::try_from(unix_seconds) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(unix_seconds.unsigned_abs()),
    }
}

#[cfg(test)]
mod tests;
