//! `herd-control [--mesh DIR] [--kubeconfig FILE | --kubernetes] [--namespaces NS,...]
//! [--discovery-listen ADDR] [--admin-listen ADDR] [--ca-cert FILE --ca-key FILE
//! [--trust-bundle FILE] [--bootstrap-tokens FILE] [--identity-listen ADDR] ...]`: at least one
//! source; the identity service and the injector webhook run when a CA is given.
//!
//! Exit codes: 0 after SIGTERM/SIGINT; 64 with one line for a bad flag, no source, an unreadable
//! mesh directory or kubeconfig, unusable CA, bundle or tokens files; 1 when a port cannot be
//! bound.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use herd_api::discovery::admin_server::AdminServer;
use herd_api::fanout::DiscoveryServer;
use herd_api::identity::identity_server::IdentityServer;
use herd_control::accept;
use herd_control::admin::Admin;
use herd_control::identity::authority::{Ca, CaFiles};
use herd_control::identity::bootstrap::{Bootstrap, BootstrapTokens};
use herd_control::identity::own::keep_certified;
use herd_control::identity::review::TokenReviewer;
use herd_control::identity::token::Chain;
use herd_control::identity::{IdentityService, watch_bootstrap, watch_ca};
use herd_control::index::{Index, Sources};
use herd_control::inject;
use herd_control::inject::webhook::{NativeSidecars, Webhook, native_sidecars};
use herd_control::metrics::Metrics;
use herd_control::push::{MAX_STREAMS_PER_CONNECTION, Push, SourceStatus};
use herd_control::source::kubernetes;
use herd_control::source::mesh::{MeshDir, MeshState};
use herd_identity::{ServerName, SpiffeId};
use tokio::sync::mpsc;
use tracing::info;
use tracing_subscriber::EnvFilter;

const EX_USAGE: u8 = 64;

/// The largest `Certify` request read: a CSR of up to 16 KiB (herd-identity's limit) and a token
/// of up to 8 KiB, with room for framing. Anything larger is refused before it is buffered.
const IDENTITY_MAX_MESSAGE: usize = 32 * 1024;

/// herd's control plane: tells every herd-proxy what to route and where.
#[derive(Parser)]
#[command(name = "herd-control", version, about)]
struct Cli {
    /// A directory of mesh files (`*.yaml`, not recursive), each holding `services:`.
    #[arg(long, value_name = "DIR", env = "HERD_CONTROL_MESH")]
    mesh: Option<PathBuf>,
    /// Discover Services and EndpointSlices with this kubeconfig (its current context).
    #[arg(
        long,
        value_name = "FILE",
        env = "HERD_CONTROL_KUBECONFIG",
        conflicts_with = "kubernetes"
    )]
    kubeconfig: Option<PathBuf>,
    /// Discover Services and EndpointSlices with the pod's own service account (in a cluster).
    #[arg(long, env = "HERD_CONTROL_KUBERNETES")]
    kubernetes: bool,
    /// The namespaces to discover, comma-separated. Default: all.
    #[arg(
        long,
        value_name = "NS,...",
        value_delimiter = ',',
        env = "HERD_CONTROL_NAMESPACES"
    )]
    namespaces: Vec<String>,
    /// The cluster's DNS domain (`NAME.NAMESPACE.svc.DOMAIN` authorities).
    #[arg(
        long,
        value_name = "DOMAIN",
        default_value = "cluster.local",
        env = "HERD_CONTROL_CLUSTER_DOMAIN"
    )]
    cluster_domain: String,
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
    /// Where proxies get their certificates (gRPC `herd.identity.v1.Identity`); served only when
    /// a CA is given (`--ca-cert`, `--ca-key`).
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8080",
        env = "HERD_CONTROL_IDENTITY_LISTEN"
    )]
    identity_listen: SocketAddr,
    /// The SPIFFE trust domain identities are issued in: `spiffe://DOMAIN/ns/NS/sa/SA`.
    #[arg(
        long,
        value_name = "NAME",
        default_value = "cluster.local",
        env = "HERD_CONTROL_TRUST_DOMAIN"
    )]
    trust_domain: String,
    /// The CA certificate (PEM; an intermediate followed by its chain is allowed). Re-read when
    /// it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "HERD_CONTROL_CA_CERT",
        requires = "ca_key"
    )]
    ca_cert: Option<PathBuf>,
    /// The CA's private key (PKCS#8 PEM). Re-read when it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "HERD_CONTROL_CA_KEY",
        requires = "ca_cert"
    )]
    ca_key: Option<PathBuf>,
    /// The roots proxies trust (PEM, one or more certificates); must trust the CA certificate.
    /// Default: the CA certificate alone. Re-read when it changes.
    #[arg(
        long,
        value_name = "FILE",
        env = "HERD_CONTROL_TRUST_BUNDLE",
        requires = "ca_cert"
    )]
    trust_bundle: Option<PathBuf>,
    /// Tokens for workloads outside a cluster (YAML, `tokens: [{token, namespace,
    /// serviceAccount}]`). Re-read when it changes.
    #[arg(long, value_name = "FILE", env = "HERD_CONTROL_BOOTSTRAP_TOKENS")]
    bootstrap_tokens: Option<PathBuf>,
    /// The audience a ServiceAccount token must be for (checked with TokenReview).
    #[arg(
        long,
        value_name = "AUD",
        default_value = "herd",
        env = "HERD_CONTROL_TOKEN_AUDIENCE"
    )]
    token_audience: String,
    /// How long a leaf certificate is valid (never past the CA certificate's own end).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "24h",
        value_parser = humantime::parse_duration,
        env = "HERD_CONTROL_IDENTITY_LIFETIME"
    )]
    identity_lifetime: Duration,
    /// The SPIFFE ID herd-control presents on its discovery and identity ports, signed by its
    /// own CA (with a CA only). Proxies expect it (`proxy.identity.controlIdentity`). Default:
    /// `spiffe://TRUST-DOMAIN/ns/herd/sa/herd-control`.
    #[arg(long, value_name = "SPIFFE-ID", env = "HERD_CONTROL_IDENTITY")]
    control_identity: Option<String>,
    /// The injector webhook (HTTPS, `POST /inject`); served only with a CA.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "0.0.0.0:8443",
        env = "HERD_CONTROL_WEBHOOK_LISTEN"
    )]
    webhook_listen: SocketAddr,
    /// The names the webhook's certificate is for, comma-separated: DNS names (the Service the
    /// webhook configuration names, `SERVICE.NAMESPACE.svc`) and IP addresses (for a `url:`
    /// webhook such as `https://127.0.0.1:8443/inject`).
    #[arg(
        long,
        value_name = "NAME,...",
        value_delimiter = ',',
        default_value = "herd-control.herd.svc",
        env = "HERD_CONTROL_WEBHOOK_DNS_NAMES"
    )]
    webhook_dns_names: Vec<String>,
    /// The image of both injected containers (`herd-init` and `herd-proxy`); `herd-proxy` must be
    /// on its PATH.
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = inject::sidecar::DEFAULT_IMAGE,
        env = "HERD_CONTROL_PROXY_IMAGE"
    )]
    proxy_image: String,
    /// Inject the proxy as a native sidecar (an init container with `restartPolicy: Always`) or a
    /// regular container: `auto` asks the API server's version (native from 1.29 on) and, without
    /// a Kubernetes client, injects regular sidecars.
    #[arg(
        long,
        value_name = "auto|always|never",
        default_value = "auto",
        env = "HERD_CONTROL_NATIVE_SIDECARS"
    )]
    native_sidecars: NativeSidecars,
    /// Where injected proxies take their routing from: `NAME:PORT` of this control plane's
    /// discovery port (their `proxy.control.dns`). Default:
    /// `herd-control-headless.herd.svc.CLUSTER-DOMAIN:8086`, the chart's headless Service.
    #[arg(long, value_name = "NAME:PORT", env = "HERD_CONTROL_INJECTED_CONTROL")]
    injected_control: Option<String>,
    /// Where injected proxies get their certificates: `NAME:PORT` of this control plane's
    /// identity port (their `proxy.identity.dns`). Default:
    /// `herd-control-headless.herd.svc.CLUSTER-DOMAIN:8080`.
    #[arg(long, value_name = "NAME:PORT", env = "HERD_CONTROL_INJECTED_IDENTITY")]
    injected_identity: Option<String>,
}

/// What the identity service starts with, read and checked before anything else starts.
struct IdentityStart {
    files: CaFiles,
    ca: Ca,
    bootstrap: Option<(PathBuf, BootstrapTokens)>,
    /// What herd-control presents on its ports.
    own: SpiffeId,
    /// The webhook certificate's names.
    webhook_names: Vec<ServerName>,
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
    if let Some(dir) = &cli.mesh
        && let Err(e) = std::fs::read_dir(dir)
    {
        eprintln!(
            "herd-control: cannot read mesh directory {}: {e}",
            dir.display()
        );
        return ExitCode::from(EX_USAGE);
    }
    if cli.mesh.is_none() && cli.kubeconfig.is_none() && !cli.kubernetes {
        eprintln!(
            "herd-control: no source: give --mesh DIR, --kubeconfig FILE or --kubernetes (or several)"
        );
        return ExitCode::from(EX_USAGE);
    }
    if let Some(bad) = cli.namespaces.iter().find(|ns| !is_namespace(ns)) {
        eprintln!("herd-control: --namespaces: `{bad}` is not a namespace name (a DNS label)");
        return ExitCode::from(EX_USAGE);
    }
    if herd_config::Authority::parse(&cli.cluster_domain).is_none_or(|a| a.as_str().contains(':')) {
        eprintln!(
            "herd-control: --cluster-domain: `{}` is not a DNS name",
            cli.cluster_domain
        );
        return ExitCode::from(EX_USAGE);
    }
    let identity = match identity_start(&cli) {
        Ok(identity) => identity,
        Err(line) => {
            eprintln!("herd-control: {line}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let kube = match runtime.block_on(kube_config(&cli)) {
        Ok(kube) => kube,
        Err(line) => {
            eprintln!("herd-control: {line}");
            return ExitCode::from(EX_USAGE);
        }
    };
    if identity.is_some() && kube.is_none() && cli.bootstrap_tokens.is_none() {
        eprintln!(
            "herd-control: the identity service has no way to check tokens: give --bootstrap-tokens FILE, --kubeconfig FILE or --kubernetes"
        );
        return ExitCode::from(EX_USAGE);
    }
    match runtime.block_on(run(cli, kube, identity)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd-control: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The Kubernetes client configuration the flags ask for, if any; the error is one line.
async fn kube_config(cli: &Cli) -> Result<Option<kube::Config>, String> {
    if let Some(path) = &cli.kubeconfig {
        // Parse errors come with a snippet of the file below their first line.
        let first = |e: &dyn std::fmt::Display| {
            let text = e.to_string();
            text.lines().next().unwrap_or_default().to_owned()
        };
        let file = kube::config::Kubeconfig::read_from(path)
            .map_err(|e| format!("cannot read kubeconfig {}: {}", path.display(), first(&e)))?;
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .map_err(|e| format!("kubeconfig {}: {}", path.display(), first(&e)))?;
        return Ok(Some(config));
    }
    if cli.kubernetes {
        let config = kube::Config::incluster()
            .map_err(|e| format!("--kubernetes: no in-cluster configuration: {e}"))?;
        return Ok(Some(config));
    }
    Ok(None)
}

/// The CA, bundle and tokens files, loaded once to refuse a bad start; `None` without a CA.
fn identity_start(cli: &Cli) -> Result<Option<IdentityStart>, String> {
    SpiffeId::trust_domain_id(&cli.trust_domain)
        .map_err(|e| format!("--trust-domain: `{}`: {e}", cli.trust_domain))?;
    if cli.identity_lifetime.is_zero() {
        return Err("--identity-lifetime: a leaf lifetime must be more than zero".into());
    }
    let own = match &cli.control_identity {
        Some(id) => SpiffeId::parse(id).map_err(|e| format!("--control-identity: `{id}`: {e}"))?,
        None => SpiffeId::kubernetes(&cli.trust_domain, "herd", "herd-control")
            .map_err(|e| format!("--trust-domain: `{}`: {e}", cli.trust_domain))?,
    };
    if own.trust_domain() != cli.trust_domain {
        return Err(format!(
            "--control-identity: `{own}` is not in the trust domain `{}`",
            cli.trust_domain
        ));
    }
    let webhook_names = cli
        .webhook_dns_names
        .iter()
        .map(|name| ServerName::parse(name).map_err(|e| format!("--webhook-dns-names: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    if webhook_names.is_empty() {
        return Err("--webhook-dns-names: give at least one name".into());
    }
    let (control, identity) = injected_targets(cli);
    for (flag, target) in [
        ("--injected-control", &control),
        ("--injected-identity", &identity),
    ] {
        if !is_dns_target(target) {
            return Err(format!(
                "{flag}: `{target}` is not NAME:PORT (a DNS name and a port from 1 to 65535)"
            ));
        }
    }
    if cli.proxy_image.is_empty() || cli.proxy_image.contains(char::is_whitespace) {
        return Err(format!(
            "--proxy-image: `{}` is not an image reference",
            cli.proxy_image
        ));
    }
    let (Some(cert), Some(key)) = (&cli.ca_cert, &cli.ca_key) else {
        return Ok(None);
    };
    let files = CaFiles {
        cert: cert.clone(),
        key: key.clone(),
        bundle: cli.trust_bundle.clone(),
        trust_domain: cli.trust_domain.clone(),
    };
    let ca = files.load().map_err(|e| e.to_string())?;
    let bootstrap = match &cli.bootstrap_tokens {
        Some(path) => Some((
            path.clone(),
            BootstrapTokens::load(path, &cli.trust_domain).map_err(|e| e.to_string())?,
        )),
        None => None,
    };
    Ok(Some(IdentityStart {
        files,
        ca,
        bootstrap,
        own,
        webhook_names,
    }))
}

/// Where injected proxies find this control plane: the flags, or their defaults in the
/// cluster's domain.
fn injected_targets(cli: &Cli) -> (String, String) {
    let (control, identity) = inject::sidecar::default_targets(&cli.cluster_domain);
    (
        cli.injected_control.clone().unwrap_or(control),
        cli.injected_identity.clone().unwrap_or(identity),
    )
}

/// `NAME:PORT` with a DNS name (not an address: proxies resolve it at every connection).
fn is_dns_target(target: &str) -> bool {
    let Some((name, port)) = target.rsplit_once(':') else {
        return false;
    };
    matches!(ServerName::parse(name), Ok(ServerName::Dns(_)))
        && port.parse::<u16>().is_ok_and(|p| p != 0)
}

/// A Kubernetes namespace name: a DNS label.
fn is_namespace(name: &str) -> bool {
    !name.contains('.') && herd_config::is_service_name(name) && name.len() <= 63
}

async fn run(
    cli: Cli,
    kube: Option<kube::Config>,
    identity: Option<IdentityStart>,
) -> anyhow::Result<()> {
    let metrics = Metrics::new();
    let index = Arc::new(Mutex::new(Index::with_sources(Sources {
        mesh: cli.mesh.is_some(),
        kubernetes: kube.is_some(),
    })));
    let push = Push::new(index.clone(), metrics.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let mesh_source = cli
        .mesh
        .as_ref()
        .map(|dir| format!("mesh:{}", dir.display()));
    for name in mesh_source
        .iter()
        .cloned()
        .chain(kube.is_some().then(|| kubernetes::NAME.to_owned()))
    {
        push.sources.lock().expect("sources").push(SourceStatus {
            name,
            synced: false,
            problems: Vec::new(),
        });
    }

    // Every port is bound before any source starts: `/ready` turns 200 when the sources have
    // synced, and by then the discovery and identity ports must take connections.
    let admin_listener = tokio::net::TcpListener::bind(cli.admin_listen)
        .await
        .with_context(|| format!("cannot bind admin listener {}", cli.admin_listen))?;
    let listener = tokio::net::TcpListener::bind(cli.discovery_listen)
        .await
        .with_context(|| format!("cannot bind discovery listener {}", cli.discovery_listen))?;
    let identity_listener = match identity {
        Some(_) => Some(
            tokio::net::TcpListener::bind(cli.identity_listen)
                .await
                .with_context(|| {
                    format!("cannot bind identity listener {}", cli.identity_listen)
                })?,
        ),
        None => None,
    };
    let webhook_listener = match identity {
        Some(_) => Some(
            tokio::net::TcpListener::bind(cli.webhook_listen)
                .await
                .with_context(|| format!("cannot bind webhook listener {}", cli.webhook_listen))?,
        ),
        None => None,
    };
    tokio::spawn(
        Admin {
            ready: ready.clone(),
            metrics: metrics.clone(),
        }
        .serve(admin_listener),
    );

    let mut _watcher = None;
    if let (Some(dir), Some(name)) = (&cli.mesh, mesh_source) {
        let (tx, mut rx) = mpsc::channel::<Arc<MeshState>>(1);
        _watcher = Some(
            herd_control::source::mesh::watch(MeshDir::new(dir), tx)
                .with_context(|| format!("cannot watch {}", dir.display()))?,
        );
        let push = push.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            while let Some(state) = rx.recv().await {
                let mut index = push.index.lock().expect("index lock");
                index.apply_policies(&state.policies);
                index.apply_mesh(&state.services);
                push.metrics
                    .services
                    .set(index.current_routing().services as i64);
                drop(index);
                push.metrics.mesh_changes.inc();
                let problems = state.problems.iter().map(ToString::to_string).collect();
                herd_control::source::report(&push, &ready, &name, true, problems);
            }
        });
    }
    let client = match kube {
        Some(config) => Some(kube::Client::try_from(config).context("Kubernetes client")?),
        None => None,
    };
    let mut _identity_watchers = Vec::new();
    // With a CA, both gRPC ports present herd-control's own certificate to TLS clients.
    let mut own_tls = None;
    if let (Some(start), Some(listener)) = (identity, identity_listener) {
        let (ca, watcher) = watch_ca(start.files.clone(), start.ca, metrics.clone())
            .context("cannot watch the CA files")?;
        _identity_watchers.push(watcher);
        let tls = keep_certified(
            ca.clone(),
            start.own.clone(),
            cli.identity_lifetime,
            metrics.clone(),
        )
        .context("cannot certify the control plane itself")?;
        own_tls = Some(tls.clone());
        if let Some(listener) = webhook_listener {
            let webhook_tls = inject::webhook::keep_certified(
                ca.clone(),
                start.webhook_names.clone(),
                cli.identity_lifetime,
                metrics.clone(),
            )
            .context("cannot certify the injector webhook")?;
            let webhook = Webhook {
                settings: inject::Settings {
                    image: cli.proxy_image.clone(),
                    native_sidecars: false,
                    control: injected_targets(&cli).0,
                    identity: injected_targets(&cli).1,
                    trust_domain: cli.trust_domain.clone(),
                    control_identity: start.own.to_string(),
                    token_audience: cli.token_audience.clone(),
                    trust_anchors_pem: String::new(),
                },
                ca: ca.clone(),
                native: native_sidecars(cli.native_sidecars, client.clone()).await,
                client: client.clone(),
                metrics: metrics.clone(),
            };
            info!(webhook = %cli.webhook_listen, names = ?cli.webhook_dns_names, image = %cli.proxy_image, "injector ready");
            tokio::spawn(webhook.serve(listener, webhook_tls));
        }
        let mut tokens = Chain::new();
        if let Some((path, first)) = start.bootstrap {
            let (current, watcher) = watch_bootstrap(path.clone(), cli.trust_domain.clone(), first)
                .with_context(|| format!("cannot watch {}", path.display()))?;
            _identity_watchers.push(watcher);
            tokens = tokens.with(Bootstrap::new(current));
        }
        if let Some(client) = &client {
            tokens = tokens.with(TokenReviewer::new(
                client.clone(),
                &cli.token_audience,
                &cli.trust_domain,
            ));
        }
        let service =
            IdentityService::new(ca, Arc::new(tokens), cli.identity_lifetime, metrics.clone());
        info!(identity = %cli.identity_listen, trust_domain = %cli.trust_domain, "identity service ready");
        let connections = metrics.connections.clone();
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(
                    IdentityServer::new(service).max_decoding_message_size(IDENTITY_MAX_MESSAGE),
                )
                .serve_with_incoming(accept::incoming(
                    listener,
                    Some(tls),
                    "identity",
                    connections,
                ))
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "identity server failed");
            }
        });
    }
    if let Some(client) = client {
        let options = kubernetes::Options {
            namespaces: cli.namespaces.clone(),
            cluster_domain: cli.cluster_domain.clone(),
            trust_domain: cli.trust_domain.clone(),
        };
        let snapshots = kubernetes::spawn(client, options);
        tokio::spawn(kubernetes::feed(snapshots, push.clone(), ready.clone()));
    }

    info!(discovery = %cli.discovery_listen, admin = %cli.admin_listen, mesh = ?cli.mesh, kubernetes = cli.kubeconfig.is_some() || cli.kubernetes, "herd-control ready");
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(10)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .add_service(DiscoveryServer::new(push.clone()))
        .add_service(AdminServer::new(push))
        .serve_with_incoming_shutdown(
            accept::incoming(listener, own_tls, "discovery", metrics.connections.clone()),
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
