use std::time::Duration;

use super::*;

const YEAR: Duration = Duration::from_secs(365 * 24 * 60 * 60);

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn files_of(dir: &Path, issuer: &Issuer, bundle: Option<&[&Issuer]>) -> CaFiles {
    CaFiles {
        cert: write(dir, "ca.crt", &issuer.certificate_pem()),
        key: write(dir, "ca.key", &issuer.key_pem()),
        bundle: bundle.map(|roots| {
            let pem: String = roots.iter().map(|r| r.certificate_pem()).collect();
            write(dir, "bundle.pem", &pem)
        }),
        trust_domain: "cluster.local".into(),
    }
}

#[test]
fn an_issuer_loads_with_its_own_certificate_as_the_bundle_or_a_bundle_that_trusts_it() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        Issuer::generate("cluster.local", YEAR).unwrap(),
        Issuer::generate("cluster.local", YEAR).unwrap(),
    );
    let ca = files_of(dir.path(), &old, None).load().unwrap();
    assert_eq!(ca.bundle.roots(), std::slice::from_ref(old.certificate()));

    let ca = files_of(dir.path(), &new, Some(&[&old, &new]))
        .load()
        .unwrap();
    assert_eq!(ca.bundle.len(), 2);
    assert_eq!(ca.issuer.certificate(), new.certificate());
    assert_eq!(files_of(dir.path(), &old, None).paths().len(), 2);
}

#[test]
fn a_bundle_that_would_not_trust_the_issuers_leaves_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (
        Issuer::generate("cluster.local", YEAR).unwrap(),
        Issuer::generate("cluster.local", YEAR).unwrap(),
    );
    let error = files_of(dir.path(), &new, Some(&[&old]))
        .load()
        .unwrap_err();
    assert!(matches!(error, CaError::Untrusted { .. }), "{error}");
    let line = error.to_string();
    assert!(
        line.contains("bundle.pem") && line.contains("ca.crt"),
        "{line}"
    );
}

#[test]
fn unreadable_or_mismatched_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        Issuer::generate("cluster.local", YEAR).unwrap(),
        Issuer::generate("cluster.local", YEAR).unwrap(),
    );
    let mut files = files_of(dir.path(), &a, None);
    files.key = write(dir.path(), "b.key", &b.key_pem());
    let error = files.load().unwrap_err().to_string();
    assert!(
        error.contains("b.key") && error.contains("does not belong"),
        "{error}"
    );

    files.key = dir.path().join("missing.key");
    let error = files.load().unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{}: cannot read", files.key.display())),
        "{error}"
    );

    let mut files = files_of(dir.path(), &a, None);
    files.bundle = Some(write(dir.path(), "junk.pem", "not pem"));
    let error = files.load().unwrap_err().to_string();
    assert!(error.contains("junk.pem"), "{error}");
}
