//! Starting each target the harness measures: the app (nginx), herd-proxy, nginx and HAProxy as
//! reverse proxies (one or two hops), each pinned to its core, and waiting until it answers.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

use crate::configs::{self, HerdMesh, HerdPorts, Tls};
use crate::handshakes::Counter;
use crate::procs::{self, Proc};
use crate::{Ctx, LOAD_CORE, PROXY_CORE, Target, http};

/// `taskset -c CORE program args...`
pub(crate) fn pinned(core: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(core).arg(program);
    c
}

/// Waits until `GET /` with `Host: host` on `port` answers 200 (15 s at most).
pub(crate) fn wait_http(proc: &mut Proc, port: u16, host: &str, path: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = anyhow!("not tried");
    while Instant::now() < deadline {
        proc.check_alive()?;
        match http::get(port, host, path, Duration::from_secs(2)) {
            Ok((_, 200)) => return Ok(()),
            Ok((_, status)) => last = anyhow!("status {status}"),
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(25));
    }
    bail!(
        "{} not ready on 127.0.0.1:{port}{path} after 15 s ({last:#}); its log ends:\n{}",
        proc.name,
        procs::log_tail(&proc.log)
    )
}

pub(crate) fn wait_tcp(proc: &mut Proc, port: u16) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        proc.check_alive()?;
        if std::net::TcpStream::connect(http::addr(port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(25));
    }
    bail!("{} not accepting on 127.0.0.1:{port} after 15 s", proc.name)
}

/// A target ready to take load: the processes under test (empty for `direct`) and where to send
/// requests.
pub(crate) struct Deployment {
    pub(crate) procs: Vec<Proc>,
    pub(crate) port: u16,
    pub(crate) h2_port: Option<u16>,
    pub(crate) host: &'static str,
    /// Logs to scan for warnings when the deployment stops (besides each process's own).
    pub(crate) logs: Vec<PathBuf>,
    /// Processes the path needs that are not under test (two-hops-mtls' herd-control): not in
    /// `roots`, stopped last.
    pub(crate) support: Vec<Proc>,
    /// two-hops-mtls: proxy B's handshake counter and its value when the path first answered.
    pub(crate) handshakes: Option<(Counter, u64)>,
}

impl Deployment {
    pub(crate) fn roots(&self) -> Vec<i32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    pub(crate) fn check_alive(&mut self) -> Result<()> {
        self.procs
            .iter_mut()
            .chain(self.support.iter_mut())
            .try_for_each(Proc::check_alive)
    }

    /// Stops every process and returns the warnings they logged.
    pub(crate) fn stop(mut self) -> Vec<String> {
        let mut notes = Vec::new();
        let mut logs = std::mem::take(&mut self.logs);
        let support = std::mem::take(&mut self.support);
        for mut p in self.procs.drain(..).rev().chain(support) {
            if let Some(status) = p.stop() {
                use std::os::unix::process::ExitStatusExt;
                // Stopped by our SIGTERM: either it exits cleanly or dies of it.
                if !status.success() && status.signal() != Some(libc::SIGTERM) {
                    notes.push(format!("{} exited with {status} when stopped", p.name));
                }
            }
            logs.push(p.log.clone());
        }
        for log in logs {
            let text = fs::read_to_string(&log).unwrap_or_default();
            let warnings: Vec<&str> = text.lines().filter(|l| is_warning(l)).collect();
            if let Some(first) = warnings.first() {
                notes.push(format!(
                    "{}: {} warning/error line(s), first: {}",
                    log.file_name().unwrap_or_default().to_string_lossy(),
                    warnings.len(),
                    first.trim()
                ));
            }
        }
        notes
    }
}

/// A line nginx, HAProxy or herd-proxy logs at warning level or above.
pub(crate) fn is_warning(line: &str) -> bool {
    // Drop ANSI colour sequences (`ESC[...m`) around herd's level names.
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            plain.push(c);
        }
    }
    let l = plain.to_ascii_lowercase();
    [
        "[warn]",
        "[error]",
        "[crit]",
        "[alert]",
        "[emerg]",
        "[warning]",
        " warn ",
        " error ",
    ]
    .iter()
    .any(|w| l.contains(w))
}

pub(crate) fn start_nginx(
    ctx: &mut Ctx,
    tag: &str,
    name: &str,
    port: u16,
    h2_port: Option<u16>,
    upstream: u16,
    tls: Option<&Tls>,
) -> Result<(Proc, PathBuf)> {
    let file = format!("{tag}-{name}");
    ctx.mkdir(&format!("{file}-tmp"))?;
    let text = configs::nginx_proxy(&ctx.dir, &file, port, h2_port, upstream, tls);
    let conf = ctx.write_config(&format!("{file}.conf"), &format!("{name}.conf"), text)?;
    let mut cmd = pinned(PROXY_CORE, "nginx");
    cmd.arg("-c").arg(&conf);
    let mut p = Proc::spawn(name, cmd, ctx.dir.join(format!("{file}.log")))?;
    match tls {
        // Its TLS port answers no plaintext probe; the status port opens with it.
        Some(Tls::Server { status_port, .. }) => wait_http(&mut p, *status_port, "x", "/")?,
        _ => wait_http(&mut p, port, "x", "/")?,
    }
    if let Some(h2) = h2_port {
        wait_tcp(&mut p, h2)?;
    }
    Ok((p, ctx.dir.join(format!("{file}.err"))))
}

pub(crate) fn start_haproxy(
    ctx: &mut Ctx,
    tag: &str,
    name: &str,
    port: u16,
    h2_port: Option<u16>,
    upstream: u16,
    tls: Option<&Tls>,
) -> Result<(Proc, PathBuf)> {
    let file = format!("{tag}-{name}");
    let text = configs::haproxy(&ctx.dir, &file, port, h2_port, upstream, tls);
    let conf = ctx.write_config(&format!("{file}.cfg"), &format!("{name}.cfg"), text)?;
    let mut cmd = pinned(PROXY_CORE, "haproxy");
    cmd.arg("-db").arg("-f").arg(&conf);
    let mut p = Proc::spawn(name, cmd, ctx.dir.join(format!("{file}.log")))?;
    let socket = configs::haproxy_stats_socket(&ctx.dir, &file);
    match tls {
        // Its TLS port answers no plaintext probe; the stats socket opens with it.
        Some(Tls::Server { .. }) => wait_unix(&mut p, &socket)?,
        _ => wait_http(&mut p, port, "x", "/")?,
    }
    if let Some(h2) = h2_port {
        wait_tcp(&mut p, h2)?;
    }
    Ok((p, socket))
}

/// Waits until a Unix socket accepts connections (15 s at most).
fn wait_unix(proc: &mut Proc, path: &std::path::Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        proc.check_alive()?;
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(25));
    }
    bail!(
        "{} not accepting on {} after 15 s",
        proc.name,
        path.display()
    )
}

pub(crate) fn start_herd(
    ctx: &mut Ctx,
    tag: &str,
    name: &str,
    app: u16,
    route_to: Option<u16>,
    mesh: Option<&HerdMesh>,
) -> Result<(Proc, HerdPorts)> {
    let ports = HerdPorts {
        inbound: http::free_port()?,
        outbound: http::free_port()?,
        admin: http::free_port()?,
    };
    let file = format!("{tag}-{name}");
    let text = configs::herd(name, ports, app, route_to, mesh);
    let conf = ctx.write_config(&format!("{file}.yaml"), &format!("{name}.yaml"), text)?;
    let mut cmd = pinned(PROXY_CORE, &ctx.herd);
    cmd.arg("--config").arg(&conf);
    let mut p = Proc::spawn(name, cmd, ctx.dir.join(format!("{file}.log")))?;
    // With an identity, /ready also waits for the certificate.
    wait_http(&mut p, ports.admin, "x", "/ready")?;
    Ok((p, ports))
}

/// herd-control with an identity service for two-hops-mtls (on the load core: it certifies the
/// proxies as they start and is idle while they are measured); returns it with its identity port.
fn start_herd_control(ctx: &mut Ctx, tag: &str) -> Result<(Proc, u16)> {
    let files = ctx
        .mtls
        .as_ref()
        .ok_or_else(|| anyhow!("no certificates made for two-hops-mtls"))?;
    let (identity, discovery, admin) = (http::free_port()?, http::free_port()?, http::free_port()?);
    // With a CA herd-control also serves its injector webhook: on a free port, not 8443.
    let webhook = http::free_port()?;
    let addr = |port: u16| http::addr(port).to_string();
    let mut cmd = pinned(LOAD_CORE, &files.herd_control);
    cmd.arg("--mesh")
        .arg(&files.mesh_dir)
        .args(["--discovery-listen", &addr(discovery)])
        .args(["--admin-listen", &addr(admin)])
        .args(["--identity-listen", &addr(identity)])
        .args(["--webhook-listen", &addr(webhook)])
        .arg("--ca-cert")
        .arg(&files.pki.ca_cert)
        .arg("--ca-key")
        .arg(&files.pki.ca_key)
        .arg("--bootstrap-tokens")
        .arg(&files.tokens);
    let shown = format!("{cmd:?}").replace(&format!("{}/", ctx.dir.display()), "");
    ctx.configs
        .insert("herd-control (command line)".into(), shown);
    let log = ctx.dir.join(format!("{tag}-herd-control.log"));
    let mut p = Proc::spawn("herd-control", cmd, log)?;
    wait_http(&mut p, admin, "x", "/ready")?;
    wait_tcp(&mut p, identity)?;
    Ok((p, identity))
}

/// Starts `target` (`hops` proxies in a row, with mutual TLS between them when `mtls`) in front
/// of the upstream.
pub(crate) fn start(
    ctx: &mut Ctx,
    target: Target,
    tag: &str,
    hops: usize,
    mtls: bool,
) -> Result<Deployment> {
    let up = ctx.upstream_port;
    let two = hops == 2;
    let mut d = Deployment {
        procs: Vec::new(),
        port: up,
        h2_port: Some(ctx.upstream_h2_port),
        host: "x",
        logs: Vec::new(),
        support: Vec::new(),
        handshakes: None,
    };
    let pki = match (&ctx.mtls, mtls) {
        (Some(files), true) => Some(files.pki.clone()),
        (None, true) => bail!("no certificates made for two-hops-mtls"),
        (_, false) => None,
    };
    let mut counter = None;
    match target {
        Target::Direct => {}
        Target::Nginx => {
            let mut next = up;
            let mut client = None;
            if two {
                let port = http::free_port()?;
                let server = match &pki {
                    Some(pki) => {
                        let status_port = http::free_port()?;
                        counter = Some(Counter::Nginx {
                            status: status_port,
                        });
                        client = Some(Tls::Client { pki });
                        Some(Tls::Server { pki, status_port })
                    }
                    None => None,
                };
                let name = if mtls { "nginx-b-mtls" } else { "nginx-b" };
                let (b, err) = start_nginx(ctx, tag, name, port, None, up, server.as_ref())?;
                d.procs.push(b);
                d.logs.push(err);
                next = port;
            }
            let port = http::free_port()?;
            let h2 = if two { None } else { Some(http::free_port()?) };
            let name = match (two, mtls) {
                (false, _) => "nginx",
                (true, false) => "nginx-a",
                (true, true) => "nginx-a-mtls",
            };
            let (a, err) = start_nginx(ctx, tag, name, port, h2, next, client.as_ref())?;
            d.procs.push(a);
            d.logs.push(err);
            d.port = port;
            d.h2_port = h2;
        }
        Target::Haproxy => {
            let mut next = up;
            let mut client = None;
            if two {
                let port = http::free_port()?;
                let server = pki.as_ref().map(|pki| {
                    client = Some(Tls::Client { pki });
                    Tls::Server {
                        pki,
                        status_port: 0,
                    }
                });
                let name = if mtls { "haproxy-b-mtls" } else { "haproxy-b" };
                let (b, socket) = start_haproxy(ctx, tag, name, port, None, up, server.as_ref())?;
                if mtls {
                    counter = Some(Counter::Haproxy { socket });
                }
                d.procs.push(b);
                next = port;
            }
            let port = http::free_port()?;
            let h2 = if two { None } else { Some(http::free_port()?) };
            let name = match (two, mtls) {
                (false, _) => "haproxy",
                (true, false) => "haproxy-a",
                (true, true) => "haproxy-a-mtls",
            };
            let (a, _) = start_haproxy(ctx, tag, name, port, h2, next, client.as_ref())?;
            d.procs.push(a);
            d.port = port;
            d.h2_port = h2;
        }
        Target::Herd => {
            if two {
                let (mesh_a, mesh_b) = if mtls {
                    let (control, identity_port) = start_herd_control(ctx, tag)?;
                    d.support.push(control);
                    let files = ctx.mtls.as_ref().expect("checked above");
                    let mesh = |account: &str, token: &PathBuf, peer: Option<&str>| HerdMesh {
                        identity_port,
                        id: configs::spiffe_id(account),
                        token_file: token.clone(),
                        peer: peer.map(configs::spiffe_id),
                    };
                    (
                        Some(mesh("a", &files.token_a, Some("b"))),
                        Some(mesh("b", &files.token_b, None)),
                    )
                } else {
                    (None, None)
                };
                let (name_a, name_b) = if mtls {
                    ("herd-a-mtls", "herd-b-mtls")
                } else {
                    ("herd-a", "herd-b")
                };
                let (b, b_ports) = start_herd(ctx, tag, name_b, up, None, mesh_b.as_ref())?;
                d.procs.push(b);
                if mtls {
                    counter = Some(Counter::Herd {
                        admin: b_ports.admin,
                    });
                }
                let next = Some(b_ports.inbound);
                let (a, a_ports) = start_herd(ctx, tag, name_a, up, next, mesh_a.as_ref())?;
                d.procs.push(a);
                d.port = a_ports.outbound;
                d.host = "app.local";
                d.h2_port = None;
            } else {
                let (p, ports) = start_herd(ctx, tag, "herd", up, None, None)?;
                d.procs.push(p);
                d.port = ports.inbound;
                d.h2_port = Some(ports.inbound);
            }
        }
    }
    if let Some(counter) = counter {
        let before = counter.read()?;
        d.handshakes = Some((counter, before));
    }
    // The whole path answers before any load.
    if let Some(last) = d.procs.last_mut() {
        wait_http(last, d.port, d.host, "/")?;
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_lines() {
        assert!(is_warning(
            "2026/11/22 01:29:08 [error] 9180#9180: upstream prematurely closed"
        ));
        assert!(is_warning(
            "2026-11-22T01:29:08Z  WARN herd_proxy::inbound: app refused"
        ));
        assert!(!is_warning(
            "2026-11-22T01:29:08Z  INFO herd_proxy: listening"
        ));
        assert!(is_warning(
            "\u{1b}[2m2026-11-22T01:29:08Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m x"
        ));
        assert!(is_warning("[WARNING]  (6889) : config : missing timeouts"));
    }
}
