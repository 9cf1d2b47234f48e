//! `herd-proxy --config FILE [--check]`, or `herd-proxy [--check]` with the whole configuration
//! in `HERD_PROXY_CONFIG_YAML` (what the injector sets: no file to mount; read once, never
//! reloaded; its errors are located as `$HERD_PROXY_CONFIG_YAML:LINE:COLUMN`; a file, when
//! given, wins); and `herd-proxy init [FLAGS]` (transparent mode's iptables rules, see
//! [`herd_proxy::init`]).
//!
//! Exit codes: 0 after a clean shutdown, a passing `--check` or rules installed; 64 (EX_USAGE)
//! for a bad flag, an unreadable or invalid config file, or a bad `HERD_LOG`, always with one
//! line on stderr; 1 when the proxy cannot start (a port already taken) or `init` cannot install
//! its rules (the failing rule named).
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use herd_proxy::Origin;
use tracing_subscriber::EnvFilter;

const EX_USAGE: u8 = 64;

/// The environment variable that holds the whole configuration when no file is given.
const CONFIG_YAML: &str = "HERD_PROXY_CONFIG_YAML";

/// herd's sidecar proxy.
#[derive(Parser)]
#[command(name = "herd-proxy", version, about, subcommand_negates_reqs = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Subcommand>,
    /// The mesh file: the proxy's listeners and the services it routes to. Without it, the
    /// configuration's text is read from `HERD_PROXY_CONFIG_YAML`.
    #[arg(long, value_name = "FILE", env = "HERD_PROXY_CONFIG")]
    config: Option<PathBuf>,
    /// Validate the file and exit: 0 when it is valid, 64 with `FILE:LINE:COLUMN: message` when not.
    #[arg(long)]
    check: bool,
    /// Threads that serve traffic: `auto` (the default) is the CPUs this process may run on
    /// (its affinity mask and cgroup CPU quota), so a sidecar limited to one core gets one.
    #[arg(long, value_name = "N|auto", env = "HERD_PROXY_WORKERS", default_value = "auto",
          value_parser = parse_workers)]
    workers: Workers,
}

#[derive(clap::Subcommand)]
enum Subcommand {
    /// Install transparent mode's iptables and ip6tables rules in this network namespace (the
    /// pod's init container), then exit.
    Init(herd_proxy::init::Options),
}

#[derive(Clone, Copy)]
struct Workers(usize);

fn parse_workers(s: &str) -> Result<Workers, String> {
    if s == "auto" {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        return Ok(Workers(cpus));
    }
    match s.parse::<usize>() {
        Ok(n) if (1..=1024).contains(&n) => Ok(Workers(n)),
        _ => Err(format!(
            "expected a number of threads from 1 to 1024, or auto; got {s:?}"
        )),
    }
}

/// One worker runs everything on the main thread (tokio's current-thread scheduler: no work
/// stealing, no cross-thread wake-ups, which on one core only cost); more get the work-stealing
/// scheduler with that many threads.
fn runtime(workers: Workers) -> std::io::Result<tokio::runtime::Runtime> {
    match workers.0 {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("herd-proxy: {}", first.trim_start_matches("error: "));
            return ExitCode::from(EX_USAGE);
        }
    };
    if let Some(Subcommand::Init(options)) = cli.command {
        return match herd_proxy::init::run(&options, &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("herd-proxy init: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (origin, loaded) = match &cli.config {
        Some(path) => (Origin::File(path.clone()), herd_config::load(path)),
        None => match std::env::var(CONFIG_YAML) {
            Ok(text) => (
                Origin::Environment(CONFIG_YAML),
                herd_config::parse(&text, &format!("${CONFIG_YAML}")),
            ),
            Err(e) => {
                eprintln!(
                    "herd-proxy: no configuration: give --config FILE (or HERD_PROXY_CONFIG), or the YAML itself in {CONFIG_YAML} ({e})"
                );
                return ExitCode::from(EX_USAGE);
            }
        },
    };
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if cli.check {
        println!("{}: ok", origin.name().display());
        return ExitCode::SUCCESS;
    }
    if let Err(e) = init_logging() {
        eprintln!("herd-proxy: {e}");
        return ExitCode::from(EX_USAGE);
    }
    let runtime = match runtime(cli.workers) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("herd-proxy: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(herd_proxy::run(origin, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("herd-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `HERD_LOG` (env-filter syntax, default `info`) and `HERD_LOG_FORMAT` (`plain`, default, or
/// `json`). Logs go to stderr.
fn init_logging() -> Result<(), String> {
    let filter = match std::env::var("HERD_LOG") {
        Ok(spec) => EnvFilter::try_new(&spec).map_err(|e| format!("HERD_LOG={spec:?}: {e}"))?,
        Err(_) => EnvFilter::new("info"),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match std::env::var("HERD_LOG_FORMAT").as_deref() {
        Ok("json") => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        Ok("plain") | Err(_) => builder.init(),
        Ok(other) => return Err(format!("HERD_LOG_FORMAT={other:?}: expected plain or json")),
    }
    Ok(())
}
