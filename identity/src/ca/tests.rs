use std::time::{Duration, SystemTime};

use x509_parser::extensions::{GeneralName, ParsedExtension};

use super::*;
use crate::csr::{CsrLimits, Keypair, build_csr, inspect_csr};
use crate::testkit::{DAY, ca, intermediate_of, sidekiq, web, workload};

const OPENSSL_CA: &str = include_str!("testdata/openssl-ca.crt");
const OPENSSL_CA_KEY: &str = include_str!("testdata/openssl-ca.key");

fn request_for(id: &SpiffeId) -> CsrRequest {
    let csr = build_csr(&Keypair::generate().unwrap(), id).unwrap();
    inspect_csr(&csr, &CsrLimits::default()).unwrap()
}

#[test]
fn a_leaf_sets_every_security_field_itself() {
    let issuer = ca();
    let now = SystemTime::now();
    let leaf = issuer.issue(&request_for(&web()), &web(), DAY).unwrap();
    assert_eq!(leaf.id(), &web());
    assert!(leaf.chain().len() == 1, "a root's leaf is sent alone");

    let parsed = svid::parse(leaf.certificate()).unwrap();
    assert!(!parsed.is_ca());
    let bc = parsed
        .basic_constraints()
        .unwrap()
        .expect("basicConstraints is written");
    assert!(!bc.value.ca);

    let usage = parsed.key_usage().unwrap().unwrap();
    assert!(usage.critical);
    assert!(usage.value.digital_signature());
    assert!(!usage.value.key_encipherment());
    assert!(!usage.value.key_cert_sign());
    assert!(!usage.value.crl_sign());

    let eku = parsed.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    assert!(!eku.any && !eku.code_signing && eku.other.is_empty());

    let san = parsed.subject_alternative_name().unwrap().unwrap();
    assert!(san.critical, "the subject is empty, so the SAN is critical");
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI(web().as_str())]
    );
    assert!(parsed.subject().as_raw().len() <= 2, "empty subject");
    assert!(
        parsed.extensions().iter().any(|e| matches!(
            e.parsed_extension(),
            ParsedExtension::AuthorityKeyIdentifier(_)
        )),
        "the authority key identifier names the issuer's key"
    );

    let (not_before, not_after) = svid::validity_in(&parsed);
    assert_eq!(
        (not_before, not_after),
        (leaf.not_before(), leaf.not_after())
    );
    let skew = now.duration_since(not_before).unwrap();
    assert!(
        skew >= CLOCK_SKEW && skew <= CLOCK_SKEW + Duration::from_secs(2),
        "{skew:?}"
    );
    let lifetime = not_after.duration_since(now).unwrap_or_default();
    assert!(
        lifetime <= DAY && lifetime >= DAY - Duration::from_secs(2),
        "{lifetime:?}"
    );
}

#[test]
fn serials_are_random_and_positive() {
    let issuer = ca();
    let serials: Vec<_> = (0..20)
        .map(|_| {
            let leaf = issuer.issue(&request_for(&web()), &web(), DAY).unwrap();
            svid::parse(leaf.certificate())
                .unwrap()
                .raw_serial()
                .to_vec()
        })
        .collect();
    for serial in &serials {
        assert!(serial.len() >= 14 && serial.len() <= 17, "{serial:?}");
        assert!(serial[0] & 0x80 == 0, "positive");
    }
    let mut unique = serials.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), serials.len());
}

#[test]
fn a_csr_for_another_identity_than_the_tokens_is_refused() {
    let err = ca()
        .issue(&request_for(&web()), &sidekiq(), DAY)
        .unwrap_err();
    assert!(matches!(err, IssueError::IdentityMismatch { .. }));
    assert_eq!(
        err.to_string(),
        "the CSR asks for spiffe://cluster.local/ns/mastodon/sa/web, \
         but the token proves spiffe://cluster.local/ns/mastodon/sa/sidekiq"
    );
}

#[test]
fn a_leaf_never_outlives_its_issuer() {
    let issuer = Issuer::generate("cluster.local", Duration::from_secs(3600)).unwrap();
    let leaf = issuer.issue(&request_for(&web()), &web(), DAY).unwrap();
    assert_eq!(leaf.not_after(), issuer.not_after());

    let later = issuer.not_after() + Duration::from_secs(1);
    assert!(matches!(
        issuer.issue_at(&request_for(&web()), &web(), DAY, later),
        Err(IssueError::IssuerExpired { .. })
    ));
    assert!(matches!(
        issuer.issue(&request_for(&web()), &web(), Duration::ZERO),
        Err(IssueError::ZeroLifetime)
    ));
    // An absurd lifetime is cut at the issuer's end rather than overflowing.
    let leaf = issuer
        .issue(&request_for(&web()), &web(), Duration::MAX)
        .unwrap();
    assert_eq!(leaf.not_after(), issuer.not_after());
}

#[test]
fn a_generated_root_is_a_ca_for_its_trust_domain() {
    let issuer = ca();
    let parsed = svid::parse(issuer.certificate()).unwrap();
    assert!(parsed.is_ca());
    let bc = parsed.basic_constraints().unwrap().unwrap().value;
    assert_eq!(bc.path_len_constraint, Some(0));
    let usage = parsed.key_usage().unwrap().unwrap().value;
    assert!(usage.key_cert_sign() && usage.crl_sign() && !usage.digital_signature());
    let san = parsed.subject_alternative_name().unwrap().unwrap();
    assert_eq!(
        san.value.general_names,
        vec![GeneralName::URI("spiffe://cluster.local")]
    );
    // Two roots of one trust domain are told apart by name.
    let other = ca();
    let subject = |i: &Issuer| svid::parse(i.certificate()).unwrap().subject().to_string();
    assert_ne!(subject(&issuer), subject(&other));
    assert!(
        subject(&issuer).contains("O=cluster.local"),
        "{}",
        subject(&issuer)
    );

    assert!(matches!(
        Issuer::generate("Cluster.local", DAY),
        Err(IssuerError::TrustDomain(_))
    ));
    assert!(matches!(
        Issuer::generate("cluster.local", Duration::MAX),
        Err(IssuerError::Validity(_))
    ));
}

#[test]
fn a_generated_issuer_reloads_from_its_pem() {
    let issuer = ca();
    let reloaded = Issuer::from_pem(&issuer.certificate_pem(), &issuer.key_pem()).unwrap();
    assert_eq!(reloaded.certificate(), issuer.certificate());
    assert_eq!(reloaded.not_after(), issuer.not_after());
    let leaf = reloaded.issue(&request_for(&web()), &web(), DAY).unwrap();
    assert!(leaf.chain().len() == 1);
    // The reloaded issuer names itself as the original did: the leaf's issuer is its subject.
    let leaf_issuer = svid::parse(leaf.certificate())
        .unwrap()
        .issuer()
        .as_raw()
        .to_vec();
    let ca_subject = svid::parse(issuer.certificate())
        .unwrap()
        .subject()
        .as_raw()
        .to_vec();
    assert_eq!(leaf_issuer, ca_subject);
}

#[test]
fn an_openssl_made_ca_loads_and_issues() {
    let issuer = Issuer::from_pem(OPENSSL_CA, OPENSSL_CA_KEY).unwrap();
    let leaf = issuer.issue(&request_for(&web()), &web(), DAY).unwrap();
    let leaf_issuer = svid::parse(leaf.certificate())
        .unwrap()
        .issuer()
        .as_raw()
        .to_vec();
    let ca = svid::parse(issuer.certificate()).unwrap();
    assert_eq!(
        leaf_issuer,
        ca.subject().as_raw(),
        "byte for byte, or chains break"
    );
}

#[test]
fn a_ca_that_is_not_one_or_has_the_wrong_key_is_refused() {
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "a leaf as the CA",
            include_str!("testdata/openssl-leaf.crt").into(),
            "is not a CA",
        ),
        (
            "a CA whose keyUsage lacks keyCertSign",
            include_str!("testdata/openssl-ca-nosign.crt").into(),
            "without keyCertSign",
        ),
        (
            "another CA's certificate",
            ca().certificate_pem(),
            "does not belong",
        ),
        ("no certificate", String::new(), "no certificate"),
        (
            "a key where the certificate goes",
            OPENSSL_CA_KEY.into(),
            "\"PRIVATE KEY\" block",
        ),
    ];
    for (what, cert_pem, want) in cases {
        let err = Issuer::from_pem(&cert_pem, OPENSSL_CA_KEY).unwrap_err();
        assert!(err.to_string().contains(want), "{what}: {err}");
    }

    let sec1 = include_str!("testdata/openssl-ca.sec1.key");
    let err = Issuer::from_pem(OPENSSL_CA, sec1).unwrap_err();
    assert!(
        matches!(&err, IssuerError::KeyFormat(tag) if tag == "EC PRIVATE KEY"),
        "{err}"
    );
    assert!(err.to_string().contains("openssl pkcs8 -topk8"), "{err}");
}

#[test]
fn an_intermediate_issuer_sends_its_chain_with_each_leaf() {
    let root = ca();
    let (intermediate_pem, intermediate_key) = intermediate_of(&root);
    let chain_pem = format!("{intermediate_pem}{}", root.certificate_pem());
    let issuer = Issuer::from_pem(&chain_pem, &intermediate_key).unwrap();
    let leaf = issuer.issue(&request_for(&web()), &web(), DAY).unwrap();
    let chain = leaf.chain();
    assert_eq!(
        chain.len(),
        3,
        "leaf, intermediate, then what came after it"
    );
    assert_eq!(&chain[1], issuer.certificate());
    assert_eq!(&chain[2], root.certificate());
    let back = Leaf::from_pem(&leaf.to_pem()).unwrap();
    assert_eq!(back, leaf);
}

#[test]
fn a_leaf_reads_back_from_its_pem() {
    let (leaf, _) = workload(&ca(), &web());
    let back = Leaf::from_pem(&leaf.to_pem()).unwrap();
    assert_eq!(back, leaf);

    // A CA certificate is not a leaf, and a PEM of something else is not a chain.
    assert!(matches!(
        Leaf::from_pem(&ca().certificate_pem()),
        Err(LeafError::IsCa)
    ));
    assert!(matches!(Leaf::from_pem("nothing"), Err(LeafError::Pem(_))));
}

#[test]
fn what_herd_control_and_the_proxy_share_across_tasks_is_send_and_sync() {
    fn shared<T: Send + Sync>() {}
    shared::<Issuer>();
    shared::<Leaf>();
    shared::<crate::TrustBundle>();
    shared::<Keypair>();
    shared::<CsrRequest>();
    shared::<SpiffeId>();
    shared::<crate::Matcher>();
}

#[test]
fn a_leaf_names_its_serial_as_openssl_prints_it() {
    let (leaf, _key) = workload(&ca(), &web());
    let serial = leaf.serial_hex();
    let parsed = svid::parse(leaf.certificate()).unwrap();
    assert_eq!(
        serial,
        parsed
            .raw_serial_as_string()
            .replace(':', "")
            .to_uppercase()
    );
    assert!(serial.len() <= 32 && serial.len() >= 2, "{serial}");
    assert!(
        serial
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_lowercase())
    );
}

/// Helm's `genCA` writes an RSA key in PKCS#1 (`RSA PRIVATE KEY`): such a CA (here made with
/// `openssl genrsa -traditional` and `openssl req -x509`) loads and signs leaves that verify.
#[test]
fn an_rsa_ca_with_a_pkcs1_key_signs_leaves_that_verify() {
    let cert = include_str!("testdata/rsa-ca.crt");
    let key = include_str!("testdata/rsa-ca.pkcs1.key");
    assert!(key.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let issuer = Issuer::from_pem(cert, key).expect("a PKCS#1 RSA CA key loads");
    let bundle = crate::TrustBundle::from_pem(cert).unwrap();
    let who = web();
    let (leaf, _) = workload(&issuer, &who);
    assert_eq!(leaf.id(), &who);
    crate::verify_leaf(&bundle, &leaf, SystemTime::now()).expect("the leaf verifies");

    // Another CA's key in PKCS#1 is still the wrong key.
    let other = include_str!("testdata/openssl-ca.crt");
    assert!(matches!(
        Issuer::from_pem(other, key),
        Err(IssuerError::KeyMismatch(_))
    ));
}

#[test]
fn der_lengths_use_the_short_form_below_128_and_the_long_form_above() {
    let mut out = Vec::new();
    der_tlv(0x04, &[7; 5], &mut out);
    assert_eq!(&out[..2], &[0x04, 5]);
    out.clear();
    der_tlv(0x04, &[7; 200], &mut out);
    assert_eq!(&out[..3], &[0x04, 0x81, 200]);
    out.clear();
    der_tlv(0x04, &vec![7; 1200], &mut out);
    assert_eq!(&out[..4], &[0x04, 0x82, 0x04, 0xb0]);
}
