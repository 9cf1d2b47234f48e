//! A balancer pick must not allocate: it runs on every request.
//!
//! This test binary counts every allocation with a wrapping global allocator, warms each
//! balancer up (thread-locals and the endpoint set's first load may allocate once), then counts
//! the allocations of many picks, which must be zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use herd_config::{Algorithm, BalancerConfig, HashOn, OutlierDetection, ServiceLimits};
use herd_proxy::balance::Balancer;
use herd_proxy::balance::ring::hash_key;
use herd_proxy::endpoint::{Endpoint, PoolKey, Wire};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: defers to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
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
            let before = ALLOCATIONS.load(Ordering::Relaxed);
            for key in 0..10_000u64 {
                let picked = b.pick(Some(hash_key(&key.to_le_bytes())));
                assert!(picked.is_some());
                drop(picked);
            }
            let allocated = ALLOCATIONS.load(Ordering::Relaxed) - before;
            assert_eq!(
                allocated, 0,
                "{algorithm:?} over {n} endpoints allocated {allocated} times in 10,000 picks"
            );
        }
    }
}
