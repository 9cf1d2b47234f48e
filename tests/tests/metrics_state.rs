//! Metrics that follow the proxy's state: series of a service or route a reload removed go away
//! once their requests are done, and the balancer's series show an ejection, a waiting request
//! and an overload rejection. These read `/metrics` directly.

use std::time::Duration;

use herd_tests::fleet;
use herd_tests::load::Client;
use herd_tests::prometheus::Exposition;
use herd_tests::{Proxy, TIMEOUT, endpoints, eventually, ports};

fn lines_with(exposition: &Exposition, label: &str, value: &str) -> Vec<String> {
    exposition
        .with_label(label, value)
        .map(|s| format!("{}{:?} {}", s.name, s.labels, s.value))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_removing_a_service_or_route_removes_its_series_once_its_requests_are_done() {
    let web = fleet::endpoint("web").start().await;
    let gone = fleet::endpoint("gone")
        .delay(Duration::from_millis(1500))
        .start()
        .await;
    // The route `old` and the service `gone` are one flow-style line each, present or not.
    let config = |with_removed: bool| {
        let (old_route, gone_service) = if with_removed {
            (
                "- { name: old, match: { pathPrefix: /old } }".to_owned(),
                format!(
                    "- {{ name: gone, authorities: [gone.local], endpoints: [{}] }}",
                    gone.addr()
                ),
            )
        } else {
            (String::new(), String::new())
        };
        format!(
            "
            proxy:
              outbound:
                listen: $OUTBOUND
              admin:
                listen: $ADMIN
            services:
              - name: web
                authorities: [web.local]
                endpoints: [{}]
                routes:
                  - {{ name: keep, match: {{ pathPrefix: /keep }} }}
                  {old_route}
              {gone_service}
            ",
            web.addr()
        )
    };
    let proxy = Proxy::start(&config(true)).await;
    let mut client = Client::new(proxy.outbound());
    for (authority, path) in [
        ("web.local", "/keep"),
        ("web.local", "/old"),
        ("gone.local", "/"),
    ] {
        let outcome = client.get(authority, path, &[]).await;
        assert_eq!(outcome.status, 200, "{authority}{path}: {outcome:?}");
    }
    let before = Exposition::parse(&proxy.admin_get("/metrics").await.text());
    assert!(
        before
            .sum("herd_http_requests_total", &[("service", "gone")])
            .is_some_and(|n| n == 1.0),
        "gone's request is not counted: {:?}",
        lines_with(&before, "service", "gone")
    );
    assert_eq!(
        before.sum("herd_http_requests_total", &[("route", "old")]),
        Some(1.0)
    );

    // A request to `gone` is under way when the reload removes it.
    let outbound = proxy.outbound();
    let in_flight =
        tokio::spawn(async move { Client::new(outbound).get("gone.local", "/", &[]).await });
    eventually("the request to reach gone", TIMEOUT, || async {
        (gone.in_flight() == 1).then_some(())
    })
    .await;
    proxy.reload(&config(false)).await;
    let outcome = in_flight.await.expect("request task");
    assert_eq!(outcome.status, 200, "the request in flight: {outcome:?}");

    let deadline = std::time::Instant::now() + TIMEOUT;
    let after = loop {
        let now = Exposition::parse(&proxy.admin_get("/metrics").await.text());
        let mut left = lines_with(&now, "service", "gone");
        left.extend(lines_with(&now, "route", "old"));
        if left.is_empty() {
            break now;
        }
        // Buckets repeat their histogram's labels fifteen times: count them, list the rest.
        let buckets = left.iter().filter(|l| l.contains("_bucket{")).count();
        left.retain(|l| !l.contains("_bucket{"));
        left.push(format!("(and {buckets} histogram buckets)"));
        assert!(
            std::time::Instant::now() < deadline,
            "{TIMEOUT:?} after the reload (and its request in flight done), /metrics still has \
             series of the removed service `gone` or route `old`:\n  {}",
            left.join("\n  ")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The routes that stayed keep their counts: a reload is not a counter reset.
    assert_eq!(
        after.sum(
            "herd_http_requests_total",
            &[("service", "web"), ("route", "keep")]
        ),
        Some(1.0),
        "web/keep after the reload"
    );
    assert_eq!(after.sum("herd_config_version", &[]), Some(2.0));
    assert_eq!(
        after.sum("herd_config_reloads_total", &[("result", "applied")]),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ejected_endpoint_shows_in_the_balancer_metrics() {
    let dead = ports::closed();
    let alive = fleet::endpoint("alive").start().await;
    let proxy = Proxy::start(&fleet::mesh(&format!(
        "endpoints: [{dead}, {}]
         balancer: round-robin
         outlierDetection: {{ consecutiveFailures: 2, minEjection: 30s, maxEjection: 60s }}",
        alive.addr()
    )))
    .await;
    let mut client = Client::new(proxy.outbound());

    // Requests alternate between the endpoints until the dead one has failed twice in a row.
    let mut outcomes = Vec::new();
    let mut ejected = None;
    for _ in 0..50 {
        outcomes.push(client.get(fleet::AUTHORITY, "/", &[]).await);
        let now = Exposition::parse(&proxy.admin_get("/metrics").await.text());
        if now.sum(
            "herd_balancer_endpoints",
            &[("service", "web"), ("state", "ejected")],
        ) == Some(1.0)
        {
            ejected = Some(now);
            break;
        }
    }
    let Some(exposition) = ejected else {
        let web = endpoints::service(&proxy, "web").await;
        let now = Exposition::parse(&proxy.admin_get("/metrics").await.text());
        panic!(
            "herd_balancer_endpoints{{state=\"ejected\"}} never became 1 in {} requests \
             ({outcomes:?});\n/endpoints: {web:?}\n/metrics for web: {:#?}",
            outcomes.len(),
            lines_with(&now, "service", "web")
        );
    };

    let value = |name: &str, state: &str| {
        exposition
            .sum(name, &[("service", "web"), ("state", state)])
            .unwrap_or(0.0)
    };
    let ejections = exposition
        .sum("herd_balancer_ejections_total", &[("service", "web")])
        .unwrap_or(0.0);
    println!(
        "after {} requests: ready {}, ejected {}, probing {}; ejections {ejections}",
        outcomes.len(),
        value("herd_balancer_endpoints", "ready"),
        value("herd_balancer_endpoints", "ejected"),
        value("herd_balancer_endpoints", "probing"),
    );
    assert_eq!(value("herd_balancer_endpoints", "ready"), 1.0);
    assert_eq!(value("herd_balancer_endpoints", "probing"), 0.0);
    assert!(ejections >= 1.0, "ejections {ejections}");
    // The proxy's own account agrees.
    let web = endpoints::service(&proxy, "web").await;
    assert_eq!(web.endpoint(dead).state, "ejected", "{web:?}");
    // And every 502 the client got is counted as a connect failure.
    let refused = outcomes.iter().filter(|o| o.status == 502).count();
    assert!(refused >= 2, "{outcomes:?}");
    assert_eq!(
        exposition.sum(
            "herd_http_responses_total",
            &[
                ("service", "web"),
                ("status_code", "502"),
                ("error", "connect")
            ]
        ),
        Some(refused as f64),
        "{:?}",
        lines_with(&exposition, "service", "web")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_waiting_request_and_an_overload_rejection_show_in_the_balancer_metrics() {
    let hold = fleet::endpoint("hold")
        .delay(Duration::from_secs(2))
        .start()
        .await;
    let proxy = Proxy::start(&fleet::mesh(&format!(
        "endpoints: [{}]
         limits: {{ maxConnections: 1, maxPendingRequests: 1, failFastTimeout: 10s }}",
        hold.addr()
    )))
    .await;
    let metric = |text: String, name: &str, matching: &[(&str, &str)]| {
        Exposition::parse(&text).sum(name, matching).unwrap_or(0.0)
    };
    let web = [("service", "web")];

    // `first` holds the only connection; `second` waits for it.
    let send = || {
        let outbound = proxy.outbound();
        tokio::spawn(
            async move { herd_tests::load::send(outbound, fleet::AUTHORITY, "/", &[]).await },
        )
    };
    let first = send();
    eventually("the first request at the endpoint", TIMEOUT, || async {
        (hold.in_flight() == 1).then_some(())
    })
    .await;
    let second = send();
    eventually("one request pending in /metrics", TIMEOUT, || async {
        let text = proxy.admin_get("/metrics").await.text();
        (metric(text, "herd_balancer_pending_requests", &web) == 1.0).then_some(())
    })
    .await;

    // The queue is full: the third is refused at once.
    let third = herd_tests::load::send(proxy.outbound(), fleet::AUTHORITY, "/", &[]).await;
    assert_eq!(third.status, 503, "{third:?}");
    assert!(third.error_text().contains("overloaded"), "{third:?}");
    let (first, second) = (first.await.expect("task"), second.await.expect("task"));
    assert_eq!((first.status, second.status), (200, 200));

    let text = proxy.admin_get("/metrics").await.text();
    assert_eq!(
        metric(
            text.clone(),
            "herd_balancer_overload_rejections_total",
            &web
        ),
        1.0
    );
    assert_eq!(
        metric(text.clone(), "herd_balancer_pending_requests", &web),
        0.0
    );
    assert_eq!(
        metric(
            text.clone(),
            "herd_http_responses_total",
            &[
                ("service", "web"),
                ("status_code", "503"),
                ("classification", "failure"),
                ("error", "overloaded")
            ]
        ),
        1.0
    );
    assert_eq!(
        metric(
            text,
            "herd_http_responses_total",
            &[("service", "web"), ("status_code", "200")]
        ),
        2.0
    );
}
