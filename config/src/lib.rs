//! herd-config: the YAML model of a herd mesh.
//!
//! [`parse`] turns the text of a mesh file into a [`Config`] in two steps, each its own module:
//! `raw` deserializes the YAML as written (types, unknown keys, line:column of every node that
//! a rule may point at), then `validate` checks what types cannot (ranges, uniqueness, which keys
//! go together) and fills in every default. Either step refuses the whole file with one
//! [`ConfigError`] that says where and what: `mesh.yaml:12:15: services[1].listen: ...`.
#![forbid(unsafe_code)]

pub mod authority;
mod duration;
mod error;
mod model;
mod raw;
mod validate;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_errors;

use std::path::Path;

pub use authority::Authority;
pub use error::ConfigError;
pub use model::*;
pub use validate::is_service_name;

/// Reads and parses the mesh file at `path`; messages name the file as given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    parse(&read(path)?, &path.display().to_string())
}

/// Reads the text of the mesh file at `path`, for a caller that looks at the text before
/// [`parse`] (the proxy's reload remembers a rejected file's text); the error names the file as
/// given.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::io(&path.display().to_string(), &e))
}

/// Parses a mesh served by herd-control (a file of its `--mesh` directory, or the routing state
/// it sends): `services` and `policies`, whose services' `endpoints` may be left to the control plane. `proxy`, for
/// the proxy that will run them, refuses services that would bind its own listeners.
pub fn parse_mesh(
    text: &str,
    file: &str,
    proxy: Option<&ProxySettings>,
) -> Result<Mesh, ConfigError> {
    let root = raw::parse(text, file)?.unwrap_or_default();
    validate::mesh(root, proxy).map_err(|p| ConfigError::new(file, p.at, Some(p.path), &p.message))
}

/// Parses the text of a mesh file; `file` names it in error messages. An empty document is
/// the default configuration.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let root = raw::parse(text, file)?.unwrap_or_default();
    validate::config(root).map_err(|p| ConfigError::new(file, p.at, Some(p.path), &p.message))
}
