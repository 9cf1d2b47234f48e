//! The cost of recording one request's metrics, as the request path does it: the request count,
//! the response's status, the latency and the duration histograms, on handles resolved when the
//! route was installed; plaintext, and over mutual TLS (the response counted under the peer's
//! identity).
//!
//! Run with `cargo bench -p herd-benches --bench metrics`.

use criterion::{Criterion, criterion_group, criterion_main};
use herd_identity::SpiffeId;
use herd_proxy::listen::Direction;
use herd_proxy::metrics::{Metrics, TlsPeer};

fn record(c: &mut Criterion) {
    let metrics = Metrics::new();
    let route = metrics.route(Direction::Outbound, "web", "api");
    // The first response of a status resolves its series; the request path then reuses it.
    route.response(200, TlsPeer::Plaintext);
    c.bench_function("record one request", |b| {
        b.iter(|| {
            route.requests.inc();
            route.response(std::hint::black_box(200), TlsPeer::Plaintext);
            route.latency.observe(std::hint::black_box(0.012));
            route.duration.observe(std::hint::black_box(0.015));
        })
    });
    // Over mutual TLS: the response's series is the endpoint identity's, found in the route's
    // short list of identities (here the second of three).
    let ids: Vec<SpiffeId> = ["web", "web-canary", "streaming"]
        .iter()
        .map(|sa| {
            format!("spiffe://cluster.local/ns/mastodon/sa/{sa}")
                .parse()
                .expect("a SPIFFE ID")
        })
        .collect();
    for id in &ids {
        route.response(200, TlsPeer::Server(id));
    }
    let peer = TlsPeer::Server(&ids[1]);
    c.bench_function("record one request over mutual TLS", |b| {
        b.iter(|| {
            route.requests.inc();
            route.response(std::hint::black_box(200), std::hint::black_box(peer));
            route.latency.observe(std::hint::black_box(0.012));
            route.duration.observe(std::hint::black_box(0.015));
        })
    });
}

criterion_group!(benches, record);
criterion_main!(benches);
