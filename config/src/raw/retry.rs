//! `routes[].retry`, `routes[].hedge` and `services[].retryBudget` as written.

use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_saphyr::Spanned;

use super::{Count, Dur, Float};

/// `routes[].retry`. (Its list is `conditions`, never `on`: YAML 1.1 parsers read that key as
/// `true`; the unknown-key message says so.)
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Retry {
    pub attempts: Option<Spanned<Count>>,
    pub per_try_timeout: Option<Spanned<Dur>>,
    pub conditions: Option<Spanned<Vec<Spanned<RetryOn>>>>,
    pub backoff: Option<Backoff>,
    pub non_idempotent: Option<Spanned<Bool>>,
    pub buffer_limit: Option<Spanned<Count>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backoff {
    pub base: Option<Spanned<Dur>>,
    pub max: Option<Spanned<Dur>>,
}

/// `routes[].hedge`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hedge {
    pub delay: Spanned<Delay>,
}

/// `services[].retryBudget`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    pub ratio: Option<Spanned<Float>>,
    pub min_per_second: Option<Spanned<Count>>,
    pub window: Option<Spanned<Dur>>,
}

/// `true` or `false`, and nothing else: YAML 1.1's `yes`, `on` and `y` are refused rather than
/// read differently by different parsers.
#[derive(Debug, Clone, Copy)]
pub struct Bool(pub bool);

impl<'de> Deserialize<'de> for Bool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.trim() {
            "true" => Ok(Bool(true)),
            "false" => Ok(Bool(false)),
            _ => Err(D::Error::custom(format!(
                "expected true or false, found `{text}`"
            ))),
        }
    }
}

/// `hedge.delay`: a duration, or `p` and a percentile. Ranges are checked by validation.
#[derive(Debug, Clone, Copy)]
pub enum Delay {
    After(Duration),
    Percentile(f64),
}

impl<'de> Deserialize<'de> for Delay {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let trimmed = text.trim();
        let forms = "expected a duration, e.g. 50ms, or a percentile of the route's latency, \
                     e.g. p95 or p99.9";
        let percentile = trimmed
            .strip_prefix('p')
            .filter(|n| n.starts_with(|c: char| c.is_ascii_digit() || c == '.'));
        if let Some(number) = percentile {
            return match number.parse::<f64>() {
                Ok(p) if is_decimal(number) => Ok(Delay::Percentile(p)),
                _ => Err(D::Error::custom(format!(
                    "invalid percentile `{trimmed}`: write `p` and a number, e.g. p95 or p99.9"
                ))),
            };
        }
        if is_decimal(trimmed) {
            return Err(D::Error::custom(format!(
                "`{trimmed}` has no unit: a fixed delay needs one (`{trimmed}ms`), and a \
                 percentile is written `p{trimmed}`"
            )));
        }
        let lower = trimmed.to_ascii_lowercase();
        let number = lower
            .strip_prefix('p')
            .or_else(|| lower.strip_suffix('%'))
            .or_else(|| lower.strip_suffix("th"));
        if let Some(number) = number.filter(|n| is_decimal(n)) {
            return Err(D::Error::custom(format!(
                "invalid delay `{trimmed}` (a percentile is written `p{number}`); {forms}"
            )));
        }
        crate::duration::parse(trimmed)
            .map(Delay::After)
            .map_err(|_| D::Error::custom(format!("invalid delay `{trimmed}`; {forms}")))
    }
}

/// Digits, optionally a dot and more digits: `95`, `99.9`.
fn is_decimal(text: &str) -> bool {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(whole) && digits(fraction)
}

/// `retry.conditions[]`: a name, or a status code written as a YAML integer. The code's range
/// is checked by validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    ConnectFailure,
    RefusedStream,
    Reset,
    GatewayError,
    Status5xx,
    Status(u64),
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RetryVisitor;

        const EXPECTED: &str = "expected one of: connect-failure, refused-stream, reset, \
                                gateway-error, 5xx, or a status code from 400 to 599";

        fn unknown<E: serde::de::Error>(value: impl std::fmt::Display, hint: &str) -> E {
            E::custom(format!(
                "unknown retry condition `{value}`{hint}; {EXPECTED}"
            ))
        }

        impl serde::de::Visitor<'_> for RetryVisitor {
            type Value = RetryOn;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a retry condition or a status code")
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RetryOn, E> {
                Ok(match v {
                    "connect-failure" => RetryOn::ConnectFailure,
                    "refused-stream" => RetryOn::RefusedStream,
                    "reset" => RetryOn::Reset,
                    "gateway-error" => RetryOn::GatewayError,
                    "5xx" => RetryOn::Status5xx,
                    code if !code.is_empty() && code.bytes().all(|b| b.is_ascii_digit()) => {
                        RetryOn::Status(code.parse().unwrap_or(u64::MAX))
                    }
                    other => {
                        let canonical = other.to_ascii_lowercase().replace(['_', ' '], "-");
                        let hint = match canonical.as_str() {
                            "connect-failure" | "connect-error" | "connection-failure"
                            | "connect-timeout" | "refused" | "connection-refused" => {
                                " (did you mean `connect-failure`?)"
                            }
                            "refused-stream" | "refused-streams" => {
                                " (did you mean `refused-stream`?)"
                            }
                            "reset" | "resets" | "connection-reset" | "stream-reset" => {
                                " (did you mean `reset`?)"
                            }
                            "5xx" | "5**" | "server-error" => " (did you mean `5xx`?)",
                            "gateway-error" | "gateway" | "gateway-errors" => {
                                " (did you mean `gateway-error`?)"
                            }
                            "timeout" | "per-try-timeout" => {
                                " (set `perTryTimeout`: an attempt that exceeds it is retried)"
                            }
                            "4xx" | "retriable-4xx" => {
                                " (list the codes, e.g. 429: most 4xx would fail again)"
                            }
                            _ => "",
                        };
                        return Err(unknown(other, hint));
                    }
                })
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RetryOn, E> {
                Ok(RetryOn::Status(v))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<RetryOn, E> {
                Err(unknown(v, ""))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<RetryOn, E> {
                Err(unknown(v, ""))
            }

            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<RetryOn, E> {
                Err(unknown(v, ""))
            }
        }

        d.deserialize_any(RetryVisitor)
    }
}
