//! `herdctl inject`'s stream handling: which documents change, which come back byte for byte.

use serde_json::{Value, json};

use super::settings;
use crate::inject::manifest::{Report, inject};

const STREAM: &str = "# Mastodon, all of it.
apiVersion: v1
kind: ConfigMap
metadata:
  name: env   # the app's settings
data:
  LOCAL_DOMAIN: mastodon.example
  DB_PORT: \"5432\"
  SINGLE_USER_MODE: \"false\"
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec:
  ports: [{ port: 3000 }]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: mastodon
spec:
  selector: { matchLabels: { app: web } }
  template:
    metadata:
      labels: { app: web }
    spec:
      containers:
        - name: web
          image: mastodon:4.3
          ports: [{ containerPort: 3000 }]
          env: [{ name: DB_PORT, value: \"5432\" }, { name: FLAG, value: \"yes\" }]
          volumeMounts: [{ name: assets, mountPath: /assets }]
      volumes:
        - name: assets
          configMap: { name: env, defaultMode: 0644 }
---
apiVersion: apps/v1
kind: StatefulSet
metadata: { name: redis }
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
metadata: { name: node-agent }
spec:
  selector: { matchLabels: { app: agent } }
  template:
    metadata: { labels: { app: agent } }
    spec:
      containers: [{ name: agent, image: agent:1 }]
---
apiVersion: batch/v1
kind: Job
metadata: { name: migrate }
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{ name: migrate, image: mastodon:4.3, command: [rails, db:migrate] }]
---
apiVersion: batch/v1
kind: CronJob
metadata: { name: cleanup }
spec:
  schedule: \"0 4 * * *\"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{ name: cleanup, image: mastodon:4.3 }]
---
apiVersion: v1
kind: Pod
metadata: { name: debug, annotations: { herd.io/inject: disabled } }
spec:
  containers: [{ name: shell, image: busybox }]
---
apiVersion: v1
kind: Pod
metadata: { name: toolbox }
spec:
  containers: [{ name: shell, image: busybox }]
";

/// The documents of `output`, parsed as Kubernetes reads YAML.
fn parsed(output: &str) -> Vec<Value> {
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    serde_saphyr::from_multiple_with_options(output, options).unwrap()
}

fn outcome<'a>(reports: &'a [Report], workload: &str) -> &'a str {
    &reports
        .iter()
        .find(|r| r.workload == workload)
        .unwrap_or_else(|| panic!("no report for {workload}: {reports:?}"))
        .outcome
}

#[test]
fn every_workload_kind_is_injected_and_everything_else_comes_back_as_it_was() {
    let injected = inject(STREAM, "mastodon.yaml", &settings(true)).unwrap();
    let docs = parsed(&injected.output);
    assert_eq!(docs.len(), 9);

    // The ConfigMap and the Service, byte for byte (comment included).
    let original: Vec<&str> = STREAM.split("---\n").collect();
    assert!(
        injected.output.starts_with(original[0]),
        "{}",
        injected.output
    );
    assert!(injected.output.contains(original[1]));

    let template = |doc: &Value, pointer: &str| doc.pointer(pointer).unwrap().clone();
    let init_names = |t: &Value| -> Vec<String> {
        t["spec"]["initContainers"]
            .as_array()
            .map(|l| {
                l.iter()
                    .map(|c| c["name"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for (i, pointer) in [
        (2, "/spec/template"),
        (3, "/spec/template"),
        (4, "/spec/template"),
        (5, "/spec/template"),
        (6, "/spec/jobTemplate/spec/template"),
        (8, ""),
    ] {
        let t = template(&docs[i], pointer);
        assert_eq!(init_names(&t), ["herd-init", "herd-proxy"], "document {i}");
        assert_eq!(t["metadata"]["labels"]["herd.io/meshed"], "true");
    }
    // The opted-out Pod is untouched.
    assert_eq!(init_names(&docs[7]), Vec::<String>::new());
    assert!(
        injected
            .output
            .contains("metadata: { name: debug, annotations: { herd.io/inject: disabled } }")
    );

    // What the input meant, the output means: quoted numbers and YAML 1.1 words stay strings,
    // the octal mode stays 0644 (420).
    let web = &docs[2]["spec"]["template"]["spec"];
    assert_eq!(
        web["containers"][0]["env"],
        json!([{ "name": "DB_PORT", "value": "5432" }, { "name": "FLAG", "value": "yes" }])
    );
    assert_eq!(web["volumes"][0]["configMap"]["defaultMode"], 420);
    assert_eq!(docs[2]["metadata"]["namespace"], "mastodon");
    assert_eq!(docs[6]["spec"]["schedule"], "0 4 * * *");
    // The StatefulSet's annotation reached its proxy's configuration.
    let redis_proxy = &docs[3]["spec"]["template"]["spec"]["initContainers"][1];
    let yaml = redis_proxy["env"][3]["value"].as_str().unwrap();
    assert!(yaml.contains("opaquePorts: [\"6379\"]"), "{yaml}");

    let reports = &injected.reports;
    assert_eq!(outcome(reports, "Deployment mastodon/web"), "injected");
    assert_eq!(outcome(reports, "CronJob cleanup"), "injected");
    assert_eq!(
        outcome(reports, "Pod debug"),
        "opted out (herd.io/inject: disabled)"
    );
    assert_eq!(reports.len(), 7, "{reports:?}");
}

#[test]
fn injecting_the_output_again_changes_nothing() {
    let once = inject(STREAM, "-", &settings(true)).unwrap();
    let twice = inject(&once.output, "-", &settings(false)).unwrap();
    assert_eq!(twice.output, once.output);
    assert!(
        twice
            .reports
            .iter()
            .all(|r| r.outcome == "already injected" || r.outcome.starts_with("opted out")),
        "{:?}",
        twice.reports
    );
}

#[test]
fn a_workload_herd_cannot_patch_is_left_as_it_was_and_reported() {
    let stream = "apiVersion: v1\nkind: Pod\nmetadata: { name: host }\nspec:\n  hostNetwork: true\n  containers: [{ name: a }]\n";
    let injected = inject(stream, "-", &settings(true)).unwrap();
    assert_eq!(injected.output, stream);
    assert_eq!(injected.reports.len(), 1);
    assert!(injected.reports[0].is_refusal());
    assert!(injected.reports[0].outcome.contains("hostNetwork"));
}

#[test]
fn a_bad_document_stops_the_run_naming_it() {
    let stream = "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: a }\n---\n# the web app\napiVersion: apps/v1\nkind: Deployment\nmetadata: { name: web\nspec: {}\n";
    let err = inject(stream, "mastodon.yaml", &settings(true)).unwrap_err();
    assert_eq!((err.index, err.line), (2, 5), "{err}");
    assert!(
        err.to_string()
            .starts_with("mastodon.yaml: document 2 (line 5): not YAML: "),
        "{err}"
    );

    let no_template = "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: { name: web }\nspec: { replicas: 2 }\n";
    let err = inject(no_template, "-", &settings(true)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "-: document 1 (line 2): Deployment web has no pod template at /spec/template"
    );
}

#[test]
fn empty_documents_and_comments_pass_through() {
    let stream = "# nothing but comments\n---\n---\n# more\n...\n";
    let injected = inject(stream, "-", &settings(true)).unwrap();
    assert_eq!(injected.output, stream);
    assert!(injected.reports.is_empty());
}
