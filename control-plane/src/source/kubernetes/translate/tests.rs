use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Service as KubeService};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{Value, json};

use super::*;

fn service(spec: Value) -> KubeService {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "web", "namespace": "mastodon" },
        "spec": spec,
    }))
    .unwrap()
}

fn slice(name: &str, ports: Value, endpoints: Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "mastodon",
            "labels": { SERVICE_NAME_LABEL: "web" },
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }))
    .unwrap()
}

fn run(service: &KubeService, slices: &[EndpointSlice]) -> Translated {
    run_with(service, slices, &BTreeMap::new())
}

fn run_with(
    service: &KubeService,
    slices: &[EndpointSlice],
    pods: &BTreeMap<PodKey, PodInfo>,
) -> Translated {
    let slices: Vec<&EndpointSlice> = slices.iter().collect();
    let context = Context {
        domain: "cluster.local",
        trust_domain: "home.lab",
        pods,
    };
    translate(service, &slices, &context)
}

fn pod(spec: Value, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "p", "namespace": "mastodon", "annotations": annotations },
        "spec": spec,
    }))
    .unwrap()
}

#[test]
fn a_pod_is_meshed_by_the_inject_annotation_or_a_herd_proxy_container() {
    let app = json!({ "name": "puma", "image": "mastodon" });
    let proxy = json!({ "name": "herd-proxy", "image": "herd" });
    let cases = [
        // (spec, annotations, meshed, service account)
        (
            json!({ "containers": [app, proxy], "serviceAccountName": "web" }),
            json!({}),
            true,
            "web",
        ),
        (
            json!({ "containers": [app], "initContainers": [
                { "name": "herd-proxy", "image": "herd", "restartPolicy": "Always" }] }),
            json!({}),
            true,
            "default",
        ),
        (
            json!({ "containers": [app], "serviceAccount": "old" }),
            json!({ "herd.io/inject": "enabled" }),
            true,
            "old",
        ),
        (
            json!({ "containers": [app], "serviceAccountName": "web" }),
            json!({ "herd.io/inject": "disabled" }),
            false,
            "web",
        ),
        (
            json!({ "containers": [app, { "name": "proxy", "image": "herd" }] }),
            json!({}),
            false,
            "default",
        ),
    ];
    for (spec, annotations, meshed, account) in cases {
        let info = PodInfo::of(&pod(spec.clone(), annotations));
        assert_eq!(
            info,
            PodInfo {
                meshed,
                service_account: account.to_owned()
            },
            "{spec}"
        );
    }
}

#[test]
fn an_endpoint_of_a_meshed_pod_carries_its_service_accounts_identity() {
    let web = service(json!({ "ports": [{ "name": "http", "port": 3000 }] }));
    let slices = [slice(
        "web-1",
        json!([{ "name": "http", "port": 3000 }]),
        json!([
            { "addresses": ["198.18.0.2"], "targetRef": { "kind": "Pod", "name": "web-0" } },
            { "addresses": ["198.18.0.3"], "targetRef": { "kind": "Pod", "name": "plain-0" } },
            { "addresses": ["198.18.0.4"], "targetRef": { "kind": "Pod", "name": "unseen-0" } },
            { "addresses": ["198.18.0.5"] },
            { "addresses": ["198.18.0.6"],
              "targetRef": { "kind": "Pod", "namespace": "other", "name": "web-0" } },
        ]),
    )];
    let info = |meshed: bool, sa: &str| PodInfo {
        meshed,
        service_account: sa.to_owned(),
    };
    let pods = BTreeMap::from([
        (
            ("mastodon".to_owned(), "web-0".to_owned()),
            info(true, "web"),
        ),
        (
            ("mastodon".to_owned(), "plain-0".to_owned()),
            info(false, "web"),
        ),
        (("other".to_owned(), "web-0".to_owned()), info(true, "api")),
    ]);
    let out = run_with(&web, &slices, &pods);
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    let identities: Vec<(&str, bool, &str)> = out.discovered[0]
        .endpoints
        .values()
        .map(|e| (e.address.as_str(), e.meshed, e.identity.as_str()))
        .collect();
    assert_eq!(
        identities,
        [
            (
                "198.18.0.2:3000",
                true,
                "spiffe://home.lab/ns/mastodon/sa/web"
            ),
            ("198.18.0.3:3000", false, ""),
            ("198.18.0.4:3000", false, ""),
            ("198.18.0.5:3000", false, ""),
            ("198.18.0.6:3000", true, "spiffe://home.lab/ns/other/sa/api"),
        ]
    );

    // Without the Pods, the same slices give no identity at all.
    let out = run(&web, &slices);
    assert!(
        out.discovered[0]
            .endpoints
            .values()
            .all(|e| !e.meshed && e.identity.is_empty())
    );
}

#[test]
fn an_account_that_makes_no_spiffe_id_is_said_and_not_meshed() {
    let web = service(json!({ "ports": [{ "name": "http", "port": 3000 }] }));
    let slices = [slice(
        "web-1",
        json!([{ "name": "http", "port": 3000 }]),
        json!([{ "addresses": ["198.18.0.2"], "targetRef": { "kind": "Pod", "name": "web-0" } }]),
    )];
    let pods = BTreeMap::from([(
        ("mastodon".to_owned(), "web-0".to_owned()),
        PodInfo {
            meshed: true,
            service_account: "a/b".to_owned(),
        },
    )]);
    let out = run_with(&web, &slices, &pods);
    let endpoint = &out.discovered[0].endpoints["198.18.0.2:3000"];
    assert!(!endpoint.meshed && endpoint.identity.is_empty());
    assert_eq!(out.skipped.len(), 1);
    assert!(
        out.skipped[0].starts_with("Pod mastodon/web-0: service account `a/b` makes no identity"),
        "{:?}",
        out.skipped
    );
}

fn authorities(found: &Discovered) -> Vec<&str> {
    found
        .service
        .authorities
        .iter()
        .map(Authority::as_str)
        .collect()
}

#[test]
fn a_one_port_service_is_name_dot_namespace_with_every_authority_kubernetes_dns_gives_it() {
    let web = service(json!({
        "clusterIP": "10.96.0.10",
        "clusterIPs": ["10.96.0.10", "fd00:10:96::a"],
        "ports": [{ "name": "http", "port": 3000, "targetPort": 3000 }],
    }));
    let out = run(
        &web,
        &[slice(
            "web-1",
            json!([{ "name": "http", "port": 3000 }]),
            json!([{ "addresses": ["198.18.0.2"], "zone": "a",
                     "targetRef": { "kind": "Pod", "name": "web-0" } }]),
        )],
    );
    assert!(out.skipped.is_empty(), "{:?}", out.skipped);
    let [found] = &out.discovered[..] else {
        panic!("{:?}", out.discovered)
    };
    assert_eq!(found.service.name, "web.mastodon");
    assert_eq!(found.service.protocol, Protocol::Http);
    assert_eq!(
        authorities(found),
        [
            "web:3000",
            "web",
            "web.mastodon:3000",
            "web.mastodon",
            "web.mastodon.svc:3000",
            "web.mastodon.svc",
            "web.mastodon.svc.cluster.local:3000",
            "web.mastodon.svc.cluster.local",
        ]
    );
    assert_eq!(
        found.service.cluster_ips,
        [
            "10.96.0.10:3000".parse::<SocketAddr>().unwrap(),
            "[fd00:10:96::a]:3000".parse().unwrap()
        ]
    );
    let endpoint = &found.endpoints["198.18.0.2:3000"];
    assert!(endpoint.ready && !endpoint.terminating);
    assert_eq!(endpoint.zone, "a");
    assert_eq!(endpoint.pod, "mastodon/web-0");
    assert_eq!(endpoint.weight, 1);
}

#[test]
fn each_port_of_a_multi_port_service_is_a_service_named_by_its_port() {
    let web = service(json!({
        "ports": [
            { "name": "http", "port": 3000 },
            { "name": "streaming", "port": 4000, "appProtocol": "kubernetes.io/ws" },
            { "name": "grpc", "port": 9000, "appProtocol": "kubernetes.io/h2c" },
            { "name": "metrics", "port": 80 },
            { "name": "dns", "port": 53, "protocol": "UDP" },
        ],
    }));
    let out = run(
        &web,
        &[slice(
            "web-1",
            json!([{ "name": "http", "port": 8080 }, { "name": "streaming", "port": 4001 }]),
            json!([{ "addresses": ["198.18.0.2"] }]),
        )],
    );
    let names: Vec<&str> = out
        .discovered
        .iter()
        .map(|d| d.service.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "web.mastodon.http",
            "web.mastodon.streaming",
            "web.mastodon.grpc",
            "web.mastodon.metrics",
        ],
        "UDP ports are not herd's"
    );
    // Each service's endpoints are on the slice port of the same name (the target port).
    assert_eq!(
        out.discovered[0].endpoints.keys().collect::<Vec<_>>(),
        ["198.18.0.2:8080"]
    );
    assert_eq!(
        out.discovered[1].endpoints.keys().collect::<Vec<_>>(),
        ["198.18.0.2:4001"]
    );
    assert!(out.discovered[2].endpoints.is_empty());
    assert_eq!(out.discovered[2].service.protocol, Protocol::Http2);
    // Port 80 is what a URL without a port means: it gets the authorities without one.
    assert!(
        authorities(&out.discovered[0])
            .iter()
            .all(|a| a.contains(':'))
    );
    assert!(authorities(&out.discovered[3]).contains(&"web.mastodon.svc.cluster.local"));
}

#[test]
fn app_protocol_and_well_known_ports_choose_the_protocol() {
    for (app, port, expected) in [
        (None, 3000, Protocol::Http),
        (Some("http"), 5432, Protocol::Http),
        (Some("HTTP"), 8080, Protocol::Http),
        (Some("kubernetes.io/ws"), 4000, Protocol::Http),
        (Some("kubernetes.io/h2c"), 8080, Protocol::Http2),
        (Some("h2c"), 8080, Protocol::Http2),
        (Some("http2"), 8080, Protocol::Http2),
        (Some("grpc"), 8080, Protocol::Http2),
        (Some("tcp"), 3000, Protocol::Opaque),
        (Some("https"), 443, Protocol::Opaque),
        (Some("kubernetes.io/wss"), 443, Protocol::Opaque),
        (Some("example.com/custom"), 80, Protocol::Opaque),
        (None, 5432, Protocol::Opaque),
        (None, 6432, Protocol::Opaque),
        (None, 6379, Protocol::Opaque),
    ] {
        assert_eq!(protocol(app, port), expected, "{app:?} on {port}");
    }
    // An opaque service has no authorities: nothing sends it a Host header.
    let redis = service(json!({ "ports": [{ "port": 6379 }] }));
    let out = run(&redis, &[]);
    assert_eq!(out.discovered[0].service.protocol, Protocol::Opaque);
    assert!(out.discovered[0].service.authorities.is_empty());
}

#[test]
fn endpoints_follow_their_slice_conditions_across_every_slice() {
    let web = service(json!({ "ports": [{ "name": "http", "port": 3000 }] }));
    let port = json!([{ "name": "http", "port": 3000 }]);
    let out = run(
        &web,
        &[
            slice(
                "web-1",
                port.clone(),
                json!([
                    { "addresses": ["198.18.0.2"], "conditions": { "ready": true } },
                    { "addresses": ["198.18.0.6"], "conditions": {} },
                    { "addresses": ["198.18.0.10"], "conditions": { "ready": false } },
                    { "addresses": ["198.18.0.14"],
                      "conditions": { "ready": false, "serving": true, "terminating": true } },
                    // Moving between slices: listed twice, the usable entry wins.
                    { "addresses": ["198.18.0.18"], "conditions": { "ready": false } },
                ]),
            ),
            slice(
                "web-2",
                port,
                json!([
                    { "addresses": ["198.18.0.18"], "conditions": { "ready": true } },
                    { "addresses": ["198.18.0.22"] },
                ]),
            ),
        ],
    );
    let endpoints = &out.discovered[0].endpoints;
    let state = |addr: &str| {
        let e = &endpoints[&format!("{addr}:3000")];
        (e.ready, e.terminating)
    };
    assert_eq!(endpoints.len(), 6);
    assert_eq!(state("198.18.0.2"), (true, false));
    assert_eq!(
        state("198.18.0.6"),
        (true, false),
        "unset ready means ready"
    );
    assert_eq!(state("198.18.0.10"), (false, false));
    assert_eq!(state("198.18.0.14"), (false, true));
    assert_eq!(state("198.18.0.18"), (true, false));
    assert_eq!(state("198.18.0.22"), (true, false), "no conditions: ready");
}

#[test]
fn what_herd_cannot_use_is_skipped_and_said() {
    let external = service(json!({ "type": "ExternalName", "externalName": "example.com" }));
    let out = run(&external, &[]);
    assert!(out.discovered.is_empty());
    assert_eq!(
        out.skipped,
        ["Service mastodon/web: type ExternalName (a DNS alias, no endpoints to balance); skipped"]
    );

    let no_ports = service(json!({ "clusterIP": "None" }));
    let out = run(&no_ports, &[]);
    assert!(out.discovered.is_empty());
    assert_eq!(out.skipped, ["Service mastodon/web: no ports; skipped"]);

    let udp = service(json!({ "ports": [{ "port": 53, "protocol": "UDP" }] }));
    let out = run(&udp, &[]);
    assert!(out.discovered.is_empty());
    assert!(out.skipped[0].contains("no TCP port"), "{:?}", out.skipped);

    // A headless Service is fine (no cluster IPs); a bad address or an FQDN slice is skipped
    // alone, and the rest of the Service stands.
    let headless = service(json!({ "clusterIP": "None", "ports": [{ "port": 3000 }] }));
    let mut fqdn = slice(
        "web-fqdn",
        json!([{ "port": 3000 }]),
        json!([{ "addresses": ["web.example"] }]),
    );
    fqdn.address_type = "FQDN".to_owned();
    let out = run(
        &headless,
        &[
            slice(
                "web-1",
                json!([{ "port": 3000 }]),
                json!([{ "addresses": ["198.18.0.2"] }, { "addresses": ["not-an-ip"] }]),
            ),
            fqdn,
        ],
    );
    let [found] = &out.discovered[..] else {
        panic!("{:?}", out.discovered)
    };
    assert!(found.service.cluster_ips.is_empty());
    assert_eq!(
        found.endpoints.keys().collect::<Vec<_>>(),
        ["198.18.0.2:3000"]
    );
    assert_eq!(
        out.skipped,
        [
            "EndpointSlice mastodon/web-1: address `not-an-ip` is not an IP address; skipped",
            "EndpointSlice mastodon/web-fqdn: addressType FQDN (herd balances over IP addresses); skipped",
        ]
    );
}

#[test]
fn every_discovered_service_passes_the_proxys_validation() {
    let web = service(json!({
        "ports": [
            { "name": "http", "port": 80 },
            { "name": "postgres", "port": 5432 },
            { "name": "grpc", "port": 9000, "appProtocol": "grpc" },
        ],
    }));
    let out = run(&web, &[]);
    let services: Vec<Service> = out.discovered.into_iter().map(|d| d.service).collect();
    let mesh = serde_json::to_string(&json!({ "services": services })).unwrap();
    let back = herd_config::parse_mesh(&mesh, "control", None)
        .unwrap()
        .services;
    assert_eq!(back, services);
}
