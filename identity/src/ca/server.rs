//! Server certificates for DNS names and IP addresses: what a client that is not a mesh proxy
//! checks.
//!
//! The mesh's leaves name a SPIFFE ID only, and herd's own peers compare that URI themselves.
//! Kubernetes' API server does not: it calls herd-control's injector webhook over HTTPS and
//! checks the certificate the way every web client does, by the DNS name (or IP address) in the
//! webhook's URL against the certificate's subjectAltNames, chained to the webhook's
//! `caBundle`. So the issuer can also sign a certificate for names: the same CA, the same
//! validity rules (a clock-skew margin before now, never past the issuer's own end, a random
//! serial), but
//!
//! - the subjectAltNames are the DNS names and IP addresses asked for, and nothing else: no
//!   SPIFFE ID, so a mesh peer never accepts one of these as a workload;
//! - extendedKeyUsage is serverAuth only: the certificate cannot authenticate a client;
//! - the subject is empty (the names are in the SAN, marked critical, as for leaves): web
//!   clients have ignored the common name for years.
//!
//! Names are checked before anything is signed: a DNS name must be one a client could ask for
//! (letters, digits, hyphens, dots; an optional leading `*.` wildcard label), an IP address is
//! v4 or v6; an empty list is refused.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;

use super::{IssueError, Issuer, random_serial, whole_seconds};
use crate::bundle::certificates_to_pem;
use crate::csr::Keypair;

/// A name a server certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerName {
    /// A DNS name, lower case.
    Dns(String),
    Ip(IpAddr),
}

/// Why a server name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ServerNameError {
    #[error("`{0}` is neither a DNS name nor an IP address")]
    Invalid(String),
}

impl ServerName {
    /// Reads `text` as an IP address, else as a DNS name (lower-cased; a trailing dot dropped).
    pub fn parse(text: &str) -> Result<Self, ServerNameError> {
        let trimmed = text.trim();
        if let Ok(ip) = trimmed.parse::<IpAddr>() {
            return Ok(ServerName::Ip(ip));
        }
        let name = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if is_dns_name(name) {
            Ok(ServerName::Dns(name.to_ascii_lowercase()))
        } else {
            Err(ServerNameError::Invalid(text.to_owned()))
        }
    }
}

impl std::fmt::Display for ServerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerName::Dns(name) => f.write_str(name),
            ServerName::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// A DNS name a client can ask for: up to 253 characters of labels of 1 to 63 letters, digits
/// and hyphens (not at either end), the first label possibly `*`. A name of one label
/// (`localhost`) is allowed; an all-numeric last label is not (it would read as an address).
fn is_dns_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    let labels: Vec<&str> = name.split('.').collect();
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let last = labels[labels.len() - 1];
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    labels
        .iter()
        .enumerate()
        .all(|(i, label)| (i == 0 && *label == "*" && labels.len() > 2) || label_ok(label))
}

/// A server certificate with the chain it is presented with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerCertificate {
    names: Vec<ServerName>,
    certificate: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl ServerCertificate {
    /// The names it is for, as asked.
    pub fn names(&self) -> &[ServerName] {
        &self.names
    }

    pub fn certificate(&self) -> &CertificateDer<'static> {
        &self.certificate
    }

    /// What a TLS client is sent: the certificate, then the issuer's intermediates.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        std::iter::once(&self.certificate)
            .chain(&self.intermediates)
            .cloned()
            .collect()
    }

    /// [`ServerCertificate::chain`] as PEM.
    pub fn to_pem(&self) -> String {
        certificates_to_pem(&self.chain())
    }

    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

impl Issuer {
    /// Signs a server certificate for `key` naming `names` (DNS names and IP addresses), valid
    /// for `lifetime` from now; see the module doc for what it holds.
    pub fn issue_server(
        &self,
        key: &Keypair,
        names: &[ServerName],
        lifetime: Duration,
    ) -> Result<ServerCertificate, IssueError> {
        self.issue_server_at(key, names, lifetime, SystemTime::now())
    }

    /// [`Issuer::issue_server`] with the clock as an argument.
    pub fn issue_server_at(
        &self,
        key: &Keypair,
        names: &[ServerName],
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<ServerCertificate, IssueError> {
        if names.is_empty() {
            return Err(IssueError::NoServerNames);
        }
        let (not_before, not_after) = self.validity(lifetime, whole_seconds(now))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = names
            .iter()
            .map(|name| match name {
                ServerName::Dns(dns) => dns.clone().try_into().map(SanType::DnsName),
                ServerName::Ip(ip) => Ok(SanType::IpAddress(*ip)),
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial()?);
        params.use_authority_key_identifier_extension = true;
        let certificate = params.signed_by(key.signing_key(), &self.signer)?;
        Ok(ServerCertificate {
            names: names.to_vec(),
            certificate: certificate.der().clone(),
            intermediates: self.chain.clone(),
            not_before,
            not_after,
        })
    }
}

#[cfg(test)]
mod tests;
