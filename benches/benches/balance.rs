//! One balancer pick over 10, 100 and 1,000 endpoints, for each algorithm.
//!
//! Run with `cargo bench -p herd-benches --bench balance`. Endpoints carry load (requests in
//! flight, latency samples) so the costs compared are realistic, and ring-hash picks use a
//! different key each time. `proxy/tests/allocations.rs` checks that a pick allocates
//! nothing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use herd_config::{Algorithm, BalancerConfig, HashOn, OutlierDetection, ServiceLimits};
use herd_proxy::balance::load::now_nanos;
use herd_proxy::balance::ring::hash_key;
use herd_proxy::balance::{Balancer, Member};
use herd_proxy::endpoint::{Endpoint, PoolKey, Wire};

fn balancer(algorithm: Algorithm, n: u16) -> Balancer {
    let endpoints = (0..n)
        .map(|i| {
            let member = Member::new(Endpoint::new(PoolKey {
                addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 3000)),
                wire: Wire::Http1,
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(10),
                max_connections: 10_000,
                max_concurrent_streams: 100,
                peer: None,
            }));
            member.load.observe(
                Duration::from_millis(5 + u64::from(i % 20)),
                now_nanos(),
                Duration::from_secs(10),
            );
            (member, 1 + u32::from(i % 3))
        })
        .collect();
    let config = BalancerConfig {
        algorithm,
        hash_on: (algorithm == Algorithm::RingHash).then_some(HashOn::ClientIp),
        ..BalancerConfig::default()
    };
    Balancer::new(
        "bench",
        &config,
        &OutlierDetection::default(),
        &ServiceLimits::default(),
        endpoints,
    )
}

fn pick(c: &mut Criterion) {
    let _runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = _runtime.enter();
    let mut group = c.benchmark_group("pick");
    for algorithm in [
        Algorithm::PeakEwma,
        Algorithm::LeastRequest,
        Algorithm::RoundRobin,
        Algorithm::RingHash,
    ] {
        for n in [10u16, 100, 1000] {
            let b = Arc::new(balancer(algorithm, n));
            let name = format!("{algorithm:?}").to_lowercase();
            let mut key = 0u64;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |bench, _| {
                bench.iter(|| {
                    key = key.wrapping_add(1);
                    let hash = Some(hash_key(&key.to_le_bytes()));
                    std::hint::black_box(b.pick(hash))
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pick);
criterion_main!(benches);
