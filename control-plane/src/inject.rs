//! The injector: what adds herd's proxy to a pod, as a mutating admission webhook (HTTPS, port
//! 8443, path `/inject`) and offline (`herdctl inject`).
//!
//! Both run one pure function, [`patch::plan`]: a pod template (a Pod's, or a Deployment's
//! `spec.template`) and what its namespace asks for in, a [`patch::Decision`] out: inject (with
//! the JSON Patch that does it), leave alone (not asked for, or already injected), or refuse
//! (something herd cannot patch safely, with the warning that says why). A refused pod is never
//! a refused request: the webhook allows it unchanged, with the warning in its answer (which
//! `kubectl` prints) and in herd-control's log, because a pod without a proxy is a pod an
//! operator can fix, and a pod that cannot be created is an outage.
//!
//! The pieces, one module each:
//!
//! - [`annotations`]: the `herd.io/*` annotations a pod (or namespace) is read for, checked;
//! - [`sidecar`]: what is added: the `herd-init` init container, the `herd-proxy` container
//!   (a native sidecar, or a regular container the app waits for) and its bootstrap
//!   configuration, the projected token volume;
//! - [`patch`]: the decision and the JSON Patch operations, and applying them (for `herdctl`);
//! - [`review`]: AdmissionReview v1 in and out, lenient with what it is sent;
//! - [`webhook`]: the HTTPS server, its certificate, the namespace lookups and the native
//!   sidecar check against the API server;
//! - [`manifest`]: `herdctl inject`'s multi-document YAML stream.

pub mod annotations;
pub mod manifest;
pub mod patch;
pub mod review;
pub mod sidecar;
pub mod webhook;

#[cfg(test)]
mod tests;

pub use patch::{Decision, plan};
pub use sidecar::Settings;
