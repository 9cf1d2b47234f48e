//! Header rewriting as the request path does it: hop-by-hop headers stripped from a request and
//! its response, and the client's address appended to the request's `X-Forwarded-For`.
//!
//! Run with `cargo bench -p herd-benches --bench headers`. The request is a Mastodon API call
//! (11 headers, none hop-by-hop, no `X-Forwarded-For`); the response is what Puma answers behind
//! nginx (13 headers with `Connection: keep-alive`). The client's `X-Forwarded-For` value is made
//! once, as it is once per connection. Every iteration starts from a fresh copy of the same map,
//! made outside the timed part and sized as hyper sizes a parsed head. `request/rewrite` is the
//! whole request side (strip, then append). `request/append-to-existing` appends to a request
//! that already carries `X-Forwarded-For` (and `X-Real-IP`, `X-Forwarded-Proto`), as one
//! forwarded by nginx does: that path builds a new value, and allocates.
//! `proxy/tests/allocations.rs` checks that stripping both maps, and appending to a request
//! without `X-Forwarded-For`, allocate nothing.

use http::HeaderMap;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use herd_proxy::http::headers::{append_forwarded_for, forwarded_for, strip_hop_by_hop};

const REQUEST: [(&str, &str); 11] = [
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
        "_mastodon_session=Xk2Rz9%2FqP4vN7bLm1WcT8yH3jD6fQ0sA5eU%2BgK--a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6e7f8a9b0",
    ),
    ("x-csrf-token", "mQ3pZ8vR2kL7wN1xT5yB9cH4jF6gD0sA"),
    ("x-request-id", "5d0f3e5a-8b1c-4f7e-9a2d-6c3b1e0f4a7d"),
    ("content-type", "application/json"),
    ("content-length", "57"),
];

const RESPONSE: [(&str, &str); 13] = [
    ("date", "Tue, 14 Jan 2025 10:21:07 GMT"),
    ("content-type", "application/json; charset=utf-8"),
    ("content-length", "18431"),
    ("connection", "keep-alive"),
    ("vary", "Accept, Origin"),
    ("cache-control", "private, no-store"),
    ("etag", "W/\"9f1c2a7e5b3d4c8f0a6e1b2d3c4f5a6b\""),
    ("x-request-id", "5d0f3e5a-8b1c-4f7e-9a2d-6c3b1e0f4a7d"),
    ("x-runtime", "0.084213"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("referrer-policy", "same-origin"),
    (
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'; form-action 'none'",
    ),
];

/// A copy of `template` as hyper hands over a parsed HTTP/1 head: an empty map reserved for the
/// head's headers (`extend` reserves for them), then filled. A plain clone would not do: its
/// entries have no spare capacity, so adding `X-Forwarded-For` to it would reallocate, which a
/// parsed request of these 11 headers does not.
fn parsed(template: &HeaderMap) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.extend(template.clone());
    h
}

fn headers(c: &mut Criterion) {
    let mut request = HeaderMap::new();
    for (name, value) in REQUEST {
        request.append(name, value.parse().expect("header value"));
    }
    let mut response = HeaderMap::new();
    for (name, value) in RESPONSE {
        response.append(name, value.parse().expect("header value"));
    }
    // What Mastodon's nginx config adds to a request before passing it on.
    let mut forwarded = request.clone();
    for (name, value) in [
        ("x-real-ip", "203.0.113.7"),
        ("x-forwarded-for", "203.0.113.7"),
        ("x-forwarded-proto", "https"),
    ] {
        forwarded.append(name, value.parse().expect("header value"));
    }
    let client = forwarded_for(IpAddr::V4(Ipv4Addr::new(10, 42, 0, 7)));

    let mut group = c.benchmark_group("headers");
    group.bench_function("request/strip", |b| {
        b.iter_batched(
            || parsed(&request),
            |mut h| {
                strip_hop_by_hop(&mut h, false);
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("request/append", |b| {
        b.iter_batched(
            || parsed(&request),
            |mut h| {
                append_forwarded_for(&mut h, &client);
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("request/rewrite", |b| {
        b.iter_batched(
            || parsed(&request),
            |mut h| {
                strip_hop_by_hop(&mut h, false);
                append_forwarded_for(&mut h, &client);
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("request/append-to-existing", |b| {
        b.iter_batched(
            || parsed(&forwarded),
            |mut h| {
                append_forwarded_for(&mut h, &client);
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("response/strip", |b| {
        b.iter_batched(
            || parsed(&response),
            |mut h| {
                strip_hop_by_hop(&mut h, false);
                h
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, headers);
criterion_main!(benches);
