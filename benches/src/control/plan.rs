//! The mesh the fleet runs against, and the changes made to it.
//!
//! The shape of the control-plane issue: `services` services of `endpoints` static endpoints
//! each, spread over files of [`PER_FILE`] services, plus one service, [`SHARED`], in a file of
//! its own, which every simulated proxy watches; each proxy also watches `watches - 1` other
//! services drawn at random (seeded, so two runs with the same flags subscribe alike).
//! Addresses come from 10.0.0.0/8 and are never connected to: herd-control only passes them on.
//!
//! Changes are made as an operator would, by rewriting a mesh file, but atomically (a hidden
//! temporary file renamed over the old one, which herd-control ignores until the rename), so
//! the control plane never reads half a file and the time stamped before the write is when the
//! change was issued. Every change brings addresses of their own (`10.251.x.y` for the shared
//! service's, `10.252.0.k` for the rolling update's step `k`), so a proxy's update says which
//! change it carries.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// The service every proxy watches.
pub const SHARED: &str = "shared";
/// Services per mesh file.
pub const PER_FILE: usize = 100;
/// Endpoints' port.
const PORT: u16 = 8080;
/// Most endpoints per service: the last octet of an address numbers them.
pub const MAX_ENDPOINTS: usize = 250;
/// Most services: the second and third octets number them.
pub const MAX_SERVICES: usize = 200 * 256;

/// What a shared-service change does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    Add(String),
    Remove(String),
}

/// The mesh, the subscriptions and the state of the files.
pub struct Plan {
    pub dir: PathBuf,
    /// Service names; index 0 is [`SHARED`], then `svc-00000`...
    pub names: Vec<String>,
    /// Endpoints of every service as generated.
    endpoints: usize,
    /// Each proxy's watched services (indices into `names`), [`SHARED`] first.
    pub subscriptions: Vec<Vec<u32>>,
    /// The service the rolling update replaces the endpoints of: the most watched one after
    /// [`SHARED`].
    pub rolling: u32,
    /// The shared service's endpoints now.
    shared: Vec<String>,
    /// The rolling service's endpoints now.
    rolled: Vec<String>,
    /// Shared-service changes made so far.
    changes: usize,
    /// Rolling steps made so far.
    pub steps: usize,
    /// Routing changes made so far: each sets the shared service's `limits.connectTimeout`.
    routing_changes: usize,
}

impl Plan {
    /// Subscriptions for `proxies` proxies over `services` services, nothing written yet.
    pub fn new(
        dir: &Path,
        proxies: usize,
        services: usize,
        endpoints: usize,
        watches: usize,
        seed: u64,
    ) -> Result<Self> {
        if services == 0 || services > MAX_SERVICES {
            bail!("--services must be 1 to {MAX_SERVICES}");
        }
        if endpoints == 0 || endpoints > MAX_ENDPOINTS {
            bail!("--endpoints must be 1 to {MAX_ENDPOINTS}");
        }
        if watches == 0 || watches > services + 1 {
            bail!("--watches must be 1 to --services + 1 (the shared service counts)");
        }
        let mut names = vec![SHARED.to_owned()];
        names.extend((0..services).map(|i| format!("svc-{i:05}")));
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut watchers = vec![0usize; services + 1];
        let subscriptions: Vec<Vec<u32>> = (0..proxies)
            .map(|_| {
                let mut mine = vec![0u32];
                while mine.len() < watches {
                    let s = rng.u32(1..=services as u32);
                    if !mine.contains(&s) {
                        mine.push(s);
                        watchers[s as usize] += 1;
                    }
                }
                mine
            })
            .collect();
        // The most watched service (the lowest index among equals), so that even a small fleet
        // has subscribers of the rolling update.
        let rolling = (1..=services)
            .max_by_key(|&s| (watchers[s], std::cmp::Reverse(s)))
            .unwrap_or(1) as u32;
        Ok(Plan {
            dir: dir.to_owned(),
            endpoints,
            shared: (0..endpoints).map(shared_address).collect(),
            rolled: (0..endpoints).map(|j| address(rolling, j)).collect(),
            names,
            subscriptions,
            rolling,
            changes: 0,
            steps: 0,
            routing_changes: 0,
        })
    }

    pub fn services(&self) -> usize {
        self.names.len() - 1
    }

    /// Proxies that watch `service`.
    pub fn subscribers(&self, service: u32) -> Vec<u32> {
        (0..self.subscriptions.len() as u32)
            .filter(|&p| self.subscriptions[p as usize].contains(&service))
            .collect()
    }

    /// Writes every mesh file.
    pub fn write_all(&self) -> Result<()> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        self.write(SHARED_FILE, &self.shared_text())?;
        for file in 0..self.services().div_ceil(PER_FILE) {
            self.write(&file_name(file), &self.file_text(file))?;
        }
        Ok(())
    }

    /// The next shared-service change, written: odd changes add an endpoint of their own, even
    /// ones remove one of the generated endpoints, so every change makes a set not seen before.
    pub fn change_shared(&mut self) -> Result<Change> {
        self.changes += 1;
        let change = if self.changes % 2 == 1 {
            let added = change_address(self.changes);
            self.shared.push(added.clone());
            Change::Add(added)
        } else {
            let removed = shared_address(self.changes / 2 - 1);
            self.shared.retain(|a| *a != removed);
            Change::Remove(removed)
        };
        self.write(SHARED_FILE, &self.shared_text())?;
        Ok(change)
    }

    /// The next step of the rolling update, written: endpoint `k - 1` of the rolling service
    /// gives way to `10.252.0.k` (step `k`, from 1).
    pub fn roll(&mut self) -> Result<usize> {
        if self.steps >= self.endpoints {
            bail!("the rolling update has replaced every endpoint already");
        }
        self.steps += 1;
        self.rolled[self.steps - 1] = rolled_address(self.steps);
        let file = (self.rolling as usize - 1) / PER_FILE;
        self.write(&file_name(file), &self.file_text(file))?;
        Ok(self.steps)
    }

    /// The next routing change, written: a setting of the shared service (its
    /// `limits.connectTimeout`, 2 s, 3 s...), which changes the routing every proxy holds and
    /// none of the endpoints.
    pub fn change_routing(&mut self) -> Result<usize> {
        self.routing_changes += 1;
        self.write(SHARED_FILE, &self.shared_text())?;
        Ok(self.routing_changes)
    }

    fn shared_text(&self) -> String {
        let mut text = String::from("services:\n");
        service_text(&mut text, SHARED, &self.shared);
        if self.routing_changes > 0 {
            let _ = writeln!(
                text,
                "    limits:\n      connectTimeout: {}s",
                self.routing_changes + 1
            );
        }
        text
    }

    fn file_text(&self, file: usize) -> String {
        let mut text = String::from("services:\n");
        let first = file * PER_FILE + 1;
        let last = (first + PER_FILE).min(self.names.len());
        for s in first..last {
            if s == self.rolling as usize {
                service_text(&mut text, &self.names[s], &self.rolled);
            } else {
                let endpoints: Vec<String> =
                    (0..self.endpoints).map(|j| address(s as u32, j)).collect();
                service_text(&mut text, &self.names[s], &endpoints);
            }
        }
        text
    }

    /// Replaces `name` whole: a hidden temporary file renamed over it.
    fn write(&self, name: &str, text: &str) -> Result<()> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}

const SHARED_FILE: &str = "00-shared.yaml";

fn file_name(file: usize) -> String {
    format!("services-{file:03}.yaml")
}

fn service_text(out: &mut String, name: &str, endpoints: &[String]) {
    let _ = writeln!(
        out,
        "  - name: {name}\n    authorities: [{name}]\n    endpoints:"
    );
    for e in endpoints {
        let _ = writeln!(out, "      - {e}");
    }
}

/// Endpoint `j` of service `s` (from 1): `10.A.B.(j+1)`, `A.B` numbering the service.
pub fn address(s: u32, j: usize) -> String {
    let i = s - 1;
    format!("10.{}.{}.{}:{PORT}", i / 256, i % 256, j + 1)
}

fn shared_address(j: usize) -> String {
    format!("10.250.0.{}:{PORT}", j + 1)
}

/// The endpoint shared-service change `k` (from 1) adds.
fn change_address(k: usize) -> String {
    format!("10.251.{}.{}:{PORT}", k / 250, k % 250 + 1)
}

/// The endpoint step `k` (from 1) of the rolling update brings.
pub fn rolled_address(k: usize) -> String {
    format!("10.252.0.{k}:{PORT}")
}

/// The rolling step an address belongs to, if it is one of the rolling update's.
pub fn rolled_step(address: &str) -> Option<usize> {
    address
        .strip_prefix("10.252.0.")?
        .strip_suffix(":8080")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests;
