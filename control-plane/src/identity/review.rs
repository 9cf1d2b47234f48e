//! Kubernetes tokens: a projected ServiceAccount token, checked with the TokenReview API.
//!
//! In a cluster, a pod proves who it is with the token the kubelet projects into it for the
//! audience herd-control names (`--token-audience`, default `herd`). herd-control does not check
//! the token's signature itself: it asks the API server with a TokenReview whose
//! `spec.audiences` is that one audience, which also refuses an expired token, a token of a
//! deleted pod or ServiceAccount, and a token minted for anything else (the API server's own
//! audience, another service's), so that a token a pod gave some other service cannot be
//! replayed here. herd-control needs RBAC `create` on `tokenreviews.authentication.k8s.io`.
//!
//! The answer is then read strictly ([`identity_of`]): authenticated, our audience among the
//! ones the server says the token is good for (a server that ignored `spec.audiences` would
//! otherwise pass any token), and the user a service account, `system:serviceaccount:NS:SA`,
//! whose identity is `spiffe://TRUST-DOMAIN/ns/NS/sa/SA`. Any other user (a person, a node) is
//! refused: only workloads get certificates.

use std::time::Duration;

use futures_util::future::BoxFuture;
use herd_identity::SpiffeId;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::PostParams;

use crate::identity::token::{Authenticate, TokenError};

/// How long one TokenReview may take before the caller is told to retry.
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The TokenReview authenticator.
#[derive(Clone)]
pub struct TokenReviewer {
    api: kube::Api<TokenReview>,
    audience: String,
    trust_domain: String,
}

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: &str, trust_domain: &str) -> Self {
        TokenReviewer {
            api: kube::Api::all(client),
            audience: audience.to_owned(),
            trust_domain: trust_domain.to_owned(),
        }
    }

    async fn review(&self, token: &str) -> Result<SpiffeId, TokenError> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_owned(),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..TokenReview::default()
        };
        let answer = tokio::time::timeout(
            REVIEW_TIMEOUT,
            self.api.create(&PostParams::default(), &review),
        )
        .await
        .map_err(|_| {
            TokenError::Unavailable(format!("no TokenReview answer in {REVIEW_TIMEOUT:?}"))
        })?
        // kube's error names the request and the server's status, never the body we sent.
        .map_err(|e| TokenError::Unavailable(format!("TokenReview failed: {e}")))?;
        identity_of(
            &answer.status.unwrap_or_default(),
            &self.audience,
            &self.trust_domain,
        )
    }
}

impl Authenticate for TokenReviewer {
    fn authenticate<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<SpiffeId, TokenError>> {
        Box::pin(self.review(token))
    }
}

/// The identity a TokenReview's answer proves, by the rules of the module doc.
pub fn identity_of(
    status: &TokenReviewStatus,
    audience: &str,
    trust_domain: &str,
) -> Result<SpiffeId, TokenError> {
    if status.authenticated != Some(true) {
        let why = status
            .error
            .as_deref()
            .filter(|e| !e.is_empty())
            .unwrap_or("not authenticated");
        // The server's reason, on one line and bounded; it never repeats the token.
        let why: String = why
            .lines()
            .next()
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        return Err(TokenError::Refused(why));
    }
    let audiences = status.audiences.clone().unwrap_or_default();
    if !audiences.iter().any(|a| a == audience) {
        return Err(TokenError::Audience {
            expected: audience.to_owned(),
            got: audiences,
        });
    }
    let username = status
        .user
        .as_ref()
        .and_then(|u| u.username.clone())
        .unwrap_or_default();
    let Some((namespace, account)) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
    else {
        return Err(TokenError::NotServiceAccount(username));
    };
    SpiffeId::kubernetes(trust_domain, namespace, account)
        .map_err(|_| TokenError::BadAccount(username.clone()))
}

#[cfg(test)]
mod tests;
