//! herd-config: the YAML model of a herd mesh.
#![forbid(unsafe_code)]

pub mod authority;
mod duration;
mod model;

pub use authority::Authority;
pub use model::*;
