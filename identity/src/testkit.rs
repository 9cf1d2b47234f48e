//! Shared test fixtures: CAs, workloads and their leaves, made fresh by each test.

use std::time::{Duration, SystemTime};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose};

use crate::{CsrLimits, Issuer, Keypair, Leaf, SpiffeId, TrustBundle, build_csr, inspect_csr};

pub(crate) const DAY: Duration = Duration::from_secs(24 * 60 * 60);

pub(crate) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

pub(crate) fn web() -> SpiffeId {
    SpiffeId::kubernetes("cluster.local", "mastodon", "web").unwrap()
}

pub(crate) fn sidekiq() -> SpiffeId {
    SpiffeId::kubernetes("cluster.local", "mastodon", "sidekiq").unwrap()
}

pub(crate) fn ca() -> Issuer {
    Issuer::generate("cluster.local", 365 * DAY).unwrap()
}

pub(crate) fn bundle_of(issuers: &[&Issuer]) -> TrustBundle {
    let mut bundle = TrustBundle::default();
    for issuer in issuers {
        bundle.add(issuer.certificate().clone()).unwrap();
    }
    bundle
}

/// A workload's key and its leaf from `issuer`, through the real CSR path, issued at `now`.
pub(crate) fn workload_at(
    issuer: &Issuer,
    who: &SpiffeId,
    lifetime: Duration,
    now: SystemTime,
) -> (Leaf, Keypair) {
    let key = Keypair::generate().unwrap();
    let csr = build_csr(&key, who).unwrap();
    let request = inspect_csr(&csr, &CsrLimits::default()).unwrap();
    let leaf = issuer.issue_at(&request, who, lifetime, now).unwrap();
    (leaf, key)
}

pub(crate) fn workload(issuer: &Issuer, who: &SpiffeId) -> (Leaf, Keypair) {
    workload_at(issuer, who, DAY, SystemTime::now())
}

/// An intermediate CA signed by `root`, as PEM certificate and PKCS#8 key.
pub(crate) fn intermediate_of(root: &Issuer) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, "herd intermediate");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.use_authority_key_identifier_extension = true;
    let now = SystemTime::now();
    params.not_before = (now - DAY).into();
    params.not_after = (now + 30 * DAY).into();
    let certificate = root.sign_anything(&params, &key);
    (
        crate::bundle::certificates_to_pem(&[certificate]),
        key.serialize_pem(),
    )
}
