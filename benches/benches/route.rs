//! The route stage over a config of 50 routes: finding the service by authority, then the first
//! of its routes that matches.
//!
//! Run with `cargo bench -p herd-benches --bench route`. The snapshot is built the way the proxy
//! builds it (`Snapshot::build` from a parsed config): 10 HTTP services with 4 authorities each,
//! one of them (`web`, a Mastodon web pod) with 50 routes tried in order. `lookup` measures the
//! authority lookup alone (an authority already normalized, and one that needs normalizing);
//! `select` measures choosing a route among the 50: the first route, an early one, the last one
//! (49 routes fail first) and none (all 50 fail, the fallback route); `request` is both, as a
//! request pays them. `proxy/tests/allocations.rs` checks that none of this allocates.

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use herd_proxy::metrics::Metrics;
use herd_proxy::snapshot::{Registry, Snapshot};

/// The services besides `web`; each has no routes of its own.
const SERVICES: [&str; 9] = [
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

/// Mastodon's API namespaces, each a route of `web` for reads (`GET`, `HEAD`).
const API_READS: [&str; 45] = [
    "timelines",
    "accounts",
    "statuses",
    "notifications",
    "conversations",
    "lists",
    "follow_requests",
    "blocks",
    "mutes",
    "domain_blocks",
    "favourites",
    "bookmarks",
    "filters",
    "reports",
    "endorsements",
    "featured_tags",
    "followed_tags",
    "tags",
    "polls",
    "scheduled_statuses",
    "markers",
    "announcements",
    "custom_emojis",
    "instance",
    "trends",
    "directory",
    "preferences",
    "push",
    "apps",
    "emails",
    "admin",
    "suggestions",
    "profile",
    "annual_reports",
    "async_refreshes",
    "terms_of_service",
    "domain_allows",
    "peers",
    "activity",
    "rules",
    "extended_description",
    "translation_languages",
    "languages",
    "privacy_policy",
    "search",
];

/// The mesh file: `web` has 3 specific routes, 45 API read routes, `/health` and v2 search.
fn config_text() -> String {
    let mut yaml = String::from("services:\n");
    for (i, name) in std::iter::once("web").chain(SERVICES).enumerate() {
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
             - { name: media-upload-v2, match: { pathPrefix: /api/v2/media, methods: [POST] }, timeout: 120s }\n      \
             - { name: media-upload, match: { pathPrefix: /api/v1/media, methods: [POST] }, timeout: 120s }\n      \
             - { name: streaming, match: { pathPrefix: /api/v1/streaming }, timeout: 0s }\n",
        );
        for resource in API_READS {
            yaml.push_str(&format!(
                "      - {{ name: api-{resource}, match: {{ pathPrefix: /api/v1/{resource}, methods: [GET, HEAD] }}, timeout: 15s }}\n"
            ));
        }
        yaml.push_str(
            "      - { name: health, match: { path: /health } }\n      \
             - { name: search, match: { pathPrefix: /api/v2/search, methods: [GET, HEAD] } }\n",
        );
    }
    yaml
}

fn route(c: &mut Criterion) {
    // Building a snapshot makes a DNS resolver and balancers, which expect a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let config = herd_config::parse(&config_text(), "bench.yaml").expect("bench config");
    let mut registry = Registry::new(&config, Metrics::new());
    let snapshot = Snapshot::build(1, PathBuf::from("bench.yaml"), config, &mut registry);
    let table = &snapshot.routes;
    let web = table.lookup("web").expect("web");
    assert_eq!(web.routes.len(), 50);

    // `Method` by its `FromStr`: this crate does not depend on `http` itself.
    let get = "GET".parse().expect("method");
    let post = "POST".parse().expect("method");
    let cases = [
        ("first", &post, "/api/v2/media", "media-upload-v2"),
        ("early", &get, "/api/v1/timelines/home", "api-timelines"),
        ("last", &get, "/api/v2/search", "search"),
        ("none", &get, "/@alice/109876543210", "default"),
    ];
    for (_, method, path, expected) in &cases {
        assert_eq!(&*web.route(method, path).name, *expected, "{path}");
    }

    let mut group = c.benchmark_group("route");
    for (name, authority) in [
        ("lookup/normalized", "web.mastodon.svc.cluster.local"),
        ("lookup/to-normalize", "Web.Mastodon.svc.cluster.local.:80"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| std::hint::black_box(table.lookup(std::hint::black_box(authority)).is_ok()))
        });
    }
    for (name, method, path, _) in &cases {
        group.bench_function(format!("select/{name}"), |b| {
            b.iter(|| {
                let route = web.route(method, std::hint::black_box(path));
                std::hint::black_box(&route.name);
            })
        });
    }
    for (name, method, path, _) in [&cases[1], &cases[2]] {
        group.bench_function(format!("request/{name}"), |b| {
            b.iter(|| {
                let service = table
                    .lookup(std::hint::black_box("web.mastodon.svc.cluster.local:3000"))
                    .expect("web");
                let route = service.route(method, std::hint::black_box(path));
                std::hint::black_box(&route.name);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, route);
criterion_main!(benches);
