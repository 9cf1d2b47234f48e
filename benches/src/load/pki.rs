//! The certificates of the `two-hops-mtls` scenario, made once per run with rcgen: one CA
//! (ECDSA P-256) that herd-control issues herd's identities from, and, signed by the same CA, a
//! leaf for nginx's and HAProxy's proxy A (the client) and one for their proxy B (the server).
//! Every key is P-256, as herd-proxy's own are, so all three targets sign and verify with the
//! same curve. nginx and HAProxy check B's certificate by a DNS name (they know no SPIFFE ID);
//! herd's proxies get theirs from herd-control and check each other's SPIFFE IDs.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, date_time_ymd,
};

/// The name in proxy B's certificate, which proxy A (nginx, HAProxy) verifies.
pub const SERVER_NAME: &str = "b.bench.local";
/// The name in proxy A's (client) certificate.
pub const CLIENT_NAME: &str = "a.bench.local";

/// A certificate and its key, as files: `cert`, `key` (PKCS#8) and `pem` (both, for HAProxy's
/// `crt`).
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub pem: PathBuf,
}

/// The run's certificate files.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate: herd-control's `--ca-cert`, nginx's and HAProxy's trust anchor.
    pub ca_cert: PathBuf,
    /// The CA's key (PKCS#8 PEM): herd-control's `--ca-key`.
    pub ca_key: PathBuf,
    pub client: Leaf,
    pub server: Leaf,
}

/// Certificates as PEM text, before they are written.
pub struct Generated {
    pub ca_cert: String,
    pub ca_key: String,
    /// (certificate, key) of proxy A and of proxy B.
    pub client: (String, String),
    pub server: (String, String),
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, "herd-load bench CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
    params
}

fn leaf_params(name: &str, usage: ExtendedKeyUsagePurpose) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(vec![name.to_string()])?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2099, 1, 1);
    Ok(params)
}

/// A fresh CA and the two leaves it signs (new keys every run).
pub fn generate() -> Result<Generated> {
    let ca_key = KeyPair::generate().context("CA key")?;
    let ca_params = ca_params();
    let ca_cert = ca_params.self_signed(&ca_key).context("CA certificate")?;
    let issuer = Issuer::from_params(&ca_params, &ca_key);
    let leaf = |name: &str, usage| -> Result<(String, String)> {
        let key = KeyPair::generate().context("leaf key")?;
        let cert = leaf_params(name, usage)?
            .signed_by(&key, &issuer)
            .with_context(|| format!("signing {name}"))?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    Ok(Generated {
        client: leaf(CLIENT_NAME, ExtendedKeyUsagePurpose::ClientAuth)?,
        server: leaf(SERVER_NAME, ExtendedKeyUsagePurpose::ServerAuth)?,
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn write_leaf(dir: &Path, name: &str, (cert, key): &(String, String)) -> Result<Leaf> {
    let leaf = Leaf {
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
        pem: dir.join(format!("{name}.pem")),
    };
    write(&leaf.cert, cert)?;
    write(&leaf.key, key)?;
    write(&leaf.pem, &format!("{cert}{key}"))?;
    Ok(leaf)
}

/// Generates the certificates into `dir` (which nginx's workers, running as `nobody`, can read:
/// the keys are bench throwaways, readable by all).
pub fn create(dir: &Path) -> Result<Pki> {
    fs::create_dir_all(dir)?;
    let g = generate()?;
    let pki = Pki {
        ca_cert: dir.join("ca.crt"),
        ca_key: dir.join("ca.key"),
        client: write_leaf(dir, "a", &g.client)?,
        server: write_leaf(dir, "b", &g.server)?,
    };
    write(&pki.ca_cert, &g.ca_cert)?;
    write(&pki.ca_key, &g.ca_key)?;
    Ok(pki)
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// OpenSSL (what nginx and HAProxy verify with) accepts each leaf for its purpose, chained to
    /// the CA, and the leaves name what the configurations check.
    #[test]
    fn openssl_verifies_the_leaves_against_the_ca() {
        let dir = std::env::temp_dir().join(format!("herd-load-pki-{}", std::process::id()));
        let pki = create(&dir).unwrap();
        for (leaf, purpose) in [(&pki.server, "sslserver"), (&pki.client, "sslclient")] {
            let out = Command::new("openssl")
                .arg("verify")
                .args(["-purpose", purpose, "-CAfile"])
                .arg(&pki.ca_cert)
                .arg(&leaf.cert)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{purpose}: {text}");
        }
        // The server's certificate is not a client's, and the other way round.
        let out = Command::new("openssl")
            .args(["verify", "-purpose", "sslclient", "-CAfile"])
            .arg(&pki.ca_cert)
            .arg(&pki.server.cert)
            .output()
            .unwrap();
        assert!(!out.status.success());
        for (leaf, name) in [(&pki.server, SERVER_NAME), (&pki.client, CLIENT_NAME)] {
            let out = Command::new("openssl")
                .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
                .arg(&leaf.cert)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains(&format!("DNS:{name}")), "{text}");
        }
        let pem = fs::read_to_string(&pki.client.pem).unwrap();
        assert!(pem.contains("BEGIN CERTIFICATE") && pem.contains("BEGIN PRIVATE KEY"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
