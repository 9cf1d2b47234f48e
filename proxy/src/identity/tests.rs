use std::time::{Duration, SystemTime};

use herd_api::identity::CertifyResponse;
use herd_identity::{CsrLimits, Issuer, Keypair, SpiffeId, build_csr, inspect_csr};

use super::*;

const WEB: &str = "spiffe://cluster.local/ns/mastodon/sa/web";

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

/// What the identity service would answer for `key` claiming `who`, signed by `issuer`.
fn answer(issuer: &Issuer, key: &Keypair, who: &str, lifetime: Duration) -> CertifyResponse {
    let csr = inspect_csr(&build_csr(key, &id(who)).unwrap(), &CsrLimits::default()).unwrap();
    let leaf = issuer.issue(&csr, &id(who), lifetime).unwrap();
    CertifyResponse {
        certificate_chain: leaf.chain().iter().map(|c| c.to_vec()).collect(),
        trust_bundle: vec![issuer.certificate().to_vec()],
        not_after: 0,
    }
}

/// Credentials for `who` from a throwaway CA, as a renewal would put in use.
pub(crate) fn credentials(who: &str, lifetime: Duration) -> Credentials {
    let issuer = Issuer::generate("cluster.local", Duration::from_secs(3600 * 24 * 365)).unwrap();
    credentials_from(&issuer, &[], who, lifetime)
}

/// A CA for [`credentials_from`].
pub(crate) fn issuer() -> Issuer {
    Issuer::generate("cluster.local", Duration::from_secs(3600 * 24 * 365)).unwrap()
}

/// Credentials for `who` signed by `issuer`, trusting `issuer` and `also` (in that order).
pub(crate) fn credentials_from(
    issuer: &Issuer,
    also: &[&Issuer],
    who: &str,
    lifetime: Duration,
) -> Credentials {
    let key = Keypair::generate().unwrap();
    let mut reply = answer(issuer, &key, who, lifetime);
    reply
        .trust_bundle
        .extend(also.iter().map(|i| i.certificate().to_vec()));
    accept(reply, &id(who), key).unwrap()
}

#[test]
fn a_good_answer_becomes_credentials_with_configs_per_server_identity() {
    let issuer = Issuer::generate("cluster.local", Duration::from_secs(3600 * 24 * 365)).unwrap();
    let key = Keypair::generate().unwrap();
    let reply = answer(&issuer, &key, WEB, Duration::from_secs(3600));
    let credentials = accept(reply, &id(WEB), key).unwrap();
    assert_eq!(credentials.id, id(WEB));
    assert_eq!(
        credentials.server.alpn_protocols,
        [b"h2".to_vec(), b"http/1.1".to_vec()]
    );
    let db = id("spiffe://cluster.local/ns/mastodon/sa/db");
    let a = credentials.client_for(&db, Alpn::H2).unwrap();
    let b = credentials.client_for(&db, Alpn::H2).unwrap();
    assert!(
        Arc::ptr_eq(&a, &b),
        "one configuration per server identity, kept"
    );
    assert_eq!(a.alpn_protocols, [b"h2".to_vec()]);
    let other = credentials.client_for(&id(WEB), Alpn::H2).unwrap();
    assert!(!Arc::ptr_eq(&a, &other));
    let upgrade = credentials.client_for(&db, Alpn::Http1).unwrap();
    assert_eq!(upgrade.alpn_protocols, [b"http/1.1".to_vec()]);
    let opaque = credentials.client_for(&db, Alpn::Opaque).unwrap();
    assert!(opaque.alpn_protocols.is_empty());
}

#[test]
fn an_answer_for_another_identity_or_from_outside_its_bundle_is_refused() {
    let issuer = Issuer::generate("cluster.local", Duration::from_secs(3600 * 24 * 365)).unwrap();
    let key = Keypair::generate().unwrap();
    let sidekiq = "spiffe://cluster.local/ns/mastodon/sa/sidekiq";
    let reply = answer(&issuer, &key, sidekiq, Duration::from_secs(3600));
    let error = accept(reply, &id(WEB), key).err().unwrap();
    assert!(
        error
            .to_string()
            .contains(&format!("names {sidekiq} instead of {WEB}")),
        "{error}"
    );

    let key = Keypair::generate().unwrap();
    let mut reply = answer(&issuer, &key, WEB, Duration::from_secs(3600));
    let stranger = Issuer::generate("cluster.local", Duration::from_secs(3600)).unwrap();
    reply.trust_bundle = vec![stranger.certificate().to_vec()];
    let error = accept(reply, &id(WEB), key).err().unwrap();
    assert!(error.to_string().contains("does not verify"), "{error}");

    let key = Keypair::generate().unwrap();
    let mut reply = answer(&issuer, &key, WEB, Duration::from_secs(3600));
    reply.certificate_chain.clear();
    assert!(accept(reply, &id(WEB), key).is_err());
}

#[test]
fn a_leaf_signed_for_another_key_is_refused() {
    let issuer = Issuer::generate("cluster.local", Duration::from_secs(3600 * 24 * 365)).unwrap();
    let signed = Keypair::generate().unwrap();
    let reply = answer(&issuer, &signed, WEB, Duration::from_secs(3600));
    let error = accept(reply, &id(WEB), Keypair::generate().unwrap())
        .err()
        .unwrap();
    assert!(matches!(error, CertifyError::Tls(_)), "{error}");
}

#[test]
fn renewal_falls_between_sixty_and_seventy_percent_of_what_is_left() {
    let issuer = Issuer::generate("cluster.local", Duration::from_secs(3600 * 24 * 365)).unwrap();
    let key = Keypair::generate().unwrap();
    // A one-minute leaf, as the rotation tests use: its notBefore is backdated five minutes, and
    // renewal must still come after it arrived, not in a loop.
    let reply = answer(&issuer, &key, WEB, Duration::from_secs(60));
    let credentials = accept(reply, &id(WEB), key).unwrap();
    let leaf = &credentials.leaf;
    let received = leaf.not_after() - Duration::from_secs(60);
    let after = |draw| {
        jittered_renewal(leaf, received, draw)
            .duration_since(received)
            .unwrap()
    };
    assert_eq!(after(0.0), Duration::from_secs(42));
    assert_eq!(after(1.0), Duration::from_secs(36));
    assert_eq!(after(0.5), Duration::from_secs(39));
    assert!(!credentials.expired(SystemTime::now()));
    assert!(credentials.expired(leaf.not_after()));
}

#[tokio::test]
async fn expired_credentials_are_withdrawn_and_say_why() {
    let issuer = Issuer::generate("cluster.local", Duration::from_secs(3600 * 24 * 365)).unwrap();
    let key = Keypair::generate().unwrap();
    let csr = inspect_csr(&build_csr(&key, &id(WEB)).unwrap(), &CsrLimits::default()).unwrap();
    let long_ago = SystemTime::now() - Duration::from_secs(7200);
    let leaf = issuer
        .issue_at(&csr, &id(WEB), Duration::from_secs(3600), long_ago)
        .unwrap();
    let bundle = TrustBundle::from_pem(&issuer.certificate_pem()).unwrap();
    let expired = Credentials::new(id(WEB), leaf, key, bundle).unwrap();
    let identity = Identity::fixed(Some(Arc::new(expired)));
    assert!(identity.current().is_none());
    assert_eq!(
        identity.missing_reason(),
        "its certificate expired and could not be renewed"
    );
    let none = Identity::fixed(None);
    assert_eq!(none.missing_reason(), "it has no certificate yet");
}
