//! The admin port: `/live`, `/ready`, `/config`, `/metrics`, and `POST /shutdown`.

use std::time::Duration;

use herd_tests::server::{self, reply};
use herd_tests::{Proxy, Puma, TIMEOUT, curl, puma, tcp};

#[tokio::test(flavor = "multi_thread")]
async fn live_and_ready_answer_200() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;

    assert_eq!(proxy.admin_get("/live").await.status, 200);
    assert_eq!(proxy.admin_get("/ready").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn config_shows_the_active_config_and_its_version() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {0}
          admin:
            listen: $ADMIN
        services:
          - name: web
            authorities: [Web.Local]
            endpoints: [{0}]
        ",
        app.addr()
    ))
    .await;

    let response = proxy.admin_get("/config").await;

    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        response.headers
    );
    let body = response.json();
    assert_eq!(body["version"], 1, "{body}");
    assert_eq!(
        body["file"],
        proxy.config_path().display().to_string(),
        "{body}"
    );
    let config = &body["config"];
    assert_eq!(
        config["proxy"]["inbound"]["listen"],
        proxy.inbound().to_string(),
        "{body}"
    );
    assert_eq!(
        config["proxy"]["inbound"]["app"],
        app.addr().to_string(),
        "{body}"
    );
    assert_eq!(config["services"][0]["name"], "web", "{body}");
    // Defaults are filled in, authorities normalized.
    assert_eq!(
        config["services"][0]["authorities"][0], "web.local",
        "{body}"
    );
    assert_eq!(config["proxy"]["drainTimeout"], "30s", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_prometheus_text() {
    let app = Puma::start(puma::ECHO).await;
    let proxy = Proxy::inbound_to(app.addr()).await;
    assert_eq!(curl().get(proxy.inbound_url("/")).await.status(), 200);

    let response = proxy.admin_get("/metrics").await;

    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        response.headers
    );
    let text = response.text();
    assert!(text.contains("# TYPE "), "{text}");
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        // `name{labels} value [timestamp]`; label values may contain spaces, so split after `}`.
        let rest = line.rsplit_once('}').map_or(line, |(_, rest)| rest);
        let value = rest
            .split_whitespace()
            .nth(if line.contains('}') { 0 } else { 1 })
            .unwrap_or_else(|| panic!("no value in metric line {line:?}"));
        assert!(
            value.parse::<f64>().is_ok(),
            "bad value {value:?} in {line:?}"
        );
        let name = line.split(['{', ' ']).next().unwrap_or_default();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn post_shutdown_drains_in_flight_requests_and_exits_0() {
    let app = server::http1(|_req| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        reply::text("finished")
    })
    .await;
    let mut proxy = Proxy::inbound_to(app.addr()).await;
    let in_flight = tokio::spawn(curl().get(proxy.inbound_url("/slow")));
    app.wait_for_requests(1).await;

    let response = tcp::request(proxy.admin(), "POST", "/shutdown", b"").await;
    assert_eq!(response.status, 202, "{}", response.text());

    let out = in_flight.await.unwrap();
    assert_eq!(
        (out.status(), out.text().as_str()),
        (200, "finished"),
        "{}",
        out.stderr
    );
    let status = proxy.wait_exit(TIMEOUT).await;
    assert_eq!(status.code(), Some(0), "{}", proxy.stderr_text());
}
