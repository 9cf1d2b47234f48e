//! Retries, hedging and retry budgets: `routes[].retry`, `routes[].hedge`,
//! `services[].retryBudget`.
//!
//! Retries are off unless a route has a `retry` block, and bounded always: per request by
//! `attempts` and the route's `timeout`, per service by its [`RetryBudget`].

use std::ops::RangeInclusive;
use std::time::Duration;

use serde::Serialize;

/// `services[].routes[].retry`: when and how often a failed request is tried again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    /// Retries after the first try. Default 1; 1 to 10.
    pub attempts: u32,
    /// How long one attempt may take to send response headers; on expiry the attempt is
    /// cancelled and retried. `None` (absent, or `0s`): only the route's timeout applies.
    /// Less than the route's timeout when that is not zero.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "crate::duration::serialize_option"
    )]
    pub per_try_timeout: Option<Duration>,
    /// What is retried. Default [`RetryPolicy::DEFAULT_CONDITIONS`]; not empty, no duplicates.
    pub conditions: Vec<RetryCondition>,
    pub backoff: Backoff,
    /// Retry response conditions of non-idempotent methods (POST, PATCH, ...) too. Default false.
    pub non_idempotent: bool,
    /// Largest request body kept for replay, in bytes; a larger body is streamed and the
    /// request not retried (unless none of it was sent). Default 65536; 0 to 16777216.
    pub buffer_limit: usize,
}

impl RetryPolicy {
    pub const DEFAULT_ATTEMPTS: u32 = 1;
    /// Accepted values of `attempts`.
    pub const ATTEMPTS_RANGE: RangeInclusive<u32> = 1..=10;
    /// Failures that never reached the app, and a gateway's own upstream failing.
    pub const DEFAULT_CONDITIONS: [RetryCondition; 4] = [
        RetryCondition::ConnectFailure,
        RetryCondition::RefusedStream,
        RetryCondition::Reset,
        RetryCondition::GatewayError,
    ];
    pub const DEFAULT_BUFFER_LIMIT: usize = 65_536;
    /// Accepted values of `bufferLimit`: up to 16 MiB.
    pub const BUFFER_LIMIT_RANGE: RangeInclusive<u64> = 0..=16_777_216;
    /// Methods RFC 9110 §9.2.2 defines as idempotent: only these are retried on a response
    /// condition unless `non_idempotent`.
    pub const IDEMPOTENT_METHODS: [&'static str; 6] =
        ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"];

    /// Whether `method` (upper case) is in [`RetryPolicy::IDEMPOTENT_METHODS`].
    pub fn is_idempotent(method: &str) -> bool {
        Self::IDEMPOTENT_METHODS.contains(&method)
    }

    /// Whether a request with `method` may be retried on a condition seen after the request
    /// may have reached the app (a status, a reset after bytes were written, a per-try timeout).
    pub fn retries_responses_of(&self, method: &str) -> bool {
        self.non_idempotent || Self::is_idempotent(method)
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: Self::DEFAULT_ATTEMPTS,
            per_try_timeout: None,
            conditions: Self::DEFAULT_CONDITIONS.to_vec(),
            backoff: Backoff::default(),
            non_idempotent: false,
            buffer_limit: Self::DEFAULT_BUFFER_LIMIT,
        }
    }
}

/// `services[].routes[].retry.conditions[]`.
///
/// Serializes as written: `connect-failure`, `refused-stream`, `reset`, `gateway-error`, `5xx`,
/// or the status code as an integer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RetryCondition {
    /// The connection to the endpoint could not be made (refused, reset, connect timeout): the
    /// request never reached the app.
    ConnectFailure,
    /// HTTP/2 REFUSED_STREAM: the endpoint refused the stream before processing it.
    RefusedStream,
    /// The connection or stream was reset before response headers arrived.
    Reset,
    /// 502, 503 or 504.
    GatewayError,
    /// Any response status from 500 to 599.
    Status5xx,
    /// This response status; 400 to 599.
    Status(u16),
}

impl RetryCondition {
    /// Whether a response with `status` is retried under this condition.
    pub fn matches_status(self, status: u16) -> bool {
        match self {
            RetryCondition::Status5xx => (500..=599).contains(&status),
            RetryCondition::GatewayError => matches!(status, 502..=504),
            RetryCondition::Status(code) => code == status,
            RetryCondition::ConnectFailure
            | RetryCondition::RefusedStream
            | RetryCondition::Reset => false,
        }
    }
}

impl std::fmt::Display for RetryCondition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetryCondition::ConnectFailure => f.write_str("connect-failure"),
            RetryCondition::RefusedStream => f.write_str("refused-stream"),
            RetryCondition::Reset => f.write_str("reset"),
            RetryCondition::GatewayError => f.write_str("gateway-error"),
            RetryCondition::Status5xx => f.write_str("5xx"),
            RetryCondition::Status(code) => write!(f, "{code}"),
        }
    }
}

impl Serialize for RetryCondition {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RetryCondition::Status(code) => s.serialize_u16(*code),
            other => s.collect_str(other),
        }
    }
}

/// `services[].routes[].retry.backoff`: the wait before retry n is random (full jitter) between
/// 0 and `min(max, base × 2^(n-1))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Backoff {
    /// Default 25ms; > 0.
    #[serde(with = "crate::duration")]
    pub base: Duration,
    /// Default 250ms; at least `base`.
    #[serde(with = "crate::duration")]
    pub max: Duration,
}

impl Backoff {
    pub const DEFAULT_BASE: Duration = Duration::from_millis(25);
    pub const DEFAULT_MAX: Duration = Duration::from_millis(250);
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Self::DEFAULT_BASE,
            max: Self::DEFAULT_MAX,
        }
    }
}

/// `services[].routes[].hedge`: a second attempt of an idempotent request, to another endpoint,
/// when the first has not answered after `delay`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Hedge {
    pub delay: HedgeDelay,
}

/// `services[].routes[].hedge.delay`. Serializes as written: `50ms`, `p95`, `p99.9`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HedgeDelay {
    /// A fixed delay; > 0, and less than the route's timeout when that is not zero.
    After(Duration),
    /// This percentile of the route's recent latency, 1 ≤ p < 100: `p95` is `Percentile(95.0)`.
    Percentile(f64),
}

impl HedgeDelay {
    /// Accepted percentiles: at least 1, below 100 (`p100` would wait for the slowest request).
    pub const PERCENTILE_MIN: f64 = 1.0;
    pub const PERCENTILE_MAX_EXCLUSIVE: f64 = 100.0;
}

impl std::fmt::Display for HedgeDelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HedgeDelay::After(d) => write!(f, "{}", humantime::format_duration(*d)),
            HedgeDelay::Percentile(p) => write!(f, "p{p}"),
        }
    }
}

impl Serialize for HedgeDelay {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `services[].retryBudget`: how many retries (and hedges) a service's requests may add in all.
///
/// Over any stretch of T seconds, retries may add at most `ratio` times its requests plus
/// `min_per_second × max(T, window)` (for T under a window, the requests of the window that ends
/// with its last retry); beyond that, a failure goes back to the client as it is. The proxy's
/// `retry::budget` module says how that is kept.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryBudget {
    /// Retries per recent request. Default 0.2; 0.0 to 10.0.
    pub ratio: f64,
    /// Retries per second allowed whatever the request rate. Default 10; 0 to 100000.
    pub min_per_second: u32,
    /// How far back requests and retries count. Default 10s; 1s to 60s.
    #[serde(with = "crate::duration")]
    pub window: Duration,
}

impl RetryBudget {
    pub const DEFAULT_RATIO: f64 = 0.2;
    /// Accepted values of `ratio`.
    pub const RATIO_RANGE: RangeInclusive<f64> = 0.0..=10.0;
    pub const DEFAULT_MIN_PER_SECOND: u32 = 10;
    /// Accepted values of `minPerSecond`.
    pub const MIN_PER_SECOND_RANGE: RangeInclusive<u32> = 0..=100_000;
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
    /// Accepted values of `window`: long enough to smooth a burst, short enough that a past
    /// failure is forgotten within a minute.
    pub const WINDOW_RANGE: RangeInclusive<Duration> =
        Duration::from_secs(1)..=Duration::from_secs(60);
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            ratio: Self::DEFAULT_RATIO,
            min_per_second: Self::DEFAULT_MIN_PER_SECOND,
            window: Self::DEFAULT_WINDOW,
        }
    }
}
