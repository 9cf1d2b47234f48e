//! AdmissionReview v1: the API server's question about a Pod, and herd's answer.
//!
//! The request is read as loosely as it can be and still be answered: only `request.uid` is
//! needed to answer at all, and whatever else is missing or malformed (not JSON, another
//! version, no object, an object that is not a Pod) becomes an `allowed: true` answer without a
//! patch and with a warning, so a bad review never blocks a pod. The answer always echoes the
//! uid it was given (the API server discards an answer for another); an answer with no uid to
//! echo says so in its warning and is, from the API server's side, a failed call, which the
//! webhook's `failurePolicy` decides.
//!
//! A patch is sent as `patchType: JSONPatch` with the operations base64-encoded, as the API
//! says. Warnings are short single lines (the API server drops longer ones), prefixed `herd:`.

use k8s_openapi::ByteString;
use serde_json::{Value, json};

use super::patch::{Decision, Op};

/// The API version of the reviews answered.
pub const API_VERSION: &str = "admission.k8s.io/v1";
/// Longest warning sent back; Kubernetes refuses warnings over 256 characters.
const MAX_WARNING: usize = 250;

/// A review's request, as far as the injector needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub uid: String,
    /// `request.namespace`: the Pod's namespace (also when its metadata leaves it out).
    pub namespace: Option<String>,
    /// `CREATE`, `UPDATE`, ...
    pub operation: String,
    /// The Pod as JSON.
    pub object: Value,
}

impl Request {
    /// `NAMESPACE/NAME` (or `generateName` followed by `*`), for logs.
    pub fn pod_name(&self) -> String {
        let name = self
            .object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                self.object
                    .pointer("/metadata/generateName")
                    .and_then(Value::as_str)
                    .map(|g| format!("{g}*"))
            })
            .unwrap_or_else(|| "(unnamed)".into());
        format!("{}/{name}", self.namespace.as_deref().unwrap_or(""))
    }
}

/// Why a review was not a question about a Pod; carries the uid if one was found.
#[derive(Debug, Clone, PartialEq)]
pub struct Malformed {
    pub uid: Option<String>,
    pub reason: String,
}

/// Reads a review; see the module doc for what is required.
pub fn parse(body: &[u8]) -> Result<Request, Malformed> {
    let review: Value = serde_json::from_slice(body).map_err(|e| Malformed {
        uid: None,
        reason: format!("the body is not JSON: {e}"),
    })?;
    let uid = review
        .pointer("/request/uid")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let malformed = |reason: String| Malformed {
        uid: uid.clone(),
        reason,
    };
    if review.get("kind").and_then(Value::as_str) != Some("AdmissionReview")
        || review.get("apiVersion").and_then(Value::as_str) != Some(API_VERSION)
    {
        return Err(malformed(format!("not an {API_VERSION} AdmissionReview")));
    }
    let Some(uid) = uid.clone() else {
        return Err(malformed("the review has no request.uid".into()));
    };
    let request = &review["request"];
    let kind = request.pointer("/kind/kind").and_then(Value::as_str);
    if kind != Some("Pod") || request.pointer("/kind/group").and_then(Value::as_str) != Some("") {
        return Err(malformed(format!(
            "the review is about {}, not a Pod",
            kind.unwrap_or("nothing")
        )));
    }
    let object = match request.get("object") {
        Some(object @ Value::Object(_)) => object.clone(),
        _ => return Err(malformed("the review has no object".into())),
    };
    Ok(Request {
        uid,
        namespace: request
            .get("namespace")
            .and_then(Value::as_str)
            .map(str::to_owned),
        operation: request
            .get("operation")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        object,
    })
}

/// The answer to a review with `uid`: always allowed; with the patch when `decision` injects,
/// with the warning when it refuses.
pub fn respond(uid: &str, decision: &Decision) -> Value {
    let (patch, warning) = match decision {
        Decision::Inject(ops) => (Some(ops.as_slice()), None),
        Decision::Refused(why) => (None, Some(format!("not injected: {why}"))),
        Decision::AlreadyInjected | Decision::NotWanted(_) => (None, None),
    };
    answer(uid, patch, warning.as_deref())
}

/// The answer to a review that could not be read.
pub fn respond_malformed(malformed: &Malformed) -> Value {
    answer(
        malformed.uid.as_deref().unwrap_or(""),
        None,
        Some(&format!("review not understood: {}", malformed.reason)),
    )
}

fn answer(uid: &str, patch: Option<&[Op]>, warning: Option<&str>) -> Value {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(ops) = patch {
        let bytes = serde_json::to_vec(ops).expect("operations serialize");
        response["patchType"] = json!("JSONPatch");
        response["patch"] = serde_json::to_value(ByteString(bytes)).expect("bytes serialize");
    }
    if let Some(warning) = warning {
        response["warnings"] = json!([warning_line(warning)]);
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "AdmissionReview",
        "response": response,
    })
}

/// `herd: WARNING` on one line of printable characters, cut to what the API server keeps.
fn warning_line(warning: &str) -> String {
    let clean: String = format!("herd: {warning}")
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if clean.chars().count() <= MAX_WARNING {
        clean
    } else {
        let mut cut: String = clean.chars().take(MAX_WARNING - 3).collect();
        cut.push_str("...");
        cut
    }
}
