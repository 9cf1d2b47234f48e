//! The cost of recording one request's metrics, as the request path does it: the request count,
//! the response's status, the latency and the duration histograms, on handles resolved when the
//! route was installed.
//!
//! Run with `cargo bench -p herd-benches --bench metrics`.

use criterion::{Criterion, criterion_group, criterion_main};
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
}

criterion_group!(benches, record);
criterion_main!(benches);
