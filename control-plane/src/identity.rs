//! The identity service: the mesh's certificate authority (gRPC `herd.identity.v1.Identity`,
//! default port 8080).
//!
//! A proxy makes its key in memory and sends a CSR naming its SPIFFE ID with a token proving it
//! is that workload; the CA checks both and signs a short-lived leaf (24 h by default), returned
//! with the trust bundle. The pieces, one module each:
//!
//! - [`token`]: the [`token::Authenticate`] trait a token is checked through, and a chain of
//!   them; [`bootstrap`] (a file of tokens, outside a cluster) and [`review`] (Kubernetes'
//!   TokenReview, in one) are the two kinds;
//! - [`authority`]: the issuer and the trust bundle from their files, checked against each other;
//! - [`files`]: the watcher that re-reads those files (and the tokens file) when they change, so
//!   a root is rotated without a restart;
//! - [`service`]: the `Certify` call itself;
//! - [`own`]: the control plane's own certificate, presented on its ports.
//!
//! The certificate logic (CSR inspection, what a leaf holds, bundles) is herd-identity's; this
//! module is the I/O around it.

pub mod authority;
pub mod bootstrap;
pub mod files;
pub mod own;
pub mod review;
pub mod service;
pub mod token;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{error, info};

use crate::identity::authority::{Ca, CaFiles};
use crate::identity::bootstrap::BootstrapTokens;
use crate::metrics::Metrics;

pub use service::{Certified, CertifyError, IdentityService};

/// Publishes `first` (loaded by the caller, who refuses to start without it) and re-reads the CA
/// files when they change: a good new version replaces it, a bad one is logged once with its
/// file and the last good stays in force. The watcher must be kept.
pub fn watch_ca(
    files: CaFiles,
    first: Ca,
    metrics: Metrics,
) -> notify::Result<(watch::Receiver<Arc<Ca>>, notify::RecommendedWatcher)> {
    publish_metrics(&metrics, &first);
    let (tx, rx) = watch::channel(Arc::new(first));
    let mut last_error = None;
    let paths = files.paths();
    let watcher = files::watch(paths, move || match files.load() {
        Ok(ca) => {
            last_error = None;
            let current = tx.borrow().clone();
            if current.issuer.certificate() == ca.issuer.certificate()
                && current.bundle == ca.bundle
            {
                return;
            }
            info!(
                issuer_not_after = %humantime::format_rfc3339_seconds(ca.issuer.not_after()),
                roots = ca.bundle.len(),
                "identity: CA files reloaded"
            );
            publish_metrics(&metrics, &ca);
            tx.send_replace(Arc::new(ca));
        }
        Err(e) => {
            let message = e.to_string();
            if last_error.as_ref() != Some(&message) {
                error!("identity: {message}; keeping the CA files in force");
                last_error = Some(message);
            }
        }
    })?;
    Ok((rx, watcher))
}

fn publish_metrics(metrics: &Metrics, ca: &Ca) {
    let not_after = ca
        .issuer
        .not_after()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    metrics.issuer_not_after.set(not_after);
    metrics.trust_bundle_roots.set(ca.bundle.len() as i64);
}

/// [`watch_ca`] for the bootstrap tokens file.
pub fn watch_bootstrap(
    path: PathBuf,
    trust_domain: String,
    first: BootstrapTokens,
) -> notify::Result<(
    watch::Receiver<Arc<BootstrapTokens>>,
    notify::RecommendedWatcher,
)> {
    let (tx, rx) = watch::channel(Arc::new(first));
    let mut last_error = None;
    let watched = path.clone();
    let watcher = files::watch(vec![watched], move || {
        match BootstrapTokens::load(&path, &trust_domain) {
            Ok(tokens) => {
                last_error = None;
                if **tx.borrow() == tokens {
                    return;
                }
                info!(tokens = tokens.len(), "identity: bootstrap tokens reloaded");
                tx.send_replace(Arc::new(tokens));
            }
            Err(e) => {
                let message = e.to_string();
                if last_error.as_ref() != Some(&message) {
                    error!("identity: {message}; keeping the bootstrap tokens in force");
                    last_error = Some(message);
                }
            }
        }
    })?;
    Ok((rx, watcher))
}

#[cfg(test)]
mod tests;
