use rcgen::{CertificateParams, SanType};

use super::*;
use crate::testkit::{ca, web, workload};

/// A self-signed certificate with these SANs (the chain does not matter to this module).
fn certificate_naming(sans: Vec<SanType>) -> CertificateDer<'static> {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    let key = rcgen::KeyPair::generate().unwrap();
    params.self_signed(&key).unwrap().der().clone()
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

#[test]
fn an_issued_leaf_names_its_workload() {
    let (leaf, _) = workload(&ca(), &web());
    assert_eq!(identity_of(leaf.certificate()), Ok(web()));
}

#[test]
fn one_uri_beside_other_names_is_the_identity() {
    let cert = certificate_naming(vec![
        SanType::DnsName("web.mastodon.svc".try_into().unwrap()),
        uri(web().as_str()),
        SanType::IpAddress("10.0.0.1".parse().unwrap()),
    ]);
    assert_eq!(identity_of(&cert), Ok(web()));
}

#[test]
fn a_certificate_without_exactly_one_valid_workload_uri_names_no_one() {
    let other = "spiffe://cluster.local/ns/mastodon/sa/admin";
    let cases: Vec<(Vec<SanType>, SvidError)> = vec![
        (vec![], SvidError::NoUri),
        (
            vec![SanType::DnsName("web".try_into().unwrap())],
            SvidError::NoUri,
        ),
        (
            vec![uri(web().as_str()), uri(other)],
            SvidError::SeveralUris(2),
        ),
        (
            vec![uri("https://web.local/")],
            SvidError::NotSpiffe {
                uri: "https://web.local/".into(),
                source: SpiffeIdError::Scheme,
            },
        ),
        (
            vec![uri("spiffe://cluster.local")],
            SvidError::NoWorkload(SpiffeId::parse("spiffe://cluster.local").unwrap()),
        ),
    ];
    for (sans, want) in cases {
        let described = format!("{sans:?}");
        assert_eq!(
            identity_of(&certificate_naming(sans)),
            Err(want),
            "{described}"
        );
    }
}

#[test]
fn bytes_that_are_not_a_certificate_name_no_one() {
    let (leaf, _) = workload(&ca(), &web());
    let der = leaf.certificate().as_ref();
    for broken in [&der[..der.len() - 1], &der[1..], b"", b"\x30\x80"] {
        let broken = CertificateDer::from(broken.to_vec());
        assert!(matches!(
            identity_of(&broken),
            Err(SvidError::Unreadable(_))
        ));
    }
    let mut trailing = der.to_vec();
    trailing.push(0);
    assert!(matches!(
        identity_of(&CertificateDer::from(trailing)),
        Err(SvidError::Unreadable(why)) if why.contains("1 bytes after")
    ));
}
