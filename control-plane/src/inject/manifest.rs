//! `herdctl inject FILE|-`: the webhook's patch, applied offline to a stream of manifests.
//!
//! The stream is split into its YAML documents at `---` lines, and each document is looked at
//! on its own. A Pod (`v1`), Deployment, StatefulSet, DaemonSet (`apps/v1`), Job or CronJob
//! (`batch/v1`) has its pod template (`spec.template`; a CronJob's
//! `spec.jobTemplate.spec.template`; a Pod itself) decided by [`plan`] as the webhook would for a
//! namespace that asks for injection: every pod template is injected unless it says
//! `herd.io/inject: disabled`. An injected document is written back as YAML with its keys in
//! order (as `kubectl get -o yaml` prints them; comments inside it are lost). Every other
//! document (a Service, a ConfigMap, a workload already injected, opted out or refused) is
//! written back byte for byte as it came, comments and all.
//!
//! Documents are read as Kubernetes reads them (YAML 1.1's `0644` is octal, `yes` a boolean),
//! so what is written back means what the input meant. A document that is not YAML, or a
//! workload without a pod template, stops the run with an error naming the document and its
//! first line: better no output than a stream with a workload silently left out.

use serde_json::Value;

use super::patch::{Decision, apply, plan, rebase};
use super::sidecar::Settings;

/// What happened to one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// `Deployment web` (with the namespace when the document names one: `mastodon/web`).
    pub workload: String,
    /// `injected`, `already injected`, `opted out`, or `not injected: WHY`.
    pub outcome: String,
}

impl Report {
    /// Whether herd wanted to inject and could not.
    pub fn is_refusal(&self) -> bool {
        self.outcome.starts_with("not injected")
    }
}

/// The stream injected, and what happened to each workload in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    pub output: String,
    pub reports: Vec<Report>,
}

/// Why a stream could not be injected: one line naming the document.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{source_name}: document {index} (line {line}): {message}")]
pub struct ManifestError {
    pub source_name: String,
    /// 1-based.
    pub index: usize,
    /// The document's first line in the stream.
    pub line: usize,
    pub message: String,
}

/// Injects every workload of `text` (read from `source_name`, for errors).
pub fn inject(
    text: &str,
    source_name: &str,
    settings: &Settings,
) -> Result<Injected, ManifestError> {
    let mut output = String::with_capacity(text.len() * 2);
    let mut reports = Vec::new();
    let mut index = 0;
    for document in documents(text) {
        if !is_empty(document.body) {
            index += 1;
        }
        let error = |message: String| ManifestError {
            source_name: source_name.to_owned(),
            index,
            line: document.line,
            message,
        };
        output.push_str(document.separator);
        let body = document.body;
        let value: Value = match parse(body) {
            Ok(Some(value)) => value,
            Ok(None) => {
                output.push_str(body);
                continue;
            }
            Err(e) => return Err(error(format!("not YAML: {e}"))),
        };
        let Some(prefix) = template_pointer(&value) else {
            output.push_str(body);
            continue;
        };
        let workload = name(&value);
        let Some(template) = value.pointer(prefix) else {
            return Err(error(format!(
                "{workload} has no pod template at {}",
                if prefix.is_empty() {
                    "its root"
                } else {
                    prefix
                }
            )));
        };
        let outcome = match plan(template, Some("enabled"), settings) {
            Decision::Inject(ops) => {
                let mut injected = value.clone();
                apply(&mut injected, &rebase(ops, prefix))
                    .map_err(|e| error(format!("{workload}: {e}")))?;
                let yaml = serde_saphyr::to_string(&injected)
                    .map_err(|e| error(format!("{workload}: cannot write YAML: {e}")))?;
                output.push_str(&yaml);
                if !yaml.ends_with('\n') {
                    output.push('\n');
                }
                reports.push(Report {
                    workload,
                    outcome: "injected".into(),
                });
                continue;
            }
            Decision::AlreadyInjected => "already injected".to_owned(),
            Decision::NotWanted(_) => "opted out (herd.io/inject: disabled)".to_owned(),
            Decision::Refused(why) => format!("not injected: {why}"),
        };
        output.push_str(body);
        reports.push(Report { workload, outcome });
    }
    Ok(Injected { output, reports })
}

/// One document of a stream: the separator line before it (empty for the first), its text,
/// and the line its text starts on (1-based).
struct Document<'a> {
    separator: &'a str,
    body: &'a str,
    line: usize,
}

/// Splits at lines that start a document: `---` alone or followed by a space or a tab. What
/// comes before the first separator is a document too (often only comments).
fn documents(text: &str) -> Vec<Document<'_>> {
    let mut documents = Vec::new();
    let (mut separator, mut start, mut start_line) = ("", 0, 1);
    let mut offset = 0;
    for (number, line) in text.split_inclusive('\n').enumerate() {
        let content = line.trim_end_matches(['\n', '\r']);
        if content == "---" || content.starts_with("--- ") || content.starts_with("---\t") {
            documents.push(Document {
                separator,
                body: &text[start..offset],
                line: start_line,
            });
            (separator, start, start_line) = (line, offset + line.len(), number + 2);
        }
        offset += line.len();
    }
    documents.push(Document {
        separator,
        body: &text[start..],
        line: start_line,
    });
    documents
}

/// Whether a document holds nothing: blank lines, comments, a document end marker.
fn is_empty(body: &str) -> bool {
    body.lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "...")
}

/// A document as Kubernetes reads it; `None` when it holds nothing (comments, blank lines).
fn parse(body: &str) -> Result<Option<Value>, String> {
    if is_empty(body) {
        return Ok(None);
    }
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
    };
    let value: Value =
        serde_saphyr::from_str_with_options(body, options).map_err(|e| first_line(&e))?;
    Ok(match value {
        Value::Null => None,
        value => Some(value),
    })
}

fn first_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_owned()
}

/// Where a workload's pod template is, for the kinds herd injects; `None` for anything else.
fn template_pointer(value: &Value) -> Option<&'static str> {
    let api_version = value.get("apiVersion")?.as_str()?;
    let kind = value.get("kind")?.as_str()?;
    match (api_version, kind) {
        ("v1", "Pod") => Some(""),
        ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet") | ("batch/v1", "Job") => {
            Some("/spec/template")
        }
        ("batch/v1", "CronJob") => Some("/spec/jobTemplate/spec/template"),
        _ => None,
    }
}

/// `Kind NAMESPACE/NAME` or `Kind NAME`.
fn name(value: &Value) -> String {
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("?");
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("(unnamed)");
    match value.pointer("/metadata/namespace").and_then(Value::as_str) {
        Some(namespace) => format!("{kind} {namespace}/{name}"),
        None => format!("{kind} {name}"),
    }
}
