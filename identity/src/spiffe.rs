//! SPIFFE IDs: the name a workload is known by, and the patterns policies match them with.
//!
//! A SPIFFE ID is a URI, `spiffe://TRUST-DOMAIN/PATH`. herd names a Kubernetes workload by its
//! service account, `spiffe://cluster.local/ns/mastodon/sa/web`, and that string is the whole of
//! a proxy's identity: the CA writes it as the one URI SAN of a leaf certificate, a client
//! compares a server's against the one it expects, and authorization policy matches a client's.
//!
//! Because the comparison is a plain string comparison, the parser is strict, so that one
//! identity has exactly one spelling: no percent-encoding, no upper-case trust domain, no `.` or
//! `..` segment, no empty segment or trailing slash, no query, fragment, port or user. These are
//! the rules of the SPIFFE ID standard; an ID that breaks one is refused rather than normalized,
//! since a normalizing parser would let two different certificates claim the same workload. The
//! length limits (2048 bytes for the ID, 255 for the trust domain) bound what a hostile CSR or
//! certificate can make us hold.
//!
//! [`Matcher`] is the pattern a policy names clients with: either one exact ID, or a prefix of
//! whole path segments followed by `/*`, which matches every ID below it.

use std::fmt;
use std::str::FromStr;

/// The longest SPIFFE ID accepted, in bytes (the SPIFFE standard's limit for a URI SAN).
pub const MAX_ID_BYTES: usize = 2048;
/// The longest trust domain accepted, in bytes (a DNS name's limit).
pub const MAX_TRUST_DOMAIN_BYTES: usize = 255;

const SCHEME: &str = "spiffe://";

/// A valid SPIFFE ID. Two IDs are the same workload exactly when their strings are equal.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// The whole ID, `spiffe://td/path`.
    uri: String,
    /// Where the trust domain ends in `uri` (the path, if any, starts there with `/`).
    domain_end: usize,
}

/// Why a string is not a SPIFFE ID (or a [`Matcher`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("a SPIFFE ID is at most {MAX_ID_BYTES} bytes, this one has {0}")]
    TooLong(usize),
    #[error("a SPIFFE ID starts with `spiffe://`")]
    Scheme,
    #[error("the trust domain is empty")]
    EmptyTrustDomain,
    #[error("a trust domain is at most {MAX_TRUST_DOMAIN_BYTES} bytes, this one has {0}")]
    TrustDomainTooLong(usize),
    #[error(
        "the trust domain has {0:?}: only lower-case letters, digits, `.`, `-` and `_` are allowed"
    )]
    TrustDomainChar(char),
    #[error("the path has an empty segment (`//` or a trailing `/`)")]
    EmptySegment,
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    #[error("the path has {0:?}: only letters, digits, `.`, `-` and `_` are allowed in a segment")]
    PathChar(char),
    #[error("`*` only stands alone as the last path segment, as in `spiffe://td/ns/app/*`")]
    Wildcard,
}

impl SpiffeId {
    /// Parses `s`, refusing anything the SPIFFE standard does not allow (see the module doc).
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        if s.len() > MAX_ID_BYTES {
            return Err(SpiffeIdError::TooLong(s.len()));
        }
        let rest = s.strip_prefix(SCHEME).ok_or(SpiffeIdError::Scheme)?;
        let (domain, path) = match rest.find('/') {
            Some(slash) => rest.split_at(slash),
            None => (rest, ""),
        };
        check_trust_domain(domain)?;
        if !path.is_empty() {
            for segment in path[1..].split('/') {
                check_segment(segment)?;
            }
        }
        Ok(SpiffeId {
            uri: s.to_owned(),
            domain_end: SCHEME.len() + domain.len(),
        })
    }

    /// The ID of a Kubernetes service account: `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT`.
    pub fn kubernetes(
        trust_domain: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<Self, SpiffeIdError> {
        // Each part is one segment: a `/` inside one would make an ID of another shape.
        check_trust_domain(trust_domain)?;
        check_segment(namespace)?;
        check_segment(service_account)?;
        Self::parse(&format!(
            "{SCHEME}{trust_domain}/ns/{namespace}/sa/{service_account}"
        ))
    }

    /// The ID of the trust domain itself, `spiffe://TRUST-DOMAIN` (what a CA certificate names).
    pub fn trust_domain_id(trust_domain: &str) -> Result<Self, SpiffeIdError> {
        Self::parse(&format!("{SCHEME}{trust_domain}"))
    }

    /// The trust domain: `cluster.local` in `spiffe://cluster.local/ns/a/sa/b`.
    pub fn trust_domain(&self) -> &str {
        &self.uri[SCHEME.len()..self.domain_end]
    }

    /// The path with its leading `/`, or `""` for the ID of a trust domain.
    pub fn path(&self) -> &str {
        &self.uri[self.domain_end..]
    }

    /// The namespace, when the path is exactly `/ns/NAMESPACE/sa/ACCOUNT`.
    pub fn namespace(&self) -> Option<&str> {
        self.kubernetes_parts().map(|(namespace, _)| namespace)
    }

    /// The service account, when the path is exactly `/ns/NAMESPACE/sa/ACCOUNT`.
    pub fn service_account(&self) -> Option<&str> {
        self.kubernetes_parts().map(|(_, account)| account)
    }

    /// The whole ID as a string.
    pub fn as_str(&self) -> &str {
        &self.uri
    }

    fn kubernetes_parts(&self) -> Option<(&str, &str)> {
        let mut segments = self.path().strip_prefix('/')?.split('/');
        match (
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
            segments.next(),
        ) {
            (Some("ns"), Some(namespace), Some("sa"), Some(account), None) => {
                Some((namespace, account))
            }
            _ => None,
        }
    }
}

fn check_trust_domain(domain: &str) -> Result<(), SpiffeIdError> {
    if domain.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain);
    }
    if domain.len() > MAX_TRUST_DOMAIN_BYTES {
        return Err(SpiffeIdError::TrustDomainTooLong(domain.len()));
    }
    match domain
        .chars()
        .find(|&c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')))
    {
        Some(c) => Err(SpiffeIdError::TrustDomainChar(c)),
        None => Ok(()),
    }
}

fn check_segment(segment: &str) -> Result<(), SpiffeIdError> {
    match segment {
        "" => return Err(SpiffeIdError::EmptySegment),
        "." | ".." => return Err(SpiffeIdError::DotSegment),
        _ => {}
    }
    match segment
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        Some('*') => Err(SpiffeIdError::Wildcard),
        Some(c) => Err(SpiffeIdError::PathChar(c)),
        None => Ok(()),
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.uri)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A policy's name for one client or a family of them.
///
/// - `spiffe://cluster.local/ns/mastodon/sa/web` matches that ID only.
/// - `spiffe://cluster.local/ns/mastodon/sa/*` matches every ID whose path continues below
///   `/ns/mastodon/sa/` by one or more whole segments: `.../sa/web`, `.../sa/sidekiq`, but not
///   `.../sa` itself, nor `.../sab/web`, nor any ID of another trust domain.
/// - `spiffe://cluster.local/*` matches every workload of the trust domain.
///
/// `*` stands only as the whole last segment: `.../sa/web-*` is refused rather than read as a
/// glob, so a pattern never matches more than its author can see at a glance.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Matcher {
    /// Exactly this ID.
    Exact(SpiffeId),
    /// Every ID strictly below this one (written with a trailing `/*`).
    Below(SpiffeId),
}

impl Matcher {
    /// Parses an exact ID or an ID followed by `/*`.
    pub fn parse(s: &str) -> Result<Self, SpiffeIdError> {
        match s.strip_suffix("/*") {
            Some(prefix) => SpiffeId::parse(prefix).map(Matcher::Below),
            None => SpiffeId::parse(s).map(Matcher::Exact),
        }
    }

    /// Whether `id` is named by this pattern.
    pub fn matches(&self, id: &SpiffeId) -> bool {
        match self {
            Matcher::Exact(exact) => exact == id,
            Matcher::Below(prefix) => id
                .as_str()
                .strip_prefix(prefix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/')),
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Matcher::Exact(id) => write!(f, "{id}"),
            Matcher::Below(prefix) => write!(f, "{prefix}/*"),
        }
    }
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Matcher({self})")
    }
}

impl FromStr for Matcher {
    type Err = SpiffeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests;
