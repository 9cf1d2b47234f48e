//! herd's Helm chart as an operator meets it: `helm lint` and `helm template` of `charts/herd`
//! with the helm built from its Go module ([`crate::kube::tool`]), the rendered objects read as
//! JSON for the checks a test makes, and the YAML kept for `kubectl apply --dry-run=server`.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::process::Command;

use crate::TIMEOUT;

/// The chart's directory in this checkout.
pub fn chart_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../charts/herd")
}

/// What one helm run printed.
#[derive(Debug)]
pub struct Helm {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Runs helm with `args` (no cluster: helm gets an empty kubeconfig and its own cache dirs).
pub async fn helm(args: &[&str]) -> Helm {
    let home = tempfile::tempdir().expect("helm home");
    let output = Command::new(crate::kube::tool("helm"))
        .args(args)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env("KUBECONFIG", home.path().join("no-cluster"))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = crate::within("helm", TIMEOUT, output)
        .await
        .expect("run helm");
    Helm {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `helm template RELEASE charts/herd --namespace NAMESPACE ARGS...`: the rendered YAML, or
/// a panic with helm's error.
pub async fn template(release: &str, namespace: &str, args: &[&str]) -> String {
    let chart = chart_dir().display().to_string();
    let mut all = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
    ];
    all.extend_from_slice(args);
    let out = helm(&all).await;
    assert!(out.success, "helm {}: {}", all.join(" "), out.stderr);
    out.stdout
}

/// The documents of a multi-document YAML stream, as JSON values (empty documents dropped).
pub fn objects(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(yaml)
        .unwrap_or_else(|e| panic!("not YAML: {e}\n{yaml}"))
        .into_iter()
        .filter(|v| !v.is_null())
        .collect()
}

/// The one object of `kind` named `name` among `objects`; panics listing what there is.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(objects)))
}

/// `KIND/NAME` of every object, sorted.
pub fn kinds(objects: &[Value]) -> Vec<String> {
    let mut all: Vec<String> = objects
        .iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect();
    all.sort();
    all
}
