//! Config reload: watch the file, publish a new snapshot when it changes for the better.
//!
//! **Which events.** The watch is on the file's directory, not the file: editors and `kubectl`
//! replace files by renaming a new one over them, which a watch on the old inode would never
//! see. But the directory holds other files, and their events are not the config's: the
//! proxy's own log when it is written beside the config (`2>>herd.log`, where every line logged
//! is an event), an editor's swap file, anything else. Re-reading on those would, among other
//! things, report a broken file again at each of its own error lines. So an event counts only
//! when it names the file, or the first step of the file's symlink when that is a name in the
//! same directory: a ConfigMap volume mounts `herd.yaml -> ..data/herd.yaml` and updates it by
//! renaming a new `..data` symlink over the old one, so nothing named `herd.yaml` changes. The
//! names are worked out again at each re-read, so a file that becomes a symlink is followed. A
//! burst of events (an editor's save is several) settles for 100 ms before the file is read.
//!
//! **What a re-read does.** A file that parses to the config in force changes nothing. An
//! invalid one is logged with `file:line:column`, counted as rejected, and its text kept: a
//! later re-read that finds the same text (the same broken file written again, an event that
//! changed nothing) says so at DEBUG only, so one mistake is one ERROR line and one count. A
//! valid file forgets it, so the same mistake made again later is reported again. The last good
//! snapshot stays in force throughout.

use std::ffi::{OsStr, OsString};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herd_config::{Config, ConfigError};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;
use crate::snapshot::{Registry, Snapshot};

#[cfg(test)]
mod tests;

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
        if let Ok(event) = event {
            let _ = events_tx.send(event);
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

/// The names in the file's directory whose events concern the file: its own, and the first
/// step of its symlink `link` when that is relative (a name in the same directory, such as a
/// ConfigMap's `..data`).
fn watched_names(file: &Path, link: Option<&Path>) -> Vec<OsString> {
    let own = file.file_name().map(OsStr::to_owned);
    let first_step = link
        .filter(|l| l.is_relative())
        .and_then(|l| l.components().find(|c| *c != Component::CurDir))
        .and_then(|c| match c {
            Component::Normal(name) => Some(name.to_owned()),
            _ => None,
        });
    own.into_iter().chain(first_step).collect()
}

/// Whether `event` may have changed what the file reads as: a change (reading the file, ours
/// included, raises access events) to one of `names`, or the watcher's word that it lost events
/// and everything should be looked at again.
fn concerns(event: &notify::Event, names: &[OsString]) -> bool {
    if event.need_rescan() {
        return true;
    }
    !matches!(event.kind, EventKind::Access(_))
        && event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n)))
}

/// The last file rejected: its text, or why it could not be read.
#[derive(Debug, Default)]
struct Rejected(Option<Result<String, ConfigError>>);

impl Rejected {
    /// Whether the rejection of `found` is news, i.e. not what was rejected last; remembers it.
    fn is_news(&mut self, found: Result<String, ConfigError>) -> bool {
        if self.0.as_ref() == Some(&found) {
            return false;
        }
        self.0 = Some(found);
        true
    }

    /// A valid file was read: a rejection after it is news whatever it is.
    fn forget(&mut self) {
        self.0 = None;
    }
}

/// What one read of the file found.
struct Reread {
    /// The text, or why it could not be read.
    text: Result<String, ConfigError>,
    config: Result<Config, ConfigError>,
    /// [`watched_names`] as the file is now.
    names: Vec<OsString>,
}

fn reread(file: &Path) -> Reread {
    let text = herd_config::read(file);
    let config = match &text {
        Ok(text) => herd_config::parse(text, &file.display().to_string()),
        Err(err) => Err(err.clone()),
    };
    let link = std::fs::read_link(file).ok();
    Reread {
        text,
        config,
        names: watched_names(file, link.as_deref()),
    }
}

async fn reload_loop(
    file: PathBuf,
    mut events: mpsc::UnboundedReceiver<notify::Event>,
    tx: watch::Sender<Arc<Snapshot>>,
    mut registry: Registry,
    metrics: Metrics,
) {
    let link = std::fs::read_link(&file).ok();
    let mut names = watched_names(&file, link.as_deref());
    let mut rejected = Rejected::default();
    while let Some(event) = events.recv().await {
        if !concerns(&event, &names) {
            continue;
        }
        tokio::time::sleep(SETTLE).await;
        while events.try_recv().is_ok() {}
        let current = tx.borrow().clone();
        let path = file.clone();
        let found = match tokio::task::spawn_blocking(move || reread(&path)).await {
            Ok(found) => found,
            Err(join) => {
                error!(%join, "configuration reload panicked");
                continue;
            }
        };
        names = found.names;
        match found.config {
            Ok(config) => {
                rejected.forget();
                if config == *current.config {
                    debug!(file = %file.display(), "re-read: the configuration in force");
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
            Err(err) => {
                if !rejected.is_news(found.text) {
                    debug!(
                        file = %file.display(),
                        "re-read: the same invalid content as before; not reported again"
                    );
                    continue;
                }
                metrics
                    .config_reloads
                    .with_label_values(&["rejected"])
                    .inc();
                error!("{err}; keeping configuration version {}", current.version);
            }
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
