use std::net::SocketAddr;
use std::time::Duration;

use herd_config::{Algorithm, BalancerConfig, HashOn, OutlierDetection, ServiceLimits};

use super::*;
use crate::endpoint::{PoolKey, Wire};

fn endpoint(port: u16) -> Arc<Member> {
    Member::new(Endpoint::new(PoolKey {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        wire: Wire::Http1,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        max_connections: 1,
        max_concurrent_streams: 100,
        peer: None,
    }))
}

fn balancer(algorithm: Algorithm, endpoints: &[(u16, u32)]) -> Balancer {
    balancer_with(
        BalancerConfig {
            algorithm,
            ..BalancerConfig::default()
        },
        OutlierDetection::default(),
        ServiceLimits::default(),
        endpoints,
    )
}

fn balancer_with(
    config: BalancerConfig,
    outlier: OutlierDetection,
    limits: ServiceLimits,
    endpoints: &[(u16, u32)],
) -> Balancer {
    let eps = endpoints.iter().map(|&(p, w)| (endpoint(p), w)).collect();
    Balancer::new("web", &config, &outlier, &limits, eps)
}

fn shares(b: &Balancer, n: usize, hash: impl Fn(usize) -> Option<u64>) -> HashMap<u16, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let p = b.pick(hash(i)).expect("an endpoint");
        *counts.entry(p.member.addr().port()).or_default() += 1;
    }
    counts
}

use std::collections::HashMap;

#[test]
fn round_robin_honours_weights() {
    let b = balancer(Algorithm::RoundRobin, &[(1, 1), (2, 3)]);
    let counts = shares(&b, 400, |_| None);
    assert_eq!((counts[&1], counts[&2]), (100, 300));
}

#[test]
fn p2c_spreads_evenly_over_idle_equal_endpoints_and_by_weight() {
    for algorithm in [Algorithm::PeakEwma, Algorithm::LeastRequest] {
        let b = balancer(algorithm, &[(1, 1), (2, 1), (3, 1)]);
        let counts = shares(&b, 3000, |_| None);
        for port in 1..=3 {
            assert!(
                (800..1200).contains(&counts[&port]),
                "{algorithm:?} {counts:?}"
            );
        }
        // Under load (16 requests in flight at any time) weights set the shares.
        let b = balancer(algorithm, &[(1, 1), (2, 3)]);
        let mut in_flight = std::collections::VecDeque::new();
        let mut counts: HashMap<u16, usize> = HashMap::new();
        for _ in 0..4000 {
            let p = b.pick(None).unwrap();
            *counts.entry(p.member.addr().port()).or_default() += 1;
            in_flight.push_back(b.start(p, None));
            if in_flight.len() > 16 {
                in_flight.pop_front();
            }
        }
        let heavy = counts[&2] as f64 / 4000.0;
        assert!((0.65..0.85).contains(&heavy), "{algorithm:?} {counts:?}");
    }
}

#[test]
fn peak_ewma_avoids_the_slow_endpoint() {
    let b = balancer(Algorithm::PeakEwma, &[(1, 1), (2, 1), (3, 1)]);
    let now = now_nanos();
    for (e, _) in b.endpoints().iter() {
        let ms = if e.addr().port() == 3 { 60 } else { 10 };
        e.load
            .observe(Duration::from_millis(ms), now, Duration::from_secs(10));
    }
    let counts = shares(&b, 3000, |_| None);
    // The slow endpoint wins only when drawn twice... which P2C never does: only when both draws
    // land on it, i.e. about 1/9 of the time, and then the redraw moves one of them.
    assert!(counts.get(&3).copied().unwrap_or(0) < 300, "{counts:?}");
}

#[test]
fn least_request_prefers_fewer_in_flight() {
    let b = balancer(Algorithm::LeastRequest, &[(1, 1), (2, 1)]);
    let busy = b
        .endpoints()
        .iter()
        .find(|(e, _)| e.addr().port() == 1)
        .unwrap()
        .0
        .clone();
    let _held: Vec<_> = (0..5).map(|_| busy.load.start()).collect();
    let counts = shares(&b, 100, |_| None);
    assert_eq!(counts.get(&1), None, "{counts:?}");
}

#[test]
fn ring_hash_is_sticky_and_falls_back_without_a_key() {
    let config = BalancerConfig {
        algorithm: Algorithm::RingHash,
        hash_on: Some(HashOn::ClientIp),
        ..BalancerConfig::default()
    };
    let b = balancer_with(
        config,
        OutlierDetection::default(),
        ServiceLimits::default(),
        &[(1, 1), (2, 1), (3, 1), (4, 1), (5, 1)],
    );
    for key in 0..200u64 {
        let first = b
            .pick(Some(hash_key(&key.to_be_bytes())))
            .unwrap()
            .member
            .addr();
        for _ in 0..3 {
            assert_eq!(
                b.pick(Some(hash_key(&key.to_be_bytes())))
                    .unwrap()
                    .member
                    .addr(),
                first
            );
        }
    }
    assert!(b.pick(None).is_some());
    let mut h = HeaderMap::new();
    assert!(b.hash_of(&h, "10.0.0.1".parse().unwrap()).is_some());
    h.insert("x-user", "alice".parse().unwrap());
    let header = balancer_with(
        BalancerConfig {
            algorithm: Algorithm::RingHash,
            hash_on: Some(HashOn::Header("x-user".into())),
            ..BalancerConfig::default()
        },
        OutlierDetection::default(),
        ServiceLimits::default(),
        &[(1, 1)],
    );
    assert_eq!(
        header.hash_of(&h, "10.0.0.1".parse().unwrap()),
        Some(hash_key(b"alice"))
    );
    let cookie = balancer_with(
        BalancerConfig {
            algorithm: Algorithm::RingHash,
            hash_on: Some(HashOn::Cookie("_session".into())),
            ..BalancerConfig::default()
        },
        OutlierDetection::default(),
        ServiceLimits::default(),
        &[(1, 1)],
    );
    h.insert(
        http::header::COOKIE,
        "a=1; _session=xyz; b=2".parse().unwrap(),
    );
    assert_eq!(
        cookie.hash_of(&h, "10.0.0.1".parse().unwrap()),
        Some(hash_key(b"xyz"))
    );
}

#[test]
fn ring_hash_bounds_the_load_of_a_hot_key() {
    let config = BalancerConfig {
        algorithm: Algorithm::RingHash,
        hash_on: Some(HashOn::ClientIp),
        bounded_load: 1.25,
        ..BalancerConfig::default()
    };
    let b = balancer_with(
        config,
        OutlierDetection::default(),
        ServiceLimits::default(),
        &[(1, 1), (2, 1), (3, 1), (4, 1)],
    );
    let key = Some(hash_key(b"hot"));
    let mut held = Vec::new();
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for _ in 0..40 {
        let p = b.pick(key).unwrap();
        *counts.entry(p.member.addr().port()).or_default() += 1;
        held.push(b.start(p, None));
    }
    // 40 in flight over 4 endpoints: none may hold more than 1.25 × the average, plus one.
    assert!(counts.values().all(|&c| c <= 14), "{counts:?}");
    assert_eq!(counts.len(), 4, "{counts:?}");
}

#[test]
fn ejected_endpoints_are_skipped_and_the_cap_holds() {
    let outlier = OutlierDetection {
        consecutive_failures: 1,
        ..OutlierDetection::default()
    };
    for algorithm in [
        Algorithm::PeakEwma,
        Algorithm::LeastRequest,
        Algorithm::RoundRobin,
    ] {
        let b = balancer_with(
            BalancerConfig {
                algorithm,
                ..BalancerConfig::default()
            },
            outlier.clone(),
            ServiceLimits::default(),
            &[(1, 1), (2, 1), (3, 1), (4, 1)],
        );
        // Every endpoint fails: at most half may be ejected.
        for _ in 0..50 {
            let p = b.pick(None).unwrap();
            let mut d = b.start(p, None);
            b.record(&mut d, Outcome::Status(500));
        }
        let now = now_nanos();
        let ejected: Vec<u16> = b
            .endpoints()
            .iter()
            .filter(|(e, _)| e.health.is_ejected(now))
            .map(|(e, _)| e.addr().port())
            .collect();
        assert_eq!(ejected.len(), 2, "{algorithm:?}");
        let counts = shares(&b, 200, |_| None);
        assert!(
            ejected.iter().all(|p| !counts.contains_key(p)),
            "{algorithm:?} {counts:?}"
        );
    }
}

#[test]
fn outcomes_count_as_configured() {
    let b = balancer(Algorithm::RoundRobin, &[(1, 1)]);
    assert!(b.is_failure(Outcome::ConnectFailure));
    assert!(b.is_failure(Outcome::Status(503)));
    assert!(b.is_failure(Outcome::Reset));
    assert!(!b.is_failure(Outcome::Status(404)));
    assert!(!b.is_failure(Outcome::Timeout));
}

#[tokio::test(start_paused = true)]
async fn overload_fails_fast_and_waiting_is_bounded() {
    let limits = ServiceLimits {
        max_pending_requests: 1,
        fail_fast_timeout: Duration::from_secs(3),
        ..ServiceLimits::default()
    };
    let b = Arc::new(balancer_with(
        BalancerConfig::default(),
        OutlierDetection::default(),
        limits,
        &[(1, 1)],
    ));
    // The one connection slot is taken...
    let held = b.dispatch(None, true).await.unwrap();
    // ...so the next request waits, and the one after is refused at once.
    let waiter = tokio::spawn({
        let b = b.clone();
        async move { b.dispatch(None, true).await.map(|_| ()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(b.pending(), 1);
    assert!(matches!(
        b.dispatch(None, true).await,
        Err(ProxyError::Overloaded { .. })
    ));
    // The waiter gives up after failFastTimeout.
    let started = Instant::now();
    assert!(matches!(
        waiter.await.unwrap(),
        Err(ProxyError::NoReadyEndpoint { .. })
    ));
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(b.pending(), 0);
    // A freed slot serves the next request.
    drop(held);
    assert!(b.dispatch(None, true).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_request_waits_for_endpoints_to_appear() {
    let b = Arc::new(balancer(Algorithm::PeakEwma, &[]));
    let waiter = tokio::spawn({
        let b = b.clone();
        async move {
            b.dispatch(None, false)
                .await
                .map(|d| d.member.addr().port())
        }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.set_endpoints(vec![(endpoint(7), 1)]);
    assert_eq!(waiter.await.unwrap().unwrap(), 7);
}

#[test]
fn a_pick_avoiding_an_endpoint_takes_another_when_there_is_one() {
    for algorithm in [
        Algorithm::PeakEwma,
        Algorithm::LeastRequest,
        Algorithm::RoundRobin,
        Algorithm::RingHash,
    ] {
        let config = BalancerConfig {
            algorithm,
            hash_on: (algorithm == Algorithm::RingHash).then_some(HashOn::ClientIp),
            ..BalancerConfig::default()
        };
        let b = balancer_with(
            config,
            OutlierDetection::default(),
            ServiceLimits::default(),
            &[(1, 1), (2, 1), (3, 1)],
        );
        for key in 0..100u64 {
            let hash = Some(hash_key(&key.to_be_bytes()));
            let first = b.pick(hash).unwrap().member;
            let again = b.pick_avoiding(hash, Some(&first)).unwrap().member;
            assert!(!Arc::ptr_eq(&first, &again), "{algorithm:?} key {key}");
        }
        let single = balancer(algorithm, &[(9, 1)]);
        let only = single.pick(None).unwrap().member;
        assert!(Arc::ptr_eq(
            &single.pick_avoiding(None, Some(&only)).unwrap().member,
            &only
        ));
    }
}
