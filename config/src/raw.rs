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
//!
//! A key that may be written short or long (`endpoints[]`, `dns`, `balancer`, `hashOn`) is a
//! [`Form`]: no `#[serde(untagged)]`, which buffers like flatten and loses every location.

use std::net::SocketAddr;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use crate::error::ConfigError;

mod retry;

pub use retry::{Backoff, Bool, Delay, Hedge, Retry, RetryBudget, RetryOn};

/// The whole file. `None` from [`parse`] means the document is empty.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Root {
    pub proxy: Option<Proxy>,
    /// Spanned so that a rule about the whole service can point at it.
    pub services: Option<Vec<Spanned<Service>>>,
    pub policies: Option<Vec<Spanned<Policy>>>,
}

/// `policies[]`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    pub name: Spanned<String>,
    pub server: Option<Spanned<String>>,
    pub ports: Option<Spanned<Vec<Spanned<Count>>>>,
    pub allow: Option<Spanned<Vec<Spanned<String>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Proxy {
    /// Spanned so that a key missing from it (`app`, without `transparent`) can point at it.
    pub inbound: Option<Spanned<Inbound>>,
    pub outbound: Option<Outbound>,
    pub admin: Option<Admin>,
    pub resolver: Option<Resolver>,
    pub drain_timeout: Option<Spanned<Dur>>,
    pub tunnel_idle_timeout: Option<Spanned<Dur>>,
    pub control: Option<Spanned<Control>>,
    pub identity: Option<Spanned<Identity>>,
}

/// `proxy.identity`: where this proxy gets its certificate and what it proves itself with.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Identity {
    pub addresses: Option<Spanned<Vec<Spanned<Addr>>>>,
    pub dns: Option<Spanned<String>>,
    pub id: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub trust_anchors: Option<Spanned<String>>,
    pub trust_anchors_pem: Option<Spanned<String>>,
    pub control_identity: Option<Spanned<String>>,
}

/// `proxy.control`: where the control plane is and who this proxy is.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Control {
    pub addresses: Option<Spanned<Vec<Spanned<Addr>>>>,
    pub dns: Option<Spanned<String>>,
    pub id: Option<Spanned<String>>,
    pub namespace: Option<Spanned<String>>,
    pub wait_for_state: Option<Spanned<Bool>>,
    pub unwatch_after: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Inbound {
    pub listen: Spanned<Addr>,
    /// Required unless `transparent` is true.
    pub app: Option<Spanned<Addr>>,
    pub transparent: Option<Spanned<Bool>>,
    pub protocol: Option<Spanned<Protocol>>,
    pub mtls: Option<Spanned<Mtls>>,
    pub client_identity_header: Option<Spanned<String>>,
    pub default_policy: Option<Spanned<DefaultPolicy>>,
    pub opaque_ports: Option<Spanned<Vec<Spanned<PortRange>>>>,
    // Downstream.
    pub max_connections: Option<Spanned<Count>>,
    pub header_timeout: Option<Spanned<Dur>>,
    pub max_header_bytes: Option<Spanned<Count>>,
    pub detect_timeout: Option<Spanned<Dur>>,
    pub access_log: Option<AccessLog>,
    pub request_id: Option<Spanned<Bool>>,
    pub timeout: Option<Spanned<Dur>>,
    // Upstream.
    pub connect_timeout: Option<Spanned<Dur>>,
    pub idle_timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outbound {
    pub listen: Spanned<Addr>,
    pub transparent: Option<Spanned<Bool>>,
    pub egress: Option<Spanned<Egress>>,
    // Downstream.
    pub max_connections: Option<Spanned<Count>>,
    pub header_timeout: Option<Spanned<Dur>>,
    pub max_header_bytes: Option<Spanned<Count>>,
    pub detect_timeout: Option<Spanned<Dur>>,
    pub access_log: Option<AccessLog>,
    pub request_id: Option<Spanned<Bool>>,
}

/// `accessLog`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessLog {
    pub format: crate::model::AccessLogFormat,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Admin {
    pub listen: Option<Spanned<Addr>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resolver {
    pub nameservers: Option<Vec<Spanned<Addr>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Service {
    pub name: Spanned<String>,
    pub authorities: Option<Vec<Spanned<String>>>,
    pub protocol: Option<Spanned<Protocol>>,
    pub endpoints: Option<Spanned<Vec<Spanned<Endpoint>>>>,
    pub dns: Option<Spanned<Dns>>,
    pub listen: Option<Spanned<Addr>>,
    pub cluster_ips: Option<Spanned<Vec<Spanned<Addr>>>>,
    pub balancer: Option<Spanned<Balancer>>,
    pub outlier_detection: Option<OutlierDetection>,
    pub limits: Option<Limits>,
    pub retry_budget: Option<RetryBudget>,
    pub routes: Option<Spanned<Vec<Route>>>,
}

/// `endpoints[]`: `ip:port`, or `{address, weight, identity}`.
pub type Endpoint = Form<Addr, EndpointMap>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EndpointMap {
    pub address: Spanned<Addr>,
    pub weight: Option<Spanned<Count>>,
    /// A SPIFFE ID, checked by validation (which knows the identity crate's parser).
    pub identity: Option<Spanned<String>>,
}

/// `dns:`: `NAME:PORT`, or `{name: NAME:PORT, minTtl, maxTtl}`. The name is checked by
/// validation, which knows what a DNS name is.
pub type Dns = Form<String, DnsMap>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsMap {
    pub name: Spanned<String>,
    pub min_ttl: Option<Spanned<Dur>>,
    pub max_ttl: Option<Spanned<Dur>>,
}

/// `balancer:`: an algorithm alone, or the mapping.
pub type Balancer = Form<Algorithm, BalancerMap>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BalancerMap {
    pub algorithm: Option<Spanned<Algorithm>>,
    pub decay: Option<Spanned<Dur>>,
    pub default_rtt: Option<Spanned<Dur>>,
    pub hash_on: Option<Spanned<HashOn>>,
    pub bounded_load: Option<Spanned<Float>>,
}

/// `hashOn:`: `clientIp`, or `{header: NAME}` or `{cookie: NAME}`; validation checks that
/// the mapping has exactly one of its keys.
pub type HashOn = Form<String, HashOnMap>;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HashOnMap {
    pub header: Option<Spanned<String>>,
    pub cookie: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    pub consecutive_failures: Option<Spanned<Count>>,
    pub min_ejection: Option<Spanned<Dur>>,
    pub max_ejection: Option<Spanned<Dur>>,
    pub max_ejected_percent: Option<Spanned<Count>>,
    pub failure_on: Option<Spanned<Vec<Spanned<Condition>>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    pub connect_timeout: Option<Spanned<Dur>>,
    pub idle_timeout: Option<Spanned<Dur>>,
    pub max_connections: Option<Spanned<Count>>,
    pub max_pending_requests: Option<Spanned<Count>>,
    pub fail_fast_timeout: Option<Spanned<Dur>>,
    pub max_concurrent_streams: Option<Spanned<Count>>,
    pub tunnel_idle_timeout: Option<Spanned<Dur>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Route {
    pub name: Option<Spanned<String>>,
    #[serde(rename = "match")]
    pub matches: Option<RouteMatch>,
    pub timeout: Option<Spanned<Dur>>,
    pub retry: Option<Retry>,
    pub hedge: Option<Hedge>,
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
#[derive(Debug, Clone, Copy)]
pub struct Dur(pub Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        crate::duration::deserialize(d).map(Dur)
    }
}

/// A whole number; its range is checked by validation, which knows what it counts.
#[derive(Debug, Clone, Copy)]
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

/// A port (`5432`) or an inclusive range of ports (`8000-8010`), each 1 to 65535.
#[derive(Debug, Clone, Copy)]
pub struct PortRange(pub crate::model::PortRange);

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        crate::model::PortRange::parse(&text)
            .map(PortRange)
            .map_err(D::Error::custom)
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

/// `proxy.inbound.mtls`; read by hand so the message can list what is accepted.
#[derive(Debug, Clone, Copy)]
pub struct Mtls(pub crate::model::Mtls);

impl<'de> Deserialize<'de> for Mtls {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::model::Mtls::*;
        let text = String::deserialize(d)?;
        if let Some(m) = [Permissive, Strict]
            .into_iter()
            .find(|m| m.as_str() == text)
        {
            return Ok(Mtls(m));
        }
        let hint = match text.to_ascii_lowercase().as_str() {
            "true" | "on" | "required" | "require" | "enforce" | "enforced" => {
                " (did you mean `strict`?)"
            }
            "false" | "off" | "optional" | "both" | "disabled" => " (did you mean `permissive`?)",
            _ => "",
        };
        Err(D::Error::custom(format!(
            "unknown mtls mode `{text}`{hint}; expected one of: permissive, strict"
        )))
    }
}

/// `proxy.inbound.defaultPolicy`; read by hand so the message can list what is accepted.
#[derive(Debug, Clone, Copy)]
pub struct DefaultPolicy(pub crate::model::DefaultPolicy);

impl<'de> Deserialize<'de> for DefaultPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::model::DefaultPolicy as P;
        let text = String::deserialize(d)?;
        if let Some(p) = P::ALL.into_iter().find(|p| p.as_str() == text) {
            return Ok(DefaultPolicy(p));
        }
        let names: Vec<&str> = P::ALL.iter().map(|p| p.as_str()).collect();
        Err(D::Error::custom(format!(
            "unknown default policy `{text}`; expected one of: {}",
            names.join(", ")
        )))
    }
}

/// `proxy.outbound.egress`; read by hand so the message can list what is accepted.
#[derive(Debug, Clone, Copy)]
pub struct Egress(pub crate::model::Egress);

impl<'de> Deserialize<'de> for Egress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::model::Egress::*;
        let text = String::deserialize(d)?;
        if let Some(e) = [Any, MeshOnly].into_iter().find(|e| e.as_str() == text) {
            return Ok(Egress(e));
        }
        let squashed: String = text
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_lowercase())
            .collect();
        let hint = match squashed.as_str() {
            "meshonly" | "mesh" | "none" | "deny" | "registryonly" => {
                " (did you mean `mesh-only`?)"
            }
            "all" | "allow" | "allowany" => " (did you mean `any`?)",
            _ => "",
        };
        Err(D::Error::custom(format!(
            "unknown egress `{text}`{hint}; expected one of: any, mesh-only"
        )))
    }
}

/// A key with a short form and a long one: a scalar `S` (`10.0.1.5:3000`) or a mapping `M`
/// (`{ address: 10.0.1.5:3000, weight: 3 }`).
///
/// The short form has no location of its own: wrap the whole in [`Spanned`]. The long form's
/// fields are read by serde-saphyr itself, so a `Spanned` field there keeps its location.
#[derive(Debug)]
pub enum Form<S, M> {
    Short(S),
    Long(M),
}

impl<'de, S: Deserialize<'de>, M: Deserialize<'de>> Deserialize<'de> for Form<S, M> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::value::{MapAccessDeserializer, StringDeserializer};
        use serde::de::{IntoDeserializer, MapAccess, SeqAccess, Unexpected, Visitor};
        use std::marker::PhantomData;

        struct FormVisitor<S, M>(PhantomData<(S, M)>);

        impl<S, M> FormVisitor<S, M> {
            /// A scalar read as text, as every leaf here is: `3000` is the string `3000`.
            fn short<'de, E: serde::de::Error>(text: String) -> Result<Form<S, M>, E>
            where
                S: Deserialize<'de>,
            {
                let d: StringDeserializer<E> = text.into_deserializer();
                S::deserialize(d).map(Form::Short)
            }
        }

        impl<'de, S: Deserialize<'de>, M: Deserialize<'de>> Visitor<'de> for FormVisitor<S, M> {
            type Value = Form<S, M>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a single value or a mapping")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Self::short(v.to_owned())
            }

            fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
                Self::short(v)
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Self::short(v.to_string())
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Self::short(v.to_string())
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Self::short(v.to_string())
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Self::short(v.to_string())
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                M::deserialize(MapAccessDeserializer::new(map)).map(Form::Long)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Self::Value, A::Error> {
                Err(A::Error::invalid_type(Unexpected::Other("a list"), &self))
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Err(E::custom("value is empty"))
            }
        }

        d.deserialize_any(FormVisitor(PhantomData))
    }
}

/// A number with a fraction; its range is checked by validation.
#[derive(Debug)]
pub struct Float(pub f64);

impl<'de> Deserialize<'de> for Float {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Float(n)),
            _ => Err(D::Error::custom(format!(
                "expected a number, e.g. 1.25, found `{text}`"
            ))),
        }
    }
}

/// `balancer.algorithm`; read by hand so the message can translate other proxies' names.
#[derive(Debug, Clone, Copy)]
pub struct Algorithm(pub crate::model::Algorithm);

impl<'de> Deserialize<'de> for Algorithm {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::model::Algorithm::*;
        let text = String::deserialize(d)?;
        let all = [PeakEwma, LeastRequest, RoundRobin, RingHash];
        if let Some(a) = all.iter().find(|a| a.as_str() == text) {
            return Ok(Algorithm(*a));
        }
        let squashed: String = text
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .flat_map(|c| c.to_lowercase())
            .collect();
        let hint = match squashed.as_str() {
            "peakewma" | "ewma" | "p2cewma" => " (did you mean `peak-ewma`?)",
            "leastrequest" | "leastrequests" | "p2c" => " (did you mean `least-request`?)",
            "leastconn" | "leastconns" | "leastconnection" | "leastconnections" => {
                " (nginx's least_conn is `least-request`)"
            }
            "roundrobin" | "rr" => " (did you mean `round-robin`?)",
            "ringhash" | "hash" | "consistenthash" | "consistenthashing" | "maglev" | "iphash" => {
                " (consistent hashing is `ring-hash`)"
            }
            _ => "",
        };
        Err(D::Error::custom(format!(
            "unknown algorithm `{text}`{hint}; expected one of: peak-ewma, least-request, round-robin, ring-hash"
        )))
    }
}

/// `outlierDetection.failureOn[]`: a name, or a status code written as a YAML integer. The
/// code's range is checked by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    ConnectFailure,
    Timeout,
    Status5xx,
    GatewayError,
    Status(u64),
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FailureVisitor;

        const EXPECTED: &str = "expected one of: connect-failure, timeout, 5xx, gateway-error, \
                                or a status code from 500 to 599";

        impl serde::de::Visitor<'_> for FailureVisitor {
            type Value = Condition;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a failure condition or a status code")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Condition, E> {
                Ok(match v {
                    "connect-failure" => Condition::ConnectFailure,
                    "timeout" => Condition::Timeout,
                    "5xx" => Condition::Status5xx,
                    "gateway-error" => Condition::GatewayError,
                    code if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) => {
                        Condition::Status(code.parse().unwrap_or(u64::MAX))
                    }
                    other => {
                        let hint = match other.to_ascii_lowercase().replace('_', "-").as_str() {
                            "connect-failure" | "connect-error" | "connection-failure"
                            | "reset" | "refused" | "connect-timeout" => {
                                " (connection errors are `connect-failure`)"
                            }
                            "5xx" | "5**" | "server-error" => " (did you mean `5xx`?)",
                            "gateway-error" | "gateway" | "gateway-errors" => {
                                " (did you mean `gateway-error`?)"
                            }
                            _ => "",
                        };
                        return Err(E::custom(format!(
                            "unknown failure condition `{other}`{hint}; {EXPECTED}"
                        )));
                    }
                })
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Condition, E> {
                Ok(Condition::Status(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Condition, E> {
                Err(E::custom(format!(
                    "unknown failure condition `{v}`; {EXPECTED}"
                )))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Condition, E> {
                Err(E::custom(format!(
                    "unknown failure condition `{v}`; {EXPECTED}"
                )))
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Condition, E> {
                Err(E::custom(format!(
                    "unknown failure condition `{v}`; {EXPECTED}"
                )))
            }
        }

        d.deserialize_any(FailureVisitor)
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
