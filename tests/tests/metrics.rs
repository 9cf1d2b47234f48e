//! Prometheus metrics an operator can trust: a real Prometheus (Debian's) scrapes a real
//! herd-proxy while the test drives a known mix of traffic through it, and every count
//! Prometheus answers must equal what the test's own client saw, exactly.
//!
//! The mix ([`MIX`]) goes through the outbound listener (by authority) and the inbound one:
//! pages the app serves, the app's own 503s, a route retrying an endpoint that fails every other
//! request, a route timeout, an endpoint that refuses connections, an endpoint that takes
//! ~200 ms, hedged reads, an authority no service claims, and one redis session through an
//! opaque service listener. It is sent in two rounds, one request of each kind first, then the
//! rest once Prometheus has scraped the first: every series then has a sample before the bulk of
//! its traffic, so `rate()` over the window sees the traffic, as it would on a proxy that has
//! been up for a while.
//!
//! `promtool check metrics` checks the exposition (series a reload removes and balancer state
//! are in `metrics_state.rs`). The last test evaluates every PromQL expression of the chart's Grafana dashboard against the
//! Prometheus that saw the mix; see [`dashboard_expressions_evaluate_and_return_data_for_the_mix`]
//! for how Grafana's variables are substituted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use herd_tests::fleet::{self, Endpoint};
use herd_tests::load::{Client, Outcome};
use herd_tests::prometheus::{self, Exposition, Prometheus, keyed, non_zero};
use herd_tests::server::{self, Server, reply};
use herd_tests::{Proxy, Redis, TIMEOUT, ports};
use tokio::io::AsyncWriteExt;

/// One kind of request in the mix: where it goes, how many, and what the client must see.
#[derive(Clone, Copy, Debug)]
struct Kind {
    direction: &'static str,
    authority: &'static str,
    path: &'static str,
    /// The `service` and `route` labels the proxy must count it under.
    service: &'static str,
    route: &'static str,
    count: usize,
    /// The status the client must get.
    status: u16,
    /// The `error` label of a response the proxy generates (`""`: the app's own response),
    /// and a word its `herd-proxy-error` header must contain.
    error: &'static str,
    header: &'static str,
}

const fn kind(
    direction: &'static str,
    authority: &'static str,
    path: &'static str,
    service: &'static str,
    route: &'static str,
    count: usize,
    status: u16,
) -> Kind {
    Kind {
        direction,
        authority,
        path,
        service,
        route,
        count,
        status,
        error: "",
        header: "",
    }
}

const fn failing(k: Kind, error: &'static str, header: &'static str) -> Kind {
    Kind { error, header, ..k }
}

/// The traffic every test of the mix drives; services as in [`mix_config`].
const MIX: [Kind; 9] = [
    // The app's pages.
    kind(
        "outbound",
        "web.local",
        "/pages/home",
        "web",
        "pages",
        37,
        200,
    ),
    // The app's own 503s, passed back as they are (no retry on this route).
    kind(
        "outbound",
        "web.local",
        "/errors/1",
        "web",
        "errors",
        5,
        503,
    ),
    // The app fails every other request here; the route retries, so the client sees 200.
    kind("outbound", "web.local", "/flaky/1", "web", "flaky", 3, 200),
    // The app holds these 5 s; the route's timeout is 500 ms.
    failing(
        kind(
            "outbound",
            "web.local",
            "/stalled/1",
            "web",
            "stalled",
            1,
            504,
        ),
        "timeout",
        "timeout",
    ),
    // The only endpoint refuses connections.
    failing(
        kind("outbound", "down.local", "/", "down", "default", 4, 502),
        "connect",
        "connect",
    ),
    // The only endpoint answers after ~200 ms.
    kind("outbound", "slow.local", "/", "slow", "default", 10, 200),
    // Hedged after 50 ms when the first attempt lands on the lagging endpoint.
    kind("outbound", "hedged.local", "/", "hedged", "reads", 4, 200),
    // No service claims this authority.
    failing(
        kind(
            "outbound",
            "nowhere.local",
            "/",
            "unknown",
            "unknown",
            2,
            404,
        ),
        "no-route",
        "no service",
    ),
    // Requests for the pod itself.
    kind(
        "inbound",
        "app.local",
        "/pages/home",
        "inbound",
        "default",
        6,
        200,
    ),
];

/// How long the `slow` service's endpoint takes.
const SLOW: Duration = Duration::from_millis(200);

/// The app behind `web` and the inbound listener: `/errors/*` is its own 503, `/flaky/*` fails
/// its odd-numbered requests (1st, 3rd, ...) with 503, `/stalled/*` answers after 5 s, anything
/// else is `200 page`.
struct App {
    server: Server,
    flaky_attempts: Arc<AtomicUsize>,
}

async fn app() -> App {
    let flaky_attempts = Arc::new(AtomicUsize::new(0));
    let attempts = flaky_attempts.clone();
    let server = server::http1(move |req| {
        let attempts = attempts.clone();
        async move {
            let path = req.uri().path().to_owned();
            if path.starts_with("/errors") {
                reply::status(503)
            } else if path.starts_with("/flaky") {
                let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
                if n % 2 == 1 {
                    reply::status(503)
                } else {
                    reply::text("flaky, this time fine")
                }
            } else if path.starts_with("/stalled") {
                tokio::time::sleep(Duration::from_secs(5)).await;
                reply::text("too late")
            } else {
                reply::text("page")
            }
        }
    })
    .await;
    App {
        server,
        flaky_attempts,
    }
}

/// The proxy config of the mix: the inbound app, services `web` (routes `pages`, `errors`,
/// `flaky` with a retry, `stalled` with a 500 ms timeout), `down` (a refusing endpoint), `slow`,
/// `hedged` (a lagging and a quick endpoint, hedged after 50 ms) and the opaque `cache`
/// (redis) on a listener of its own. Outlier detection is off where endpoints fail on purpose,
/// so nothing is ejected mid-mix.
#[allow(clippy::too_many_arguments)]
fn mix_config(
    app: SocketAddr,
    down: SocketAddr,
    slow: SocketAddr,
    lagging: SocketAddr,
    quick: SocketAddr,
    cache: SocketAddr,
    redis: SocketAddr,
) -> String {
    format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {app}
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: web
            authorities: [web.local]
            endpoints: [{app}]
            outlierDetection: {{ consecutiveFailures: 0 }}
            routes:
              - name: pages
                match: {{ pathPrefix: /pages }}
              - name: errors
                match: {{ pathPrefix: /errors }}
              - name: flaky
                match: {{ pathPrefix: /flaky }}
                retry: {{ attempts: 1, conditions: [503] }}
              - name: stalled
                match: {{ pathPrefix: /stalled }}
                timeout: 500ms
          - name: down
            authorities: [down.local]
            endpoints: [{down}]
            outlierDetection: {{ consecutiveFailures: 0 }}
          - name: slow
            authorities: [slow.local]
            endpoints: [{slow}]
          - name: hedged
            authorities: [hedged.local]
            endpoints: [{lagging}, {quick}]
            balancer: round-robin
            outlierDetection: {{ consecutiveFailures: 0 }}
            routes:
              - name: reads
                hedge: {{ delay: 50ms }}
          - name: cache
            protocol: opaque
            listen: {cache}
            endpoints: [{redis}]
        "
    )
}

/// A proxy (and, when asked, a Prometheus scraping it) that has carried the whole [`MIX`] and
/// one redis session, with what the client saw.
struct Mixed {
    proxy: Proxy,
    prometheus: Option<Prometheus>,
    app: App,
    sent: Vec<(Kind, Outcome)>,
    /// What redis-cli printed for its `SET` and `GET` through the opaque listener.
    redis_said: String,
    _slow: Endpoint,
    _hedge_endpoints: (Endpoint, Endpoint),
    _redis: Redis,
}

impl Mixed {
    async fn start(with_prometheus: bool) -> Mixed {
        let app = app().await;
        let slow = fleet::endpoint("slow").delay(SLOW).start().await;
        let lagging = fleet::endpoint("lagging")
            .delay(Duration::from_millis(400))
            .start()
            .await;
        let quick = fleet::endpoint("quick").start().await;
        let redis = Redis::start().await;
        let cache = ports::addr();
        let proxy = Proxy::start(&mix_config(
            app.server.addr(),
            ports::closed(),
            slow.addr(),
            lagging.addr(),
            quick.addr(),
            cache,
            redis.addr(),
        ))
        .await;
        let prometheus = if with_prometheus {
            Some(Prometheus::scraping(proxy.admin()).await)
        } else {
            None
        };
        let mut outbound = Client::new(proxy.outbound());
        let mut inbound = Client::new(proxy.inbound());
        let mut sent = Vec::new();

        // Round one: one request of each kind, so every series exists...
        for kind in MIX {
            let client = if kind.direction == "inbound" {
                &mut inbound
            } else {
                &mut outbound
            };
            sent.push((kind, client.get(kind.authority, kind.path, &[]).await));
        }
        // ...and has been scraped, before the rest.
        if let Some(prometheus) = &prometheus {
            let first = MIX.len() as f64;
            prometheus
                .wait_for("sum(herd_http_requests_total)", |v| {
                    v.first().is_some_and(|(_, n)| *n >= first)
                })
                .await;
        }
        for kind in MIX {
            let client = if kind.direction == "inbound" {
                &mut inbound
            } else {
                &mut outbound
            };
            for _ in 1..kind.count {
                sent.push((kind, client.get(kind.authority, kind.path, &[]).await));
            }
        }
        let redis_said = redis_session(cache, "SET toot hello\nGET toot\n").await;

        let mixed = Mixed {
            proxy,
            prometheus,
            app,
            sent,
            redis_said,
            _slow: slow,
            _hedge_endpoints: (lagging, quick),
            _redis: redis,
        };
        mixed.assert_client_saw_the_mix();
        mixed
    }

    fn prometheus(&self) -> &Prometheus {
        self.prometheus.as_ref().expect("started with prometheus")
    }

    /// The mix went as planned, from the client's side: the right status for every request,
    /// a `herd-proxy-error` exactly on the proxy's own responses, redis answered.
    fn assert_client_saw_the_mix(&self) {
        for (kind, outcome) in &self.sent {
            assert_eq!(
                outcome.status, kind.status,
                "{} http://{}{}: {outcome:?}",
                kind.direction, kind.authority, kind.path
            );
            if kind.error.is_empty() {
                assert!(
                    outcome.error.is_none(),
                    "the app's own response carries herd-proxy-error: {kind:?} {outcome:?}"
                );
            } else {
                assert!(
                    outcome.error_text().contains(kind.header),
                    "expected a herd-proxy-error with {:?}: {outcome:?}",
                    kind.header
                );
            }
        }
        assert_eq!(self.redis_said, "OK\nhello", "redis-cli through `cache`");
    }

    /// Client requests per `direction/service/route`.
    fn requests(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (kind, _) in &self.sent {
            let key = format!("{}/{}/{}", kind.direction, kind.service, kind.route);
            *out.entry(key).or_insert(0.0) += 1.0;
        }
        out
    }

    /// Responses the client got per `direction/service/route/status_code/classification/error`.
    fn responses(&self) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (kind, outcome) in &self.sent {
            let proxys_own = outcome.error.is_some();
            let class = if outcome.status >= 500 || proxys_own {
                "failure"
            } else {
                "success"
            };
            let key = format!(
                "{}/{}/{}/{}/{class}/{}",
                kind.direction, kind.service, kind.route, outcome.status, kind.error
            );
            *out.entry(key).or_insert(0.0) += 1.0;
        }
        out
    }

    /// How many requests of `service` the client sent.
    fn sent_to(&self, service: &str) -> usize {
        self.sent
            .iter()
            .filter(|(k, _)| k.service == service)
            .count()
    }
}

/// One redis-cli process with `commands` on its stdin: one connection, so one opaque session,
/// however many commands. Returns what it printed.
async fn redis_session(addr: SocketAddr, commands: &str) -> String {
    let mut child = tokio::process::Command::new("redis-cli")
        .arg("-h")
        .arg(addr.ip().to_string())
        .arg("-p")
        .arg(addr.port().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn redis-cli");
    let mut stdin = child.stdin.take().expect("redis-cli stdin");
    stdin
        .write_all(commands.as_bytes())
        .await
        .expect("write to redis-cli");
    drop(stdin);
    let output = herd_tests::within("redis-cli", TIMEOUT, child.wait_with_output())
        .await
        .expect("wait for redis-cli");
    assert!(
        output.status.success(),
        "redis-cli failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// The one value of a `sum(...)`-style query, 0 when it matches nothing.
async fn sum(prometheus: &Prometheus, promql: &str) -> f64 {
    prometheus.value(promql).await.unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_counts_exactly_what_the_client_saw() {
    let mix = Mixed::start(true).await;
    let prom = mix.prometheus();

    // One request counted per client request, per route: not per attempt (the flaky route's
    // retries), and the unknown authority under `unknown`.
    let requests = prom
        .wait_for_counts(
            "sum by (direction, service, route) (herd_http_requests_total)",
            &["direction", "service", "route"],
            &mix.requests(),
        )
        .await;
    println!("requests: {requests:?}");

    // Every response the client got, by status, classification and error, per route.
    let expected = mix.responses();
    println!("responses the client saw: {expected:#?}");
    prom.wait_for_counts(
        "sum by (direction, service, route, status_code, classification, error) \
         (herd_http_responses_total)",
        &[
            "direction",
            "service",
            "route",
            "status_code",
            "classification",
            "error",
        ],
        &expected,
    )
    .await;
    // The same for `web` as an operator's panel asks it.
    let web = prom
        .query(r#"sum by (status_code, error) (herd_http_responses_total{service="web"})"#)
        .await;
    assert_eq!(
        non_zero(&keyed(&web, &["status_code", "error"])),
        BTreeMap::from([
            ("200/".to_owned(), 40.0),
            ("503/".to_owned(), 5.0),
            ("504/timeout".to_owned(), 1.0),
        ]),
        "{}",
        prometheus::show(&web)
    );

    // Retries: each flaky request cost one retry, for the 503 (reason `status`); the app saw
    // them all.
    let flaky_requests = MIX[2].count;
    let attempts = mix.app.flaky_attempts.load(Ordering::SeqCst);
    assert_eq!(attempts, 2 * flaky_requests, "attempts at the app's /flaky");
    prom.wait_for_counts(
        "sum by (direction, service, route, reason) (herd_http_retries_total)",
        &["direction", "service", "route", "reason"],
        &BTreeMap::from([(
            "outbound/web/flaky/status".to_owned(),
            (attempts - flaky_requests) as f64,
        )]),
    )
    .await;
    assert_eq!(
        sum(prom, "sum(herd_http_retries_skipped_total)").await,
        0.0,
        "no retry went over the budget"
    );

    // Hedges: a read that landed on the lagging endpoint was hedged to the quick one, which
    // won.
    let hedges = sum(prom, r#"sum(herd_http_hedges_total{service="hedged"})"#).await;
    let won = sum(prom, r#"sum(herd_http_hedges_won_total{service="hedged"})"#).await;
    println!("hedges sent {hedges}, won {won}");
    assert!(
        hedges >= 1.0 && (1.0..=hedges).contains(&won),
        "hedges {hedges}, won {won}"
    );
    assert_eq!(
        sum(prom, r#"sum(herd_http_hedges_total{service!="hedged"})"#).await,
        0.0,
        "only `hedged` hedges"
    );

    // Both histograms observed every response, per route.
    for histogram in [
        "herd_http_response_latency_seconds",
        "herd_http_response_duration_seconds",
    ] {
        prom.wait_for_counts(
            &format!("sum by (direction, service, route) ({histogram}_count)"),
            &["direction", "service", "route"],
            &mix.requests(),
        )
        .await;
    }

    // The slow endpoint's ~200 ms: nothing under 100 ms, the median in (0.1, 0.25].
    let slow = mix.sent_to("slow") as f64;
    for histogram in [
        "herd_http_response_latency_seconds",
        "herd_http_response_duration_seconds",
    ] {
        let bucket = |le: &str| format!(r#"sum({histogram}_bucket{{service="slow",le="{le}"}})"#);
        prom.wait_for_value(&bucket("+Inf"), slow).await;
        assert_eq!(
            sum(prom, &bucket("0.1")).await,
            0.0,
            "{histogram}: a response of `slow` under 100 ms"
        );
        let within_half_second = sum(prom, &bucket("0.5")).await;
        println!("{histogram}: slow ≤ 0.5 s: {within_half_second} of {slow}");
        let median = format!(
            r#"histogram_quantile(0.5, sum by (le) (rate({histogram}_bucket{{service="slow"}}[1m])))"#
        );
        let p50 = prom.value(&median).await.expect("a median");
        println!("{histogram}: p50 of slow {p50}");
        assert!(
            p50 > 0.1 && p50 <= 0.25,
            "{median} = {p50}: a {SLOW:?} endpoint's median belongs in the (0.1, 0.25] bucket"
        );
    }

    // The redis session: one tunnel through `cache`, closed cleanly, bytes both ways.
    prom.wait_for_counts(
        "sum by (direction, service) (herd_tcp_connections_opened_total)",
        &["direction", "service"],
        &BTreeMap::from([("outbound/cache".to_owned(), 1.0)]),
    )
    .await;
    prom.wait_for_counts(
        "sum by (direction, service, outcome) (herd_tcp_connections_closed_total)",
        &["direction", "service", "outcome"],
        &BTreeMap::from([("outbound/cache/ok".to_owned(), 1.0)]),
    )
    .await;
    assert_eq!(
        sum(prom, r#"sum(herd_tcp_connections_open{service="cache"})"#).await,
        0.0
    );
    let sent = sum(prom, r#"sum(herd_tcp_sent_bytes_total{service="cache"})"#).await;
    let received = sum(
        prom,
        r#"sum(herd_tcp_received_bytes_total{service="cache"})"#,
    )
    .await;
    println!("cache: {sent} bytes sent to redis, {received} received");
    // At least the RESP of `SET toot hello` and `GET toot`, and of `+OK` and `$5 hello`
    // (redis-cli 7 also asks `COMMAND DOCS` first, whose answer is large: hence no upper bound).
    assert!(sent >= 54.0, "sent to redis: {sent} bytes");
    assert!(received >= 16.0, "received from redis: {received} bytes");

    // Listeners: the redis session is the only connection `cache` accepted.
    assert_eq!(
        sum(
            prom,
            r#"sum(herd_listener_connections_accepted_total{listener="cache"})"#
        )
        .await,
        1.0
    );
    assert_eq!(
        sum(
            prom,
            r#"sum(herd_listener_connections_open{listener="cache"})"#
        )
        .await,
        0.0
    );
    for (direction, listener) in [("outbound", "outbound"), ("inbound", "inbound")] {
        let accepted = sum(
            prom,
            &format!(
                r#"sum(herd_listener_connections_accepted_total{{direction="{direction}",listener="{listener}"}})"#
            ),
        )
        .await;
        assert!(accepted >= 1.0, "{listener} accepted {accepted}");
    }

    // Balancer at rest: every endpoint ready (nothing was ejected), nothing waiting.
    let states = prom
        .query("sum by (service, state) (herd_balancer_endpoints)")
        .await;
    let states = non_zero(&keyed(&states, &["service", "state"]));
    println!("endpoints by state: {states:?}");
    for (service, ready) in [("web", 1.0), ("down", 1.0), ("slow", 1.0), ("hedged", 2.0)] {
        assert_eq!(
            states.get(&format!("{service}/ready")),
            Some(&ready),
            "{states:?}"
        );
    }
    assert!(
        states.keys().all(|k| k.ends_with("/ready")),
        "an endpoint ejected or probing: {states:?}"
    );
    assert_eq!(sum(prom, "sum(herd_balancer_pending_requests)").await, 0.0);
    assert_eq!(
        sum(prom, "sum(herd_balancer_overload_rejections_total)").await,
        0.0
    );
    let rtt = prom
        .query(r#"herd_balancer_endpoint_rtt_seconds{service="slow"}"#)
        .await;
    println!("slow's rtt: {}", prometheus::show(&rtt));
    assert!(
        rtt.len() == 1 && rtt[0].1 > 0.0,
        "one rtt series for slow's endpoint: {}",
        prometheus::show(&rtt)
    );

    // Config and process.
    assert_eq!(prom.value("herd_config_version").await, Some(1.0));
    assert_eq!(sum(prom, "sum(herd_config_reloads_total)").await, 0.0);
    let rss = sum(prom, "process_resident_memory_bytes").await;
    let open_fds = sum(prom, "process_open_fds").await;
    let max_fds = sum(prom, "process_max_fds").await;
    let age = sum(prom, "time() - process_start_time_seconds").await;
    // Present; its value may well be 0 here (few requests, and the Rust client counts whole
    // seconds of CPU).
    let cpu = prom
        .value("process_cpu_seconds_total")
        .await
        .expect("process_cpu_seconds_total");
    println!("rss {rss}, fds {open_fds}/{max_fds}, up {age:.1}s, cpu {cpu}s");
    assert!(rss > 1_000_000.0, "rss {rss}");
    assert!(
        open_fds > 0.0 && max_fds >= open_fds,
        "{open_fds}/{max_fds}"
    );
    assert!((0.0..600.0).contains(&age), "started {age} s ago");
    assert!(cpu >= 0.0, "cpu {cpu}");
}

/// Metric families the mix must have put in the exposition, with their types.
const FAMILIES: [(&str, &str); 20] = [
    ("herd_http_requests_total", "counter"),
    ("herd_http_responses_total", "counter"),
    ("herd_http_response_latency_seconds", "histogram"),
    ("herd_http_response_duration_seconds", "histogram"),
    ("herd_http_retries_total", "counter"),
    ("herd_http_hedges_total", "counter"),
    ("herd_http_hedges_won_total", "counter"),
    ("herd_balancer_endpoints", "gauge"),
    ("herd_balancer_pending_requests", "gauge"),
    ("herd_balancer_endpoint_rtt_seconds", "gauge"),
    ("herd_tcp_connections_opened_total", "counter"),
    ("herd_tcp_connections_closed_total", "counter"),
    ("herd_tcp_connections_open", "gauge"),
    ("herd_tcp_sent_bytes_total", "counter"),
    ("herd_tcp_received_bytes_total", "counter"),
    ("herd_listener_connections_accepted_total", "counter"),
    ("herd_listener_connections_open", "gauge"),
    ("herd_config_version", "gauge"),
    ("herd_config_reloads_total", "counter"),
    ("process_resident_memory_bytes", "gauge"),
];

#[tokio::test(flavor = "multi_thread")]
async fn the_exposition_after_the_mix_passes_promtool_and_declares_each_family() {
    let mix = Mixed::start(false).await;
    let response = mix.proxy.admin_get("/metrics").await;
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    let content_type = response.header("content-type").unwrap_or_default();
    let text = response.text();
    let exposition = Exposition::parse(&text);

    let mut problems = Vec::new();
    if !content_type.starts_with("text/plain") {
        problems.push(format!("content-type {content_type:?}, not text/plain"));
    }
    if let Err(lint) = prometheus::promtool_check_metrics(&text) {
        problems.push(format!("promtool check metrics: {lint}"));
    }
    for (family, kind) in FAMILIES {
        match exposition.types.get(family) {
            Some(declared) if declared == kind => {}
            declared => problems.push(format!("{family}: # TYPE {declared:?}, expected {kind}")),
        }
        if exposition
            .help
            .get(family)
            .is_none_or(|h| h.trim().is_empty())
        {
            problems.push(format!("{family}: no # HELP"));
        }
    }
    // Histogram buckets are the contract's, 1 ms to 60 s, on every histogram series.
    let buckets: Vec<String> = exposition
        .find(
            "herd_http_response_latency_seconds_bucket",
            &[("service", "slow")],
        )
        .map(|s| s.labels["le"].clone())
        .collect();
    let expected: Vec<String> = [
        "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5",
        "10", "30", "60", "+Inf",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if buckets != expected {
        problems.push(format!("slow's latency buckets: {buckets:?}"));
    }
    // Bounded labels: no remote host, path or client address in any label value.
    for sample in &exposition.samples {
        for (label, value) in &sample.labels {
            if value.starts_with('/') || value.contains(".local") {
                problems.push(format!(
                    "{}: label {label}={value:?} looks like a path or host name",
                    sample.name
                ));
            }
        }
    }
    println!(
        "{} samples in {} families",
        exposition.samples.len(),
        exposition.types.len()
    );
    assert!(
        problems.is_empty(),
        "/metrics after the mix:\n  {}\n---- exposition ----\n{text}",
        problems.join("\n  ")
    );
}

#[test]
fn promtool_check_metrics_is_not_vacuous() {
    let good = "# HELP a_total Things.\n# TYPE a_total counter\na_total 1\n";
    let bad = "# HELP a Things.\n# TYPE a counter\na 1\n";
    assert_eq!(prometheus::promtool_check_metrics(good), Ok(()));
    let lint = prometheus::promtool_check_metrics(bad).expect_err("a counter without _total");
    assert!(lint.contains("_total"), "{lint}");
}

/// Every sample of `exposition` with `label="value"`, one line each, for messages.
/// Where the chart's dashboard lives, from the workspace root.
const DASHBOARD: &str = "charts/herd/dashboards/herd.json";

/// Rows whose series the mix (plaintext, one proxy) cannot produce: the identity row is
/// evaluated against proxies with certificates, policies and refused handshakes by
/// `tests/tests/mtls.rs`.
const ROWS_ELSEWHERE: [&str; 1] = ["Identity"];

/// Every `expr` of the Grafana dashboard's panels (rows' nested panels included), with the
/// panel's title.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        let mut row = "";
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("(untitled)");
            if panel["type"] == "row" {
                row = title;
            }
            if ROWS_ELSEWHERE.contains(&row) {
                continue;
            }
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str()
                    && !expr.trim().is_empty()
                {
                    out.push((title.to_owned(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// Grafana's interval variables, and what a test substitutes for each.
const INTERVALS: [(&str, &str); 6] = [
    ("__rate_interval", "1m"),
    ("__interval", "1m"),
    ("__range", "1m"),
    ("__interval_ms", "60000"),
    ("__range_s", "60"),
    ("__range_ms", "60000"),
];

/// `expr` as Grafana would send it with "All" selected in every dashboard variable:
/// `$__rate_interval`, `$__interval` and `$__range` become `1m` (the window Prometheus has data
/// for; `_ms`/`_s` forms in those units); every variable the dashboard defines, and
/// `$service`, `$route`, `$direction` always, becomes `.*` in any of Grafana's spellings
/// (`$v`, `${v}`, `${v:format}`, `[[v]]`), and a matcher on it becomes a regex matcher
/// (`label="$v"` -> `label=~".*"`, `label!="$v"` -> `label!~".*"`). Anything else with a `$`
/// is left alone, so Prometheus rejects a variable the dashboard never defined.
fn substitute(expr: &str, variables: &[String]) -> String {
    let mut names: Vec<String> = variables.to_vec();
    names.extend(["service", "route", "direction"].map(String::from));
    names.sort_by_key(|n| std::cmp::Reverse(n.len()));
    names.dedup();
    let value_of = |name: &str| -> Option<&str> {
        if let Some((_, v)) = INTERVALS.iter().find(|(n, _)| *n == name) {
            Some(v)
        } else if names.iter().any(|n| n == name) {
            Some(".*")
        } else {
            None
        }
    };
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find(['$', '[']) {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (name, len) = if let Some(braced) = tail.strip_prefix("${") {
            let end = braced.find('}').map_or(braced.len(), |e| e);
            let name = braced[..end].split(':').next().unwrap_or("");
            (name, 2 + end + 1)
        } else if let Some(bracketed) = tail.strip_prefix("[[") {
            let end = bracketed.find("]]").map_or(bracketed.len(), |e| e);
            (
                bracketed[..end].split(':').next().unwrap_or(""),
                2 + end + 2,
            )
        } else if let Some(bare) = tail.strip_prefix('$') {
            let end = bare
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(bare.len());
            (&bare[..end], 1 + end)
        } else {
            ("", 0)
        };
        match value_of(name) {
            Some(value) if len <= tail.len() => {
                out.push_str(value);
                rest = &tail[len..];
            }
            _ => {
                out.push_str(&tail[..1]);
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out.replace("!=\".*\"", "!~\".*\"")
        .replace("=\".*\"", "=~\".*\"")
}

#[test]
fn grafana_variables_are_substituted_as_all() {
    let vars = vec!["service".to_owned(), "svc".to_owned()];
    assert_eq!(
        substitute(
            r#"sum(rate(x{service="$service",route=~"${route}",s="${svc:regex}"}[$__rate_interval])) [[direction]] $unknown"#,
            &vars
        ),
        r#"sum(rate(x{service=~".*",route=~".*",s=~".*"}[1m])) .* $unknown"#
    );
    assert_eq!(substitute("up[5m]", &vars), "up[5m]");
    assert_eq!(
        substitute(r#"x{a!="$service"}[$__range]"#, &vars),
        r#"x{a!~".*"}[1m]"#
    );
}

/// Evaluates every dashboard expression against the Prometheus that scraped the mix. Skipped
/// (passes, saying so) while the dashboard file does not exist; once it does, an expression
/// Prometheus cannot evaluate, or one that returns no series or only NaN for the mix, fails the
/// test. Variables are substituted as [`substitute`] says; templating queries of the form
/// `label_values(SELECTOR, LABEL)` must find their label too.
#[tokio::test(flavor = "multi_thread")]
async fn dashboard_expressions_evaluate_and_return_data_for_the_mix() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(DASHBOARD);
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("skipped: {DASHBOARD} does not exist yet");
        return;
    };
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let templating = dashboard["templating"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let variables: Vec<String> = templating
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    let exprs = dashboard_exprs(&dashboard);
    assert!(
        !exprs.is_empty(),
        "{DASHBOARD} has no panel targets with `expr`"
    );

    let mix = Mixed::start(true).await;
    let prom = mix.prometheus();
    // Everything the mix sent has been scraped, and scraped again (rate() needs two samples).
    let total = mix.sent.len() as f64;
    prom.wait_for("sum(herd_http_requests_total)", |v| {
        v.first().is_some_and(|(_, n)| *n == total)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut problems = Vec::new();
    let mut report = Vec::new();
    for (title, expr) in &exprs {
        let promql = substitute(expr, &variables);
        match prom.try_query(&promql).await {
            Err(e) => problems.push(format!("{title}: {promql}\n    error: {e}")),
            Ok(vector) if !vector.iter().any(|(_, v)| v.is_finite()) => problems.push(format!(
                "{title}: {promql}\n    no data: {}",
                prometheus::show(&vector)
            )),
            Ok(vector) => report.push(format!("{title}: {} series", vector.len())),
        }
    }
    for variable in &templating {
        let query = variable["query"]
            .as_str()
            .or_else(|| variable["query"]["query"].as_str())
            .unwrap_or_default();
        let Some(args) = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
        else {
            continue;
        };
        let Some((selector, label)) = args.rsplit_once(',') else {
            continue;
        };
        let promql = format!(
            "group by ({}) ({})",
            label.trim(),
            substitute(selector, &variables)
        );
        match prom.try_query(&promql).await {
            Ok(vector) if !vector.is_empty() => report.push(format!(
                "variable {}: {} values",
                variable["name"],
                vector.len()
            )),
            other => problems.push(format!(
                "variable {}: {query} ({promql}): {other:?}",
                variable["name"]
            )),
        }
    }
    println!("{DASHBOARD}:\n  {}", report.join("\n  "));
    assert!(
        problems.is_empty(),
        "{} of {} dashboard expressions fail against the mix:\n  {}",
        problems.len(),
        exprs.len(),
        problems.join("\n  ")
    );
}
