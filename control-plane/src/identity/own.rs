//! The control plane's own certificate: what herd-control presents on its discovery and
//! identity ports, so that a proxy knows it talks to the control plane and not to whoever
//! answered on the address.
//!
//! herd-control holds the CA, so it signs its own leaf the way it signs a proxy's (a fresh key
//! in memory, a CSR through the same checks, the same lifetime), for its own SPIFFE ID
//! (`--control-identity`, by default `spiffe://TRUST-DOMAIN/ns/herd/sa/herd-control`). It signs
//! a new one at 70 % of the lifetime and whenever the CA files change (a new issuer or a new
//! bundle: the bundle also decides which client certificates are accepted), and publishes a
//! rustls server configuration each time. Connections already open keep the configuration they
//! were accepted with, as a proxy's do. The injector webhook's certificate (for DNS names, see
//! `inject::webhook`) is kept fresh by the same loop, [`keep_signed`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herd_identity::tls::service_server_config;
use herd_identity::{CsrLimits, Keypair, SpiffeId, build_csr, inspect_csr};
use rustls::ServerConfig;
use tokio::sync::watch;
use tracing::{info, warn};

use super::authority::Ca;
use crate::metrics::Metrics;

/// ALPN the control plane's ports speak: gRPC is HTTP/2.
const ALPN: &[&[u8]] = &[b"h2"];
/// Waits after a failed signing before the next try.
const RETRY: Duration = Duration::from_secs(5);

/// Why the control plane could not certify itself.
#[derive(Debug, thiserror::Error)]
pub enum OwnError {
    #[error("cannot make a key or CSR for {id}: {reason}")]
    Csr { id: SpiffeId, reason: String },
    #[error("the CA cannot sign {id}: {reason}")]
    Issue { id: SpiffeId, reason: String },
    #[error("cannot build a TLS configuration for {id}: {reason}")]
    Tls { id: SpiffeId, reason: String },
}

/// A signed certificate and the server configuration that presents it.
pub(crate) struct Signed {
    pub config: Arc<ServerConfig>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// For the log line.
    pub serial: String,
}

fn sign(ca: &Ca, id: &SpiffeId, lifetime: Duration) -> Result<Signed, OwnError> {
    let csr_error = |e: herd_identity::CsrError| OwnError::Csr {
        id: id.clone(),
        reason: e.to_string(),
    };
    let key = Keypair::generate().map_err(csr_error)?;
    let csr = build_csr(&key, id).map_err(csr_error)?;
    let request = inspect_csr(&csr, &CsrLimits::default()).map_err(csr_error)?;
    let leaf = ca
        .issuer
        .issue(&request, id, lifetime)
        .map_err(|e| OwnError::Issue {
            id: id.clone(),
            reason: e.to_string(),
        })?;
    let config =
        service_server_config(&leaf, &key, &ca.bundle, ALPN).map_err(|e| OwnError::Tls {
            id: id.clone(),
            reason: e.to_string(),
        })?;
    Ok(Signed {
        config: Arc::new(config),
        not_before: leaf.not_before(),
        not_after: leaf.not_after(),
        serial: leaf.serial_hex(),
    })
}

/// How long from `now` until the leaf valid from `not_before` to `not_after` is due for
/// renewal: at 70 % of its lifetime.
fn renew_in(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> Duration {
    let lifetime = not_after.duration_since(not_before).unwrap_or_default();
    let renew_at = not_before + lifetime.mul_f64(0.7);
    renew_at.duration_since(now).unwrap_or_default()
}

/// Signs the first leaf now (an error stops herd-control before it serves), then keeps it fresh
/// for as long as the process runs. The receiver always holds a configuration.
pub fn keep_certified(
    ca: watch::Receiver<Arc<Ca>>,
    id: SpiffeId,
    lifetime: Duration,
    metrics: Metrics,
) -> Result<watch::Receiver<Arc<ServerConfig>>, OwnError> {
    let report_id = id.clone();
    keep_signed(
        "control plane certificate",
        ca,
        move |ca| sign(ca, &id, lifetime),
        move |signed| report(&report_id, signed, &metrics),
    )
}

/// The loop both of herd-control's own certificates share (this one, and the injector
/// webhook's): `sign` once now (its error is the caller's), then again at 70 % of each
/// certificate's lifetime and whenever the CA changes, retrying every 5 s after a failure
/// (logged, naming `what`) while the last configuration stays in use; `signed` hears of each
/// success.
pub(crate) fn keep_signed<E>(
    what: &'static str,
    mut ca: watch::Receiver<Arc<Ca>>,
    sign: impl Fn(&Ca) -> Result<Signed, E> + Send + 'static,
    signed: impl Fn(&Signed) + Send + 'static,
) -> Result<watch::Receiver<Arc<ServerConfig>>, E>
where
    E: std::fmt::Display,
{
    let first = sign(&ca.borrow_and_update())?;
    signed(&first);
    let mut renew = renew_in(first.not_before, first.not_after, SystemTime::now());
    let (tx, rx) = watch::channel(first.config);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = ca.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(renew) => {}
                () = tx.closed() => return,
            }
            let current = ca.borrow_and_update().clone();
            match sign(&current) {
                Ok(new) => {
                    signed(&new);
                    renew = renew_in(new.not_before, new.not_after, SystemTime::now());
                    tx.send_replace(new.config);
                }
                Err(error) => {
                    warn!(%error, "{what} not renewed; retrying");
                    renew = RETRY;
                }
            }
        }
    });
    Ok(rx)
}

fn report(id: &SpiffeId, signed: &Signed, metrics: &Metrics) {
    info!(
        identity = %id,
        serial = %signed.serial,
        not_after = %humantime::format_rfc3339_seconds(signed.not_after),
        "control plane certificate signed"
    );
    metrics.own_not_after.set(
        signed
            .not_after
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_seventy_percent_of_the_lifetime() {
        let start = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(1000);
        let at = |s| start + Duration::from_secs(s);
        assert_eq!(renew_in(start, end, start), Duration::from_secs(700));
        assert_eq!(renew_in(start, end, at(650)), Duration::from_secs(50));
        assert_eq!(renew_in(start, end, at(900)), Duration::ZERO);
    }
}
