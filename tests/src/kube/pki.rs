//! The test API server's keys and certificates, made fresh for each server with rcgen.
//!
//! One CA signs both the serving certificate (for `127.0.0.1` and `localhost`) and the admin's
//! client certificate (`O=system:masters`, the group RBAC lets do anything), so a kubeconfig
//! naming the CA, the admin certificate and its key is all a client needs. The service-account
//! key pair is separate: the server signs tokens with the private half and checks them with the
//! public one. Every key is ECDSA P-256, which Go's TLS and JWT code and rustls all take.
//!
//! rcgen (with ring, the one crypto provider used across the workspace) rather than the openssl
//! CLI: no subprocess per certificate, no configuration file for extensions, and errors come back
//! as values that say which certificate failed.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Where the files went, in the server's temporary directory.
pub(super) struct Files {
    pub ca: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    pub sa_public: PathBuf,
    pub sa_private: PathBuf,
}

/// Makes every key and certificate and writes them as PEM files under `dir`.
pub(super) fn write(dir: &Path) -> Result<Files, String> {
    let files = Files {
        ca: dir.join("ca.crt"),
        serving_cert: dir.join("apiserver.crt"),
        serving_key: dir.join("apiserver.key"),
        admin_cert: dir.join("admin.crt"),
        admin_key: dir.join("admin.key"),
        sa_public: dir.join("sa.pub"),
        sa_private: dir.join("sa.key"),
    };

    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "herd test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca, key("CA")?).map_err(|e| format!("CA: {e}"))?;
    write_file(&files.ca, &ca.pem())?;

    let mut serving = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(|e| format!("serving certificate: {e}"))?;
    serving
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf(
        &files.serving_cert,
        &files.serving_key,
        serving,
        &ca,
        "serving",
    )?;

    let mut admin = CertificateParams::default();
    admin.distinguished_name.push(DnType::CommonName, "admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    leaf(&files.admin_cert, &files.admin_key, admin, &ca, "admin")?;

    let sa = key("service-account")?;
    write_file(&files.sa_public, &sa.public_key_pem())?;
    write_file(&files.sa_private, &sa.serialize_pem())?;
    Ok(files)
}

/// Signs `params` with the CA and writes the certificate and its new key.
fn leaf(
    cert_path: &Path,
    key_path: &Path,
    mut params: CertificateParams,
    ca: &CertifiedIssuer<'_, KeyPair>,
    what: &str,
) -> Result<(), String> {
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = key(what)?;
    let cert = params
        .signed_by(&key, ca)
        .map_err(|e| format!("{what} certificate: {e}"))?;
    write_file(cert_path, &cert.pem())?;
    write_file(key_path, &key.serialize_pem())
}

fn key(what: &str) -> Result<KeyPair, String> {
    KeyPair::generate().map_err(|e| format!("{what} key: {e}"))
}

fn write_file(path: &Path, pem: &str) -> Result<(), String> {
    std::fs::write(path, pem).map_err(|e| format!("write {}: {e}", path.display()))
}
