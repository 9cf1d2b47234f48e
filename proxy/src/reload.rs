//! Config reload: watch the file, publish a new snapshot when it changes for the better.
//!
//! The watch is on the file's directory, not the file: editors and `kubectl` replace files by
//! renaming a new one over them (a Kubernetes ConfigMap volume swaps a symlink), which a watch
//! on the old inode would never see. Any event in the directory triggers a re-read after a short
//! settle delay; a file that parses to the config already in force changes nothing. An invalid
//! file is logged with `file:line:column` and ignored: the last good snapshot stays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herd_config::Config;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{error, info, warn};

use crate::metrics::Metrics;
use crate::snapshot::{Registry, Snapshot};

/// How long to let a burst of file events settle before reading (an editor's save is several).
const SETTLE: Duration = Duration::from_millis(100);

/// Starts watching `file`; the returned watcher must be kept alive.
pub fn watch(
    file: PathBuf,
    tx: watch::Sender<Arc<Snapshot>>,
    registry: Registry,
    metrics: Metrics,
) -> notify::Result<notify::RecommendedWatcher> {
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reading the file (ours included) raises access events; only changes matter.
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = events_tx.send(());
        }
    })?;
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    tokio::spawn(reload_loop(file, events_rx, tx, registry, metrics));
    Ok(watcher)
}

async fn reload_loop(
    file: PathBuf,
    mut events: mpsc::UnboundedReceiver<()>,
    tx: watch::Sender<Arc<Snapshot>>,
    mut registry: Registry,
    metrics: Metrics,
) {
    while events.recv().await.is_some() {
        tokio::time::sleep(SETTLE).await;
        while events.try_recv().is_ok() {}
        let current = tx.borrow().clone();
        let file = file.clone();
        let loaded = tokio::task::spawn_blocking(move || herd_config::load(&file)).await;
        match loaded {
            Ok(Ok(config)) => {
                if config == *current.config {
                    continue;
                }
                warn_restart_only(&current.config, &config);
                let version = current.version + 1;
                let snapshot =
                    Snapshot::build(version, current.file.clone(), config, &mut registry);
                tx.send_replace(Arc::new(snapshot));
                metrics.config_version.set(version as i64);
                metrics.config_reloads.with_label_values(&["applied"]).inc();
                info!(version, "configuration reloaded");
            }
            Ok(Err(err)) => {
                metrics
                    .config_reloads
                    .with_label_values(&["rejected"])
                    .inc();
                error!("{err}; keeping configuration version {}", current.version);
            }
            Err(join) => error!(%join, "configuration reload panicked"),
        }
    }
}

/// Listener addresses and connection caps of the inbound, outbound and admin listeners are bound
/// at start; say so when a reload changes them rather than pretend.
fn warn_restart_only(old: &Config, new: &Config) {
    let (o, n) = (&old.proxy, &new.proxy);
    let inbound = |c: &herd_config::ProxySettings| {
        c.inbound
            .as_ref()
            .map(|i| (i.listen, i.downstream.max_connections))
    };
    let outbound = |c: &herd_config::ProxySettings| {
        c.outbound
            .as_ref()
            .map(|o| (o.listen, o.downstream.max_connections))
    };
    if inbound(o) != inbound(n) || outbound(o) != outbound(n) || o.admin != n.admin {
        warn!(
            "changes to proxy.inbound/outbound listen or maxConnections and proxy.admin take effect at the next restart"
        );
    }
}
