//! `herdctl install`: the Helm chart's objects without Helm.
//!
//! The same objects `helm template herd charts/herd --namespace NS` renders with the chart's
//! default values (the release named `herd`), built as typed k8s-openapi objects rather than
//! templated text, so a field the API does not have is a compile error here, not a server
//! refusal at install time. A test renders both and compares them object by object, so the two
//! cannot drift apart. What differs is what must: the labels say `herdctl` manages them, and a
//! generated issuer is an ECDSA P-256 root made by herd-identity (Helm's `genCA` makes RSA).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    HTTPGetAction, PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, Secret, SecretVolumeSource, SecurityContext,
    Service, ServiceAccount, ServicePort, ServiceSpec, Volume, VolumeMount,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;

/// The chart's version, which `herdctl install` mirrors.
pub const APP_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The project's Grafana dashboard, the chart's `dashboards/herd.json`.
const DASHBOARD: &str = include_str!("../../charts/herd/dashboards/herd.json");

const DISCOVERY: i32 = 8086;
const IDENTITY: i32 = 8080;
const WEBHOOK: i32 = 8443;
const ADMIN: i32 = 9990;

/// What `herdctl install` is told; the defaults are the chart's values.
#[derive(Clone, Debug)]
pub struct Options {
    pub namespace: String,
    /// `REPOSITORY:TAG` of the image with herd's binaries.
    pub image: String,
    pub replicas: i32,
    pub trust_domain: String,
    pub certificate_lifetime: String,
    pub token_audience: String,
    pub cluster_domain: String,
    /// Namespaces to discover; empty: all.
    pub namespaces: Vec<String>,
    /// `Ignore` or `Fail`.
    pub failure_policy: String,
    /// `auto`, `always` or `never`.
    pub native_sidecars: String,
    /// The issuer: the CA certificate and key (PEM).
    pub issuer: Issuer,
}

/// The CA the Secret holds.
#[derive(Clone, Debug)]
pub struct Issuer {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Options {
    /// The chart's defaults in `namespace`, with `issuer`.
    pub fn new(namespace: &str, issuer: Issuer) -> Options {
        Options {
            namespace: namespace.to_owned(),
            image: format!("ghcr.io/herd-mesh/herd:{APP_VERSION}"),
            replicas: 2,
            trust_domain: "cluster.local".into(),
            certificate_lifetime: "24h".into(),
            token_audience: "herd".into(),
            cluster_domain: "cluster.local".into(),
            namespaces: Vec::new(),
            failure_policy: "Ignore".into(),
            native_sidecars: "auto".into(),
            issuer,
        }
    }
}

/// One object of the installation, ready to print.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Object {
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    Secret(Box<Secret>),
    ConfigMap(Box<ConfigMap>),
    Deployment(Box<Deployment>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    Service(Box<Service>),
    MutatingWebhookConfiguration(Box<MutatingWebhookConfiguration>),
}

const CONTROL: &str = "herd-control";

fn labels(component: Option<&str>) -> BTreeMap<String, String> {
    let mut labels: BTreeMap<String, String> = [
        ("app.kubernetes.io/name", "herd"),
        ("app.kubernetes.io/instance", "herd"),
        ("app.kubernetes.io/version", APP_VERSION),
        ("app.kubernetes.io/managed-by", "herdctl"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(component) = component {
        labels.insert("app.kubernetes.io/component".into(), component.into());
    }
    labels
}

fn selector() -> BTreeMap<String, String> {
    [
        ("app.kubernetes.io/name", "herd"),
        ("app.kubernetes.io/instance", "herd"),
        ("app.kubernetes.io/component", "control-plane"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

fn meta(name: &str, namespace: Option<&str>, component: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: Some(labels(component)),
        ..ObjectMeta::default()
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Every object, in the order they are best applied (what others refer to first).
pub fn objects(o: &Options) -> Vec<Object> {
    let ns = o.namespace.as_str();
    vec![
        Object::ServiceAccount(Box::new(ServiceAccount {
            metadata: meta(CONTROL, Some(ns), Some("control-plane")),
            ..ServiceAccount::default()
        })),
        Object::ClusterRole(Box::new(cluster_role())),
        Object::ClusterRoleBinding(Box::new(ClusterRoleBinding {
            metadata: meta(CONTROL, None, Some("control-plane")),
            role_ref: RoleRef {
                api_group: Some("rbac.authorization.k8s.io".into()),
                kind: "ClusterRole".into(),
                name: CONTROL.into(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".into(),
                name: CONTROL.into(),
                namespace: Some(ns.into()),
                ..Subject::default()
            }]),
        })),
        Object::Secret(Box::new(issuer_secret(o))),
        Object::ConfigMap(Box::new(ConfigMap {
            metadata: meta("herd-trust-anchors", Some(ns), Some("identity")),
            data: Some(BTreeMap::from([(
                "bundle.pem".to_owned(),
                format!("{}\n", o.issuer.cert_pem.trim()),
            )])),
            ..ConfigMap::default()
        })),
        Object::ConfigMap(Box::new(dashboard(ns))),
        Object::Deployment(Box::new(deployment(o))),
        Object::PodDisruptionBudget(Box::new(PodDisruptionBudget {
            metadata: meta(CONTROL, Some(ns), Some("control-plane")),
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(1)),
                selector: Some(LabelSelector {
                    match_labels: Some(selector()),
                    ..LabelSelector::default()
                }),
                ..PodDisruptionBudgetSpec::default()
            }),
            ..PodDisruptionBudget::default()
        })),
        Object::Service(Box::new(service(ns, false))),
        Object::Service(Box::new(service(ns, true))),
        Object::MutatingWebhookConfiguration(Box::new(webhook(o))),
    ]
}

fn cluster_role() -> ClusterRole {
    let rule = |groups: &[&str], resources: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: Some(strings(groups)),
        resources: Some(strings(resources)),
        verbs: strings(verbs),
        ..PolicyRule::default()
    };
    let read = ["get", "list", "watch"];
    ClusterRole {
        metadata: meta(CONTROL, None, Some("control-plane")),
        rules: Some(vec![
            rule(&[""], &["services", "pods"], &read),
            rule(&["discovery.k8s.io"], &["endpointslices"], &read),
            rule(&[""], &["namespaces"], &read),
            rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
        ]),
        ..ClusterRole::default()
    }
}

fn issuer_secret(o: &Options) -> Secret {
    let mut metadata = meta("herd-issuer", Some(&o.namespace), Some("identity"));
    metadata.annotations = Some(BTreeMap::from([(
        "helm.sh/resource-policy".to_owned(),
        "keep".to_owned(),
    )]));
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            (
                "ca.crt".to_owned(),
                ByteString(o.issuer.cert_pem.clone().into_bytes()),
            ),
            (
                "ca.key".to_owned(),
                ByteString(o.issuer.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

fn dashboard(ns: &str) -> ConfigMap {
    let mut metadata = meta("herd-dashboard", Some(ns), None);
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert("grafana_dashboard".into(), "1".into());
    ConfigMap {
        metadata,
        data: Some(BTreeMap::from([(
            "herd.json".to_owned(),
            DASHBOARD.trim_end().to_owned(),
        )])),
        ..ConfigMap::default()
    }
}

fn deployment(o: &Options) -> Deployment {
    let ns = o.namespace.as_str();
    let mut args = vec!["--kubernetes".to_owned()];
    if !o.namespaces.is_empty() {
        args.push(format!("--namespaces={}", o.namespaces.join(",")));
    }
    args.extend([
        format!("--cluster-domain={}", o.cluster_domain),
        format!("--discovery-listen=0.0.0.0:{DISCOVERY}"),
        format!("--identity-listen=0.0.0.0:{IDENTITY}"),
        format!("--admin-listen=0.0.0.0:{ADMIN}"),
        format!("--trust-domain={}", o.trust_domain),
        "--ca-cert=/var/run/herd/issuer/ca.crt".into(),
        "--ca-key=/var/run/herd/issuer/ca.key".into(),
        "--trust-bundle=/var/run/herd/trust-anchors/bundle.pem".into(),
        format!("--identity-lifetime={}", o.certificate_lifetime),
        format!("--token-audience={}", o.token_audience),
        format!(
            "--control-identity=spiffe://{}/ns/{ns}/sa/{CONTROL}",
            o.trust_domain
        ),
        format!("--webhook-listen=0.0.0.0:{WEBHOOK}"),
        format!("--webhook-dns-names={CONTROL}.{ns}.svc"),
        format!("--proxy-image={}", o.image),
        format!("--native-sidecars={}", o.native_sidecars),
        format!(
            "--injected-control={CONTROL}-headless.{ns}.svc.{}:{DISCOVERY}",
            o.cluster_domain
        ),
        format!(
            "--injected-identity={CONTROL}-headless.{ns}.svc.{}:{IDENTITY}",
            o.cluster_domain
        ),
    ]);
    let port = |name: &str, number: i32| ContainerPort {
        name: Some(name.into()),
        container_port: number,
        ..ContainerPort::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Probe::default()
    };
    let mount = |name: &str, path: &str| VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(true),
        ..VolumeMount::default()
    };
    let container = Container {
        name: "herd-control".into(),
        image: Some(o.image.clone()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(strings(&["herd-control"])),
        args: Some(args),
        env: Some(vec![
            EnvVar {
                name: "HERD_LOG".into(),
                value: Some("info".into()),
                ..EnvVar::default()
            },
            EnvVar {
                name: "HERD_LOG_FORMAT".into(),
                value: Some("json".into()),
                ..EnvVar::default()
            },
        ]),
        ports: Some(vec![
            port("discovery", DISCOVERY),
            port("identity", IDENTITY),
            port("webhook", WEBHOOK),
            port("admin", ADMIN),
        ]),
        liveness_probe: Some(probe("/live", 10, 3)),
        readiness_probe: Some(probe("/ready", 5, 2)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("100m".into())),
                ("memory".to_owned(), Quantity("128Mi".into())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("1Gi".into()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(strings(&["ALL"])),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount("issuer", "/var/run/herd/issuer"),
            mount("trust-anchors", "/var/run/herd/trust-anchors"),
        ]),
        ..Container::default()
    };
    Deployment {
        metadata: meta(CONTROL, Some(ns), Some("control-plane")),
        spec: DeploymentSpec {
            replicas: Some(o.replicas),
            selector: LabelSelector {
                match_labels: Some(selector()),
                ..LabelSelector::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector()),
                    annotations: Some(BTreeMap::from([(
                        "herd.io/inject".to_owned(),
                        "disabled".to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    service_account_name: Some(CONTROL.into()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(2103),
                        run_as_group: Some(2103),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    affinity: Some(Affinity {
                        pod_anti_affinity: Some(PodAntiAffinity {
                            preferred_during_scheduling_ignored_during_execution: Some(vec![
                                WeightedPodAffinityTerm {
                                    weight: 100,
                                    pod_affinity_term: PodAffinityTerm {
                                        topology_key: "kubernetes.io/hostname".into(),
                                        label_selector: Some(LabelSelector {
                                            match_labels: Some(selector()),
                                            ..LabelSelector::default()
                                        }),
                                        ..PodAffinityTerm::default()
                                    },
                                },
                            ]),
                            ..PodAntiAffinity::default()
                        }),
                        ..Affinity::default()
                    }),
                    containers: vec![container],
                    volumes: Some(vec![
                        Volume {
                            name: "issuer".into(),
                            secret: Some(SecretVolumeSource {
                                secret_name: Some("herd-issuer".into()),
                                ..SecretVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                        Volume {
                            name: "trust-anchors".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: "herd-trust-anchors".into(),
                                ..ConfigMapVolumeSource::default()
                            }),
                            ..Volume::default()
                        },
                    ]),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        },
        ..Deployment::default()
    }
}

fn service(ns: &str, headless: bool) -> Service {
    let port = |name: &str, number: i32, target: &str, protocol: Option<&str>| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(target.into())),
        app_protocol: protocol.map(str::to_owned),
        ..ServicePort::default()
    };
    let (name, cluster_ip, ports) = if headless {
        (
            format!("{CONTROL}-headless"),
            Some("None".to_owned()),
            vec![
                port("grpc-discovery", DISCOVERY, "discovery", None),
                port("grpc-identity", IDENTITY, "identity", None),
            ],
        )
    } else {
        (
            CONTROL.to_owned(),
            None,
            vec![
                port(
                    "grpc-discovery",
                    DISCOVERY,
                    "discovery",
                    Some("kubernetes.io/h2c"),
                ),
                port("grpc-identity", IDENTITY, "identity", None),
                port("https-webhook", 443, "webhook", None),
                port("http-admin", ADMIN, "admin", None),
            ],
        )
    };
    Service {
        metadata: meta(&name, Some(ns), Some("control-plane")),
        spec: Some(ServiceSpec {
            cluster_ip,
            selector: Some(selector()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn webhook(o: &Options) -> MutatingWebhookConfiguration {
    let mut excluded = vec![o.namespace.clone()];
    excluded.extend(strings(&["kube-system", "kube-public", "kube-node-lease"]));
    MutatingWebhookConfiguration {
        metadata: meta("herd-injector", None, Some("injector")),
        webhooks: Some(vec![MutatingWebhook {
            name: "inject.herd.io".into(),
            admission_review_versions: strings(&["v1"]),
            side_effects: "None".into(),
            failure_policy: Some(o.failure_policy.clone()),
            timeout_seconds: Some(10),
            reinvocation_policy: Some("IfNeeded".into()),
            client_config: WebhookClientConfig {
                service: Some(ServiceReference {
                    name: CONTROL.into(),
                    namespace: o.namespace.clone(),
                    path: Some("/inject".into()),
                    port: Some(443),
                }),
                ca_bundle: Some(ByteString(o.issuer.cert_pem.clone().into_bytes())),
                ..WebhookClientConfig::default()
            },
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(strings(&[""])),
                api_versions: Some(strings(&["v1"])),
                operations: Some(strings(&["CREATE"])),
                resources: Some(strings(&["pods"])),
                scope: Some("Namespaced".into()),
            }]),
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".into(),
                    operator: "NotIn".into(),
                    values: Some(excluded),
                }]),
                ..LabelSelector::default()
            }),
            ..MutatingWebhook::default()
        }]),
    }
}

/// The objects as one YAML stream (k8s-openapi writes each one's `apiVersion` and `kind`).
pub fn to_yaml(objects: &[Object]) -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for object in objects {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(object)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
