//! `herd-control --mesh DIR [--discovery-listen ADDR] [--admin-listen ADDR]`.
//!
//! Exit codes: 0 after SIGTERM/SIGINT; 64 with one line for a bad flag or an unreadable mesh
//! directory; 1 when a port cannot be bound.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::Parser;
use herd_api::discovery::admin_server::AdminServer;
use herd_api::encoded_server::discovery_server::DiscoveryServer;
use herd_control::admin::Admin;
use herd_control::index::Index;
use herd_control::metrics::Metrics;
use herd_control::push::{MAX_STREAMS_PER_CONNECTION, Push, SourceStatus};
use herd_control::source::mesh::{MeshDir, MeshState};
use tokio::sync::mpsc;
use tracing::info;
use tracing_subscriber::EnvFilter;

const EX_USAGE: u8 = 64;

/// herd's control plane: tells every herd-proxy what to route and where.
#[derive(Parser)]
#[command(name = "herd-control", version, about)]
struct Cli {
    /// A directory of mesh files (`*.yaml`, not recursive), each holding `services:`.
    #[arg(long, value_name = "DIR", env = "HERD_CONTROL_MESH")]
    mesh: PathBuf,
    /// Where proxies (and herdctl) connect: gRPC.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8086",
        env = "HERD_CONTROL_DISCOVERY_LISTEN"
    )]
    discovery_listen: SocketAddr,
    /// `/live`, `/ready`, `/metrics`.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:9990",
        env = "HERD_CONTROL_ADMIN_LISTEN"
    )]
    admin_listen: SocketAddr,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let first = e.to_string();
            let line = first.lines().next().unwrap_or("invalid arguments");
            eprintln!("herd-control: {}", line.trim_start_matches("error: "));
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    if let Err(e) = init_logging() {
        eprintln!("herd-control: {e}");
        return ExitCode::from(EX_USAGE);
    }
    if let Err(e) = std::fs::read_dir(&cli.mesh) {
        eprintln!(
            "herd-control: cannot read mesh directory {}: {e}",
            cli.mesh.display()
        );
        return ExitCode::from(EX_USAGE);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd-control: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let index = Arc::new(Mutex::new(Index::new()));
    let push = Push::new(index.clone(), metrics.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let source_name = format!("mesh:{}", cli.mesh.display());
    push.sources.lock().expect("sources").push(SourceStatus {
        name: source_name.clone(),
        synced: false,
        problems: Vec::new(),
    });

    let admin_listener = tokio::net::TcpListener::bind(cli.admin_listen)
        .await
        .with_context(|| format!("cannot bind admin listener {}", cli.admin_listen))?;
    tokio::spawn(
        Admin {
            ready: ready.clone(),
            metrics: metrics.clone(),
        }
        .serve(admin_listener),
    );

    let (tx, mut rx) = mpsc::channel::<Arc<MeshState>>(1);
    let _watcher = herd_control::source::mesh::watch(MeshDir::new(&cli.mesh), tx)
        .with_context(|| format!("cannot watch {}", cli.mesh.display()))?;
    {
        let push = push.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            while let Some(state) = rx.recv().await {
                push.index
                    .lock()
                    .expect("index lock")
                    .apply_mesh(&state.services);
                push.metrics.mesh_changes.inc();
                push.metrics.services.set(state.services.len() as i64);
                push.metrics
                    .source_problems
                    .with_label_values(&["mesh"])
                    .set(state.problems.len() as i64);
                if let Some(source) = push.sources.lock().expect("sources").first_mut() {
                    source.synced = true;
                    source.problems = state.problems.iter().map(ToString::to_string).collect();
                }
                ready.store(true, Ordering::Release);
            }
        });
    }

    let listener = tokio::net::TcpListener::bind(cli.discovery_listen)
        .await
        .with_context(|| format!("cannot bind discovery listener {}", cli.discovery_listen))?;
    info!(discovery = %cli.discovery_listen, admin = %cli.admin_listen, mesh = %cli.mesh.display(), "herd-control ready");
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(DiscoveryServer::new(push.clone()))
        .add_service(AdminServer::new(push))
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown(),
        )
        .await
        .context("discovery server")?;
    info!("stopped");
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
    }
}

/// `HERD_LOG` (env-filter syntax, default `info`) and `HERD_LOG_FORMAT` (`plain`, default, or
/// `json`), as herd-proxy reads them. Logs go to stderr.
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
        Ok("json") => builder.json().init(),
        Ok("plain") | Err(_) => builder.init(),
        Ok(other) => return Err(format!("HERD_LOG_FORMAT={other:?}: expected plain or json")),
    }
    Ok(())
}
