//! What the injector adds to a pod: two containers, one volume, and the proxy's configuration.
//!
//! - `herd-init`, an init container that runs `herd-proxy init` once: iptables rules sending
//!   the pod's inbound TCP to the proxy's inbound port (4143) and its outbound TCP to the
//!   outbound port (4140), except the proxy's own (uid 2102), the admin port (4191, so the
//!   kubelet's probes reach the proxy itself) and the ports the pod's annotations skip. It needs
//!   `NET_ADMIN` and `NET_RAW` and runs as root, and only it does. Its flags are `herd-proxy
//!   init`'s (README "herd-proxy init").
//! - `herd-proxy`, the proxy, as uid 2102 with nothing else: no capabilities, a read-only root
//!   file system. It is a **native sidecar** where the API server supports it (1.29 on: an init
//!   container with `restartPolicy: Always`, started after `herd-init` and before every other
//!   container, other init containers included, and stopped after the app, so a Job finishes
//!   when its app does); its `startupProbe` on `/ready` holds the next container until the
//!   proxy has its certificate and first state. Elsewhere it is the first regular container,
//!   and its `postStart` hook (`GET /ready?wait=120s`) holds the app's start until the proxy is
//!   ready: the kubelet starts containers in order and waits for each hook. There, `herd-init`
//!   runs after the pod's own init containers (which so keep their network: no proxy runs yet
//!   to carry their traffic), and a Job's app must `POST /shutdown` to the admin port when it is
//!   done, or the pod never completes.
//! - The projected ServiceAccount token (volume `herd-identity-token`, audience
//!   `--token-audience`, default `herd`), mounted in the proxy only: what proves the pod's
//!   identity to herd-control's identity service.
//! - The proxy's whole configuration in `HERD_PROXY_CONFIG_YAML`: transparent inbound and
//!   outbound listeners on `[::]` (both families), the admin port, `proxy.control` and `proxy.identity` pointing at
//!   herd-control with the mesh's trust anchors written in. Nothing there depends on the pod's
//!   name or namespace as the injector sees them (a Deployment's pods are named after
//!   admission, and `herdctl inject` sees no namespace at all): the pod's name, namespace and
//!   ServiceAccount come from the downward API (`HERD_POD_NAME`, `HERD_POD_NAMESPACE`,
//!   `HERD_POD_SERVICE_ACCOUNT`) and the configuration names them as `$(HERD_POD_NAME)`, which
//!   the kubelet replaces when it starts the container (Kubernetes' dependent environment
//!   variables: a `$(VAR)` naming a variable defined earlier in the list).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Lifecycle,
    LifecycleHandler, ObjectFieldSelector, Probe, ProjectedVolumeSource, ResourceRequirements,
    SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::annotations::{Shape, port_list_text};

/// The proxy container's name: herd-control's Kubernetes source calls a pod with a container
/// (or init container) of this name meshed.
pub const PROXY: &str = crate::source::kubernetes::PROXY_CONTAINER;
/// The image injected by default: this release's proxy.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/herd-mesh/herd-proxy:", env!("CARGO_PKG_VERSION"));
/// Where injected proxies find herd-control by default: every replica through the headless
/// Service the chart (release `herd`, namespace `herd`) makes, in the default cluster domain.
pub const DEFAULT_CONTROL: &str = "herd-control-headless.herd.svc.cluster.local:8086";
pub const DEFAULT_IDENTITY: &str = "herd-control-headless.herd.svc.cluster.local:8080";

/// [`DEFAULT_CONTROL`] and [`DEFAULT_IDENTITY`] in cluster domain `domain`.
pub fn default_targets(domain: &str) -> (String, String) {
    let host = format!("herd-control-headless.herd.svc.{domain}");
    (format!("{host}:8086"), format!("{host}:8080"))
}
/// The init container's name.
pub const INIT: &str = "herd-init";
/// The token volume's name.
pub const TOKEN_VOLUME: &str = "herd-identity-token";
/// Where the token volume is mounted in the proxy.
pub const TOKEN_DIR: &str = "/var/run/secrets/herd.io/identity";

pub const INBOUND_PORT: u16 = 4143;
pub const OUTBOUND_PORT: u16 = 4140;
pub const ADMIN_PORT: u16 = 4191;
/// The proxy's uid: its own traffic is never redirected.
pub const PROXY_UID: i64 = 2102;
/// herd's ports in the pod's network namespace: an app container that declares one would
/// fight the proxy for it.
pub const PORTS: [u16; 3] = [INBOUND_PORT, OUTBOUND_PORT, ADMIN_PORT];

/// The variables the proxy's environment holds, in order (a `$(VAR)` may only name one defined
/// before it).
pub const POD_NAME: &str = "HERD_POD_NAME";
pub const POD_NAMESPACE: &str = "HERD_POD_NAMESPACE";
pub const POD_SERVICE_ACCOUNT: &str = "HERD_POD_SERVICE_ACCOUNT";
pub const CONFIG_YAML: &str = "HERD_PROXY_CONFIG_YAML";

/// How long the regular sidecar's `postStart` hook waits for `/ready`.
const POST_START_WAIT: &str = "120s";
/// The projected token's lifetime; the kubelet renews it at 80 %.
const TOKEN_SECONDS: i64 = 24 * 60 * 60;

/// What every injected pod gets, the same for all (herd-control's flags, or herdctl's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The image of both containers; it must have `herd-proxy` on its `PATH`.
    pub image: String,
    /// A native sidecar (an init container with `restartPolicy: Always`) or a regular one.
    pub native_sidecars: bool,
    /// Where the proxy takes its routing from: `NAME:PORT` (`proxy.control.dns`).
    pub control: String,
    /// Where the proxy gets its certificate: `NAME:PORT` (`proxy.identity.dns`).
    pub identity: String,
    /// The SPIFFE trust domain: the proxy asks for
    /// `spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT`.
    pub trust_domain: String,
    /// The identity herd-control presents (`proxy.identity.controlIdentity`).
    pub control_identity: String,
    /// The projected token's audience (herd-control's `--token-audience`).
    pub token_audience: String,
    /// The mesh's roots, PEM, written into the configuration (`trustAnchorsPem`).
    pub trust_anchors_pem: String,
}

/// The `herd-init` container.
pub fn init_container(settings: &Settings, shape: &Shape) -> Container {
    // The admin port is never redirected inbound (init's --admin-port), so the kubelet's probes
    // and Prometheus reach the proxy itself.
    let mut args: Vec<String> = [
        "init",
        "--inbound-port",
        &INBOUND_PORT.to_string(),
        "--outbound-port",
        &OUTBOUND_PORT.to_string(),
        "--admin-port",
        &ADMIN_PORT.to_string(),
        "--proxy-uid",
        &PROXY_UID.to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    for (flag, list) in [
        ("--skip-inbound-ports", &shape.skip_inbound_ports),
        ("--skip-outbound-ports", &shape.skip_outbound_ports),
    ] {
        if !list.is_empty() {
            args.push(flag.into());
            args.push(port_list_text(list));
        }
    }
    Container {
        name: INIT.into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["herd-proxy".into()]),
        args: Some(args),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: Some(vec!["NET_ADMIN".into(), "NET_RAW".into()]),
                drop: Some(vec!["ALL".into()]),
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The `herd-proxy` container, native sidecar or regular per `settings`.
pub fn proxy_container(settings: &Settings, shape: &Shape) -> Container {
    let get = |path: &str| HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(ADMIN_PORT.into()),
        ..HTTPGetAction::default()
    };
    let field = |path: &str| {
        Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        })
    };
    let env = vec![
        EnvVar {
            name: POD_NAME.into(),
            value_from: field("metadata.name"),
            ..EnvVar::default()
        },
        EnvVar {
            name: POD_NAMESPACE.into(),
            value_from: field("metadata.namespace"),
            ..EnvVar::default()
        },
        EnvVar {
            name: POD_SERVICE_ACCOUNT.into(),
            value_from: field("spec.serviceAccountName"),
            ..EnvVar::default()
        },
        EnvVar {
            name: CONFIG_YAML.into(),
            value: Some(bootstrap(settings, shape)),
            ..EnvVar::default()
        },
    ];
    let mut limits = BTreeMap::new();
    if let Some(cpu) = &shape.cpu_limit {
        limits.insert("cpu".to_owned(), Quantity(cpu.clone()));
    }
    if let Some(memory) = &shape.memory_limit {
        limits.insert("memory".to_owned(), Quantity(memory.clone()));
    }
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.into()),
        container_port: port.into(),
        ..ContainerPort::default()
    };
    let mut container = Container {
        name: PROXY.into(),
        image: Some(settings.image.clone()),
        command: Some(vec!["herd-proxy".into()]),
        env: Some(env),
        ports: Some(vec![
            port("herd-inbound", INBOUND_PORT),
            port("herd-admin", ADMIN_PORT),
        ]),
        liveness_probe: Some(Probe {
            http_get: Some(get("/live")),
            period_seconds: Some(10),
            ..Probe::default()
        }),
        readiness_probe: Some(Probe {
            http_get: Some(get("/ready")),
            period_seconds: Some(2),
            ..Probe::default()
        }),
        resources: (!limits.is_empty()).then(|| ResourceRequirements {
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_user: Some(PROXY_UID),
            run_as_group: Some(PROXY_UID),
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![VolumeMount {
            name: TOKEN_VOLUME.into(),
            mount_path: TOKEN_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        }]),
        ..Container::default()
    };
    if settings.native_sidecars {
        container.restart_policy = Some("Always".into());
        // The next container starts once this succeeds: the proxy can carry traffic.
        container.startup_probe = Some(Probe {
            http_get: Some(get("/ready")),
            period_seconds: Some(1),
            failure_threshold: Some(300),
            ..Probe::default()
        });
    } else {
        container.lifecycle = Some(Lifecycle {
            post_start: Some(LifecycleHandler {
                http_get: Some(get(&format!("/ready?wait={POST_START_WAIT}"))),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        });
    }
    container
}

/// The projected token volume.
pub fn token_volume(settings: &Settings) -> Volume {
    Volume {
        name: TOKEN_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(vec![VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    audience: Some(settings.token_audience.clone()),
                    expiration_seconds: Some(TOKEN_SECONDS),
                    path: "token".into(),
                    ..ServiceAccountTokenProjection::default()
                }),
                ..VolumeProjection::default()
            }]),
            ..ProjectedVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// The proxy's configuration (see the module doc). Both listeners are transparent: inbound, a
/// redirected connection goes to the app at the pod's address and the port the client chose,
/// so every port of the app is meshed without listing them (no `app`); `[::]` takes both
/// families (REDIRECT hands inbound traffic to the pod's own address, outbound to loopback).
pub fn bootstrap(settings: &Settings, shape: &Shape) -> String {
    let opaque = if shape.opaque_ports.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = shape
            .opaque_ports
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect();
        format!("    opaquePorts: [{}]\n", list.join(", "))
    };
    let anchors: String = settings
        .trust_anchors_pem
        .lines()
        .map(|line| format!("      {line}\n"))
        .collect();
    format!(
        "# Written by herd's injector. The kubelet fills in the pod's name, namespace and account.
proxy:
  inbound:
    listen: \"[::]:{INBOUND_PORT}\"
    transparent: true
{opaque}  outbound:
    listen: \"[::]:{OUTBOUND_PORT}\"
    transparent: true
  admin:
    listen: \"[::]:{ADMIN_PORT}\"
  control:
    dns: {control}
    id: $({POD_NAME})
    namespace: $({POD_NAMESPACE})
  identity:
    dns: {identity}
    id: spiffe://{trust_domain}/ns/$({POD_NAMESPACE})/sa/$({POD_SERVICE_ACCOUNT})
    tokenFile: {TOKEN_DIR}/token
    controlIdentity: {control_identity}
    trustAnchorsPem: |
{anchors}",
        control = settings.control,
        identity = settings.identity,
        trust_domain = settings.trust_domain,
        control_identity = settings.control_identity,
    )
}
