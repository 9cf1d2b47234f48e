//! The injector end to end: herd-control's webhook called by the real kube-apiserver (the kit's),
//! the Mastodon example applied with kubectl, and the Pods read back as the API server stored
//! them; a webhook outage under each failure policy; bad reviews and pods herd cannot patch;
//! `herdctl inject` on a stream of every workload kind, its output accepted by the API server.

use std::path::PathBuf;
use std::time::Duration;

use herd_tests::inject::{IMAGE, Injector, herdctl_with_stdin, is_injected};
use herd_tests::proxy::run_with_env;
use herd_tests::{TIMEOUT, curl, eventually};
use serde_json::{Value, json};

/// How long a whole test may take: an API server starting on a busy machine included.
const BOUND: Duration = Duration::from_secs(300);

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../config/examples/kubernetes/mastodon.yaml")
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .map(|l| l.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default()
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    ["initContainers", "containers"]
        .iter()
        .filter_map(|key| pod["spec"][key].as_array())
        .flatten()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod:#}"))
}

fn args(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect()
}

/// The proxy's `HERD_PROXY_CONFIG_YAML`, as stored (the kubelet fills in its `$(VAR)`s).
fn bootstrap(pod: &Value) -> String {
    container(pod, "herd-proxy")["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "HERD_PROXY_CONFIG_YAML")
        .and_then(|e| e["value"].as_str())
        .unwrap()
        .to_owned()
}

/// The proxy's configuration with its `$(VAR)`s replaced by the stored pod's fields, as the
/// kubelet does from the downward API when it starts the container.
fn as_the_kubelet_fills_it(pod: &Value) -> String {
    let field = |pointer: &str| {
        pod.pointer(pointer)
            .and_then(Value::as_str)
            .unwrap()
            .to_owned()
    };
    bootstrap(pod)
        .replace("$(HERD_POD_NAME)", &field("/metadata/name"))
        .replace("$(HERD_POD_NAMESPACE)", &field("/metadata/namespace"))
        .replace(
            "$(HERD_POD_SERVICE_ACCOUNT)",
            &field("/spec/serviceAccountName"),
        )
}

/// The API server stores each of Mastodon's pods with herd's proxy as a native sidecar, each
/// pod's annotations honoured; the opted-out pod and pods in namespaces that did not ask are
/// stored as written; a pod injected already is not injected twice.
#[tokio::test(flavor = "multi_thread")]
async fn the_mastodon_example_is_stored_with_native_sidecars_as_annotated() {
    herd_tests::within("the test", BOUND, async {
        let injector = Injector::start(&[]).await;
        let kube = &injector.kube;
        kube.kubectl(&["apply", "-f", example().to_str().unwrap()])
            .await;

        let web = kube.get("mastodon", "pod", "web").await;
        let spec = &web["spec"];
        assert_eq!(names(&spec["initContainers"]), ["herd-init", "herd-proxy"]);
        assert_eq!(names(&spec["containers"]), ["web"]);
        let proxy = container(&web, "herd-proxy");
        assert_eq!(proxy["image"], IMAGE);
        assert_eq!(proxy["restartPolicy"], "Always", "a native sidecar");
        assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
        assert_eq!(
            proxy["resources"]["limits"],
            json!({ "cpu": "1", "memory": "128Mi" }),
            "herd.io/proxy-cpu-limit and -memory-limit"
        );
        assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
        let init = container(&web, "herd-init");
        assert_eq!(init["image"], IMAGE);
        assert_eq!(
            args(init),
            [
                "init", "--inbound-port", "4143", "--outbound-port", "4140", "--admin-port",
                "4191", "--proxy-uid", "2102", "--skip-inbound-ports", "9394",
            ],
            "herd.io/skip-inbound-ports"
        );
        assert_eq!(
            init["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN", "NET_RAW"])
        );
        let token = spec["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == "herd-identity-token")
            .expect("the token volume");
        assert_eq!(
            token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "herd"
        );
        assert_eq!(web["metadata"]["labels"]["herd.io/meshed"], "true");
        assert_eq!(web["metadata"]["annotations"]["prometheus.io/port"], "4191");

        // The proxy's configuration: herd-control's services, the pod's identity from the
        // downward API, the CA that signed the webhook's certificate as its trust anchors.
        let config = bootstrap(&web);
        for line in [
            "    transparent: true",
            "    listen: \"[::]:4143\"",
            "    dns: herd-control-headless.herd.svc.cluster.local:8086",
            "    id: $(HERD_POD_NAME)",
            "    id: spiffe://cluster.local/ns/$(HERD_POD_NAMESPACE)/sa/$(HERD_POD_SERVICE_ACCOUNT)",
            "    controlIdentity: spiffe://cluster.local/ns/herd/sa/herd-control",
        ] {
            assert!(config.lines().any(|l| l == line), "no {line:?} in\n{config}");
        }
        let anchors: String = injector
            .root
            .cert_pem
            .lines()
            .map(|l| format!("      {l}\n"))
            .collect();
        assert!(config.ends_with(&anchors), "{config}");

        let streaming = kube.get("mastodon", "pod", "streaming").await;
        assert!(is_injected(&streaming));
        let sidekiq = kube.get("mastodon", "pod", "sidekiq").await;
        assert_eq!(
            args(container(&sidekiq, "herd-init"))[9..],
            ["--skip-outbound-ports", "25,587"],
            "herd.io/skip-outbound-ports"
        );
        assert!(
            container(&sidekiq, "herd-proxy")["resources"]
                .get("limits")
                .is_none()
        );

        // Each stored configuration, with the pod's name, namespace and account filled in as the
        // kubelet does, is one herd-proxy accepts.
        for pod in [&web, &streaming, &sidekiq] {
            let yaml = as_the_kubelet_fills_it(pod);
            let check = run_with_env(&["--check"], &[("HERD_PROXY_CONFIG_YAML", &yaml)]).await;
            assert_eq!(
                (check.code, check.stdout.as_str()),
                (Some(0), "$HERD_PROXY_CONFIG_YAML: ok\n"),
                "{}\n{yaml}",
                check.stderr
            );
            assert!(yaml.contains("id: spiffe://cluster.local/ns/mastodon/sa/"), "{yaml}");
        }

        // Opted out: stored as written.
        let tootctl = kube.get("mastodon", "pod", "tootctl").await;
        assert!(!is_injected(&tootctl));
        assert!(tootctl["spec"].get("initContainers").is_none());
        assert!(tootctl["metadata"]["labels"].get("herd.io/meshed").is_none());

        // Another namespace: injected only where asked, by the namespace's label or the pod.
        kube.namespace("other").await;
        kube.apply(
            "apiVersion: v1
             kind: Namespace
             metadata: { name: labelled, labels: { herd.io/inject: enabled } }
             ---
             apiVersion: v1
             kind: ServiceAccount
             metadata: { name: default, namespace: labelled }
             ---
             apiVersion: v1
             kind: Pod
             metadata: { name: plain, namespace: other }
             spec: { containers: [{ name: app, image: app }] }
             ---
             apiVersion: v1
             kind: Pod
             metadata: { name: asks, namespace: other, annotations: { herd.io/inject: enabled, herd.io/opaque-ports: \"25,5432\" } }
             spec: { containers: [{ name: app, image: app }] }
             ---
             apiVersion: v1
             kind: Pod
             metadata: { name: by-label, namespace: labelled }
             spec: { containers: [{ name: app, image: app }] }",
        )
        .await;
        assert!(!is_injected(&kube.get("other", "pod", "plain").await));
        let asks = kube.get("other", "pod", "asks").await;
        assert!(is_injected(&asks));
        assert!(
            bootstrap(&asks).contains("    opaquePorts: [\"25\", \"5432\"]\n"),
            "herd.io/opaque-ports: {}",
            bootstrap(&asks)
        );
        assert!(is_injected(&kube.get("labelled", "pod", "by-label").await));

        // A pod made from an injected one (say, a copy of its manifest) is not injected twice.
        let mut copy = web.clone();
        copy["metadata"] = json!({
            "name": "web-copy",
            "namespace": "mastodon",
            "labels": web["metadata"]["labels"],
            "annotations": web["metadata"]["annotations"],
        });
        copy.as_object_mut().unwrap().remove("status");
        kube.apply(&copy.to_string()).await;
        let stored = kube.get("mastodon", "pod", "web-copy").await;
        assert_eq!(stored["spec"]["initContainers"], web["spec"]["initContainers"]);
        assert_eq!(stored["spec"]["containers"], web["spec"]["containers"]);
        let tokens = stored["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| v["name"] == "herd-identity-token")
            .count();
        assert_eq!(tokens, 1);

        // `herdctl check`'s probe (a dry-run Pod asking for injection) sees the proxy added.
        let kubeconfig = kube.kubeconfig_path().display().to_string();
        let check = herd_tests::control::herdctl(&["check", "--kubeconfig", &kubeconfig]).await;
        assert!(
            check
                .stdout
                .contains("ok   injector: a dry-run Pod in default came back with the proxy"),
            "{}",
            check.stdout
        );

        let metrics = injector.control.metrics().await;
        assert!(
            metrics.contains("herd_control_injections_total{result=\"already-injected\"} 1"),
            "{metrics}"
        );
        assert!(
            metrics.contains("herd_control_injections_total{result=\"not-wanted\"}"),
            "{metrics}"
        );
    })
    .await;
}

/// Where native sidecars are turned off, the proxy is the first regular container and the app
/// waits for it (`postStart` on `/ready?wait=`); `herd-init` runs after the pod's own init
/// containers.
#[tokio::test(flavor = "multi_thread")]
async fn with_native_sidecars_off_the_proxy_is_a_regular_container_the_app_waits_for() {
    herd_tests::within("the test", BOUND, async {
        let injector = Injector::start(&["--native-sidecars", "never"]).await;
        let kube = &injector.kube;
        kube.kubectl(&["apply", "-f", example().to_str().unwrap()])
            .await;
        kube.apply(
            "apiVersion: v1
             kind: Pod
             metadata: { name: migrate, namespace: mastodon }
             spec:
               serviceAccountName: web
               initContainers: [{ name: wait-for-db, image: busybox }]
               containers: [{ name: migrate, image: mastodon }]",
        )
        .await;

        let web = kube.get("mastodon", "pod", "web").await;
        assert_eq!(names(&web["spec"]["initContainers"]), ["herd-init"]);
        assert_eq!(names(&web["spec"]["containers"]), ["herd-proxy", "web"]);
        let proxy = container(&web, "herd-proxy");
        assert!(proxy.get("restartPolicy").is_none());
        assert_eq!(
            proxy["lifecycle"]["postStart"]["httpGet"],
            json!({ "path": "/ready?wait=120s", "port": 4191, "scheme": "HTTP" })
        );
        let migrate = kube.get("mastodon", "pod", "migrate").await;
        assert_eq!(
            names(&migrate["spec"]["initContainers"]),
            ["wait-for-db", "herd-init"]
        );
        assert_eq!(
            names(&migrate["spec"]["containers"]),
            ["herd-proxy", "migrate"]
        );
    })
    .await;
}

/// A pod herd cannot patch is created without the proxy, and kubectl shows the warning;
/// a malformed review is answered `allowed` with a warning; herd-control logs both.
#[tokio::test(flavor = "multi_thread")]
async fn what_herd_cannot_patch_is_allowed_unchanged_with_a_warning() {
    herd_tests::within("the test", BOUND, async {
        let injector = Injector::start(&[]).await;
        let kube = &injector.kube;
        kube.apply(
            "apiVersion: v1
             kind: Namespace
             metadata: { name: mastodon, annotations: { herd.io/inject: enabled } }
             ---
             apiVersion: v1
             kind: ServiceAccount
             metadata: { name: default, namespace: mastodon }",
        )
        .await;
        let cases = [
            (
                "clash",
                "containers: [{ name: exporter, image: e, ports: [{ containerPort: 4191 }] }]",
                "Warning: herd: not injected: port clash: container exporter declares port 4191",
            ),
            (
                "host",
                "hostNetwork: true\n  containers: [{ name: app, image: a }]",
                "Warning: herd: not injected: the pod uses hostNetwork",
            ),
            (
                "half",
                "containers: [{ name: app, image: a }, { name: herd-proxy, image: other }]",
                "Warning: herd: not injected: unknown container layout: the pod has herd-proxy \
                 but not the rest of herd's sidecar",
            ),
        ];
        for (name, spec, warning) in cases {
            let out = kube
                .try_kubectl(
                    &["apply", "-f", "-"],
                    Some(&format!(
                        "apiVersion: v1\nkind: Pod\nmetadata: {{ name: {name}, namespace: mastodon }}\nspec:\n  {spec}\n"
                    )),
                )
                .await;
            assert!(out.success, "{name}: {}", out.stderr);
            assert!(out.stderr.contains(warning), "{name}: {}", out.stderr);
            let pod = kube.get("mastodon", "pod", name).await;
            assert!(pod["spec"].get("initContainers").is_none(), "{pod:#}");
            assert!(pod["metadata"]["labels"].get("herd.io/meshed").is_none());
        }
        let annotation = kube
            .try_kubectl(
                &["apply", "-f", "-"],
                Some(
                    "apiVersion: v1\nkind: Pod\nmetadata: { name: typo, namespace: mastodon, annotations: { herd.io/proxy-memory-limit: 128MB } }\nspec: { containers: [{ name: app, image: a }] }\n",
                ),
            )
            .await;
        assert!(annotation.success, "{}", annotation.stderr);
        assert!(
            annotation.stderr.contains(
                "Warning: herd: not injected: herd.io/proxy-memory-limit: `128MB` is not a \
                 Kubernetes quantity"
            ),
            "{}",
            annotation.stderr
        );

        // Reviews that are not reviews, straight to the webhook over TLS with herd's CA.
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, &injector.root.cert_pem).unwrap();
        let url = format!("https://{}/inject", injector.webhook());
        for (body, uid, reason) in [
            ("{not json", "", "the body is not JSON"),
            (
                r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"d1","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE","object":[]}}"#,
                "d1",
                "the review has no object",
            ),
        ] {
            let out = curl()
                .arg("--cacert")
                .arg(&ca)
                .args(["-X", "POST", "-H", "content-type: application/json", "--data-binary", body])
                .get(&url)
                .await;
            assert_eq!(out.status(), 200, "{}", out.stderr);
            let answer = out.json();
            assert_eq!(
                answer["response"]["uid"], uid,
                "{answer}"
            );
            assert_eq!(answer["response"]["allowed"], true);
            assert!(answer["response"].get("patch").is_none());
            let warning = answer["response"]["warnings"][0].as_str().unwrap();
            assert!(
                warning.starts_with(&format!("herd: review not understood: {reason}")),
                "{warning}"
            );
        }
        let out = curl().arg("--cacert").arg(&ca).get(&url).await;
        assert_eq!(out.status(), 405);

        let log = injector.control.log();
        assert!(log.contains("injector: not injected: port clash"), "{log}");
        assert!(log.contains("injector: review not understood"), "{log}");
        let metrics = injector.control.metrics().await;
        assert!(
            metrics.contains("herd_control_injections_total{result=\"refused\"} 4"),
            "{metrics}"
        );
        assert!(
            metrics.contains("herd_control_injections_total{result=\"malformed\"} 2"),
            "{metrics}"
        );
    })
    .await;
}

/// herd-control down: with `failurePolicy: Ignore` a pod is created without the proxy; with
/// `Fail` its creation is refused with the API server's message.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_outage_blocks_pod_creation_only_with_failure_policy_fail() {
    herd_tests::within("the test", BOUND, async {
        let mut injector = Injector::start(&[]).await;
        injector.kube.namespace("mastodon").await;
        injector
            .kube
            .apply(
                "apiVersion: v1
                 kind: Namespace
                 metadata: { name: mastodon, annotations: { herd.io/inject: enabled } }",
            )
            .await;
        injector.control.kill().await;
        let kube = &injector.kube;
        let pod = |name: &str| {
            format!(
                "apiVersion: v1
                 kind: Pod
                 metadata: {{ name: {name}, namespace: mastodon }}
                 spec: {{ containers: [{{ name: app, image: app }}] }}"
            )
        };

        // Ignore (installed by the kit): created, without the proxy.
        let out = kube.try_apply(&pod("during-outage")).await;
        assert!(out.success, "{}", out.stderr);
        let stored = kube.get("mastodon", "pod", "during-outage").await;
        assert!(!is_injected(&stored), "{stored:#}");

        // Fail: refused, once the API server has the new configuration.
        injector.configure("Fail").await;
        let mut attempt = 0;
        let refusal = eventually("a pod creation to be refused", 3 * TIMEOUT, || {
            attempt += 1;
            let name = format!("refused-{attempt}");
            let manifest = pod(&name);
            async move {
                let out = kube.try_apply(&manifest).await;
                (!out.success).then_some((name, out.stderr))
            }
        })
        .await;
        let (name, stderr) = refusal;
        assert!(
            stderr.contains("failed calling webhook \"inject.herd.io\"")
                && stderr.contains("connection refused"),
            "{stderr}"
        );
        let missing = kube
            .try_kubectl(&["get", "pod", &name, "-n", "mastodon"], None)
            .await;
        assert!(
            !missing.success && missing.stderr.contains("NotFound"),
            "{missing:?}"
        );
    })
    .await;
}

/// Every workload kind of a stream is injected offline; the ConfigMap and the Service come out
/// byte for byte; the API server accepts every object of the output; a bad document stops the
/// run with one line naming it.
#[tokio::test(flavor = "multi_thread")]
async fn herdctl_inject_patches_every_workload_of_a_stream_and_nothing_else() {
    herd_tests::within("the test", BOUND, async {
        let kube = herd_tests::kube::KubeApi::start().await;
        kube.namespace("mastodon").await;
        let root = herd_tests::identity::Root::generate("herd test root");
        let dir = tempfile::tempdir().unwrap();
        let anchors = dir.path().join("anchors.pem");
        std::fs::write(&anchors, &root.cert_pem).unwrap();
        let anchors = anchors.to_str().unwrap();

        let exit = herdctl_with_stdin(&["inject", "-", "--trust-anchors", anchors], STREAM).await;
        assert_eq!(exit.code, Some(0), "{}", exit.stderr);
        let out = &exit.stdout;
        assert!(out.contains(CONFIG_MAP), "the ConfigMap changed:\n{out}");
        assert!(out.contains(SERVICE), "the Service changed:\n{out}");
        for workload in [
            "Deployment mastodon/web",
            "StatefulSet mastodon/redis",
            "DaemonSet mastodon/node-agent",
            "Job mastodon/migrate",
            "CronJob mastodon/cleanup",
            "Pod mastodon/toolbox",
        ] {
            assert!(
                exit.stderr
                    .contains(&format!("herdctl: {workload}: injected\n")),
                "{workload}: {}",
                exit.stderr
            );
        }
        assert!(
            exit.stderr
                .contains("herdctl: Pod mastodon/debug: opted out")
        );

        // What the API server makes of it: each workload's pod template has both containers.
        let applied = kube
            .try_kubectl(
                &["apply", "--dry-run=server", "-o", "json", "-f", "-"],
                Some(out.as_str()),
            )
            .await;
        assert!(applied.success, "{}\n{out}", applied.stderr);
        let items = applied.json()["items"].as_array().unwrap().clone();
        assert_eq!(items.len(), 9);
        let template = |item: &Value| -> Value {
            match item["kind"].as_str().unwrap() {
                "Pod" => item.clone(),
                "CronJob" => item["spec"]["jobTemplate"]["spec"]["template"].clone(),
                _ => item["spec"]["template"].clone(),
            }
        };
        for item in &items {
            let kind = item["kind"].as_str().unwrap();
            let name = item["metadata"]["name"].as_str().unwrap();
            let meshed = !matches!(kind, "ConfigMap" | "Service") && name != "debug";
            assert_eq!(is_injected(&template(item)), meshed, "{kind} {name}");
        }

        // Fed its own output, herdctl changes nothing.
        let again = herdctl_with_stdin(&["inject", "-", "--trust-anchors", anchors], out).await;
        assert_eq!(again.code, Some(0), "{}", again.stderr);
        assert_eq!(&again.stdout, out);

        // A document that is not YAML: one line, exit 64, nothing on stdout.
        let bad = format!(
            "{CONFIG_MAP}---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: web\n"
        );
        let exit = herdctl_with_stdin(&["inject", "-", "--trust-anchors", anchors], &bad).await;
        assert_eq!(exit.code, Some(64), "{}", exit.stderr);
        assert!(exit.stdout.is_empty(), "{}", exit.stdout);
        assert!(
            exit.stderr
                .starts_with("herdctl: -: document 2 (line 11): not YAML: "),
            "{}",
            exit.stderr
        );
        assert_eq!(exit.stderr.lines().count(), 1, "{}", exit.stderr);

        // Anchors that are not certificates are refused before anything is read.
        let exit =
            herdctl_with_stdin(&["inject", "-", "--trust-anchors", "/dev/null"], STREAM).await;
        assert_eq!(exit.code, Some(64), "{}", exit.stderr);
        assert!(
            exit.stderr.contains("--trust-anchors /dev/null"),
            "{}",
            exit.stderr
        );
    })
    .await;
}

const CONFIG_MAP: &str = "# Settings every component reads.
apiVersion: v1
kind: ConfigMap
metadata:
  name: mastodon-env
  namespace: mastodon
data:
  LOCAL_DOMAIN: mastodon.example
  DB_PORT: \"5432\"
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata: { name: web, namespace: mastodon }
spec:
  selector: { app: web }
  ports: [{ port: 3000, targetPort: 3000 }]
";

const STREAM: &str = "# Settings every component reads.
apiVersion: v1
kind: ConfigMap
metadata:
  name: mastodon-env
  namespace: mastodon
data:
  LOCAL_DOMAIN: mastodon.example
  DB_PORT: \"5432\"
---
apiVersion: v1
kind: Service
metadata: { name: web, namespace: mastodon }
spec:
  selector: { app: web }
  ports: [{ port: 3000, targetPort: 3000 }]
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: web, namespace: mastodon }
spec:
  replicas: 2
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers:
        - name: web
          image: ghcr.io/mastodon/mastodon:v4.3.0
          ports: [{ containerPort: 3000 }]
          envFrom: [{ configMapRef: { name: mastodon-env } }]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: redis, namespace: mastodon }
spec:
  serviceName: redis
  selector: { matchLabels: { app: redis } }
  template:
    metadata: { labels: { app: redis }, annotations: { herd.io/opaque-ports: \"6379\" } }
    spec:
      containers: [{ name: redis, image: redis:7, ports: [{ containerPort: 6379 }] }]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: { name: node-agent, namespace: mastodon }
spec:
  selector: { matchLabels: { app: agent } }
  template:
    metadata: { labels: { app: agent } }
    spec:
      containers: [{ name: agent, image: agent:1 }]
---
apiVersion: batch/v1
kind: Job
metadata: { name: migrate, namespace: mastodon }
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{ name: migrate, image: ghcr.io/mastodon/mastodon:v4.3.0, command: [rails, db:migrate] }]
---
apiVersion: batch/v1
kind: CronJob
metadata: { name: cleanup, namespace: mastodon }
spec:
  schedule: \"0 4 * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{ name: cleanup, image: ghcr.io/mastodon/mastodon:v4.3.0, command: [tootctl, media, remove] }]
---
apiVersion: v1
kind: Pod
metadata: { name: toolbox, namespace: mastodon }
spec:
  containers: [{ name: shell, image: busybox, command: [sleep, infinity] }]
---
apiVersion: v1
kind: Pod
metadata: { name: debug, namespace: mastodon, annotations: { herd.io/inject: disabled } }
spec:
  containers: [{ name: shell, image: busybox }]
";

/// A bad injector flag stops herd-control before it serves, with one line naming it.
#[tokio::test]
async fn a_bad_injector_flag_exits_64_with_one_line() {
    let mesh = tempfile::tempdir().unwrap();
    let mesh = mesh.path().to_str().unwrap();
    for (flag, value, line) in [
        (
            "--webhook-dns-names",
            "herd-control.herd.svc,bad name",
            "herd-control: --webhook-dns-names: `bad name` is neither a DNS name nor an IP address",
        ),
        (
            "--injected-control",
            "10.0.0.1:8086",
            "herd-control: --injected-control: `10.0.0.1:8086` is not NAME:PORT (a DNS name and a port from 1 to 65535)",
        ),
        (
            "--injected-identity",
            "herd-control-headless.herd.svc",
            "herd-control: --injected-identity: `herd-control-headless.herd.svc` is not NAME:PORT (a DNS name and a port from 1 to 65535)",
        ),
        (
            "--native-sidecars",
            "maybe",
            "herd-control: invalid value 'maybe' for '--native-sidecars <auto|always|never>'",
        ),
    ] {
        let mut command = tokio::process::Command::new(herd_tests::proxy::bin("herd-control"));
        command
            .args(["--mesh", mesh, flag, value])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = herd_tests::within("herd-control to exit", TIMEOUT, command.output())
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(64), "{flag}: {stderr}");
        assert_eq!(stderr.trim_end(), line, "{flag}");
    }
}
