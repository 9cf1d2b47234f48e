//! `herd-load`: the loopback load harness comparing herd-proxy with nginx and HAProxy as
//! reverse proxies in front of the same app (an nginx answering `200 ok` and a 64 KiB file).
//! `scripts/bench` installs the tools, builds this and herd-proxy, and runs it.
//!
//! Every measurement starts the proxy under test afresh (pinned to core 1), warms it up, runs a
//! load generator (pinned to core 0, like the app), reads the proxy tree's CPU time and peak RSS
//! from `/proc`, and stops it. Rounds interleave the targets; the report (medians across rounds,
//! with their spread) goes between marker lines in `benches/RESULTS.md`.

mod configs;
mod handshakes;
mod http;
mod pki;
mod procs;
mod report;
mod scenarios;
mod stats;
mod targets;
mod tools;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::str::FromStr;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use serde::Serialize;

use crate::procs::Proc;
use crate::report::Measurement;
use crate::scenarios::{MIB, measure};
use crate::targets::{pinned, wait_http, wait_tcp};

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
    /// Scenarios to run (comma-separated): latency, max-rps, 64k, h2, idle, two-hops,
    /// two-hops-mtls.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "latency,max-rps,64k,h2,idle,two-hops,two-hops-mtls"
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
    /// The herd-control binary (two-hops-mtls: herd's proxies get their certificates from it).
    #[arg(
        long,
        env = "HERD_BENCH_HERD_CONTROL",
        default_value = "target/release/herd-control"
    )]
    herd_control: PathBuf,
    /// Request rate of the fixed-rate scenarios (latency, two-hops, two-hops-mtls), requests per
    /// second.
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
    #[serde(rename = "two-hops-mtls")]
    TwoHopsMtls,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Latency,
        Scenario::MaxRps,
        Scenario::Body64k,
        Scenario::H2,
        Scenario::Idle,
        Scenario::TwoHops,
        Scenario::TwoHopsMtls,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Latency => "latency",
            Scenario::MaxRps => "max-rps",
            Scenario::Body64k => "64k",
            Scenario::H2 => "h2",
            Scenario::Idle => "idle",
            Scenario::TwoHops => "two-hops",
            Scenario::TwoHopsMtls => "two-hops-mtls",
        }
    }

    /// Whether the load goes through two proxies in a row.
    pub fn two_hops(self) -> bool {
        matches!(self, Scenario::TwoHops | Scenario::TwoHopsMtls)
    }

    /// The fixed-rate, latency-measuring scenarios (oha).
    pub fn fixed_rate(self) -> bool {
        matches!(
            self,
            Scenario::Latency | Scenario::TwoHops | Scenario::TwoHopsMtls
        )
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
            Scenario::TwoHopsMtls => "two-hops with mutual TLS 1.3 between proxy A and proxy B \
                (ECDSA P-256 certificates from one CA, both sides verified; key exchange and \
                cipher are each library's default, X25519 and AES-256-GCM for all three). herd: \
                both proxies certified by a herd-control identity service (not measured, core 0), \
                B's inbound `mtls: strict`, A's endpoint meshed (`identity:` B's SPIFFE ID), so \
                A → B is HTTP/2 over TLS, multiplexed. nginx: `proxy_pass https://` with a client \
                certificate, `proxy_ssl_verify on`, `proxy_ssl_session_reuse on` and upstream \
                keep-alive; B `listen ... ssl` with `ssl_verify_client on`. HAProxy: `server ... \
                ssl crt ... verify required` with `http-reuse always`; B `bind ... ssl crt ... \
                verify required`. “TLS handshakes B saw” counts B's TLS connections from the first \
                request through A to the end of the measurement (herd: \
                `herd_tls_handshakes_total`; nginx: `stub_status` accepts; HAProxy: `show info` \
                `CumSslConns`): each is one handshake, full or resumed."
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
                format!(
                    "unknown scenario {s:?} (latency, max-rps, 64k, h2, idle, two-hops, \
                     two-hops-mtls)"
                )
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
    /// two-hops-mtls: the certificates and herd-control's files, made once per run.
    mtls: Option<MtlsFiles>,
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

/// What two-hops-mtls needs besides the proxies' configurations.
pub(crate) struct MtlsFiles {
    pki: pki::Pki,
    herd_control: PathBuf,
    /// herd-control's `--mesh` directory (empty: each proxy's services are in its own file).
    mesh_dir: PathBuf,
    /// herd-control's `--bootstrap-tokens` file.
    tokens: PathBuf,
    /// Proxy A's and proxy B's token files.
    token_a: PathBuf,
    token_b: PathBuf,
}

/// 32 random hex digits: a bootstrap token.
fn random_token() -> String {
    (0..32)
        .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
        .collect()
}

impl MtlsFiles {
    fn create(ctx: &mut Ctx, herd_control: PathBuf) -> Result<MtlsFiles> {
        ctx.mkdir("pki")?;
        let pki = pki::create(&ctx.dir.join("pki"))?;
        ctx.mkdir("mesh")?;
        let (a, b) = (random_token(), random_token());
        let text = configs::bootstrap_tokens(&[("a", &a), ("b", &b)]);
        let tokens = ctx.write_config("tokens.yaml", "tokens.yaml (herd-control)", text)?;
        let token_a = ctx.dir.join("a.token");
        let token_b = ctx.dir.join("b.token");
        fs::write(&token_a, &a)?;
        fs::write(&token_b, &b)?;
        Ok(MtlsFiles {
            pki,
            herd_control,
            mesh_dir: ctx.dir.join("mesh"),
            tokens,
            token_a,
            token_b,
        })
    }
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
    if scenarios.iter().any(|s| s.fixed_rate()) {
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
    let mtls_herd = uses(Scenario::TwoHopsMtls) && targets.contains(&Target::Herd);
    let herd_control = if mtls_herd {
        let path = fs::canonicalize(&args.herd_control)
            .with_context(|| format!("herd-control binary {}", args.herd_control.display()))?;
        tools.push(tool_version(
            path.to_str().unwrap_or("herd-control"),
            &["--version"],
        )?);
        path
    } else {
        args.herd_control.clone()
    };
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
        mtls: None,
        configs: BTreeMap::new(),
    };
    if uses(Scenario::TwoHopsMtls) {
        ctx.mtls = Some(MtlsFiles::create(&mut ctx, herd_control)?);
    }
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
            "every proxy under test (both of two-hops and two-hops-mtls too) `taskset -c \
             {PROXY_CORE}`; the upstream nginx, two-hops-mtls' herd-control, the load generators \
             (oha, wrk, h2load) and the harness (the idle scenario's client) `taskset -c \
             {LOAD_CORE}`"
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
}
