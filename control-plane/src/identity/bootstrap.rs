//! Bootstrap tokens: a file mapping tokens to identities, for workloads outside a cluster.
//!
//! A machine with no Kubernetes ServiceAccount (a database host in the home lab, a VM running
//! Redis) still needs an identity. The operator writes a token for it into the file given with
//! `--bootstrap-tokens`, and the same token into that machine's proxy configuration:
//!
//! ```yaml
//! tokens:
//!   - token: 6cdb1f0e9a4d4e8f8b3c2a71d5e0f4a2   # a random secret of 16 bytes or more
//!     namespace: data                        # the identity it proves is
//!     serviceAccount: postgres               # spiffe://TRUST-DOMAIN/ns/data/sa/postgres
//! ```
//!
//! Identities take the Kubernetes shape so that policies name machines in and out of the cluster
//! the same way. The file is validated as a whole, and the first mistake refuses it with one
//! `FILE:LINE:COLUMN: tokens[I].FIELD: message` line: an unknown key, a missing field, a token
//! under 16 bytes (short enough to guess), the same token twice (it would prove two identities),
//! a namespace or account that is not one SPIFFE path segment. Several tokens may prove the same
//! identity, so one can be replaced without a gap. Changes are picked up without a restart.
//!
//! The file holds secrets, so the tokens are not kept: only their SHA-256 digests are, and a
//! presented token's digest is compared with every entry's without stopping at the first
//! difference or the first match, so how long a refusal takes says nothing about how close a
//! guess came.

use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use herd_identity::SpiffeId;
use ring::digest::{SHA256, digest};
use serde::Deserialize;
use serde_saphyr::{Location, Spanned};
use tokio::sync::watch;

use crate::identity::token::{Authenticate, TokenError};

/// The shortest bootstrap token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;

/// The tokens of one version of the file, by digest.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct BootstrapTokens {
    entries: Vec<([u8; 32], SpiffeId)>,
}

impl std::fmt::Debug for BootstrapTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(_, id)| id))
            .finish()
    }
}

/// Why a tokens file was refused: one line, `FILE:LINE:COLUMN: PATH: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BootstrapError(String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tokens: Option<Vec<Spanned<RawToken>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawToken {
    token: Spanned<String>,
    namespace: Spanned<String>,
    service_account: Spanned<String>,
}

impl BootstrapTokens {
    /// Reads and validates the file at `path`; identities are in `trust_domain`.
    pub fn load(path: &Path, trust_domain: &str) -> Result<Self, BootstrapError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BootstrapError(format!("{}: cannot read: {e}", path.display())))?;
        Self::parse(&text, &path.display().to_string(), trust_domain)
    }

    /// Parses the text of a tokens file; `file` names it in errors.
    pub fn parse(text: &str, file: &str, trust_domain: &str) -> Result<Self, BootstrapError> {
        let at = |location: Location, path: &str, message: &str| {
            BootstrapError(format!(
                "{file}:{}:{}: {path}: {message}",
                location.line(),
                location.column()
            ))
        };
        let options = serde_saphyr::options! { with_snippet: false };
        let raw: Option<RawFile> =
            serde_saphyr::from_str_with_options(text, options).map_err(|e| {
                // serde-saphyr's message, on one line, without its own location suffix.
                let message = e.to_string();
                let message = message.lines().next().unwrap_or("invalid YAML");
                let message = message.split(" at line ").next().unwrap_or(message);
                match e.location() {
                    Some(l) if l.line() > 0 => {
                        BootstrapError(format!("{file}:{}:{}: {message}", l.line(), l.column()))
                    }
                    _ => BootstrapError(format!("{file}: {message}")),
                }
            })?;
        let mut tokens = BootstrapTokens::default();
        for (i, entry) in raw
            .and_then(|raw| raw.tokens)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let entry = &entry.value;
            let token = &entry.token;
            if token.value.len() < MIN_TOKEN_BYTES {
                return Err(at(
                    token.referenced,
                    &format!("tokens[{i}].token"),
                    &format!(
                        "a bootstrap token has at least {MIN_TOKEN_BYTES} bytes (this one has {}): a short one can be guessed",
                        token.value.len()
                    ),
                ));
            }
            let id = SpiffeId::kubernetes(
                trust_domain,
                &entry.namespace.value,
                &entry.service_account.value,
            )
            .map_err(|e| {
                // Which of the two is at fault: each must be a SPIFFE path segment alone.
                let (field, spanned) =
                    if SpiffeId::kubernetes(trust_domain, &entry.namespace.value, "a").is_err() {
                        ("namespace", &entry.namespace)
                    } else {
                        ("serviceAccount", &entry.service_account)
                    };
                at(
                    spanned.referenced,
                    &format!("tokens[{i}].{field}"),
                    &e.to_string(),
                )
            })?;
            let digest = token_digest(&token.value);
            if let Some(first) = tokens.entries.iter().position(|(d, _)| *d == digest) {
                return Err(at(
                    token.referenced,
                    &format!("tokens[{i}].token"),
                    &format!("the same token as tokens[{first}]: a token proves one identity"),
                ));
            }
            tokens.entries.push((digest, id));
        }
        Ok(tokens)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The identity `token` proves, comparing its digest with every entry's (see the module
    /// doc).
    pub fn identity(&self, token: &str) -> Option<&SpiffeId> {
        let presented = token_digest(token);
        let mut found = None;
        for (digest, id) in &self.entries {
            let difference = digest
                .iter()
                .zip(&presented)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if difference == 0 {
                found = Some(id);
            }
        }
        found
    }
}

fn token_digest(token: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

/// The bootstrap authenticator: the tokens of the file's last good version.
#[derive(Clone)]
pub struct Bootstrap {
    tokens: watch::Receiver<Arc<BootstrapTokens>>,
}

impl Bootstrap {
    pub fn new(tokens: watch::Receiver<Arc<BootstrapTokens>>) -> Self {
        Bootstrap { tokens }
    }
}

impl Authenticate for Bootstrap {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<SpiffeId, TokenError>> {
        let tokens = self.tokens.borrow().clone();
        Box::pin(async move { tokens.identity(token).cloned().ok_or(TokenError::Unknown) })
    }
}

#[cfg(test)]
mod tests;
