//! `balancer`, `outlierDetection` and `limits`: one test per rule, pinning the whole line.

use std::time::Duration;

use super::tests::{fails, ok};
use crate::{
    Algorithm, BalancerConfig, FailureCondition, HashOn, OutlierDetection, Service, ServiceLimits,
};

/// An HTTP service on line 2, with `rest` from line 4.
fn web(rest: &str) -> String {
    format!("services:\n  - name: web\n    endpoints: [10.0.0.1:1]\n{rest}")
}

fn service(rest: &str) -> Service {
    ok(&web(rest)).services.remove(0)
}

#[test]
fn the_balancer_defaults_to_peak_ewma() {
    let defaults = BalancerConfig::default();
    assert_eq!(defaults.algorithm, Algorithm::PeakEwma);
    assert_eq!(defaults.decay, Duration::from_secs(10));
    assert_eq!(defaults.default_rtt, Duration::from_millis(30));
    assert_eq!(defaults.hash_on, None);
    assert_eq!(defaults.bounded_load, 1.25);
    assert_eq!(service("").balancer, defaults);
    assert_eq!(service("    balancer: {}\n").balancer, defaults);
    let tuned = service("    balancer: { decay: 5s, defaultRtt: 1ms }\n").balancer;
    assert_eq!(
        (tuned.algorithm, tuned.decay, tuned.default_rtt),
        (
            Algorithm::PeakEwma,
            Duration::from_secs(5),
            Duration::from_millis(1)
        )
    );
}

#[test]
fn an_algorithm_alone_is_short_for_the_mapping() {
    for (written, algorithm) in [
        ("peak-ewma", Algorithm::PeakEwma),
        ("least-request", Algorithm::LeastRequest),
        ("round-robin", Algorithm::RoundRobin),
    ] {
        let short = service(&format!("    balancer: {written}\n")).balancer;
        let long = service(&format!("    balancer: {{ algorithm: {written} }}\n")).balancer;
        assert_eq!(short, long);
        assert_eq!(short.algorithm, algorithm);
        assert_eq!(algorithm.as_str(), written);
    }
}

#[test]
fn an_unknown_algorithm_is_translated_where_possible() {
    let list = "expected one of: peak-ewma, least-request, round-robin, ring-hash";
    for (written, column, hint) in [
        ("least_conn", 15, " (nginx's least_conn is `least-request`)"),
        ("roundrobin", 15, " (did you mean `round-robin`?)"),
        (
            "consistent-hash",
            15,
            " (consistent hashing is `ring-hash`)",
        ),
        ("random", 15, ""),
    ] {
        fails(
            &web(&format!("    balancer: {written}\n")),
            &format!(
                "mesh.yaml:4:{column}: services[0].balancer: unknown algorithm `{written}`{hint}; {list}"
            ),
        );
    }
    fails(
        &web("    balancer: { algorithm: PEAK-EWMA }\n"),
        &format!(
            "mesh.yaml:4:28: services[0].balancer.algorithm: unknown algorithm `PEAK-EWMA` \
             (did you mean `peak-ewma`?); {list}"
        ),
    );
}

#[test]
fn peak_ewma_times_are_positive() {
    fails(
        &web("    balancer: { decay: 0s }\n"),
        "mesh.yaml:4:24: services[0].balancer.decay: must be more than 0s",
    );
    fails(
        &web("    balancer:\n      algorithm: peak-ewma\n      defaultRtt: 0ms\n"),
        "mesh.yaml:6:19: services[0].balancer.defaultRtt: must be more than 0s",
    );
}

#[test]
fn keys_of_another_algorithm_are_refused() {
    fails(
        &web("    balancer: { algorithm: round-robin, decay: 1s }\n"),
        "mesh.yaml:4:48: services[0].balancer.decay: `decay` only applies to peak-ewma, and this \
         balancer is `round-robin`",
    );
    fails(
        &web("    balancer: { algorithm: least-request, defaultRtt: 1s }\n"),
        "mesh.yaml:4:55: services[0].balancer.defaultRtt: `defaultRtt` only applies to \
         peak-ewma, and this balancer is `least-request`",
    );
    fails(
        &web("    balancer: { hashOn: clientIp }\n"),
        "mesh.yaml:4:25: services[0].balancer.hashOn: `hashOn` only applies to ring-hash, and \
         this balancer is `peak-ewma`",
    );
    fails(
        &web("    balancer: { algorithm: round-robin, boundedLoad: 2 }\n"),
        "mesh.yaml:4:54: services[0].balancer.boundedLoad: `boundedLoad` only applies to \
         ring-hash, and this balancer is `round-robin`",
    );
}

#[test]
fn ring_hash_needs_a_key() {
    let needs = "ring-hash needs `hashOn`, the key to hash: `clientIp`, `{ header: NAME }` or \
                 `{ cookie: NAME }`";
    fails(
        &web("    balancer: ring-hash\n"),
        &format!("mesh.yaml:4:15: services[0].balancer: {needs}"),
    );
    fails(
        &web("    balancer:\n      algorithm: ring-hash\n      boundedLoad: 2\n"),
        &format!("mesh.yaml:5:7: services[0].balancer: {needs}"),
    );
    let ring = service(
        "    balancer: { algorithm: ring-hash, hashOn: { header: X-User-Id }, boundedLoad: 1.0 }\n",
    )
    .balancer;
    assert_eq!(ring.algorithm, Algorithm::RingHash);
    assert_eq!(ring.hash_on, Some(HashOn::Header("x-user-id".into())));
    assert_eq!(ring.bounded_load, 1.0);
    let ring = service("    balancer: { algorithm: ring-hash, hashOn: { cookie: _Session_ID } }\n")
        .balancer;
    assert_eq!(ring.hash_on, Some(HashOn::Cookie("_Session_ID".into())));
    assert_eq!(ring.bounded_load, 1.25);
    let ring = service("    balancer: { algorithm: ring-hash, hashOn: clientIp }\n").balancer;
    assert_eq!(ring.hash_on, Some(HashOn::ClientIp));
}

#[test]
fn hash_on_is_one_of_three_forms() {
    let forms = "expected `clientIp`, `{ header: NAME }` or `{ cookie: NAME }`";
    let ring =
        |hash_on: &str| format!("    balancer: {{ algorithm: ring-hash, hashOn: {hash_on} }}\n");
    fails(
        &web(&ring("header")),
        "mesh.yaml:4:47: services[0].balancer.hashOn: `header` needs a name: `{ header: NAME }`",
    );
    fails(
        &web(&ring("client-ip")),
        &format!(
            "mesh.yaml:4:47: services[0].balancer.hashOn: unknown value `client-ip` (did you mean \
             `clientIp`?); {forms}"
        ),
    );
    fails(
        &web(&ring("path")),
        &format!("mesh.yaml:4:47: services[0].balancer.hashOn: unknown value `path`; {forms}"),
    );
    fails(
        &web(&ring("{}")),
        &format!("mesh.yaml:4:47: services[0].balancer.hashOn: {forms}, found an empty mapping"),
    );
    fails(
        &web(&ring("{ header: a, cookie: b }")),
        "mesh.yaml:4:68: services[0].balancer.hashOn.cookie: `header` and `cookie` cannot both \
         be given: hash on one key",
    );
    fails(
        &web(&ring("{ ip: x }")),
        "mesh.yaml:4:49: services[0].balancer.hashOn.ip: unknown key `ip`; allowed: header, cookie",
    );
    fails(
        &web(&ring("{ header: \"X User\" }")),
        "mesh.yaml:4:57: services[0].balancer.hashOn.header: invalid header name `X User`",
    );
    fails(
        &web(&ring("{ cookie: \"\" }")),
        "mesh.yaml:4:57: services[0].balancer.hashOn.cookie: invalid cookie name ``",
    );
}

#[test]
fn opaque_services_hash_on_the_client_ip_only() {
    let opaque = "services:\n  - name: redis\n    protocol: opaque\n    endpoints: [10.0.0.1:1]\n";
    fails(
        &format!("{opaque}    balancer: {{ algorithm: ring-hash, hashOn: {{ header: x-key }} }}\n"),
        "mesh.yaml:5:47: services[0].balancer.hashOn: an opaque service has no headers to hash \
         on: use `clientIp`, the only key of a TCP connection",
    );
    fails(
        &format!("{opaque}    balancer: {{ algorithm: ring-hash, hashOn: {{ cookie: sid }} }}\n"),
        "mesh.yaml:5:47: services[0].balancer.hashOn: an opaque service has no cookies to hash \
         on: use `clientIp`, the only key of a TCP connection",
    );
    let config = ok(&format!(
        "{opaque}    balancer: {{ algorithm: ring-hash, hashOn: clientIp }}\n"
    ));
    assert_eq!(config.services[0].balancer.hash_on, Some(HashOn::ClientIp));
    // Any algorithm balances connections of an opaque service.
    let config = ok(&format!("{opaque}    balancer: least-request\n"));
    assert_eq!(
        config.services[0].balancer.algorithm,
        Algorithm::LeastRequest
    );
}

#[test]
fn bounded_load_is_at_least_one() {
    let ring = "    balancer: { algorithm: ring-hash, hashOn: clientIp, boundedLoad: ";
    fails(
        &web(&format!("{ring}0.99 }}\n")),
        "mesh.yaml:4:70: services[0].balancer.boundedLoad: must be at least 1.0 (1.0 keeps \
         every endpoint at the mean load), found 0.99",
    );
    fails(
        &web(&format!("{ring}125% }}\n")),
        "mesh.yaml:4:70: services[0].balancer.boundedLoad: expected a number, e.g. 1.25, found \
         `125%`",
    );
    fails(
        &web(&format!("{ring}.inf }}\n")),
        "mesh.yaml:4:70: services[0].balancer.boundedLoad: expected a number, e.g. 1.25, found \
         `.inf`",
    );
    assert_eq!(service(&format!("{ring}3 }}\n")).balancer.bounded_load, 3.0);
}

#[test]
fn outlier_detection_defaults_and_off() {
    let defaults = OutlierDetection::default();
    assert_eq!(defaults.consecutive_failures, 7);
    assert_eq!(defaults.min_ejection, Duration::from_secs(1));
    assert_eq!(defaults.max_ejection, Duration::from_secs(60));
    assert_eq!(defaults.max_ejected_percent, 50);
    assert_eq!(
        defaults.failure_on,
        [
            FailureCondition::ConnectFailure,
            FailureCondition::Status5xx
        ]
    );
    assert!(defaults.enabled());
    assert_eq!(service("").outlier_detection, defaults);
    assert_eq!(
        service("    outlierDetection: {}\n").outlier_detection,
        defaults
    );
    let off = service("    outlierDetection: { consecutiveFailures: 0 }\n").outlier_detection;
    assert!(!off.enabled());
    let tuned = service(
        "    outlierDetection: { minEjection: 30s, maxEjection: 30s, maxEjectedPercent: 0 }\n",
    )
    .outlier_detection;
    assert_eq!(
        (
            tuned.min_ejection,
            tuned.max_ejection,
            tuned.max_ejected_percent
        ),
        (Duration::from_secs(30), Duration::from_secs(30), 0)
    );
}

#[test]
fn ejection_times_are_positive_and_in_order() {
    fails(
        &web("    outlierDetection: { minEjection: 0s }\n"),
        "mesh.yaml:4:38: services[0].outlierDetection.minEjection: must be more than 0s",
    );
    fails(
        &web("    outlierDetection: { maxEjection: 0s }\n"),
        "mesh.yaml:4:38: services[0].outlierDetection.maxEjection: must be more than 0s",
    );
    fails(
        &web("    outlierDetection: { minEjection: 2m }\n"),
        "mesh.yaml:4:38: services[0].outlierDetection.minEjection: must be at most maxEjection \
         (1m, its default), found 2m",
    );
    fails(
        &web("    outlierDetection: { maxEjection: 500ms }\n"),
        "mesh.yaml:4:38: services[0].outlierDetection.maxEjection: must be at least minEjection \
         (1s, its default), found 500ms",
    );
    fails(
        &web("    outlierDetection:\n      minEjection: 10s\n      maxEjection: 5s\n"),
        "mesh.yaml:6:20: services[0].outlierDetection.maxEjection: must be at least minEjection \
         (10s), found 5s",
    );
}

#[test]
fn counts_of_outlier_detection_are_bounded() {
    fails(
        &web("    outlierDetection: { maxEjectedPercent: 101 }\n"),
        "mesh.yaml:4:44: services[0].outlierDetection.maxEjectedPercent: must be between 0 and \
         100, found 101",
    );
    fails(
        &web("    outlierDetection: { maxEjectedPercent: 50% }\n"),
        "mesh.yaml:4:44: services[0].outlierDetection.maxEjectedPercent: expected a whole \
         number, found `50%`",
    );
    fails(
        &web("    outlierDetection: { consecutiveFailures: 4294967296 }\n"),
        "mesh.yaml:4:46: services[0].outlierDetection.consecutiveFailures: 4294967296 is too large",
    );
}

#[test]
fn failure_conditions_are_named_or_5xx_codes() {
    let config = service(
        "    outlierDetection:\n      failureOn: [connect-failure, timeout, 5xx, gateway-error, 503, \"504\"]\n",
    );
    assert_eq!(
        config.outlier_detection.failure_on,
        [
            FailureCondition::ConnectFailure,
            FailureCondition::Timeout,
            FailureCondition::Status5xx,
            FailureCondition::GatewayError,
            FailureCondition::Status(503),
            FailureCondition::Status(504),
        ]
    );
    let expected = "expected one of: connect-failure, timeout, 5xx, gateway-error, or a status \
                    code from 500 to 599";
    fails(
        &web("    outlierDetection: { failureOn: [connect-failure, 5XX] }\n"),
        &format!(
            "mesh.yaml:4:54: services[0].outlierDetection.failureOn[1]: unknown failure \
             condition `5XX` (did you mean `5xx`?); {expected}"
        ),
    );
    fails(
        &web("    outlierDetection: { failureOn: [reset] }\n"),
        &format!(
            "mesh.yaml:4:37: services[0].outlierDetection.failureOn[0]: unknown failure \
             condition `reset` (connection errors are `connect-failure`); {expected}"
        ),
    );
    fails(
        &web("    outlierDetection: { failureOn: [-1] }\n"),
        &format!(
            "mesh.yaml:4:37: services[0].outlierDetection.failureOn[0]: unknown failure \
             condition `-1`; {expected}"
        ),
    );
    for (code, column) in [("404", 54), ("499", 54), ("600", 54)] {
        fails(
            &web(&format!(
                "    outlierDetection: {{ failureOn: [connect-failure, {code}] }}\n"
            )),
            &format!(
                "mesh.yaml:4:{column}: services[0].outlierDetection.failureOn[1]: status {code} \
                 is not a server error: an endpoint fails with 500 to 599"
            ),
        );
    }
}

#[test]
fn failure_conditions_are_listed_once_and_at_least_one() {
    fails(
        &web("    outlierDetection: { failureOn: [5xx, 503, 5xx] }\n"),
        "mesh.yaml:4:47: services[0].outlierDetection.failureOn[2]: `5xx` is already listed as \
         services[0].outlierDetection.failureOn[0]",
    );
    fails(
        &web("    outlierDetection:\n      failureOn:\n        - 503\n        - 503\n"),
        "mesh.yaml:7:11: services[0].outlierDetection.failureOn[1]: `503` is already listed as \
         services[0].outlierDetection.failureOn[0]",
    );
    fails(
        &web("    outlierDetection: { failureOn: [] }\n"),
        "mesh.yaml:4:36: services[0].outlierDetection.failureOn: at least one failure condition \
         is required (to turn outlier detection off, set consecutiveFailures: 0)",
    );
}

#[test]
fn a_failure_condition_matches_statuses() {
    use FailureCondition::*;
    assert!(Status5xx.matches_status(500) && Status5xx.matches_status(599));
    assert!(!Status5xx.matches_status(499));
    assert!(GatewayError.matches_status(502) && GatewayError.matches_status(504));
    assert!(!GatewayError.matches_status(500));
    assert!(Status(503).matches_status(503) && !Status(503).matches_status(502));
    assert!(!ConnectFailure.matches_status(503) && !Timeout.matches_status(504));
}

#[test]
fn limits_default_and_read() {
    let defaults = ServiceLimits::default();
    assert_eq!(defaults.connect_timeout, Duration::from_secs(1));
    assert_eq!(defaults.idle_timeout, Duration::from_secs(10));
    assert_eq!(defaults.max_connections, 10_000);
    assert_eq!(defaults.max_pending_requests, 10_000);
    assert_eq!(defaults.fail_fast_timeout, Duration::from_secs(3));
    assert_eq!(defaults.max_concurrent_streams, 100);
    assert_eq!(service("").limits, defaults);
    assert_eq!(service("    limits: {}\n").limits, defaults);
    let one = service(
        "    limits: { maxConnections: 1, maxPendingRequests: 1, maxConcurrentStreams: 1 }\n",
    )
    .limits;
    assert_eq!(
        (
            one.max_connections,
            one.max_pending_requests,
            one.max_concurrent_streams
        ),
        (1, 1, 1)
    );
}

#[test]
fn limits_are_positive() {
    for (key, column) in [
        ("connectTimeout", 31),
        ("idleTimeout", 28),
        ("failFastTimeout", 32),
    ] {
        fails(
            &web(&format!("    limits: {{ {key}: 0s }}\n")),
            &format!("mesh.yaml:4:{column}: services[0].limits.{key}: must be more than 0s"),
        );
    }
    for (key, column) in [
        ("maxConnections", 31),
        ("maxPendingRequests", 35),
        ("maxConcurrentStreams", 37),
    ] {
        fails(
            &web(&format!("    limits: {{ {key}: 0 }}\n")),
            &format!("mesh.yaml:4:{column}: services[0].limits.{key}: must be at least 1, found 0"),
        );
    }
    fails(
        &web("    limits: { maxConcurrentStreams: 4294967296 }\n"),
        "mesh.yaml:4:37: services[0].limits.maxConcurrentStreams: 4294967296 is too large",
    );
}

#[test]
fn timeouts_moved_into_limits() {
    fails(
        &web("    connectTimeout: 1s\n"),
        "mesh.yaml:4:5: services[0].connectTimeout: unknown key `connectTimeout`; allowed: name, \
         authorities, protocol, endpoints, dns, listen, clusterIps, balancer, outlierDetection, limits, retryBudget, routes",
    );
    fails(
        &web("    limits: { timeout: 1s }\n"),
        "mesh.yaml:4:15: services[0].limits.timeout: unknown key `timeout`; allowed: \
         connectTimeout, idleTimeout, maxConnections, maxPendingRequests, failFastTimeout, \
         maxConcurrentStreams, tunnelIdleTimeout",
    );
}
