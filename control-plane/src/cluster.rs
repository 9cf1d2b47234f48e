//! `herdctl check --kubeconfig`: is a cluster ready for herd (`--pre`), and is herd working in it
//! once installed?
//!
//! Each check prints one `ok`, `warn` or `FAIL` line; only a `FAIL` fails the command. Before
//! installing: the API server's version (the chart needs 1.26) and whether it runs proxies as
//! native sidecars (1.29). After: the same, then the issuer's CA (present, not expiring within
//! 30 days), the webhook configuration (present, trusting that CA), the control plane
//! (Deployment replicas ready), and the injector itself: a Pod marked for injection is created
//! with a server-side dry run, so the API server calls the injector exactly as it will for a real
//! Pod, and the answer must carry the proxy. Nothing is written to the cluster.

use std::time::{Duration, SystemTime};

use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::PostParams;

pub use crate::source::kubernetes::{PROXY_CONTAINER, has_proxy};

/// The oldest Kubernetes the chart supports (`kubeVersion` in Chart.yaml).
const OLDEST: (u32, u32) = (1, 26);
/// Native sidecars (init containers with `restartPolicy: Always`) are on by default from here.
const NATIVE_SIDECARS: (u32, u32) = (1, 29);
/// A CA closer than this to its end is a warning.
const CA_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// Where herd is installed and how to probe it.
pub struct Target {
    /// The namespace herd-control runs in.
    pub namespace: String,
    /// The release's name prefix (`herd` for `helm install herd` and `herdctl install`).
    pub name: String,
    /// Where the dry-run probe Pod is created (a namespace the injector serves).
    pub probe_namespace: String,
}

/// One check's line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub level: Level,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tag = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{tag} {}", self.text)
    }
}

fn line(level: Level, text: impl Into<String>) -> Line {
    Line {
        level,
        text: text.into(),
    }
}

/// `MAJOR.MINOR` of a version string such as `v1.37.2` or `1.29+`; `None` if it is neither.
pub fn major_minor(major: &str, minor: &str) -> Option<(u32, u32)> {
    let digits = |s: &str| -> Option<u32> {
        let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        s[..end].parse().ok()
    };
    Some((digits(major)?, digits(minor)?))
}

/// Before installing: the server's version and native sidecar support.
pub async fn before(client: &kube::Client) -> Vec<Line> {
    match client.apiserver_version().await {
        Ok(info) => match major_minor(&info.major, &info.minor) {
            Some(version) => version_lines(&info.git_version, version),
            None => vec![line(
                Level::Fail,
                format!(
                    "the API server's version `{}` cannot be read",
                    info.git_version
                ),
            )],
        },
        Err(e) => vec![line(
            Level::Fail,
            format!("the API server cannot be reached: {e}"),
        )],
    }
}

/// The lines for a server of `version`.
pub fn version_lines(shown: &str, version: (u32, u32)) -> Vec<Line> {
    let mut lines = Vec::new();
    if version >= OLDEST {
        lines.push(line(
            Level::Ok,
            format!(
                "Kubernetes {shown} (herd needs {}.{} or later)",
                OLDEST.0, OLDEST.1
            ),
        ));
    } else {
        lines.push(line(
            Level::Fail,
            format!(
                "Kubernetes {shown} is older than {}.{}, the oldest herd supports",
                OLDEST.0, OLDEST.1
            ),
        ));
    }
    if version >= NATIVE_SIDECARS {
        lines.push(line(
            Level::Ok,
            "native sidecars: the proxy starts before the app and Jobs finish",
        ));
    } else {
        lines.push(line(
            Level::Warn,
            format!(
                "no native sidecars before Kubernetes {}.{}: the proxy is a regular container the app waits for, and Jobs must call the proxy's /shutdown",
                NATIVE_SIDECARS.0, NATIVE_SIDECARS.1
            ),
        ));
    }
    lines
}

/// After installing: [`before`], then herd's own objects and the injector, end to end.
pub async fn after(client: &kube::Client, target: &Target) -> Vec<Line> {
    let mut lines = before(client).await;
    if lines.iter().any(|l| l.text.contains("cannot be reached")) {
        return lines;
    }
    let ns = target.namespace.as_str();
    let name = |suffix: &str| format!("{}-{suffix}", target.name);

    // The issuer.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let ca = match secrets.get_opt(&name("issuer")).await {
        Ok(Some(secret)) => secret
            .data
            .as_ref()
            .and_then(|d| d.get("ca.crt"))
            .map(|b| b.0.clone()),
        Ok(None) => None,
        Err(e) => {
            lines.push(line(
                Level::Fail,
                format!("cannot read the issuer Secret: {e}"),
            ));
            None
        }
    };
    match &ca {
        Some(pem) => lines.push(ca_line(pem, SystemTime::now())),
        None => lines.push(line(
            Level::Fail,
            format!("no issuer Secret {ns}/{} with ca.crt", name("issuer")),
        )),
    }

    // The webhook configuration trusts that CA.
    let hooks: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    match hooks.get_opt(&name("injector")).await {
        Ok(Some(config)) => {
            let bundle = config
                .webhooks
                .as_ref()
                .and_then(|w| w.first())
                .and_then(|w| w.client_config.ca_bundle.as_ref())
                .map(|b| b.0.clone());
            match (bundle, &ca) {
                (Some(bundle), Some(ca)) if bundle == *ca => lines.push(line(
                    Level::Ok,
                    format!("webhook configuration {} trusts the issuer", name("injector")),
                )),
                (Some(_), Some(_)) => lines.push(line(
                    Level::Fail,
                    format!(
                        "webhook configuration {}: its caBundle is not the issuer's CA (the API server will refuse the injector's certificate)",
                        name("injector")
                    ),
                )),
                _ => lines.push(line(
                    Level::Fail,
                    format!("webhook configuration {} has no caBundle", name("injector")),
                )),
            }
        }
        Ok(None) => lines.push(line(
            Level::Fail,
            format!("no MutatingWebhookConfiguration {}", name("injector")),
        )),
        Err(e) => lines.push(line(
            Level::Fail,
            format!("cannot read the webhook configuration: {e}"),
        )),
    }

    // The control plane's replicas.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    match deployments.get_opt(&name("control")).await {
        Ok(Some(deployment)) => {
            let want = deployment.spec.replicas.unwrap_or(1);
            let ready = deployment
                .status
                .as_ref()
                .and_then(|s| s.ready_replicas)
                .unwrap_or(0);
            let level = if ready == 0 {
                Level::Fail
            } else if ready < want {
                Level::Warn
            } else {
                Level::Ok
            };
            lines.push(line(
                level,
                format!("control plane: {ready} of {want} replicas ready"),
            ));
        }
        Ok(None) => lines.push(line(
            Level::Fail,
            format!("no Deployment {ns}/{}", name("control")),
        )),
        Err(e) => lines.push(line(
            Level::Fail,
            format!("cannot read the control plane's Deployment: {e}"),
        )),
    }

    lines.push(probe_injector(client, &target.probe_namespace).await);
    lines
}

/// How the CA in `pem` stands at `now`.
pub fn ca_line(pem: &[u8], now: SystemTime) -> Line {
    let text = String::from_utf8_lossy(pem);
    let Some(der) = pem::parse(text.as_bytes())
        .ok()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.contents().to_vec())
    else {
        return line(Level::Fail, "the issuer's ca.crt is not a PEM certificate");
    };
    let der = rustls::pki_types::CertificateDer::from(der);
    match herd_identity::svid::not_after_of(&der) {
        Ok(not_after) => {
            let shown = humantime::format_rfc3339_seconds(not_after);
            match not_after.duration_since(now) {
                Err(_) => line(
                    Level::Fail,
                    format!("the issuer's CA expired at {shown}: no proxy can be certified"),
                ),
                Ok(left) if left < CA_WARNING => line(
                    Level::Warn,
                    format!(
                        "the issuer's CA expires at {shown}, in {}: rotate it (README: Rotating the CA)",
                        humantime::format_duration(Duration::from_secs(left.as_secs()))
                    ),
                ),
                Ok(left) => line(
                    Level::Ok,
                    format!(
                        "issuer CA valid until {shown} ({} days left)",
                        left.as_secs() / 86_400
                    ),
                ),
            }
        }
        Err(e) => line(Level::Fail, format!("the issuer's ca.crt: {e}")),
    }
}

/// A Pod marked for injection, created with a server-side dry run: the API server calls the
/// injector as for a real Pod and returns what admission made of it, without storing it.
async fn probe_injector(client: &kube::Client, namespace: &str) -> Line {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let probe = Pod {
        metadata: ObjectMeta {
            generate_name: Some("herd-check-".into()),
            annotations: Some([("herd.io/inject".to_owned(), "enabled".to_owned())].into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("registry.k8s.io/pause:3.10".into()),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    let params = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match pods.create(&params, &probe).await {
        Ok(pod) if has_proxy(&pod) => line(
            Level::Ok,
            format!("injector: a dry-run Pod in {namespace} came back with the proxy"),
        ),
        Ok(_) => line(
            Level::Fail,
            format!(
                "injector: a dry-run Pod in {namespace} came back without the proxy (the injector is unreachable and failurePolicy is Ignore, or the namespace is excluded)"
            ),
        ),
        Err(e) => line(
            Level::Fail,
            format!("injector: a dry-run Pod in {namespace} was refused: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests;
