use std::time::Duration;

use super::*;
use crate::errors::ProxyError;

fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn a_route_counts_requests_statuses_errors_and_latency() {
    let m = Metrics::new();
    let route = m.route(Direction::Outbound, "web", "api");
    route.requests.inc();
    route.requests.inc();
    route.response(200);
    route.response(503);
    route.error(&ProxyError::ResponseTimeout(Duration::from_secs(1)));
    route.error(&ProxyError::Smuggling);
    route.latency.observe(0.2);
    route.retry(RetryReason::Status);
    let text = m.encode();
    assert_eq!(
        sample(
            &text,
            r#"herd_http_requests_total{direction="outbound",route="api",service="web"}"#
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herd_http_responses_total{classification="success",direction="outbound",error="",route="api",service="web",status_code="200"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herd_http_responses_total{classification="failure",direction="outbound",error="",route="api",service="web",status_code="503"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herd_http_responses_total{classification="failure",direction="outbound",error="timeout",route="api",service="web",status_code="504"}"#
        ),
        Some(1.0)
    );
    // The client's own fault is not the service's failure.
    assert_eq!(
        sample(
            &text,
            r#"herd_http_responses_total{classification="success",direction="outbound",error="bad-request",route="api",service="web",status_code="400"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herd_http_response_latency_seconds_bucket{direction="outbound",route="api",service="web",le="0.25"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herd_http_response_latency_seconds_bucket{direction="outbound",route="api",service="web",le="0.1"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herd_http_retries_total{direction="outbound",reason="status",route="api",service="web"}"#
        ),
        Some(1.0)
    );
    // Odd statuses are ignored rather than panicking.
    route.response(99);
    route.response(600);
}

#[test]
fn handles_are_shared_and_their_series_go_with_the_last_one() {
    let m = Metrics::new();
    let a = m.route(Direction::Outbound, "web", "api");
    let b = m.route(Direction::Outbound, "web", "api");
    assert!(Arc::ptr_eq(&a, &b));
    a.requests.inc();
    a.response(200);
    a.error(&ProxyError::Smuggling);
    a.error(&ProxyError::ResponseTimeout(Duration::from_secs(1)));
    let tcp = m.tcp(Direction::Outbound, "redis");
    tcp.opened.inc();
    let service = m.service("web");
    service.ejections.inc();
    assert!(m.encode().contains(r#"service="web""#));
    drop(a);
    assert!(
        m.encode().contains(r#"route="api""#),
        "one handle is still held"
    );
    drop((b, tcp, service));
    let text = m.encode();
    assert!(!text.contains(r#"service="web""#), "{text}");
    assert!(!text.contains(r#"service="redis""#), "{text}");
}

#[test]
fn process_and_config_series_are_exported() {
    let m = Metrics::new();
    let text = m.encode();
    for name in [
        "herd_config_version",
        "herd_config_reloads_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}
