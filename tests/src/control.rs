//! A `herd-control` process under test, and `herdctl` against it.
//!
//! [`Control::start`] writes the mesh files a test gives into a temporary directory, starts the
//! binary on fresh loopback ports (`--discovery-listen`, `--admin-listen`) and returns once its
//! `/ready` answers 200. [`Control::kill`] is a `kill -9`; [`Control::restart`] starts it again
//! on the same ports and directory, as a replica coming back would. The process is killed when
//! the handle drops; its stderr is kept in a file and printed if the test panics.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{TIMEOUT, tcp};

/// A running `herd-control`.
pub struct Control {
    child: Option<Child>,
    dir: TempDir,
    discovery: SocketAddr,
    admin: SocketAddr,
    /// `--webhook-listen`, unless the test's flags give one.
    webhook: SocketAddr,
    starts: usize,
    /// Flags beyond the kit's own (`--kubeconfig FILE`, ...).
    args: Vec<String>,
}

impl Control {
    /// Starts herd-control on a mesh directory holding `files` (name, YAML) and waits until it
    /// is ready.
    pub async fn start(files: &[(&str, &str)]) -> Control {
        Control::start_with_args(files, &[]).await
    }

    /// [`Control::start`] with more flags (`--kubeconfig FILE`, `--namespaces NS`).
    pub async fn start_with_args(files: &[(&str, &str)], args: &[&str]) -> Control {
        let mut control = Control::stopped(files);
        control.args = args.iter().map(|a| (*a).to_owned()).collect();
        control.restart().await;
        control
    }

    /// Ports and mesh directory ready, process not started: [`Control::restart`] starts it.
    pub fn stopped(files: &[(&str, &str)]) -> Control {
        let dir = tempfile::Builder::new()
            .prefix("herd-control-")
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir(dir.path().join("mesh")).expect("mesh dir");
        let control = Control {
            child: None,
            dir,
            discovery: crate::ports::addr(),
            admin: crate::ports::addr(),
            webhook: crate::ports::addr(),
            starts: 0,
            args: Vec::new(),
        };
        for (name, yaml) in files {
            control.write(name, yaml);
        }
        control
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// The process's resident set size, from `/proc/PID/status`.
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// Another replica reading the same mesh directory: its own ports and process.
    pub async fn replica(&self) -> Control {
        let files: Vec<(String, String)> = std::fs::read_dir(self.mesh_dir())
            .expect("read mesh dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "yaml"))
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                (
                    name,
                    std::fs::read_to_string(e.path()).expect("read mesh file"),
                )
            })
            .collect();
        let files: Vec<(&str, &str)> = files
            .iter()
            .map(|(n, y)| (n.as_str(), y.as_str()))
            .collect();
        Control::start(&files).await
    }

    /// (Re)starts the process on the same ports and directory and waits until it is ready.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).expect("create stderr log");
        let mut command = Command::new(crate::proxy::bin("herd-control"));
        command
            .arg("--mesh")
            .arg(self.mesh_dir())
            .arg("--discovery-listen")
            .arg(self.discovery.to_string())
            .arg("--admin-listen")
            .arg(self.admin.to_string())
            .args(&self.args);
        // With a CA, herd-control serves its injector webhook too: on a port of its own unless
        // the test chose one, never the default 8443 that every parallel test would share.
        if !self.args.iter().any(|a| a.starts_with("--webhook-listen")) {
            command
                .arg("--webhook-listen")
                .arg(self.webhook.to_string());
        }
        command
            .env("HERD_LOG", "info,herd_control=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        let child = command.spawn().expect("spawn herd-control");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("herd-control exited with {status}:\n{}", self.log());
            }
            if let Some(response) = tcp::try_get(self.admin, "/ready").await
                && response.status == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "herd-control not ready after {TIMEOUT:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`: the replica dies without a goodbye.
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Writes a mesh file the way an editor or a ConfigMap update does: a sibling renamed over
    /// it.
    pub fn write(&self, name: &str, yaml: &str) {
        let staged = self.mesh_dir().join(format!(".{name}.new"));
        std::fs::write(&staged, crate::dedent(yaml)).expect("write mesh file");
        std::fs::rename(&staged, self.mesh_dir().join(name)).expect("rename mesh file");
    }

    pub fn mesh_dir(&self) -> PathBuf {
        self.dir.path().join("mesh")
    }

    /// Where proxies connect.
    pub fn discovery(&self) -> SocketAddr {
        self.discovery
    }

    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("stderr-{}.log", self.starts))
    }

    /// Everything every start of the process wrote to stderr.
    pub fn log(&self) -> String {
        (1..=self.starts)
            .map(|i| {
                std::fs::read_to_string(self.dir.path().join(format!("stderr-{i}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("---- restart ----\n")
    }

    /// `GET /metrics` on the admin port.
    pub async fn metrics(&self) -> String {
        tcp::get(self.admin, "/metrics").await.text()
    }

    /// Runs `herdctl ARGS --control DISCOVERY` (the flag is added for stat, config, check and
    /// identity).
    pub async fn herdctl(&self, args: &[&str]) -> Exit {
        let mut all: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        if matches!(
            args.first(),
            Some(&("stat" | "config" | "check" | "identity"))
        ) {
            all.push("--control".into());
            all.push(self.discovery.to_string());
        }
        herdctl(&all).await
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- herd-control stderr ----\n{}---- end ----", self.log());
        }
    }
}

/// The outcome of a CLI run.
#[derive(Debug)]
pub struct Exit {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `herdctl ARGS` and waits (bounded) for it to exit.
pub async fn herdctl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Exit {
    let mut command = Command::new(crate::proxy::bin("herdctl"));
    command.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let output = crate::within("herdctl to exit", TIMEOUT, command.output())
        .await
        .expect("run herdctl");
    Exit {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The YAML a proxy needs to take its services from `controls`, with the kit's placeholders for
/// its own listeners.
pub fn proxy_yaml(id: &str, controls: &[&Control], extra: &str) -> String {
    let addrs: Vec<String> = controls.iter().map(|c| c.discovery().to_string()).collect();
    format!(
        "proxy:\n  outbound: {{ listen: $OUTBOUND }}\n  admin: {{ listen: $ADMIN }}\n  control: {{ addresses: [{}], id: {id}, namespace: mastodon{extra} }}\n",
        addrs.join(", ")
    )
}

/// The path of a file in `dir`, for tests that write their own.
pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}
