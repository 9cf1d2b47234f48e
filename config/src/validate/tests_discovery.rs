//! Where a service's endpoints come from: `endpoints` (with weights) or `dns`, and
//! `proxy.resolver`. One test per rule, pinning the whole line.

use std::time::Duration;

use super::tests::{fails, ok};
use crate::{DnsDiscovery, WeightedEndpoint};

fn web(rest: &str) -> String {
    format!("services:\n  - name: web\n{rest}")
}

#[test]
fn endpoints_take_an_address_or_a_mapping_with_a_weight() {
    let config = ok(&web("    endpoints:
      - 10.0.1.5:3000
      - { address: 10.0.1.6:3000, weight: 3 }
      - address: \"[fe80::1]:3000\"
        weight: 10000
      - { address: 10.0.1.7:3000 }
"));
    let weights: Vec<(String, u32)> = config.services[0]
        .endpoints
        .iter()
        .map(|e| (e.address.to_string(), e.weight))
        .collect();
    assert_eq!(
        weights,
        [
            ("10.0.1.5:3000".to_owned(), 1),
            ("10.0.1.6:3000".to_owned(), 3),
            ("[fe80::1]:3000".to_owned(), 10_000),
            ("10.0.1.7:3000".to_owned(), WeightedEndpoint::DEFAULT_WEIGHT),
        ]
    );
    assert_eq!(config.services[0].dns, None);
}

#[test]
fn weights_are_between_one_and_ten_thousand() {
    fails(
        &web("    endpoints:\n      - 10.0.0.1:1\n      - { address: 10.0.0.2:1, weight: 0 }\n"),
        "mesh.yaml:5:40: services[0].endpoints[1].weight: must be between 1 and 10000, found 0",
    );
    fails(
        &web("    endpoints:\n      - address: 10.0.0.1:1\n        weight: 10001\n"),
        "mesh.yaml:5:17: services[0].endpoints[0].weight: must be between 1 and 10000, found 10001",
    );
    fails(
        &web("    endpoints:\n      - { address: 10.0.0.1:1, weight: 1.5 }\n"),
        "mesh.yaml:4:40: services[0].endpoints[0].weight: expected a whole number, found `1.5`",
    );
}

#[test]
fn the_endpoint_mapping_is_checked_like_any_other() {
    fails(
        &web("    endpoints:\n      - { address: 10.0.0.2:1, weigth: 3 }\n"),
        "mesh.yaml:4:32: services[0].endpoints[0].weigth: unknown key `weigth` (did you mean \
         `weight`?); allowed: address, weight, identity",
    );
    fails(
        &web("    endpoints:\n      - 10.0.0.1:1\n      - { weight: 3 }\n"),
        "mesh.yaml:5:11: services[0].endpoints[1]: missing required key `address`",
    );
    fails(
        &web("    endpoints:\n      - address: nope\n"),
        "mesh.yaml:4:18: services[0].endpoints[0].address: invalid socket address `nope`: \
         expected ip:port, e.g. 127.0.0.1:4143 or \"[::1]:4143\"",
    );
    fails(
        &web("    endpoints:\n      - { address: 127.0.0.1:0, weight: 2 }\n"),
        "mesh.yaml:4:20: services[0].endpoints[0].address: cannot connect to port 0 (`127.0.0.1:0`)",
    );
    fails(
        &web("    endpoints:\n      - 3000\n"),
        "mesh.yaml:4:9: services[0].endpoints[0]: invalid socket address `3000`: expected \
         ip:port, e.g. 127.0.0.1:4143 or \"[::1]:4143\"",
    );
    fails(
        &web("    endpoints:\n      - [10.0.0.1:1]\n"),
        "mesh.yaml:4:9: services[0].endpoints[0]: expected a single value or a mapping, found a list",
    );
    fails(
        &web("    endpoints:\n      -\n"),
        "mesh.yaml:4:8: services[0].endpoints[0]: value is empty",
    );
}

#[test]
fn a_meshed_endpoint_names_the_workload_identity_it_must_present() {
    let config = ok(&web("    endpoints:
      - 10.0.1.5:3000
      - { address: 10.0.1.6:3000, identity: spiffe://cluster.local/ns/mastodon/sa/web }
      - address: 10.0.1.7:3000
        weight: 2
        identity: spiffe://home.lab/ns/db/sa/postgres
"));
    let identities: Vec<Option<&str>> = config.services[0]
        .endpoints
        .iter()
        .map(|e| e.identity.as_deref())
        .collect();
    assert_eq!(
        identities,
        [
            None,
            Some("spiffe://cluster.local/ns/mastodon/sa/web"),
            Some("spiffe://home.lab/ns/db/sa/postgres"),
        ]
    );
    assert_eq!(config.services[0].endpoints[2].weight, 2);
}

#[test]
fn an_endpoint_identity_is_a_workload_spiffe_id() {
    let rule = |identity: &str, column: u32, message: &str| {
        fails(
            &web(&format!(
                "    endpoints:\n      - {{ address: 10.0.0.1:1, identity: \"{identity}\" }}\n"
            )),
            &format!("mesh.yaml:4:{column}: services[0].endpoints[0].identity: {message}"),
        );
    };
    rule(
        "spiffe://cluster.local",
        42,
        "`spiffe://cluster.local` is not a workload identity: expected \
         spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT",
    );
    rule(
        "spiffe://cluster.local/ns/mastodon",
        42,
        "`spiffe://cluster.local/ns/mastodon` is not a workload identity: expected \
         spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT",
    );
    rule(
        "https://cluster.local/ns/a/sa/b",
        42,
        "invalid SPIFFE ID `https://cluster.local/ns/a/sa/b`: a SPIFFE ID starts with `spiffe://`",
    );
    rule(
        "spiffe://Cluster.local/ns/a/sa/b",
        42,
        "invalid SPIFFE ID `spiffe://Cluster.local/ns/a/sa/b`: the trust domain has 'C': only \
         lower-case letters, digits, `.`, `-` and `_` are allowed",
    );
    rule(
        "spiffe://cluster.local/ns/a/sa/b/",
        42,
        "invalid SPIFFE ID `spiffe://cluster.local/ns/a/sa/b/`: the path has an empty segment \
         (`//` or a trailing `/`)",
    );
    // A scalar of another type is read as its text, and refused as an ID like any other.
    fails(
        &web("    endpoints:\n      - { address: 10.0.0.1:1, identity: 3 }\n"),
        "mesh.yaml:4:42: services[0].endpoints[0].identity: invalid SPIFFE ID `3`: a SPIFFE ID \
         starts with `spiffe://`",
    );
}

#[test]
fn an_endpoint_is_listed_once() {
    fails(
        &web("    endpoints:\n      - 10.0.0.1:1\n      - { address: 10.0.0.1:1, weight: 3 }\n"),
        "mesh.yaml:5:20: services[0].endpoints[1].address: 10.0.0.1:1 is already listed as \
         services[0].endpoints[0]",
    );
    fails(
        &web("    endpoints: [\"[::1]:80\", 10.0.0.1:1, \"[0:0::1]:80\"]\n"),
        "mesh.yaml:3:41: services[0].endpoints[2]: [::1]:80 is already listed as \
         services[0].endpoints[0]",
    );
    // The same address in two services is two pools.
    ok("services:
  - { name: a, endpoints: [10.0.0.1:1] }
  - { name: b, endpoints: [10.0.0.1:1] }
");
}

#[test]
fn endpoints_or_dns_exactly_one() {
    fails(
        &web(""),
        "mesh.yaml:2:5: services[0]: missing required key `endpoints` (or `dns`, to discover \
         them by DNS)",
    );
    fails(
        "services:\n  - { name: a, endpoints: [10.0.0.1:1] }\n  - { name: web }\n",
        "mesh.yaml:3:5: services[1]: missing required key `endpoints` (or `dns`, to discover \
         them by DNS)",
    );
    fails(
        &web("    endpoints: [10.0.0.1:1]\n    dns: web.local:80\n"),
        "mesh.yaml:4:10: services[0].dns: `dns` and `endpoints` (line 3) cannot both be given: \
         list the endpoints, or discover them by DNS",
    );
}

#[test]
fn dns_takes_name_colon_port_with_ttl_defaults() {
    let config = ok(&web("    dns: web.mastodon.svc.cluster.local:3000\n"));
    let service = &config.services[0];
    assert!(service.endpoints.is_empty());
    assert_eq!(
        service.dns,
        Some(DnsDiscovery {
            name: "web.mastodon.svc.cluster.local".into(),
            port: 3000,
            min_ttl: Duration::from_secs(1),
            max_ttl: Duration::from_secs(60),
        })
    );
    let config = ok(&web(
        "    dns: { name: Web-1.local.:65535, minTtl: 5s, maxTtl: 5s }\n",
    ));
    let dns = config.services[0].dns.as_ref().unwrap();
    assert_eq!((dns.name.as_str(), dns.port), ("Web-1.local.", 65535));
    assert_eq!(
        (dns.min_ttl, dns.max_ttl),
        (Duration::from_secs(5), Duration::from_secs(5))
    );
    // A one-label name is a name: the search domains of resolv.conf complete it.
    let config = ok("services:\n  - { name: db, protocol: opaque, dns: \"postgres:5432\" }\n");
    assert_eq!(config.services[0].dns.as_ref().unwrap().name, "postgres");
}

#[test]
fn refresh_is_the_ttl_clamped() {
    let dns = DnsDiscovery {
        name: "web.local".into(),
        port: 80,
        min_ttl: Duration::from_secs(1),
        max_ttl: Duration::from_secs(60),
    };
    assert_eq!(dns.refresh_after(Duration::ZERO), Duration::from_secs(1));
    assert_eq!(
        dns.refresh_after(Duration::from_secs(30)),
        Duration::from_secs(30)
    );
    assert_eq!(
        dns.refresh_after(Duration::from_secs(86_400)),
        Duration::from_secs(60)
    );
}

#[test]
fn dns_names_are_names_with_a_port() {
    let rule = |name: &str, column: u32, message: &str| {
        fails(
            &web(&format!("    dns: \"{name}\"\n")),
            &format!("mesh.yaml:3:{column}: services[0].dns: {message}"),
        );
    };
    rule(
        "web.local",
        10,
        "`web.local` has no port: expected NAME:PORT, e.g. web.mastodon.svc.cluster.local:3000",
    );
    rule(
        "web.local:0",
        10,
        "invalid port `0` in `web.local:0`: expected 1 to 65535, e.g. \
         web.mastodon.svc.cluster.local:3000",
    );
    rule(
        "web.local:65536",
        10,
        "invalid port `65536` in `web.local:65536`: expected 1 to 65535, e.g. \
         web.mastodon.svc.cluster.local:3000",
    );
    rule(
        "web.local:http",
        10,
        "invalid port `http` in `web.local:http`: expected 1 to 65535, e.g. \
         web.mastodon.svc.cluster.local:3000",
    );
    rule(
        "web_app.local:80",
        10,
        "invalid DNS name `web_app.local`: use only letters, digits, `-` and `.`",
    );
    rule(
        "web..local:80",
        10,
        "invalid DNS name `web..local`: a label is empty (two dots in a row, or a leading dot)",
    );
    rule(".:80", 10, "invalid DNS name `.`: the name is empty");
    rule(":80", 10, "invalid DNS name ``: the name is empty");
    let long_label = "a".repeat(64);
    rule(
        &format!("{long_label}.local:80"),
        10,
        &format!("invalid DNS name `{long_label}.local`: a label is longer than 63 characters"),
    );
    let long_name = vec!["a".repeat(63); 4].join("."); // 255 characters
    rule(
        &format!("{long_name}:80"),
        10,
        &format!("invalid DNS name `{long_name}`: longer than 253 characters"),
    );
    let longest = format!("{}.{}", vec!["a".repeat(63); 3].join("."), "a".repeat(61)); // 253
    ok(&web(&format!("    dns: {longest}.:80\n")));
}

#[test]
fn an_ip_address_is_not_a_dns_name() {
    for (written, ip) in [
        ("10.0.1.5:3000", "10.0.1.5"),
        ("\"[fe80::1]:3000\"", "[fe80::1]"),
        ("\"fe80::1:3000\"", "fe80::1"),
    ] {
        fails(
            &web(&format!("    dns: {written}\n")),
            &format!(
                "mesh.yaml:3:10: services[0].dns: `{ip}` is an IP address, not a DNS name: list \
                 it under `endpoints` instead"
            ),
        );
    }
    fails(
        &web("    dns:\n      name: 10.0.1.5:3000\n"),
        "mesh.yaml:4:13: services[0].dns.name: `10.0.1.5` is an IP address, not a DNS name: \
         list it under `endpoints` instead",
    );
}

#[test]
fn dns_ttls_are_positive_and_in_order() {
    fails(
        &web("    dns: { name: web.local:80, minTtl: 0s }\n"),
        "mesh.yaml:3:40: services[0].dns.minTtl: must be more than 0s",
    );
    fails(
        &web("    dns: { name: web.local:80, minTtl: 2m }\n"),
        "mesh.yaml:3:40: services[0].dns.minTtl: must be at most maxTtl (1m, its default), found 2m",
    );
    fails(
        &web("    dns: { name: web.local:80, maxTtl: 500ms }\n"),
        "mesh.yaml:3:40: services[0].dns.maxTtl: must be at least minTtl (1s, its default), \
         found 500ms",
    );
    fails(
        &web("    dns:\n      name: web.local:80\n      minTtl: 10s\n      maxTtl: 5s\n"),
        "mesh.yaml:6:15: services[0].dns.maxTtl: must be at least minTtl (10s), found 5s",
    );
    fails(
        &web("    dns: { nam: web.local:80 }\n"),
        "mesh.yaml:3:12: services[0].dns.nam: unknown key `nam` (did you mean `name`?); \
         allowed: name, minTtl, maxTtl",
    );
    fails(
        &web("    dns:\n      minTtl: 1s\n"),
        "mesh.yaml:4:7: services[0].dns: missing required key `name`",
    );
}

#[test]
fn opaque_services_use_dns_and_weights_too() {
    let config = ok("services:
  - name: redis
    protocol: opaque
    listen: 127.0.0.1:16379
    dns: redis.mastodon.svc.cluster.local:6379
  - name: postgres
    protocol: opaque
    listen: 127.0.0.1:16432
    endpoints: [{ address: 10.0.0.1:6432, weight: 2 }, 10.0.0.2:6432]
");
    assert_eq!(config.services[0].dns.as_ref().unwrap().port, 6379);
    assert_eq!(config.services[1].endpoints[0].weight, 2);
}

#[test]
fn nameservers_are_addresses_listed_once() {
    let config = ok("proxy:\n  resolver: { nameservers: [127.0.0.1:5353, \"[::1]:53\"] }\n");
    assert_eq!(
        config.proxy.resolver.nameservers,
        [
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert!(
        ok("proxy:\n  resolver: {}\n")
            .proxy
            .resolver
            .nameservers
            .is_empty()
    );
    fails(
        "proxy:\n  resolver: { nameservers: [127.0.0.1:53, 127.0.0.1:53] }\n",
        "mesh.yaml:2:43: proxy.resolver.nameservers[1]: 127.0.0.1:53 is already listed as \
         proxy.resolver.nameservers[0]",
    );
    fails(
        "proxy:\n  resolver:\n    nameservers:\n      - 10.43.0.10\n",
        "mesh.yaml:4:9: proxy.resolver.nameservers[0]: invalid socket address `10.43.0.10`: \
         expected ip:port, e.g. 127.0.0.1:4143 or \"[::1]:4143\"",
    );
    fails(
        "proxy:\n  resolver: { nameservers: [127.0.0.1:0] }\n",
        "mesh.yaml:2:29: proxy.resolver.nameservers[0]: cannot connect to port 0 (`127.0.0.1:0`)",
    );
    fails(
        "proxy:\n  resolver: { servers: [] }\n",
        "mesh.yaml:2:15: proxy.resolver.servers: unknown key `servers`; allowed: nameservers",
    );
}
