//! herd-control: the control plane. Three stages, one module each, the shape of every good
//! controller:
//!
//! [`source`] (what the mesh is: mesh files, and Kubernetes next) -> [`index`] (pure state: what
//! each proxy needs, computed once per change) -> [`push`] (gRPC streams to the proxies).
//!
//! Beside them, [`identity`] is the mesh's certificate authority: it signs each proxy's
//! short-lived certificate for the identity its token proves.
//!
//! [`inject`] adds the proxy to pods: an admission webhook, and `herdctl inject` offline.
//!
//! [`admin`] serves `/live`, `/ready` and `/metrics`; [`metrics`] holds the series; [`accept`]
//! takes connections on the gRPC ports, TLS or plaintext; [`install`] is `herdctl install`'s
//! manifests and [`cluster`] `herdctl check --kubeconfig`'s checks.
#![forbid(unsafe_code)]

pub mod accept;
pub mod admin;
pub mod cluster;
pub mod identity;
pub mod index;
pub mod inject;
pub mod install;
pub mod metrics;
pub mod push;
pub mod source;
