use rcgen::{
    Attribute, BasicConstraints, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose,
};

use super::*;
use crate::testkit::{id, web};

fn limits() -> CsrLimits {
    CsrLimits::default()
}

/// A CSR for `key` with whatever `params` say, as a hostile client could make one.
fn csr_with(params: &CertificateParams, key: &Keypair) -> Vec<u8> {
    params
        .serialize_request(key.signing_key())
        .unwrap()
        .der()
        .to_vec()
}

/// A CSR like the proxy's, changed by `change` before it is signed.
fn csr_changed(change: impl FnOnce(&mut CertificateParams)) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![uri(web().as_str())];
    change(&mut params);
    csr_with(&params, &Keypair::generate().unwrap())
}

fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

fn dns(s: &str) -> SanType {
    SanType::DnsName(s.try_into().unwrap())
}

#[test]
fn the_proxys_csr_passes_with_its_identity_and_key() {
    let key = Keypair::generate().unwrap();
    let der = build_csr(&key, &web()).unwrap();
    assert!(
        der.len() < 512,
        "a proxy's CSR is small: {} bytes",
        der.len()
    );
    let request = inspect_csr(&der, &limits()).unwrap();
    assert_eq!(request.id(), &web());
    assert_eq!(request.key_type(), KeyType::EcdsaP256);
    assert_eq!(
        request.subject_public_key_info(),
        key.public_key_spki(),
        "the request carries the proxy's public key"
    );
}

#[test]
fn p384_and_ed25519_keys_are_accepted() {
    for key_type in [KeyType::EcdsaP384, KeyType::Ed25519] {
        let key = Keypair::generate_for(key_type).unwrap();
        let request = inspect_csr(&build_csr(&key, &web()).unwrap(), &limits()).unwrap();
        assert_eq!(request.key_type(), key_type);
        assert_eq!(request.subject_public_key_info(), key.public_key_spki());
    }
}

#[test]
fn an_rsa_key_is_refused() {
    let rsa = rcgen::KeyPair::from_pem(include_str!("testdata/rsa2048.pem")).unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![uri(web().as_str())];
    let der = params.serialize_request(&rsa).unwrap().der().to_vec();
    let err = inspect_csr(&der, &limits()).unwrap_err();
    assert!(
        matches!(&err, CsrError::UnsupportedKey(what) if what.contains("1.2.840.113549.1.1.1")),
        "{err}"
    );
}

#[test]
fn the_private_key_never_appears_in_a_debug_print() {
    let key = Keypair::generate().unwrap();
    let printed = format!("{key:?}");
    assert!(printed.contains("elided"), "{printed}");
    assert!(!printed.contains("serialized_der"), "{printed}");
}

#[test]
fn a_csr_over_the_limit_is_refused_before_parsing() {
    let der = build_csr(&Keypair::generate().unwrap(), &web()).unwrap();
    let tight = CsrLimits {
        max_der_bytes: der.len() - 1,
    };
    assert!(matches!(
        inspect_csr(&der, &tight),
        Err(CsrError::TooLarge { size, limit }) if size == der.len() && limit == der.len() - 1
    ));
    // A megabyte of anything is refused by size, whatever it holds.
    let huge = vec![0x30; 1 << 20];
    assert!(matches!(
        inspect_csr(&huge, &limits()),
        Err(CsrError::TooLarge {
            limit: DEFAULT_MAX_CSR_BYTES,
            ..
        })
    ));
}

#[test]
fn a_huge_csr_under_a_raised_limit_is_still_checked_and_refused() {
    // 4000 URI SANs: a real, well-signed CSR of ~170 KB.
    let der = csr_changed(|p| {
        p.subject_alt_names = (0..4000)
            .map(|i| uri(&format!("spiffe://cluster.local/ns/x/sa/a{i}")))
            .collect();
    });
    assert!(der.len() > 100_000);
    let roomy = CsrLimits {
        max_der_bytes: 1 << 20,
    };
    assert!(matches!(
        inspect_csr(&der, &roomy),
        Err(CsrError::SeveralSans(4000))
    ));
    assert!(matches!(
        inspect_csr(&der, &limits()),
        Err(CsrError::TooLarge { .. })
    ));
}

#[test]
fn a_subject_name_is_ignored() {
    let der = csr_changed(|p| {
        p.distinguished_name.push(DnType::CommonName, "admin");
        p.distinguished_name
            .push(DnType::OrganizationName, "system:masters");
    });
    assert_eq!(inspect_csr(&der, &limits()).unwrap().id(), &web());
}

#[test]
fn anything_but_exactly_one_spiffe_uri_san_is_refused() {
    let spiffe = web().as_str().to_owned();
    let other = "spiffe://cluster.local/ns/mastodon/sa/admin";
    let cases: Vec<(Vec<SanType>, &str)> = vec![
        (vec![], "no subjectAltName"),
        (vec![uri(&spiffe), uri(other)], "2 subjectAltNames"),
        (
            vec![uri(&spiffe), dns("web.mastodon.svc")],
            "2 subjectAltNames",
        ),
        (vec![dns("web.mastodon.svc")], "is a DNS name, not a URI"),
        (
            vec![SanType::IpAddress("127.0.0.1".parse().unwrap())],
            "is an IP address, not a URI",
        ),
        (
            vec![SanType::Rfc822Name("a@b.c".try_into().unwrap())],
            "is an email address, not a URI",
        ),
        (vec![uri("https://web.mastodon.svc/")], "is not a SPIFFE ID"),
        (
            vec![uri("spiffe://Cluster.local/ns/a/sa/b")],
            "is not a SPIFFE ID",
        ),
        (
            vec![uri("spiffe://cluster.local/ns/a/sa/b/")],
            "is not a SPIFFE ID",
        ),
        (
            vec![uri("spiffe://cluster.local")],
            "the trust domain spiffe://cluster.local itself",
        ),
    ];
    for (sans, want) in cases {
        let described = format!("{sans:?}");
        let der = csr_changed(|p| p.subject_alt_names = sans);
        let err = inspect_csr(&der, &limits()).unwrap_err();
        assert!(err.to_string().contains(want), "{described}: {err}");
    }
}

#[test]
fn a_csr_asking_for_more_than_a_name_is_refused_saying_what_it_asked() {
    type Change = Box<dyn FnOnce(&mut CertificateParams)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
            "basicConstraints with CA=true",
        ),
        (
            Box::new(|p| p.is_ca = IsCa::ExplicitNoCa),
            "basicConstraints",
        ),
        (
            Box::new(|p| p.key_usages = vec![KeyUsagePurpose::KeyCertSign]),
            "keyUsage",
        ),
        (
            Box::new(|p| p.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning]),
            "extendedKeyUsage",
        ),
        (
            Box::new(|p| {
                p.custom_extensions =
                    vec![CustomExtension::from_oid_content(&[1, 2, 3, 4], vec![5, 0])]
            }),
            "extension 1.2.3.4",
        ),
    ];
    for (change, want) in cases {
        let err = inspect_csr(&csr_changed(change), &limits()).unwrap_err();
        assert!(
            matches!(&err, CsrError::UnsupportedExtension(what) if what == want),
            "{want}: {err}"
        );
    }
}

#[test]
fn a_second_subject_alt_name_extension_is_refused() {
    // GeneralNames { [6] "spiffe://cluster.local/ns/mastodon/sa/admin" }, written by hand.
    let admin = b"spiffe://cluster.local/ns/mastodon/sa/admin";
    let mut content = vec![0x30, admin.len() as u8 + 2, 0x86, admin.len() as u8];
    content.extend_from_slice(admin);
    let der = csr_changed(|p| {
        p.custom_extensions = vec![CustomExtension::from_oid_content(&[2, 5, 29, 17], content)]
    });
    let err = inspect_csr(&der, &limits()).unwrap_err();
    assert!(
        matches!(&err, CsrError::UnsupportedExtension(what) if what == "a second subjectAltName")
            || matches!(&err, CsrError::Malformed(_)),
        "{err}"
    );
}

#[test]
fn attributes_other_than_the_extension_request_are_refused() {
    let key = Keypair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![uri(web().as_str())];
    let challenge = Attribute {
        oid: &[1, 2, 840, 113549, 1, 9, 7],
        // SET { UTF8String "secret" }
        values: vec![0x31, 0x08, 0x0c, 0x06, b's', b'e', b'c', b'r', b'e', b't'],
    };
    let unknown = Attribute {
        oid: &[1, 2, 3, 4],
        // SET { NULL }
        values: vec![0x31, 0x02, 0x05, 0x00],
    };
    for (attribute, want) in [(challenge, "challengePassword"), (unknown, "1.2.3.4")] {
        let der = params
            .serialize_request_with_attributes(key.signing_key(), vec![attribute])
            .unwrap()
            .der()
            .to_vec();
        let err = inspect_csr(&der, &limits()).unwrap_err();
        assert!(
            matches!(&err, CsrError::UnsupportedAttribute(what) if what == want),
            "{want}: {err}"
        );
    }
}

#[test]
fn a_csr_changed_after_signing_is_refused() {
    let der = build_csr(&Keypair::generate().unwrap(), &web()).unwrap();

    // The name, in the signed part: `.../sa/web` becomes `.../sa/wec`.
    let mut renamed = der.clone();
    let at = renamed
        .windows(3)
        .rposition(|w| w == b"web")
        .expect("the URI is in the DER");
    renamed[at + 2] = b'c';
    assert!(matches!(
        inspect_csr(&renamed, &limits()),
        Err(CsrError::BadSignature)
    ));

    // The signature itself: its last byte.
    let mut resigned = der.clone();
    *resigned.last_mut().unwrap() ^= 0x01;
    assert!(matches!(
        inspect_csr(&resigned, &limits()),
        Err(CsrError::BadSignature)
    ));

    // Someone else's key in place of the signer's: take the SPKI from another CSR.
    let other = build_csr(&Keypair::generate().unwrap(), &web()).unwrap();
    let spki_of = |der: &[u8]| {
        let (_, csr) = X509CertificationRequest::from_der(der).unwrap();
        csr.certification_request_info.subject_pki.raw.to_vec()
    };
    let (mine, theirs) = (spki_of(&der), spki_of(&other));
    let at = der.windows(mine.len()).position(|w| w == mine).unwrap();
    let mut swapped = der.clone();
    swapped[at..at + mine.len()].copy_from_slice(&theirs);
    assert!(matches!(
        inspect_csr(&swapped, &limits()),
        Err(CsrError::BadSignature)
    ));
}

#[test]
fn bytes_that_are_not_one_csr_are_refused() {
    let der = build_csr(&Keypair::generate().unwrap(), &web()).unwrap();
    let mut trailing = der.clone();
    trailing.extend_from_slice(&[0, 0]);
    assert!(matches!(
        inspect_csr(&trailing, &limits()),
        Err(CsrError::TrailingBytes(2))
    ));
    for garbage in [
        &b""[..],
        b"\x30",
        b"-----BEGIN CERTIFICATE REQUEST-----",
        &der[..der.len() / 2],
    ] {
        assert!(
            matches!(inspect_csr(garbage, &limits()), Err(CsrError::Malformed(_))),
            "{garbage:?}"
        );
    }
}

#[test]
fn an_error_quotes_a_long_hostile_uri_only_in_part() {
    let long = format!("https://{}", "a".repeat(3000));
    let err = inspect_csr(
        &csr_changed(|p| p.subject_alt_names = vec![uri(&long)]),
        &limits(),
    )
    .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("(3008 bytes)"), "{message}");
    assert!(message.len() < 400, "{} bytes", message.len());
}

/// One random change to `der`: flip, set, insert or delete bytes, truncate, or touch what is
/// most likely a DER length.
fn mutate(rng: &mut fastrand::Rng, der: &[u8]) -> Vec<u8> {
    let mut out = der.to_vec();
    for _ in 0..rng.usize(1..4) {
        if out.is_empty() {
            out.push(rng.u8(..));
            continue;
        }
        let at = rng.usize(..out.len());
        match rng.u8(..6) {
            0 => out[at] ^= 1 << rng.u8(..8),
            1 => out[at] = rng.u8(..),
            2 => out.insert(at, rng.u8(..)),
            3 => {
                out.remove(at);
            }
            4 => out.truncate(at),
            _ => {
                // A byte after a tag is often a length: make it long-form or huge.
                out[at] = [0x80, 0x81, 0x84, 0xff, 0x7f, 0x00][rng.usize(..6)];
            }
        }
    }
    out
}

#[test]
fn mutated_and_hostile_csrs_never_panic_and_only_intact_ones_pass() {
    let key = Keypair::generate().unwrap();
    let good = build_csr(&key, &web()).unwrap();
    let admin = id("spiffe://cluster.local/ns/mastodon/sa/admin");
    let seeds = [
        good.clone(),
        csr_changed(|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained)),
        csr_changed(|p| p.subject_alt_names = vec![uri(web().as_str()), uri(admin.as_str())]),
        csr_changed(|p| p.subject_alt_names = vec![dns("web")]),
        csr_changed(|p| p.key_usages = vec![KeyUsagePurpose::KeyCertSign]),
        build_csr(&Keypair::generate_for(KeyType::Ed25519).unwrap(), &admin).unwrap(),
    ];
    let mut rng = fastrand::Rng::with_seed(0xC5_12);
    let (mut refused, mut passed) = (0, 0);
    for round in 0..6_000 {
        let seed = &seeds[round % seeds.len()];
        let input = if round % 50 == 0 {
            (0..rng.usize(..600)).map(|_| rng.u8(..)).collect()
        } else {
            mutate(&mut rng, seed)
        };
        match inspect_csr(&input, &limits()) {
            Ok(request) => {
                passed += 1;
                // A change that still passes touched nothing signed: the same name and key.
                let original = seeds
                    .iter()
                    .filter_map(|s| inspect_csr(s, &limits()).ok())
                    .find(|r| r.id() == request.id() && r.der_bytes() == request.der_bytes());
                assert!(original.is_some(), "round {round}: {:?}", request.id());
            }
            Err(_) => refused += 1,
        }
    }
    assert!(refused > 5_000, "refused {refused}, passed {passed}");
}
