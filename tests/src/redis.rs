//! redis-server and redis-cli: the opaque, long-lived, client-speaks-first protocol of a
//! Mastodon pod.
//!
//! The server runs without persistence (`--save '' --appendonly no`) in a temporary directory
//! on a free loopback port; [`cli`] runs one `redis-cli` command against any address (the
//! server itself, or a proxy listener in front of it).

use std::net::SocketAddr;
use std::process::Stdio;

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{TIMEOUT, eventually};

/// A running redis-server.
pub struct Redis {
    _child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Redis {
    /// Starts redis-server and waits until it answers `PING`.
    pub async fn start() -> Redis {
        Redis::start_on(crate::ports::addr()).await
    }

    /// [`Redis::start`] on `addr` (an address of the host's, e.g. on a pod's link).
    pub async fn start_on(addr: SocketAddr) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("herd-redis-")
            .tempdir()
            .expect("temp dir");
        let child = Command::new("redis-server")
            .arg("--bind")
            .arg(addr.ip().to_string())
            .arg("--port")
            .arg(addr.port().to_string())
            .args([
                // Bound to the address given, reachable from pods on their link.
                "--protected-mode",
                "no",
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--dir",
            ])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server (is Debian's redis-server installed?)");
        eventually("redis-server to answer PING", TIMEOUT, || async {
            (try_cli(addr, &["PING"]).await.as_deref() == Some("PONG")).then_some(())
        })
        .await;
        Redis {
            _child: child,
            addr,
            _dir: dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// `redis-cli -h HOST -p PORT ARGS...`, its trimmed stdout; panics if it fails.
pub async fn cli(addr: SocketAddr, args: &[&str]) -> String {
    try_cli(addr, args)
        .await
        .unwrap_or_else(|| panic!("redis-cli {args:?} against {addr} failed"))
}

/// [`cli`] run inside `pod` as `uid`: an app of the pod calling `addr`.
pub async fn cli_in(pod: &crate::netns::Pod, uid: u32, addr: SocketAddr, args: &[&str]) -> String {
    try_cli_with(pod.command_as(uid, "redis-cli"), addr, args)
        .await
        .unwrap_or_else(|| {
            panic!(
                "redis-cli {args:?} against {addr} in pod {} failed",
                pod.netns()
            )
        })
}

async fn try_cli(addr: SocketAddr, args: &[&str]) -> Option<String> {
    try_cli_with(Command::new("redis-cli"), addr, args).await
}

async fn try_cli_with(mut command: Command, addr: SocketAddr, args: &[&str]) -> Option<String> {
    let output = command
        .arg("-h")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(TIMEOUT, output).await.ok()?.ok()?;
    // redis-cli exits 0 even when it cannot connect, but then prints nothing on stdout.
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    (output.status.success() && !stdout.is_empty()).then_some(stdout)
}
