//! How a service spreads its traffic and protects itself: `balancer`, `outlierDetection`,
//! `limits`.

use std::collections::HashMap;

use serde_saphyr::Spanned;

use super::{Problem, Result, count, is_token_byte, not_above, positive, problem};
use crate::model::{
    Algorithm, BalancerConfig, FailureCondition, HashOn, OutlierDetection, Protocol, ServiceLimits,
};
use crate::raw;

/// `balancer:`. A key of another algorithm than the one chosen is refused: it would do nothing,
/// and whoever wrote it expected it to.
pub(super) fn balancer(
    node: Option<Spanned<raw::Balancer>>,
    path: &str,
    protocol: Protocol,
) -> Result<BalancerConfig> {
    let defaults = BalancerConfig::default();
    let Some(node) = node else {
        return Ok(defaults);
    };
    let referenced = node.referenced;
    let raw = match node.value {
        raw::Form::Short(algorithm) => raw::BalancerMap {
            algorithm: Some(Spanned::new(algorithm, node.referenced, node.defined)),
            decay: None,
            default_rtt: None,
            hash_on: None,
            bounded_load: None,
        },
        raw::Form::Long(map) => map,
    };
    let algorithm = raw.algorithm.map_or(defaults.algorithm, |a| a.value.0);
    let only = |key: &str, wanted: Algorithm| {
        format!(
            "`{key}` only applies to {}, and this balancer is `{}`",
            wanted.as_str(),
            algorithm.as_str()
        )
    };
    let mut config = BalancerConfig {
        algorithm,
        ..defaults
    };

    for (key, field, value) in [
        ("decay", raw.decay, &mut config.decay),
        ("defaultRtt", raw.default_rtt, &mut config.default_rtt),
    ] {
        match field {
            Some(field) if algorithm != Algorithm::PeakEwma => {
                return Err(problem(
                    &field,
                    format!("{path}.{key}"),
                    only(key, Algorithm::PeakEwma),
                ));
            }
            field => *value = positive(field, &format!("{path}.{key}"), *value)?,
        }
    }

    match raw.hash_on {
        Some(hash_on) if algorithm != Algorithm::RingHash => {
            return Err(problem(
                &hash_on,
                format!("{path}.hashOn"),
                only("hashOn", Algorithm::RingHash),
            ));
        }
        Some(hash_on) => config.hash_on = Some(self::hash_on(hash_on, path, protocol)?),
        None if algorithm == Algorithm::RingHash => {
            return Err(Problem {
                at: Some(referenced),
                path: path.to_owned(),
                message:
                    "ring-hash needs `hashOn`, the key to hash: `clientIp`, `{ header: NAME }` \
                          or `{ cookie: NAME }`"
                        .to_owned(),
            });
        }
        None => {}
    }

    if let Some(load) = raw.bounded_load {
        let at = format!("{path}.boundedLoad");
        if algorithm != Algorithm::RingHash {
            return Err(problem(&load, at, only("boundedLoad", Algorithm::RingHash)));
        }
        if load.value.0 < 1.0 {
            return Err(problem(
                &load,
                at,
                format!(
                    "must be at least 1.0 (1.0 keeps every endpoint at the mean load), found {}",
                    load.value.0
                ),
            ));
        }
        config.bounded_load = load.value.0;
    }
    Ok(config)
}

fn hash_on(node: Spanned<raw::HashOn>, path: &str, protocol: Protocol) -> Result<HashOn> {
    let at = format!("{path}.hashOn");
    let forms = "`clientIp`, `{ header: NAME }` or `{ cookie: NAME }`";
    let (kind, name) = match &node.value {
        raw::Form::Short(text) if text == "clientIp" => return Ok(HashOn::ClientIp),
        raw::Form::Short(text) => {
            let message = match text.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
                "header" | "cookie" => {
                    format!("`{text}` needs a name: `{{ {text}: NAME }}`")
                }
                "clientip" | "ip" | "sourceip" | "remoteaddr" => {
                    format!("unknown value `{text}` (did you mean `clientIp`?); expected {forms}")
                }
                _ => format!("unknown value `{text}`; expected {forms}"),
            };
            return Err(problem(&node, at, message));
        }
        raw::Form::Long(raw::HashOnMap {
            header: Some(_),
            cookie: Some(cookie),
        }) => {
            return Err(problem(
                cookie,
                format!("{at}.cookie"),
                "`header` and `cookie` cannot both be given: hash on one key",
            ));
        }
        raw::Form::Long(raw::HashOnMap {
            header: Some(name),
            cookie: None,
        }) => ("header", name),
        raw::Form::Long(raw::HashOnMap {
            header: None,
            cookie: Some(name),
        }) => ("cookie", name),
        raw::Form::Long(raw::HashOnMap {
            header: None,
            cookie: None,
        }) => {
            return Err(problem(
                &node,
                at,
                format!("expected {forms}, found an empty mapping"),
            ));
        }
    };
    if protocol == Protocol::Opaque {
        return Err(problem(
            &node,
            at,
            format!(
                "an opaque service has no {kind}s to hash on: use `clientIp`, the only key of a \
                 TCP connection"
            ),
        ));
    }
    let value = name.value.trim();
    if value.is_empty() || !value.bytes().all(is_token_byte) {
        return Err(problem(
            name,
            format!("{at}.{kind}"),
            format!("invalid {kind} name `{}`", name.value),
        ));
    }
    Ok(match kind {
        "header" => HashOn::Header(value.to_ascii_lowercase()),
        _ => HashOn::Cookie(value.to_owned()),
    })
}

/// `outlierDetection:`.
pub(super) fn outlier_detection(
    raw: Option<raw::OutlierDetection>,
    path: &str,
) -> Result<OutlierDetection> {
    let defaults = OutlierDetection::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let min_path = format!("{path}.minEjection");
    let max_path = format!("{path}.maxEjection");
    let min_ejection = positive(raw.min_ejection.clone(), &min_path, defaults.min_ejection)?;
    let max_ejection = positive(raw.max_ejection.clone(), &max_path, defaults.max_ejection)?;
    not_above(
        (&raw.min_ejection, min_ejection, &min_path),
        (&raw.max_ejection, max_ejection, &max_path),
    )?;
    let failure_on = match raw.failure_on {
        Some(list) => failure_on(list, &format!("{path}.failureOn"))?,
        None => defaults.failure_on,
    };
    Ok(OutlierDetection {
        consecutive_failures: count(
            raw.consecutive_failures,
            &format!("{path}.consecutiveFailures"),
            defaults.consecutive_failures,
            0..=u64::MAX,
        )?,
        min_ejection,
        max_ejection,
        max_ejected_percent: count(
            raw.max_ejected_percent,
            &format!("{path}.maxEjectedPercent"),
            defaults.max_ejected_percent,
            0..=100,
        )?,
        failure_on,
    })
}

fn failure_on(
    list: Spanned<Vec<Spanned<raw::Condition>>>,
    path: &str,
) -> Result<Vec<FailureCondition>> {
    if list.value.is_empty() {
        return Err(problem(
            &list,
            path,
            "at least one failure condition is required (to turn outlier detection off, set \
             consecutiveFailures: 0)",
        ));
    }
    let mut seen: HashMap<FailureCondition, usize> = HashMap::new();
    let mut conditions = Vec::with_capacity(list.value.len());
    for (k, node) in list.value.iter().enumerate() {
        let at = format!("{path}[{k}]");
        let condition = match node.value {
            raw::Condition::ConnectFailure => FailureCondition::ConnectFailure,
            raw::Condition::Timeout => FailureCondition::Timeout,
            raw::Condition::Status5xx => FailureCondition::Status5xx,
            raw::Condition::GatewayError => FailureCondition::GatewayError,
            raw::Condition::Status(code @ 500..=599) => {
                FailureCondition::Status(u16::try_from(code).expect("500..=599 fits"))
            }
            raw::Condition::Status(code) => {
                return Err(problem(
                    node,
                    at,
                    format!(
                        "status {code} is not a server error: an endpoint fails with 500 to 599"
                    ),
                ));
            }
        };
        if let Some(first) = seen.get(&condition) {
            return Err(problem(
                node,
                at,
                format!("`{condition}` is already listed as {path}[{first}]"),
            ));
        }
        seen.insert(condition, k);
        conditions.push(condition);
    }
    Ok(conditions)
}

/// `limits:`.
pub(super) fn limits(raw: Option<raw::Limits>, path: &str) -> Result<ServiceLimits> {
    let defaults = ServiceLimits::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let key = |key: &str| format!("{path}.{key}");
    Ok(ServiceLimits {
        connect_timeout: positive(
            raw.connect_timeout,
            &key("connectTimeout"),
            defaults.connect_timeout,
        )?,
        idle_timeout: positive(raw.idle_timeout, &key("idleTimeout"), defaults.idle_timeout)?,
        max_connections: count(
            raw.max_connections,
            &key("maxConnections"),
            defaults.max_connections,
            1..=u64::MAX,
        )?,
        max_pending_requests: count(
            raw.max_pending_requests,
            &key("maxPendingRequests"),
            defaults.max_pending_requests,
            1..=u64::MAX,
        )?,
        fail_fast_timeout: positive(
            raw.fail_fast_timeout,
            &key("failFastTimeout"),
            defaults.fail_fast_timeout,
        )?,
        max_concurrent_streams: count(
            raw.max_concurrent_streams,
            &key("maxConcurrentStreams"),
            defaults.max_concurrent_streams,
            1..=u64::MAX,
        )?,
        tunnel_idle_timeout: raw.tunnel_idle_timeout.map(|d| d.value.0),
    })
}
