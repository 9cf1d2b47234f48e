//! herd-control's identity service, driven as proxies and operators drive it: the real binary on
//! loopback, CSRs made with rcgen, plain gRPC calls, `herdctl certify`, and openssl reading and
//! verifying what comes back. The CA files live in a directory laid out like a Kubernetes Secret
//! volume and are rotated the way the kubelet updates one.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_tests::control::herdctl;
use herd_tests::identity::{
    CaFiles, RELOAD, Root, certify, csr, csr_with, openssl, openssl_verifies, pem, sample, start,
};
use herd_tests::kube::KubeApi;
use herd_tests::{Proxy, TIMEOUT, eventually};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, IsCa, KeyUsagePurpose, SanType,
};
use tonic::Code;

const POSTGRES: &str = "spiffe://cluster.local/ns/data/sa/postgres";
const REDIS: &str = "spiffe://cluster.local/ns/data/sa/redis";
const POSTGRES_TOKEN: &str = "pg-0123456789abcdef";
const REDIS_TOKEN: &str = "redis-0123456789abcdef";

const TOKENS: &str = "
    tokens:
      - token: pg-0123456789abcdef
        namespace: data
        serviceAccount: postgres
      - token: redis-0123456789abcdef
        namespace: data
        serviceAccount: redis
";

fn files(issuer: &Root, bundle: &[&Root]) -> CaFiles {
    let files = CaFiles::new(issuer, bundle);
    files.write_tokens(TOKENS);
    files
}

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bootstrap_token_gets_a_day_long_leaf_that_openssl_verifies_against_the_bundle() {
    let root = Root::generate("herd test root");
    let files = files(&root, &[&root]);
    let (control, identity) = start(&files, &[]).await;

    let answer = certify(identity, csr(POSTGRES), POSTGRES_TOKEN)
        .await
        .expect("certified");
    assert_eq!(
        answer.certificate_chain.len(),
        1,
        "a root issues the leaf alone"
    );
    assert_eq!(answer.trust_bundle.len(), 1);
    let lifetime = answer.not_after - now_unix();
    assert!(
        (86_390..=86_400).contains(&lifetime),
        "not_after is {lifetime} s away, not 24 h"
    );

    // openssl, a tool that owes herd nothing, reads and verifies it.
    let leaf = pem(&answer.certificate_chain[..1]);
    let (ok, text) = openssl(
        &["x509", "-noout", "-text", "-in", "{dir}/leaf.pem"],
        &[("leaf.pem", &leaf)],
    )
    .await;
    assert!(ok, "{text}");
    assert!(text.contains(&format!("URI:{POSTGRES}")), "{text}");
    assert!(text.contains("CA:FALSE"), "{text}");
    assert!(
        text.contains("TLS Web Server Authentication, TLS Web Client Authentication"),
        "{text}"
    );
    assert!(!text.contains("DNS:"), "{text}");
    let (ok, text) = openssl_verifies(&answer).await;
    assert!(ok && text.contains("OK"), "openssl verify: {text}");
    // Valid for a day, not for a day and a minute.
    let checkend = |seconds: &'static str| {
        let leaf = leaf.clone();
        async move {
            openssl(
                &[
                    "x509",
                    "-noout",
                    "-checkend",
                    seconds,
                    "-in",
                    "{dir}/leaf.pem",
                ],
                &[("leaf.pem", &leaf)],
            )
            .await
            .0
        }
    };
    assert!(checkend("86000").await, "expires within 86000 s");
    assert!(!checkend("86460").await, "valid beyond 24 h");

    // herdctl certify: the operator's smoke test, with its own key.
    let token_file = files.path("pg.token");
    std::fs::write(&token_file, format!("{POSTGRES_TOKEN}\n")).unwrap();
    let out = herdctl(&[
        "certify",
        "--identity",
        &identity.to_string(),
        "--token-file",
        &token_file.display().to_string(),
        "--id",
        POSTGRES,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stdout.contains(&format!("identity   {POSTGRES}")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("serial     "), "{}", out.stdout);
    assert!(out.stdout.contains("not after  "), "{}", out.stdout);
    assert!(out.stdout.contains("verifies"), "{}", out.stdout);

    let metrics = control.metrics().await;
    assert!(
        metrics.contains("herd_control_certificates_issued_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herd_control_trust_bundle_roots 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("herd_control_issuer_not_after_timestamp_seconds 1"),
        "{metrics}"
    );
    // The token is a secret: never in the log.
    assert!(!control.log().contains(POSTGRES_TOKEN), "{}", control.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_or_a_csr_for_another_identity_is_refused() {
    let root = Root::generate("herd test root");
    let files = files(&root, &[&root]);
    let (control, identity) = start(&files, &[]).await;

    let wrong = certify(identity, csr(POSTGRES), "not-a-token-at-all-0000")
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated, "{wrong:?}");
    let none = certify(identity, csr(POSTGRES), "").await.unwrap_err();
    assert_eq!(none.code(), Code::Unauthenticated, "{none:?}");

    // Redis's token, asking for Postgres's identity.
    let other = certify(identity, csr(POSTGRES), REDIS_TOKEN)
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    assert!(
        other.message().contains(POSTGRES) && other.message().contains(REDIS),
        "{other:?}"
    );

    // A token removed from the file stops working without a restart; the other keeps working.
    files.write_tokens(
        "
        tokens:
          - token: pg-0123456789abcdef
            namespace: data
            serviceAccount: postgres
        ",
    );
    eventually("the removed token to be refused", RELOAD, || async {
        let refused = certify(identity, csr(REDIS), REDIS_TOKEN).await.err()?;
        (refused.code() == Code::Unauthenticated).then_some(())
    })
    .await;
    certify(identity, csr(POSTGRES), POSTGRES_TOKEN)
        .await
        .expect("the kept token still works");

    // A broken tokens file is logged with FILE:LINE:COLUMN and the last good version stays.
    files.write_tokens(
        "
        tokens:
          - token: short
            namespace: data
            serviceAccount: postgres
        ",
    );
    let tokens_path = files.path("tokens.yaml").display().to_string();
    eventually("the broken tokens file to be logged", RELOAD, || async {
        control
            .log()
            .contains(&format!(
                "{tokens_path}:2:12: tokens[0].token: a bootstrap token has at least 16 bytes"
            ))
            .then_some(())
    })
    .await;
    certify(identity, csr(POSTGRES), POSTGRES_TOKEN)
        .await
        .expect("the last good tokens still serve");

    let metrics = control.metrics().await;
    assert!(
        metrics.contains(r#"herd_control_certify_refused_total{reason="token"}"#)
            && metrics.contains(r#"herd_control_certify_refused_total{reason="identity"} 1"#),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_csrs_are_refused_while_a_concurrent_client_is_served() {
    let root = Root::generate("herd test root");
    let files = files(&root, &[&root]);
    let (control, identity) = start(&files, &[]).await;

    // A well-behaved proxy renewing, bounded: 40 calls, each must succeed.
    let bystander = tokio::spawn(async move {
        let mut failures = Vec::new();
        for _ in 0..40 {
            if let Err(e) = certify(identity, csr(POSTGRES), POSTGRES_TOKEN).await {
                failures.push(e);
            }
        }
        failures
    });

    let with = |change: &dyn Fn(&mut CertificateParams)| {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(POSTGRES.try_into().unwrap())];
        change(&mut params);
        csr_with(&params)
    };
    let extra_san = with(&|p| {
        p.subject_alt_names
            .push(SanType::DnsName("postgres.data.svc".try_into().unwrap()))
    });
    let two_uris = with(&|p| {
        p.subject_alt_names
            .push(SanType::URI(REDIS.try_into().unwrap()))
    });
    let ca_true = with(&|p| p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained));
    let key_cert_sign = with(&|p| p.key_usages = vec![KeyUsagePurpose::KeyCertSign]);
    let huge = with(&|p| {
        for i in 0..400 {
            p.subject_alt_names.push(SanType::DnsName(
                format!("host-{i:04}-padding-padding-padding.example")
                    .try_into()
                    .unwrap(),
            ));
        }
    });
    assert!(huge.len() > 16 * 1024, "{} bytes", huge.len());
    let mut bad_signature = csr(POSTGRES);
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 0x55;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("extra DNS SAN", extra_san, "2 subjectAltNames"),
        ("two URIs", two_uris, "2 subjectAltNames"),
        ("CA=true", ca_true, "CA=true"),
        ("keyCertSign", key_cert_sign, "keyUsage"),
        ("over 16 KiB", huge, "more than the limit"),
        ("bad signature", bad_signature, "signature"),
        (
            "not DER",
            b"-----BEGIN CERTIFICATE REQUEST-----".to_vec(),
            "not a DER",
        ),
        ("empty", Vec::new(), "not a DER"),
    ];
    for (what, csr, says) in cases {
        let refused = certify(identity, csr, POSTGRES_TOKEN).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{what}: {refused:?}");
        assert!(refused.message().contains(says), "{what}: {refused:?}");
    }
    // A megabyte is refused by the transport before it is buffered whole.
    let flood = certify(identity, vec![0x30; 1024 * 1024], POSTGRES_TOKEN)
        .await
        .unwrap_err();
    assert_ne!(flood.code(), Code::Ok);

    let failures = tokio::time::timeout(Duration::from_secs(60), bystander)
        .await
        .expect("bystander finished")
        .unwrap();
    assert!(failures.is_empty(), "the bystander failed: {failures:?}");
    let metrics = control.metrics().await;
    assert!(
        metrics.contains(r#"herd_control_certify_refused_total{reason="csr"} 8"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("herd_control_certificates_issued_total 40"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_is_rotated_without_a_restart() {
    let old = Root::generate("herd root old");
    let new = Root::generate("herd root new");
    let mut files = files(&old, &[&old]);
    let (control, identity) = start(&files, &[]).await;
    let issue = || async {
        certify(identity, csr(POSTGRES), POSTGRES_TOKEN)
            .await
            .expect("certified")
    };
    let der_of = |root: &Root| pem::parse(&root.cert_pem).unwrap().into_contents();

    // Switching the issuer before the bundle trusts it is refused; the old CA keeps issuing.
    files.update(&new, &[&old]);
    eventually("the untrusted issuer to be refused", RELOAD, || async {
        control
            .log()
            .contains("does not trust the CA certificate")
            .then_some(())
    })
    .await;
    let answer = issue().await;
    assert_eq!(answer.trust_bundle, vec![der_of(&old)]);
    assert!(openssl_verifies(&answer).await.0);

    // 1. Add the new root: both come back, the old root still issues.
    files.update(&old, &[&old, &new]);
    let answer = eventually("two roots in the bundle", RELOAD, || async {
        let answer = issue().await;
        (answer.trust_bundle.len() == 2).then_some(answer)
    })
    .await;
    assert_eq!(answer.trust_bundle, vec![der_of(&old), der_of(&new)]);
    assert!(openssl_verifies(&answer).await.0);

    // 2. Switch the issuer's key and certificate to the new root (in one Secret update).
    files.update(&new, &[&old, &new]);
    let answer = eventually("leaves from the new root", RELOAD, || async {
        let answer = issue().await;
        let only_new = herd_tests::identity::certify_response_with_bundle(&answer, &[der_of(&new)]);
        openssl_verifies(&only_new).await.0.then_some(answer)
    })
    .await;
    assert_eq!(answer.trust_bundle.len(), 2);

    // 3. Remove the old root.
    files.update(&new, &[&new]);
    let answer = eventually("one root in the bundle", RELOAD, || async {
        let answer = issue().await;
        (answer.trust_bundle.len() == 1).then_some(answer)
    })
    .await;
    assert_eq!(answer.trust_bundle, vec![der_of(&new)]);
    let (ok, text) = openssl_verifies(&answer).await;
    assert!(ok, "{text}");
    assert!(
        control
            .metrics()
            .await
            .contains("herd_control_trust_bundle_roots 1")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_without_the_issuer_stops_the_start_with_one_line() {
    let root = Root::generate("herd test root");
    let other = Root::generate("someone else");
    let files = files(&root, &[&other]);
    let mut command = tokio::process::Command::new(herd_tests::proxy::bin("herd-control"));
    command
        .arg("--mesh")
        .arg(files.path("."))
        .args(files.args(herd_tests::ports::addr()))
        .args(["--discovery-listen", &herd_tests::ports::addr().to_string()])
        .args(["--admin-listen", &herd_tests::ports::addr().to_string()])
        .kill_on_drop(true);
    let out = herd_tests::within("herd-control to exit", TIMEOUT, command.output())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("does not trust the CA certificate") && stderr.contains("bundle.pem"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_token_certifies_its_own_identity_and_audience_only() {
    let kube = KubeApi::start().await;
    kube.namespace("mastodon").await;
    kube.apply(
        "apiVersion: v1
         kind: ServiceAccount
         metadata: { name: web, namespace: mastodon }
         ---
         apiVersion: v1
         kind: ServiceAccount
         metadata: { name: sidekiq, namespace: mastodon }",
    )
    .await;
    let root = Root::generate("herd test root");
    let files = files(&root, &[&root]);
    let kubeconfig = kube.kubeconfig_path().display().to_string();
    let (control, identity) = start(&files, &["--kubeconfig", &kubeconfig]).await;
    const WEB: &str = "spiffe://cluster.local/ns/mastodon/sa/web";
    const SIDEKIQ: &str = "spiffe://cluster.local/ns/mastodon/sa/sidekiq";

    let web_token = kube.create_token("mastodon", "web", "herd").await;
    let answer = certify(identity, csr(WEB), &web_token)
        .await
        .expect("certified");
    let (ok, text) = openssl_verifies(&answer).await;
    assert!(ok, "{text}");
    let (_, text) = openssl(
        &[
            "x509",
            "-noout",
            "-ext",
            "subjectAltName",
            "-in",
            "{dir}/leaf.pem",
        ],
        &[("leaf.pem", &pem(&answer.certificate_chain[..1]))],
    )
    .await;
    assert!(text.contains(&format!("URI:{WEB}")), "{text}");

    // web's token asking for sidekiq's identity.
    let other = certify(identity, csr(SIDEKIQ), &web_token)
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");

    // sidekiq's token minted for another audience.
    let elsewhere = kube.create_token("mastodon", "sidekiq", "vault").await;
    let refused = certify(identity, csr(SIDEKIQ), &elsewhere)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("audience"), "{refused:?}");

    // Bootstrap tokens still work beside the cluster's.
    certify(identity, csr(POSTGRES), POSTGRES_TOKEN)
        .await
        .expect("bootstrap token beside TokenReview");

    let log = control.log();
    assert!(
        !log.contains(&web_token) && !log.contains(&elsewhere),
        "a token was logged"
    );
    let metrics = control.metrics().await;
    assert!(
        metrics.contains(r#"herd_control_certify_refused_total{reason="identity"} 1"#),
        "{metrics}"
    );
}

/// A proxy given the mesh's trust anchors asks for its certificate over TLS and accepts only
/// the control plane's identity: an impostor identity, or a service whose certificate the
/// anchors do not trust, gets no token and gives no certificate, and the log says why.
#[tokio::test(flavor = "multi_thread")]
async fn with_trust_anchors_a_proxy_certifies_over_tls_with_the_control_plane_only() {
    let root = Root::generate("herd test root");
    let files = files(&root, &[&root]);
    let (control, identity) = start(&files, &[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, POSTGRES_TOKEN).expect("token file");
    let other = dir.path().join("other.pem");
    std::fs::write(&other, Root::generate("another root").cert_pem).expect("other root");
    let bundle = files.path("bundle.pem");
    let proxy_yaml = |anchors: &std::path::Path, more: &str| {
        format!(
            "
            proxy:
              admin: {{listen: $ADMIN}}
              inbound: {{listen: $INBOUND, app: 127.0.0.1:9, mtls: strict}}
              identity: {{addresses: [{identity}], id: {POSTGRES}, tokenFile: {token}, trustAnchors: {anchors}{more}}}
            ",
            token = token.display(),
            anchors = anchors.display(),
        )
    };

    // The default controlIdentity is what herd-control presents by default: certified.
    let good = Proxy::start(&proxy_yaml(&bundle, "")).await;
    let metrics = control.metrics().await;
    let identity_connections = |security: &str| {
        sample(
            &metrics,
            &format!("herd_control_connections_total{{port=\"identity\",security=\"{security}\"}}"),
        )
    };
    assert_eq!(identity_connections("tls"), 1.0, "{metrics}");
    assert_eq!(identity_connections("plaintext"), 0.0, "{metrics}");
    drop(good);

    // Another identity expected: the handshake fails at the proxy, naming both.
    let impostor = "spiffe://cluster.local/ns/herd/sa/impostor";
    let wrong = Proxy::start_unready(&proxy_yaml(
        &bundle,
        &format!(", controlIdentity: {impostor}"),
    ))
    .await;
    let line = wrong.wait_for_log("cannot get a certificate").await;
    assert!(
        line.contains(&format!(
            "the server is spiffe://cluster.local/ns/herd/sa/herd-control, not the expected {impostor}"
        )),
        "{line}"
    );
    assert_eq!(wrong.admin_get("/ready").await.status, 503);

    // Anchors of another CA: the control plane's certificate is not trusted.
    let stranger = Proxy::start_unready(&proxy_yaml(&other, "")).await;
    let line = stranger.wait_for_log("cannot get a certificate").await;
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert_eq!(stranger.admin_get("/ready").await.status, 503);

    // Neither sent its token: the service issued nothing after the first proxy's certificate.
    let metrics = control.metrics().await;
    assert_eq!(
        sample(&metrics, "herd_control_certificates_issued_total"),
        1.0,
        "{metrics}"
    );
    assert!(
        sample(
            &metrics,
            "herd_control_connections_total{port=\"identity\",security=\"failed\"}"
        ) >= 2.0,
        "{metrics}"
    );
}
