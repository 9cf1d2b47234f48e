//! `routes[].retry`, `routes[].hedge` and `services[].retryBudget`.
//!
//! A route's `timeout` spans every attempt, so what must fit inside it (one attempt's
//! `perTryTimeout`, a fixed hedge `delay`) is checked against it, default or written.

use std::collections::HashMap;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::{Result, count, not_above, positive, problem};
use crate::model::{Backoff, Hedge, HedgeDelay, RetryBudget, RetryCondition, RetryPolicy};
use crate::raw;

/// The route's `timeout` as a limit on what happens within it.
#[derive(Clone, Copy)]
pub(super) struct RouteTimeout {
    pub value: Duration,
    pub written: bool,
}

impl RouteTimeout {
    /// `Some(message)` unless `d` fits inside the timeout (or the timeout is none).
    fn exceeded_by(self, d: Duration) -> Option<String> {
        if self.value.is_zero() || d < self.value {
            return None;
        }
        let default = if self.written { "" } else { ", its default" };
        Some(format!(
            "must be less than the route's timeout ({}{default}), found {}",
            show(self.value),
            show(d)
        ))
    }
}

fn show(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// `retry:`.
pub(super) fn retry(raw: raw::Retry, path: &str, timeout: RouteTimeout) -> Result<RetryPolicy> {
    let defaults = RetryPolicy::default();
    let key = |key: &str| format!("{path}.{key}");
    let range = RetryPolicy::ATTEMPTS_RANGE;
    let attempts = count(
        raw.attempts,
        &key("attempts"),
        defaults.attempts,
        u64::from(*range.start())..=u64::from(*range.end()),
    )?;
    let per_try_timeout = match raw.per_try_timeout {
        Some(node) if node.value.0.is_zero() => None,
        Some(node) => {
            if let Some(message) = timeout.exceeded_by(node.value.0) {
                return Err(problem(
                    &node,
                    key("perTryTimeout"),
                    format!("{message}: the timeout spans all attempts"),
                ));
            }
            Some(node.value.0)
        }
        None => None,
    };
    let conditions = match raw.conditions {
        Some(list) => conditions(list, &key("conditions"))?,
        None => defaults.conditions,
    };
    let backoff = match raw.backoff {
        Some(raw) => backoff(raw, &key("backoff"))?,
        None => defaults.backoff,
    };
    Ok(RetryPolicy {
        attempts,
        per_try_timeout,
        conditions,
        backoff,
        non_idempotent: raw
            .non_idempotent
            .map_or(defaults.non_idempotent, |b| b.value.0),
        buffer_limit: count(
            raw.buffer_limit,
            &key("bufferLimit"),
            defaults.buffer_limit,
            RetryPolicy::BUFFER_LIMIT_RANGE,
        )?,
    })
}

fn conditions(
    list: Spanned<Vec<Spanned<raw::RetryOn>>>,
    path: &str,
) -> Result<Vec<RetryCondition>> {
    if list.value.is_empty() {
        return Err(problem(
            &list,
            path,
            "at least one retry condition is required (for no retries, leave `retry` out)",
        ));
    }
    let mut seen: HashMap<RetryCondition, usize> = HashMap::new();
    let mut conditions = Vec::with_capacity(list.value.len());
    for (k, node) in list.value.iter().enumerate() {
        let at = format!("{path}[{k}]");
        let condition = match node.value {
            raw::RetryOn::ConnectFailure => RetryCondition::ConnectFailure,
            raw::RetryOn::RefusedStream => RetryCondition::RefusedStream,
            raw::RetryOn::Reset => RetryCondition::Reset,
            raw::RetryOn::GatewayError => RetryCondition::GatewayError,
            raw::RetryOn::Status5xx => RetryCondition::Status5xx,
            raw::RetryOn::Status(code @ 400..=599) => {
                RetryCondition::Status(u16::try_from(code).expect("400..=599 fits"))
            }
            raw::RetryOn::Status(code) => {
                return Err(problem(
                    node,
                    at,
                    format!("status {code} is not an error: retry on 400 to 599"),
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

fn backoff(raw: raw::Backoff, path: &str) -> Result<Backoff> {
    let base_path = format!("{path}.base");
    let max_path = format!("{path}.max");
    let base = positive(raw.base.clone(), &base_path, Backoff::DEFAULT_BASE)?;
    let max = positive(raw.max.clone(), &max_path, Backoff::DEFAULT_MAX)?;
    not_above((&raw.base, base, &base_path), (&raw.max, max, &max_path))?;
    Ok(Backoff { base, max })
}

/// `hedge:`.
pub(super) fn hedge(raw: raw::Hedge, path: &str, timeout: RouteTimeout) -> Result<Hedge> {
    let node = &raw.delay;
    let at = format!("{path}.delay");
    let delay = match node.value {
        raw::Delay::After(d) if d.is_zero() => {
            return Err(problem(
                node,
                at,
                "must be more than 0s: a hedge at once would double every request",
            ));
        }
        raw::Delay::After(d) => {
            if let Some(message) = timeout.exceeded_by(d) {
                return Err(problem(
                    node,
                    at,
                    format!("{message}: the hedge would never be sent"),
                ));
            }
            HedgeDelay::After(d)
        }
        raw::Delay::Percentile(p)
            if !(HedgeDelay::PERCENTILE_MIN..HedgeDelay::PERCENTILE_MAX_EXCLUSIVE).contains(&p) =>
        {
            return Err(problem(
                node,
                at,
                format!("percentile must be at least p1 and below p100, found p{p}"),
            ));
        }
        raw::Delay::Percentile(p) => HedgeDelay::Percentile(p),
    };
    Ok(Hedge { delay })
}

/// `retryBudget:`. An opaque service has one too, unused: it has no requests to retry, and
/// `/config` prints every service's budget, which must parse back.
pub(super) fn retry_budget(raw: Option<raw::RetryBudget>, path: &str) -> Result<RetryBudget> {
    let defaults = RetryBudget::default();
    let Some(raw) = raw else {
        return Ok(defaults);
    };
    let ratio = match raw.ratio {
        Some(ratio) if !RetryBudget::RATIO_RANGE.contains(&ratio.value.0) => {
            let range = RetryBudget::RATIO_RANGE;
            return Err(problem(
                &ratio,
                format!("{path}.ratio"),
                format!(
                    "must be between {:?} and {:?}, found {}",
                    range.start(),
                    range.end(),
                    ratio.value.0
                ),
            ));
        }
        Some(ratio) => ratio.value.0,
        None => defaults.ratio,
    };
    let range = RetryBudget::MIN_PER_SECOND_RANGE;
    let min_per_second = count(
        raw.min_per_second,
        &format!("{path}.minPerSecond"),
        defaults.min_per_second,
        u64::from(*range.start())..=u64::from(*range.end()),
    )?;
    let window = match raw.window {
        Some(window) if !RetryBudget::WINDOW_RANGE.contains(&window.value.0) => {
            let range = RetryBudget::WINDOW_RANGE;
            return Err(problem(
                &window,
                format!("{path}.window"),
                format!(
                    "must be between {}s and {}s, found {}",
                    range.start().as_secs(),
                    range.end().as_secs(),
                    show(window.value.0)
                ),
            ));
        }
        Some(window) => window.value.0,
        None => defaults.window,
    };
    Ok(RetryBudget {
        ratio,
        min_per_second,
        window,
    })
}
