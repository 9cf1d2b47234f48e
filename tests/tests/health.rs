//! Endpoint health and limits: a dead endpoint is ejected after `consecutiveFailures` and
//! returns once a probe succeeds; with every endpoint sick, the ejection cap holds and traffic
//! spreads rather than piling up; a full `maxPendingRequests` fails fast with 503 `overloaded`;
//! a request that cannot find a ready endpoint within `failFastTimeout` gets 503 too.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herd_tests::fleet::{self, AUTHORITY, Endpoint};
use herd_tests::load::{self, Client, Outcome};
use herd_tests::{Proxy, TIMEOUT, endpoints, eventually};

/// The state `/endpoints` gives the endpoint at `endpoint`'s address.
async fn state_of(proxy: &Proxy, addr: std::net::SocketAddr) -> endpoints::Endpoint {
    endpoints::service(proxy, "web")
        .await
        .endpoint(addr)
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_endpoint_is_ejected_after_consecutive_failures_and_returns_when_it_is_back() {
    let a = fleet::endpoint("a").start().await;
    let b = fleet::endpoint("b").start().await;
    let c = fleet::endpoint("c").start().await;
    let proxy = Proxy::start(&fleet::mesh(&format!(
        "endpoints: {}
         balancer: {{ algorithm: round-robin }}
         outlierDetection: {{ consecutiveFailures: 3, minEjection: 1s, maxEjection: 60s }}",
        fleet::list(&[&a, &b, &c])
    )))
    .await;
    let warm = load::fire(proxy.outbound(), AUTHORITY, 30, 3).await;
    assert_eq!(warm.ok(), 30, "{:?}", warm.statuses());

    // `c` dies: its port now refuses connections.
    let c_addr = c.stop().await;
    let mut client = Client::new(proxy.outbound());
    let mut failures: Vec<Outcome> = Vec::new();
    let mut ejected = None;
    for _ in 0..60 {
        let outcome = client.get(AUTHORITY, "/", &[]).await;
        if !outcome.is_ok() {
            failures.push(outcome);
        }
        let c = state_of(&proxy, c_addr).await;
        if c.state == "ejected" {
            ejected = Some(c);
            break;
        }
    }
    let ejected_at = Instant::now();
    let ejected = ejected.unwrap_or_else(|| {
        panic!(
            "c was not ejected after {} failures: {failures:?}",
            failures.len()
        )
    });

    println!("failures before ejection: {failures:?}");
    assert!(
        failures.len() <= 3,
        "c was ejected only after {} failures: {failures:?}",
        failures.len()
    );
    for failure in &failures {
        assert_eq!(failure.status, 502, "{failure:?}");
        assert!(
            failure.error_text().contains("connect"),
            "herd-proxy-error: {failure:?}"
        );
    }
    assert!(ejected.ejections >= 1, "{ejected:?}");

    // The failures stop: while `c` is ejected, every request goes to `a` or `b`.
    let mut during = Vec::new();
    while ejected_at.elapsed() < Duration::from_millis(600) && during.len() < 30 {
        during.push(client.get(AUTHORITY, "/", &[]).await);
    }
    let failed: Vec<_> = during.iter().filter(|o| !o.is_ok()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while c was ejected: {failed:?}",
        failed.len(),
        during.len()
    );

    // `c` comes back on the same port; after minEjection a probe finds it and it is in
    // rotation again.
    let c = fleet::endpoint("c").on(c_addr).start().await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        client.get(AUTHORITY, "/", &[]).await;
        let state = state_of(&proxy, c_addr).await;
        if c.requests() > 0 && state.state == "ready" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "c is not back after {TIMEOUT:?}: {state:?}, {} requests at c",
            c.requests()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let back_after = ejected_at.elapsed();
    println!("c back in rotation {back_after:?} after its ejection was seen");
    assert!(
        back_after >= Duration::from_millis(800),
        "c was back after {back_after:?}, before minEjection (1 s, -10% jitter) had passed"
    );

    let tally = load::fire(proxy.outbound(), AUTHORITY, 30, 1).await;
    assert_eq!(tally.ok(), 30, "{:?}", tally.statuses());
    assert!(
        tally.share("c") > 0.2,
        "c is back but gets little traffic: {}",
        tally.shares()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_every_endpoint_failing_no_more_than_max_ejected_percent_are_ejected() {
    let sick: Vec<Endpoint> = vec![
        fleet::endpoint("a").status(500).start().await,
        fleet::endpoint("b").status(500).start().await,
        fleet::endpoint("c").status(500).start().await,
        fleet::endpoint("d").status(500).start().await,
    ];
    let all: Vec<&Endpoint> = sick.iter().collect();
    let proxy = Arc::new(
        Proxy::start(&fleet::mesh(&format!(
            "endpoints: {}
             balancer: {{ algorithm: round-robin }}
             outlierDetection: {{ consecutiveFailures: 2, minEjection: 1s, maxEjectedPercent: 50 }}",
            fleet::list(&all)
        )))
        .await,
    );

    // Watch `/endpoints` while traffic flows.
    let stop = Arc::new(AtomicBool::new(false));
    let most_ejected = Arc::new(AtomicUsize::new(0));
    let watcher = tokio::spawn({
        let (proxy, stop, most_ejected) = (proxy.clone(), stop.clone(), most_ejected.clone());
        async move {
            while !stop.load(Ordering::SeqCst) {
                let web = endpoints::service(&proxy, "web").await;
                most_ejected.fetch_max(web.ejected(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });

    // Three seconds of traffic (ejections of 1 s and longer come and go), in two halves.
    let start = Instant::now();
    let mut statuses = std::collections::BTreeMap::new();
    let mut at_half = None;
    while start.elapsed() < Duration::from_secs(3) {
        if at_half.is_none() && start.elapsed() >= Duration::from_millis(1500) {
            at_half = Some(fleet::counts(&all));
        }
        for (status, n) in load::fire(proxy.outbound(), AUTHORITY, 40, 4)
            .await
            .statuses()
        {
            *statuses.entry(status).or_insert(0) += n;
        }
    }
    stop.store(true, Ordering::SeqCst);
    watcher.await.expect("the /endpoints watcher");
    let at_half = at_half.expect("a halfway count");
    let at_end = fleet::counts(&all);

    let most_ejected = most_ejected.load(Ordering::SeqCst);
    println!(
        "statuses {statuses:?}; most ejected at once {most_ejected}; requests per endpoint at half {at_half:?}, at end {at_end:?}"
    );
    assert!(
        most_ejected >= 1,
        "no endpoint was ever ejected, so the cap was never tested"
    );
    assert!(
        most_ejected <= 2,
        "{most_ejected} of 4 endpoints were ejected at once, over maxEjectedPercent 50"
    );
    assert_eq!(
        statuses.keys().copied().collect::<Vec<_>>(),
        [500],
        "clients should see the apps' 500s and nothing else: {statuses:?}"
    );
    let still_served = at_end
        .iter()
        .zip(&at_half)
        .filter(|((_, end), (_, half))| end > half)
        .count();
    assert!(
        still_served >= 2,
        "in the second half only {still_served} endpoints got traffic: {at_half:?} -> {at_end:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_pending_queue_fails_fast_with_503_overloaded_and_recovers() {
    let hold = fleet::endpoint("hold")
        .delay(Duration::from_secs(1))
        .start()
        .await;
    let proxy = Proxy::start(&fleet::mesh(&format!(
        "endpoints: [{}]
         limits: {{ maxConnections: 1, maxPendingRequests: 2, failFastTimeout: 10s }}",
        hold.addr()
    )))
    .await;

    let requests: Vec<_> = (0..10)
        .map(|_| {
            let outbound = proxy.outbound();
            tokio::spawn(async move { load::send(outbound, AUTHORITY, "/", &[]).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for request in requests {
        outcomes.push(request.await.expect("request task"));
    }

    let (ok, rest): (Vec<_>, Vec<_>) = outcomes.iter().partition(|o| o.is_ok());
    let (overloaded, other): (Vec<_>, Vec<_>) = rest
        .iter()
        .partition(|o| o.status == 503 && o.error_text().contains("overloaded"));
    let times = |os: &[&Outcome]| os.iter().map(|o| o.elapsed).collect::<Vec<_>>();
    println!(
        "200: {} {:?}; 503 overloaded: {} {:?}",
        ok.len(),
        times(&ok),
        overloaded.len(),
        times(&overloaded)
    );
    assert!(
        other.is_empty(),
        "neither 200 nor 503 overloaded: {other:?}"
    );
    assert!(!ok.is_empty(), "no request was served");
    assert!(
        ok.len() <= 4,
        "{} requests were served with one connection and two pending allowed",
        ok.len()
    );
    for outcome in &overloaded {
        assert!(
            outcome.elapsed < Duration::from_millis(500),
            "an overloaded 503 took {:?}, not fast against the 1 s hold",
            outcome.elapsed
        );
    }
    assert!(
        hold.server().max_in_flight() <= 1,
        "the app had {} requests at once with maxConnections 1",
        hold.server().max_in_flight()
    );

    // Load has dropped: the next request is served.
    let after = load::send(proxy.outbound(), AUTHORITY, "/", &[]).await;
    assert_eq!(after.status, 200, "{after:?}");
    assert_eq!(endpoints::service(&proxy, "web").await.pending, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_that_finds_no_ready_endpoint_within_fail_fast_timeout_gets_503() {
    let busy = fleet::endpoint("busy").start().await;
    let proxy = Proxy::start(&fleet::mesh(&format!(
        "endpoints: [{}]
         limits: {{ maxConnections: 1, failFastTimeout: 1s }}",
        busy.addr()
    )))
    .await;

    // The only connection is taken for 5 s.
    let outbound = proxy.outbound();
    let held =
        tokio::spawn(async move { load::send(outbound, AUTHORITY, "/sleep/5000", &[]).await });
    eventually("the held request at the app", TIMEOUT, || async {
        (busy.in_flight() > 0).then_some(())
    })
    .await;

    let waiting = load::send(proxy.outbound(), AUTHORITY, "/", &[]).await;

    println!("the waiting request: {waiting:?}");
    assert_eq!(waiting.status, 503, "{waiting:?}");
    assert!(
        waiting.error_text().contains("no ready endpoint"),
        "herd-proxy-error: {waiting:?}"
    );
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(2500)).contains(&waiting.elapsed),
        "503 after {:?}, expected about the 1 s failFastTimeout",
        waiting.elapsed
    );
    let held = held.await.expect("held request task");
    assert_eq!(held.status, 200, "{held:?}");
}
