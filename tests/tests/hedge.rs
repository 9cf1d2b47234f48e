//! Retries in time: backoff spreads retries out; a per-try timeout moves a stalled attempt
//! elsewhere; the overall timeout answers 504 and cancels the upstream request; hedging races a
//! second attempt against a slow first one, cancelling whichever loses; and the budget bounds
//! what retries and hedges add over a window.
//!
//! Endpoints stall on cue and log each request as answered or cancelled (the proxy closed the
//! HTTP/1 connection, or reset the HTTP/2 stream, while the endpoint was still waiting), so a
//! test sees both what the client got and what happened to the attempts it never saw. The first
//! test checks that instrument without a proxy. Services use round robin with outlier detection
//! off, so the stalled endpoint keeps getting first attempts. Timings are printed; run with
//! `--no-capture`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use herd_tests::fleet::{self, AUTHORITY, Endpoint};
use herd_tests::load::{Client, Tally};
use herd_tests::{Proxy, TIMEOUT, client, eventually};

/// How long a stalled endpoint holds each request.
const STALL: Duration = Duration::from_secs(2);

/// Sorted response times, for a test's log.
fn times(tally: &Tally) -> Vec<Duration> {
    let mut times: Vec<Duration> = tally.outcomes.iter().map(|o| o.elapsed).collect();
    times.sort();
    times
}

/// Waits until every request `endpoint` received has been cancelled, and returns how many.
async fn all_cancelled(endpoint: &Endpoint) -> usize {
    eventually(
        &format!("every request on {} to be cancelled", endpoint.id()),
        TIMEOUT,
        || async {
            let cancelled = endpoint.cancelled().len();
            (cancelled == endpoint.requests()).then_some(cancelled)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fleet_notices_when_a_client_abandons_a_request() {
    // HTTP/1: the client closes its connection mid-request.
    let h1 = fleet::endpoint("h1").delay(STALL).start().await;
    let mut conn = herd_tests::tcp::Conn::connect(h1.addr()).await;
    conn.send("GET / HTTP/1.1\r\nHost: h1\r\n\r\n").await;
    h1.server().wait_for_requests(1).await;
    let dropped = Instant::now();
    drop(conn);
    all_cancelled(&h1).await;
    let noticed = h1.cancelled()[0].ended - dropped;

    // HTTP/2: the client resets its stream; the connection stays.
    let h2 = fleet::endpoint("h2").delay(STALL).http2().start().await;
    let mut connection = client::http2(h2.addr()).await;
    let request = connection.sender.send_request(client::get("h2", "/"));
    let waiting = tokio::spawn(request);
    h2.server().wait_for_requests(1).await;
    waiting.abort();
    all_cancelled(&h2).await;
    h2.set_delay(Duration::ZERO);
    let ok = connection.sender.send_request(client::get("h2", "/"));
    let ok = herd_tests::within("a second stream", TIMEOUT, ok)
        .await
        .expect("second request");

    println!("HTTP/1: the endpoint noticed the closed connection after {noticed:?}");
    assert!(noticed < Duration::from_millis(500), "{noticed:?}");
    assert!(h1.answered().is_empty());
    assert_eq!(ok.status(), 200);
    assert_eq!(h2.server().connections(), 1);
    assert!(h2.server().closed_at().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn backoff_waits_a_random_time_below_a_cap_that_doubles_each_retry() {
    const REQUESTS: usize = 12;
    /// base 150ms, max 450ms: retry n waits up to min(450, 150 x 2^(n-1)) = 150, 300, 450 ms.
    /// (Caps this long keep a loaded machine's scheduling noise small beside them.)
    const CAPS: [u64; 3] = [150, 300, 450];
    /// Scheduling and the exchange itself on a loaded machine.
    const SLACK: Duration = Duration::from_millis(100);
    let down = fleet::endpoint("down").status(503).start().await;
    let proxy = Proxy::start(&fleet::routed(
        &[down.addr()],
        "retryBudget: { ratio: 0.5, minPerSecond: 100, window: 10s }",
        &[
            "{ match: { pathPrefix: / }, retry: { attempts: 3, conditions: [503], \
           backoff: { base: 150ms, max: 450ms } } }",
        ],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let tally = client.repeat("GET", AUTHORITY, "/", REQUESTS).await;

    let seen = down.settled().await;
    assert_eq!(tally.statuses(), BTreeMap::from([(503, REQUESTS)]));
    assert_eq!(
        seen.len(),
        4 * REQUESTS,
        "each GET should be tried 1 + 3 times"
    );
    // Requests go one at a time, so the log is attempts 0..4 of each GET in turn; the wait
    // before retry n is from attempt n-1's answer to attempt n's arrival.
    let mut waits: [Vec<Duration>; 3] = Default::default();
    for attempts in seen.chunks(4) {
        for n in 1..4 {
            waits[n - 1].push(
                attempts[n]
                    .arrived
                    .saturating_duration_since(attempts[n - 1].ended),
            );
        }
    }
    // Each wait as a fraction of its cap: all within it (plus scheduling slack), and spread
    // over it. Uniform in [0, 1): 36 fractions all in one half happen about once in 10^10 runs.
    let mut fractions = Vec::new();
    for (n, (waits, cap)) in waits.iter_mut().zip(CAPS).enumerate() {
        waits.sort();
        let cap = Duration::from_millis(cap);
        let (shortest, longest) = (waits[0], waits[waits.len() - 1]);
        println!(
            "retry {}: cap {cap:?}; waits from {shortest:.1?} to {longest:.1?}, median {:.1?}",
            n + 1,
            waits[waits.len() / 2]
        );
        // A stall of the machine (this VM's host deschedules it for a few hundred ms at times)
        // only ever lengthens a wait, so one wait per retry may be late; a wrong cap (twice as
        // long, say) would put half of them over it.
        let late = waits.iter().filter(|w| **w > cap + SLACK).count();
        assert!(
            late <= 1,
            "retry {}: {late} of {} waits over its cap {cap:?} (longest {longest:?})",
            n + 1,
            waits.len()
        );
        fractions.extend(waits.iter().map(|w| w.as_secs_f64() / cap.as_secs_f64()));
    }
    assert!(
        fractions.iter().any(|f| *f < 0.5) && fractions.iter().any(|f| *f > 0.5),
        "waits are not spread over their caps: {fractions:.2?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_per_try_timeout_moves_a_stalled_attempt_to_the_fast_endpoint() {
    let stalled = fleet::endpoint("stalled")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let fast = fleet::endpoint("fast").start().await;
    let proxy = Proxy::start(&fleet::routed(
        &fleet::addrs(&[&stalled, &fast]),
        "",
        &["{ match: { pathPrefix: / }, timeout: 10s, retry: { attempts: 2, perTryTimeout: 300ms } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let outcomes = client.repeat("GET", AUTHORITY, "/", 10).await;

    let slowest = outcomes
        .outcomes
        .iter()
        .map(|o| o.elapsed)
        .max()
        .unwrap_or_default();
    let mut times: Vec<Duration> = outcomes.outcomes.iter().map(|o| o.elapsed).collect();
    times.sort();
    println!(
        "10 GETs with one endpoint stalling 5 s, perTryTimeout 300ms: {:?}; stalled received \
         {}, fast {}; times {times:.0?}",
        outcomes.statuses(),
        stalled.requests(),
        fast.requests()
    );
    for outcome in &outcomes.outcomes {
        assert_eq!(outcome.status, 200, "{outcome:?}");
        assert_eq!(outcome.endpoint.as_deref(), Some("fast"), "{outcome:?}");
    }
    assert!(
        slowest < Duration::from_secs(1),
        "the slowest GET took {slowest:?}"
    );
    assert!(
        stalled.requests() >= 3,
        "round robin sent only {} first attempts to the stalled endpoint",
        stalled.requests()
    );
    // Each abandoned attempt is cancelled: its connection closed, the app stops waiting.
    let cancelled = eventually(
        "every attempt on the stalled endpoint to be cancelled",
        TIMEOUT,
        || async {
            let cancelled = stalled.cancelled().len();
            (cancelled == stalled.requests()).then_some(cancelled)
        },
    )
    .await;
    assert!(stalled.answered().is_empty());
    println!("stalled: {cancelled} attempts cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overall_timeout_answers_504_and_cancels_the_upstream_request() {
    let a = fleet::endpoint("a")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let b = fleet::endpoint("b")
        .delay(Duration::from_secs(5))
        .start()
        .await;
    let proxy = Proxy::start(&fleet::routed(
        &fleet::addrs(&[&a, &b]),
        "",
        &["{ match: { pathPrefix: / }, timeout: 1s, retry: { attempts: 2 } }"],
    ))
    .await;

    let outcome = Client::new(proxy.outbound()).get(AUTHORITY, "/", &[]).await;
    let answered = Instant::now();

    assert_eq!(outcome.status, 504, "{outcome:?}");
    assert!(outcome.error_text().contains("timeout"), "{outcome:?}");
    assert!(
        (Duration::from_millis(900)..Duration::from_secs(2)).contains(&outcome.elapsed),
        "answered after {:?}, expected about the 1 s timeout",
        outcome.elapsed
    );
    let cancelled = eventually(
        "the upstream request to be cancelled",
        Duration::from_secs(3),
        || async {
            let mut cancelled = a.cancelled();
            cancelled.extend(b.cancelled());
            (!cancelled.is_empty()).then_some(cancelled)
        },
    )
    .await;
    let after = cancelled[0].ended.saturating_duration_since(answered);
    let closed = eventually(
        "the cancelled request's connection to close",
        Duration::from_secs(2),
        || async {
            let closed: usize = [&a, &b].iter().map(|e| e.server().closed_at().len()).sum();
            (closed > 0).then_some(closed)
        },
    )
    .await;
    println!(
        "504 after {:.0?}; the upstream noticed the cancellation {after:.0?} after the 504; \
         requests received {} (a {}, b {}); connections closed {closed}",
        outcome.elapsed,
        a.requests() + b.requests(),
        a.requests(),
        b.requests()
    );
    assert_eq!(cancelled.len(), 1, "{cancelled:?}");
    assert_eq!(
        a.requests() + b.requests(),
        1,
        "the timed-out request was retried"
    );
    assert!(
        after < Duration::from_secs(1),
        "the upstream saw the cancellation only {after:?} after the 504"
    );
    assert_eq!(closed, 1);
}

/// Two endpoints, `stalled` (holding every request [`STALL`]) and `fast`, behind a route with
/// `hedge: { delay: 50ms }`; `service` adds service lines (`protocol: http2`).
async fn hedged_pair(
    stalled: fleet::Builder,
    fast: fleet::Builder,
    service: &str,
) -> (Endpoint, Endpoint, Proxy) {
    let stalled = stalled.delay(STALL).start().await;
    let fast = fast.start().await;
    let proxy = Proxy::start(&fleet::routed(
        &fleet::addrs(&[&stalled, &fast]),
        service,
        &["{ match: { pathPrefix: / }, hedge: { delay: 50ms } }"],
    ))
    .await;
    (stalled, fast, proxy)
}

/// Sends 10 GETs one after another and checks each was answered by `fast` well before the
/// stall ended, and that `stalled` got some first attempts, every one of them cancelled.
async fn gets_are_rescued_by_the_hedge(
    stalled: &Endpoint,
    fast: &Endpoint,
    proxy: &Proxy,
    what: &str,
) {
    let mut client = Client::new(proxy.outbound());

    let tally = client.repeat("GET", AUTHORITY, "/", 10).await;

    let times = times(&tally);
    println!(
        "{what}: 10 hedged GETs, one endpoint stalling {STALL:?}: {:?}; stalled received {}, \
         fast {}; times {times:.0?}",
        tally.statuses(),
        stalled.requests(),
        fast.requests()
    );
    for outcome in &tally.outcomes {
        assert_eq!(outcome.status, 200, "{what}: {outcome:?}");
        assert_eq!(
            outcome.endpoint.as_deref(),
            Some("fast"),
            "{what}: {outcome:?}"
        );
    }
    let slowest = times.last().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "{what}: the slowest GET took {slowest:?}; the stall is {STALL:?}"
    );
    assert!(
        slowest >= Duration::from_millis(50),
        "{what}: no GET waited for the 50ms hedge delay; did any go to the stalled endpoint?"
    );
    assert!(
        stalled.requests() >= 3,
        "{what}: round robin sent only {} first attempts to the stalled endpoint",
        stalled.requests()
    );
    let cancelled = all_cancelled(stalled).await;
    assert!(stalled.answered().is_empty(), "{what}");
    println!("{what}: {cancelled} stalled attempts cancelled");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hedged_get_is_answered_by_the_fast_endpoint_and_the_stalled_attempt_is_cancelled() {
    let (stalled, fast, proxy) =
        hedged_pair(fleet::endpoint("stalled"), fleet::endpoint("fast"), "").await;

    gets_are_rescued_by_the_hedge(&stalled, &fast, &proxy, "HTTP/1").await;

    // Each cancelled HTTP/1 attempt took its connection with it.
    eventually(
        "a closed connection for each cancelled attempt",
        TIMEOUT,
        || async { (stalled.server().closed_at().len() == stalled.requests()).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn over_http2_the_losing_attempt_is_a_reset_stream_on_a_connection_that_stays_open() {
    let (stalled, fast, proxy) = hedged_pair(
        fleet::endpoint("stalled").http2(),
        fleet::endpoint("fast").http2(),
        "protocol: http2",
    )
    .await;

    gets_are_rescued_by_the_hedge(&stalled, &fast, &proxy, "HTTP/2").await;

    println!(
        "HTTP/2: stalled endpoint connections {}, closed {}",
        stalled.server().connections(),
        stalled.server().closed_at().len()
    );
    assert!(
        stalled.server().closed_at().is_empty(),
        "the proxy closed the HTTP/2 connection instead of resetting the stream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn posts_are_never_hedged() {
    let (stalled, fast, proxy) =
        hedged_pair(fleet::endpoint("stalled"), fleet::endpoint("fast"), "").await;
    let mut client = Client::new(proxy.outbound());

    // Round robin: of two POSTs one after another, one goes to each endpoint.
    let tally = client.repeat("POST", AUTHORITY, "/statuses", 2).await;

    println!(
        "2 POSTs on a hedged route: {:?}, answered by {}; times {:.0?}",
        tally.statuses(),
        tally.shares(),
        times(&tally)
    );
    assert_eq!(tally.ok(), 2, "{:?}", tally.outcomes);
    let from_stalled: Vec<_> = tally
        .outcomes
        .iter()
        .filter(|o| o.endpoint.as_deref() == Some("stalled"))
        .collect();
    assert_eq!(
        from_stalled.len(),
        1,
        "the POST that went to the stalled endpoint was answered elsewhere (hedged)"
    );
    assert!(from_stalled[0].elapsed >= STALL, "{:?}", from_stalled[0]);
    assert_eq!(
        stalled.requests() + fast.requests(),
        2,
        "a POST was sent twice"
    );
    assert!(stalled.cancelled().is_empty() && fast.cancelled().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_p95_hedge_learns_the_routes_latency_and_rescues_a_stalled_endpoint() {
    let a = fleet::endpoint("a").start().await;
    let b = fleet::endpoint("b").start().await;
    let proxy = Proxy::start(&fleet::routed(
        &fleet::addrs(&[&a, &b]),
        "",
        &["{ match: { pathPrefix: / }, hedge: { delay: p95 } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let warm = client.repeat("GET", AUTHORITY, "/", 200).await;
    assert_eq!(warm.ok(), 200, "{:?}", warm.statuses());
    let warm_times = times(&warm);
    let p95 = warm_times[warm_times.len() * 95 / 100];

    let stalled_from = Instant::now();
    b.set_delay(STALL);
    let b_before = b.requests();
    let tally = client.repeat("GET", AUTHORITY, "/", 10).await;

    let times = times(&tally);
    let stalled_attempts = b.requests() - b_before;
    println!(
        "p95 hedge: warm-up p95 {p95:.1?} (client side); then b stalls {STALL:?}: 10 GETs {:?}, \
         {}; b received {stalled_attempts} of them; times {times:.0?}",
        tally.statuses(),
        tally.shares(),
    );
    for outcome in &tally.outcomes {
        assert_eq!(outcome.status, 200, "{outcome:?}");
        assert_eq!(outcome.endpoint.as_deref(), Some("a"), "{outcome:?}");
    }
    let slowest = times.last().copied().unwrap_or_default();
    assert!(
        slowest < Duration::from_secs(1),
        "the slowest GET took {slowest:?}: the p95 hedge did not fire"
    );
    assert!(
        stalled_attempts >= 3,
        "round robin sent only {stalled_attempts} first attempts to b"
    );
    let stalled = eventually("b's stalled attempts to finish", TIMEOUT, || async {
        let stalled: Vec<_> = b
            .seen()
            .into_iter()
            .filter(|s| s.arrived >= stalled_from)
            .collect();
        (stalled.len() == stalled_attempts).then_some(stalled)
    })
    .await;
    assert!(
        stalled.iter().all(|s| s.cancelled()),
        "b answered a stalled attempt instead of having it cancelled: {stalled:?}"
    );
}

/// The budget the budget tests give their service.
const BUDGET: &str = "retryBudget: { ratio: 0.2, minPerSecond: 1, window: 2s }";

/// The most requests an endpoint may receive for `requests` sent over `elapsed` (the proxy
/// quiet before, every attempt over by the end) under [`BUDGET`]: each request once, plus the
/// retries and hedges the README's bound allows: `ratio` x the requests + `minPerSecond` x
/// max(elapsed, `window`).
fn budget_bound(requests: usize, elapsed: Duration) -> usize {
    const RATIO: f64 = 0.2;
    const MIN_PER_SECOND: f64 = 1.0;
    const WINDOW: Duration = Duration::from_secs(2);
    let allowed = RATIO * requests as f64 + MIN_PER_SECOND * elapsed.max(WINDOW).as_secs_f64();
    requests + allowed.floor() as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn hedges_spend_the_retry_budget() {
    const REQUESTS: usize = 60;
    // Both endpoints take 40 ms, four times the hedge delay: every request would be hedged.
    let a = fleet::endpoint("a")
        .delay(Duration::from_millis(40))
        .start()
        .await;
    let b = fleet::endpoint("b")
        .delay(Duration::from_millis(40))
        .start()
        .await;
    let proxy = Proxy::start(&fleet::routed(
        &fleet::addrs(&[&a, &b]),
        BUDGET,
        &["{ match: { pathPrefix: / }, hedge: { delay: 10ms } }"],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let start = Instant::now();
    let tally = client.repeat("GET", AUTHORITY, "/", REQUESTS).await;
    let elapsed = start.elapsed();

    let received = eventually("every attempt to finish", TIMEOUT, || async {
        let seen = a.seen().len() + b.seen().len();
        (seen == a.requests() + b.requests()).then_some(seen)
    })
    .await;
    let bound = budget_bound(REQUESTS, elapsed);
    println!(
        "{REQUESTS} GETs, every one slow enough to hedge, in {elapsed:.1?}: the endpoints \
         received {received} (a {}, b {}; bound {bound}; without a budget {})",
        a.requests(),
        b.requests(),
        2 * REQUESTS
    );
    assert_eq!(tally.ok(), REQUESTS, "{:?}", tally.statuses());
    assert!(
        received <= bound,
        "the endpoints received {received} requests, over the budget's {bound}"
    );
    assert!(
        received > REQUESTS,
        "no request was hedged at all: the budget's minimum allows some"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retry_budget_caps_what_an_endpoint_failing_everything_receives() {
    const REQUESTS: usize = 200;
    let down = fleet::endpoint("down").status(503).start().await;
    let proxy = Proxy::start(&fleet::routed(
        &[down.addr()],
        BUDGET,
        &[
            "{ match: { pathPrefix: / }, retry: { attempts: 3, conditions: [gateway-error], \
           backoff: { base: 1ms, max: 5ms } } }",
        ],
    ))
    .await;
    let mut client = Client::new(proxy.outbound());

    let start = Instant::now();
    let outcomes = client.repeat("GET", AUTHORITY, "/", REQUESTS).await;
    let elapsed = start.elapsed();

    let received = down.settled().await.len();
    let bound = budget_bound(REQUESTS, elapsed);
    println!(
        "{REQUESTS} GETs to an endpoint failing everything, attempts 3, in {elapsed:.1?}: it \
         received {received} (bound {bound}; without a budget {})",
        REQUESTS * 4
    );
    assert_eq!(outcomes.statuses(), BTreeMap::from([(503, REQUESTS)]));
    for outcome in &outcomes.outcomes {
        assert!(
            outcome.endpoint.is_some() && outcome.error.is_none(),
            "with the budget spent, the app's own 503 goes back as it is: {outcome:?}"
        );
    }
    assert!(
        received <= bound,
        "the endpoint received {received} requests, over the budget's {bound}"
    );
    assert!(
        received > REQUESTS,
        "no request was retried at all: the budget's minimum allows some"
    );
}
