use super::*;
use crate::testkit::{ca, web, workload};

#[test]
fn a_bundle_holds_several_roots_in_order_without_duplicates() {
    let (old, new) = (ca(), ca());
    let mut bundle = TrustBundle::from_pem(&old.certificate_pem()).unwrap();
    assert_eq!(bundle.len(), 1);
    assert!(bundle.add(new.certificate().clone()).unwrap());
    assert!(
        !bundle.add(old.certificate().clone()).unwrap(),
        "already there"
    );
    assert_eq!(
        bundle.roots(),
        &[old.certificate().clone(), new.certificate().clone()]
    );

    let pem = bundle.to_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert!(!pem.contains('\r'));
    assert_eq!(TrustBundle::from_pem(&pem).unwrap(), bundle);

    assert!(bundle.remove(old.certificate()));
    assert!(!bundle.remove(old.certificate()), "already gone");
    assert_eq!(bundle.roots(), &[new.certificate().clone()]);
    assert!(bundle.remove(new.certificate()));
    assert!(bundle.is_empty());
    assert!(matches!(bundle.root_store(), Err(BundleError::Empty)));
}

#[test]
fn what_is_not_a_ca_certificate_is_refused() {
    let (leaf, _) = workload(&ca(), &web());
    let err = TrustBundle::from_pem(&leaf.to_pem()).unwrap_err();
    assert!(matches!(err, BundleError::NotCa { index: 0, .. }), "{err}");

    let key = ca().key_pem();
    let err = TrustBundle::from_pem(&format!("{}{key}", ca().certificate_pem())).unwrap_err();
    assert!(
        matches!(&err, BundleError::NotACertificateBlock(tag) if tag == "PRIVATE KEY"),
        "{err}"
    );

    assert!(matches!(
        TrustBundle::from_pem(""),
        Err(BundleError::NoCertificate)
    ));
    let junk = pem::encode(&pem::Pem::new("CERTIFICATE", b"not DER".to_vec()));
    assert!(matches!(
        TrustBundle::from_pem(&junk),
        Err(BundleError::Unreadable { index: 0, .. })
    ));
    assert!(matches!(
        TrustBundle::from_pem("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n"),
        Err(BundleError::Pem(_))
    ));
}
