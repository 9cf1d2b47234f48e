//! The access log and the tracing headers: one line per request on the proxy's stdout, in JSON
//! or Apache's Combined Log Format, only for the listeners that ask for it; `x-request-id`
//! given to requests that have none (and left alone on those that have one) so the app's
//! request ids line up with the proxy's log; W3C and B3 trace headers passed through untouched.
//!
//! The client is a raw socket (exact request lines and header bytes, and its own address to
//! compare with the log's `client`); the app is a fleet endpoint that records the headers each
//! request arrived with. Every line is checked against what the client and the app saw.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use herd_tests::fleet::{self, AUTHORITY, Endpoint, Seen};
use herd_tests::tcp::{Conn, Response};
use herd_tests::{Proxy, TIMEOUT, eventually, noise};
use regex::Regex;
use serde_json::{Value, json};

/// How long the proxy's stdout is watched for lines that should not come.
const QUIET: Duration = Duration::from_millis(400);

/// Every key a JSON access-log line has.
const JSON_KEYS: [&str; 16] = [
    "time",
    "direction",
    "method",
    "authority",
    "path",
    "status",
    "duration",
    "bytesIn",
    "bytesOut",
    "endpoint",
    "attempts",
    "client",
    "error",
    "requestId",
    "service",
    "route",
];

/// A W3C and B3 context as Rails' tracing middleware would receive it.
const TRACE_HEADERS: [(&str, &str); 6] = [
    (
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    ),
    ("tracestate", "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"),
    ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("x-b3-spanid", "e457b5a2e4d86bd1"),
    ("x-b3-sampled", "1"),
    (
        "b3",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90",
    ),
];

/// A proxy with an outbound listener (`listen` plus the flow-style `settings`, which start with
/// a comma or are empty) and one service, `web` ([`AUTHORITY`]), over `endpoint`.
fn outbound_to(endpoint: &Endpoint, settings: &str) -> String {
    format!(
        "
        proxy:
          outbound: {{ listen: $OUTBOUND{settings} }}
          admin:
            listen: $ADMIN
        services:
          - name: web
            authorities: [{AUTHORITY}]
            endpoints: [{}]
        ",
        endpoint.addr()
    )
}

/// Sends one request on `conn` (kept alive) and reads its response; returns it with the time it
/// took.
async fn exchange(
    conn: &mut Conn,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (Response, Duration) {
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let start = Instant::now();
    conn.send([head.as_bytes(), body].concat()).await;
    let response = conn.read_response_to(method).await;
    (response, start.elapsed())
}

/// Fails if the proxy writes more than `n` lines to stdout in the next [`QUIET`].
async fn assert_stdout_stays_at(proxy: &Proxy, n: usize) {
    let until = Instant::now() + QUIET;
    while Instant::now() < until {
        let lines = proxy.stdout_lines();
        assert!(
            lines.len() <= n,
            "expected {n} lines on stdout, got {}:\n{}",
            lines.len(),
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits for exactly `n` access-log lines (no more come within [`QUIET`]) and parses each as
/// a JSON object with every key of the contract.
async fn json_log(proxy: &Proxy, n: usize) -> Vec<Value> {
    proxy.wait_for_stdout_lines(n).await;
    assert_stdout_stays_at(proxy, n).await;
    let lines = proxy.stdout_lines();
    lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("an access-log line is not JSON ({e}): {line}"));
            let object = value
                .as_object()
                .unwrap_or_else(|| panic!("an access-log line is not a JSON object: {line}"));
            let missing: Vec<&str> = JSON_KEYS
                .into_iter()
                .filter(|key| !object.contains_key(*key))
                .collect();
            assert!(missing.is_empty(), "keys {missing:?} missing from {line}");
            value
        })
        .collect()
}

/// The one line for a request to `path` (path and query).
fn line_for<'a>(lines: &'a [Value], path: &str) -> &'a Value {
    let found: Vec<&Value> = lines.iter().filter(|l| l["path"] == path).collect();
    assert_eq!(
        found.len(),
        1,
        "expected one access-log line for {path}, got {found:#?}"
    );
    found[0]
}

/// `keys` of `line`, as an object to compare with `json!({...})`.
fn pick(line: &Value, keys: &[&str]) -> Value {
    Value::Object(
        keys.iter()
            .map(|key| ((*key).to_owned(), line[*key].clone()))
            .collect(),
    )
}

/// The one request to `path` the app finished.
fn seen_at<'a>(seen: &'a [Seen], path: &str) -> &'a Seen {
    let found: Vec<&Seen> = seen.iter().filter(|s| s.path == path).collect();
    assert_eq!(found.len(), 1, "expected one request for {path} at the app");
    found[0]
}

/// Whether `id` is what the proxy generates: 32 lowercase hex characters.
fn is_generated_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("a clock after 1970")
        .as_secs_f64()
}

/// Days from 1970-01-01 to the civil date `y-m-d` (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn unix_seconds(y: i64, mo: i64, d: i64, h: i64, mi: i64, s: i64) -> f64 {
    (days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + s) as f64
}

/// An RFC 3339 timestamp in UTC (`Z` or `+00:00`) as Unix seconds; panics on anything else.
fn rfc3339_utc(text: &str) -> f64 {
    let re =
        Regex::new(r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|z|\+00:00)$")
            .unwrap();
    let c = re
        .captures(text)
        .unwrap_or_else(|| panic!("time {text:?} is not an RFC 3339 UTC timestamp"));
    let n = |i: usize| c[i].parse::<i64>().unwrap();
    let fraction: f64 = c
        .get(7)
        .map_or(0.0, |f| format!("0{}", f.as_str()).parse().unwrap());
    unix_seconds(n(1), n(2), n(3), n(4), n(5), n(6)) + fraction
}

/// An Apache `%t` time (`21/Nov/2026:23:04:01 +0000`) as Unix seconds; panics on other zones.
fn apache_time(text: &str) -> f64 {
    let re =
        Regex::new(r"^(\d{2})/([A-Z][a-z]{2})/(\d{4}):(\d{2}):(\d{2}):(\d{2}) \+0000$").unwrap();
    let c = re
        .captures(text)
        .unwrap_or_else(|| panic!("time [{text}] is not an Apache time in +0000"));
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = months
        .iter()
        .position(|m| *m == &c[2])
        .unwrap_or_else(|| panic!("no month {:?}", &c[2])) as i64
        + 1;
    let n = |i: usize| c[i].parse::<i64>().unwrap();
    unix_seconds(n(3), month, n(1), n(4), n(5), n(6))
}

/// Asserts that `at` (Unix seconds, whole seconds if `whole`) lies between `before` and `after`.
fn assert_between(what: &str, at: f64, before: f64, after: f64, whole: bool) {
    let slack = if whole { 1.0 } else { 0.01 };
    assert!(
        before - slack <= at && at <= after + slack,
        "{what} is {at}, not between {before} and {after} (Unix seconds)"
    );
}

/// Asserts that the line's `duration` is seconds spent on a request the client saw take
/// `took`, at least `at_least`.
fn assert_duration(line: &Value, at_least: Duration, took: Duration) {
    let duration = line["duration"]
        .as_f64()
        .unwrap_or_else(|| panic!("duration is not a number: {line}"));
    assert!(
        duration >= at_least.as_secs_f64() && duration <= took.as_secs_f64() + 0.05,
        "duration {duration} s for a request the client saw take {took:?} (the app held it \
         {at_least:?}): {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_json_access_log_has_one_exact_line_per_outbound_request() {
    // The app holds every request 100 ms, so `duration` must be in seconds and span it.
    let held = Duration::from_millis(100);
    let page = noise(1000, 1);
    let web = fleet::endpoint("web")
        .body(page.clone())
        .delay(held)
        .start()
        .await;
    let proxy = Proxy::start(&outbound_to(
        &web,
        ", accessLog: { format: json }, requestId: true",
    ))
    .await;
    let before = unix_now();

    let mut conn = Conn::connect(proxy.outbound()).await;
    let client = conn.local_addr();
    let (got, got_took) = exchange(&mut conn, "GET", "/page?x=1&y=two", AUTHORITY, &[], b"").await;
    let form = noise(500, 2);
    let (posted, posted_took) = exchange(
        &mut conn,
        "POST",
        "/form",
        AUTHORITY,
        &[("Content-Type", "application/octet-stream")],
        &form,
    )
    .await;
    let (missing, missing_took) =
        exchange(&mut conn, "GET", "/nowhere", "unknown.local", &[], b"").await;

    assert_eq!((got.status, got.body.len()), (200, 1000), "{got:?}");
    assert_eq!(
        (posted.status, posted.body.len()),
        (200, 1000),
        "{posted:?}"
    );
    assert_eq!(missing.status, 404, "{missing:?}");
    let error = missing
        .header("herd-proxy-error")
        .expect("a 404 for an unknown authority carries herd-proxy-error")
        .to_owned();
    assert!(error.to_ascii_lowercase().contains("no service"), "{error}");

    let lines = json_log(&proxy, 3).await;
    let after = unix_now();
    println!("access log:\n{}", proxy.stdout_lines().join("\n"));
    let seen = web.settled().await;
    assert_eq!(seen.len(), 2, "the app saw {seen:#?}");
    let exact = [
        "direction",
        "method",
        "authority",
        "path",
        "status",
        "bytesIn",
        "bytesOut",
        "endpoint",
        "attempts",
        "client",
        "error",
    ];

    let line = line_for(&lines, "/page?x=1&y=two");
    assert_eq!(
        pick(line, &exact),
        json!({
            "direction": "outbound",
            "method": "GET",
            "authority": AUTHORITY,
            "path": "/page?x=1&y=two",
            "status": 200,
            "bytesIn": 0,
            "bytesOut": 1000,
            "endpoint": web.addr().to_string(),
            "attempts": 1,
            "client": client.to_string(),
            "error": null,
        }),
        "{line}"
    );
    assert_duration(line, held, got_took);
    assert_eq!(
        line["requestId"].as_str(),
        seen_at(&seen, "/page").header("x-request-id"),
        "the log's requestId is not what the app saw: {line}"
    );

    let line = line_for(&lines, "/form");
    assert_eq!(
        pick(line, &exact),
        json!({
            "direction": "outbound",
            "method": "POST",
            "authority": AUTHORITY,
            "path": "/form",
            "status": 200,
            "bytesIn": 500,
            "bytesOut": 1000,
            "endpoint": web.addr().to_string(),
            "attempts": 1,
            "client": client.to_string(),
            "error": null,
        }),
        "{line}"
    );
    assert_duration(line, held, posted_took);
    assert_eq!(seen_at(&seen, "/form").bytes, 500);
    assert_eq!(
        line["requestId"].as_str(),
        seen_at(&seen, "/form").header("x-request-id"),
        "the log's requestId is not what the app saw: {line}"
    );

    let line = line_for(&lines, "/nowhere");
    assert_eq!(
        pick(line, &exact),
        json!({
            "direction": "outbound",
            "method": "GET",
            "authority": "unknown.local",
            "path": "/nowhere",
            "status": 404,
            "bytesIn": 0,
            "bytesOut": missing.body.len(),
            "endpoint": null,
            "attempts": 0,
            "client": client.to_string(),
            "error": error,
        }),
        "{line}"
    );
    assert_duration(line, Duration::ZERO, missing_took);

    for line in &lines {
        assert_between(
            &format!("time of {line}"),
            rfc3339_utc(line["time"].as_str().expect("time is a string")),
            before,
            after,
            false,
        );
        assert!(
            line["requestId"].is_null() || line["requestId"].as_str().is_some(),
            "requestId is neither a string nor null: {line}"
        );
    }
    for path in ["/page?x=1&y=two", "/form"] {
        let line = line_for(&lines, path);
        assert_eq!(line["service"], "web", "{line}");
        assert!(
            line["route"].is_string(),
            "a served request has a route: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_apache_access_log_has_one_combined_line_per_inbound_request() {
    // Every second request gets the app's own 503 (same body).
    let app = fleet::endpoint("app")
        .body(noise(1234, 3))
        .fail_every(2, 503)
        .start()
        .await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {}
            accessLog: {{ format: apache }}
          admin:
            listen: $ADMIN
        ",
        app.addr()
    ))
    .await;
    let before = unix_now();

    let mut conn = Conn::connect(proxy.inbound()).await;
    let (page, page_took) = exchange(
        &mut conn,
        "GET",
        "/statuses/1?page=2",
        "app.local",
        &[
            (
                "User-Agent",
                "Mastodon/4.3 (http.rb/5.2; +https://example.social/)",
            ),
            ("Referer", "https://example.social/home"),
            ("X-Request-Id", "apache-request-1"),
        ],
        b"",
    )
    .await;
    let (form, form_took) = exchange(
        &mut conn,
        "POST",
        "/api/v1/statuses",
        "app.local",
        &[],
        &noise(300, 4),
    )
    .await;
    assert_eq!((page.status, page.body.len()), (200, 1234), "{page:?}");
    assert_eq!((form.status, form.body.len()), (503, 1234), "{form:?}");
    assert!(form.header("herd-proxy-error").is_none(), "{form:?}");

    let lines = proxy.wait_for_stdout_lines(2).await;
    assert_stdout_stays_at(&proxy, 2).await;
    let after = unix_now();
    println!("access log:\n{}", lines.join("\n"));
    let seen = app.settled().await;

    let combined = Regex::new(
        r#"^(?P<client>\S+) - - \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<target>\S+) (?P<protocol>HTTP/\d\.\d)" (?P<status>\d{3}) (?P<bytes>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)" (?P<duration>\d+(?:\.\d+)?) (?P<endpoint>\S+) (?P<attempts>\d+) "(?P<request_id>[^"]*)"$"#,
    )
    .unwrap();
    let parse = |target: &str| {
        let found: Vec<regex::Captures> = lines
            .iter()
            .filter_map(|line| combined.captures(line))
            .filter(|c| &c["target"] == target)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one combined-format line for {target} in:\n{}",
            lines.join("\n")
        );
        found.into_iter().next().unwrap()
    };
    let fields = |c: &regex::Captures, names: &[&str]| -> Vec<String> {
        names.iter().map(|n| c[*n].to_owned()).collect()
    };
    let names = [
        "client", "method", "target", "protocol", "status", "bytes", "referer", "agent",
        "endpoint", "attempts",
    ];
    let endpoint = app.addr().to_string();

    let line = parse("/statuses/1?page=2");
    assert_eq!(
        fields(&line, &names),
        [
            "127.0.0.1",
            "GET",
            "/statuses/1?page=2",
            "HTTP/1.1",
            "200",
            "1234",
            "https://example.social/home",
            "Mastodon/4.3 (http.rb/5.2; +https://example.social/)",
            &endpoint,
            "1",
        ],
        "{}",
        &line[0]
    );
    assert_eq!(&line["request_id"], "apache-request-1", "{}", &line[0]);
    assert_eq!(
        seen_at(&seen, "/statuses/1").header("x-request-id"),
        Some("apache-request-1")
    );
    let duration: f64 = line["duration"].parse().unwrap();
    assert!(
        duration <= page_took.as_secs_f64() + 0.05,
        "{duration} s for a request that took {page_took:?}: {}",
        &line[0]
    );
    assert_between(
        &format!("time of {}", &line[0]),
        apache_time(&line["time"]),
        before.floor(),
        after,
        true,
    );

    let line = parse("/api/v1/statuses");
    assert_eq!(
        fields(&line, &names),
        [
            "127.0.0.1",
            "POST",
            "/api/v1/statuses",
            "HTTP/1.1",
            "503",
            "1234",
            "-",
            "-",
            &endpoint,
            "1",
        ],
        "{}",
        &line[0]
    );
    let generated = seen_at(&seen, "/api/v1/statuses")
        .header("x-request-id")
        .expect("the inbound listener gives a request without x-request-id one")
        .to_owned();
    assert!(is_generated_id(&generated), "{generated:?}");
    assert_eq!(&line["request_id"], generated, "{}", &line[0]);
    let duration: f64 = line["duration"].parse().unwrap();
    assert!(
        duration <= form_took.as_secs_f64() + 0.05,
        "{duration} s for a request that took {form_took:?}: {}",
        &line[0]
    );
    assert_between(
        &format!("time of {}", &line[0]),
        apache_time(&line["time"]),
        before.floor(),
        after,
        true,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_access_log_settings_nothing_is_written_to_stdout() {
    let app = fleet::endpoint("app").start().await;
    let proxy = Proxy::start(&format!(
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
            authorities: [{AUTHORITY}]
            endpoints: [{app}]
        ",
        app = app.addr()
    ))
    .await;

    let mut inbound = Conn::connect(proxy.inbound()).await;
    let mut outbound = Conn::connect(proxy.outbound()).await;
    let (a, _) = exchange(&mut inbound, "GET", "/in", "app.local", &[], b"").await;
    let (b, _) = exchange(&mut outbound, "POST", "/out", AUTHORITY, &[], b"body").await;
    let (c, _) = exchange(&mut outbound, "GET", "/", "unknown.local", &[], b"").await;
    assert_eq!((a.status, b.status, c.status), (200, 200, 404));

    assert_stdout_stays_at(&proxy, 0).await;
    assert!(
        proxy.stdout_lines().is_empty(),
        "{:?}",
        proxy.stdout_lines()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_listener_with_an_access_log_writes_one() {
    let app = fleet::endpoint("app").start().await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          inbound:
            listen: $INBOUND
            app: {app}
            accessLog: {{ format: json }}
          outbound:
            listen: $OUTBOUND
          admin:
            listen: $ADMIN
        services:
          - name: web
            authorities: [{AUTHORITY}]
            endpoints: [{app}]
        ",
        app = app.addr()
    ))
    .await;

    // The outbound listener's requests first: had they been logged, their lines would come
    // before the inbound request's.
    let mut outbound = Conn::connect(proxy.outbound()).await;
    for _ in 0..2 {
        let (response, _) = exchange(&mut outbound, "GET", "/out", AUTHORITY, &[], b"").await;
        assert_eq!(response.status, 200);
    }
    let mut inbound = Conn::connect(proxy.inbound()).await;
    let (response, _) = exchange(&mut inbound, "GET", "/in", "app.local", &[], b"").await;
    assert_eq!(response.status, 200);

    let lines = json_log(&proxy, 1).await;
    assert_eq!(
        pick(
            &lines[0],
            &[
                "direction",
                "method",
                "path",
                "status",
                "endpoint",
                "attempts",
                "client"
            ]
        ),
        json!({
            "direction": "inbound",
            "method": "GET",
            "path": "/in",
            "status": 200,
            "endpoint": app.addr().to_string(),
            "attempts": 1,
            "client": inbound.local_addr().to_string(),
        }),
        "{}",
        lines[0]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_given_kept_and_logged_and_trace_headers_pass_untouched() {
    let web = fleet::endpoint("web").start().await;
    // `requestId` left out: it defaults to true.
    let proxy = Proxy::start(&outbound_to(&web, ", accessLog: { format: json }")).await;
    let mut conn = Conn::connect(proxy.outbound()).await;

    let own_id = "Rails-0f3a_9C21.req/7";
    let mut traced = TRACE_HEADERS.to_vec();
    traced.push(("X-Request-Id", "trace-carrying-request"));
    for (path, headers) in [
        ("/anonymous/1", vec![]),
        ("/anonymous/2", vec![]),
        ("/own", vec![("X-Request-Id", own_id)]),
        ("/traced", traced),
    ] {
        let (response, _) = exchange(&mut conn, "GET", path, AUTHORITY, &headers, b"").await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
    }
    let lines = json_log(&proxy, 4).await;
    println!("access log:\n{}", proxy.stdout_lines().join("\n"));
    let seen = web.settled().await;

    // A request without an id gets a fresh one, and the app and the log agree on it.
    let first = seen_at(&seen, "/anonymous/1");
    let second = seen_at(&seen, "/anonymous/2");
    for at_app in [first, second] {
        assert_eq!(
            at_app.header_values("x-request-id").len(),
            1,
            "{}: {:?}",
            at_app.path,
            at_app.headers
        );
        let id = at_app.header("x-request-id").unwrap();
        assert!(is_generated_id(id), "{}: generated id {id:?}", at_app.path);
        assert_eq!(
            line_for(&lines, &at_app.path)["requestId"],
            id,
            "the log's requestId is not what the app saw"
        );
    }
    assert_ne!(
        first.header("x-request-id"),
        second.header("x-request-id"),
        "two requests were given the same id"
    );

    // A request with an id keeps it, byte for byte.
    let own = seen_at(&seen, "/own");
    assert_eq!(own.header_values("x-request-id"), [own_id.as_bytes()]);
    assert_eq!(line_for(&lines, "/own")["requestId"], own_id);

    // Trace context reaches the app exactly as the client sent it, once.
    let at_app = seen_at(&seen, "/traced");
    for (name, value) in TRACE_HEADERS {
        assert_eq!(
            at_app.header_values(name),
            [value.as_bytes()],
            "{name} did not pass through untouched: {:?}",
            at_app.headers
        );
    }
    assert_eq!(
        at_app.header_values("x-request-id"),
        [b"trace-carrying-request".as_slice()]
    );
    assert_eq!(
        line_for(&lines, "/traced")["requestId"],
        "trace-carrying-request"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_request_id_off_nothing_is_added_and_trace_headers_still_pass() {
    let web = fleet::endpoint("web").start().await;
    let proxy = Proxy::start(&outbound_to(
        &web,
        ", accessLog: { format: json }, requestId: false",
    ))
    .await;
    let mut conn = Conn::connect(proxy.outbound()).await;

    for (path, headers) in [
        ("/anonymous", vec![]),
        ("/own", vec![("X-Request-Id", "client-own-id")]),
        ("/traced", TRACE_HEADERS.to_vec()),
    ] {
        let (response, _) = exchange(&mut conn, "GET", path, AUTHORITY, &headers, b"").await;
        assert_eq!(response.status, 200, "{path}: {response:?}");
    }
    let lines = json_log(&proxy, 3).await;
    let seen = web.settled().await;

    for path in ["/anonymous", "/traced"] {
        let at_app = seen_at(&seen, path);
        assert!(
            at_app.header_values("x-request-id").is_empty(),
            "{path}: the proxy added an x-request-id with requestId: false: {:?}",
            at_app.headers
        );
        assert_eq!(line_for(&lines, path)["requestId"], Value::Null);
    }
    assert_eq!(
        seen_at(&seen, "/own").header_values("x-request-id"),
        [b"client-own-id".as_slice()]
    );
    assert_eq!(line_for(&lines, "/own")["requestId"], "client-own-id");
    let at_app = seen_at(&seen, "/traced");
    for (name, value) in TRACE_HEADERS {
        assert_eq!(
            at_app.header_values(name),
            [value.as_bytes()],
            "{name} did not pass through untouched: {:?}",
            at_app.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_requests_count_their_attempts_and_streamed_bodies_their_bytes() {
    // The endpoint fails its 2nd, 4th, ... request with 503; GETs get a second attempt.
    let flaky = fleet::endpoint("flaky").fail_every(2, 503).start().await;
    let config = fleet::routed(
        &[flaky.addr()],
        "retryBudget: { ratio: 0.5, minPerSecond: 100, window: 10s }",
        &["{ match: { pathPrefix: / }, retry: { attempts: 2 } }"],
    );
    let with_log = config.replacen(
        "listen: $OUTBOUND\n",
        "listen: $OUTBOUND\n    accessLog: { format: json }\n",
        1,
    );
    assert_ne!(config, with_log, "no outbound listener in {config}");
    let proxy = Proxy::start(&with_log).await;
    let mut conn = Conn::connect(proxy.outbound()).await;

    // Request 1 at the endpoint: answered.
    let (first, _) = exchange(&mut conn, "GET", "/first", AUTHORITY, &[], b"").await;
    // Requests 2 (503) and 3 (answered): one client request, two attempts.
    let (retried, _) = exchange(&mut conn, "GET", "/retried", AUTHORITY, &[], b"").await;
    // Request 4 (503): a POST, not retried, its 700 bytes sent in chunks of 100.
    let upload = noise(700, 5);
    let mut head =
        format!("POST /upload HTTP/1.1\r\nHost: {AUTHORITY}\r\nTransfer-Encoding: chunked\r\n\r\n")
            .into_bytes();
    for chunk in upload.chunks(100) {
        head.extend(format!("{:x}\r\n", chunk.len()).into_bytes());
        head.extend(chunk);
        head.extend(b"\r\n");
    }
    head.extend(b"0\r\n\r\n");
    conn.send(head).await;
    let uploaded = conn.read_response_to("POST").await;
    assert_eq!(
        (first.status, retried.status, uploaded.status),
        (200, 200, 503),
        "{first:?} {retried:?} {uploaded:?}"
    );

    let lines = json_log(&proxy, 3).await;
    println!("access log:\n{}", proxy.stdout_lines().join("\n"));
    let seen = flaky.settled().await;
    assert_eq!(seen.len(), 4, "the endpoint saw {seen:#?}");
    let keys = [
        "method", "status", "bytesIn", "bytesOut", "endpoint", "attempts", "error",
    ];
    let endpoint = flaky.addr().to_string();
    assert_eq!(
        [
            pick(line_for(&lines, "/first"), &keys),
            pick(line_for(&lines, "/retried"), &keys),
            pick(line_for(&lines, "/upload"), &keys),
        ],
        [
            json!({"method": "GET", "status": 200, "bytesIn": 0, "bytesOut": 5,
                   "endpoint": endpoint, "attempts": 1, "error": null}),
            json!({"method": "GET", "status": 200, "bytesIn": 0, "bytesOut": 5,
                   "endpoint": endpoint, "attempts": 2, "error": null}),
            json!({"method": "POST", "status": 503, "bytesIn": 700, "bytesOut": 5,
                   "endpoint": endpoint, "attempts": 1, "error": null}),
        ]
    );
    assert_eq!(seen_at(&seen, "/upload").bytes, 700);
}

/// A burst over 8 connections at once: every request is logged, once, with an id of its own.
#[tokio::test(flavor = "multi_thread")]
async fn every_request_of_a_burst_is_logged_once() {
    let web = fleet::endpoint("web").start().await;
    let proxy = Proxy::start(&outbound_to(&web, ", accessLog: { format: json }")).await;

    let tally = herd_tests::load::fire_path(proxy.outbound(), AUTHORITY, "/burst", 200, 8).await;
    assert_eq!(tally.ok(), 200, "{:?}", tally.statuses());

    let lines = eventually("200 access-log lines", TIMEOUT, || async {
        let lines = proxy.stdout_lines();
        (lines.len() >= 200).then_some(lines)
    })
    .await;
    assert_stdout_stays_at(&proxy, 200).await;
    let ids: std::collections::BTreeSet<String> = lines
        .iter()
        .map(|line| {
            let value: Value = serde_json::from_str(line).expect("JSON line");
            assert_eq!(value["status"], 200, "{line}");
            value["requestId"]
                .as_str()
                .expect("a request id")
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 200, "request ids repeat across the burst");
    let metrics = proxy.admin_get("/metrics").await.text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "herd_access_log_dropped_total 0"),
        "no `herd_access_log_dropped_total 0` in /metrics:\n{metrics}"
    );
}
