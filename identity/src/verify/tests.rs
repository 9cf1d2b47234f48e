//! The verifiers called as rustls calls them; `tls/tests.rs` runs them in real handshakes.

use std::time::{Duration, SystemTime};

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, SanType};

use super::*;
use crate::ca::{Issuer, Leaf};
use crate::testkit::{DAY, bundle_of, ca, intermediate_of, sidekiq, web, workload, workload_at};

fn server_check(bundle: &TrustBundle, expected: SpiffeId, leaf: &Leaf) -> Result<(), Error> {
    let chain = leaf.chain();
    SpiffeServerVerifier::new(bundle, expected)
        .unwrap()
        .verify_server_cert(
            &chain[0],
            &chain[1..],
            &ServerName::try_from("ignored.example").unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
}

fn client_check(bundle: &TrustBundle, leaf: &Leaf) -> Result<(), Error> {
    let chain = leaf.chain();
    SpiffeClientVerifier::new(bundle)
        .unwrap()
        .verify_client_cert(&chain[0], &chain[1..], UnixTime::now())
        .map(|_| ())
}

#[test]
fn a_server_with_the_expected_identity_passes_whatever_name_was_dialed() {
    let issuer = ca();
    let (leaf, _) = workload(&issuer, &web());
    assert_eq!(server_check(&bundle_of(&[&issuer]), web(), &leaf), Ok(()));
}

#[test]
fn a_server_with_another_identity_is_refused_naming_both() {
    let issuer = ca();
    let (leaf, _) = workload(&issuer, &sidekiq());
    let err = server_check(&bundle_of(&[&issuer]), web(), &leaf).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(
            "the server is spiffe://cluster.local/ns/mastodon/sa/sidekiq, \
             not the expected spiffe://cluster.local/ns/mastodon/sa/web"
        ),
        "{message}"
    );
}

#[test]
fn a_leaf_of_an_untrusted_ca_is_refused_by_both_sides() {
    let (trusted, stranger) = (ca(), ca());
    let (leaf, _) = workload(&stranger, &web());
    let bundle = bundle_of(&[&trusted]);
    let unknown = Error::InvalidCertificate(CertificateError::UnknownIssuer);
    assert_eq!(server_check(&bundle, web(), &leaf), Err(unknown.clone()));
    assert_eq!(client_check(&bundle, &leaf), Err(unknown));
}

#[test]
fn an_expired_leaf_is_refused_by_both_sides() {
    let issuer = ca();
    let two_days_ago = SystemTime::now() - 2 * DAY;
    let (leaf, _) = workload_at(&issuer, &web(), Duration::from_secs(3600), two_days_ago);
    let bundle = bundle_of(&[&issuer]);
    for err in [
        server_check(&bundle, web(), &leaf).unwrap_err(),
        client_check(&bundle, &leaf).unwrap_err(),
    ] {
        assert!(
            matches!(
                err,
                Error::InvalidCertificate(CertificateError::ExpiredContext { .. })
            ),
            "{err}"
        );
    }
}

#[test]
fn during_a_root_rotation_leaves_of_either_root_pass() {
    let (old, new) = (ca(), ca());
    let bundle = bundle_of(&[&old, &new]);
    for issuer in [&old, &new] {
        let (leaf, _) = workload(issuer, &web());
        assert_eq!(server_check(&bundle, web(), &leaf), Ok(()));
        assert_eq!(client_check(&bundle, &leaf), Ok(()));
    }
    // Once the old root is removed, its leaves no longer pass.
    let mut after = bundle.clone();
    after.remove(old.certificate());
    let (stale, _) = workload(&old, &web());
    assert!(server_check(&after, web(), &stale).is_err());
}

#[test]
fn a_leaf_of_an_intermediate_passes_with_only_the_root_in_the_bundle() {
    let root = ca();
    let (cert, key) = intermediate_of(&root);
    let intermediate = Issuer::from_pem(&cert, &key).unwrap();
    let (leaf, _) = workload(&intermediate, &web());
    assert_eq!(leaf.chain().len(), 2);
    let bundle = bundle_of(&[&root]);
    assert_eq!(server_check(&bundle, web(), &leaf), Ok(()));
    assert_eq!(client_check(&bundle, &leaf), Ok(()));
}

/// A certificate from a trusted CA that the CA would never issue, made with `change`.
fn odd_leaf(issuer: &Issuer, change: impl FnOnce(&mut CertificateParams)) -> Leaf {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(web().as_str().try_into().unwrap())];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = SystemTime::now();
    params.not_before = (now - DAY).into();
    params.not_after = (now + DAY).into();
    change(&mut params);
    let der = issuer.sign_anything(&params, &key);
    Leaf::new(web(), der, Vec::new(), now - DAY, now + DAY)
}

#[test]
fn a_trusted_chain_without_a_spiffe_id_is_refused() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let dns_only = odd_leaf(&issuer, |p| {
        p.subject_alt_names = vec![SanType::DnsName("web.mastodon.svc".try_into().unwrap())]
    });
    for err in [
        server_check(&bundle, web(), &dns_only).unwrap_err(),
        client_check(&bundle, &dns_only).unwrap_err(),
    ] {
        let message = err.to_string();
        assert!(
            message.contains(
                "the peer's certificate names no identity: the certificate has no URI SAN"
            ),
            "{message}"
        );
    }
    let two = odd_leaf(&issuer, |p| {
        p.subject_alt_names.push(SanType::URI(
            "spiffe://cluster.local/ns/mastodon/sa/admin"
                .try_into()
                .unwrap(),
        ))
    });
    assert!(
        server_check(&bundle, web(), &two)
            .unwrap_err()
            .to_string()
            .contains("2 URI SANs")
    );
}

#[test]
fn a_ca_certificate_or_a_wrong_purpose_is_refused_by_webpki() {
    let issuer = ca();
    let bundle = bundle_of(&[&issuer]);
    let ca_leaf = odd_leaf(&issuer, |p| {
        p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained)
    });
    for err in [
        server_check(&bundle, web(), &ca_leaf).unwrap_err(),
        client_check(&bundle, &ca_leaf).unwrap_err(),
    ] {
        assert!(err.to_string().contains("CaUsedAsEndEntity"), "{err}");
    }

    let client_only = odd_leaf(&issuer, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth]
    });
    let err = server_check(&bundle, web(), &client_only).unwrap_err();
    assert!(err.to_string().contains("server authentication"), "{err}");
    let server_only = odd_leaf(&issuer, |p| {
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth]
    });
    let err = client_check(&bundle, &server_only).unwrap_err();
    assert!(err.to_string().contains("client authentication"), "{err}");
}

#[test]
fn the_client_verifier_makes_client_certificates_mandatory() {
    let verifier = SpiffeClientVerifier::new(&bundle_of(&[&ca()])).unwrap();
    assert!(verifier.offer_client_auth());
    assert!(verifier.client_auth_mandatory());
}

#[test]
fn an_empty_bundle_builds_no_verifier() {
    let empty = TrustBundle::default();
    assert!(matches!(
        SpiffeServerVerifier::new(&empty, web()),
        Err(VerifierError::Bundle(BundleError::Empty))
    ));
    assert!(matches!(
        SpiffeClientVerifier::new(&empty),
        Err(VerifierError::Bundle(BundleError::Empty))
    ));
}

#[test]
fn verify_leaf_says_whether_a_bundle_trusts_what_an_issuer_signs() {
    let (root, other) = (ca(), ca());
    let (leaf, _key) = workload(&root, &web());
    let now = SystemTime::now();
    verify_leaf(&bundle_of(&[&root]), &leaf, now).unwrap();
    verify_leaf(&bundle_of(&[&other, &root]), &leaf, now).unwrap();
    let refused = verify_leaf(&bundle_of(&[&other]), &leaf, now).unwrap_err();
    assert!(refused.to_string().contains("does not verify"), "{refused}");
    let expired = verify_leaf(&bundle_of(&[&root]), &leaf, now + 2 * DAY).unwrap_err();
    assert!(expired.to_string().contains("expired"), "{expired}");

    // An intermediate issuer: its leaves chain through it to the root the bundle holds.
    let (cert, key) = intermediate_of(&root);
    let intermediate = Issuer::from_pem(&cert, &key).unwrap();
    let (leaf, _key) = workload(&intermediate, &web());
    verify_leaf(&bundle_of(&[&root]), &leaf, now).unwrap();
}
