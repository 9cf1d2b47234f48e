//! A `herd-proxy` process under test.
//!
//! [`Proxy::start`] takes the mesh YAML a test wants, with `$INBOUND`, `$OUTBOUND` and `$ADMIN`
//! where the proxy's own listeners go; the kit fills those in with fresh ports (and keeps them
//! for [`Proxy::reload`], so a reloaded file names the same listeners), writes the file into a
//! temporary directory, starts the binary with `--config FILE`, and returns once `GET /ready`
//! on the admin port answers 200. The process is killed when the handle drops; its stderr
//! (where the proxy logs) is kept in a file the test can read, and printed if the test panics.
//! Its stdout (where the access log goes) lands in that file too, and each line of it is also
//! kept on its own, for [`Proxy::stdout_lines`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{TIMEOUT, eventually, tcp};

/// A running `herd-proxy`.
pub struct Proxy {
    child: Child,
    pid: u32,
    dir: TempDir,
    config: PathBuf,
    stderr: PathBuf,
    stdout: Arc<Mutex<Vec<String>>>,
    listeners: Listeners,
    /// Where the test reaches the admin listener (`listeners.admin`, or a pod's address).
    admin_at: SocketAddr,
    exited: Option<ExitStatus>,
}

#[derive(Clone, Copy)]
struct Listeners {
    inbound: SocketAddr,
    outbound: SocketAddr,
    admin: SocketAddr,
}

impl Listeners {
    fn fill(&self, template: &str) -> String {
        crate::dedent(template)
            .replace("$INBOUND", &self.inbound.to_string())
            .replace("$OUTBOUND", &self.outbound.to_string())
            .replace("$ADMIN", &self.admin.to_string())
    }
}

impl Proxy {
    /// Starts a proxy from `yaml` (see the module doc for its placeholders) and waits until it
    /// is ready. `$ADMIN` is required: the kit needs the admin port to know the proxy is up.
    pub async fn start(yaml: &str) -> Proxy {
        Self::start_with_env(yaml, &[]).await
    }

    /// [`Proxy::start`] with extra environment variables (`HERD_LOG`, `HERD_LOG_FORMAT`).
    pub async fn start_with_env(yaml: &str, env: &[(&str, &str)]) -> Proxy {
        let mut proxy = Self::spawn(yaml, env);
        proxy.wait_ready().await;
        proxy
    }

    /// [`Proxy::start`] with the configuration in `HERD_PROXY_CONFIG_YAML` and no `--config`,
    /// as the injector runs it (the file is still written, for [`Proxy::config_path`]'s
    /// readers, but the proxy is not told of it).
    pub async fn start_from_environment(yaml: &str) -> Proxy {
        let mut proxy = Self::spawn_via(yaml, &[], Via::Environment);
        proxy.wait_ready().await;
        proxy
    }

    /// Starts a proxy that is not expected to be ready yet (it waits for a certificate or a
    /// control plane): returns once its admin port answers, whatever `/ready` says.
    pub async fn start_unready(yaml: &str) -> Proxy {
        Self::unready(Self::spawn(yaml, &[])).await
    }

    /// [`Proxy::start_unready`] with the configuration in `HERD_PROXY_CONFIG_YAML`.
    pub async fn start_unready_from_environment(yaml: &str) -> Proxy {
        Self::unready(Self::spawn_via(yaml, &[], Via::Environment)).await
    }

    async fn unready(proxy: Proxy) -> Proxy {
        let admin = proxy.admin();
        crate::eventually("the admin port to answer", TIMEOUT, || async {
            tcp::try_get(admin, "/ready").await.map(|_| ())
        })
        .await;
        proxy
    }

    /// Starts a proxy inside `pod`'s network namespace as `uid` (what `herd-proxy init` exempts
    /// from the redirects) and waits until it is ready. Its listeners are a pod's:
    /// `$INBOUND`, `$OUTBOUND` and `$ADMIN` are `[::]:4143`, `[::]:4140` and `[::]:4191` (every
    /// address, both families: the redirects' targets are the pod's address inbound and
    /// loopback outbound); the kit reaches the admin port at the pod's IPv4 address.
    pub async fn start_in(pod: &crate::netns::Pod, uid: u32, yaml: &str) -> Proxy {
        let any = |port: u16| SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
        let listeners = Listeners {
            inbound: any(4143),
            outbound: any(4140),
            admin: any(4191),
        };
        let admin_at = SocketAddr::from((pod.ip(), 4191));
        let command = pod.command_as(uid, binary());
        let mut proxy = Self::launch(yaml, &[], listeners, admin_at, command, Via::File);
        proxy.wait_ready().await;
        proxy
    }

    fn spawn(yaml: &str, env: &[(&str, &str)]) -> Proxy {
        Self::spawn_via(yaml, env, Via::File)
    }

    fn spawn_via(yaml: &str, env: &[(&str, &str)], via: Via) -> Proxy {
        let listeners = Listeners {
            inbound: crate::ports::addr(),
            outbound: crate::ports::addr(),
            admin: crate::ports::addr(),
        };
        Self::launch(
            yaml,
            env,
            listeners,
            listeners.admin,
            Command::new(binary()),
            via,
        )
    }

    /// Runs `command` (the binary, possibly in a namespace as another user) with the YAML's
    /// placeholders filled from `listeners`.
    fn launch(
        yaml: &str,
        env: &[(&str, &str)],
        listeners: Listeners,
        admin_at: SocketAddr,
        mut command: Command,
        via: Via,
    ) -> Proxy {
        use std::os::unix::fs::PermissionsExt;
        assert!(
            yaml.contains("$ADMIN"),
            "the proxy's YAML must put its admin listener on $ADMIN"
        );
        let dir = tempfile::Builder::new()
            .prefix("herd-proxy-")
            .tempdir()
            .expect("temp dir");
        // Readable by a proxy running as another user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod the proxy's directory");
        let config = dir.path().join("mesh.yaml");
        std::fs::write(&config, listeners.fill(yaml)).expect("write config");
        let stderr = dir.path().join("stderr.log");
        // Appending, so the stdout reader below can add its lines to the same file.
        let log = std::fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&stderr)
            .expect("create stderr log");
        let (stdout_pipe, stdout_writer) = std::io::pipe().expect("pipe for the proxy's stdout");
        match via {
            Via::File => {
                command.arg("--config").arg(&config);
            }
            Via::Environment => {
                command.env("HERD_PROXY_CONFIG_YAML", listeners.fill(yaml));
            }
        }
        command
            .env_remove("HERD_PROXY_CONFIG")
            .env(
                "HERD_LOG",
                std::env::var("HERD_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .env_remove("HERD_LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(stdout_writer)
            .stderr(log)
            .kill_on_drop(true);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", binary().display()));
        // The parent's copy of the pipe's write end goes with the command, so the reader sees
        // the end of stdout when the proxy exits.
        drop(command);
        let stdout = Arc::new(Mutex::new(Vec::new()));
        read_stdout(stdout_pipe, &stderr, stdout.clone());
        let pid = child.id().expect("child pid");
        Proxy {
            child,
            pid,
            dir,
            config,
            stderr,
            stdout,
            listeners,
            admin_at,
            exited: None,
        }
    }

    /// A proxy whose inbound listener forwards everything to `app`, with default settings.
    pub async fn inbound_to(app: SocketAddr) -> Proxy {
        Proxy::start(&format!(
            "
            proxy:
              inbound:
                listen: $INBOUND
                app: {app}
              admin:
                listen: $ADMIN
            "
        ))
        .await
    }

    async fn wait_ready(&mut self) {
        let admin = self.admin();
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll proxy") {
                panic!(
                    "herd-proxy exited with {status} before it was ready:\n{}",
                    self.stderr_text()
                );
            }
            if let Some(response) = tcp::try_get(admin, "/ready").await
                && response.status == 200
            {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "herd-proxy not ready after {TIMEOUT:?}:\n{}",
                self.stderr_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The inbound listener (`$INBOUND`).
    pub fn inbound(&self) -> SocketAddr {
        self.listeners.inbound
    }

    /// The outbound listener (`$OUTBOUND`).
    pub fn outbound(&self) -> SocketAddr {
        self.listeners.outbound
    }

    /// The admin listener (`$ADMIN`; in a pod, at the pod's address).
    pub fn admin(&self) -> SocketAddr {
        self.admin_at
    }

    /// `http://INBOUND{path}`.
    pub fn inbound_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.inbound())
    }

    /// `http://OUTBOUND{path}`.
    pub fn outbound_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.outbound())
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The config file the proxy watches.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// A directory for the test's own files, removed with the proxy.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `GET path` on the admin port.
    pub async fn admin_get(&self, path: &str) -> tcp::Response {
        tcp::get(self.admin(), path).await
    }

    /// The `version` `/config` reports.
    pub async fn version(&self) -> u64 {
        let config = self.admin_get("/config").await;
        assert_eq!(config.status, 200, "GET /config: {}", config.text());
        config.json()["version"]
            .as_u64()
            .expect("/config has a numeric version")
    }

    /// Replaces the config file atomically (write a sibling, rename it over the file, as
    /// editors and Kubernetes do) and waits until `/config` reports a newer version.
    pub async fn reload(&self, yaml: &str) {
        let before = self.version().await;
        self.write_config_atomically(yaml);
        self.wait_for_version(before + 1).await;
    }

    /// Renames a new file over the config file; does not wait.
    pub fn write_config_atomically(&self, yaml: &str) {
        let staged = self.dir.path().join(".mesh.yaml.new");
        std::fs::write(&staged, self.listeners.fill(yaml)).expect("write staged config");
        std::fs::rename(&staged, &self.config).expect("rename config into place");
    }

    /// Rewrites the config file in place (truncate and write the same inode); does not wait.
    pub fn write_config_in_place(&self, yaml: &str) {
        std::fs::write(&self.config, self.listeners.fill(yaml)).expect("rewrite config");
    }

    /// Updates the config the way the kubelet updates a ConfigMap volume; does not wait. The
    /// first call turns the file into the volume's layout: `mesh.yaml -> ..data/mesh.yaml`,
    /// `..data -> ..N`, the content in the directory `..N`. Each call writes the content into a
    /// fresh `..N`, points a new symlink `..data_tmp` at it, renames that over `..data` (the one
    /// atomic step) and removes the previous `..N`. After the first call nothing named
    /// `mesh.yaml` changes: only `..data` does.
    pub fn write_config_as_configmap(&self, yaml: &str) {
        use std::os::unix::fs::symlink;
        let dir = self.dir.path();
        let name = self.config.file_name().expect("config file name");
        let data = dir.join("..data");
        let previous = std::fs::read_link(&data).ok();
        let serial = (1..)
            .find(|n| !dir.join(format!("..{n}")).exists())
            .expect("a free ..N name");
        let fresh = format!("..{serial}");
        std::fs::create_dir(dir.join(&fresh)).expect("create the ConfigMap's data directory");
        std::fs::write(dir.join(&fresh).join(name), self.listeners.fill(yaml))
            .expect("write the ConfigMap's file");
        let staged = dir.join("..data_tmp");
        symlink(&fresh, &staged).expect("symlink ..data_tmp");
        std::fs::rename(&staged, &data).expect("rename ..data_tmp over ..data");
        if let Some(previous) = previous {
            std::fs::remove_dir_all(dir.join(previous)).expect("remove the previous ..N");
        }
        if !self.config.is_symlink() {
            let link = dir.join(".mesh.yaml.link");
            symlink(Path::new("..data").join(name), &link).expect("symlink the config file");
            std::fs::rename(&link, &self.config).expect("rename the symlink over the config");
        }
    }

    /// Waits until `/config` reports `version` or later.
    pub async fn wait_for_version(&self, version: u64) -> u64 {
        eventually(&format!("config version {version}"), TIMEOUT, || async {
            let now = self.version().await;
            (now >= version).then_some(now)
        })
        .await
    }

    /// Everything the proxy has written to stderr (and stdout) so far.
    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until stderr has a line containing `needle`, and returns that line.
    pub async fn wait_for_log(&self, needle: &str) -> String {
        eventually(&format!("a log line with {needle:?}"), TIMEOUT, || async {
            self.stderr_text()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_owned)
        })
        .await
    }

    /// Every complete line the proxy has written to stdout so far (without its newline), in
    /// order: the access log, when a listener has one.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Waits until the proxy has written at least `n` lines to stdout, and returns them all.
    pub async fn wait_for_stdout_lines(&self, n: usize) -> Vec<String> {
        eventually(
            &format!("{n} lines on the proxy's stdout"),
            TIMEOUT,
            || async {
                let lines = self.stdout_lines();
                (lines.len() >= n).then_some(lines)
            },
        )
        .await
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        signal(self.pid, "TERM");
    }

    /// Waits for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let status = crate::within("herd-proxy to exit", within, self.child.wait())
            .await
            .expect("wait for herd-proxy");
        self.exited = Some(status);
        status
    }

    /// The proxy's resident set size, from `/proc/PID/status`.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_of(self.pid)
    }

    /// Runs `work` while sampling [`Proxy::rss_bytes`] every 10 ms; returns its output and the
    /// highest RSS seen (the RSS before it started included).
    pub async fn peak_rss_while<T: Send + 'static>(
        &self,
        work: impl std::future::Future<Output = T> + Send + 'static,
    ) -> (T, u64) {
        let mut peak = self.rss_bytes().unwrap_or(0);
        let task = tokio::spawn(work);
        while !task.is_finished() {
            peak = peak.max(self.rss_bytes().unwrap_or(0));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak = peak.max(self.rss_bytes().unwrap_or(0));
        (task.await.expect("the sampled task panicked"), peak)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- herd-proxy stderr ----\n{}---- end ----",
                self.stderr_text()
            );
        }
        // kill_on_drop sends SIGKILL; tokio reaps the child.
    }
}

/// Reads the proxy's stdout on a thread of its own (so it keeps up whatever the test's runtime
/// is doing) until the proxy exits: each line goes into `lines` and is appended to the log file
/// at `log`, where [`Proxy::stderr_text`] shows it next to stderr.
fn read_stdout(pipe: std::io::PipeReader, log: &Path, lines: Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, Write};
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .expect("open stderr log for stdout");
    std::thread::Builder::new()
        .name("herd-proxy-stdout".to_owned())
        .spawn(move || {
            let mut reader = std::io::BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let _ = log.write_all(&line);
                // A last line without a newline (the proxy died mid-write) is not complete.
                if let Some(text) = line.strip_suffix(b"\n") {
                    let text = String::from_utf8_lossy(text).into_owned();
                    lines.lock().unwrap().push(text);
                }
            }
        })
        .expect("spawn the stdout reader");
}

/// The resident set size of process `pid`, from `/proc/PID/status`; `None` once it is gone.
pub fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Sends `SIGNAL` (a name such as `TERM`) to `pid`.
pub fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The `herd-proxy` binary: `$HERD_PROXY_BIN`, or the one cargo built next to this test.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HERD_PROXY_BIN") {
        return PathBuf::from(path);
    }
    bin("herd-proxy")
}

/// One of the workspace's binaries (`herd-proxy`, `herd-control`, `herdctl`), as cargo built it
/// next to this test.
pub fn bin(name: &str) -> PathBuf {
    let mut candidates = Vec::new();
    // Test executables live in TARGET/debug/deps; the binaries in TARGET/debug.
    if let Ok(exe) = std::env::current_exe()
        && let Some(profile_dir) = exe.parent().and_then(Path::parent)
    {
        candidates.push(profile_dir.join(name));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        candidates.push(PathBuf::from(target).join("debug").join(name));
    }
    candidates.push(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name),
    );
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "no {name} binary (looked at {candidates:?}); run `cargo build --workspace --bins` first"
        )
    })
}

/// How a proxy under test is given its configuration.
#[derive(Clone, Copy)]
enum Via {
    /// `--config FILE`.
    File,
    /// `HERD_PROXY_CONFIG_YAML`.
    Environment,
}

/// The outcome of running `herd-proxy` to completion (`--check`, bad flags).
pub struct Exit {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `herd-proxy ARGS` and waits (bounded) for it to exit.
pub async fn run(args: &[&str]) -> Exit {
    run_with_env(args, &[]).await
}

/// [`run`] with environment variables (`HERD_PROXY_CONFIG_YAML`); `HERD_PROXY_CONFIG` and
/// `HERD_PROXY_CONFIG_YAML` are unset unless given.
pub async fn run_with_env(args: &[&str], env: &[(&str, &str)]) -> Exit {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("HERD_PROXY_CONFIG")
        .env_remove("HERD_PROXY_CONFIG_YAML")
        .envs(env.iter().copied())
        .env("HERD_LOG", "info")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = crate::within("herd-proxy to exit", TIMEOUT, command.output())
        .await
        .expect("run herd-proxy");
    Exit {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
