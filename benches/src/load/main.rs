//! `herd-load`: the loopback load harness comparing herd-proxy with nginx and HAProxy as
//! reverse proxies in front of the same app (an nginx answering `200 ok` and a 64 KiB file).
//! `scripts/bench` installs the tools, builds this and herd-proxy, and runs it.
//!
//! Every measurement starts the proxy under test afresh (pinned to core 1), warms it up, runs a
//! load generator (pinned to core 0, like the app), reads the proxy tree's CPU time and peak RSS
//! from `/proc`, and stops it. Rounds interleave the targets; the report (medians across rounds,
//! with their spread) goes between marker lines in `benches/RESULTS.md`.

mod configs;
mod http;
mod procs;
mod report;
mod stats;
mod tools;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use serde::Serialize;

use crate::configs::HerdPorts;
use crate::procs::{Proc, cpu_ticks, memory_kib, run_tool};
use crate::report::Measurement;

/// The core the proxies under test get; everything else (the app, the load generators, this
/// harness) runs on `LOAD_CORE`.
const PROXY_CORE: &str = "1";
const LOAD_CORE: &str = "0";

/// Loopback load benchmark: herd-proxy vs nginx vs HAProxy (run it through `scripts/bench`).
#[derive(Parser, Debug)]
#[command(name = "herd-load")]
struct Args {
    /// Rounds; every round measures every scenario on every target, interleaved.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Length of one measurement (whole seconds: `10s`, `10`, `1m`).
    #[arg(long, default_value = "10s", value_parser = parse_secs)]
    duration: u64,
    /// Warm-up at the same load before each measurement.
    #[arg(long, default_value = "1s", value_parser = parse_secs_or_zero)]
    warmup: u64,
    /// Scenarios to run (comma-separated): latency, max-rps, 64k, h2, idle, two-hops.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "latency,max-rps,64k,h2,idle,two-hops"
    )]
    only: Vec<Scenario>,
    /// Targets (comma-separated): direct, herd, nginx, haproxy.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,herd,nginx,haproxy"
    )]
    targets: Vec<Target>,
    /// Markdown file whose `load-harness` marker section gets the results.
    #[arg(long, default_value = "benches/RESULTS.md")]
    out: PathBuf,
    /// Print the results without writing `--out`.
    #[arg(long)]
    no_write: bool,
    /// The herd-proxy binary.
    #[arg(
        long,
        env = "HERD_BENCH_HERD",
        default_value = "target/release/herd-proxy"
    )]
    herd: PathBuf,
    /// Request rate of the fixed-rate scenarios (latency, two-hops), requests per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Connections the idle scenario holds open.
    #[arg(long, default_value_t = 1000)]
    idle_conns: usize,
    /// Directory for the raw per-round JSON.
    #[arg(long, env = "HERD_BENCH_RAW_DIR", default_value = "target/bench-load")]
    raw_dir: PathBuf,
    /// Keep the temporary directory (configs, logs) even when every measurement was clean.
    #[arg(long)]
    keep_tmp: bool,
}

fn parse_secs(s: &str) -> Result<u64, String> {
    let secs = parse_secs_or_zero(s)?;
    if secs == 0 {
        return Err("must be at least 1s".into());
    }
    Ok(secs)
}

/// `10s`, `10`, `2m` -> seconds. Whole seconds only: wrk and h2load take nothing finer.
fn parse_secs_or_zero(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (n, unit) = if let Some(n) = s.strip_suffix('s') {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60)
    } else {
        (s, 1)
    };
    n.parse::<u64>()
        .map(|n| n * unit)
        .map_err(|_| format!("{s:?} is not a whole number of seconds (like 10s or 1m)"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Scenario {
    #[serde(rename = "latency")]
    Latency,
    #[serde(rename = "max-rps")]
    MaxRps,
    #[serde(rename = "64k")]
    Body64k,
    #[serde(rename = "h2")]
    H2,
    #[serde(rename = "idle")]
    Idle,
    #[serde(rename = "two-hops")]
    TwoHops,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Latency,
        Scenario::MaxRps,
        Scenario::Body64k,
        Scenario::H2,
        Scenario::Idle,
        Scenario::TwoHops,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Latency => "latency",
            Scenario::MaxRps => "max-rps",
            Scenario::Body64k => "64k",
            Scenario::H2 => "h2",
            Scenario::Idle => "idle",
            Scenario::TwoHops => "two-hops",
        }
    }

    /// One line on how the scenario loads the target, for the report.
    pub fn describe(self, idle_conns: usize) -> String {
        match self {
            Scenario::Latency => "HTTP/1.1 `GET /` (2-byte body) at a fixed rate, open loop, \
                latency-corrected: `oha -q RATE -c 32 --latency-correction`."
                .into(),
            Scenario::MaxRps => "HTTP/1.1 `GET /`, closed loop: `wrk -t1 -c64`.".into(),
            Scenario::Body64k => "HTTP/1.1 `GET /64k` (65,536-byte body), closed loop: \
                `wrk -t1 -c16`; MB/s = bytes read (headers included) ÷ duration, 10⁶ bytes."
                .into(),
            Scenario::H2 => "h2c (prior knowledge) `GET /`: `h2load -c 16 -m 10` against each \
                target's h2c port (herd: its inbound port, which detects HTTP/2); the proxies \
                speak HTTP/1.1 to the app."
                .into(),
            Scenario::Idle => format!(
                "{} HTTP/1.1 keep-alive connections, each after one `GET /`, held open for 1 s; \
                 RSS (`VmRSS` of the tree) before and with them. `direct` is skipped.",
                report::thousands(idle_conns as f64)
            ),
            Scenario::TwoHops => "client → proxy A → proxy B → app, both proxies on core 1, at \
                the latency scenario's fixed rate; herd: A's outbound listener (`Host: app.local`) \
                to B's inbound. CPU and peak RSS are both proxies' sums; `direct` is the client \
                straight to the app, measured again in this scenario."
                .into(),
        }
    }
}

impl FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| {
                format!("unknown scenario {s:?} (latency, max-rps, 64k, h2, idle, two-hops)")
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Direct,
    Herd,
    Nginx,
    Haproxy,
}

impl Target {
    pub const ALL: [Target; 4] = [Target::Direct, Target::Herd, Target::Nginx, Target::Haproxy];

    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Herd => "herd",
            Target::Nginx => "nginx",
            Target::Haproxy => "haproxy",
        }
    }
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Target::ALL
            .into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| format!("unknown target {s:?} (direct, herd, nginx, haproxy)"))
    }
}

/// The run's temporary directory, removed on drop unless asked to keep it.
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if procs::stopping() {
            // The signal thread removes it and exits.
        } else if self.keep {
            eprintln!("herd-load: kept {} (configs and logs)", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

struct Ctx {
    dir: PathBuf,
    herd: PathBuf,
    duration: u64,
    warmup: u64,
    rate: u32,
    idle_conns: usize,
    upstream_port: u16,
    upstream_h2_port: u16,
    ticks_per_second: u64,
    /// The last generated instance of each configuration file, for the report.
    configs: BTreeMap<String, String>,
}

impl Ctx {
    fn write_config(&mut self, file: &str, kind: &str, text: String) -> Result<PathBuf> {
        let path = self.dir.join(file);
        fs::write(&path, &text).with_context(|| format!("writing {}", path.display()))?;
        self.configs.insert(kind.to_string(), text);
        Ok(path)
    }

    fn mkdir(&self, name: &str) -> Result<()> {
        let path = self.dir.join(name);
        fs::create_dir_all(&path)?;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(())
    }
}

/// `taskset -c CORE program args...`
fn pinned(core: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("taskset");
    c.arg("-c").arg(core).arg(program);
    c
}

/// Waits until `GET /` with `Host: host` on `port` answers 200 (15 s at most).
fn wait_http(proc: &mut Proc, port: u16, host: &str, path: &str) -> Result<()> {
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

fn wait_tcp(proc: &mut Proc, port: u16) -> Result<()> {
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
struct Deployment {
    procs: Vec<Proc>,
    port: u16,
    h2_port: Option<u16>,
    host: &'static str,
    /// Logs to scan for warnings when the deployment stops (besides each process's own).
    logs: Vec<PathBuf>,
}

impl Deployment {
    fn roots(&self) -> Vec<i32> {
        self.procs.iter().map(Proc::pid).collect()
    }

    fn check_alive(&mut self) -> Result<()> {
        self.procs.iter_mut().try_for_each(Proc::check_alive)
    }

    /// Stops every process and returns the warnings they logged.
    fn stop(mut self) -> Vec<String> {
        let mut notes = Vec::new();
        let mut logs = std::mem::take(&mut self.logs);
        for mut p in self.procs.drain(..).rev() {
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
fn is_warning(line: &str) -> bool {
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

fn start_nginx(
    ctx: &mut Ctx,
    tag: &str,
    name: &str,
    port: u16,
    h2_port: Option<u16>,
    upstream: u16,
) -> Result<(Proc, PathBuf)> {
    let file = format!("{tag}-{name}");
    ctx.mkdir(&format!("{file}-tmp"))?;
    let text = configs::nginx_proxy(&ctx.dir, &file, port, h2_port, upstream);
    let conf = ctx.write_config(&format!("{file}.conf"), &format!("{name}.conf"), text)?;
    let mut cmd = pinned(PROXY_CORE, "nginx");
    cmd.arg("-c").arg(&conf);
    let mut p = Proc::spawn(name, cmd, ctx.dir.join(format!("{file}.log")))?;
    wait_http(&mut p, port, "x", "/")?;
    if let Some(h2) = h2_port {
        wait_tcp(&mut p, h2)?;
    }
    Ok((p, ctx.dir.join(format!("{file}.err"))))
}

fn start_haproxy(
    ctx: &mut Ctx,
    tag: &str,
    name: &str,
    port: u16,
    h2_port: Option<u16>,
    upstream: u16,
) -> Result<Proc> {
    let file = format!("{tag}-{name}");
    let text = configs::haproxy(&ctx.dir, &file, port, h2_port, upstream);
    let conf = ctx.write_config(&format!("{file}.cfg"), &format!("{name}.cfg"), text)?;
    let mut cmd = pinned(PROXY_CORE, "haproxy");
    cmd.arg("-db").arg("-f").arg(&conf);
    let mut p = Proc::spawn(name, cmd, ctx.dir.join(format!("{file}.log")))?;
    wait_http(&mut p, port, "x", "/")?;
    if let Some(h2) = h2_port {
        wait_tcp(&mut p, h2)?;
    }
    Ok(p)
}

fn start_herd(
    ctx: &mut Ctx,
    tag: &str,
    name: &str,
    app: u16,
    route_to: Option<u16>,
) -> Result<(Proc, HerdPorts)> {
    let ports = HerdPorts {
        inbound: http::free_port()?,
        outbound: http::free_port()?,
        admin: http::free_port()?,
    };
    let file = format!("{tag}-{name}");
    let text = configs::herd(name, ports, app, route_to);
    let conf = ctx.write_config(&format!("{file}.yaml"), &format!("{name}.yaml"), text)?;
    let mut cmd = pinned(PROXY_CORE, &ctx.herd);
    cmd.arg("--config").arg(&conf);
    let mut p = Proc::spawn(name, cmd, ctx.dir.join(format!("{file}.log")))?;
    wait_http(&mut p, ports.admin, "x", "/ready")?;
    Ok((p, ports))
}

/// Starts `target` (`hops` proxies in a row) in front of the upstream.
fn start(ctx: &mut Ctx, target: Target, tag: &str, hops: usize) -> Result<Deployment> {
    let up = ctx.upstream_port;
    let two = hops == 2;
    let mut d = Deployment {
        procs: Vec::new(),
        port: up,
        h2_port: Some(ctx.upstream_h2_port),
        host: "x",
        logs: Vec::new(),
    };
    match target {
        Target::Direct => {}
        Target::Nginx => {
            let mut next = up;
            if two {
                let port = http::free_port()?;
                let (b, err) = start_nginx(ctx, tag, "nginx-b", port, None, up)?;
                d.procs.push(b);
                d.logs.push(err);
                next = port;
            }
            let port = http::free_port()?;
            let h2 = if two { None } else { Some(http::free_port()?) };
            let name = if two { "nginx-a" } else { "nginx" };
            let (a, err) = start_nginx(ctx, tag, name, port, h2, next)?;
            d.procs.push(a);
            d.logs.push(err);
            d.port = port;
            d.h2_port = h2;
        }
        Target::Haproxy => {
            let mut next = up;
            if two {
                let port = http::free_port()?;
                d.procs
                    .push(start_haproxy(ctx, tag, "haproxy-b", port, None, up)?);
                next = port;
            }
            let port = http::free_port()?;
            let h2 = if two { None } else { Some(http::free_port()?) };
            let name = if two { "haproxy-a" } else { "haproxy" };
            d.procs.push(start_haproxy(ctx, tag, name, port, h2, next)?);
            d.port = port;
            d.h2_port = h2;
        }
        Target::Herd => {
            if two {
                let (b, b_ports) = start_herd(ctx, tag, "herd-b", up, None)?;
                d.procs.push(b);
                let (a, a_ports) = start_herd(ctx, tag, "herd-a", up, Some(b_ports.inbound))?;
                d.procs.push(a);
                d.port = a_ports.outbound;
                d.host = "app.local";
                d.h2_port = None;
            } else {
                let (p, ports) = start_herd(ctx, tag, "herd", up, None)?;
                d.procs.push(p);
                d.port = ports.inbound;
                d.h2_port = Some(ports.inbound);
            }
        }
    }
    // The whole path answers before any load.
    if let Some(last) = d.procs.last_mut() {
        wait_http(last, d.port, d.host, "/")?;
    }
    Ok(d)
}

fn tool_output(cmd: Command, tool: &str) -> Result<String> {
    let shown = format!("{cmd:?}");
    let out = run_tool(cmd)?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{tool} failed ({}): {shown}\n{}\n{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(stdout)
}

fn oha(ctx: &Ctx, port: u16, host: &str, secs: u64) -> Result<tools::Oha> {
    let mut cmd = pinned(LOAD_CORE, "oha");
    cmd.args([
        "-z",
        &format!("{secs}s"),
        "-q",
        &ctx.rate.to_string(),
        "-c",
        "32",
    ])
    .args([
        "--latency-correction",
        "--no-tui",
        "--output-format",
        "json",
    ])
    // Requests still in flight at the deadline are waited for, not counted as errors.
    .arg("-w");
    if host != "x" {
        cmd.arg("--host").arg(host);
    }
    cmd.arg(format!("http://127.0.0.1:{port}/"));
    let out = tool_output(cmd, "oha")?;
    tools::parse_oha(&out)
}

fn wrk(ctx: &Ctx, port: u16, path: &str, conns: u32, secs: u64) -> Result<tools::Wrk> {
    let script = ctx.dir.join("done.lua");
    let mut cmd = pinned(LOAD_CORE, "wrk");
    cmd.args(["-t1", &format!("-c{conns}"), &format!("-d{secs}s"), "-s"])
        .arg(&script)
        .arg(format!("http://127.0.0.1:{port}{path}"));
    tools::parse_wrk(&tool_output(cmd, "wrk")?)
}

fn h2load(port: u16, secs: u64) -> Result<tools::H2load> {
    let mut cmd = pinned(LOAD_CORE, "h2load");
    cmd.args(["-c", "16", "-m", "10", "-D", &secs.to_string()])
        .arg(format!("http://127.0.0.1:{port}/"));
    let out = tool_output(cmd, "h2load")?;
    let h = tools::parse_h2load(&out)?;
    if h.succeeded == 0 {
        bail!("h2load: no request succeeded:\n{}", out.trim());
    }
    Ok(h)
}

const MIB: f64 = 1024.0;

/// CPU µs per request from a clock-tick delta.
fn cpu_per_request(ctx: &Ctx, ticks: u64, requests: u64) -> f64 {
    ticks as f64 / ctx.ticks_per_second as f64 * 1e6 / requests.max(1) as f64
}

/// Runs one measurement; a failure becomes a problem on the measurement, not an abort.
fn measure(ctx: &mut Ctx, round: usize, scenario: Scenario, target: Target) -> Measurement {
    let mut m = Measurement {
        round,
        scenario,
        target,
        metrics: BTreeMap::new(),
        errors: 0,
        problems: Vec::new(),
        notes: Vec::new(),
    };
    let tag = format!("r{round}-{}-{}", scenario.name(), target.name());
    let hops = if scenario == Scenario::TwoHops { 2 } else { 1 };
    let result = start(ctx, target, &tag, hops).and_then(|mut d| {
        let r = run(ctx, scenario, &mut d, &mut m);
        // A proxy that died mid-run explains a failed load tool best: report both.
        let alive = d.check_alive();
        m.notes.extend(d.stop());
        match (r, alive) {
            (Err(e), Err(dead)) => Err(e.context(format!("{dead:#}"))),
            (r, alive) => r.and(alive),
        }
    });
    if let Err(e) = result {
        m.problems
            .push(format!("failed: {e:#}").replace('\n', " ⏎ "));
    }
    m
}

fn run(ctx: &Ctx, scenario: Scenario, d: &mut Deployment, m: &mut Measurement) -> Result<()> {
    let roots = d.roots();
    let proxied = !roots.is_empty();
    let record = |m: &mut Measurement, k: &str, v: f64| {
        m.metrics.insert(k.to_string(), v);
    };
    let finish = |m: &mut Measurement, ticks: u64, requests: u64| {
        if proxied {
            m.metrics.insert(
                "cpu_us_per_req".into(),
                cpu_per_request(ctx, ticks, requests),
            );
            m.metrics.insert(
                "peak_rss_mib".into(),
                memory_kib(&roots, "VmHWM") as f64 / MIB,
            );
        }
    };
    match scenario {
        Scenario::Latency | Scenario::TwoHops => {
            if ctx.warmup > 0 {
                oha(ctx, d.port, d.host, ctx.warmup)?;
            }
            let t0 = cpu_ticks(&roots);
            let o = oha(ctx, d.port, d.host, ctx.duration)?;
            let ticks = cpu_ticks(&roots).saturating_sub(t0);
            record(m, "p50_us", o.p50_us);
            record(m, "p99_us", o.p99_us);
            record(m, "p999_us", o.p999_us);
            record(m, "rps", o.rps);
            record(m, "requests", o.ok as f64);
            finish(m, ticks, o.ok);
            m.errors = o.non_200 + o.error_count();
            if m.errors > 0 {
                m.problems.push(format!(
                    "{} non-200 responses, {} failed requests {:?}",
                    o.non_200,
                    o.error_count(),
                    o.errors
                ));
            }
            if (o.size_per_request - 2.0).abs() > 0.01 {
                m.problems.push(format!(
                    "mean body {:.2} bytes, expected 2",
                    o.size_per_request
                ));
            }
            if o.rps < 0.95 * f64::from(ctx.rate) {
                m.problems.push(format!(
                    "achieved {:.0} rps of the {} requested",
                    o.rps, ctx.rate
                ));
            }
        }
        Scenario::MaxRps | Scenario::Body64k => {
            let (path, conns, body) = if scenario == Scenario::MaxRps {
                ("/", 64, 2)
            } else {
                ("/64k", 16, configs::BODY_64K as u64)
            };
            if ctx.warmup > 0 {
                wrk(ctx, d.port, path, conns, ctx.warmup)?;
            }
            let t0 = cpu_ticks(&roots);
            let w = wrk(ctx, d.port, path, conns, ctx.duration)?;
            let ticks = cpu_ticks(&roots).saturating_sub(t0);
            record(m, "rps", w.rps());
            record(m, "requests", w.requests as f64);
            record(m, "p50_us", w.p50_us);
            record(m, "p99_us", w.p99_us);
            if scenario == Scenario::Body64k {
                record(m, "mb_per_s", w.bytes as f64 / w.duration_s / 1e6);
            }
            finish(m, ticks, w.requests);
            m.errors = w.error_count();
            if m.errors > 0 {
                m.problems.push(format!(
                    "wrk errors: {} status>399, {} connect, {} read, {} write, {} timeout",
                    w.status, w.connect, w.read, w.write, w.timeout
                ));
            }
            let per = w.bytes as f64 / w.requests.max(1) as f64;
            // Headers add 100-300 bytes; responses cut off at the end add a little.
            if w.requests == 0 || per < body as f64 + 50.0 || per > body as f64 + 1024.0 {
                m.problems.push(format!(
                    "{per:.0} bytes per response for a {body}-byte body ({} requests)",
                    w.requests
                ));
            }
        }
        Scenario::H2 => {
            let port = d
                .h2_port
                .ok_or_else(|| anyhow!("no h2c port for this target"))?;
            if ctx.warmup > 0 {
                h2load(port, ctx.warmup)?;
            }
            let t0 = cpu_ticks(&roots);
            let h = h2load(port, ctx.duration)?;
            let ticks = cpu_ticks(&roots).saturating_sub(t0);
            record(m, "rps", h.rps);
            record(m, "requests", h.succeeded as f64);
            finish(m, ticks, h.succeeded);
            m.errors = h.error_count();
            if m.errors > 0 {
                m.problems.push(format!(
                    "h2load: {} failed, {} errored, {} timeout, {} non-2xx",
                    h.failed, h.errored, h.timeout, h.status_other
                ));
            }
            let per = h.data_bytes as f64 / h.succeeded as f64;
            if !(1.8..=2.2).contains(&per) {
                m.problems
                    .push(format!("{per:.2} body bytes per response, expected 2"));
            }
        }
        Scenario::Idle => idle(ctx, d, m)?,
    }
    Ok(())
}

fn idle(ctx: &Ctx, d: &Deployment, m: &mut Measurement) -> Result<()> {
    let roots = d.roots();
    thread::sleep(Duration::from_millis(300));
    let rss_start = memory_kib(&roots, "VmRSS") as f64;
    let mut conns = Vec::with_capacity(ctx.idle_conns);
    let (mut non_200, mut failed) = (0u64, 0u64);
    let mut first_error = None;
    for _ in 0..ctx.idle_conns {
        match http::get(d.port, d.host, "/", Duration::from_secs(5)) {
            Ok((stream, 200)) => conns.push(stream),
            Ok((_, status)) => {
                non_200 += 1;
                first_error.get_or_insert_with(|| format!("status {status}"));
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
        if failed > 50 {
            break;
        }
    }
    thread::sleep(Duration::from_secs(1));
    let rss = memory_kib(&roots, "VmRSS") as f64;
    let peak = memory_kib(&roots, "VmHWM") as f64;
    let closed = conns.iter().filter(|s| !http::still_open(s)).count();
    let open = conns.len();
    drop(conns);
    m.metrics.insert("rss_start_mib".into(), rss_start / MIB);
    m.metrics.insert("rss_mib".into(), rss / MIB);
    m.metrics.insert("peak_rss_mib".into(), peak / MIB);
    m.metrics.insert(
        "kib_per_conn".into(),
        (rss - rss_start) / open.max(1) as f64,
    );
    m.metrics.insert("conns".into(), open as f64);
    m.errors = non_200 + failed;
    if m.errors > 0 {
        m.problems.push(format!(
            "{non_200} non-200, {failed} failed of {} connections (first: {})",
            ctx.idle_conns,
            first_error.unwrap_or_default()
        ));
    }
    if closed > 0 {
        m.problems.push(format!(
            "the target closed {closed} of {open} idle connections within 1 s"
        ));
    }
    Ok(())
}

/// `program args` -> its first output line (stdout, else stderr), trimmed.
fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

fn tool_version(program: &str, args: &[&str]) -> Result<String> {
    let line = first_line(program, args)
        .filter(|l| !l.is_empty())
        .ok_or_else(|| anyhow!("`{program}` is missing (scripts/bench installs it)"))?;
    // `nginx version: nginx/1.22.1`, `wrk debian/4.1.0-3+b2 [epoll] Copyright ...`,
    // `HAProxy version 2.6.12-1+deb12u4 2026/10/17 - https://haproxy.org/`.
    let line = line.strip_prefix("nginx version: ").unwrap_or(&line);
    let line = line.split(" Copyright").next().unwrap_or(line);
    let line = line.split(" - http").next().unwrap_or(line);
    Ok(line.trim().to_string())
}

fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim())
        })
        .unwrap_or("unknown CPU")
        .to_string();
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = procs::parse_status_kib(&meminfo, "MemTotal").unwrap_or(0) as f64 / MIB / MIB;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Other work on the cores skews everything: say how busy the machine was going in.
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    format!(
        "`{model}`, {cores} cores, {mem_gib:.0} GiB, Linux {}; 1-minute load average {load} \
         when the run started (anything well above 0 means other work shared the cores)",
        kernel.trim()
    )
}

fn git_commit() -> String {
    let head = first_line("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_default();
    let dirty = Command::new("git")
        .args(["status", "--porcelain"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    format!("{head}{}", if dirty { "-dirty" } else { "" })
}

/// Pins this process (and so everything it starts, unless told otherwise) to the load core.
fn pin_self() -> Result<()> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let cores = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    if cores < 2 {
        bail!("needs at least 2 cores (proxies on core 1, load on core 0); this one has {cores}");
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET and sched_setaffinity only touch it.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc != 0 {
        bail!("sched_setaffinity: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = pin_self() {
        eprintln!("herd-load: {e:#}");
        return ExitCode::from(1);
    }
    procs::install_signal_handler();
    match main_inner(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            while procs::stopping() {
                thread::sleep(Duration::from_secs(1));
            }
            eprintln!("herd-load: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Ok(false) when some measurement had problems (the results are written all the same).
fn main_inner(args: Args) -> Result<bool> {
    let mut scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| args.only.contains(s))
        .collect();
    scenarios.dedup();
    let targets: Vec<Target> = Target::ALL
        .into_iter()
        .filter(|t| args.targets.contains(t))
        .collect();
    if scenarios.is_empty() || targets.is_empty() || args.rounds == 0 {
        bail!("nothing to run: --only, --targets and --rounds must not be empty");
    }

    // Tools and their versions (only the ones this run uses must exist).
    let uses = |s: Scenario| scenarios.contains(&s);
    let mut tools = vec![tool_version("nginx", &["-v"])?];
    if targets.contains(&Target::Haproxy) {
        tools.push(tool_version("haproxy", &["-v"])?);
    }
    if uses(Scenario::MaxRps) || uses(Scenario::Body64k) {
        tools.push(tool_version("wrk", &["-v"])?);
    }
    if uses(Scenario::H2) {
        tools.push(tool_version("h2load", &["--version"])?);
    }
    if uses(Scenario::Latency) || uses(Scenario::TwoHops) {
        tools.push(tool_version("oha", &["--version"])?);
    }
    let herd = fs::canonicalize(&args.herd)
        .with_context(|| format!("herd-proxy binary {}", args.herd.display()))?;
    if targets.contains(&Target::Herd) {
        tools.push(tool_version(
            herd.to_str().unwrap_or("herd-proxy"),
            &["--version"],
        )?);
    }
    tool_version("taskset", &["--version"])?;
    let tools: Vec<String> = tools.into_iter().map(|t| format!("`{t}`")).collect();

    let machine = machine();
    let stamp = first_line("date", &["-u", "+%Y%m%dT%H%M%SZ"]).unwrap_or_default();
    // The tree as the run starts: edits made while it runs do not describe what was measured.
    let commit = git_commit();
    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default();
    let command = std::env::var("HERD_BENCH_CMD").unwrap_or_else(|_| {
        std::env::args()
            .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
            .collect::<Vec<_>>()
            .join(" ")
    });

    let dir = std::env::temp_dir().join(format!("herd-load-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    // nginx's workers run as `nobody`: they read the 64 KiB file and their temp directories.
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))?;
    let mut tmp = TempDir {
        path: dir.clone(),
        keep: args.keep_tmp,
    };
    procs::set_temp_dir((!args.keep_tmp).then(|| dir.clone()));
    let mut ctx = Ctx {
        dir: dir.clone(),
        herd,
        duration: args.duration,
        warmup: args.warmup,
        rate: args.rate,
        idle_conns: args.idle_conns,
        upstream_port: http::free_port()?,
        upstream_h2_port: http::free_port()?,
        ticks_per_second: procs::clock_ticks_per_second(),
        configs: BTreeMap::new(),
    };
    ctx.mkdir("www")?;
    fs::write(dir.join("www/64k"), vec![b'x'; configs::BODY_64K])?;
    fs::write(dir.join("done.lua"), configs::WRK_SCRIPT)?;
    ctx.configs
        .insert("wrk done.lua".into(), configs::WRK_SCRIPT.into());
    ctx.mkdir("upstream-tmp")?;
    let text = configs::upstream_nginx(&dir, ctx.upstream_port, ctx.upstream_h2_port);
    let conf = ctx.write_config("upstream.conf", "upstream.conf", text)?;
    let mut cmd = pinned(LOAD_CORE, "nginx");
    cmd.arg("-c").arg(&conf);
    let mut upstream = Proc::spawn("upstream nginx", cmd, dir.join("upstream.log"))?;
    wait_http(&mut upstream, ctx.upstream_port, "x", "/")?;
    wait_tcp(&mut upstream, ctx.upstream_h2_port)?;
    let (_, status) = http::get(ctx.upstream_port, "x", "/64k", Duration::from_secs(5))?;
    if status != 200 {
        bail!("the upstream answers {status} to GET /64k");
    }

    let per_round: usize = scenarios
        .iter()
        .map(|&s| {
            targets
                .iter()
                .filter(|&&t| !(s == Scenario::Idle && t == Target::Direct))
                .count()
        })
        .sum();
    let estimate = args.rounds as u64 * per_round as u64 * (args.duration + args.warmup + 1);
    eprintln!(
        "herd-load: {} round(s) × {per_round} measurements, about {} min; temp dir {}",
        args.rounds,
        estimate.div_ceil(60),
        dir.display()
    );

    fs::create_dir_all(&args.raw_dir).ok();
    let raw_path = args.raw_dir.join(format!("raw-{stamp}.json"));
    let mut all: Vec<Measurement> = Vec::new();
    for round in 1..=args.rounds {
        for &scenario in &scenarios {
            for &target in &targets {
                if scenario == Scenario::Idle && target == Target::Direct {
                    continue;
                }
                upstream.check_alive()?;
                let m = measure(&mut ctx, round, scenario, target);
                while procs::stopping() {
                    // A signal killed the tools mid-measurement; the signal thread exits.
                    thread::sleep(Duration::from_secs(1));
                }
                let figures: Vec<String> = m
                    .metrics
                    .iter()
                    .map(|(k, v)| format!("{k}={}", report::sig(*v)))
                    .collect();
                eprintln!(
                    "[round {round}/{}] {:<8} {:<7} {}{}",
                    args.rounds,
                    scenario.name(),
                    target.name(),
                    figures.join(" "),
                    if m.problems.is_empty() {
                        String::new()
                    } else {
                        format!("\n    ⚠ {}", m.problems.join("\n    ⚠ "))
                    }
                );
                for note in &m.notes {
                    eprintln!("    note: {note}");
                }
                all.push(m);
                // Cheap, and survives an interrupted run.
                if let Ok(json) = serde_json::to_string_pretty(&all) {
                    let _ = fs::write(&raw_path, json);
                }
            }
        }
    }
    drop(upstream);

    let header = report::Header {
        date,
        commit,
        machine,
        tools,
        pinning: format!(
            "every proxy under test (both of two-hops too) `taskset -c {PROXY_CORE}`; the \
             upstream nginx, the load generators (oha, wrk, h2load) and the harness (the idle \
             scenario's client) `taskset -c {LOAD_CORE}`"
        ),
        rounds: args.rounds,
        duration: format!("{} s", args.duration),
        warmup: format!("{} s", args.warmup),
        command,
        targets: targets.clone(),
        configs: std::mem::take(&mut ctx.configs),
    };
    let tables = report::tables(&all, &targets, args.idle_conns);
    println!("{tables}");
    let clean = all.iter().all(|m| m.problems.is_empty());
    if !args.no_write {
        let section = report::section(&header, &all, args.idle_conns);
        let old = fs::read_to_string(&args.out).unwrap_or_default();
        let mut f = fs::File::create(&args.out)
            .with_context(|| format!("writing {}", args.out.display()))?;
        f.write_all(report::splice(&old, &section).as_bytes())?;
        eprintln!("herd-load: results written to {}", args.out.display());
    }
    eprintln!("herd-load: raw measurements in {}", raw_path.display());
    if !clean {
        let n = all.iter().filter(|m| !m.problems.is_empty()).count();
        eprintln!("herd-load: {n} measurement(s) had problems (marked ⚠ in the tables)");
        tmp.keep = true;
        procs::set_temp_dir(None);
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_secs("10s"), Ok(10));
        assert_eq!(parse_secs("2"), Ok(2));
        assert_eq!(parse_secs("1m"), Ok(60));
        assert!(parse_secs("0s").is_err());
        assert!(parse_secs("500ms").is_err());
        assert_eq!(parse_secs_or_zero("0"), Ok(0));
    }

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(s.name().parse::<Scenario>(), Ok(s));
        }
        for t in Target::ALL {
            assert_eq!(t.name().parse::<Target>(), Ok(t));
        }
        assert!("max_rps".parse::<Scenario>().is_err());
    }

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
