//! The herd-control under test: started, killed with SIGKILL and started again on the same
//! ports, and read through its admin port (`/ready`, `/metrics`) and `/proc`.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::procfs::{self, Memory};

pub struct Server {
    binary: PathBuf,
    mesh: PathBuf,
    pub discovery: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
    child: Child,
    /// How many times it was started.
    pub starts: usize,
    /// CPU time of the processes killed before this one.
    spent: Duration,
}

impl Server {
    pub fn start(
        binary: &Path,
        mesh: &Path,
        discovery: SocketAddr,
        admin: SocketAddr,
        log: &Path,
    ) -> Result<Self> {
        let child = spawn(binary, mesh, discovery, admin, log)?;
        let server = Server {
            binary: binary.to_owned(),
            mesh: mesh.to_owned(),
            discovery,
            admin,
            log: log.to_owned(),
            child,
            starts: 1,
            spent: Duration::ZERO,
        };
        server.write_pid()?;
        Ok(server)
    }

    /// `herd-control.pid` beside its log, for `scripts/bench-control` to clean up after a run
    /// it had to cut short.
    fn write_pid(&self) -> Result<()> {
        let path = self.log.with_file_name("herd-control.pid");
        std::fs::write(&path, self.pid())
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// `kill -9`, and reaped.
    pub fn kill(&mut self) -> Result<()> {
        self.spent += self.cpu();
        self.child.kill().context("cannot kill herd-control")?;
        self.child.wait().context("cannot reap herd-control")?;
        Ok(())
    }

    /// Starts it again, same flags, same ports (its log is appended to).
    pub fn restart(&mut self) -> Result<()> {
        self.child = spawn(
            &self.binary,
            &self.mesh,
            self.discovery,
            self.admin,
            &self.log,
        )?;
        self.starts += 1;
        self.write_pid()
    }

    /// `Some` once it has exited on its own.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Fails with its exit status and the end of its log when it has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.exited() {
            bail!(
                "herd-control exited ({status}); the end of its log:\n{}",
                tail(&self.log, 20)
            );
        }
        Ok(())
    }

    pub fn cpu(&self) -> Duration {
        procfs::cpu(&self.pid()).unwrap_or_default()
    }

    /// CPU time of every process started so far.
    pub fn total_cpu(&self) -> Duration {
        self.spent + self.cpu()
    }

    pub fn memory(&self) -> Memory {
        procfs::memory(&self.pid()).unwrap_or_default()
    }

    /// Whether `/ready` answers 200.
    pub async fn ready(&self) -> bool {
        matches!(http_get(self.admin, "/ready").await, Ok((200, _)))
    }

    pub async fn metrics(&self) -> Result<Metrics> {
        let (status, body) = http_get(self.admin, "/metrics").await?;
        if status != 200 {
            bail!("/metrics answered {status}");
        }
        Ok(Metrics::parse(&body))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    binary: &Path,
    mesh: &Path,
    discovery: SocketAddr,
    admin: SocketAddr,
    log: &Path,
) -> Result<Child> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open {}", log.display()))?;
    Command::new(binary)
        .arg("--mesh")
        .arg(mesh)
        .arg("--discovery-listen")
        .arg(discovery.to_string())
        .arg("--admin-listen")
        .arg(admin.to_string())
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free port on loopback (bound and released; nothing else here takes ports meanwhile).
pub fn free_port() -> Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// One HTTP/1.1 GET; status and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no answer within 5 s")??;
    parse_response(&response)
}

fn parse_response(response: &str) -> Result<(u16, String)> {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of the response head")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, dechunk(head, body)))
}

/// The body, chunked transfer coding undone.
fn dechunk(head: &str, body: &str) -> String {
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return body.to_owned();
    }
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        out.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    out
}

/// The series of `/metrics` the fleet measurement reads.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    /// `herd_control_proxies`: open routing streams.
    pub proxies: f64,
    /// `herd_control_endpoint_watches`.
    pub watches: f64,
    /// `herd_control_updates_sent_total{kind="routing"}`.
    pub routing_sent: f64,
    /// `herd_control_updates_sent_total{kind="endpoints"}`.
    pub endpoints_sent: f64,
    /// `herd_control_verdicts_total{result="nack"}`, both kinds.
    pub nacks: f64,
    /// `herd_control_mesh_changes_total`.
    pub mesh_changes: f64,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut m = Metrics::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            match series {
                "herd_control_proxies" => m.proxies = value,
                "herd_control_endpoint_watches" => m.watches = value,
                "herd_control_updates_sent_total{kind=\"routing\"}" => m.routing_sent = value,
                "herd_control_updates_sent_total{kind=\"endpoints\"}" => m.endpoints_sent = value,
                "herd_control_mesh_changes_total" => m.mesh_changes = value,
                s if s.starts_with("herd_control_verdicts_total") && s.contains("nack") => {
                    m.nacks += value;
                }
                _ => {}
            }
        }
        m
    }
}

#[cfg(test)]
mod tests;
