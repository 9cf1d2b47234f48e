//! The decision for one pod template, and the JSON Patch (RFC 6902) that carries it out.
//!
//! [`plan`] takes the template as JSON (a Pod, or a workload's `spec.template`: both are
//! `{metadata, spec}`) and reads it as k8s-openapi's typed `PodTemplateSpec`, so a field of the
//! wrong type is a refusal rather than a guess. In order:
//!
//! 1. is injection asked for? The pod's `herd.io/inject` wins, else the namespace's; neither
//!    `enabled`: [`Decision::NotWanted`];
//! 2. is it injected already? Both `herd-init` and `herd-proxy` present (wherever the native or
//!    regular shape put them): [`Decision::AlreadyInjected`], so injecting twice (the webhook
//!    after `herdctl inject`, a re-applied pod) changes nothing;
//! 3. can it be patched? Otherwise [`Decision::Refused`] with the reason: one of herd's
//!    containers or its volume without the rest (a layout herd did not make), no containers,
//!    `hostNetwork` (the init container's iptables rules would rewrite the node's traffic), a
//!    container declaring one of herd's ports (4143, 4140, 4191), an app running as the proxy's
//!    uid (its traffic would bypass the proxy), an annotation herd cannot read;
//! 4. [`Decision::Inject`] with `add` operations only: the containers (see `sidecar`), the
//!    token volume, the label `herd.io/meshed: "true"` (what a PodMonitor selects) and the
//!    `prometheus.io/scrape|port|path` annotations for the proxy's admin port (unless the pod
//!    has `prometheus.io/*` annotations of its own, which are left alone).
//!
//! Paths are relative to the template; [`Decision::Inject`]'s operations are rebased with
//! [`rebase`] for a workload (`/spec/template`), and [`apply`] carries them out on a JSON value
//! (what `herdctl inject` does, and what the API server does with the webhook's answer).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::annotations::{INJECT, Shape, Wanted, quote};
use super::sidecar::{self, ADMIN_PORT, INIT, PORTS, PROXY, PROXY_UID, Settings, TOKEN_VOLUME};

/// The label an injected pod carries.
pub const MESHED_LABEL: &str = "herd.io/meshed";

/// One JSON Patch operation; the injector only ever adds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Op {
    pub op: &'static str,
    pub path: String,
    pub value: Value,
}

impl Op {
    fn add(path: impl Into<String>, value: Value) -> Op {
        Op {
            op: "add",
            path: path.into(),
            value,
        }
    }
}

/// What to do with a pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Add the proxy with these operations.
    Inject(Vec<Op>),
    /// The proxy is there already.
    AlreadyInjected,
    /// Injection was not asked for (or the pod opted out): the reason, for logs.
    NotWanted(&'static str),
    /// Asked for, but herd cannot patch this pod: the warning.
    Refused(String),
}

/// Decides for `template` (`{metadata, spec}` as JSON); `namespace` is what its namespace's
/// `herd.io/inject` says, if anything.
pub fn plan(template: &Value, namespace: Option<&str>, settings: &Settings) -> Decision {
    let annotations = string_map(template.pointer("/metadata/annotations"));
    let wanted = match annotations.get(INJECT) {
        Some(value) => match Wanted::parse(value) {
            Ok(wanted) => wanted,
            Err(message) => return Decision::Refused(message),
        },
        None => match namespace.map(Wanted::parse) {
            Some(Ok(wanted)) => wanted,
            Some(Err(message)) => return Decision::Refused(format!("the namespace's {message}")),
            None => Wanted::Disabled,
        },
    };
    if wanted == Wanted::Disabled {
        return Decision::NotWanted(if annotations.contains_key(INJECT) {
            "the pod says herd.io/inject: disabled"
        } else {
            "neither the pod nor its namespace says herd.io/inject: enabled"
        });
    }
    let typed: PodTemplateSpec = match serde_json::from_value(template.clone()) {
        Ok(typed) => typed,
        Err(e) => return Decision::Refused(format!("the pod spec is not readable: {e}")),
    };
    let Some(spec) = typed.spec.as_ref() else {
        return Decision::Refused("the pod has no spec".into());
    };
    match layout(spec) {
        Layout::Injected => return Decision::AlreadyInjected,
        Layout::Unknown(why) => {
            return Decision::Refused(format!("unknown container layout: {why}"));
        }
        Layout::Plain => {}
    }
    if let Some(why) = unpatchable(spec) {
        return Decision::Refused(why);
    }
    let shape = match Shape::read(&annotations) {
        Ok(shape) => shape,
        Err(message) => return Decision::Refused(message),
    };
    Decision::Inject(operations(template, spec, &annotations, &shape, settings))
}

enum Layout {
    /// Neither herd container nor volume.
    Plain,
    /// Both containers.
    Injected,
    /// Some of herd's names without the rest.
    Unknown(String),
}

fn layout(spec: &PodSpec) -> Layout {
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    let all: Vec<&Container> = init_containers.iter().chain(&spec.containers).collect();
    let has = |name: &str| all.iter().any(|c| c.name == name);
    let volume = spec
        .volumes
        .as_deref()
        .unwrap_or_default()
        .iter()
        .any(|v| v.name == TOKEN_VOLUME);
    match (has(INIT), has(PROXY), volume) {
        (true, true, _) => Layout::Injected,
        (false, false, false) => Layout::Plain,
        (init, proxy, volume) => {
            let present: Vec<&str> = [(init, INIT), (proxy, PROXY), (volume, TOKEN_VOLUME)]
                .iter()
                .filter(|(here, _)| *here)
                .map(|(_, name)| *name)
                .collect();
            Layout::Unknown(format!(
                "the pod has {} but not the rest of herd's sidecar",
                present.join(" and ")
            ))
        }
    }
}

/// Why herd cannot patch `spec`, if it cannot (see the module doc).
fn unpatchable(spec: &PodSpec) -> Option<String> {
    if spec.containers.is_empty() {
        return Some("the pod has no containers".into());
    }
    if spec.host_network == Some(true) {
        return Some(
            "the pod uses hostNetwork: herd's iptables rules would redirect the node's traffic"
                .into(),
        );
    }
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    for container in init_containers.iter().chain(&spec.containers) {
        for port in container.ports.as_deref().unwrap_or_default() {
            if PORTS.iter().any(|p| i32::from(*p) == port.container_port) {
                return Some(format!(
                    "port clash: container {} declares port {}, which herd's proxy uses \
                     (4143 inbound, 4140 outbound, 4191 admin)",
                    quote(&container.name),
                    port.container_port
                ));
            }
        }
        let uid = container
            .security_context
            .as_ref()
            .and_then(|s| s.run_as_user)
            .or_else(|| spec.security_context.as_ref().and_then(|s| s.run_as_user));
        if uid == Some(PROXY_UID) {
            return Some(format!(
                "container {} runs as uid {PROXY_UID}, the proxy's: its traffic would bypass \
                 the proxy",
                quote(&container.name)
            ));
        }
    }
    None
}

fn operations(
    template: &Value,
    spec: &PodSpec,
    annotations: &BTreeMap<String, String>,
    shape: &Shape,
    settings: &Settings,
) -> Vec<Op> {
    let init = to_json(&sidecar::init_container(settings, shape));
    let proxy = to_json(&sidecar::proxy_container(settings, shape));
    let volume = to_json(&sidecar::token_volume(settings));

    let mut ops = Vec::new();
    // Metadata: the label, and prometheus.io/* unless the pod has its own.
    let mut new_annotations = Map::new();
    if !annotations.keys().any(|k| k.starts_with("prometheus.io/")) {
        new_annotations.insert("prometheus.io/scrape".into(), json!("true"));
        new_annotations.insert("prometheus.io/port".into(), json!(ADMIN_PORT.to_string()));
        new_annotations.insert("prometheus.io/path".into(), json!("/metrics"));
    }
    let mut labels = Map::new();
    labels.insert(MESHED_LABEL.into(), json!("true"));
    match template.get("metadata") {
        Some(Value::Object(metadata)) => {
            for (key, values) in [("labels", labels), ("annotations", new_annotations)] {
                match metadata.get(key) {
                    Some(Value::Object(_)) => {
                        for (name, value) in values {
                            ops.push(Op::add(format!("/metadata/{key}/{}", escape(&name)), value));
                        }
                    }
                    _ if values.is_empty() => {}
                    _ => ops.push(Op::add(format!("/metadata/{key}"), Value::Object(values))),
                }
            }
        }
        _ => ops.push(Op::add(
            "/metadata",
            json!({ "labels": labels, "annotations": new_annotations }),
        )),
    }

    let has_init_containers = !spec
        .init_containers
        .as_deref()
        .unwrap_or_default()
        .is_empty();
    if settings.native_sidecars {
        // herd-init first, then the proxy, then the pod's own init containers (meshed).
        if has_init_containers {
            ops.push(Op::add("/spec/initContainers/0", init));
            ops.push(Op::add("/spec/initContainers/1", proxy));
        } else {
            ops.push(Op::add("/spec/initContainers", json!([init, proxy])));
        }
    } else {
        // herd-init last (the pod's own init containers keep their network), the proxy first.
        if has_init_containers {
            ops.push(Op::add("/spec/initContainers/-", init));
        } else {
            ops.push(Op::add("/spec/initContainers", json!([init])));
        }
        ops.push(Op::add("/spec/containers/0", proxy));
    }
    if spec.volumes.as_deref().unwrap_or_default().is_empty() {
        ops.push(Op::add("/spec/volumes", json!([volume])));
    } else {
        ops.push(Op::add("/spec/volumes/-", volume));
    }
    ops
}

fn to_json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).expect("k8s-openapi types serialize")
}

/// The string values of a JSON object (annotations, labels); anything else is empty.
pub fn string_map(value: Option<&Value>) -> BTreeMap<String, String> {
    value
        .and_then(Value::as_object)
        .map(|map| {
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON Pointer reference token: `~` as `~0`, `/` as `~1` (RFC 6901).
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// `ops` with `prefix` (a JSON Pointer, e.g. `/spec/template`) in front of each path.
pub fn rebase(ops: Vec<Op>, prefix: &str) -> Vec<Op> {
    ops.into_iter()
        .map(|op| Op {
            path: format!("{prefix}{}", op.path),
            ..op
        })
        .collect()
}

/// Why an operation could not be applied.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("cannot add at {path}: {reason}")]
pub struct ApplyError {
    pub path: String,
    pub reason: &'static str,
}

/// Carries out `add` operations on `target` as RFC 6902 says: into an object, the member is set;
/// into an array, the value is inserted at the index (`-`: appended). The parent must exist.
pub fn apply(target: &mut Value, ops: &[Op]) -> Result<(), ApplyError> {
    for op in ops {
        let error = |reason| ApplyError {
            path: op.path.clone(),
            reason,
        };
        let (parent, last) = op
            .path
            .rsplit_once('/')
            .ok_or_else(|| error("not a JSON Pointer"))?;
        let last = last.replace("~1", "/").replace("~0", "~");
        let parent = target
            .pointer_mut(parent)
            .ok_or_else(|| error("no such parent"))?;
        match parent {
            Value::Object(map) => {
                map.insert(last, op.value.clone());
            }
            Value::Array(list) => {
                let index = if last == "-" {
                    list.len()
                } else {
                    last.parse::<usize>()
                        .ok()
                        .filter(|i| *i <= list.len())
                        .ok_or_else(|| error("not an index of the array"))?
                };
                list.insert(index, op.value.clone());
            }
            _ => return Err(error("the parent is neither an object nor an array")),
        }
    }
    Ok(())
}
