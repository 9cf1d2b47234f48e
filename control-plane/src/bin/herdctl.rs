//! `herdctl`: the operator's CLI for a herd mesh.
//!
//! ```text
//! herdctl validate DIR|FILE                   # 0, or 64 with one FILE:LINE:COLUMN line per problem
//! herdctl stat [--control ADDR]               # every proxy connected to that replica
//! herdctl config PROXY-ID [--control ADDR]    # the routing state that proxy was last sent, as YAML
//! herdctl check [--control ADDR]              # reachable, sources healthy, no proxy stuck on a NACK
//! herdctl check --kubeconfig FILE [--pre]      # a cluster before installing, or herd in it after
//! herdctl install [--namespace NS] ...         # the Helm chart's manifests, without Helm
//! herdctl identity PROXY-ID [--control ADDR]  # the certificate that proxy presents
//! herdctl certify --identity ADDR --token-file FILE --id SPIFFE-ID
//!                                             # get a certificate as a proxy would; print it
//! herdctl inject FILE|- --trust-anchors FILE  # the injector's patch, offline, on a YAML stream
//! ```
//!
//! Exit codes: 0 when all is well; 64 for a bad flag, an invalid mesh (validate) or a document
//! that is not YAML or a workload without a pod template (inject); 1 when the
//! control plane cannot be reached, a proxy id is unknown (or, for `identity`, has reported no
//! certificate), or `check` finds a problem.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use herd_api::discovery::admin_client::AdminClient;
use herd_api::discovery::{Certificate, HealthRequest, ProxiesRequest, ProxyConfigRequest};
use herd_api::identity::CertifyRequest;
use herd_api::identity::identity_client::IdentityClient;
use herd_control::source::mesh::{MeshDir, read_dir};
use herd_identity::{Keypair, Leaf, SpiffeId, TrustBundle, build_csr, verify_leaf};

const EX_USAGE: u8 = 64;

/// herd's operator CLI.
#[derive(Parser)]
#[command(name = "herdctl", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a mesh file, or every `*.yaml` of a mesh directory together (as herd-control
    /// would merge them), or a proxy's own file.
    Validate { path: PathBuf },
    /// Every proxy connected to the control plane replica at ADDR.
    Stat {
        #[command(flatten)]
        control: ControlAddr,
    },
    /// The routing state a proxy was last sent, as YAML.
    Config {
        proxy_id: String,
        #[command(flatten)]
        control: ControlAddr,
    },
    /// Is the control plane reachable, are its sources healthy, is any proxy stuck on a NACK?
    /// With --kubeconfig: is the cluster ready for herd (--pre), or is herd working in it?
    Check {
        #[command(flatten)]
        control: ControlAddr,
        /// Check a cluster through this kubeconfig instead of a control plane replica.
        #[arg(long, value_name = "FILE")]
        kubeconfig: Option<PathBuf>,
        /// Before installing: the API server's version and native sidecar support only.
        #[arg(long, requires = "kubeconfig")]
        pre: bool,
        /// The namespace herd is installed in.
        #[arg(
            long,
            value_name = "NS",
            default_value = "herd",
            requires = "kubeconfig"
        )]
        namespace: String,
        /// The release name (`helm install NAME`; `herd` for `herdctl install`).
        #[arg(
            long,
            value_name = "NAME",
            default_value = "herd",
            requires = "kubeconfig"
        )]
        release: String,
        /// Where the injector is probed with a dry-run Pod (a namespace it serves).
        #[arg(
            long,
            value_name = "NS",
            default_value = "default",
            requires = "kubeconfig"
        )]
        probe_namespace: String,
    },
    /// Print the Helm chart's objects for `kubectl apply -f -`, without Helm: the chart's
    /// defaults, changed by these flags. A new issuer (an ECDSA P-256 root) is generated unless
    /// --issuer-cert and --issuer-key bring one.
    Install(Install),
    /// The certificate a proxy presents in mutual TLS, as it reported it: SPIFFE ID, serial
    /// (as `openssl x509 -serial` prints it), not-after and the time left.
    Identity {
        proxy_id: String,
        #[command(flatten)]
        control: ControlAddr,
    },
    /// Ask the identity service for a certificate, as a proxy does (a fresh key kept in memory,
    /// a CSR for ID, the token in FILE), and print its SPIFFE ID, serial and expiry: the
    /// operator's smoke test of the CA and of a token. Nothing is written to disk.
    Certify {
        /// The identity service's address (herd-control's `--identity-listen`).
        #[arg(
            long,
            value_name = "ADDR",
            default_value = "127.0.0.1:8080",
            env = "HERD_IDENTITY"
        )]
        identity: String,
        /// A file holding the token (a ServiceAccount token, or a bootstrap token).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// The SPIFFE ID to ask for, `spiffe://TRUST-DOMAIN/ns/NS/sa/SA`.
        #[arg(long, value_name = "SPIFFE-ID")]
        id: String,
    },
    /// Add herd's proxy to the Pods, Deployments, StatefulSets, DaemonSets, Jobs and CronJobs of
    /// a multi-document YAML stream (FILE, or `-` for stdin) as the injector webhook would, and
    /// print the stream; every other document comes out as it went in. What happened to each
    /// workload goes to stderr.
    Inject(InjectArgs),
}

/// `herdctl inject`'s flags: what herd-control's injector flags say in a cluster.
#[derive(clap::Args)]
struct InjectArgs {
    /// The manifests, or `-` for stdin.
    file: String,
    /// The mesh's trust anchors (PEM), written into each proxy's configuration: the CA's trust
    /// bundle, as herd-control's `--trust-bundle` (or `--ca-cert`).
    #[arg(long, value_name = "FILE")]
    trust_anchors: PathBuf,
    /// The image of both injected containers.
    #[arg(long, value_name = "IMAGE", default_value = herd_control::inject::sidecar::DEFAULT_IMAGE)]
    proxy_image: String,
    /// `always`: native sidecars (Kubernetes 1.29 on); `never`: regular ones.
    #[arg(long, value_name = "always|never", default_value = "always")]
    native_sidecars: OfflineSidecars,
    /// herd-control's discovery port, `NAME:PORT`.
    #[arg(long, value_name = "NAME:PORT", default_value = herd_control::inject::sidecar::DEFAULT_CONTROL)]
    injected_control: String,
    /// herd-control's identity port, `NAME:PORT`.
    #[arg(long, value_name = "NAME:PORT", default_value = herd_control::inject::sidecar::DEFAULT_IDENTITY)]
    injected_identity: String,
    #[arg(long, value_name = "NAME", default_value = "cluster.local")]
    trust_domain: String,
    /// Default: `spiffe://TRUST-DOMAIN/ns/herd/sa/herd-control`.
    #[arg(long, value_name = "SPIFFE-ID")]
    control_identity: Option<String>,
    /// The projected ServiceAccount token's audience (herd-control's `--token-audience`).
    #[arg(long, value_name = "AUD", default_value = "herd")]
    token_audience: String,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OfflineSidecars {
    Always,
    Never,
}

#[derive(clap::Args)]
struct Install {
    /// The namespace herd-control runs in (create it first).
    #[arg(long, value_name = "NS", default_value = "herd")]
    namespace: String,
    /// The image with herd's binaries.
    #[arg(long, value_name = "IMAGE")]
    image: Option<String>,
    /// herd-control replicas.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(i32).range(1..))]
    replicas: i32,
    /// The SPIFFE trust domain.
    #[arg(long, value_name = "NAME", default_value = "cluster.local")]
    trust_domain: String,
    /// Proxy certificates' lifetime.
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    certificate_lifetime: String,
    /// The cluster's DNS domain.
    #[arg(long, value_name = "DOMAIN", default_value = "cluster.local")]
    cluster_domain: String,
    /// Namespaces to discover, comma-separated; default all.
    #[arg(long, value_name = "NS,...", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// What the API server does when the injector cannot be reached.
    #[arg(long, value_name = "POLICY", default_value = "Ignore", value_parser = ["Ignore", "Fail"])]
    failure_policy: String,
    /// Injected proxies as native sidecars.
    #[arg(long, value_name = "WHEN", default_value = "auto", value_parser = ["auto", "always", "never"])]
    native_sidecars: String,
    /// A CA certificate (PEM) to use as the issuer, with --issuer-key.
    #[arg(long, value_name = "FILE", requires = "issuer_key")]
    issuer_cert: Option<PathBuf>,
    /// Its key (PKCS#8, or PKCS#1 for RSA).
    #[arg(long, value_name = "FILE", requires = "issuer_cert")]
    issuer_key: Option<PathBuf>,
}

/// `--control ADDR`: a herd-control replica's discovery address.
#[derive(clap::Args)]
struct ControlAddr {
    #[arg(
        long = "control",
        value_name = "ADDR",
        default_value = "127.0.0.1:8086",
        env = "HERD_CONTROL"
    )]
    addr: String,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let text = e.to_string();
            let line = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("herdctl: {}", line.trim_start_matches("error: "));
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Command::Validate { path } => validate(&path),
        Command::Inject(args) => inject(args),
        Command::Stat { control } => remote(stat(control.addr)),
        Command::Config { proxy_id, control } => remote(config(control.addr, proxy_id)),
        Command::Check {
            kubeconfig: Some(kubeconfig),
            pre,
            namespace,
            release,
            probe_namespace,
            ..
        } => {
            let target = herd_control::cluster::Target {
                namespace,
                name: release,
                probe_namespace,
            };
            remote(check_cluster(kubeconfig, pre, target))
        }
        Command::Check { control, .. } => remote(check(control.addr)),
        Command::Install(install) => match install_manifests(install) {
            Ok(yaml) => {
                print!("{yaml}");
                ExitCode::SUCCESS
            }
            Err(line) => {
                eprintln!("herdctl: {line}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Identity { proxy_id, control } => remote(identity(control.addr, proxy_id)),
        Command::Certify {
            identity,
            token_file,
            id,
        } => {
            let id = match SpiffeId::parse(&id) {
                Ok(id) => id,
                Err(e) => {
                    eprintln!("herdctl: --id: {e}");
                    return ExitCode::from(EX_USAGE);
                }
            };
            let token = match std::fs::read_to_string(&token_file) {
                Ok(token) => token.trim().to_owned(),
                Err(e) => {
                    eprintln!("herdctl: --token-file {}: {e}", token_file.display());
                    return ExitCode::from(EX_USAGE);
                }
            };
            remote(certify(identity, token, id))
        }
    }
}

/// A directory: its files merged as herd-control does. A file: a mesh file, or a proxy's own
/// file when it has `proxy:` (herd-proxy --check's rules).
/// `herdctl inject`: the stream on stdout, one line per workload on stderr.
fn inject(args: InjectArgs) -> ExitCode {
    let usage = |line: String| {
        eprintln!("herdctl: {line}");
        ExitCode::from(EX_USAGE)
    };
    let anchors = match std::fs::read_to_string(&args.trust_anchors) {
        Ok(pem) => pem,
        Err(e) => {
            return usage(format!(
                "--trust-anchors {}: {e}",
                args.trust_anchors.display()
            ));
        }
    };
    if let Err(e) = TrustBundle::from_pem(&anchors) {
        return usage(format!(
            "--trust-anchors {}: {e}",
            args.trust_anchors.display()
        ));
    }
    let control_identity = match &args.control_identity {
        Some(id) => match SpiffeId::parse(id) {
            Ok(id) => id,
            Err(e) => return usage(format!("--control-identity: `{id}`: {e}")),
        },
        None => match SpiffeId::kubernetes(&args.trust_domain, "herd", "herd-control") {
            Ok(id) => id,
            Err(e) => return usage(format!("--trust-domain: `{}`: {e}", args.trust_domain)),
        },
    };
    if control_identity.trust_domain() != args.trust_domain {
        return usage(format!(
            "--control-identity: `{control_identity}` is not in the trust domain `{}`",
            args.trust_domain
        ));
    }
    let (text, source) = if args.file == "-" {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            return usage(format!("cannot read stdin: {e}"));
        }
        (text, "-".to_owned())
    } else {
        match std::fs::read_to_string(&args.file) {
            Ok(text) => (text, args.file.clone()),
            Err(e) => return usage(format!("{}: cannot read: {e}", args.file)),
        }
    };
    let settings = herd_control::inject::Settings {
        image: args.proxy_image,
        native_sidecars: matches!(args.native_sidecars, OfflineSidecars::Always),
        control: args.injected_control,
        identity: args.injected_identity,
        trust_domain: args.trust_domain,
        control_identity: control_identity.to_string(),
        token_audience: args.token_audience,
        trust_anchors_pem: anchors,
    };
    match herd_control::inject::manifest::inject(&text, &source, &settings) {
        Ok(injected) => {
            print!("{}", injected.output);
            for report in &injected.reports {
                let level = if report.is_refusal() { "warning: " } else { "" };
                eprintln!("herdctl: {level}{}: {}", report.workload, report.outcome);
            }
            ExitCode::SUCCESS
        }
        Err(e) => usage(e.to_string()),
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    if path.is_dir() {
        let texts = match read_dir(path) {
            Ok(texts) => texts,
            Err(e) => {
                eprintln!("{}: cannot read: {e}", path.display());
                return ExitCode::from(EX_USAGE);
            }
        };
        let files = texts.len();
        let state = MeshDir::new(path).apply(texts);
        for problem in &state.problems {
            println!("{problem}");
        }
        if !state.problems.is_empty() {
            return ExitCode::from(EX_USAGE);
        }
        println!(
            "{}: ok ({files} files, {} services)",
            path.display(),
            state.services.len()
        );
        return ExitCode::SUCCESS;
    }
    let shown = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            println!("{shown}: cannot read: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // A proxy's own file has `proxy:`; a mesh file has only `services:`.
    let own = text.lines().any(|l| l.starts_with("proxy:"));
    let result = if own {
        herd_config::parse(&text, &shown).map(|c| c.services.len())
    } else {
        herd_config::parse_mesh(&text, &shown, None).map(|m| m.services.len())
    };
    match result {
        Ok(services) => {
            println!("{shown}: ok ({services} services)");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("{e}");
            ExitCode::from(EX_USAGE)
        }
    }
}

type Client = AdminClient<tonic::transport::Channel>;

fn remote<F: std::future::Future<Output = Result<bool, String>>>(f: F) -> ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(f) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("herdctl: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn connect(control: &str) -> Result<Client, String> {
    let uri = if control.contains("://") {
        control.to_owned()
    } else {
        format!("http://{control}")
    };
    let endpoint = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| format!("invalid --control {control}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10));
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot reach the control plane at {control}: {e}"))?;
    Ok(AdminClient::new(channel))
}

async fn stat(control: String) -> Result<bool, String> {
    let mut client = connect(&control).await?;
    let proxies = client
        .proxies(ProxiesRequest {})
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner()
        .proxies;
    println!(
        "{:<24} {:<12} {:<18} {:<18} {:>5} {:>8}  WATCHING",
        "ID", "NAMESPACE", "SENT", "ACKED", "NACKS", "AGE"
    );
    for p in &proxies {
        let node = p.node.clone().unwrap_or_default();
        let dash = |s: &str| {
            if s.is_empty() {
                "-".to_owned()
            } else {
                s.to_owned()
            }
        };
        println!(
            "{:<24} {:<12} {:<18} {:<18} {:>5} {:>8}  {}",
            node.id,
            dash(&node.namespace),
            dash(&p.routing_sent),
            dash(&p.routing_acked),
            p.nacks,
            humantime::format_duration(Duration::from_secs(p.connected_seconds)).to_string(),
            p.watching.join(",")
        );
        if p.stuck {
            println!("  refused: {}", p.last_nack);
        }
        if let Some(certificate) = &p.certificate {
            println!(
                "  certificate: {}, not after {}",
                certificate.identity,
                not_after(certificate)
            );
        }
        if !p.tls_identity.is_empty() {
            println!("  connection: mutual TLS as {}", p.tls_identity);
        }
    }
    Ok(true)
}

/// The certificate `id` reported, from the replica it is connected to.
async fn identity(control: String, id: String) -> Result<bool, String> {
    let mut client = connect(&control).await?;
    let proxies = client
        .proxies(ProxiesRequest {})
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner()
        .proxies;
    let proxy = proxies
        .into_iter()
        .find(|p| p.node.as_ref().is_some_and(|n| n.id == id))
        .ok_or_else(|| format!("no proxy `{id}` is connected to this replica"))?;
    let certificate = proxy.certificate.ok_or_else(|| {
        format!("proxy `{id}` has reported no certificate (no proxy.identity, or none issued yet)")
    })?;
    println!("identity   {}", certificate.identity);
    println!("serial     {}", certificate.serial);
    println!("not after  {}", not_after(&certificate));
    if proxy.tls_identity.is_empty() {
        println!("connection plaintext");
    } else {
        println!("connection mutual TLS as {}", proxy.tls_identity);
    }
    Ok(true)
}

/// notAfter in RFC 3339 with the time left (or how long ago it expired).
fn not_after(certificate: &Certificate) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(u64::try_from(certificate.not_after).unwrap_or(0));
    let stamp = humantime::format_rfc3339_seconds(at);
    let whole = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    match at.duration_since(SystemTime::now()) {
        Ok(left) => format!("{stamp} (in {})", whole(left)),
        Err(past) => format!("{stamp} (expired {} ago)", whole(past.duration())),
    }
}

async fn config(control: String, id: String) -> Result<bool, String> {
    let mut client = connect(&control).await?;
    let response = client
        .proxy_config(ProxyConfigRequest { id })
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    println!("# version {}", response.version);
    print!("{}", response.yaml);
    Ok(true)
}

async fn check(control: String) -> Result<bool, String> {
    let mut ok = true;
    let mut client = match connect(&control).await {
        Ok(client) => {
            println!("ok   control plane reachable at {control}");
            client
        }
        Err(e) => {
            println!("FAIL {e}");
            return Ok(false);
        }
    };
    let health = client
        .health(HealthRequest {})
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner();
    for source in &health.sources {
        if !source.synced {
            ok = false;
            println!("FAIL source {} has not synced", source.name);
        } else if source.problems.is_empty() {
            println!("ok   source {} synced", source.name);
        } else {
            ok = false;
            println!(
                "FAIL source {} has problems (last good state serves):",
                source.name
            );
            for problem in &source.problems {
                println!("       {problem}");
            }
        }
    }
    let proxies = client
        .proxies(ProxiesRequest {})
        .await
        .map_err(|s| s.message().to_owned())?
        .into_inner()
        .proxies;
    let stuck: Vec<_> = proxies.iter().filter(|p| p.stuck).collect();
    if stuck.is_empty() {
        println!(
            "ok   {} proxies connected, none stuck on a refused update",
            proxies.len()
        );
    } else {
        ok = false;
        for p in stuck {
            let id = p.node.as_ref().map_or("?", |n| n.id.as_str());
            println!(
                "FAIL proxy {id} refused routing {}: {}",
                p.routing_sent, p.last_nack
            );
        }
    }
    Ok(ok)
}

/// The manifests `herdctl install` prints; the error is one line.
fn install_manifests(install: Install) -> Result<String, String> {
    use herd_control::install::{self, Issuer as Brought, Options};
    SpiffeId::trust_domain_id(&install.trust_domain)
        .map_err(|e| format!("--trust-domain: `{}`: {e}", install.trust_domain))?;
    humantime::parse_duration(&install.certificate_lifetime).map_err(|e| {
        format!(
            "--certificate-lifetime: `{}`: {e}",
            install.certificate_lifetime
        )
    })?;
    let issuer = match (&install.issuer_cert, &install.issuer_key) {
        (Some(cert), Some(key)) => {
            let read = |path: &PathBuf| {
                std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))
            };
            let (cert_pem, key_pem) = (read(cert)?, read(key)?);
            // Refused here, not by herd-control after the install.
            herd_identity::Issuer::from_pem(&cert_pem, &key_pem)
                .map_err(|e| format!("{}, {}: {e}", cert.display(), key.display()))?;
            Brought { cert_pem, key_pem }
        }
        _ => {
            let ten_years = Duration::from_secs(3650 * 86_400);
            let generated = herd_identity::Issuer::generate(&install.trust_domain, ten_years)
                .map_err(|e| format!("cannot generate an issuer: {e}"))?;
            Brought {
                cert_pem: generated.certificate_pem(),
                key_pem: generated.key_pem(),
            }
        }
    };
    let mut options = Options::new(&install.namespace, issuer);
    if let Some(image) = install.image {
        options.image = image;
    }
    options.replicas = install.replicas;
    options.trust_domain = install.trust_domain;
    options.certificate_lifetime = install.certificate_lifetime;
    options.cluster_domain = install.cluster_domain;
    options.namespaces = install.namespaces;
    options.failure_policy = install.failure_policy;
    options.native_sidecars = install.native_sidecars;
    install::to_yaml(&install::objects(&options)).map_err(|e| format!("cannot print: {e}"))
}

/// `herdctl check --kubeconfig`: one line per check, success unless one fails.
async fn check_cluster(
    kubeconfig: PathBuf,
    pre: bool,
    target: herd_control::cluster::Target,
) -> Result<bool, String> {
    use herd_control::cluster::{Level, after, before};
    let file = kube::config::Kubeconfig::read_from(&kubeconfig)
        .map_err(|e| format!("cannot read kubeconfig {}: {e}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .map_err(|e| format!("kubeconfig {}: {e}", kubeconfig.display()))?;
    let client = kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))?;
    let lines = if pre {
        before(&client).await
    } else {
        after(&client, &target).await
    };
    for line in &lines {
        println!("{line}");
    }
    Ok(!lines.iter().any(|l| l.level == Level::Fail))
}

/// A fresh key in memory, a CSR for `id`, the answer checked as a proxy would check it: the
/// leaf names `id` and verifies against the bundle that came with it.
async fn certify(identity: String, token: String, id: SpiffeId) -> Result<bool, String> {
    let key = Keypair::generate().map_err(|e| format!("cannot make a key: {e}"))?;
    let csr = build_csr(&key, &id).map_err(|e| format!("cannot make the CSR: {e}"))?;
    let uri = if identity.contains("://") {
        identity.clone()
    } else {
        format!("http://{identity}")
    };
    let channel = tonic::transport::Endpoint::from_shared(uri)
        .map_err(|e| format!("invalid --identity {identity}: {e}"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("cannot reach the identity service at {identity}: {e}"))?;
    let response = IdentityClient::new(channel)
        .certify(CertifyRequest { csr, token })
        .await
        .map_err(|s| format!("refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    let chain: Vec<_> = response
        .certificate_chain
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
        .collect();
    let roots: Vec<_> = response
        .trust_bundle
        .iter()
        .map(|der| pem::Pem::new("CERTIFICATE", der.clone()))
        .collect();
    let leaf = Leaf::from_pem(&pem::encode_many(&chain))
        .map_err(|e| format!("the answer is not a usable certificate: {e}"))?;
    let bundle = TrustBundle::from_pem(&pem::encode_many(&roots))
        .map_err(|e| format!("the answer's trust bundle: {e}"))?;
    if leaf.id() != &id {
        return Err(format!("the certificate names {}, not {id}", leaf.id()));
    }
    verify_leaf(&bundle, &leaf, std::time::SystemTime::now()).map_err(|e| e.to_string())?;
    let left = leaf
        .not_after()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    println!("identity   {}", leaf.id());
    println!("serial     {}", leaf.serial_hex());
    println!(
        "not after  {} (in {})",
        humantime::format_rfc3339_seconds(leaf.not_after()),
        humantime::format_duration(Duration::from_secs(left.as_secs()))
    );
    println!(
        "chain      {} certificates",
        response.certificate_chain.len()
    );
    println!(
        "bundle     {} roots; the certificate verifies against it",
        bundle.len()
    );
    Ok(true)
}
