//! `herd-control-load`: a fleet of simulated proxies against a real herd-control (issue 13).
//! `scripts/bench-control` builds this and herd-control in release mode and runs it.
//!
//! It writes a mesh directory ([`plan`]), starts herd-control on loopback ([`server`]), connects
//! the fleet ([`fleet`]: one TCP connection per proxy) and measures, in order ([`scenarios`]):
//! the fleet's first sync; changes to the service every proxy watches, from the write of its
//! mesh file to each proxy's arrival; a rolling update of one service; `kill -9` and a restart
//! on the same port; and a last change that counts the proxies still live. Server and load tool
//! share the machine's cores, as in go-control-plane's measurement (DESIGN.md, "Control plane"),
//! so both report their CPU. The results go between the `control-load` markers of
//! `benches/RESULTS.md` ([`report`]) and, raw, to JSON.
#![forbid(unsafe_code)]

mod fleet;
mod plan;
mod procfs;
mod report;
mod scenarios;
mod server;
mod stats;
mod wire;

use std::fs;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;

use crate::fleet::Fleet;
use crate::plan::Plan;
use crate::report::Results;
use crate::scenarios::{Bench, Limits};
use crate::server::Server;

/// A fleet of simulated proxies against herd-control (run it through `scripts/bench-control`).
#[derive(Parser, Debug)]
#[command(name = "herd-control-load")]
struct Args {
    /// Simulated proxies, each on its own TCP connection.
    #[arg(long, default_value_t = 10_000)]
    proxies: usize,
    /// Services besides `shared`.
    #[arg(long, default_value_t = 1_000)]
    services: usize,
    /// Static endpoints per service (`shared` too).
    #[arg(long, default_value_t = 100)]
    endpoints: usize,
    /// Services each proxy watches: `shared` and this many minus one at random.
    #[arg(long, default_value_t = 10)]
    watches: usize,
    /// Changes to `shared`, one at a time (plus one after the restart).
    #[arg(long, default_value_t = 10)]
    changes: usize,
    /// Steps of the rolling update (each replaces one endpoint; at most --endpoints).
    #[arg(long, default_value_t = 100)]
    rolling_steps: usize,
    /// Rolling-update steps per second.
    #[arg(long, default_value_t = 10.0)]
    rolling_rate: f64,
    /// Leave out the last phase, a routing change (a setting of `shared`: the whole routing
    /// document to every proxy at once).
    #[arg(long)]
    no_routing_change: bool,
    /// herd-control is killed above this RSS (MiB), as a container memory limit would, and the
    /// phase fails: a run must not take the machine's memory.
    #[arg(long, default_value_t = 4096)]
    max_server_rss: u64,
    /// Proxies connecting and syncing at once while the fleet first comes up (after that, as
    /// they like).
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Longest wait for the first sync.
    #[arg(long, default_value = "180s", value_parser = parse_secs)]
    sync_timeout: u64,
    /// Longest wait for one change (or the rolling update, after its last write) to arrive.
    #[arg(long, default_value = "15s", value_parser = parse_secs)]
    change_timeout: u64,
    /// Longest wait for the fleet to be back after the restart.
    #[arg(long, default_value = "60s", value_parser = parse_secs)]
    resync_timeout: u64,
    /// Seed of the random subscriptions.
    #[arg(long, default_value_t = 13)]
    seed: u64,
    /// The herd-control binary.
    #[arg(
        long,
        env = "HERD_BENCH_CONTROL",
        default_value = "target/release/herd-control"
    )]
    control: PathBuf,
    /// Markdown file whose `control-load` marker section gets the results.
    #[arg(long, default_value = "benches/RESULTS.md")]
    out: PathBuf,
    /// Print the results without writing `--out`.
    #[arg(long)]
    no_write: bool,
    /// Says in the report what herd-control build is measured, when it is not the commit's own
    /// (e.g. `main + a patch`).
    #[arg(long)]
    label: Option<String>,
    /// Directory for the raw JSON, the mesh files and herd-control's log.
    #[arg(
        long,
        env = "HERD_BENCH_RAW_DIR",
        default_value = "target/bench-control"
    )]
    raw_dir: PathBuf,
    /// Directory for this run's mesh files, herd-control's log and pid file (default: `run-PID`
    /// under --raw-dir); removed after a complete run.
    #[arg(long, env = "HERD_BENCH_WORK")]
    work_dir: Option<PathBuf>,
}

/// `10s`, `10`, `2m` -> seconds.
fn parse_secs(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (n, unit) = if let Some(n) = s.strip_suffix('s') {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60)
    } else {
        (s, 1)
    };
    match n.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n * unit),
        _ => Err(format!(
            "{s:?} is not a positive whole number of seconds (like 10s or 1m)"
        )),
    }
}

fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    text.lines().next().map(str::to_owned)
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

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(3),
        Err(e) => {
            eprintln!("herd-control-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ok(false): the run finished but some phase failed or missed a proxy.
async fn run(args: Args) -> Result<bool> {
    // Each proxy holds a socket here and one in herd-control; a few hundred more for the rest.
    let needed = args.proxies as u64 + 512;
    match procfs::open_files_limit() {
        Some(limit) if limit < needed => bail!(
            "{} proxies need at least {needed} open files; the limit is {limit} \
             (`ulimit -n 65536`, which scripts/bench-control does)",
            args.proxies
        ),
        _ => {}
    }
    if !args.control.is_file() {
        bail!(
            "no herd-control binary at {} (cargo build --release -p herd-control)",
            args.control.display()
        );
    }
    if args.rolling_steps > args.endpoints
        || !args.rolling_rate.is_finite()
        || args.rolling_rate <= 0.0
    {
        bail!("--rolling-steps must be at most --endpoints, and --rolling-rate above 0");
    }
    let command = std::env::var("HERD_BENCH_CMD").unwrap_or_else(|_| {
        std::iter::once("herd-control-load".to_owned())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" ")
    });
    let mut results = Results {
        date: first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_default(),
        commit: git_commit(),
        machine: procfs::machine(),
        load_average: procfs::load_average(),
        command,
        label: args.label.clone(),
        proxies: args.proxies,
        services: args.services,
        endpoints: args.endpoints,
        watches: args.watches,
        ..Results::default()
    };

    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| args.raw_dir.join(format!("run-{}", std::process::id())));
    let mesh = work.join("mesh");
    let plan = Plan::new(
        &mesh,
        args.proxies,
        args.services,
        args.endpoints,
        args.watches,
        args.seed,
    )?;
    plan.write_all()?;
    let discovery = server::free_port()?;
    let admin = server::free_port()?;
    let log = work.join("herd-control.log");
    let server = Server::start(&args.control, &mesh, discovery, admin, &log)?;
    eprintln!(
        "herd-control-load: herd-control (pid {}) on {discovery}, mesh {}, log {}",
        server.pid(),
        mesh.display(),
        log.display()
    );
    let fleet = Fleet::new(
        discovery,
        &plan.names,
        &plan.subscriptions,
        vec![0, plan.rolling],
        args.connect_concurrency,
    );
    let mut bench = Bench {
        plan,
        server,
        fleet,
        limits: Limits {
            sync: Duration::from_secs(args.sync_timeout),
            change: Duration::from_secs(args.change_timeout),
            resync: Duration::from_secs(args.resync_timeout),
        },
        idle_rate: 0.0,
        max_rss: args.max_server_rss << 20,
    };

    let machine0 = procfs::machine_cpu();
    let server0 = bench.server.total_cpu();
    let load0 = procfs::cpu("self").unwrap_or_default();
    let started = std::time::Instant::now();
    let outcome = phases(&mut bench, &args, &mut results).await;
    if let (Some((busy0, steal0)), Some((busy1, steal1))) = (machine0, procfs::machine_cpu()) {
        let server = bench
            .server
            .total_cpu()
            .saturating_sub(server0)
            .as_secs_f64();
        let load = procfs::cpu("self")
            .unwrap_or_default()
            .saturating_sub(load0)
            .as_secs_f64();
        results.machine_use = Some(report::MachineUse {
            seconds: started.elapsed().as_secs_f64(),
            server_cpu: server,
            load_cpu: load,
            others_cpu: ((busy1 - busy0).as_secs_f64() - server - load).max(0.0),
            steal: (steal1 - steal0).as_secs_f64(),
        });
    }
    if let Err(e) = &outcome {
        eprintln!("herd-control-load: {e:#}");
        results.failure = Some(format!("{e:#}"));
    }
    let complete = outcome.is_ok()
        && results
            .sync
            .as_ref()
            .is_some_and(|s| s.synced == args.proxies)
        && results
            .changes
            .iter()
            .all(|c| c.reached == c.expected && c.wrong == 0)
        && results.rolling.as_ref().is_some_and(|r| r.missing == 0)
        && results
            .restart
            .as_ref()
            .is_some_and(|r| r.reopened == r.expected)
        && results
            .end
            .as_ref()
            .is_some_and(|e| e.received_last_change == args.proxies)
        && results
            .routing_change
            .as_ref()
            .is_none_or(|c| c.reached == c.expected);
    drop(bench);

    let raw = report::write_raw(&args.raw_dir, &results)?;
    let section = report::render(&results);
    println!("{section}");
    eprintln!("herd-control-load: raw results in {}", raw.display());
    if !args.no_write {
        let text = fs::read_to_string(&args.out).unwrap_or_default();
        fs::write(&args.out, report::splice(&text, &section))
            .with_context(|| format!("cannot write {}", args.out.display()))?;
        eprintln!("herd-control-load: wrote {}", args.out.display());
    }
    if complete {
        let _ = fs::remove_dir_all(&work);
    } else {
        eprintln!(
            "herd-control-load: incomplete; mesh and herd-control's log kept in {}",
            work.display()
        );
    }
    Ok(complete)
}

async fn phases(bench: &mut Bench, args: &Args, results: &mut Results) -> Result<()> {
    let step = |name: &str| eprintln!("herd-control-load: {name}");
    step("waiting for herd-control's /ready");
    results.startup = Some(bench.startup().await.context("startup")?);
    step(&format!("connecting {} proxies", args.proxies));
    let sync = bench.sync().await.context("first sync")?;
    eprintln!(
        "herd-control-load: {} of {} synced in {:.2} s",
        sync.synced, args.proxies, sync.seconds
    );
    let synced = sync.synced == args.proxies;
    let stopped = sync.stopped.clone();
    results.sync = Some(sync);
    if let Some(why) = stopped {
        bail!("first sync: {why}");
    }
    if !synced {
        bail!("the fleet did not sync within --sync-timeout");
    }
    bench.fleet.open_gate();
    step("measuring idle CPU");
    results.idle_cpu_per_second = Some(bench.idle(Duration::from_secs(3)).await?);
    step(&format!("{} changes to `shared`", args.changes));
    results.changes = bench.changes(args.changes).await.context("changes")?;
    for c in &results.changes {
        eprintln!(
            "herd-control-load:   {}: {} of {}, {:?}",
            c.change, c.reached, c.expected, c.latency
        );
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    step("rolling update");
    let rolling = bench
        .rolling(args.rolling_steps, args.rolling_rate)
        .await
        .context("rolling update")?;
    eprintln!(
        "herd-control-load:   {} subscribers, per update {:?}",
        rolling.subscribers, rolling.per_update
    );
    results.rolling = Some(rolling);
    tokio::time::sleep(Duration::from_secs(1)).await;
    step("kill -9 and restart");
    let restart = bench.restart().await.context("restart")?;
    eprintln!(
        "herd-control-load:   {} of {} back, all at {:?}",
        restart.reopened, restart.expected, restart.all_reopened_seconds
    );
    results.restart = Some(restart);
    tokio::time::sleep(Duration::from_secs(1)).await;
    step("a last change, and what is live");
    results.end = Some(bench.end().await.context("end")?);
    if !args.no_routing_change {
        step("a routing change");
        results.routing_change = Some(bench.routing_change().await.context("routing change")?);
    }
    Ok(())
}
