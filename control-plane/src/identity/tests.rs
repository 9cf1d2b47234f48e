//! The `Certify` steps with an in-memory CA and bootstrap tokens, and the CA files' watcher.

use std::time::Duration;

use herd_identity::{CsrLimits, Issuer, Keypair, SpiffeId, build_csr};

use super::authority::{Ca, CaFiles};
use super::bootstrap::{Bootstrap, BootstrapTokens};
use super::token::{Authenticate, Chain, MAX_TOKEN_BYTES, TokenError};
use super::*;

const DAY: Duration = Duration::from_secs(24 * 60 * 60);
const TOKEN: &str = "0123456789abcdef-web";

fn web() -> SpiffeId {
    SpiffeId::kubernetes("cluster.local", "mastodon", "web").unwrap()
}

fn service(issuer: Issuer) -> (IdentityService, Metrics) {
    let bundle = herd_identity::TrustBundle::from_pem(&issuer.certificate_pem()).unwrap();
    let (_tx, ca) = watch::channel(Arc::new(Ca { issuer, bundle }));
    let tokens = BootstrapTokens::parse(
        &format!("tokens:\n  - token: {TOKEN}\n    namespace: mastodon\n    serviceAccount: web\n"),
        "tokens.yaml",
        "cluster.local",
    )
    .unwrap();
    let (_, tokens) = watch::channel(Arc::new(tokens));
    let metrics = Metrics::new();
    let chain = Chain::new().with(Bootstrap::new(tokens));
    (
        IdentityService::new(ca, Arc::new(chain), DAY, metrics.clone()),
        metrics,
    )
}

fn csr_for(id: &SpiffeId) -> Vec<u8> {
    build_csr(&Keypair::generate().unwrap(), id).unwrap()
}

#[tokio::test]
async fn a_good_csr_and_token_get_a_leaf_for_the_tokens_identity() {
    let (service, _) = service(Issuer::generate("cluster.local", 365 * DAY).unwrap());
    let certified = service.certify(&csr_for(&web()), TOKEN).await.unwrap();
    assert_eq!(certified.leaf.id(), &web());
    assert_eq!(certified.bundle.len(), 1);
    let lifetime = certified
        .leaf
        .not_after()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        lifetime > DAY - Duration::from_secs(10) && lifetime <= DAY,
        "{lifetime:?}"
    );
}

#[tokio::test]
async fn each_refusal_has_its_status_and_bounded_reason() {
    let (service, _) = service(Issuer::generate("cluster.local", 365 * DAY).unwrap());
    let sidekiq = SpiffeId::kubernetes("cluster.local", "mastodon", "sidekiq").unwrap();
    let cases: Vec<(Vec<u8>, String, tonic::Code, &str)> = vec![
        (
            csr_for(&web()),
            "wrong-token-0000000".into(),
            tonic::Code::Unauthenticated,
            "token",
        ),
        (
            csr_for(&web()),
            String::new(),
            tonic::Code::Unauthenticated,
            "token",
        ),
        (
            csr_for(&web()),
            "x".repeat(MAX_TOKEN_BYTES + 1),
            tonic::Code::Unauthenticated,
            "token",
        ),
        (
            csr_for(&sidekiq),
            TOKEN.into(),
            tonic::Code::PermissionDenied,
            "identity",
        ),
        (
            b"garbage".to_vec(),
            TOKEN.into(),
            tonic::Code::InvalidArgument,
            "csr",
        ),
        (
            vec![0; CsrLimits::default().max_der_bytes + 1],
            TOKEN.into(),
            tonic::Code::InvalidArgument,
            "csr",
        ),
    ];
    for (csr, token, code, reason) in cases {
        let error = service.certify(&csr, &token).await.unwrap_err();
        assert_eq!(error.status().code(), code, "{error}");
        assert_eq!(error.reason(), reason, "{error}");
        if token.len() > 4 {
            assert!(
                !error.to_string().contains(&token),
                "the token is repeated: {error}"
            );
        }
    }
}

struct Unavailable;

impl Authenticate for Unavailable {
    fn authenticate<'a>(
        &'a self,
        _token: &'a str,
    ) -> futures_util::future::BoxFuture<'a, Result<SpiffeId, TokenError>> {
        Box::pin(async { Err(TokenError::Unavailable("no answer".into())) })
    }
}

#[tokio::test]
async fn a_chain_asks_the_next_authenticator_only_for_tokens_it_does_not_know() {
    let tokens = BootstrapTokens::parse(
        &format!("tokens:\n  - token: {TOKEN}\n    namespace: mastodon\n    serviceAccount: web\n"),
        "tokens.yaml",
        "cluster.local",
    )
    .unwrap();
    let (_tx, rx) = watch::channel(Arc::new(tokens));
    let chain = Chain::new().with(Bootstrap::new(rx)).with(Unavailable);
    assert_eq!(chain.authenticate(TOKEN).await.unwrap(), web());
    let error = chain
        .authenticate("another-token-000000")
        .await
        .unwrap_err();
    assert_eq!(error.reason(), "token-review-unavailable");
    let error = CertifyError::Token(error);
    assert_eq!(error.status().code(), tonic::Code::Unavailable);
    assert_eq!(
        Chain::new().authenticate(TOKEN).await,
        Err(TokenError::Unknown)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_ca_files_are_reread_when_one_is_renamed_over() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let staged = dir.path().join(format!(".{name}.new"));
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, dir.path().join(name)).unwrap();
    };
    let (old, new) = (
        Issuer::generate("cluster.local", 365 * DAY).unwrap(),
        Issuer::generate("cluster.local", 365 * DAY).unwrap(),
    );
    write("ca.crt", &old.certificate_pem());
    write("ca.key", &old.key_pem());
    write("bundle.pem", &old.certificate_pem());
    let files = CaFiles {
        cert: dir.path().join("ca.crt"),
        key: dir.path().join("ca.key"),
        bundle: Some(dir.path().join("bundle.pem")),
        trust_domain: "cluster.local".into(),
    };
    let metrics = Metrics::new();
    let (mut rx, _watcher) =
        watch_ca(files.clone(), files.load().unwrap(), metrics.clone()).unwrap();
    assert_eq!(metrics.trust_bundle_roots.get(), 1);

    // A bad version in between is logged and skipped (the integration tests watch the log).
    write("bundle.pem", "junk");
    write(
        "bundle.pem",
        &format!("{}{}", old.certificate_pem(), new.certificate_pem()),
    );
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|ca| ca.bundle.len() == 2),
    )
    .await
    .expect("reloaded")
    .unwrap();
    assert_eq!(metrics.trust_bundle_roots.get(), 2);
}
