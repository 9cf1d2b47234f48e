//! `herdctl install` and `herdctl check --kubeconfig` against the real kube-apiserver: the
//! manifests are the Helm chart's (object by object, apart from what must differ), the API
//! server accepts every one, and `check` says what a cluster has and lacks, before and after.

use herd_tests::control::herdctl;
use herd_tests::helm::{find, kinds, objects, template};
use herd_tests::identity::Root;
use herd_tests::kube::KubeApi;
use serde_json::Value;

/// What differs between `helm template herd` and `herdctl install` by design: who manages the
/// objects, and the issuer (each generates its own).
fn normalize(mut object: Value) -> Value {
    if let Some(labels) = object["metadata"]["labels"].as_object_mut() {
        labels.remove("helm.sh/chart");
        labels.remove("app.kubernetes.io/managed-by");
    }
    match object["kind"].as_str() {
        Some("Secret") => object["data"] = Value::from("ISSUER"),
        Some("ConfigMap") if object["metadata"]["name"] == "herd-trust-anchors" => {
            object["data"] = Value::from("ISSUER")
        }
        Some("MutatingWebhookConfiguration") => {
            object["webhooks"][0]["clientConfig"]["caBundle"] = Value::from("ISSUER")
        }
        _ => {}
    }
    object
}

#[tokio::test(flavor = "multi_thread")]
async fn herdctl_install_prints_the_charts_objects_and_the_api_server_accepts_them() {
    let chart = objects(&template("herd", "herd", &[]).await);
    let out = herdctl(&["install"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let installed = objects(&out.stdout);
    assert_eq!(kinds(&installed), kinds(&chart));
    for object in &chart {
        let name = object["metadata"]["name"].as_str().unwrap();
        let kind = object["kind"].as_str().unwrap();
        let ours = find(&installed, kind, name);
        assert_eq!(
            normalize(ours.clone()),
            normalize(object.clone()),
            "{kind}/{name} differs between herdctl install and the chart"
        );
    }
    // The generated issuer is a CA herd-control loads, and the webhook trusts it.
    let secret = find(&installed, "Secret", "herd-issuer");
    let webhook = find(&installed, "MutatingWebhookConfiguration", "herd-injector");
    assert_eq!(
        secret["data"]["ca.crt"],
        webhook["webhooks"][0]["clientConfig"]["caBundle"]
    );

    let kube = KubeApi::start().await;
    kube.namespace("herd").await;
    let applied = kube
        .try_kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&out.stdout))
        .await;
    assert!(applied.success, "{}\n{}", applied.stdout, applied.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn herdctl_install_takes_a_brought_issuer_and_refuses_a_mismatched_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = Root::generate("brought root");
    let other = Root::generate("another root");
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        path.display().to_string()
    };
    let (cert, key, wrong) = (
        write("ca.crt", &root.cert_pem),
        write("ca.key", &root.key_pem),
        write("other.key", &other.key_pem),
    );
    let out = herdctl(&[
        "install",
        "--namespace",
        "mesh",
        "--issuer-cert",
        &cert,
        "--issuer-key",
        &key,
        "--failure-policy",
        "Fail",
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let all = objects(&out.stdout);
    let webhook = find(&all, "MutatingWebhookConfiguration", "herd-injector");
    assert_eq!(webhook["webhooks"][0]["failurePolicy"], "Fail");
    assert_eq!(
        webhook["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "mesh"
    );
    let anchors = find(&all, "ConfigMap", "herd-trust-anchors");
    assert_eq!(
        anchors["data"]["bundle.pem"].as_str().unwrap().trim(),
        root.cert_pem.trim()
    );

    let refused = herdctl(&["install", "--issuer-cert", &cert, "--issuer-key", &wrong]).await;
    assert_eq!(refused.code, Some(64), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("does not belong to the CA certificate"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    let bad = herdctl(&["install", "--failure-policy", "Sometimes"]).await;
    assert_eq!(bad.code, Some(64), "{bad:?}");
    assert_eq!(bad.stderr.lines().count(), 1, "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn herdctl_check_says_what_a_cluster_has_before_and_after_installing() {
    let kube = KubeApi::start().await;
    let kubeconfig = kube.kubeconfig_path().display().to_string();

    let pre = herdctl(&["check", "--kubeconfig", &kubeconfig, "--pre"]).await;
    assert_eq!(pre.code, Some(0), "{pre:?}");
    assert!(
        pre.stdout
            .contains("ok   Kubernetes v1.37.2 (herd needs 1.26 or later)"),
        "{}",
        pre.stdout
    );
    assert!(
        pre.stdout.contains("ok   native sidecars"),
        "{}",
        pre.stdout
    );

    // Nothing installed: each missing piece is named.
    let missing = herdctl(&["check", "--kubeconfig", &kubeconfig]).await;
    assert_eq!(missing.code, Some(1), "{missing:?}");
    for expected in [
        "FAIL no issuer Secret herd/herd-issuer with ca.crt",
        "FAIL no MutatingWebhookConfiguration herd-injector",
        "FAIL no Deployment herd/herd-control",
        "FAIL injector: a dry-run Pod in default came back without the proxy",
    ] {
        assert!(
            missing.stdout.contains(expected),
            "{expected}:\n{}",
            missing.stdout
        );
    }

    // Installed, with no kubelet to run the control plane: the objects check out, the replicas
    // and the injector do not.
    kube.namespace("herd").await;
    let install = herdctl(&["install"]).await;
    assert_eq!(install.code, Some(0), "{}", install.stderr);
    let applied = kube
        .try_kubectl(&["apply", "-f", "-"], Some(&install.stdout))
        .await;
    assert!(applied.success, "{}", applied.stderr);
    let after = herdctl(&["check", "--kubeconfig", &kubeconfig]).await;
    assert_eq!(after.code, Some(1), "{after:?}");
    for expected in [
        "days left)",
        "ok   webhook configuration herd-injector trusts the issuer",
        "FAIL control plane: 0 of 2 replicas ready",
        "FAIL injector: a dry-run Pod in default came back without the proxy",
    ] {
        assert!(
            after.stdout.contains(expected),
            "{expected}:\n{}",
            after.stdout
        );
    }

    // Replicas reported ready (as a kubelet would): that line turns ok.
    kube.report_ready("herd", "herd-control", 2).await;
    let ready = herdctl(&["check", "--kubeconfig", &kubeconfig]).await;
    assert!(
        ready
            .stdout
            .contains("ok   control plane: 2 of 2 replicas ready"),
        "{}",
        ready.stdout
    );
}
