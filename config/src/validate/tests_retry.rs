//! `routes[].retry`, `routes[].hedge` and `services[].retryBudget`: every default, one test per
//! rule, pinning the whole line.

use std::time::Duration;

use super::tests::{fails, ok};
use crate::{Backoff, Hedge, HedgeDelay, RetryBudget, RetryCondition, RetryPolicy, Route, Service};

/// An HTTP service whose one route, on line 5 from column 9, is `body`.
fn route(body: &str) -> String {
    format!("services:\n  - name: web\n    endpoints: [10.0.0.1:1]\n    routes:\n      - {body}")
}

fn the_route(body: &str) -> Route {
    ok(&route(body)).services.remove(0).routes.remove(0)
}

fn retry(body: &str) -> RetryPolicy {
    the_route(body).retry.expect("a retry policy")
}

/// An HTTP service with `rest` from line 4.
fn service(rest: &str) -> Service {
    ok(&format!(
        "services:\n  - name: web\n    endpoints: [10.0.0.1:1]\n{rest}"
    ))
    .services
    .remove(0)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn no_retry_block_means_no_retries_and_no_hedging() {
    let route = the_route("timeout: 1s\n");
    assert_eq!((route.retry, route.hedge), (None, None));
    let fallback = Route::fallback();
    assert_eq!((fallback.retry, fallback.hedge), (None, None));
}

#[test]
fn an_empty_retry_block_is_every_default() {
    let defaults = RetryPolicy::default();
    assert_eq!(defaults.attempts, 1);
    assert_eq!(defaults.per_try_timeout, None);
    assert_eq!(
        defaults.conditions,
        [
            RetryCondition::ConnectFailure,
            RetryCondition::RefusedStream,
            RetryCondition::Reset,
            RetryCondition::GatewayError,
        ]
    );
    assert_eq!(
        defaults.backoff,
        Backoff {
            base: ms(25),
            max: ms(250)
        }
    );
    assert!(!defaults.non_idempotent);
    assert_eq!(defaults.buffer_limit, 65_536);
    assert_eq!(retry("retry: {}\n"), defaults);
    assert_eq!(retry("retry: { backoff: {} }\n"), defaults);
}

#[test]
fn retry_and_hedge_may_both_be_given() {
    let route = the_route(
        "match: { methods: [GET, HEAD], pathPrefix: /api/ }\n        timeout: 15s\n        \
         retry: { attempts: 2, conditions: [connect-failure, 502, 503, 504], perTryTimeout: 5s, \
         backoff: { base: 25ms, max: 250ms }, nonIdempotent: false, bufferLimit: 65536 }\n        \
         hedge: { delay: p95 }\n",
    );
    assert_eq!(route.timeout, Duration::from_secs(15));
    assert_eq!(
        route.retry,
        Some(RetryPolicy {
            attempts: 2,
            per_try_timeout: Some(Duration::from_secs(5)),
            conditions: vec![
                RetryCondition::ConnectFailure,
                RetryCondition::Status(502),
                RetryCondition::Status(503),
                RetryCondition::Status(504),
            ],
            ..RetryPolicy::default()
        })
    );
    assert_eq!(
        route.hedge,
        Some(Hedge {
            delay: HedgeDelay::Percentile(95.0)
        })
    );
}

#[test]
fn attempts_are_one_to_ten() {
    assert_eq!(retry("retry: { attempts: 10 }\n").attempts, 10);
    for n in [0, 11] {
        fails(
            &route(&format!("retry: {{ attempts: {n} }}\n")),
            &format!(
                "mesh.yaml:5:28: services[0].routes[0].retry.attempts: must be between 1 and 10, \
                 found {n}"
            ),
        );
    }
}

#[test]
fn a_per_try_timeout_fits_inside_the_route_timeout() {
    assert_eq!(
        retry("timeout: 2s\n        retry: { perTryTimeout: 1999ms }\n").per_try_timeout,
        Some(ms(1999))
    );
    // 0s is none, as absent is.
    assert_eq!(
        retry("retry: { perTryTimeout: 0s }\n").per_try_timeout,
        None
    );
    // A route without a timeout bounds nothing.
    assert_eq!(
        retry("timeout: 0s\n        retry: { perTryTimeout: 1h }\n").per_try_timeout,
        Some(Duration::from_secs(3600))
    );
    fails(
        &route("timeout: 2s\n        retry: { perTryTimeout: 2s }\n"),
        "mesh.yaml:6:33: services[0].routes[0].retry.perTryTimeout: must be less than the \
         route's timeout (2s), found 2s: the timeout spans all attempts",
    );
    fails(
        &route("retry:\n          perTryTimeout: 1m\n"),
        "mesh.yaml:6:26: services[0].routes[0].retry.perTryTimeout: must be less than the \
         route's timeout (30s, its default), found 1m: the timeout spans all attempts",
    );
}

#[test]
fn every_condition_is_read() {
    let all = "[connect-failure, refused-stream, reset, gateway-error, 5xx, 400, \"599\"]";
    assert_eq!(
        retry(&format!("retry: {{ conditions: {all} }}\n")).conditions,
        [
            RetryCondition::ConnectFailure,
            RetryCondition::RefusedStream,
            RetryCondition::Reset,
            RetryCondition::GatewayError,
            RetryCondition::Status5xx,
            RetryCondition::Status(400),
            RetryCondition::Status(599),
        ]
    );
}

#[test]
fn conditions_are_not_empty_and_each_listed_once() {
    fails(
        &route("retry: { conditions: [] }\n"),
        "mesh.yaml:5:30: services[0].routes[0].retry.conditions: at least one retry condition \
         is required (for no retries, leave `retry` out)",
    );
    fails(
        &route("retry: { conditions: [503, reset, 503] }\n"),
        "mesh.yaml:5:43: services[0].routes[0].retry.conditions[2]: `503` is already listed as \
         services[0].routes[0].retry.conditions[0]",
    );
    fails(
        &route("retry: { conditions: [reset, reset] }\n"),
        "mesh.yaml:5:38: services[0].routes[0].retry.conditions[1]: `reset` is already listed \
         as services[0].routes[0].retry.conditions[0]",
    );
}

#[test]
fn a_status_condition_is_an_error_status() {
    for code in [200, 399, 600] {
        fails(
            &route(&format!("retry: {{ conditions: [{code}] }}\n")),
            &format!(
                "mesh.yaml:5:31: services[0].routes[0].retry.conditions[0]: status {code} is not \
                 an error: retry on 400 to 599"
            ),
        );
    }
    assert_eq!(
        retry("retry: { conditions: [429] }\n").conditions,
        [RetryCondition::Status(429)]
    );
}

#[test]
fn an_unknown_condition_is_translated_where_possible() {
    let list = "expected one of: connect-failure, refused-stream, reset, gateway-error, 5xx, or \
                a status code from 400 to 599";
    for (written, hint) in [
        ("connect_failure", " (did you mean `connect-failure`?)"),
        ("refused", " (did you mean `connect-failure`?)"),
        ("REFUSED_STREAM", " (did you mean `refused-stream`?)"),
        ("gateway", " (did you mean `gateway-error`?)"),
        ("5XX", " (did you mean `5xx`?)"),
        (
            "timeout",
            " (set `perTryTimeout`: an attempt that exceeds it is retried)",
        ),
        (
            "retriable-4xx",
            " (list the codes, e.g. 429: most 4xx would fail again)",
        ),
        ("sometimes", ""),
        ("-1", ""),
        ("true", ""),
    ] {
        fails(
            &route(&format!("retry: {{ conditions: [{written}] }}\n")),
            &format!(
                "mesh.yaml:5:31: services[0].routes[0].retry.conditions[0]: unknown retry \
                 condition `{written}`{hint}; {list}"
            ),
        );
    }
}

#[test]
fn the_conditions_key_is_not_on() {
    let allowed =
        "allowed: attempts, perTryTimeout, conditions, backoff, nonIdempotent, bufferLimit";
    fails(
        &route("retry:\n          on: [5xx]\n"),
        &format!(
            "mesh.yaml:6:11: services[0].routes[0].retry.on: unknown key `on` (YAML 1.1 parsers, \
             Kubernetes' among them, read `on` as `true`: the key is `conditions`); {allowed}"
        ),
    );
    fails(
        &route("retry: { retryOn: [5xx] }\n"),
        &format!(
            "mesh.yaml:5:18: services[0].routes[0].retry.retryOn: unknown key `retryOn` (did you \
             mean `conditions`?); {allowed}"
        ),
    );
    fails(
        &route("retry: { attempt: 2 }\n"),
        &format!(
            "mesh.yaml:5:18: services[0].routes[0].retry.attempt: unknown key `attempt` (did you \
             mean `attempts`?); {allowed}"
        ),
    );
}

#[test]
fn backoff_is_positive_and_in_order() {
    assert_eq!(
        retry("retry: { backoff: { base: 1ms, max: 1ms } }\n").backoff,
        Backoff {
            base: ms(1),
            max: ms(1)
        }
    );
    fails(
        &route("retry: { backoff: { base: 0s } }\n"),
        "mesh.yaml:5:35: services[0].routes[0].retry.backoff.base: must be more than 0s",
    );
    fails(
        &route("retry: { backoff: { max: 0s } }\n"),
        "mesh.yaml:5:34: services[0].routes[0].retry.backoff.max: must be more than 0s",
    );
    fails(
        &route("retry: { backoff: { base: 100ms, max: 50ms } }\n"),
        "mesh.yaml:5:47: services[0].routes[0].retry.backoff.max: must be at least base (100ms), \
         found 50ms",
    );
    fails(
        &route("retry: { backoff: { max: 10ms } }\n"),
        "mesh.yaml:5:34: services[0].routes[0].retry.backoff.max: must be at least base (25ms, \
         its default), found 10ms",
    );
    fails(
        &route("retry: { backoff: { base: 1s } }\n"),
        "mesh.yaml:5:35: services[0].routes[0].retry.backoff.base: must be at most max (250ms, \
         its default), found 1s",
    );
    fails(
        &route("retry: { backoff: { jitter: 0.5 } }\n"),
        "mesh.yaml:5:29: services[0].routes[0].retry.backoff.jitter: unknown key `jitter`; \
         allowed: base, max",
    );
}

#[test]
fn non_idempotent_is_true_or_false() {
    assert!(retry("retry: { nonIdempotent: true }\n").non_idempotent);
    assert!(!retry("retry: { nonIdempotent: false }\n").non_idempotent);
    for written in ["yes", "on", "1"] {
        fails(
            &route(&format!("retry: {{ nonIdempotent: {written} }}\n")),
            &format!(
                "mesh.yaml:5:33: services[0].routes[0].retry.nonIdempotent: expected true or \
                 false, found `{written}`"
            ),
        );
    }
}

#[test]
fn buffer_limit_is_at_most_16_mib() {
    assert_eq!(retry("retry: { bufferLimit: 0 }\n").buffer_limit, 0);
    assert_eq!(
        retry("retry: { bufferLimit: 16777216 }\n").buffer_limit,
        16_777_216
    );
    fails(
        &route("retry: { bufferLimit: 16777217 }\n"),
        "mesh.yaml:5:31: services[0].routes[0].retry.bufferLimit: must be between 0 and \
         16777216, found 16777217",
    );
    fails(
        &route("retry: { bufferLimit: 64KiB }\n"),
        "mesh.yaml:5:31: services[0].routes[0].retry.bufferLimit: expected a whole number, found \
         `64KiB`",
    );
}

#[test]
fn a_hedge_delay_is_a_duration_or_a_percentile() {
    for (written, delay) in [
        ("50ms", HedgeDelay::After(ms(50))),
        ("p95", HedgeDelay::Percentile(95.0)),
        ("p99", HedgeDelay::Percentile(99.0)),
        ("p99.9", HedgeDelay::Percentile(99.9)),
        ("p50", HedgeDelay::Percentile(50.0)),
        ("p1", HedgeDelay::Percentile(1.0)),
    ] {
        let hedge = the_route(&format!("hedge: {{ delay: {written} }}\n")).hedge;
        assert_eq!(hedge, Some(Hedge { delay }));
        assert_eq!(delay.to_string(), written);
    }
}

#[test]
fn a_hedge_percentile_is_from_1_to_below_100() {
    for written in ["p0", "p0.5", "p100", "p150"] {
        fails(
            &route(&format!("hedge: {{ delay: {written} }}\n")),
            &format!(
                "mesh.yaml:5:25: services[0].routes[0].hedge.delay: percentile must be at least \
                 p1 and below p100, found {written}"
            ),
        );
    }
}

#[test]
fn a_fixed_hedge_delay_is_positive_and_inside_the_timeout() {
    fails(
        &route("hedge: { delay: 0s }\n"),
        "mesh.yaml:5:25: services[0].routes[0].hedge.delay: must be more than 0s: a hedge at \
         once would double every request",
    );
    fails(
        &route("timeout: 1s\n        hedge: { delay: 1s }\n"),
        "mesh.yaml:6:25: services[0].routes[0].hedge.delay: must be less than the route's \
         timeout (1s), found 1s: the hedge would never be sent",
    );
    fails(
        &route("hedge: { delay: 45s }\n"),
        "mesh.yaml:5:25: services[0].routes[0].hedge.delay: must be less than the route's \
         timeout (30s, its default), found 45s: the hedge would never be sent",
    );
    // No timeout, no bound; a percentile is never checked against the timeout.
    let route = the_route("timeout: 0s\n        hedge: { delay: 1m }\n");
    assert_eq!(
        route.hedge.unwrap().delay,
        HedgeDelay::After(Duration::from_secs(60))
    );
    let route = the_route("timeout: 10ms\n        hedge: { delay: p99 }\n");
    assert_eq!(route.hedge.unwrap().delay, HedgeDelay::Percentile(99.0));
}

#[test]
fn a_malformed_hedge_delay_says_what_is_accepted() {
    let forms = "expected a duration, e.g. 50ms, or a percentile of the route's latency, e.g. p95 \
                 or p99.9";
    for (written, message) in [
        (
            "95",
            "`95` has no unit: a fixed delay needs one (`95ms`), and a percentile is written `p95`"
                .to_owned(),
        ),
        (
            "P95",
            format!("invalid delay `P95` (a percentile is written `p95`); {forms}"),
        ),
        (
            "95%",
            format!("invalid delay `95%` (a percentile is written `p95`); {forms}"),
        ),
        (
            "99.9th",
            format!("invalid delay `99.9th` (a percentile is written `p99.9`); {forms}"),
        ),
        (
            "p9x",
            "invalid percentile `p9x`: write `p` and a number, e.g. p95 or p99.9".to_owned(),
        ),
        ("soon", format!("invalid delay `soon`; {forms}")),
    ] {
        fails(
            &route(&format!("hedge: {{ delay: {written} }}\n")),
            &format!("mesh.yaml:5:25: services[0].routes[0].hedge.delay: {message}"),
        );
    }
    fails(
        &route("hedge: {}\n"),
        "mesh.yaml:5:16: services[0].routes[0].hedge: missing required key `delay`",
    );
    fails(
        &route("hedge: { delay: 1s, maxAttempts: 2 }\n"),
        "mesh.yaml:5:29: services[0].routes[0].hedge.maxAttempts: unknown key `maxAttempts`; \
         allowed: delay",
    );
}

#[test]
fn the_retry_budget_defaults_and_bounds() {
    let defaults = RetryBudget::default();
    assert_eq!(defaults.ratio, 0.2);
    assert_eq!(defaults.min_per_second, 10);
    assert_eq!(defaults.window, Duration::from_secs(10));
    assert_eq!(service("").retry_budget, defaults);
    assert_eq!(service("    retryBudget: {}\n").retry_budget, defaults);
    assert_eq!(
        service("    retryBudget: { ratio: 0, minPerSecond: 100000, window: 1s }\n").retry_budget,
        RetryBudget {
            ratio: 0.0,
            min_per_second: 100_000,
            window: Duration::from_secs(1),
        }
    );
    assert_eq!(
        service("    retryBudget: { ratio: 10, window: 60s }\n").retry_budget,
        RetryBudget {
            ratio: 10.0,
            window: Duration::from_secs(60),
            ..defaults
        }
    );
    let web = |budget: &str| {
        format!(
            "services:\n  - name: web\n    endpoints: [10.0.0.1:1]\n    retryBudget: {budget}\n"
        )
    };
    for (written, column, path, message) in [
        (
            "{ ratio: 10.5 }",
            27,
            "ratio",
            "must be between 0.0 and 10.0, found 10.5",
        ),
        (
            "{ ratio: -0.1 }",
            27,
            "ratio",
            "must be between 0.0 and 10.0, found -0.1",
        ),
        (
            "{ ratio: 20% }",
            27,
            "ratio",
            "expected a number, e.g. 1.25, found `20%`",
        ),
        (
            "{ minPerSecond: 100001 }",
            34,
            "minPerSecond",
            "must be between 0 and 100000, found 100001",
        ),
        (
            "{ window: 999ms }",
            28,
            "window",
            "must be between 1s and 60s, found 999ms",
        ),
        (
            "{ window: 61s }",
            28,
            "window",
            "must be between 1s and 60s, found 1m 1s",
        ),
        (
            "{ window: 0s }",
            28,
            "window",
            "must be between 1s and 60s, found 0s",
        ),
    ] {
        fails(
            &web(written),
            &format!("mesh.yaml:4:{column}: services[0].retryBudget.{path}: {message}"),
        );
    }
    fails(
        &web("{ minRetriesPerSecond: 5 }"),
        "mesh.yaml:4:20: services[0].retryBudget.minRetriesPerSecond: unknown key \
         `minRetriesPerSecond`; allowed: ratio, minPerSecond, window",
    );
}

#[test]
fn conditions_match_statuses() {
    use RetryCondition::*;
    assert!(GatewayError.matches_status(503));
    assert!(!GatewayError.matches_status(500));
    assert!(Status5xx.matches_status(500));
    assert!(!Status5xx.matches_status(429));
    assert!(Status(429).matches_status(429));
    for transport in [ConnectFailure, RefusedStream, Reset] {
        assert!(!transport.matches_status(502));
    }
}

#[test]
fn response_conditions_retry_idempotent_methods_only_unless_told() {
    let safe = RetryPolicy::default();
    for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"] {
        assert!(safe.retries_responses_of(method), "{method}");
    }
    for method in ["POST", "PATCH", "CONNECT", "get"] {
        assert!(!safe.retries_responses_of(method), "{method}");
    }
    let told = RetryPolicy {
        non_idempotent: true,
        ..RetryPolicy::default()
    };
    assert!(told.retries_responses_of("POST"));
}

#[test]
fn retry_settings_serialize_as_written() {
    let route = the_route(
        "timeout: 15s\n        retry: { perTryTimeout: 5s, conditions: [reset, 503] }\n        \
         hedge: { delay: p99.9 }\n",
    );
    let printed = serde_saphyr::to_string(&route).unwrap();
    for line in [
        "perTryTimeout: 5s",
        "- reset",
        "- 503",
        "delay: p99.9",
        "base: 25ms",
        "nonIdempotent: false",
        "bufferLimit: 65536",
    ] {
        assert!(printed.contains(line), "{line:?} in {printed}");
    }
    let printed = serde_saphyr::to_string(&the_route("retry: {}\n")).unwrap();
    assert!(!printed.contains("perTryTimeout"), "{printed}");
    assert!(!printed.contains("hedge"), "{printed}");
    let printed = serde_saphyr::to_string(&service("").retry_budget).unwrap();
    assert_eq!(printed, "ratio: 0.2\nminPerSecond: 10\nwindow: 10s\n");
}

#[test]
fn retries_and_hedges_are_for_http_routes_only() {
    let opaque = "services:\n  - name: redis\n    protocol: opaque\n    endpoints: [10.0.0.1:1]\n";
    fails(
        &format!("{opaque}    routes: [{{ retry: {{}}, hedge: {{ delay: 5ms }} }}]\n"),
        "mesh.yaml:5:13: services[0].routes: `routes` are only allowed on http and http2 \
         services: an opaque service has no requests to route",
    );
    // A budget is accepted, and unused: `/config` prints every service's.
    let redis = ok(&format!("{opaque}    retryBudget: {{ ratio: 1 }}\n"))
        .services
        .remove(0);
    assert_eq!(redis.retry_budget.ratio, 1.0);
}
