//! The request path's hot pieces must not allocate: the route stage (the service by authority,
//! then its route), header rewriting, a balancer pick and recording a request's metrics run on
//! every request.
//!
//! This test binary counts every allocation with a wrapping global allocator, warms each piece
//! up (thread-locals, the endpoint set's first load and a status code's or a peer identity's
//! first series may allocate once), then counts, per thread, the allocations of many repetitions, which must be zero.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use herd_config::{Algorithm, BalancerConfig, HashOn, OutlierDetection, ServiceLimits};
use herd_identity::SpiffeId;
use herd_proxy::balance::ring::hash_key;
use herd_proxy::balance::{Balancer, Member};
use herd_proxy::endpoint::{Endpoint, PoolKey, Wire};
use herd_proxy::http::headers::{
    X_FORWARDED_FOR, append_forwarded_for, forwarded_for, strip_hop_by_hop,
};
use herd_proxy::listen::Direction;
use herd_proxy::metrics::{Metrics, TlsPeer};
use herd_proxy::snapshot::{Registry, Snapshot};
use http::{HeaderMap, HeaderValue, Method};

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
                        peer: None,
                    });
                    (Member::new(endpoint), 1 + u32::from(i % 3))
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
    // Plaintext, and two meshed endpoints' identities (their series resolved at first sight).
    let ids: [SpiffeId; 2] = [
        "spiffe://cluster.local/ns/mastodon/sa/web".parse().unwrap(),
        "spiffe://cluster.local/ns/mastodon/sa/web-canary"
            .parse()
            .unwrap(),
    ];
    let peers = [
        TlsPeer::Plaintext,
        TlsPeer::Server(&ids[0]),
        TlsPeer::Server(&ids[1]),
    ];
    for status in [200, 404, 503] {
        for peer in peers {
            route.response(status, peer);
        }
    }
    let before = allocations();
    for i in 0..10_000u32 {
        route.requests.inc();
        route.response([200, 404, 503][i as usize % 3], peers[i as usize / 3 % 3]);
        route.latency.observe(f64::from(i % 100) / 1000.0);
        route.duration.observe(f64::from(i % 100) / 900.0);
    }
    let allocated = allocations() - before;
    assert_eq!(
        allocated, 0,
        "recording 10,000 requests allocated {allocated} times"
    );
}

/// A mesh file of 10 HTTP services with 4 authorities each; `web` has 50 routes, tried in order:
/// 2 for uploads (`POST`), streaming, 45 API reads (`GET`, `HEAD`), `/health`, v2 search.
fn fifty_routes() -> String {
    let services = [
        "web",
        "streaming",
        "elasticsearch",
        "libretranslate",
        "minio",
        "imgproxy",
        "camo",
        "statsd-exporter",
        "jaeger",
        "mailpit",
    ];
    let mut yaml = String::from("services:\n");
    for (i, name) in services.into_iter().enumerate() {
        yaml.push_str(&format!(
            "  - name: {name}\n    authorities: [{name}, {name}.mastodon, \
             {name}.mastodon.svc.cluster.local, {name}.mastodon.svc.cluster.local:3000]\n    \
             endpoints: [10.42.0.{}:3000]\n",
            i + 10
        ));
        if name != "web" {
            continue;
        }
        yaml.push_str(
            "    routes:\n      \
             - { name: media-upload-v2, match: { pathPrefix: /api/v2/media, methods: [POST] } }\n      \
             - { name: media-upload, match: { pathPrefix: /api/v1/media, methods: [POST] } }\n      \
             - { name: streaming, match: { pathPrefix: /api/v1/streaming }, timeout: 0s }\n",
        );
        for i in 0..45 {
            let resource = match i {
                0 => "timelines".to_owned(),
                _ => format!("resource{i}"),
            };
            yaml.push_str(&format!(
                "      - {{ name: api-{resource}, match: {{ pathPrefix: /api/v1/{resource}, methods: [GET, HEAD] }} }}\n"
            ));
        }
        yaml.push_str(
            "      - { name: health, match: { path: /health } }\n      \
             - { name: search, match: { pathPrefix: /api/v2/search, methods: [GET, HEAD] } }\n",
        );
    }
    yaml
}

#[tokio::test(flavor = "current_thread")]
async fn routing_over_fifty_routes_allocates_nothing() {
    let text = fifty_routes();
    let config = herd_config::parse(&text, "t.yaml").expect("config");
    let mut registry = Registry::new(&config, Metrics::new());
    let snapshot = Snapshot::build(1, PathBuf::from("t.yaml"), config, &mut registry);
    let table = &snapshot.routes;
    assert_eq!(table.lookup("web").expect("web").routes.len(), 50);
    let requests = [
        (
            "web.mastodon.svc.cluster.local",
            Method::POST,
            "/api/v2/media",
            "media-upload-v2",
        ),
        (
            "web",
            Method::GET,
            "/api/v1/timelines/home",
            "api-timelines",
        ),
        (
            "Web.Mastodon.svc.cluster.local.:80",
            Method::GET,
            "/api/v2/search",
            "search",
        ),
        ("web.mastodon:80", Method::HEAD, "/health", "health"),
        (
            "web.mastodon.svc.cluster.local:3000",
            Method::GET,
            "/@alice/1",
            "default",
        ),
        (
            "mailpit.mastodon",
            Method::GET,
            "/api/v1/messages",
            "default",
        ),
    ];
    for (authority, method, path, expected) in &requests {
        let route = table
            .lookup(authority)
            .expect(authority)
            .route(method, path);
        assert_eq!(&*route.name, *expected, "{authority} {method} {path}");
    }
    let before = allocations();
    for i in 0..10_000 {
        let (authority, method, path, _) = &requests[i % requests.len()];
        let service = table.lookup(authority).expect(authority);
        std::hint::black_box(service.route(method, path));
    }
    let allocated = allocations() - before;
    assert_eq!(
        allocated, 0,
        "10,000 lookups and route selections over 50 routes allocated {allocated} times"
    );
}

fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(*name, HeaderValue::from_static(value));
    }
    h
}

/// A Mastodon API request as a client sends it: nothing hop-by-hop, no `X-Forwarded-For`.
fn request() -> HeaderMap {
    map(&[
        ("host", "mastodon.example"),
        (
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        ("accept", "application/json, text/plain, */*"),
        ("accept-language", "en-US,en;q=0.5"),
        ("accept-encoding", "gzip, deflate, br, zstd"),
        (
            "authorization",
            "Bearer 8YvQxnhQmZ3k1l0Jt2cRbVwE5uKfPq9sA7dLgHoNiTe",
        ),
        (
            "cookie",
            "_mastodon_session=Xk2Rz9%2FqP4vN7bLm1WcT8yH3jD6fQ0sA5eU%2BgK--a1b2c3d4",
        ),
        ("x-csrf-token", "mQ3pZ8vR2kL7wN1xT5yB9cH4jF6gD0sA"),
        ("x-request-id", "5d0f3e5a-8b1c-4f7e-9a2d-6c3b1e0f4a7d"),
        ("content-type", "application/json"),
        ("content-length", "57"),
    ])
}

/// Puma's answer as nginx passes it on, with `Connection: keep-alive` (and `extra`).
fn response(extra: &[(&'static str, &'static str)]) -> HeaderMap {
    let mut h = map(&[
        ("date", "Tue, 14 Jan 2025 10:21:07 GMT"),
        ("content-type", "application/json; charset=utf-8"),
        ("connection", "keep-alive"),
        ("vary", "Accept, Origin"),
        ("cache-control", "private, no-store"),
        ("etag", "W/\"9f1c2a7e5b3d4c8f0a6e1b2d3c4f5a6b\""),
        ("x-request-id", "5d0f3e5a-8b1c-4f7e-9a2d-6c3b1e0f4a7d"),
        ("x-runtime", "0.084213"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
    ]);
    h.extend(map(extra));
    h
}

/// `template` as hyper hands over a parsed HTTP/1 head: a map reserved for its headers, then
/// filled. (A clone would not do: its entries have no spare capacity, so any insertion into it
/// reallocates, which the request path does not.)
fn parsed(template: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.reserve(template.len());
    h.extend(template.clone());
    h
}

/// Allocations of `rewrite` on each of 1,000 copies of `headers`, made before counting; the first
/// rewritten map is returned to check what the rewrite did.
fn count(headers: &HeaderMap, rewrite: impl Fn(&mut HeaderMap)) -> (usize, HeaderMap) {
    let mut maps: Vec<HeaderMap> = (0..=1_000).map(|_| parsed(headers)).collect();
    rewrite(&mut maps[1_000]);
    let before = allocations();
    for h in &mut maps[..1_000] {
        rewrite(h);
    }
    let allocated = allocations() - before;
    (allocated, maps.swap_remove(0))
}

#[test]
fn stripping_hop_by_hop_headers_allocates_nothing() {
    let strip = |h: &mut HeaderMap| strip_hop_by_hop(h, false);
    let (allocated, stripped) = count(&request(), strip);
    assert_eq!(
        allocated, 0,
        "stripping 1,000 requests allocated {allocated} times"
    );
    assert_eq!(stripped, request());

    for (case, extra) in [
        ("with Content-Length", ("content-length", "18431")),
        ("chunked", ("transfer-encoding", "chunked")),
    ] {
        let response = response(&[extra]);
        let (allocated, stripped) = count(&response, strip);
        assert_eq!(
            allocated, 0,
            "stripping 1,000 responses ({case}) allocated {allocated} times"
        );
        let mut expected = response;
        expected.remove("connection");
        expected.remove("transfer-encoding");
        assert_eq!(stripped, expected, "{case}");
    }
}

#[test]
fn appending_the_first_forwarded_for_allocates_nothing() {
    let client = forwarded_for(IpAddr::V4(Ipv4Addr::new(10, 42, 0, 7)));
    let (allocated, appended) = count(&request(), |h| append_forwarded_for(h, &client));
    assert_eq!(
        allocated, 0,
        "appending X-Forwarded-For to 1,000 requests allocated {allocated} times"
    );
    assert_eq!(appended[X_FORWARDED_FOR], "10.42.0.7");
}

/// Behind Mastodon's nginx every inbound request already carries `X-Forwarded-For`: extending
/// it costs the new list and nothing else.
#[test]
fn extending_an_existing_forwarded_for_allocates_the_list_only() {
    let client = forwarded_for(IpAddr::V4(Ipv4Addr::new(10, 42, 0, 7)));
    let mut behind_nginx = request();
    behind_nginx.append(X_FORWARDED_FOR, "203.0.113.9".parse().unwrap());
    behind_nginx.append("x-real-ip", "203.0.113.9".parse().unwrap());
    let (allocated, appended) = count(&behind_nginx, |h| append_forwarded_for(h, &client));
    assert_eq!(
        allocated, 1_000,
        "extending X-Forwarded-For on 1,000 requests allocated {allocated} times"
    );
    assert_eq!(appended[X_FORWARDED_FOR], "203.0.113.9, 10.42.0.7");
}
