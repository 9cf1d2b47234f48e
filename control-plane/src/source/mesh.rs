//! The mesh directory: every `*.yaml` file in it (not recursive), each holding `services:` and
//! `policies:`.
//!
//! Each file is validated alone, with the same code herd-proxy uses for its own file
//! ([`herd_config::parse_mesh`]), so a mistake reads the same everywhere:
//! `FILE:LINE:COLUMN: field: message`. Then the files are merged in name order; a service name,
//! an authority, an opaque listener or a policy name that a file claims again after an earlier file is a clash,
//! reported naming both files.
//!
//! A file that fails, alone or in the merge, keeps its last good version in force: an operator's
//! typo never empties the mesh. [`MeshDir`] remembers each file's last accepted services for
//! that; [`MeshDir::read`] is the whole step, and the watcher in [`watch`] only decides when to
//! call it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use herd_config::{Authority, Mesh, Policy, Service};
use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tracing::{error, info};

/// One problem with one file, as a line: `FILE:LINE:COLUMN: field: message` (or `FILE: ...`
/// for a clash between files, which has no single location).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProblem {
    pub file: PathBuf,
    pub message: String,
}

impl std::fmt::Display for FileProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// The merged services and policies of a directory and what is wrong with it now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshState {
    /// Every service in force, files in name order, each file's in its own order.
    pub services: Vec<Service>,
    /// Every policy in force, in the same order.
    pub policies: Vec<Policy>,
    /// The files whose current text is not in force (a last good version may be).
    pub problems: Vec<FileProblem>,
}

/// The directory and the last accepted version of each of its files.
#[derive(Debug)]
pub struct MeshDir {
    dir: PathBuf,
    accepted: BTreeMap<PathBuf, Mesh>,
    /// Each file's text when last parsed, and what parsing it gave: a file whose text has not
    /// changed is not parsed again (a change to one file of many costs that file's parse).
    parsed: HashMap<PathBuf, (String, Result<Mesh, String>)>,
    parses: u64,
}

impl MeshDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        MeshDir {
            dir: dir.into(),
            accepted: BTreeMap::new(),
            parsed: HashMap::new(),
            parses: 0,
        }
    }

    /// File texts parsed so far.
    pub fn parses(&self) -> u64 {
        self.parses
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads every file and merges them. Fails only when the directory itself cannot be read;
    /// then nothing changes.
    pub fn read(&mut self) -> std::io::Result<MeshState> {
        let texts = read_dir(&self.dir)?;
        Ok(self.apply(texts))
    }

    /// The merge, given each file's text (or the error reading it). Files gone from the
    /// directory are gone from the mesh.
    pub fn apply(&mut self, texts: BTreeMap<PathBuf, std::io::Result<String>>) -> MeshState {
        self.accepted.retain(|file, _| texts.contains_key(file));
        self.parsed.retain(|file, _| texts.contains_key(file));
        let mut problems = Vec::new();
        let mut merged = Merge::default();
        for (file, text) in texts {
            let shown = file.display().to_string();
            let parsed = match text {
                Ok(text) => match self.parsed.get(&file) {
                    Some((last, parsed)) if *last == text => parsed.clone(),
                    _ => {
                        self.parses += 1;
                        let parsed =
                            herd_config::parse_mesh(&text, &shown, None).map_err(|e| e.to_string());
                        self.parsed.insert(file.clone(), (text, parsed.clone()));
                        parsed
                    }
                },
                Err(e) => Err(format!("{shown}: cannot read: {e}")),
            };
            let candidate = match parsed {
                Ok(mesh) => match merged.check(&file, &mesh) {
                    Ok(()) => Some(mesh),
                    Err(clash) => {
                        problems.push(FileProblem {
                            file: file.clone(),
                            message: clash,
                        });
                        None
                    }
                },
                Err(message) => {
                    problems.push(FileProblem {
                        file: file.clone(),
                        message,
                    });
                    None
                }
            };
            let in_force = match candidate {
                Some(mesh) => Some(mesh),
                // The last good version, if it still fits beside the files before it.
                None => self
                    .accepted
                    .get(&file)
                    .filter(|last| merged.check(&file, last).is_ok())
                    .cloned(),
            };
            match in_force {
                Some(mesh) => {
                    merged.add(&file, &mesh);
                    self.accepted.insert(file, mesh);
                }
                None => {
                    self.accepted.remove(&file);
                }
            }
        }
        MeshState {
            services: merged.services,
            policies: merged.policies,
            problems,
        }
    }
}

/// The `*.yaml` files of `dir` (hidden files and ConfigMap `..` entries aside), with their text.
pub fn read_dir(dir: &Path) -> std::io::Result<BTreeMap<PathBuf, std::io::Result<String>>> {
    let mut texts = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if is_mesh_file(&path) && path.is_file() {
            let text = std::fs::read_to_string(&path);
            texts.insert(path, text);
        }
    }
    Ok(texts)
}

/// `*.yaml`, not hidden (ConfigMap volumes hold `..data/` and `..2024_…` entries beside the
/// visible symlinks; the symlinks are the files).
pub fn is_mesh_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.') && name.ends_with(".yaml")
}

/// What the files before this one claim.
#[derive(Default)]
struct Merge {
    services: Vec<Service>,
    policies: Vec<Policy>,
    names: HashMap<String, PathBuf>,
    policy_names: HashMap<String, PathBuf>,
    authorities: HashMap<Authority, (String, PathBuf)>,
    listeners: HashMap<std::net::SocketAddr, (String, PathBuf)>,
}

impl Merge {
    fn check(&self, file: &Path, mesh: &Mesh) -> Result<(), String> {
        let here = file.display();
        for (i, policy) in mesh.policies.iter().enumerate() {
            if let Some(other) = self.policy_names.get(&policy.name) {
                return Err(format!(
                    "{here}: policies[{i}].name: policy `{}` is already defined in {}",
                    policy.name,
                    other.display()
                ));
            }
        }
        for (i, svc) in mesh.services.iter().enumerate() {
            if let Some(other) = self.names.get(&svc.name) {
                return Err(format!(
                    "{here}: services[{i}].name: service `{}` is already defined in {}",
                    svc.name,
                    other.display()
                ));
            }
            for (j, authority) in svc.authorities.iter().enumerate() {
                if let Some((owner, other)) = self.authorities.get(authority) {
                    return Err(format!(
                        "{here}: services[{i}].authorities[{j}]: authority `{authority}` is already claimed by service `{owner}` in {}",
                        other.display()
                    ));
                }
            }
            if let Some(listen) = svc.listen
                && let Some((owner, other)) = self.listeners.get(&listen)
            {
                return Err(format!(
                    "{here}: services[{i}].listen: {listen} is already the listener of service `{owner}` in {}",
                    other.display()
                ));
            }
        }
        Ok(())
    }

    fn add(&mut self, file: &Path, mesh: &Mesh) {
        for policy in &mesh.policies {
            self.policy_names
                .insert(policy.name.clone(), file.to_owned());
            self.policies.push(policy.clone());
        }
        for svc in &mesh.services {
            self.names.insert(svc.name.clone(), file.to_owned());
            for authority in &svc.authorities {
                self.authorities
                    .insert(authority.clone(), (svc.name.clone(), file.to_owned()));
            }
            if let Some(listen) = svc.listen {
                self.listeners
                    .insert(listen, (svc.name.clone(), file.to_owned()));
            }
            self.services.push(svc.clone());
        }
    }
}

/// How long a burst of file events settles before the directory is read (an editor's save, a
/// ConfigMap swap, are several events).
const SETTLE: Duration = Duration::from_millis(100);

/// Watches the directory and sends a [`MeshState`] at start and after every change that
/// changes it. Problems are logged once per distinct set. The returned watcher must be kept.
pub fn watch(
    mut mesh: MeshDir,
    tx: mpsc::Sender<Arc<MeshState>>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let first = mesh.read()?;
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        // Only the mesh files, and the ConfigMap's `..data` swap, concern us.
        let relevant = event
            .paths
            .iter()
            .any(|p| is_mesh_file(p) || p.file_name().is_some_and(|n| n == "..data"));
        if relevant {
            let _ = events_tx.send(());
        }
    })?;
    watcher.watch(mesh.dir(), RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        let mut last = Arc::new(first);
        report(&MeshState::default(), &last);
        if tx.send(last.clone()).await.is_err() {
            return;
        }
        while events_rx.recv().await.is_some() {
            tokio::time::sleep(SETTLE).await;
            while events_rx.try_recv().is_ok() {}
            let next = match mesh.read() {
                Ok(next) => next,
                Err(e) => {
                    error!(dir = %mesh.dir().display(), error = %e, "cannot read the mesh directory; keeping the mesh");
                    continue;
                }
            };
            if next == *last {
                continue;
            }
            report(&last, &next);
            last = Arc::new(next);
            if tx.send(last.clone()).await.is_err() {
                return;
            }
        }
    });
    Ok(watcher)
}

/// Logs new problems once, and says when the services change.
fn report(old: &MeshState, new: &MeshState) {
    for problem in &new.problems {
        if !old.problems.contains(problem) {
            error!("{problem}; keeping the last good version of that file");
        }
    }
    if old.services != new.services {
        info!(services = new.services.len(), "mesh changed");
    }
}

#[cfg(test)]
mod tests;
