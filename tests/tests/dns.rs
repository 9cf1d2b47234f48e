//! Discovery by DNS: a service's endpoints come from `dns: NAME:PORT`, resolved (A and AAAA)
//! through the proxy's resolver, here a real dnsmasq on loopback whose answers the test
//! changes. New answers move traffic within a few seconds (TTL 1 s, `minTtl: 1s`); while the
//! resolver is down the last good answer keeps serving; a name that does not exist leaves the
//! service without endpoints, and its requests fail fast with 503.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use herd_tests::dns::{self, Dnsmasq};
use herd_tests::fleet::{self, AUTHORITY, Endpoint};
use herd_tests::load::{self, Outcome};
use herd_tests::{Proxy, TIMEOUT, endpoints, eventually, ports};

const OLD: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const NEW: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));

/// Endpoint `id` on `ip`:`port`.
async fn endpoint_on(id: &str, ip: IpAddr, port: u16) -> Endpoint {
    fleet::endpoint(id)
        .on(SocketAddr::new(ip, port))
        .start()
        .await
}

/// A proxy whose service `web` is `dns: { name: NAME:PORT, minTtl: 1s, maxTtl: 60s }`,
/// resolved through `dnsmasq`.
async fn proxy_resolving(dnsmasq: &Dnsmasq, name: &str, port: u16, extra: &str) -> Proxy {
    Proxy::start(&fleet::mesh_resolving(
        dnsmasq.addr(),
        &format!(
            "dns: {{ name: {name}:{port}, minTtl: 1s, maxTtl: 60s }}
             {extra}"
        ),
    ))
    .await
}

/// Sends fresh requests until one is answered by endpoint `id`; returns how long that took.
async fn until_served_by(proxy: &Proxy, id: &str) -> Duration {
    let start = Instant::now();
    let mut last: Option<Outcome> = None;
    while start.elapsed() < TIMEOUT {
        let outcome = load::send(proxy.outbound(), AUTHORITY, "/", &[]).await;
        if outcome.is_ok() && outcome.endpoint.as_deref() == Some(id) {
            return start.elapsed();
        }
        last = Some(outcome);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no request reached {id} within {TIMEOUT:?}; the last: {last:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_answer_moves_traffic_to_the_new_address() {
    let port = ports::free();
    let old = endpoint_on("old", OLD, port).await;
    let new = endpoint_on("new", NEW, port).await;
    let dnsmasq = Dnsmasq::start(&[("web.test", OLD)]).await;
    let proxy = proxy_resolving(&dnsmasq, "web.test", port, "").await;

    until_served_by(&proxy, "old").await;
    let tally = load::fire(proxy.outbound(), AUTHORITY, 20, 2).await;
    assert_eq!(tally.share("old"), 1.0, "{:?}", tally.outcomes.first());
    let web = endpoints::service(&proxy, "web").await;
    assert_eq!(
        web.addresses(),
        [SocketAddr::new(OLD, port).to_string()],
        "{web:?}"
    );

    dnsmasq.answer(&[("web.test", NEW)]).await;
    let moved_after = until_served_by(&proxy, "new").await;

    println!("traffic moved {moved_after:?} after the answer changed");
    assert!(
        moved_after < Duration::from_secs(5),
        "traffic took {moved_after:?} to follow the new answer (TTL 1 s)"
    );
    // Once moved, it stays moved: nothing more reaches the old address.
    let old_requests = old.requests();
    let tally = load::fire(proxy.outbound(), AUTHORITY, 20, 2).await;
    assert_eq!(tally.share("new"), 1.0, "{}", tally.shares());
    assert_eq!(
        old.requests(),
        old_requests,
        "the old address still got requests"
    );
    assert!(new.requests() >= 20);
    let web = endpoints::service(&proxy, "web").await;
    assert_eq!(
        web.addresses(),
        [SocketAddr::new(NEW, port).to_string()],
        "{web:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resolver_outage_keeps_traffic_on_the_last_good_answer() {
    let port = ports::free();
    let _web = endpoint_on("web", OLD, port).await;
    let mut dnsmasq = Dnsmasq::start(&[("web.test", OLD)]).await;
    let proxy = proxy_resolving(&dnsmasq, "web.test", port, "").await;
    until_served_by(&proxy, "web").await;
    // The proxy asks again at the TTL, so the outage below is one it meets.
    let asked = dnsmasq.queries("web.test");
    eventually("the proxy to resolve web.test again", TIMEOUT, || async {
        (dnsmasq.queries("web.test") > asked).then_some(())
    })
    .await;

    dnsmasq.stop().await;
    assert_eq!(
        dns::query(dnsmasq.addr(), "web.test", dns::A).await,
        None,
        "dnsmasq still answers"
    );

    // Several TTLs (1 s) pass without a resolver; every request still reaches the last address.
    let start = Instant::now();
    let mut outcomes = Vec::new();
    while start.elapsed() < Duration::from_secs(4) {
        outcomes.push(load::send(proxy.outbound(), AUTHORITY, "/", &[]).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failed: Vec<_> = outcomes
        .iter()
        .filter(|o| !o.is_ok() || o.endpoint.as_deref() != Some("web"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed during the resolver outage: {failed:?}",
        failed.len(),
        outcomes.len()
    );
    let web = endpoints::service(&proxy, "web").await;
    assert_eq!(
        web.addresses(),
        [SocketAddr::new(OLD, port).to_string()],
        "{web:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aaaa_only_answer_is_used() {
    let port = ports::free();
    let v6 = endpoint_on("v6", IpAddr::V6(Ipv6Addr::LOCALHOST), port).await;
    let dnsmasq = Dnsmasq::start(&[("v6.test", IpAddr::V6(Ipv6Addr::LOCALHOST))]).await;
    let a = dns::query(dnsmasq.addr(), "v6.test", dns::A).await;
    assert_eq!(
        a.map(|a| (a.rcode, a.addresses.len())),
        Some((0, 0)),
        "v6.test should have no A record"
    );
    // The string form of `dns:`.
    let proxy = Proxy::start(&fleet::mesh_resolving(
        dnsmasq.addr(),
        &format!("dns: v6.test:{port}"),
    ))
    .await;

    until_served_by(&proxy, "v6").await;

    assert!(v6.requests() >= 1);
    let web = endpoints::service(&proxy, "web").await;
    assert_eq!(web.addresses(), [format!("[::1]:{port}")], "{web:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_name_that_does_not_exist_fails_fast_with_503_no_ready_endpoint() {
    let dnsmasq = Dnsmasq::start(&[("other.test", OLD)]).await;
    let answer = dns::query(dnsmasq.addr(), "nowhere.test", dns::A).await;
    assert_eq!(
        answer.map(|a| a.rcode),
        Some(3),
        "nowhere.test should be NXDOMAIN"
    );
    let proxy = proxy_resolving(
        &dnsmasq,
        "nowhere.test",
        ports::free(),
        "limits: { failFastTimeout: 1s }",
    )
    .await;

    let outcome = load::send(proxy.outbound(), AUTHORITY, "/", &[]).await;

    println!("{outcome:?}");
    assert_eq!(outcome.status, 503, "{outcome:?}");
    assert!(
        outcome.error_text().contains("no ready endpoint"),
        "herd-proxy-error: {outcome:?}"
    );
    assert!(
        (Duration::from_millis(800)..Duration::from_millis(2500)).contains(&outcome.elapsed),
        "503 after {:?}, expected about the 1 s failFastTimeout",
        outcome.elapsed
    );
    assert!(endpoints::service(&proxy, "web").await.endpoints.is_empty());
}
