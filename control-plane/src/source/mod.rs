//! Sources: where the mesh comes from. Each turns what it watches into state for the
//! [`crate::index`]: [`mesh`] a directory of mesh files. (The Kubernetes source, Services and
//! EndpointSlices through kube-rs watchers, is the next to come.)

pub mod mesh;
