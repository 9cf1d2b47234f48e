//! The request path's hot pieces must not allocate: a balancer pick and recording a request's
//! metrics run on every request.
//!
//! This test binary counts every allocation with a wrapping global allocator, warms each piece
//! up (thread-locals, the endpoint set's first load and a status code's first series may
//! allocate once), then counts, per thread, the allocations of many repetitions, which must be zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::time::Duration;

use herd_config::{Algorithm, BalancerConfig, HashOn, OutlierDetection, ServiceLimits};
use herd_proxy::balance::Balancer;
use herd_proxy::balance::ring::hash_key;
use herd_proxy::endpoint::{Endpoint, PoolKey, Wire};
use herd_proxy::listen::Direction;
use herd_proxy::metrics::Metrics;

struct Counting;

thread_local! {
    /// Allocations made by this thread: tests run in parallel threads, each counts its own.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

// SAFETY: defers to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[tokio::test(flavor = "current_thread")]
async fn a_pick_allocates_nothing() {
    for algorithm in [
        Algorithm::PeakEwma,
        Algorithm::LeastRequest,
        Algorithm::RoundRobin,
        Algorithm::RingHash,
    ] {
        for n in [1u16, 10, 1000] {
            let endpoints = (0..n)
                .map(|i| {
                    let endpoint = Endpoint::new(PoolKey {
                        addr: SocketAddr::from(([10, 0, (i >> 8) as u8, i as u8], 3000)),
                        wire: Wire::Http1,
                        connect_timeout: Duration::from_secs(1),
                        idle_timeout: Duration::from_secs(10),
                        max_connections: 100,
                        max_concurrent_streams: 100,
                    });
                    (endpoint, 1 + u32::from(i % 3))
                })
                .collect();
            let config = BalancerConfig {
                algorithm,
                hash_on: (algorithm == Algorithm::RingHash).then_some(HashOn::ClientIp),
                ..BalancerConfig::default()
            };
            let b = Balancer::new(
                "t",
                &config,
                &OutlierDetection::default(),
                &ServiceLimits::default(),
                endpoints,
            );
            for key in 0..100u64 {
                drop(b.pick(Some(hash_key(&key.to_le_bytes()))));
            }
            let before = allocations();
            for key in 0..10_000u64 {
                let picked = b.pick(Some(hash_key(&key.to_le_bytes())));
                assert!(picked.is_some());
                drop(picked);
            }
            let allocated = allocations() - before;
            assert_eq!(
                allocated, 0,
                "{algorithm:?} over {n} endpoints allocated {allocated} times in 10,000 picks"
            );
        }
    }
}

#[test]
fn recording_a_request_allocates_nothing() {
    let metrics = Metrics::new();
    let route = metrics.route(Direction::Outbound, "web", "api");
    for status in [200, 404, 503] {
        route.response(status);
    }
    let before = allocations();
    for i in 0..10_000u32 {
        route.requests.inc();
        route.response([200, 404, 503][i as usize % 3]);
        route.latency.observe(f64::from(i % 100) / 1000.0);
        route.duration.observe(f64::from(i % 100) / 900.0);
    }
    let allocated = allocations() - before;
    assert_eq!(
        allocated, 0,
        "recording 10,000 requests allocated {allocated} times"
    );
}
