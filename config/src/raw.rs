//! The file as written: serde structs that mirror the YAML key for key.
//!
//! Deserializing into these catches everything a type can catch (an unknown key, a bad address,
//! a duration without a unit, a protocol that does not exist) with serde-saphyr's line:column
//! and serde_path_to_error's field path. Everything else (ranges, uniqueness, which keys go
//! together) is [`crate::validate`]'s job, so each field that a rule may point at is
//! [`Spanned`], and every optional field stays an `Option` so validation knows what was written
//! and fills in the defaults itself.
//!
//! Two rules keep the locations right:
//! - no `#[serde(flatten)]`: serde buffers flattened fields and `Spanned` loses its location, so
//!   the keys every listener shares are written out in each struct;
//! - leaf values are read as strings and parsed here, so every message names the offending
//!   value (`invalid socket address `127.0.0.1`...`) instead of serde's `invalid u64`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use crate::error::ConfigError;

/// The whole file. `None` from [`parse`] means the document is empty.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Root {
    pub proxy: Option<Proxy>,
    pub services: Option<Vec<Service>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxy {
    pub inbound: Option<Inbound>,
    pub outbound: Option<Outbound>,
    pub admin: Option<Admin>,
    pub drain_timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    pub listen: Spanned<Addr>,
    pub app: Spanned<Addr>,
    pub protocol: Option<Spanned<Protocol>>,
    // Downstream.
    pub max_connections: Option<Spanned<Count>>,
    pub header_timeout: Option<Spanned<Dur>>,
    pub max_header_bytes: Option<Spanned<Count>>,
    pub detect_timeout: Option<Spanned<Dur>>,
    pub timeout: Option<Spanned<Dur>>,
    // Upstream.
    pub connect_timeout: Option<Spanned<Dur>>,
    pub idle_timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outbound {
    pub listen: Spanned<Addr>,
    // Downstream.
    pub max_connections: Option<Spanned<Count>>,
    pub header_timeout: Option<Spanned<Dur>>,
    pub max_header_bytes: Option<Spanned<Count>>,
    pub detect_timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<Spanned<Addr>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub name: Spanned<String>,
    pub authorities: Option<Vec<Spanned<String>>>,
    pub protocol: Option<Spanned<Protocol>>,
    pub endpoints: Spanned<Vec<Spanned<Addr>>>,
    pub listen: Option<Spanned<Addr>>,
    // Upstream.
    pub connect_timeout: Option<Spanned<Dur>>,
    pub idle_timeout: Option<Spanned<Dur>>,
    pub routes: Option<Spanned<Vec<Route>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub matches: Option<RouteMatch>,
    pub timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteMatch {
    pub path: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub methods: Option<Vec<Spanned<String>>>,
}

/// `ip:port`; IPv6 in brackets.
#[derive(Debug)]
pub struct Addr(pub SocketAddr);

impl<'de> Deserialize<'de> for Addr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.trim().parse().map(Addr).map_err(|_| {
            D::Error::custom(format!(
                "invalid socket address `{text}`: expected ip:port, e.g. 127.0.0.1:4143 or \"[::1]:4143\""
            ))
        })
    }
}

/// A humantime duration; see [`crate::duration`].
#[derive(Debug)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::duration::deserialize(d).map(Dur)
    }
}

/// A whole number; its range is checked by validation, which knows what it counts.
#[derive(Debug)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.trim()
            .parse()
            .map(Count)
            .map_err(|_| D::Error::custom(format!("expected a whole number, found `{text}`")))
    }
}

/// `protocol:`; read by hand so the message can say what plain TCP is called here.
#[derive(Debug, Clone, Copy)]
pub struct Protocol(pub crate::model::Protocol);

impl<'de> Deserialize<'de> for Protocol {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::model::Protocol::*;
        let text = String::deserialize(d)?;
        match text.as_str() {
            "http" => Ok(Protocol(Http)),
            "http2" => Ok(Protocol(Http2)),
            "opaque" => Ok(Protocol(Opaque)),
            other => {
                let hint = match other.to_ascii_lowercase().as_str() {
                    "tcp" | "tls" | "raw" => " (plain TCP is `opaque`)",
                    "h2" | "h2c" | "grpc" => " (HTTP/2 is `http2`)",
                    "http1" | "http/1.1" | "https" => " (HTTP/1 is `http`)",
                    _ => "",
                };
                Err(D::Error::custom(format!(
                    "unknown protocol `{other}`{hint}; expected one of: http, http2, opaque"
                )))
            }
        }
    }
}

/// Reads `text` into the raw model; the error names `file`, the location and the field path.
///
/// An empty document (no text, only comments, a bare `---`) is `Ok(None)`.
pub fn parse(text: &str, file: &str) -> Result<Option<Root>, ConfigError> {
    let options = serde_saphyr::options! { with_snippet: false };
    let mut path = None;
    let result = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(de, &mut track);
        let root = Option::<Root>::deserialize(de);
        if root.is_err() {
            path = Some(track.path());
        }
        root
    });
    result.map_err(|err| ConfigError::yaml(file, text, &err, path.as_ref()))
}
