use herd_api::discovery::{EndpointsUpdate, RoutingUpdate};
use prost::Message;

use std::time::Duration;

use super::*;

fn mesh(text: &str) -> Vec<Service> {
    herd_config::parse_mesh(text, "mesh.yaml", None)
        .unwrap()
        .services
}

fn web(endpoints: &str) -> Vec<Service> {
    mesh(&format!(
        "services:\n  - name: web\n    authorities: [web]\n    endpoints: [{endpoints}]\n  - name: api\n    authorities: [api]\n"
    ))
}

fn decode(encoded: &Encoded) -> EndpointsUpdate {
    EndpointsUpdate::decode(encoded.0.clone()).unwrap()
}

#[test]
fn routing_carries_services_without_endpoints_and_is_named_by_content() {
    let mut index = Index::new();
    let rx = index.routing();
    assert_eq!(rx.borrow().version, "", "no state before the sources speak");
    index.apply_mesh(&web("10.0.0.1:3000"));
    let first = index.current_routing();
    assert!(!first.version.is_empty());
    let update = RoutingUpdate::decode(first.update.0.clone()).unwrap();
    assert_eq!(update.version, first.version);
    let back = herd_config::parse_mesh(&update.mesh, "control", None)
        .unwrap()
        .services;
    assert_eq!(back.len(), 2);
    assert!(
        back[0].endpoints.is_empty(),
        "endpoints travel on their own streams"
    );

    // Another replica reading the same sources names the same state the same.
    let mut other = Index::new();
    other.apply_mesh(&web("10.0.0.1:3000"));
    assert_eq!(other.current_routing().version, first.version);

    // Endpoints alone changing leaves routing alone.
    let mut rx = index.routing();
    rx.mark_unchanged();
    index.apply_mesh(&web("10.0.0.2:3000"));
    assert!(!rx.has_changed().unwrap());
    assert_eq!(index.current_routing().version, first.version);
}

#[test]
fn a_new_subscriber_gets_the_full_set_then_deltas() {
    let mut index = Index::new();
    let others: Vec<String> = (10..20).map(|i| format!("10.0.0.{i}:3000")).collect();
    let others = others.join(", ");
    index.apply_mesh(&web(&format!("10.0.0.1:3000, 10.0.0.2:3000, {others}")));
    let mut rx = index.watch_endpoints("web");
    let v1 = rx.borrow_and_update().clone();
    let sent = v1.catch_up("");
    assert_eq!(sent.len(), 1);
    let full = decode(&sent[0]);
    assert_eq!(full.base_version, "");
    assert_eq!(full.endpoints.len(), 12);
    assert!(full.endpoints.iter().all(|e| e.ready && e.weight == 1));

    index.apply_mesh(&web(&format!(
        "10.0.0.2:3000, {{address: 10.0.0.3:3000, weight: 5}}, {others}"
    )));
    assert!(rx.has_changed().unwrap());
    let v2 = rx.borrow_and_update().clone();
    let sent = v2.catch_up(&v1.version);
    assert_eq!(sent.len(), 1);
    let delta = decode(&sent[0]);
    assert_eq!(delta.base_version, v1.version);
    assert_eq!(delta.version, v2.version);
    assert_eq!(delta.removed, ["10.0.0.1:3000"]);
    assert_eq!(delta.endpoints.len(), 1);
    assert_eq!(delta.endpoints[0].address, "10.0.0.3:3000");
    assert_eq!(delta.endpoints[0].weight, 5);
    assert!(
        v2.catch_up(&v2.version).is_empty(),
        "a current subscriber gets nothing"
    );

    // For a set of two, a delta is no smaller than the whole: the whole is sent.
    index.apply_mesh(&web("10.0.0.1:3000, 10.0.0.2:3000"));
    let v3 = rx.borrow_and_update().clone();
    index.apply_mesh(&web("10.0.0.2:3000, 10.0.0.3:3000"));
    let v4 = rx.borrow_and_update().clone();
    assert_eq!(decode(&v4.catch_up(&v3.version)[0]).base_version, "");
}

#[test]
fn a_subscriber_behind_gets_the_missed_deltas_or_the_full_set() {
    let mut index = Index::new();
    let addrs: Vec<String> = (1..=40).map(|i| format!("10.0.0.{i}:3000")).collect();
    index.apply_mesh(&web(&addrs.join(", ")));
    let rx = index.watch_endpoints("web");
    let start = rx.borrow().version.clone();
    // Three single-endpoint changes: three small deltas beat one full set of 40.
    for i in 41..=43 {
        let mut more = addrs.clone();
        more.extend((41..=i).map(|j| format!("10.0.0.{j}:3000")));
        index.apply_mesh(&web(&more.join(", ")));
    }
    let now = rx.borrow().clone();
    let sent = now.catch_up(&start);
    assert_eq!(sent.len(), 3);
    let last = decode(sent.last().unwrap());
    assert_eq!(last.version, now.version);
    // A version the log never saw (another replica's, or too old): the full set.
    let sent = now.catch_up("0123456789abcdef");
    assert_eq!(sent.len(), 1);
    assert_eq!(decode(&sent[0]).endpoints.len(), 43);
    // Past the log's length, the start is forgotten.
    for i in 0..DELTA_LOG {
        index.apply_mesh(&web(&format!("10.0.1.{i}:3000")));
    }
    let now = rx.borrow().clone();
    assert_eq!(decode(&now.catch_up(&start)[0]).base_version, "");
}

#[test]
fn a_slow_subscriber_skips_to_the_latest_state() {
    let mut index = Index::new();
    index.apply_mesh(&web("10.0.0.1:3000"));
    let mut rx = index.watch_endpoints("web");
    let seen = rx.borrow_and_update().version.clone();
    for i in 2..=50 {
        index.apply_mesh(&web(&format!("10.0.0.{i}:3000")));
    }
    // One pending change, whatever happened meanwhile; it reads the latest.
    assert!(rx.has_changed().unwrap());
    let now = rx.borrow_and_update().clone();
    assert_eq!(now.endpoints.keys().collect::<Vec<_>>(), ["10.0.0.50:3000"]);
    assert!(!rx.has_changed().unwrap());
    let sent = now.catch_up(&seen);
    assert_eq!(
        sent.len(),
        1,
        "the full set: the log no longer reaches back"
    );
}

#[test]
fn unknown_services_are_followed_until_they_appear_and_forgotten_when_unwatched() {
    let mut index = Index::new();
    index.apply_mesh(&web("10.0.0.1:3000"));
    let mut rx = index.watch_endpoints("search");
    assert!(rx.borrow_and_update().unknown);
    index.apply_mesh(&mesh(
        "services:\n  - name: search\n    authorities: [search]\n    endpoints: [10.0.0.9:80]\n",
    ));
    assert!(rx.has_changed().unwrap());
    let set = rx.borrow_and_update().clone();
    assert!(!set.unknown);
    assert_eq!(set.endpoints.len(), 1);
    // web left the mesh: its watchers hear it is unknown, with no endpoints.
    let mut web_rx = index.watch_endpoints("web");
    assert!(web_rx.borrow_and_update().unknown);
    assert!(web_rx.borrow().endpoints.is_empty());

    // Thousands of made-up names cost nothing once their watchers go.
    let before = index.sets();
    for i in 0..5000 {
        drop(index.watch_endpoints(&format!("nope-{i}")));
    }
    index.apply_mesh(&mesh("services: []\n"));
    assert!(index.sets() <= before, "{} sets left", index.sets());
    drop((rx, web_rx));
    index.apply_mesh(&mesh("services: []\n"));
    assert_eq!(index.sets(), 0);
}

#[test]
fn a_changed_identity_is_a_changed_endpoint() {
    let others: Vec<String> = (10..20).map(|i| format!("10.0.0.{i}:3000")).collect();
    let others = others.join(", ");
    let web_sa = "spiffe://cluster.local/ns/mastodon/sa/web";
    let with = |identity: &str| {
        web(&format!(
            "{{address: 10.0.0.1:3000, identity: \"{identity}\"}}, {others}"
        ))
    };
    let mut index = Index::new();
    index.apply_mesh(&with(web_sa));
    let mut rx = index.watch_endpoints("web");
    let v1 = rx.borrow_and_update().clone();
    let full = decode(&v1.catch_up("")[0]);
    let (meshed, plain): (Vec<_>, Vec<_>) = full
        .endpoints
        .iter()
        .partition(|e| e.address == "10.0.0.1:3000");
    assert!(meshed[0].meshed, "an endpoint with an identity is meshed");
    assert_eq!(meshed[0].identity, web_sa);
    assert!(
        plain.iter().all(|e| !e.meshed && e.identity.is_empty()),
        "the others are outside the mesh"
    );

    // Same address, same weight, another account: a delta carrying the entry whole.
    let sidekiq = "spiffe://cluster.local/ns/mastodon/sa/sidekiq";
    index.apply_mesh(&with(sidekiq));
    assert!(rx.has_changed().unwrap());
    let v2 = rx.borrow_and_update().clone();
    assert_ne!(v2.version, v1.version, "the version names the identity too");
    let delta = decode(&v2.catch_up(&v1.version)[0]);
    assert_eq!(delta.base_version, v1.version);
    assert!(delta.removed.is_empty());
    assert_eq!(delta.endpoints.len(), 1);
    assert_eq!(delta.endpoints[0].identity, sidekiq);

    // Leaving the mesh is a change as well.
    index.apply_mesh(&web(&format!("10.0.0.1:3000, {others}")));
    let v3 = rx.borrow_and_update().clone();
    let delta = decode(&v3.catch_up(&v2.version)[0]);
    assert_eq!(delta.endpoints.len(), 1);
    assert!(!delta.endpoints[0].meshed && delta.endpoints[0].identity.is_empty());
}

#[test]
fn unchanged_endpoints_are_not_republished() {
    let mut index = Index::new();
    index.apply_mesh(&web("10.0.0.1:3000"));
    let mut rx = index.watch_endpoints("web");
    rx.mark_unchanged();
    index.apply_mesh(&web("10.0.0.1:3000"));
    assert!(!rx.has_changed().unwrap());
}

/// A discovered service with `authorities` and ready endpoints at `addresses`.
fn found(name: &str, authorities: &[&str], addresses: &[&str]) -> Discovered {
    let listed = authorities.join(", ");
    let service = mesh(&format!(
        "services:\n  - name: {name}\n    authorities: [{listed}]\n"
    ))
    .remove(0);
    let endpoints = addresses
        .iter()
        .map(|a| {
            let endpoint = Endpoint {
                address: (*a).to_owned(),
                weight: 1,
                ready: true,
                ..Endpoint::default()
            };
            ((*a).to_owned(), endpoint)
        })
        .collect();
    Discovered { service, endpoints }
}

fn both() -> Index {
    Index::with_sources(Sources {
        mesh: true,
        kubernetes: true,
    })
}

/// The routing document as the proxy reads it (with the proxy's own validation).
fn routed(index: &Index) -> Vec<Service> {
    herd_config::parse_mesh(&index.current_routing().mesh, "control", None)
        .unwrap()
        .services
}

fn names(authorities: &[herd_config::Authority]) -> Vec<&str> {
    authorities.iter().map(|a| a.as_str()).collect()
}

#[test]
fn nothing_is_published_until_every_source_has_spoken() {
    let mut index = both();
    index.apply_mesh(&web("10.0.0.1:3000"));
    assert_eq!(
        index.current_routing().version,
        "",
        "the cluster is unheard"
    );
    assert!(index.watch_endpoints("web").borrow().unknown);

    index.apply_discovered(vec![found(
        "web.mastodon",
        &["web.mastodon", "web.mastodon:3000"],
        &["198.18.0.2:3000"],
    )]);
    let services = routed(&index);
    assert_eq!(
        services.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        ["web", "api", "web.mastodon"]
    );
    assert_eq!(
        names(&services[2].authorities),
        ["web.mastodon", "web.mastodon:3000"]
    );
    let set = index.watch_endpoints("web.mastodon").borrow().clone();
    assert!(!set.unknown);
    assert_eq!(
        set.endpoints.keys().collect::<Vec<_>>(),
        ["198.18.0.2:3000"]
    );

    // Without mesh files, the cluster alone is the mesh.
    let mut alone = Index::with_sources(Sources {
        mesh: false,
        kubernetes: true,
    });
    alone.apply_discovered(Vec::new());
    assert!(!alone.current_routing().version.is_empty());
    assert_eq!(alone.current_routing().services, 0);
}

#[test]
fn a_mesh_file_gives_a_discovered_service_its_routes_and_the_cluster_its_endpoints() {
    let mut index = both();
    let file = mesh(
        "services:
  - name: web.mastodon
    authorities: [mastodon.example]
    limits: { connectTimeout: 2s }
    routes:
      - match: { pathPrefix: /api/ }
        retry: { attempts: 2, conditions: [502] }
",
    );
    index.apply_mesh(&file);
    index.apply_discovered(vec![found(
        "web.mastodon",
        &["web.mastodon", "web.mastodon:3000"],
        &["198.18.0.2:3000", "198.18.0.6:3000"],
    )]);
    let services = routed(&index);
    assert_eq!(services.len(), 1);
    let web = &services[0];
    assert_eq!(web.name, "web.mastodon");
    assert_eq!(
        names(&web.authorities),
        ["mastodon.example", "web.mastodon", "web.mastodon:3000"]
    );
    assert_eq!(web.routes, file[0].routes);
    assert_eq!(web.limits.connect_timeout, Duration::from_secs(2));
    let set = index.watch_endpoints("web.mastodon").borrow().clone();
    assert_eq!(set.endpoints.len(), 2);

    // Endpoints moving leaves routing alone; the set follows.
    let before = index.current_routing().version.clone();
    let mut rx = index.watch_endpoints("web.mastodon");
    rx.mark_unchanged();
    index.apply_discovered(vec![found(
        "web.mastodon",
        &["web.mastodon", "web.mastodon:3000"],
        &["198.18.0.2:3000"],
    )]);
    assert_eq!(index.current_routing().version, before);
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow().endpoints.len(), 1);

    // The file entry going leaves the discovered service with its defaults.
    index.apply_mesh(&[]);
    let services = routed(&index);
    assert!(services[0].routes.is_empty());
    assert_eq!(
        names(&services[0].authorities),
        ["web.mastodon", "web.mastodon:3000"]
    );
}

#[test]
fn a_mesh_file_entry_with_its_own_endpoints_replaces_the_discovered_one() {
    let mut index = both();
    index.apply_mesh(&mesh(
        "services:\n  - name: web.mastodon\n    authorities: [pinned]\n    endpoints: [10.0.0.9:3000]\n",
    ));
    index.apply_discovered(vec![found(
        "web.mastodon",
        &["web.mastodon"],
        &["198.18.0.2:3000"],
    )]);
    let services = routed(&index);
    assert_eq!(services.len(), 1);
    assert_eq!(names(&services[0].authorities), ["pinned"]);
    let set = index.watch_endpoints("web.mastodon").borrow().clone();
    assert_eq!(set.endpoints.keys().collect::<Vec<_>>(), ["10.0.0.9:3000"]);
}

#[test]
fn an_authority_claimed_twice_goes_to_the_mesh_file_or_to_no_discovered_service() {
    let mut index = both();
    index.apply_mesh(&mesh(
        "services:\n  - name: search\n    authorities: [search]\n    endpoints: [10.0.0.9:80]\n",
    ));
    index.apply_discovered(vec![
        // `web` is a Service in two namespaces: a bare `web` means either.
        found(
            "web.mastodon",
            &["web", "web.mastodon"],
            &["198.18.0.2:3000"],
        ),
        found("web.other", &["web", "web.other"], &["198.18.0.6:3000"]),
        found("search.mastodon", &["search", "search.mastodon"], &[]),
    ]);
    // Valid for the proxy (no authority twice), with every service still reachable by its
    // namespaced names.
    let services = routed(&index);
    let by_name = |name: &str| {
        let s = services.iter().find(|s| s.name == name).unwrap();
        names(&s.authorities).join(" ")
    };
    assert_eq!(by_name("search"), "search");
    assert_eq!(by_name("search.mastodon"), "search.mastodon");
    assert_eq!(by_name("web.mastodon"), "web.mastodon");
    assert_eq!(by_name("web.other"), "web.other");

    // One of them gone, the other gets the bare name.
    index.apply_discovered(vec![found(
        "web.mastodon",
        &["web", "web.mastodon"],
        &["198.18.0.2:3000"],
    )]);
    let services = routed(&index);
    assert_eq!(names(&services[1].authorities), ["web", "web.mastodon"]);
    assert!(
        index.watch_endpoints("web.other").borrow().unknown,
        "a Service gone is unknown to its watchers"
    );
}

#[test]
fn cluster_ips_reach_the_proxies_each_claimed_by_one_service() {
    let mut index = both();
    index.apply_mesh(&mesh(
        "services:
  - name: web.mastodon
    clusterIps: [10.96.0.20:3000]
  - name: cache
    protocol: opaque
    clusterIps: [10.96.0.30:6379]
    endpoints: [10.0.0.9:6379]
",
    ));
    let with_ips = |name: &str, ips: &[&str]| {
        let mut found = found(name, &[name], &["198.18.0.2:3000"]);
        found.service.cluster_ips = ips.iter().map(|ip| ip.parse().unwrap()).collect();
        found
    };
    index.apply_discovered(vec![
        // Shaped by the file: the file's address first, then the cluster's.
        with_ips("web.mastodon", &["10.96.0.10:3000", "[fd00:10:96::a]:3000"]),
        // Caught mid-change: an address the file gives another service.
        with_ips("redis.mastodon", &["10.96.0.30:6379", "10.96.0.31:6379"]),
    ]);
    // The proxy's own validation accepts it: no address claimed twice.
    let services = routed(&index);
    let ips = |name: &str| {
        let s = services.iter().find(|s| s.name == name).unwrap();
        s.cluster_ips
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ips("web.mastodon"),
        ["10.96.0.20:3000", "10.96.0.10:3000", "[fd00:10:96::a]:3000"]
    );
    assert_eq!(ips("cache"), ["10.96.0.30:6379"]);
    assert_eq!(ips("redis.mastodon"), ["10.96.0.31:6379"]);
}

#[test]
fn routing_leaves_out_settings_at_their_defaults_and_means_the_same() {
    let services = mesh(
        "services:\n  - name: web\n    authorities: [web]\n    endpoints: [10.0.0.1:3000]\n    limits:\n      connectTimeout: 2s\n    routes:\n      - match: {pathPrefix: /api}\n        timeout: 5s\n  - name: api\n    authorities: [api]\n    protocol: http2\n  - name: db\n    protocol: opaque\n    listen: 127.0.0.1:5432\n    endpoints: [10.0.0.2:5432]\n",
    );
    let mut index = Index::new();
    index.apply_mesh(&services);
    let document = index.current_routing().mesh.clone();
    let value: serde_json::Value = serde_json::from_str(&document).unwrap();
    let api = &value["services"][1];
    assert_eq!(
        api.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["authorities", "name", "protocol"],
        "{document}"
    );
    assert_eq!(value["services"][0]["limits"]["connectTimeout"], "2s");
    assert!(!document.contains('\n'), "compact: {document}");
    let back = herd_config::parse_mesh(&document, "control", None)
        .unwrap()
        .services;
    let without_endpoints: Vec<Service> = services
        .iter()
        .map(|s| Service {
            endpoints: Vec::new(),
            ..s.clone()
        })
        .collect();
    assert_eq!(back, without_endpoints);
}
