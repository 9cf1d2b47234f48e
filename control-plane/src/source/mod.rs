//! Sources: where the mesh comes from. Each turns what it watches into state for the
//! [`crate::index`]: [`mesh`] a directory of mesh files, [`kubernetes`] the Services and
//! EndpointSlices of a cluster. Each reports how it is doing with [`report`].

pub mod kubernetes;
pub mod mesh;

use std::sync::atomic::{AtomicBool, Ordering};

use crate::push::Push;

/// Records source `name`'s state in the push stage's list (for `herdctl check`) and in
/// `herd_control_source_problems{source}` (the name up to its first `:`), and makes `ready`
/// true once every listed source has synced. A source that has synced stays ready: its last
/// state serves while it has problems.
pub fn report(push: &Push, ready: &AtomicBool, name: &str, synced: bool, problems: Vec<String>) {
    let label = name.split(':').next().unwrap_or(name);
    push.metrics
        .source_problems
        .with_label_values(&[label])
        .set(problems.len() as i64);
    let mut sources = push.sources.lock().expect("sources lock");
    if let Some(source) = sources.iter_mut().find(|s| s.name == name) {
        source.synced |= synced;
        source.problems = problems;
    }
    let all = !sources.is_empty() && sources.iter().all(|s| s.synced);
    ready.store(all, Ordering::Release);
}
