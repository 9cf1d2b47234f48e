//! Watching the identity service's files (CA certificate and key, trust bundle, bootstrap
//! tokens) so that a change applies without a restart.
//!
//! The watch is on each file's directory, not the file: editors and `kubectl` replace a file by
//! renaming a new one over it, which a watch on the old inode never sees. An event counts when
//! it names one of the files, or the first step of a file's symlink when that is a name in the
//! same directory: a ConfigMap or Secret volume mounts `tls.crt -> ..data/tls.crt` and updates
//! by renaming a new `..data` symlink over the old one, so nothing named `tls.crt` changes. The
//! names are worked out again after each event, so a file that becomes a symlink is followed.
//! A burst of events (an editor's save, a Secret's update of cert and key together) settles for
//! 100 ms, then `reload` runs once; what it reads, and what it does with a bad file, is its
//! business.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// How long a burst of events settles before the files are read.
const SETTLE: Duration = Duration::from_millis(100);

/// Calls `reload` after every settled burst of changes to `files`; the returned watcher must be
/// kept alive.
pub fn watch(
    files: Vec<PathBuf>,
    mut reload: impl FnMut() + Send + 'static,
) -> notify::Result<notify::RecommendedWatcher> {
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let _ = events_tx.send(event);
        }
    })?;
    let dirs: BTreeSet<PathBuf> = files.iter().map(|f| dir_of(f).to_owned()).collect();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        let mut names = watched_names(&files);
        while let Some(event) = events_rx.recv().await {
            if !concerns(&event, &names) {
                continue;
            }
            tokio::time::sleep(SETTLE).await;
            while events_rx.try_recv().is_ok() {}
            names = watched_names(&files);
            reload();
        }
    });
    Ok(watcher)
}

fn dir_of(file: &Path) -> &Path {
    file.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// The names whose events concern `files`: each file's own, and the first step of its symlink
/// when that is relative (a name in the same directory, such as a volume's `..data`).
pub(crate) fn watched_names(files: &[PathBuf]) -> Vec<OsString> {
    let mut names = Vec::new();
    for file in files {
        names.extend(file.file_name().map(ToOwned::to_owned));
        let link = std::fs::read_link(file).ok();
        let first_step = link
            .as_deref()
            .filter(|l| l.is_relative())
            .and_then(|l| l.components().find(|c| *c != Component::CurDir))
            .and_then(|c| match c {
                Component::Normal(name) => Some(name.to_owned()),
                _ => None,
            });
        names.extend(first_step);
    }
    names
}

/// Whether `event` may have changed what one of the files reads as: a change (reading them, ours
/// included, raises access events) to one of `names`, or the watcher's word that it lost events.
pub(crate) fn concerns(event: &notify::Event, names: &[OsString]) -> bool {
    if event.need_rescan() {
        return true;
    }
    !matches!(event.kind, EventKind::Access(_))
        && event
            .paths
            .iter()
            .any(|p| p.file_name().is_some_and(|n| names.iter().any(|w| w == n)))
}
