//! herd-control's identity service under test: CA files, tokens, CSRs, and openssl to read what
//! comes back.
//!
//! [`CaFiles`] is a directory laid out as a Kubernetes Secret volume is (`ca.crt ->
//! ..data/ca.crt`, ...), updated the way the kubelet updates one: a new timestamped directory,
//! then a `..data` symlink renamed over the old, so the CA certificate, key and bundle change
//! together. [`Root`] makes CA certificates with rcgen; [`csr`] and [`csr_with`] make CSRs (good
//! and hostile) the way any client could; [`certify`] is a plain gRPC call; [`openssl`] reads
//! and verifies the answer as a tool foreign to herd does.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use herd_api::identity::identity_client::IdentityClient;
use herd_api::identity::{CertifyRequest, CertifyResponse};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SanType,
};
use tempfile::TempDir;

use crate::TIMEOUT;
use crate::control::Control;

/// A self-signed root CA (ECDSA P-256), as PEM.
pub struct Root {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Root {
    pub fn generate(name: &str) -> Root {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Root {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// The identity service's files, as a Secret volume: `ca.crt`, `ca.key`, `bundle.pem` (links
/// through `..data`), and `tokens.yaml` beside them (a plain file, rewritten by rename).
pub struct CaFiles {
    dir: TempDir,
    version: usize,
}

impl CaFiles {
    /// `issuer` signs; the bundle holds `bundle`'s certificates.
    pub fn new(issuer: &Root, bundle: &[&Root]) -> CaFiles {
        let dir = tempfile::Builder::new()
            .prefix("herd-ca-")
            .tempdir()
            .expect("temp dir");
        let mut files = CaFiles { dir, version: 0 };
        files.update(issuer, bundle);
        for name in ["ca.crt", "ca.key", "bundle.pem"] {
            std::os::unix::fs::symlink(format!("..data/{name}"), files.path(name))
                .expect("symlink");
        }
        files
    }

    /// Writes a new version of the three CA files and swaps `..data` to it in one rename.
    pub fn update(&mut self, issuer: &Root, bundle: &[&Root]) {
        self.version += 1;
        let version = format!("..v{}", self.version);
        let new = self.dir.path().join(&version);
        std::fs::create_dir(&new).expect("version dir");
        std::fs::write(new.join("ca.crt"), &issuer.cert_pem).expect("ca.crt");
        std::fs::write(new.join("ca.key"), &issuer.key_pem).expect("ca.key");
        let roots: String = bundle.iter().map(|r| r.cert_pem.as_str()).collect();
        std::fs::write(new.join("bundle.pem"), roots).expect("bundle.pem");
        let staged = self.dir.path().join("..data_tmp");
        std::os::unix::fs::symlink(&version, &staged).expect("..data_tmp");
        std::fs::rename(&staged, self.dir.path().join("..data")).expect("swap ..data");
    }

    /// Writes `tokens.yaml` by renaming a sibling over it.
    pub fn write_tokens(&self, yaml: &str) {
        let staged = self.dir.path().join(".tokens.yaml.new");
        std::fs::write(&staged, crate::dedent(yaml)).expect("tokens");
        std::fs::rename(&staged, self.path("tokens.yaml")).expect("rename tokens");
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// herd-control's flags for these files (with the bootstrap tokens file).
    pub fn args(&self, identity: SocketAddr) -> Vec<String> {
        let path = |name: &str| self.path(name).display().to_string();
        vec![
            "--identity-listen".into(),
            identity.to_string(),
            "--ca-cert".into(),
            path("ca.crt"),
            "--ca-key".into(),
            path("ca.key"),
            "--trust-bundle".into(),
            path("bundle.pem"),
            "--bootstrap-tokens".into(),
            path("tokens.yaml"),
        ]
    }
}

/// herd-control with an identity service on `files` (and `extra` flags); returns it with the
/// identity address, once that accepts connections.
pub async fn start(files: &CaFiles, extra: &[&str]) -> (Control, SocketAddr) {
    let identity = crate::ports::addr();
    let mut args = files.args(identity);
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let control = Control::start_with_args(&[], &args).await;
    crate::until_accepting("the identity port", identity).await;
    (control, identity)
}

/// A key and a CSR naming `id` as its one URI SAN, made with rcgen (not herd's code).
pub fn csr(id: &str) -> Vec<u8> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.try_into().expect("URI"))];
    csr_with(&params)
}

/// A CSR of whatever `params` ask for, signed with a fresh P-256 key.
pub fn csr_with(params: &CertificateParams) -> Vec<u8> {
    let key = KeyPair::generate().expect("key");
    params.serialize_request(&key).expect("CSR").der().to_vec()
}

/// One `Certify` call on a fresh connection.
pub async fn certify(
    identity: SocketAddr,
    csr: Vec<u8>,
    token: &str,
) -> Result<CertifyResponse, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{identity}"))
        .expect("endpoint")
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    IdentityClient::new(channel)
        .certify(CertifyRequest {
            csr,
            token: token.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// DER certificates as concatenated PEM.
pub fn pem(ders: &[Vec<u8>]) -> String {
    let blocks: Vec<pem::Pem> = ders
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
        .collect();
    pem::encode_many(&blocks)
}

/// Runs `openssl ARGS` with `files` written into a temporary directory first (name, text);
/// `{dir}` in an argument is that directory. Returns (success, stdout + stderr).
pub async fn openssl(args: &[&str], files: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| a.replace("{dir}", &dir.path().display().to_string()))
        .collect();
    let mut command = tokio::process::Command::new("openssl");
    command.args(&args).stdin(Stdio::null()).kill_on_drop(true);
    let output = crate::within("openssl", TIMEOUT, command.output())
        .await
        .expect("run openssl");
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

/// `openssl verify` of the answer's leaf against the answer's bundle (and its intermediates),
/// for the client role a mesh peer plays.
pub async fn openssl_verifies(answer: &CertifyResponse) -> (bool, String) {
    let leaf = pem(&answer.certificate_chain[..1]);
    let intermediates = pem(&answer.certificate_chain[1..]);
    let bundle = pem(&answer.trust_bundle);
    let mut args = vec![
        "verify",
        "-CAfile",
        "{dir}/bundle.pem",
        "-purpose",
        "sslclient",
    ];
    if !intermediates.is_empty() {
        args.extend(["-untrusted", "{dir}/chain.pem"]);
    }
    args.push("{dir}/leaf.pem");
    openssl(
        &args,
        &[
            ("leaf.pem", &leaf),
            ("chain.pem", &intermediates),
            ("bundle.pem", &bundle),
        ],
    )
    .await
}

/// How long a test waits for a change of the CA files to apply.
pub const RELOAD: Duration = Duration::from_secs(10);

/// `answer` with its trust bundle replaced by `roots`: to verify a leaf against one root alone.
pub fn certify_response_with_bundle(
    answer: &CertifyResponse,
    roots: &[Vec<u8>],
) -> CertifyResponse {
    CertifyResponse {
        certificate_chain: answer.certificate_chain.clone(),
        trust_bundle: roots.to_vec(),
        not_after: answer.not_after,
    }
}

/// A client certificate for `who` from the identity service at `identity` (the key and CSR made
/// with rcgen, as any workload could), written as `DIR/NAME.crt` and `DIR/NAME.key` for openssl
/// and curl; returns the two paths.
pub async fn client_files(
    identity: SocketAddr,
    dir: &std::path::Path,
    name: &str,
    who: &str,
    token: &str,
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(who.try_into().expect("URI"))];
    let csr = params.serialize_request(&key).expect("CSR").der().to_vec();
    let answer = certify(identity, csr, token).await.expect("certified");
    let (cert, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert, pem(&answer.certificate_chain)).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert, key_path)
}

/// The leaf certificate (PEM) the TLS server at `addr` presents to a client holding `cert` and
/// `key`: `openssl s_client -showcerts`, its first certificate.
pub async fn presented_leaf(
    addr: SocketAddr,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> String {
    let mut command = tokio::process::Command::new("openssl");
    command
        .args(["s_client", "-showcerts", "-connect", &addr.to_string()])
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = crate::within("openssl s_client", TIMEOUT, command.output())
        .await
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&output.stdout);
    let begin = text
        .find("-----BEGIN CERTIFICATE-----")
        .unwrap_or_else(|| panic!("no certificate from {addr}: {text}"));
    let end_marker = "-----END CERTIFICATE-----";
    let end = text[begin..].find(end_marker).expect("a whole certificate") + begin;
    format!("{}\n", &text[begin..end + end_marker.len()])
}

/// `openssl x509 -noout -serial` of a PEM certificate: the serial in upper-case hex, without
/// `serial=`.
pub async fn serial_of(certificate: &str) -> String {
    let (ok, text) = openssl(
        &["x509", "-noout", "-serial", "-in", "{dir}/leaf.pem"],
        &[("leaf.pem", certificate)],
    )
    .await;
    assert!(ok, "openssl x509: {text}");
    text.trim()
        .strip_prefix("serial=")
        .unwrap_or_else(|| panic!("no serial in {text}"))
        .to_owned()
}

/// Whether `certificate` (PEM) chains to `root` alone, by `openssl verify`.
pub async fn issued_by(certificate: &str, root: &Root) -> bool {
    openssl(
        &["verify", "-CAfile", "{dir}/root.pem", "{dir}/leaf.pem"],
        &[("leaf.pem", certificate), ("root.pem", &root.cert_pem)],
    )
    .await
    .0
}

/// The value of the first sample in `text` (Prometheus' text format) whose line starts with
/// `line_start` (a name with its labels); 0 when there is none.
pub fn sample(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// A leaf for `who` signed by `issuer` directly, valid for a year (a workload certified before a
/// root was removed, without expiring meanwhile), written as `DIR/NAME.crt` and `DIR/NAME.key`.
pub fn leaf_signed_by(
    issuer: &Root,
    who: &str,
    dir: &std::path::Path,
    name: &str,
) -> (PathBuf, PathBuf) {
    leaf_valid(
        issuer,
        who,
        dir,
        name,
        time::Duration::hours(-1)..time::Duration::days(365),
    )
}

/// [`leaf_signed_by`] valid over `valid`, offsets from now (past, expired, not yet valid, or
/// about to expire).
pub fn leaf_valid(
    issuer: &Root,
    who: &str,
    dir: &std::path::Path,
    name: &str,
    valid: std::ops::Range<time::Duration>,
) -> (PathBuf, PathBuf) {
    let ca_key = KeyPair::from_pem(&issuer.key_pem).expect("CA key");
    let ca = rcgen::Issuer::from_ca_cert_pem(&issuer.cert_pem, ca_key).expect("CA");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(who.try_into().expect("URI"))];
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
    ];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + valid.start;
    params.not_after = now + valid.end;
    let cert = params.signed_by(&key, &ca).expect("signed");
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).expect("write cert");
    std::fs::write(&key_path, key.serialize_pem()).expect("write key");
    (cert_path, key_path)
}
