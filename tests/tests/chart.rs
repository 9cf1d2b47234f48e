//! The Helm chart (`charts/herd`) as a platform team uses it: `helm lint`, `helm template`, and
//! every rendered object applied to the real kube-apiserver with `kubectl apply
//! --dry-run=server`, so the API server itself says each one is valid; then herd-control run
//! with exactly the arguments and the generated issuer the chart gives it.

use base64::Engine as _;
use herd_tests::control::{Control, herdctl};
use herd_tests::helm::{self, find, kinds, objects, template};
use herd_tests::kube::KubeApi;
use herd_tests::ports;
use serde_json::Value;

const NAMESPACE: &str = "herd";

/// CRDs of the Prometheus Operator's PodMonitor and ServiceMonitor, reduced to what the API
/// server needs to accept the chart's objects (their schemas are open).
const MONITORING_CRDS: &str = "
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: { name: podmonitors.monitoring.coreos.com }
    spec:
      group: monitoring.coreos.com
      scope: Namespaced
      names: { kind: PodMonitor, plural: podmonitors, singular: podmonitor, listKind: PodMonitorList }
      versions:
        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema: { type: object, x-kubernetes-preserve-unknown-fields: true }
    ---
    apiVersion: apiextensions.k8s.io/v1
    kind: CustomResourceDefinition
    metadata: { name: servicemonitors.monitoring.coreos.com }
    spec:
      group: monitoring.coreos.com
      scope: Namespaced
      names: { kind: ServiceMonitor, plural: servicemonitors, singular: servicemonitor, listKind: ServiceMonitorList }
      versions:
        - name: v1
          served: true
          storage: true
          schema:
            openAPIV3Schema: { type: object, x-kubernetes-preserve-unknown-fields: true }
";

fn b64(value: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(value.as_str().expect("a base64 string"))
        .expect("valid base64")
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_lint_passes_with_the_defaults_and_with_every_option() {
    let chart = helm::chart_dir().display().to_string();
    let lint = helm::helm(&["lint", &chart, "--strict"]).await;
    assert!(lint.success, "{}\n{}", lint.stdout, lint.stderr);

    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.crt");
    std::fs::write(
        &ca,
        herd_tests::identity::Root::generate("brought root").cert_pem,
    )
    .expect("ca.crt");
    let ca = ca.display().to_string();
    let every = [
        "lint",
        &chart,
        "--strict",
        "--set",
        "monitoring.podMonitor.enabled=true,monitoring.serviceMonitor.enabled=true",
        "--set",
        "identity.issuer.existingSecret=my-ca,injector.failurePolicy=Fail,controlPlane.antiAffinity=hard",
        "--set",
        "controlPlane.namespaces={mastodon,data}",
        "--set-file",
        &format!("identity.issuer.caCert={ca}"),
    ];
    let lint = helm::helm(&every).await;
    assert!(lint.success, "{}\n{}", lint.stdout, lint.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_rendered_object_is_accepted_by_the_real_api_server() {
    let kube = KubeApi::start().await;
    kube.namespace(NAMESPACE).await;

    let rendered = template("herd", NAMESPACE, &[]).await;
    let all = objects(&rendered);
    assert_eq!(
        kinds(&all),
        [
            "ClusterRole/herd-control",
            "ClusterRoleBinding/herd-control",
            "ConfigMap/herd-dashboard",
            "ConfigMap/herd-trust-anchors",
            "Deployment/herd-control",
            "MutatingWebhookConfiguration/herd-injector",
            "PodDisruptionBudget/herd-control",
            "Secret/herd-issuer",
            "Service/herd-control",
            "Service/herd-control-headless",
            "ServiceAccount/herd-control",
        ]
    );
    let applied = kube
        .try_kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered))
        .await;
    assert!(applied.success, "{}\n{}", applied.stdout, applied.stderr);
    assert_eq!(
        applied.stdout.lines().count(),
        all.len(),
        "one line per object: {}",
        applied.stdout
    );

    // Monitors asked for but the Operator's API absent: nothing rendered that would fail.
    let monitors = [
        "--set",
        "monitoring.podMonitor.enabled=true,monitoring.serviceMonitor.enabled=true",
    ];
    let without = objects(&template("herd", NAMESPACE, &monitors).await);
    assert_eq!(kinds(&without), kinds(&all));

    // With the Operator's CRDs in the cluster (helm learns of them with --api-versions here,
    // from the cluster itself on `helm install`), both monitors, and the server accepts them.
    kube.apply(MONITORING_CRDS).await;
    kube.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/podmonitors.monitoring.coreos.com",
        "crd/servicemonitors.monitoring.coreos.com",
        "--timeout=30s",
    ])
    .await;
    let mut args = monitors.to_vec();
    args.extend(["--api-versions", "monitoring.coreos.com/v1"]);
    let rendered = template("herd", NAMESPACE, &args).await;
    let with = objects(&rendered);
    let pods = find(&with, "PodMonitor", "herd-proxies");
    assert_eq!(pods["spec"]["podMetricsEndpoints"][0]["port"], "herd-admin");
    let control = find(&with, "ServiceMonitor", "herd-control");
    assert_eq!(control["spec"]["endpoints"][0]["port"], "http-admin");
    let applied = kube
        .try_kubectl(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered))
        .await;
    assert!(applied.success, "{}\n{}", applied.stdout, applied.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_trusts_the_issuer_and_the_control_plane_is_spread_and_guarded() {
    let all = objects(&template("mesh", NAMESPACE, &[]).await);
    // Release names are prefixed: two releases never collide.
    let secret = find(&all, "Secret", "mesh-herd-issuer");
    let ca_crt = b64(&secret["data"]["ca.crt"]);
    assert!(String::from_utf8_lossy(&ca_crt).starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        secret["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );

    // The API server verifies the injector against the issuer's CA, which is also what
    // proxies trust.
    let webhook = find(&all, "MutatingWebhookConfiguration", "mesh-herd-injector");
    let hook = &webhook["webhooks"][0];
    assert_eq!(b64(&hook["clientConfig"]["caBundle"]), ca_crt);
    assert_eq!(hook["clientConfig"]["service"]["name"], "mesh-herd-control");
    assert_eq!(hook["clientConfig"]["service"]["path"], "/inject");
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "None");
    let excluded = hook["namespaceSelector"]["matchExpressions"][0]["values"]
        .as_array()
        .expect("excluded namespaces");
    assert!(excluded.contains(&Value::from(NAMESPACE)), "{excluded:?}");
    assert!(
        excluded.contains(&Value::from("kube-system")),
        "{excluded:?}"
    );
    let anchors = find(&all, "ConfigMap", "mesh-herd-trust-anchors");
    assert_eq!(
        anchors["data"]["bundle.pem"].as_str().unwrap().trim(),
        String::from_utf8_lossy(&ca_crt).trim()
    );

    // Two replicas on different nodes if possible, one always up, probed, bounded.
    let deployment = find(&all, "Deployment", "mesh-herd-control");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
            ["topologyKey"],
        "kubernetes.io/hostname"
    );
    let container = &pod["containers"][0];
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/live");
    assert!(container["resources"]["requests"]["cpu"].is_string());
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let pdb = find(&all, "PodDisruptionBudget", "mesh-herd-control");
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    // Least privilege: read-only on what the mesh is made of, create on TokenReviews only.
    let role = find(&all, "ClusterRole", "mesh-herd-control");
    for rule in role["rules"].as_array().unwrap() {
        let verbs: Vec<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let resources = &rule["resources"];
        if resources == &Value::from(vec!["tokenreviews"]) {
            assert_eq!(verbs, ["create"]);
        } else {
            assert_eq!(verbs, ["get", "list", "watch"], "{rule}");
        }
    }

    // The dashboard is the project's, labelled for Grafana's sidecar.
    let dashboard = find(&all, "ConfigMap", "mesh-herd-dashboard");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let file = std::fs::read_to_string(helm::chart_dir().join("dashboards/herd.json")).unwrap();
    assert_eq!(
        dashboard["data"]["herd.json"].as_str().unwrap().trim(),
        file.trim()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_brought_issuer_needs_its_certificate_to_render_and_is_not_generated() {
    let refused = helm::helm(&[
        "template",
        "herd",
        &helm::chart_dir().display().to_string(),
        "--set",
        "identity.issuer.existingSecret=my-ca",
    ])
    .await;
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .contains("identity.issuer.existingSecret is not in the cluster yet"),
        "{}",
        refused.stderr
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let root = herd_tests::identity::Root::generate("brought root");
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, &root.cert_pem).expect("ca.crt");
    let all = objects(
        &template(
            "herd",
            NAMESPACE,
            &[
                "--set",
                "identity.issuer.existingSecret=my-ca",
                "--set-file",
                &format!("identity.issuer.caCert={}", ca.display()),
            ],
        )
        .await,
    );
    assert!(
        !all.iter().any(|o| o["kind"] == "Secret"),
        "{:?}",
        kinds(&all)
    );
    let webhook = find(&all, "MutatingWebhookConfiguration", "herd-injector");
    assert_eq!(
        String::from_utf8(b64(&webhook["webhooks"][0]["clientConfig"]["caBundle"])).unwrap(),
        root.cert_pem
    );
    let deployment = find(&all, "Deployment", "herd-control");
    let volumes = &deployment["spec"]["template"]["spec"]["volumes"];
    assert_eq!(volumes[0]["secret"]["secretName"], "my-ca");
}

/// The Deployment's arguments are ones herd-control accepts, and the issuer the chart
/// generated (Helm's `genCA`: RSA, PKCS#1) is one it signs with: run it with exactly those
/// arguments, files where the chart mounts them and the API server standing in for the
/// cluster, and wait until it is ready.
#[tokio::test(flavor = "multi_thread")]
async fn herd_control_starts_with_the_charts_arguments_and_generated_issuer() {
    let kube = KubeApi::start().await;
    let all = objects(&template("herd", NAMESPACE, &[]).await);
    let dir = tempfile::tempdir().expect("temp dir");
    let control = control_as_the_chart_runs_it(&all, &kube, dir.path(), None).await;
    let log = control.log();
    assert!(
        log.contains("control plane certificate signed identity=spiffe://cluster.local/ns/herd/sa/herd-control"),
        "{log}"
    );
}

/// The chart installed for real, herd-control run with its arguments where the chart's Service
/// leads (an address of this host that a "pod" namespace's link gives it, in the Service's
/// endpoints, as a kubelet and the endpoint controllers would have it), and a kubelet's report
/// of ready replicas: the API server calls the injector by the Service's name and verifies its
/// certificate against the chart's caBundle, pods are stored injected, and `herdctl check`
/// passes every check.
#[tokio::test(flavor = "multi_thread")]
async fn the_installed_chart_injects_pods_through_herd_control_and_herdctl_check_passes() {
    let kube = KubeApi::start().await;
    kube.namespace(NAMESPACE).await;
    let rendered = template("herd", NAMESPACE, &[]).await;
    let applied = kube
        .try_kubectl(&["apply", "-f", "-"], Some(&rendered))
        .await;
    assert!(applied.success, "{}\n{}", applied.stdout, applied.stderr);
    let all = objects(&rendered);

    // herd-control's "pod address": the host's side of a pod link (the API server refuses
    // loopback endpoints).
    let link = herd_tests::netns::Pod::new("herd-control");
    let webhook = std::net::SocketAddr::new(link.host_ip().into(), ports::free());
    let dir = tempfile::tempdir().expect("temp dir");
    let _control = control_as_the_chart_runs_it(&all, &kube, dir.path(), Some(webhook)).await;

    // What the endpoint controllers and a kubelet would report.
    kube.apply(&format!(
        "apiVersion: v1
         kind: Endpoints
         metadata: {{ name: herd-control, namespace: {NAMESPACE} }}
         subsets:
           - addresses: [{{ ip: {ip} }}]
             ports: [{{ name: https-webhook, port: {port} }}]
         ---
         apiVersion: discovery.k8s.io/v1
         kind: EndpointSlice
         metadata:
           name: herd-control-1
           namespace: {NAMESPACE}
           labels: {{ kubernetes.io/service-name: herd-control }}
         addressType: IPv4
         endpoints: [{{ addresses: [\"{ip}\"], conditions: {{ ready: true }} }}]
         ports: [{{ name: https-webhook, port: {port}, protocol: TCP }}]",
        ip = webhook.ip(),
        port = webhook.port(),
    ))
    .await;
    kube.report_ready(NAMESPACE, "herd-control", 2).await;

    // Every check passes, the injector's included (a dry-run Pod comes back with the proxy).
    let kubeconfig = kube.kubeconfig_path().display().to_string();
    let check = herd_tests::eventually("herdctl check to pass", herd_tests::TIMEOUT, || async {
        let out = herdctl(&["check", "--kubeconfig", &kubeconfig]).await;
        (out.code == Some(0)).then_some(out)
    })
    .await;
    assert!(
        check
            .stdout
            .contains("ok   injector: a dry-run Pod in default came back with the proxy"),
        "{}",
        check.stdout
    );

    // A Pod of a namespace that asks for injection is stored with the proxy the chart names.
    kube.apply(
        "apiVersion: v1
         kind: Namespace
         metadata: { name: mastodon, annotations: { herd.io/inject: enabled } }
         ---
         apiVersion: v1
         kind: ServiceAccount
         metadata: { name: web, namespace: mastodon }
         ---
         apiVersion: v1
         kind: Pod
         metadata: { name: web-0, namespace: mastodon }
         spec:
           serviceAccountName: web
           containers: [{ name: web, image: ghcr.io/mastodon/mastodon:v4.3.0, ports: [{ containerPort: 3000 }] }]",
    )
    .await;
    let pod = kube.get("mastodon", "pod", "web-0").await;
    let init = pod["spec"]["initContainers"]
        .as_array()
        .expect("init containers");
    let proxy = init
        .iter()
        .find(|c| c["name"] == "herd-proxy")
        .unwrap_or_else(|| panic!("no herd-proxy in {init:?}"));
    let deployment = find(&all, "Deployment", "herd-control");
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert_eq!(proxy["image"], image);
    assert_eq!(proxy["restartPolicy"], "Always");
    let config = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "HERD_PROXY_CONFIG_YAML")
        .and_then(|e| e["value"].as_str())
        .expect("the proxy's configuration");
    assert!(
        config.contains("herd-control-headless.herd.svc.cluster.local:8086"),
        "{config}"
    );
    assert!(
        config.contains("spiffe://cluster.local/ns/herd/sa/herd-control"),
        "{config}"
    );
}

/// herd-control run as the chart's Deployment runs it, with exactly its arguments but for
/// where things are on this machine: the issuer and trust anchors the chart rendered, written
/// under `dir` where the chart mounts them; the API server for the cluster; free loopback ports
/// for its listeners (the kit gives discovery and admin), the webhook's on `webhook` if given.
async fn control_as_the_chart_runs_it(
    all: &[Value],
    kube: &KubeApi,
    dir: &std::path::Path,
    webhook: Option<std::net::SocketAddr>,
) -> Control {
    let secret = find(all, "Secret", "herd-issuer");
    let anchors = find(all, "ConfigMap", "herd-trust-anchors");
    for (sub, key, bytes) in [
        ("issuer", "ca.crt", b64(&secret["data"]["ca.crt"])),
        ("issuer", "ca.key", b64(&secret["data"]["ca.key"])),
        (
            "trust-anchors",
            "bundle.pem",
            anchors["data"]["bundle.pem"]
                .as_str()
                .unwrap()
                .as_bytes()
                .to_vec(),
        ),
    ] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
        std::fs::write(dir.join(sub).join(key), bytes).unwrap();
    }
    let deployment = find(all, "Deployment", "herd-control");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["command"][0], "herd-control");
    let mut args = Vec::new();
    for arg in container["args"].as_array().unwrap() {
        let arg = arg.as_str().unwrap();
        if arg.starts_with("--discovery-listen=") || arg.starts_with("--admin-listen=") {
            continue;
        }
        args.push(match (arg.split_once('='), webhook) {
            (Some(("--webhook-listen", _)), Some(addr)) => format!("--webhook-listen={addr}"),
            (Some((flag, _)), _) if flag.ends_with("-listen") => {
                format!("{flag}={}", ports::addr())
            }
            _ if arg == "--kubernetes" => {
                format!("--kubeconfig={}", kube.kubeconfig_path().display())
            }
            _ => arg.replace("/var/run/herd", &dir.display().to_string()),
        });
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Control::start_with_args(&[], &args).await
}
