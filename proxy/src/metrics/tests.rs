use std::time::Duration;

use herd_identity::SpiffeId;

use super::*;
use crate::errors::ProxyError;

const PLAIN: TlsPeer<'static> = TlsPeer::Plaintext;

fn id(text: &str) -> SpiffeId {
    text.parse().expect("a SPIFFE ID")
}

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
    route.response(200, PLAIN);
    route.response(503, PLAIN);
    route.error(&ProxyError::ResponseTimeout(Duration::from_secs(1)), PLAIN);
    route.error(&ProxyError::Smuggling, PLAIN);
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
            r#"herd_http_responses_total{classification="success",client_identity="",direction="outbound",error="",route="api",server_identity="",service="web",status_code="200",tls="false"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herd_http_responses_total{classification="failure",client_identity="",direction="outbound",error="",route="api",server_identity="",service="web",status_code="503",tls="false"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herd_http_responses_total{classification="failure",client_identity="",direction="outbound",error="timeout",route="api",server_identity="",service="web",status_code="504",tls="false"}"#
        ),
        Some(1.0)
    );
    // The client's own fault is not the service's failure.
    assert_eq!(
        sample(
            &text,
            r#"herd_http_responses_total{classification="success",client_identity="",direction="outbound",error="bad-request",route="api",server_identity="",service="web",status_code="400",tls="false"}"#
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
    route.response(99, PLAIN);
    route.response(600, PLAIN);
}

#[test]
fn handles_are_shared_and_their_series_go_with_the_last_one() {
    let m = Metrics::new();
    let a = m.route(Direction::Outbound, "web", "api");
    let b = m.route(Direction::Outbound, "web", "api");
    assert!(Arc::ptr_eq(&a, &b));
    a.requests.inc();
    a.response(200, PLAIN);
    a.error(&ProxyError::Smuggling, PLAIN);
    a.error(&ProxyError::ResponseTimeout(Duration::from_secs(1)), PLAIN);
    let tcp = m.tcp(Direction::Outbound, "redis");
    tcp.plaintext.opened.inc();
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

#[test]
fn responses_over_mutual_tls_get_their_identitys_series_resolved_once() {
    let m = Metrics::new();
    let (web, sidekiq) = (
        id("spiffe://cluster.local/ns/mastodon/sa/web"),
        id("spiffe://cluster.local/ns/mastodon/sa/sidekiq"),
    );
    let inbound = m.route(Direction::Inbound, "inbound", "default");
    for _ in 0..3 {
        inbound.response(200, TlsPeer::Client(&web));
    }
    inbound.response(200, PLAIN);
    inbound.response(503, TlsPeer::Client(&web));
    inbound.error(
        &ProxyError::ResponseTimeout(Duration::from_secs(1)),
        TlsPeer::Client(&web),
    );
    assert_eq!(inbound.identities(), 1, "one identity, one entry");
    inbound.response(200, TlsPeer::Client(&sidekiq));
    assert_eq!(inbound.identities(), 2);
    let outbound = m.route(Direction::Outbound, "web", "api");
    outbound.response(200, TlsPeer::Server(&web));
    outbound.response(200, TlsPeer::Server(&web));
    // The same identity on the other side is another series (not the same bytes to the
    // registry's hash of label values: see families::PEER).
    outbound.response(200, TlsPeer::Client(&web));
    assert_eq!(outbound.identities(), 2);

    let text = m.encode();
    let inbound_labels = r#"direction="inbound",error="",route="default",server_identity="",service="inbound",status_code="200""#;
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"herd_http_responses_total{{classification="success",client_identity="{web}",{inbound_labels},tls="true"}}"#
            )
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"herd_http_responses_total{{classification="success",client_identity="{sidekiq}",{inbound_labels},tls="true"}}"#
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"herd_http_responses_total{{classification="success",client_identity="",{inbound_labels},tls="false"}}"#
            )
        ),
        Some(1.0),
        "plaintext keeps its own series"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"herd_http_responses_total{{classification="failure",client_identity="{web}",direction="inbound",error="timeout",route="default",server_identity="",service="inbound",status_code="504",tls="true"}}"#
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"herd_http_responses_total{{classification="success",client_identity="",direction="outbound",error="",route="api",server_identity="{web}",service="web",status_code="200",tls="true"}}"#
            )
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"herd_http_responses_total{{classification="success",client_identity="{web}",direction="outbound",error="",route="api",server_identity="",service="web",status_code="200",tls="true"}}"#
            )
        ),
        Some(1.0)
    );
    // Requests and latency keep their labels.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("herd_http_response_latency") && l.contains("tls=")),
        "{text}"
    );

    drop(inbound);
    let text = m.encode();
    assert!(!text.contains(sidekiq.as_str()), "{text}");
    assert!(!text.contains(r#"service="inbound""#), "{text}");
    assert!(
        text.contains(web.as_str()),
        "the outbound route still holds its series"
    );
    drop(outbound);
    assert!(!m.encode().contains("spiffe://"));
}

#[test]
fn opaque_connections_over_mutual_tls_count_with_their_identity() {
    let m = Metrics::new();
    let web = id("spiffe://cluster.local/ns/mastodon/sa/web");
    let tcp = m.tcp(Direction::Inbound, "inbound");
    let first = tcp.connections(TlsPeer::Client(&web));
    let again = tcp.connections(TlsPeer::Client(&web));
    assert!(Arc::ptr_eq(&first, &again), "resolved once");
    assert!(Arc::ptr_eq(&tcp.connections(PLAIN), &tcp.plaintext));
    first.opened.inc();
    again.closed_idle.inc();
    tcp.plaintext.opened.inc();
    let text = m.encode();
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"herd_tcp_connections_opened_total{{client_identity="{web}",direction="inbound",server_identity="",service="inbound",tls="true"}}"#
            )
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"herd_tcp_connections_closed_total{{client_identity="{web}",direction="inbound",outcome="idle",server_identity="",service="inbound",tls="true"}}"#
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"herd_tcp_connections_opened_total{client_identity="",direction="inbound",server_identity="",service="inbound",tls="false"}"#
        ),
        Some(1.0)
    );
    assert!(
        text.contains(r#"herd_tcp_connections_open{direction="inbound",service="inbound"}"#),
        "the gauge keeps its labels: {text}"
    );
    drop((first, again, tcp));
    let text = m.encode();
    assert!(!text.contains(r#"service="inbound""#), "{text}");
}
