//! A real Kubernetes API server on loopback: etcd and kube-apiserver, started per test.
//!
//! There is no cluster here, and a mocked API server cannot say what the real one accepts
//! (which addresses an EndpointSlice may hold, which token a TokenReview passes, what admission
//! does to a Pod). So [`KubeApi::start`] runs the real thing, built from Go modules by
//! `scripts/k8s-tools` into a folder outside the clone (`$HERD_K8S_TOOLS`, default
//! `~/.cache/herd/k8s-1.37.2`): fresh certificates ([`pki`]) in a temporary directory, etcd and
//! kube-apiserver on free loopback ports, a poll of `/readyz`, a kubeconfig with an admin
//! client certificate. Tests then drive it as an operator would, with `kubectl` (the machine's
//! own, or one built beside the others where there is none).
//!
//! What is missing is the rest of a cluster: no controller-manager (a namespace gets no
//! `default` ServiceAccount unless [`KubeApi::namespace`] makes it, nothing garbage-collects),
//! no scheduler or kubelet (Pods are stored, never run: a test's "pods" are its own processes
//! in [`crate::netns`] namespaces). The server runs with `--endpoint-reconciler-type=none`
//! (with a loopback advertise address it refuses to start otherwise).
//!
//! The tools missing is a failure, not a skip: `scripts/test` builds them before the tests.
//! Every failure to start names its step and shows the end of the process's log (its stdout
//! and stderr).

mod pki;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::{TIMEOUT, dedent};

/// The Kubernetes version `scripts/k8s-tools` builds (the default folder is named after it).
pub const VERSION: &str = "1.37.2";

/// How long etcd or kube-apiserver may take to become ready (about 4 s on an idle machine; the
/// bound allows for other tests' servers starting on the same two cores).
pub const START: Duration = Duration::from_secs(60);

/// The issuer of the server's service-account tokens.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

/// The folder holding kube-apiserver, etcd and helm (and kubectl, where the machine has none).
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("HERD_K8S_TOOLS") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(format!(".cache/herd/k8s-{VERSION}"))
        }
    }
}

/// The path of a binary `scripts/k8s-tools` built (`kube-apiserver`, `etcd`, `helm`); panics,
/// saying how to get it, if it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = tools_dir().join(name);
    assert!(
        path.is_file(),
        "{name} is missing from {} (HERD_K8S_TOOLS): run scripts/k8s-tools, which builds \
         kube-apiserver, etcd and helm there once (scripts/test runs it before the tests)",
        tools_dir().display()
    );
    path
}

/// kubectl: the one `scripts/k8s-tools` built where the machine had none, else the machine's.
pub fn kubectl_binary() -> PathBuf {
    let built = tools_dir().join("kubectl");
    if built.is_file() {
        built
    } else {
        PathBuf::from("kubectl")
    }
}

/// A running etcd and kube-apiserver; both are killed on drop.
pub struct KubeApi {
    // Fields drop in order: the server before its store, both before their directory.
    apiserver: Option<Daemon>,
    etcd: Daemon,
    apiserver_args: Vec<OsString>,
    port: u16,
    files: pki::Files,
    kubeconfig: PathBuf,
    dir: TempDir,
}

/// What one kubectl run produced.
#[derive(Debug)]
pub struct Kubectl {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// stdout as JSON (after `-o json`); panics with the output if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "kubectl printed no JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

impl KubeApi {
    /// Makes certificates, starts etcd and kube-apiserver, waits for `/readyz`, writes the
    /// kubeconfig, and creates the `default` namespace's `default` ServiceAccount.
    pub async fn start() -> KubeApi {
        // Both are looked for before anything starts.
        let etcd = tool("etcd");
        tool("kube-apiserver");
        let dir = tempfile::Builder::new()
            .prefix("herd-kube-")
            .tempdir()
            .expect("temp dir");
        let files =
            pki::write(dir.path()).unwrap_or_else(|e| panic!("kube: make the certificates: {e}"));
        let (etcd, etcd_url) = start_etcd(&etcd, dir.path()).await;
        let port = crate::ports::free();
        let mut api = KubeApi {
            apiserver: None,
            etcd,
            apiserver_args: apiserver_args(&etcd_url, port, dir.path(), &files),
            port,
            files,
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
        };
        api.start_apiserver().await;
        api.write_kubeconfig();
        api.apply(
            "apiVersion: v1
             kind: ServiceAccount
             metadata: { name: default, namespace: default }",
        )
        .await;
        api
    }

    /// `https://127.0.0.1:PORT`, the server's address (the same across restarts).
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// A kubeconfig for the admin (`O=system:masters`): for kubectl, kube-rs, helm.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The CA that signed the server's certificate and the admin's.
    pub fn ca_path(&self) -> &Path {
        &self.files.ca
    }

    /// Stops kube-apiserver (SIGKILL, as a crash) and starts it again on the same port with the
    /// same etcd, so everything stored survives; returns once it is ready again. For tests of
    /// watches that must outlive the server.
    pub async fn restart_apiserver(&mut self) {
        if let Some(mut old) = self.apiserver.take() {
            old.stop();
        }
        self.start_apiserver().await;
    }

    /// Runs kubectl with `args` (and `stdin`, if any) against this server.
    pub async fn try_kubectl(&self, args: &[&str], stdin: Option<&str>) -> Kubectl {
        let mut command = Command::new(kubectl_binary());
        command
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kubectl-cache"))
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "spawn {} (is kubectl installed?): {e}",
                kubectl_binary().display()
            )
        });
        if let Some(text) = stdin {
            // Written beside the wait, so kubectl's output never waits for its input.
            let mut pipe = child.stdin.take().expect("kubectl stdin");
            let text = text.to_owned();
            tokio::spawn(async move {
                let _ = pipe.write_all(text.as_bytes()).await;
            });
        }

        let what = format!("kubectl {}", args.join(" "));
        let output = crate::within(&what, TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        Kubectl {
            success: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs kubectl with `args`; its stdout. Panics with its stderr if it fails.
    pub async fn kubectl(&self, args: &[&str]) -> String {
        expect_ok(self.try_kubectl(args, None).await, args).stdout
    }

    /// `kubectl apply -f -` with `yaml` (see [`manifest`] for its indentation), succeeding or
    /// not: a test of what the server refuses reads the refusal from `stderr`.
    pub async fn try_apply(&self, yaml: &str) -> Kubectl {
        self.try_kubectl(&["apply", "-f", "-"], Some(&manifest(yaml)))
            .await
    }

    /// [`KubeApi::try_apply`] that must succeed; kubectl's stdout.
    pub async fn apply(&self, yaml: &str) -> String {
        expect_ok(self.try_apply(yaml).await, &["apply", "-f", "-"]).stdout
    }

    /// `kubectl create -f - -o json`: the object the server made (for a TokenReview or a
    /// SubjectAccessReview, its answer).
    pub async fn create(&self, yaml: &str) -> Value {
        let args = ["create", "-f", "-", "-o", "json"];
        expect_ok(self.try_kubectl(&args, Some(&manifest(yaml))).await, &args).json()
    }

    /// `kubectl get KIND NAME -n NAMESPACE -o json`.
    pub async fn get(&self, namespace: &str, kind: &str, name: &str) -> Value {
        let args = ["get", kind, name, "-n", namespace, "-o", "json"];
        expect_ok(self.try_kubectl(&args, None).await, &args).json()
    }

    /// Creates namespace `name` with its `default` ServiceAccount (which a controller-manager
    /// would add, and Pods need).
    pub async fn namespace(&self, name: &str) {
        self.apply(&format!(
            "apiVersion: v1
             kind: Namespace
             metadata: {{ name: {name} }}
             ---
             apiVersion: v1
             kind: ServiceAccount
             metadata: {{ name: default, namespace: {name} }}"
        ))
        .await;
    }

    /// Reports `replicas` of Deployment `name` ready, as a kubelet and the deployment
    /// controller would (neither runs here): a status patch.
    pub async fn report_ready(&self, namespace: &str, name: &str, replicas: u32) {
        let status = format!(
            r#"{{"status":{{"replicas":{replicas},"readyReplicas":{replicas},"availableReplicas":{replicas}}}}}"#
        );
        self.kubectl(&[
            "patch",
            "deployment",
            name,
            "-n",
            namespace,
            "--subresource=status",
            "--type=merge",
            "-p",
            &status,
        ])
        .await;
    }

    /// `kubectl create token SA -n NAMESPACE --audience AUDIENCE`: a bound service-account
    /// token (TokenRequest) for that audience.
    pub async fn create_token(&self, namespace: &str, account: &str, audience: &str) -> String {
        let args = [
            "create",
            "token",
            account,
            "-n",
            namespace,
            "--audience",
            audience,
        ];
        self.kubectl(&args).await.trim().to_owned()
    }

    async fn start_apiserver(&mut self) {
        let mut apiserver = Daemon::spawn(
            "kube-apiserver",
            &tool("kube-apiserver"),
            self.apiserver_args.clone(),
            self.dir.path().join("kube-apiserver.log"),
        );
        let url = format!("{}/readyz", self.url());
        let files = &self.files;
        apiserver
            .wait_ready("start kube-apiserver", || async {
                let out = crate::curl()
                    .arg("--cacert")
                    .arg(&files.ca)
                    .arg("--cert")
                    .arg(&files.admin_cert)
                    .arg("--key")
                    .arg(&files.admin_key)
                    .max_time(Duration::from_secs(5))
                    .get(&url)
                    .await;
                match out.exit {
                    Some(0) if out.heads.last().is_some_and(|h| h.status == 200) => Ok(()),
                    _ => Err(format!("{}{}", out.text(), out.stderr)),
                }
            })
            .await;
        self.apiserver = Some(apiserver);
    }

    fn write_kubeconfig(&self) {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{
                "name": "herd-test",
                "cluster": { "server": self.url(), "certificate-authority": self.files.ca },
            }],
            "users": [{
                "name": "admin",
                "user": {
                    "client-certificate": self.files.admin_cert,
                    "client-key": self.files.admin_key,
                },
            }],
            "contexts": [{
                "name": "herd-test",
                "context": { "cluster": "herd-test", "user": "admin" },
            }],
            "current-context": "herd-test",
        });
        std::fs::write(&self.kubeconfig, config.to_string())
            .unwrap_or_else(|e| panic!("kube: write the kubeconfig: {e}"));
    }
}

impl Drop for KubeApi {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(apiserver) = &self.apiserver {
                eprintln!("{}", apiserver.tail(30));
            }
            eprintln!("{}", self.etcd.tail(30));
        }
    }
}

/// A manifest written inline in a test: the first line starts right after the opening quote,
/// the others are indented with the code around them, so the first line is trimmed and the
/// indentation common to the others removed.
pub fn manifest(text: &str) -> String {
    match text.split_once('\n') {
        Some((first, rest)) => format!("{}\n{}", first.trim(), dedent(rest)),
        None => text.trim().to_owned(),
    }
}

/// Starts etcd with its store under `dir` on free loopback ports; returns it, once healthy,
/// with its client URL.
async fn start_etcd(program: &Path, dir: &Path) -> (Daemon, String) {
    let (client, peer) = (crate::ports::free(), crate::ports::free());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut etcd = Daemon::spawn(
        "etcd",
        program,
        vec![
            "--name=default".into(),
            arg("--data-dir=", &dir.join("etcd")),
            format!("--listen-client-urls={url}").into(),
            format!("--advertise-client-urls={url}").into(),
            format!("--listen-peer-urls={peer_url}").into(),
            format!("--initial-advertise-peer-urls={peer_url}").into(),
            format!("--initial-cluster=default={peer_url}").into(),
            // A test's store dies with the test: losing writes to a crash is fine, waiting for
            // the disk on every write is not.
            "--unsafe-no-fsync".into(),
        ],
        dir.join("etcd.log"),
    );
    let health = format!("{url}/health");
    etcd.wait_ready("start etcd", || async {
        let out = crate::curl()
            .max_time(Duration::from_secs(2))
            .get(&health)
            .await;
        let body = out.text();
        match out.exit {
            Some(0) if body.contains(r#""health":"true""#) => Ok(()),
            _ => Err(format!("{body}{}", out.stderr)),
        }
    })
    .await;
    (etcd, url)
}

/// kube-apiserver's command line: the flags of DESIGN.md's recipe, files from [`pki`].
fn apiserver_args(etcd_url: &str, port: u16, dir: &Path, files: &pki::Files) -> Vec<OsString> {
    vec![
        format!("--etcd-servers={etcd_url}").into(),
        "--bind-address=127.0.0.1".into(),
        "--advertise-address=127.0.0.1".into(),
        // With a loopback advertise address the server refuses to start otherwise.
        "--endpoint-reconciler-type=none".into(),
        format!("--secure-port={port}").into(),
        arg("--cert-dir=", dir),
        arg("--tls-cert-file=", &files.serving_cert),
        arg("--tls-private-key-file=", &files.serving_key),
        arg("--client-ca-file=", &files.ca),
        format!("--service-account-issuer={ISSUER}").into(),
        arg("--service-account-key-file=", &files.sa_public),
        arg("--service-account-signing-key-file=", &files.sa_private),
        "--service-cluster-ip-range=10.96.0.0/16".into(),
        "--authorization-mode=RBAC".into(),
        // What most clusters allow; the injector's init container may need it.
        "--allow-privileged=true".into(),
        "--profiling=false".into(),
        // A webhook named by a Service is called at the Service's endpoints, not its cluster
        // IP: no kube-proxy runs here to route a cluster IP.
        "--enable-aggregator-routing=true".into(),
    ]
}

fn expect_ok(out: Kubectl, args: &[&str]) -> Kubectl {
    assert!(
        out.success,
        "kubectl {} failed: {}{}",
        args.join(" "),
        out.stderr,
        out.stdout
    );
    out
}

/// `--flag=PATH` as one argument.
fn arg(flag: &str, path: &Path) -> OsString {
    let mut arg = OsString::from(flag);
    arg.push(path);
    arg
}

/// A long-running child with its output in a log file; killed (and reaped) on drop.
struct Daemon {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &'static str, program: &Path, args: Vec<OsString>, log: PathBuf) -> Daemon {
        let file = std::fs::File::create(&log)
            .unwrap_or_else(|e| panic!("kube: create {}: {e}", log.display()));
        let child = std::process::Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("dup log"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("kube: start {name}: spawn {}: {e}", program.display()));
        Daemon { name, child, log }
    }

    /// Polls `ready` until it is Ok; panics with `step`, the last answer and the end of the log
    /// if the process exits or [`START`] runs out.
    async fn wait_ready<F, Fut>(&mut self, step: &str, mut ready: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let deadline = Instant::now() + START;
        loop {
            if let Some(status) = self.exited() {
                panic!(
                    "kube: {step}: {} exited with {status}\n{}",
                    self.name,
                    self.tail(60)
                );
            }
            let last = match ready().await {
                Ok(()) => return,
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                panic!(
                    "kube: {step}: not ready within {START:?}; last answer: {}\n{}",
                    last.trim(),
                    self.tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("poll child")
    }

    /// The last `lines` lines of the process's output, framed.
    fn tail(&self, lines: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = log.lines().collect();
        let start = all.len().saturating_sub(lines);
        format!(
            "---- {} ({}), last {} lines ----\n{}\n---- end ----",
            self.name,
            self.log.display(),
            all.len() - start,
            all[start..].join("\n")
        )
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}
