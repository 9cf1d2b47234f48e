//! Retries: a sick endpoint is hidden from clients, but only where repeating a request is safe,
//! only within the retry budget, and never after a response has begun.
//!
//! Every test runs real endpoints on loopback that fail on cue (every other request, always, by
//! refusing connections or resetting them, mid-stream) and keep a log of what they saw:
//! method, path, the body's digest, the status they answered or that the request was cancelled.
//! The tests count both sides: what the client got through the proxy's outbound listener, and
//! what each endpoint received. Services use round robin, so attempts alternate predictably,
//! and turn outlier detection off, so a failing endpoint stays in rotation and every retry
//! decision shows. Figures (counts, timings, RSS) are printed; run with `--no-capture`.
//!
//! Slow endpoints (per-try and overall timeouts, hedging) are in `hedge.rs`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use herd_tests::fleet::{self, AUTHORITY, Seen};
use herd_tests::load::{Client, Outcome, Tally, body};
use herd_tests::server::{self, reply};
use herd_tests::tcp::Conn;
use herd_tests::{Digest, Proxy, TIMEOUT, client, eventually, noise, ports};
use http_body_util::BodyExt;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// A budget no test here comes near, for tests about which failures are retried rather than
/// how many.
const ROOMY_BUDGET: &str = "retryBudget: { ratio: 0.5, minPerSecond: 100, window: 10s }";

/// How many of `seen` the endpoint answered with `status`.
fn answered_with(seen: &[Seen], status: u16) -> usize {
    seen.iter().filter(|s| s.status == Some(status)).count()
}

/// Asserts that `outcome` is the app's own 503, passed back as it was.
fn assert_apps_503(outcome: &Outcome, what: &str) {
    assert_eq!(outcome.status, 503, "{what}: {outcome:?}");
    assert!(
        outcome.endpoint.is_some() && outcome.error.is_none(),
        "{what}: the 503 is not the app's own (no x-endpoint, or a herd-proxy-error): {outcome:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn gets_ride_over_an_endpoint_failing_every_other_request_and_posts_see_its_503s() {
    let flaky = fleet::endpoint("flaky").fail_every(2, 503).start().await;
    let proxy = Proxy::start(&fleet::routed(
        &[flaky.addr()],
        ROOMY_BUDGET,
        &["{ match: { pathPrefix: / }, retry: { attempts: 2 } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let gets = client.repeat("GET", AUTHORITY, "/", 100).await;

    let seen = flaky.settled().await;
    let failed = answered_with(&seen, 503);
    println!(
        "100 GETs: client got {:?}; flaky received {} and answered 503 to {failed}",
        gets.statuses(),
        seen.len()
    );
    assert_eq!(
        gets.statuses(),
        BTreeMap::from([(200, 100)]),
        "a GET was not retried past a 503: {:?}",
        gets.outcomes.iter().find(|o| !o.is_ok())
    );
    assert!(
        failed >= 40,
        "flaky failed only {failed} requests; the test proves nothing"
    );
    assert_eq!(
        seen.len(),
        100 + failed,
        "each 503 should cost exactly one more attempt"
    );

    let posts = client.repeat("POST", AUTHORITY, "/statuses", 100).await;

    let posts_seen = flaky.settled().await[seen.len()..].to_vec();
    println!(
        "100 POSTs: client got {:?}; flaky received {}",
        posts.statuses(),
        posts_seen.len()
    );
    assert_eq!(
        posts_seen.len(),
        100,
        "a POST answered 503 was sent again (the app may have posted the status)"
    );
    let refused = posts.outcomes.iter().filter(|o| o.status == 503).count();
    assert!(
        (40..=60).contains(&refused),
        "{refused} of 100 POSTs saw a 503; the endpoint fails half: {:?}",
        posts.statuses()
    );
    assert_eq!(refused, answered_with(&posts_seen, 503));
    for outcome in posts.outcomes.iter().filter(|o| o.status == 503) {
        assert_apps_503(outcome, "a POST");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idempotent_methods_are_retried_on_a_503_and_post_and_patch_are_not() {
    let flaky = fleet::endpoint("flaky").fail_every(2, 503).start().await;
    let proxy = Proxy::start(&fleet::routed(
        &[flaky.addr()],
        ROOMY_BUDGET,
        &["{ match: { pathPrefix: / }, retry: { attempts: 2 } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    for method in ["GET", "HEAD", "OPTIONS", "PUT", "DELETE", "POST", "PATCH"] {
        let before = flaky.settled().await.len();
        let outcomes = client.repeat(method, AUTHORITY, "/things/1", 10).await;
        let seen = flaky.settled().await[before..].to_vec();
        let failed = answered_with(&seen, 503);
        println!(
            "{method}: client got {:?}; flaky received {} and answered 503 to {failed}",
            outcomes.statuses(),
            seen.len()
        );
        assert!(
            seen.iter().all(|s| s.method == method),
            "{method}: {seen:?}"
        );
        assert!(failed >= 4, "{method}: flaky failed only {failed}");
        let idempotent = !matches!(method, "POST" | "PATCH");
        if !idempotent {
            assert_eq!(seen.len(), 10, "{method} was retried");
            assert_eq!(
                outcomes.outcomes.iter().filter(|o| o.status == 503).count(),
                failed,
                "{method}: {:?}",
                outcomes.statuses()
            );
        } else {
            assert_eq!(
                outcomes.statuses(),
                BTreeMap::from([(200, 10)]),
                "{method} was not retried"
            );
            assert_eq!(seen.len(), 10 + failed, "{method}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_to_an_endpoint_refusing_connections_is_sent_to_another_exactly_once() {
    let down = ports::closed();
    let up = fleet::endpoint("up").start().await;
    let proxy = Proxy::start(&fleet::routed(
        &[down, up.addr()],
        "",
        &["{ match: { pathPrefix: / }, retry: { attempts: 1 } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let mut sent = BTreeMap::new();
    for i in 0..20 {
        let path = format!("/statuses/{i}");
        let text = format!("status={i}");
        sent.insert(path.clone(), Digest::of(text.as_bytes()).value());
        let outcome = client
            .request("POST", AUTHORITY, &path, &[], body::full(text))
            .await;
        assert_eq!(outcome.status, 200, "POST {path}: {outcome:?}");
        assert_eq!(outcome.endpoint.as_deref(), Some("up"), "{outcome:?}");
    }

    let seen = up.settled().await;
    println!(
        "20 POSTs, round robin over a closed port and `up`: all 200; up received {}",
        seen.len()
    );
    let mut received: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for s in &seen {
        assert_eq!(s.method, "POST");
        received.entry(s.path.clone()).or_default().push(s.digest);
    }
    for (path, digest) in &sent {
        assert_eq!(
            received.get(path),
            Some(&vec![*digest]),
            "{path} did not reach `up` exactly once with its body"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_refused_with_http2_refused_stream_is_sent_to_another_endpoint_exactly_once() {
    let refuser = server::refuses_streams().await;
    let up = fleet::endpoint("up").http2().start().await;
    let proxy = Proxy::start(&fleet::routed(
        &[refuser.addr(), up.addr()],
        "protocol: http2",
        &["{ match: { pathPrefix: / }, retry: { attempts: 1 } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let posts = client.repeat("POST", AUTHORITY, "/statuses", 20).await;

    let seen = up.settled().await;
    println!(
        "20 POSTs over HTTP/2, round robin over a server refusing every stream and `up`: {:?}; \
         refused {}, up received {}",
        posts.statuses(),
        refuser.requests(),
        seen.len()
    );
    assert_eq!(posts.ok(), 20, "{:?}", posts.failures().first());
    assert!(
        refuser.requests() >= 5,
        "round robin sent only {} first attempts to the refusing server",
        refuser.requests()
    );
    let mut bodies: Vec<u64> = seen.iter().map(|s| s.digest).collect();
    bodies.sort();
    let mut sent: Vec<u64> = (0..20)
        .map(|i| Digest::of(format!("POST {i}").as_bytes()).value())
        .collect();
    sent.sort();
    assert_eq!(bodies, sent, "`up` did not receive each POST exactly once");
}

/// Endpoints `sick` (always 503) and `ok` under `balancer`; sends 100 GETs, each as user
/// `user-i` (`x-user`), and checks every one that went to `sick` first was retried on `ok`.
/// (Not peak-EWMA: it learns to keep first attempts away from a failing endpoint.)
async fn retries_avoid_the_endpoint_that_failed(balancer: &str) {
    let sick = fleet::endpoint("sick").status(503).start().await;
    let ok = fleet::endpoint("ok").start().await;
    let proxy = Proxy::start(&fleet::routed(
        &fleet::addrs(&[&sick, &ok]),
        &format!("balancer: {balancer}\n{ROOMY_BUDGET}"),
        &["{ match: { pathPrefix: / }, retry: { attempts: 1 } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let mut tally = Tally::default();
    for i in 0..100 {
        let user = format!("user-{i}");
        let outcome = client.get(AUTHORITY, "/", &[("x-user", &user)]).await;
        tally.outcomes.push(outcome);
    }

    let (sick_seen, ok_seen) = (sick.settled().await, ok.settled().await);
    println!(
        "{balancer}: 100 GETs, one endpoint answering 503, attempts 1: {:?}; sick received {}, \
         ok {}",
        tally.statuses(),
        sick_seen.len(),
        ok_seen.len()
    );
    assert!(
        !sick_seen.is_empty(),
        "{balancer}: no request went to the sick endpoint first; the test proves nothing"
    );
    assert_eq!(
        tally.ok(),
        100,
        "{balancer}: a retry went back to the endpoint that had just failed: {:?}",
        tally.failures().first()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_goes_to_another_endpoint_under_ring_hash_though_the_key_maps_to_the_failed_one() {
    retries_avoid_the_endpoint_that_failed("{ algorithm: ring-hash, hashOn: { header: x-user } }")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_goes_to_another_endpoint_under_least_request() {
    retries_avoid_the_endpoint_that_failed("least-request").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_post_the_app_may_have_acted_on_is_never_sent_twice_but_a_get_is_retried() {
    // The app reads each request in full, then resets the connection without answering.
    let app = server::resets_after_request().await;
    let proxy = Proxy::start(&fleet::routed(
        &[app.addr()],
        "",
        &["{ match: { pathPrefix: / }, retry: { attempts: 2, backoff: { base: 5ms, max: 10ms } } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let post = client
        .request("POST", AUTHORITY, "/statuses", &[], body::full("status=hi"))
        .await;
    let after_post = app.requests();
    let get = client.get(AUTHORITY, "/timelines/home", &[]).await;
    let after_get = app.requests();

    println!(
        "POST: {} {:?}, app saw {after_post}; GET: {} {:?}, app saw {}",
        post.status,
        post.error,
        get.status,
        get.error,
        after_get - after_post
    );
    assert_eq!(post.status, 502, "{post:?}");
    assert!(post.error.is_some(), "{post:?}");
    assert_eq!(
        after_post, 1,
        "a POST that reached the app was sent again after the connection reset"
    );
    assert_eq!(get.status, 502, "{get:?}");
    assert_eq!(
        after_get - after_post,
        3,
        "a GET whose connection was reset should be tried 1 + 2 times"
    );
}

/// Sends `bodies` with `method` to `path_prefix/i`, content-length and chunked alternately,
/// and returns each path with the digest of what was sent.
async fn send_bodies(
    client: &mut Client,
    method: &str,
    path_prefix: &str,
    bodies: &[Vec<u8>],
) -> BTreeMap<String, u64> {
    let mut sent = BTreeMap::new();
    for (i, bytes) in bodies.iter().enumerate() {
        let path = format!("{path_prefix}/{i}");
        sent.insert(path.clone(), Digest::of(bytes).value());
        let bytes = Bytes::from(bytes.clone());
        let request_body = if i % 2 == 0 {
            body::full(bytes)
        } else {
            body::chunked(bytes, 4 * KIB)
        };
        let outcome = client
            .request(method, AUTHORITY, &path, &[], request_body)
            .await;
        assert_eq!(outcome.status, 200, "{method} {path}: {outcome:?}");
        assert_eq!(outcome.endpoint.as_deref(), Some("ok"), "{outcome:?}");
    }
    sent
}

#[tokio::test(flavor = "multi_thread")]
async fn a_32_kib_body_is_replayed_byte_for_byte_to_the_next_endpoint() {
    let sick = fleet::endpoint("sick").status(503).start().await;
    let ok = fleet::endpoint("ok").start().await;
    let proxy = Proxy::start(&fleet::routed(
        &fleet::addrs(&[&sick, &ok]),
        ROOMY_BUDGET,
        &[
            "{ match: { pathPrefix: /statuses }, retry: { attempts: 1, nonIdempotent: true } }",
            "{ match: { pathPrefix: / }, retry: { attempts: 1 } }",
        ],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());
    let bodies: Vec<Vec<u8>> = (0..6).map(|i| noise(32 * KIB, i)).collect();

    let mut sent = send_bodies(&mut client, "PUT", "/media", &bodies).await;
    sent.extend(send_bodies(&mut client, "POST", "/statuses", &bodies).await);

    let (sick_seen, ok_seen) = (sick.settled().await, ok.settled().await);
    println!(
        "12 bodies of 32 KiB (PUT, and POST with nonIdempotent): all 200; sick received {}, \
         ok received {}",
        sick_seen.len(),
        ok_seen.len()
    );
    for s in &ok_seen {
        assert_eq!(s.bytes, 32 * KIB as u64, "{} reached ok truncated", s.path);
    }
    for (path, digest) in &sent {
        let on_ok: Vec<&Seen> = ok_seen.iter().filter(|s| &s.path == path).collect();
        assert_eq!(on_ok.len(), 1, "{path} reached ok {} times", on_ok.len());
        assert_eq!(
            on_ok[0].digest, *digest,
            "{path} reached ok with different bytes"
        );
        for s in sick_seen.iter().filter(|s| &s.path == path) {
            assert_eq!(
                s.digest, *digest,
                "{path} reached sick with different bytes"
            );
        }
    }
    for method in ["PUT", "POST"] {
        let tried_first_on_sick = sick_seen.iter().filter(|s| s.method == method).count();
        assert!(
            tried_first_on_sick >= 2,
            "only {tried_first_on_sick} {method}s went to sick first; no replay was exercised"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_buffer_limit_is_not_retried_and_one_within_it_is() {
    let sick = fleet::endpoint("sick").status(503).start().await;
    let proxy = Proxy::start(&fleet::routed(
        &[sick.addr()],
        ROOMY_BUDGET,
        &["{ match: { pathPrefix: / }, retry: { attempts: 2, bufferLimit: 65536 } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());
    let cases = [
        ("64 KiB, content-length", 64 * KIB, false, 3),
        ("64 KiB + 1, content-length", 64 * KIB + 1, false, 1),
        ("1 MiB, content-length", MIB, false, 1),
        ("1 MiB, chunked", MIB, true, 1),
    ];

    for (i, (what, len, chunked, attempts)) in cases.into_iter().enumerate() {
        let bytes = noise(len, 100 + i as u64);
        let digest = Digest::of(&bytes).value();
        let path = format!("/media/{i}");
        let bytes = Bytes::from(bytes);
        let request_body = if chunked {
            body::chunked(bytes, 16 * KIB)
        } else {
            body::full(bytes)
        };
        let before = sick.settled().await.len();
        let outcome = client
            .request("PUT", AUTHORITY, &path, &[], request_body)
            .await;
        let seen = sick.settled().await[before..].to_vec();

        println!(
            "PUT {what}: client got {}, sick received {} attempt(s)",
            outcome.status,
            seen.len()
        );
        assert_apps_503(&outcome, what);
        assert_eq!(
            seen.len(),
            attempts,
            "PUT {what}: expected {attempts} attempt(s)"
        );
        for s in &seen {
            assert_eq!(
                (s.bytes, s.digest),
                (len as u64, digest),
                "PUT {what}: an attempt carried different bytes"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_64_mib_upload_on_a_retrying_route_streams_in_bounded_memory_and_is_not_retried() {
    /// The app reads 32 MiB/s: each upload takes about two seconds, time enough for a proxy
    /// that buffers to show it.
    const READ_RATE: u64 = 32 * MIB as u64;
    const UPLOAD: usize = 64 * MIB;
    const PEAK_RSS_BOUND: u64 = 40 * MIB as u64;
    let sick = fleet::endpoint("sick")
        .status(503)
        .read_rate(READ_RATE)
        .start()
        .await;
    let proxy = Proxy::start(&fleet::routed(
        &[sick.addr()],
        ROOMY_BUDGET,
        &["{ match: { pathPrefix: / }, timeout: 30s, retry: { attempts: 2 } }"],
    ))
    .await;
    let bytes = Bytes::from(noise(UPLOAD, 7));
    let digest = Digest::of(&bytes).value();
    let idle = proxy.rss_bytes().expect("read the proxy's VmRSS");

    for (what, chunked) in [("content-length", false), ("chunked", true)] {
        let before = sick.settled().await.len();
        let request_body = if chunked {
            body::chunked(bytes.clone(), 64 * KIB)
        } else {
            body::full(bytes.clone())
        };
        let outbound = proxy.outbound();
        let start = Instant::now();
        let (outcome, peak) = proxy
            .peak_rss_while(async move {
                Client::new(outbound)
                    .request("PUT", AUTHORITY, "/media", &[], request_body)
                    .await
            })
            .await;
        let seen = sick.settled().await[before..].to_vec();

        println!(
            "64 MiB PUT ({what}): client got {} after {:.1?}; sick received {} attempt(s); \
             proxy RSS peak {:.1} MiB (idle {:.1} MiB)",
            outcome.status,
            start.elapsed(),
            seen.len(),
            peak as f64 / MIB as f64,
            idle as f64 / MIB as f64
        );
        assert_apps_503(&outcome, what);
        assert_eq!(seen.len(), 1, "the 64 MiB PUT ({what}) was retried");
        assert_eq!(
            (seen[0].bytes, seen[0].digest),
            (UPLOAD as u64, digest),
            "({what}) the app did not receive exactly the bytes sent"
        );
        assert!(
            peak < PEAK_RSS_BOUND,
            "the proxy's RSS peaked at {:.1} MiB during the {what} upload (bound {} MiB)",
            peak as f64 / MIB as f64,
            PEAK_RSS_BOUND / MIB as u64
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_event_stream_that_breaks_after_its_headers_is_not_retried() {
    let app =
        server::http1(|_req| async { reply::sse_then_break(1, Duration::from_millis(200)) }).await;
    let proxy = Proxy::start(&fleet::routed(
        &[app.addr()],
        "",
        &[
            "{ match: { pathPrefix: / }, timeout: 0s, retry: { attempts: 2, \
           conditions: [connect-failure, refused-stream, reset, 5xx] } }",
        ],
    ))
    .await;

    let mut sender = client::http1(proxy.outbound()).await;
    let response = herd_tests::within(
        "the event stream's head",
        TIMEOUT,
        sender.send_request(client::get(AUTHORITY, "/api/v1/streaming")),
    )
    .await
    .expect("send request");
    assert_eq!(response.status(), 200);
    let mut stream = response.into_body();
    let mut received = Vec::new();
    let ending = herd_tests::within("the event stream to end", TIMEOUT, async {
        loop {
            match stream.frame().await {
                None => return "a clean end".to_owned(),
                Some(Err(e)) => return format!("an error: {e}"),
                Some(Ok(frame)) => {
                    received.extend_from_slice(frame.data_ref().unwrap_or(&Bytes::new()))
                }
            }
        }
    })
    .await;

    let received = String::from_utf8_lossy(&received).into_owned();
    println!(
        "the stream ended with {ending} after {received:?}; the app received {} request(s)",
        app.requests()
    );
    assert!(received.contains("event 0"), "{received:?}");
    assert!(
        ending.starts_with("an error"),
        "the client saw {ending}: a broken stream passed off as complete"
    );
    assert_eq!(app.requests(), 1, "the stream was retried");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_websocket_upgrade_answered_503_is_not_retried() {
    let a = fleet::endpoint("a").status(503).start().await;
    let b = fleet::endpoint("b").status(503).start().await;
    let proxy = Proxy::start(&fleet::routed(
        &fleet::addrs(&[&a, &b]),
        ROOMY_BUDGET,
        &["{ match: { pathPrefix: / }, timeout: 0s, retry: { attempts: 2 } }"],
    ))
    .await;
    let requests = || a.requests() + b.requests();

    // A plain GET on the same route is retried: 1 + 2 attempts.
    let get = Client::new(proxy.outbound())
        .get(AUTHORITY, "/api/v1/streaming", &[])
        .await;
    assert_apps_503(&get, "the plain GET");
    let after_get = eventually("the GET's attempts to finish", TIMEOUT, || async {
        let seen = a.seen().len() + b.seen().len();
        (seen == requests()).then_some(seen)
    })
    .await;

    let mut conn = Conn::connect(proxy.outbound()).await;
    conn.send(format!(
        "GET /api/v1/streaming HTTP/1.1\r\nHost: {AUTHORITY}\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ))
    .await;
    let response = conn.read_response().await;

    println!(
        "plain GET: 503 after {after_get} attempts; upgrade: {} after {} attempt(s)",
        response.status,
        requests() - after_get
    );
    assert_eq!(after_get, 3, "the plain GET was not retried twice");
    assert_eq!(response.status, 503, "{response:?}");
    assert!(response.header(fleet::HEADER).is_some(), "{response:?}");
    assert_eq!(requests() - after_get, 1, "the upgrade was retried");
}

/// The README's retry budget bound: over any stretch of time T, retries add at most
/// `ratio` x the requests in it + `minPerSecond` x max(T, `window`).
fn documented_retry_bound(
    ratio: f64,
    min_per_second: f64,
    window: Duration,
    requests: usize,
    stretch: Duration,
) -> usize {
    let allowance = min_per_second * stretch.max(window).as_secs_f64();
    (ratio * requests as f64 + allowance).floor() as usize
}

/// Issue 16's case: an app answering 503 to everything, a route retrying `gateway-error` three
/// times, the service's budget `{ ratio: 0.2, minPerSecond: 10, window: 10s }`, 300 requests at
/// 30 a second. The app sees each request once plus at most the documented bound of retries
/// (0.2 x 300 + 10 x 10 = 160 when the run fits in one window; a little more per second it
/// overruns), and the budget, not the route's `attempts`, is what stops them: the count comes
/// close to the bound. Requests are sent on a fixed schedule, each on a connection of its own,
/// so a slow answer (three backoffs) does not delay the next.
#[tokio::test(flavor = "multi_thread")]
async fn a_failing_app_sees_no_more_retries_than_the_documented_budget() {
    const REQUESTS: usize = 300;
    const RATE: f64 = 30.0;
    let down = fleet::endpoint("down").status(503).start().await;
    let proxy = Proxy::start(&fleet::routed(
        &[down.addr()],
        "retryBudget: { ratio: 0.2, minPerSecond: 10, window: 10s }",
        &["{ match: { pathPrefix: / }, retry: { attempts: 3, conditions: [gateway-error] } }"],
    ))
    .await;

    let start = tokio::time::Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..REQUESTS {
        let at = start + Duration::from_secs_f64(i as f64 / RATE);
        let outbound = proxy.outbound();
        requests.spawn(async move {
            tokio::time::sleep_until(at).await;
            herd_tests::load::send(outbound, AUTHORITY, "/", &[]).await
        });
    }
    let mut statuses = BTreeMap::new();
    while let Some(outcome) = requests.join_next().await {
        let outcome = outcome.expect("a request task panicked");
        assert_apps_503(&outcome, "a request to an app failing everything");
        *statuses.entry(outcome.status).or_insert(0) += 1;
    }
    let stretch = start.elapsed();

    let received = down.settled().await.len();
    let metrics = proxy.admin_get("/metrics").await.text();
    let counted =
        herd_tests::prometheus::Exposition::parse(&metrics).sum("herd_http_retries_total", &[]);
    let bound = documented_retry_bound(0.2, 10.0, Duration::from_secs(10), REQUESTS, stretch);
    let retries = received.saturating_sub(REQUESTS);
    println!(
        "{REQUESTS} GETs at {RATE}/s to an app failing everything, attempts 3, over \
         {stretch:.2?}: the app received {received} ({retries} retries; \
         herd_http_retries_total {counted:?}); documented bound {REQUESTS} + {bound}; \
         without a budget {}",
        REQUESTS * 4
    );
    assert_eq!(statuses, BTreeMap::from([(503, REQUESTS)]));
    assert!(
        received <= REQUESTS + bound,
        "the app received {received} requests: {retries} retries, over the documented {bound}"
    );
    assert_eq!(
        counted,
        Some(retries as f64),
        "herd_http_retries_total against what the app received"
    );
    assert!(
        retries as f64 >= 0.9 * bound as f64,
        "only {retries} retries, far under the bound {bound}: the budget did not get to stop them"
    );
}

/// A reload is no reason to forget the retries already made: the budget of a service whose
/// `retryBudget` did not change carries over to the new configuration, so adding another
/// service in the middle of a failure does not hand the failing one a fresh reserve.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_does_not_refill_an_unchanged_retry_budget() {
    const REQUESTS: usize = 20;
    let down = fleet::endpoint("down").status(503).start().await;
    let other = fleet::endpoint("other").start().await;
    // A reserve of 10 retries, no ratio: the first 20 requests spend it all.
    let budget = "retryBudget: { ratio: 0, minPerSecond: 1, window: 10s }";
    let routes =
        ["{ match: { pathPrefix: / }, retry: { attempts: 1, conditions: [gateway-error] } }"];
    let mesh = fleet::routed(&[down.addr()], budget, &routes);
    let start = Instant::now();
    let proxy = Proxy::start(&mesh).await;
    let mut client = Client::new(proxy.outbound());
    let before = client.repeat("GET", AUTHORITY, "/", REQUESTS).await;
    assert_eq!(before.statuses(), BTreeMap::from([(503, REQUESTS)]));
    assert_eq!(
        down.settled().await.len(),
        REQUESTS + 10,
        "the reserve first"
    );

    // Another service appears; `web` is as it was.
    proxy
        .reload(&format!(
            "{mesh}  - name: other\n    authorities: [other.local]\n    endpoints: [{}]\n",
            other.addr()
        ))
        .await;
    let after = client.repeat("GET", AUTHORITY, "/", REQUESTS).await;
    let elapsed = start.elapsed();
    assert_eq!(after.statuses(), BTreeMap::from([(503, REQUESTS)]));
    let received = down.settled().await.len();
    println!(
        "{REQUESTS} GETs, a reload, {REQUESTS} more, in {elapsed:.1?}: the failing app received \
         {received}"
    );
    assert!(
        elapsed < Duration::from_secs(10),
        "the run took {elapsed:?}, longer than the window: the reserve may refill"
    );
    assert_eq!(
        received,
        2 * REQUESTS + 10,
        "the reload handed the service a fresh reserve"
    );
    assert_eq!(
        client.get("other.local", "/", &[]).await.status,
        200,
        "the reload applied"
    );
}
