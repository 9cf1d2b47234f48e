//! Load balancing: which endpoint of a service gets each request.
//!
//! Every test runs several real endpoints on loopback that name themselves in each response
//! (`x-endpoint`), sends traffic through the proxy's outbound listener, and counts where it
//! landed: peak-EWMA steers around a slow endpoint that round robin keeps feeding; weights are
//! honoured; ring-hash keeps each key on one endpoint and moves only the keys of a removed one;
//! an endpoint removed by a reload finishes what it has in flight.

use std::collections::BTreeMap;
use std::time::Duration;

use herd_tests::fleet::{self, AUTHORITY, Endpoint};
use herd_tests::load::{self, Client, Tally};
use herd_tests::{Proxy, TIMEOUT, endpoints, eventually};

/// Requests per balancing run, and how many are in flight at once.
const REQUESTS: usize = 300;
const CONCURRENCY: usize = 8;

/// Three endpoints, `slow` adding 50 ms to every response, under `algorithm`: sends
/// [`REQUESTS`] through the proxy and returns where they landed.
async fn one_slow_of_three(algorithm: &str) -> Tally {
    let fast1 = fleet::endpoint("fast1").start().await;
    let fast2 = fleet::endpoint("fast2").start().await;
    let slow = fleet::endpoint("slow")
        .delay(Duration::from_millis(50))
        .start()
        .await;
    let all = [&fast1, &slow, &fast2];
    let proxy = Proxy::start(&fleet::mesh(&format!(
        "endpoints: {}
         balancer: {{ algorithm: {algorithm} }}",
        fleet::list(&all)
    )))
    .await;

    let tally = load::fire(proxy.outbound(), AUTHORITY, REQUESTS, CONCURRENCY).await;

    println!("{algorithm}: {}", tally.shares());
    assert_eq!(
        tally.ok(),
        REQUESTS,
        "{algorithm}: not every request succeeded: {:?} {:?}",
        tally.statuses(),
        tally.failures().first()
    );
    let served: usize = all.iter().map(|e| e.requests()).sum();
    assert_eq!(
        served,
        REQUESTS,
        "{algorithm}: the endpoints saw {:?}",
        fleet::counts(&all)
    );
    tally
}

#[tokio::test(flavor = "multi_thread")]
async fn peak_ewma_sends_a_slow_endpoint_a_small_share() {
    let tally = one_slow_of_three("peak-ewma").await;

    let slow = tally.share("slow");
    assert!(
        slow < 0.15,
        "peak-ewma gave the slow endpoint {:.1}% of requests: {}",
        100.0 * slow,
        tally.shares()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_gives_each_endpoint_a_third_however_slow() {
    let tally = one_slow_of_three("round-robin").await;

    for id in ["fast1", "fast2", "slow"] {
        let share = tally.share(id);
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.05,
            "round-robin gave {id} {:.1}%, not a third: {}",
            100.0 * share,
            tally.shares()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn least_request_sends_a_slow_endpoint_clearly_less_than_a_third() {
    let tally = one_slow_of_three("least-request").await;

    let slow = tally.share("slow");
    assert!(
        slow < 0.25,
        "least-request gave the slow endpoint {:.1}% of requests: {}",
        100.0 * slow,
        tally.shares()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn round_robin_honours_weights() {
    let light = fleet::endpoint("light").start().await;
    let heavy = fleet::endpoint("heavy").start().await;
    let proxy = Proxy::start(&fleet::mesh(&format!(
        "endpoints: [{}, {{ address: {}, weight: 3 }}]
         balancer: {{ algorithm: round-robin }}",
        light.addr(),
        heavy.addr()
    )))
    .await;

    let tally = load::fire(proxy.outbound(), AUTHORITY, 400, 4).await;

    println!("round-robin, weights 1 and 3: {}", tally.shares());
    assert_eq!(tally.ok(), 400, "{:?}", tally.statuses());
    let share = tally.share("heavy");
    assert!(
        (share - 0.75).abs() <= 0.07,
        "the weight-3 endpoint got {:.1}%, not about 75%: {}",
        100.0 * share,
        tally.shares()
    );
    let web = endpoints::service(&proxy, "web").await;
    assert_eq!(web.algorithm, "round-robin", "{web:?}");
    assert_eq!(web.endpoint(light.addr()).weight, 1, "{web:?}");
    assert_eq!(web.endpoint(heavy.addr()).weight, 3, "{web:?}");
}

/// Ring-hash on `x-user` over `endpoints`.
fn ring_hash(endpoints: &[&Endpoint]) -> String {
    fleet::mesh(&format!(
        "endpoints: {}
         balancer: {{ algorithm: ring-hash, hashOn: {{ header: x-user }} }}",
        fleet::list(endpoints)
    ))
}

/// Sends each key `rounds` times, one request at a time on one connection (so no endpoint is
/// ever loaded and bounded load never has a reason to skip one), and returns the endpoint each
/// key reached; panics if a key reached two endpoints.
async fn where_keys_land(
    proxy: &Proxy,
    keys: &[String],
    rounds: usize,
) -> BTreeMap<String, String> {
    let mut client = Client::new(proxy.outbound());
    let mut landed: BTreeMap<String, String> = BTreeMap::new();
    for round in 0..rounds {
        for key in keys {
            let outcome = client.get(AUTHORITY, "/", &[("x-user", key)]).await;
            assert_eq!(outcome.status, 200, "{key}: {outcome:?}");
            let endpoint = outcome.endpoint.expect("an x-endpoint header");
            let first = landed
                .entry(key.clone())
                .or_insert_with(|| endpoint.clone());
            assert_eq!(
                *first, endpoint,
                "key {key} reached {first} and then, in round {round}, {endpoint}"
            );
        }
    }
    landed
}

fn keys_per_endpoint(landed: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for endpoint in landed.values() {
        *counts.entry(endpoint.clone()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread")]
async fn ring_hash_keeps_keys_in_place_and_moves_only_a_removed_endpoints_keys() {
    let fleet = [
        fleet::endpoint("a").start().await,
        fleet::endpoint("b").start().await,
        fleet::endpoint("c").start().await,
        fleet::endpoint("d").start().await,
        fleet::endpoint("e").start().await,
    ];
    let all: Vec<&Endpoint> = fleet.iter().collect();
    let proxy = Proxy::start(&ring_hash(&all)).await;
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();

    let before = where_keys_land(&proxy, &keys, 3).await;

    println!("keys per endpoint: {:?}", keys_per_endpoint(&before));
    assert_eq!(
        keys_per_endpoint(&before).len(),
        5,
        "200 keys did not reach all five endpoints: {:?}",
        keys_per_endpoint(&before)
    );

    // Remove `c`.
    let remaining: Vec<&Endpoint> = fleet.iter().filter(|e| e.id() != "c").collect();
    proxy.reload(&ring_hash(&remaining)).await;
    let after = where_keys_land(&proxy, &keys, 2).await;

    let mut moved_to: BTreeMap<String, usize> = BTreeMap::new();
    for key in &keys {
        let (was, is) = (&before[key], &after[key]);
        if was == "c" {
            assert_ne!(is, "c", "key {key} still reached the removed endpoint");
            *moved_to.entry(is.clone()).or_default() += 1;
        } else {
            assert_eq!(
                was, is,
                "key {key} moved from {was} to {is}, but {was} is still there"
            );
        }
    }
    println!("c's keys moved to: {moved_to:?}");
    assert!(
        moved_to.len() >= 3,
        "the removed endpoint's {} keys piled onto {moved_to:?} instead of spreading over the \
         remaining four",
        moved_to.values().sum::<usize>()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_removed_by_reload_finishes_its_request_and_gets_no_new_ones() {
    let a = fleet::endpoint("a").start().await;
    let b = fleet::endpoint("b").start().await;
    let c = fleet::endpoint("c").start().await;
    let d = fleet::endpoint("d").start().await;
    let mesh = |endpoints: &[&Endpoint]| {
        fleet::mesh(&format!(
            "endpoints: {}
             balancer: {{ algorithm: round-robin }}",
            fleet::list(endpoints)
        ))
    };
    let proxy = Proxy::start(&mesh(&[&a, &b, &c])).await;

    // Slow requests, one at a time, until one of them is being served by `c`.
    let mut slow = Vec::new();
    eventually("a slow request in flight on c", TIMEOUT, || {
        if c.in_flight() == 0 && slow.len() < 6 {
            let outbound = proxy.outbound();
            slow.push(tokio::spawn(async move {
                load::send(outbound, AUTHORITY, "/sleep/3000", &[]).await
            }));
        }
        let busy = c.in_flight() > 0;
        async move { busy.then_some(()) }
    })
    .await;

    // `c` is replaced by `d`.
    proxy.reload(&mesh(&[&a, &b, &d])).await;
    let served_by_c = c.requests();
    assert!(
        c.in_flight() > 0,
        "the slow request on c ended before the reload applied; the test proves nothing"
    );

    let tally = load::fire(proxy.outbound(), AUTHORITY, 30, 3).await;

    println!("after the reload: {}", tally.shares());
    assert_eq!(tally.ok(), 30, "{:?}", tally.statuses());
    assert_eq!(
        tally.share("c"),
        0.0,
        "c still got requests: {}",
        tally.shares()
    );
    assert_eq!(
        c.requests(),
        served_by_c,
        "c saw new requests after its removal"
    );
    assert!(
        tally.share("d") > 0.0,
        "the new endpoint d got no traffic at once: {}",
        tally.shares()
    );
    let web = endpoints::service(&proxy, "web").await;
    assert!(web.find(d.addr()).is_some(), "{web:?}");

    for request in slow {
        let outcome = request.await.expect("slow request task");
        assert_eq!(
            outcome.status, 200,
            "a request in flight was cut: {outcome:?}"
        );
    }
    assert_eq!(c.in_flight(), 0);
}
