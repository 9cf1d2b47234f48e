//! herd-control's injector under test, called by the real API server.
//!
//! [`Injector::start`] starts the kit's kube-apiserver, a CA ([`Root`]) and a herd-control
//! watching that server with the CA, its webhook on a fresh loopback port
//! (`--webhook-dns-names 127.0.0.1`), then installs a MutatingWebhookConfiguration pointing at
//! `https://127.0.0.1:PORT/inject` with the CA as its `caBundle`, and waits until the API server
//! calls it: a canary Pod in a namespace that asks for injection comes back injected. Pods are
//! then created with `kubectl` and read back as the API server stored them.

use std::net::SocketAddr;
use std::process::Stdio;

use serde_json::Value;

use crate::control::{Control, Exit};
use crate::identity::{CaFiles, Root};
use crate::kube::KubeApi;
use crate::{TIMEOUT, eventually};

/// The image the tests inject.
pub const IMAGE: &str = "registry.example/herd-proxy:test";

/// The webhook configuration's name, and its one webhook's.
pub const CONFIGURATION: &str = "herd-inject";
pub const WEBHOOK: &str = "inject.herd.io";

/// A kube-apiserver with herd-control's injector installed.
pub struct Injector {
    // Fields drop in order: herd-control before the API server it watches.
    pub control: Control,
    pub kube: KubeApi,
    pub root: Root,
    _ca: CaFiles,
    webhook: SocketAddr,
}

impl Injector {
    /// Starts everything (see the module doc); `args` are more herd-control flags
    /// (`--native-sidecars never`).
    pub async fn start(args: &[&str]) -> Injector {
        let kube = KubeApi::start().await;
        let root = Root::generate("herd test root");
        let ca = CaFiles::new(&root, &[&root]);
        let webhook = crate::ports::addr();
        let path = |name: &str| ca.path(name).display().to_string();
        let kubeconfig = kube.kubeconfig_path().display().to_string();
        let mut all = vec![
            "--kubeconfig".to_owned(),
            kubeconfig,
            "--identity-listen".into(),
            crate::ports::addr().to_string(),
            "--ca-cert".into(),
            path("ca.crt"),
            "--ca-key".into(),
            path("ca.key"),
            "--trust-bundle".into(),
            path("bundle.pem"),
            "--webhook-listen".into(),
            webhook.to_string(),
            "--webhook-dns-names".into(),
            "127.0.0.1".into(),
            "--proxy-image".into(),
            IMAGE.into(),
        ];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let control = Control::start_with_args(&[], &all).await;
        crate::until_accepting("the webhook port", webhook).await;
        let injector = Injector {
            control,
            kube,
            root,
            _ca: ca,
            webhook,
        };
        injector.configure("Ignore").await;
        injector.wait_until_called().await;
        injector
    }

    /// The webhook's address.
    pub fn webhook(&self) -> SocketAddr {
        self.webhook
    }

    /// Installs (or replaces) the webhook configuration with `failure_policy` (`Ignore`,
    /// `Fail`).
    pub async fn configure(&self, failure_policy: &str) {
        self.kube
            .apply(&webhook_configuration(
                self.webhook,
                &self.root.cert_pem,
                failure_policy,
            ))
            .await;
    }

    /// Waits until the API server calls the webhook: a canary Pod in namespace `canary` (which
    /// asks for injection) is stored injected. Each try's Pod is deleted.
    async fn wait_until_called(&self) {
        self.kube
            .apply(
                "apiVersion: v1
                 kind: Namespace
                 metadata: { name: canary, annotations: { herd.io/inject: enabled } }
                 ---
                 apiVersion: v1
                 kind: ServiceAccount
                 metadata: { name: default, namespace: canary }",
            )
            .await;
        let mut attempt = 0;
        eventually("the API server to call the webhook", 4 * TIMEOUT, || {
            attempt += 1;
            let name = format!("canary-{attempt}");
            async move {
                let created = self
                    .kube
                    .try_apply(&format!(
                        "apiVersion: v1
                         kind: Pod
                         metadata: {{ name: {name}, namespace: canary }}
                         spec: {{ containers: [{{ name: app, image: app }}] }}"
                    ))
                    .await;
                if !created.success {
                    return None;
                }
                let pod = self.kube.get("canary", "pod", &name).await;
                self.kube
                    .kubectl(&["delete", "pod", &name, "-n", "canary", "--wait=false"])
                    .await;
                is_injected(&pod).then_some(())
            }
        })
        .await;
    }
}

/// Whether a stored Pod has herd's containers (either shape).
pub fn is_injected(pod: &Value) -> bool {
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|c| c["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let all: Vec<String> = names("initContainers")
        .into_iter()
        .chain(names("containers"))
        .collect();
    all.iter().any(|n| n == "herd-proxy") && all.iter().any(|n| n == "herd-init")
}

/// A MutatingWebhookConfiguration calling `https://ADDR/inject` for every Pod created outside
/// `kube-system` and `herd`, trusting `ca_pem`.
pub fn webhook_configuration(addr: SocketAddr, ca_pem: &str, failure_policy: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1
         kind: MutatingWebhookConfiguration
         metadata: {{ name: {CONFIGURATION} }}
         webhooks:
           - name: {WEBHOOK}
             admissionReviewVersions: [v1]
             sideEffects: None
             failurePolicy: {failure_policy}
             reinvocationPolicy: Never
             timeoutSeconds: 10
             clientConfig:
               url: https://{addr}/inject
               caBundle: {}
             rules:
               - operations: [CREATE]
                 apiGroups: [\"\"]
                 apiVersions: [v1]
                 resources: [pods]
             namespaceSelector:
               matchExpressions:
                 - {{ key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, herd] }}",
        base64(ca_pem.as_bytes())
    )
}

/// Standard base64 with padding (RFC 4648), for `caBundle`.
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Runs `herdctl ARGS` with `stdin` as its input.
pub async fn herdctl_with_stdin(args: &[&str], stdin: &str) -> Exit {
    use tokio::io::AsyncWriteExt;
    let mut command = tokio::process::Command::new(crate::proxy::bin("herdctl"));
    command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().expect("spawn herdctl");
    let mut pipe = child.stdin.take().expect("herdctl stdin");
    let text = stdin.to_owned();
    tokio::spawn(async move {
        let _ = pipe.write_all(text.as_bytes()).await;
    });
    let output = crate::within("herdctl to exit", TIMEOUT, child.wait_with_output())
        .await
        .expect("run herdctl");
    Exit {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_rfc_4648() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(super::base64(plain.as_bytes()), encoded);
        }
    }
}
