//! One test per rule: the exact one-line message, which pins line, column and field path.

use std::time::Duration;

use crate::{Config, ConfigError, Protocol, ProxySettings, ServiceLimits, parse};

#[track_caller]
pub(super) fn ok(yaml: &str) -> Config {
    parse(yaml, "mesh.yaml").unwrap_or_else(|e| panic!("{e}"))
}

#[track_caller]
pub(super) fn fails(yaml: &str, expected: &str) -> ConfigError {
    let err = parse(yaml, "mesh.yaml").expect_err("should be refused");
    assert_eq!(err.to_string(), expected);
    err
}

/// A service list with one opaque and one HTTP service, to append a broken one to.
const TWO: &str = "services:
  - name: web
    authorities: [web.local]
    endpoints: [127.0.0.1:3000]
  - name: redis
    protocol: opaque
    listen: 127.0.0.1:16379
    endpoints: [127.0.0.1:6379]
";

#[test]
fn max_connections_is_at_least_one() {
    fails(
        "proxy:\n  inbound:\n    listen: 127.0.0.1:4143\n    app: 127.0.0.1:3000\n    maxConnections: 0\n",
        "mesh.yaml:5:21: proxy.inbound.maxConnections: must be at least 1, found 0",
    );
    let config = ok("proxy:\n  outbound: { listen: 127.0.0.1:4140, maxConnections: 1 }\n");
    assert_eq!(config.proxy.outbound.unwrap().downstream.max_connections, 1);
}

#[test]
fn max_header_bytes_is_bounded() {
    fails(
        "proxy:\n  outbound: { listen: 127.0.0.1:4140, maxHeaderBytes: 8191 }\n",
        "mesh.yaml:2:55: proxy.outbound.maxHeaderBytes: must be between 8192 and 1048576, found 8191",
    );
    fails(
        "proxy:\n  outbound:\n    listen: 127.0.0.1:4140\n    maxHeaderBytes: 1048577\n",
        "mesh.yaml:4:21: proxy.outbound.maxHeaderBytes: must be between 8192 and 1048576, found 1048577",
    );
    ok("proxy:\n  outbound: { listen: 127.0.0.1:4140, maxHeaderBytes: 8192 }\n");
    ok("proxy:\n  outbound: { listen: 127.0.0.1:4140, maxHeaderBytes: 1048576 }\n");
}

#[test]
fn timeouts_that_cannot_be_none_must_be_positive() {
    let inbound = "proxy:\n  inbound:\n    listen: 127.0.0.1:4143\n    app: 127.0.0.1:3000\n";
    for (key, column) in [
        ("headerTimeout", 20),
        ("detectTimeout", 20),
        ("connectTimeout", 21),
        ("idleTimeout", 18),
    ] {
        fails(
            &format!("{inbound}    {key}: 0s\n"),
            &format!("mesh.yaml:5:{column}: proxy.inbound.{key}: must be more than 0s"),
        );
    }
    fails(
        &format!("{TWO}    limits:\n      connectTimeout: 0ms\n"),
        "mesh.yaml:10:23: services[1].limits.connectTimeout: must be more than 0s",
    );
}

#[test]
fn zero_means_no_timeout_where_allowed() {
    let config = ok("proxy:
  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:3000, timeout: 0s }
  drainTimeout: 0s
services:
  - name: streaming
    endpoints: [127.0.0.1:4000]
    routes: [{ match: { pathPrefix: /api/v1/streaming }, timeout: 0s }]
");
    assert_eq!(config.proxy.inbound.unwrap().timeout, Duration::ZERO);
    assert_eq!(config.proxy.drain_timeout, Duration::ZERO);
    assert_eq!(config.services[0].routes[0].timeout, Duration::ZERO);
}

#[test]
fn a_services_tunnel_idle_timeout_overrides_the_proxys_and_zero_is_never() {
    let config = ok("proxy:
  tunnelIdleTimeout: 10m
services:
  - { name: web, endpoints: [127.0.0.1:1] }
  - { name: redis, protocol: opaque, endpoints: [127.0.0.1:2], limits: { tunnelIdleTimeout: 0s } }
  - { name: streaming, endpoints: [127.0.0.1:3], limits: { tunnelIdleTimeout: 2h } }
");
    let proxy = &config.proxy;
    assert_eq!(proxy.tunnel_idle(), Some(Duration::from_secs(600)));
    let idle = |i: usize| config.services[i].limits.tunnel_idle(proxy);
    assert_eq!(idle(0), Some(Duration::from_secs(600)));
    assert_eq!(idle(1), None);
    assert_eq!(idle(2), Some(Duration::from_secs(7200)));

    let never = ok("proxy:\n  tunnelIdleTimeout: 0s\n");
    assert_eq!(never.proxy.tunnel_idle(), None);
    assert_eq!(
        ServiceLimits::default().tunnel_idle(&never.proxy),
        None,
        "a service without its own follows the proxy's"
    );
    assert_eq!(
        ServiceLimits::default().tunnel_idle(&ProxySettings::default()),
        Some(Duration::from_secs(3600))
    );
}

#[test]
fn a_tunnel_idle_timeout_without_a_unit_is_refused_where_it_is_written() {
    fails(
        "proxy:\n  tunnelIdleTimeout: 60\n",
        "mesh.yaml:2:22: proxy.tunnelIdleTimeout: duration `60` has no unit: add one, e.g. `60s` or `60ms`",
    );
    fails(
        "services:\n  - name: a\n    endpoints: [127.0.0.1:1]\n    limits: { tunnelIdleTimeout: 1 }\n",
        "mesh.yaml:4:34: services[0].limits.tunnelIdleTimeout: duration `1` has no unit: add one, e.g. `1s` or `1ms`",
    );
}

#[test]
fn service_names_are_dns_labels_joined_by_dots() {
    let rule = "use DNS labels joined by `.` (`web`, `web.mastodon`), each 1 to 63 lowercase \
                letters, digits and `-` starting and ending with a letter or digit, 253 \
                characters in all";
    let long_label = format!("web.{}", "a".repeat(64));
    let long_name = vec!["a".repeat(63); 4].join(".");
    for bad in [
        "Web",
        "-web",
        "web-",
        "web_app",
        "web.",
        ".web",
        "web..mastodon",
        "web.Mastodon",
        "web.-x",
        "\"\"",
        &long_label,
        &long_name,
    ] {
        let shown = bad.trim_matches('"');
        fails(
            &format!("services:\n  - name: {bad}\n    endpoints: [127.0.0.1:1]\n"),
            &format!("mesh.yaml:2:11: services[0].name: invalid service name `{shown}`: {rule}"),
        );
    }
    // What the Kubernetes source names a Service (`NAME.NAMESPACE`) or one of its ports.
    let longest = [
        &"a".repeat(63),
        "b".repeat(63).as_str(),
        &"c".repeat(63),
        &"d".repeat(61),
    ]
    .join(".");
    assert_eq!(longest.len(), 253);
    for good in [
        "a",
        "123",
        "web-canary-2",
        &"a".repeat(63),
        "web.mastodon",
        "web.mastodon.http",
        &longest,
    ] {
        ok(&format!(
            "services:\n  - name: {good}\n    endpoints: [127.0.0.1:1]\n"
        ));
    }
}

#[test]
fn service_names_are_unique() {
    fails(
        &format!("{TWO}  - name: web\n    endpoints: [127.0.0.1:3001]\n"),
        "mesh.yaml:9:11: services[2].name: service name `web` is already used by services[0] (line 2)",
    );
}

#[test]
fn authorities_must_parse() {
    fails(
        "services:\n  - name: web\n    authorities: [web.local, \"web local\"]\n    endpoints: [127.0.0.1:1]\n",
        "mesh.yaml:3:30: services[0].authorities[1]: invalid authority `web local`: expected host or host:port",
    );
    fails(
        "services:\n  - name: web\n    authorities:\n      - web.local:99999\n    endpoints: [127.0.0.1:1]\n",
        "mesh.yaml:4:9: services[0].authorities[0]: invalid authority `web.local:99999`: expected host or host:port",
    );
}

#[test]
fn authorities_are_unique_across_services_after_normalization() {
    fails(
        "services:
  - name: web
    authorities: [Web.Local.]
    endpoints: [127.0.0.1:3000]
  - name: canary
    authorities:
      - other.local
      - web.local:80
    endpoints: [127.0.0.1:3001]
",
        "mesh.yaml:8:9: services[1].authorities[1]: authority `web.local:80` (normalized \
         `web.local`) is already claimed by service `web` at services[0].authorities[0] (line 3)",
    );
    fails(
        "services:\n  - name: web\n    authorities: [web.local, WEB.LOCAL]\n    endpoints: [127.0.0.1:1]\n",
        "mesh.yaml:3:30: services[0].authorities[1]: authority `WEB.LOCAL` (normalized `web.local`) \
         is already claimed by this service at services[0].authorities[0] (line 3)",
    );
    // A different port is a different authority.
    let config = ok("services:
  - { name: a, authorities: [web.local], endpoints: [127.0.0.1:1] }
  - { name: b, authorities: [web.local:3000], endpoints: [127.0.0.1:2] }
");
    assert_eq!(config.services[1].authorities[0].as_str(), "web.local:3000");
}

#[test]
fn endpoints_are_at_least_one_and_connectable() {
    fails(
        "services:\n  - name: web\n    endpoints: []\n",
        "mesh.yaml:3:16: services[0].endpoints: at least one endpoint is required",
    );
    fails(
        "services:\n  - name: web\n    endpoints:\n      - 127.0.0.1:3000\n      - 127.0.0.1:0\n",
        "mesh.yaml:5:9: services[0].endpoints[1]: cannot connect to port 0 (`127.0.0.1:0`)",
    );
    fails(
        "proxy:\n  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:4143 }\n",
        "mesh.yaml:2:43: proxy.inbound.app: 127.0.0.1:4143 is proxy.inbound.listen (127.0.0.1:4143): \
         every request would loop back into the proxy",
    );
    fails(
        "proxy:\n  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:0 }\n",
        "mesh.yaml:2:43: proxy.inbound.app: cannot connect to port 0 (`127.0.0.1:0`)",
    );
}

#[test]
fn listen_is_for_opaque_services_only() {
    fails(
        "services:\n  - name: web\n    endpoints: [127.0.0.1:3000]\n    listen: 127.0.0.1:8080\n",
        "mesh.yaml:4:13: services[0].listen: `listen` is only allowed on opaque services, and this \
         one is `http`: HTTP services are reached through the outbound listener, by authority",
    );
    fails(
        "services:\n  - { name: grpc, protocol: http2, listen: 127.0.0.1:8080, endpoints: [127.0.0.1:1] }\n",
        "mesh.yaml:2:44: services[0].listen: `listen` is only allowed on opaque services, and this \
         one is `http2`: HTTP services are reached through the outbound listener, by authority",
    );
    let config = ok(TWO);
    assert_eq!(config.services[1].protocol, Protocol::Opaque);
    assert_eq!(
        config.services[1].listen,
        Some("127.0.0.1:16379".parse().unwrap())
    );
}

#[test]
fn routes_are_for_http_services_only() {
    fails(
        &format!("{TWO}    routes:\n      - timeout: 5s\n"),
        "mesh.yaml:10:7: services[1].routes: `routes` are only allowed on http and http2 services: \
         an opaque service has no requests to route",
    );
    fails(
        "services:\n  - { name: db, protocol: opaque, endpoints: [127.0.0.1:5432], routes: [{}] }\n",
        "mesh.yaml:2:72: services[0].routes: `routes` are only allowed on http and http2 services: \
         an opaque service has no requests to route",
    );
    ok(&format!("{TWO}    routes: []\n"));
}

#[test]
fn route_names_are_unique_within_a_service() {
    let service = "services:\n  - name: web\n    endpoints: [127.0.0.1:3000]\n    routes:\n";
    fails(
        &format!("{service}      - name: api\n      - name: api\n"),
        "mesh.yaml:6:15: services[0].routes[1].name: route name `api` is already used by services[0].routes[0]",
    );
    // An explicit name may not take the default name of another position.
    fails(
        &format!("{service}      - name: routes[1]\n      - {{}}\n"),
        "mesh.yaml:5:15: services[0].routes[0].name: route name `routes[1]` is reserved for an \
         unnamed route at that position",
    );
    let config = ok(&format!("{service}      - {{}}\n      - name: routes[1]\n"));
    assert_eq!(config.services[0].routes[1].name, "routes[1]");
    fails(
        &format!("{service}      - name: default\n"),
        "mesh.yaml:5:15: services[0].routes[0].name: route name `default` is reserved for requests that match no route",
    );
    fails(
        &format!("{service}      - name: \"\"\n"),
        "mesh.yaml:5:15: services[0].routes[0].name: route name is empty",
    );
    // The same name in two services is fine: metrics label both.
    ok("services:
  - { name: a, endpoints: [127.0.0.1:1], routes: [{ name: api }] }
  - { name: b, endpoints: [127.0.0.1:2], routes: [{ name: api }] }
");
}

#[test]
fn match_paths_start_with_a_slash() {
    let service = "services:\n  - name: web\n    endpoints: [127.0.0.1:3000]\n    routes:\n";
    fails(
        &format!("{service}      - match: {{ path: health }}\n"),
        "mesh.yaml:5:24: services[0].routes[0].match.path: path `health` must start with `/`",
    );
    fails(
        &format!("{service}      - match:\n          pathPrefix: api/v1\n"),
        "mesh.yaml:6:23: services[0].routes[0].match.pathPrefix: path `api/v1` must start with `/`",
    );
    fails(
        &format!("{service}      - match: {{ path: \"/search?q=x\" }}\n"),
        "mesh.yaml:5:24: services[0].routes[0].match.path: path `/search?q=x` must not contain '?': \
         only the path is matched, not the query",
    );
}

#[test]
fn methods_are_tokens_in_upper_case() {
    let service = "services:\n  - name: web\n    endpoints: [127.0.0.1:3000]\n    routes:\n";
    fails(
        &format!("{service}      - match: {{ methods: [GET, \"PO ST\"] }}\n"),
        "mesh.yaml:5:33: services[0].routes[0].match.methods[1]: invalid HTTP method `PO ST`",
    );
    let config = ok(&format!(
        "{service}      - match: {{ methods: [get, Post, GET, PROPFIND] }}\n"
    ));
    assert_eq!(
        config.services[0].routes[0].matches.methods,
        ["GET", "POST", "PROPFIND"]
    );
}

#[test]
fn listeners_do_not_share_an_address() {
    fails(
        "proxy:
  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:3000 }
  outbound: { listen: 127.0.0.1:4143 }
",
        "mesh.yaml:3:23: proxy.outbound.listen: 127.0.0.1:4143 is already used by proxy.inbound.listen",
    );
    fails(
        &format!("proxy:\n  admin: {{ listen: 127.0.0.1:16379 }}\n{TWO}"),
        "mesh.yaml:9:13: services[1].listen: 127.0.0.1:16379 is already used by proxy.admin.listen",
    );
    fails(
        &format!(
            "{TWO}  - {{ name: cache, protocol: opaque, listen: 127.0.0.1:16379, endpoints: [127.0.0.1:1] }}\n"
        ),
        "mesh.yaml:9:46: services[2].listen: 127.0.0.1:16379 is already used by services[1].listen",
    );
}

#[test]
fn the_default_admin_address_counts() {
    // A service on the admin port, with `admin` left out: the error is at the service.
    fails(
        "services:\n  - { name: db, protocol: opaque, listen: 127.0.0.1:4191, endpoints: [127.0.0.1:1] }\n",
        "mesh.yaml:2:43: services[0].listen: 127.0.0.1:4191 is already used by proxy.admin.listen (its default)",
    );
    // The inbound listener comes first, but the default is not in the file: point at inbound.
    fails(
        "proxy:\n  inbound: { listen: 127.0.0.1:4191, app: 127.0.0.1:3000 }\n",
        "mesh.yaml:2:22: proxy.inbound.listen: 127.0.0.1:4191 is already used by proxy.admin.listen (its default)",
    );
}

#[test]
fn a_wildcard_covers_the_same_port() {
    fails(
        "proxy:
  inbound: { listen: 0.0.0.0:4143, app: 127.0.0.1:3000 }
  outbound: { listen: 127.0.0.1:4143 }
",
        "mesh.yaml:3:23: proxy.outbound.listen: 127.0.0.1:4143 overlaps proxy.inbound.listen \
         (0.0.0.0:4143): same port, and a wildcard address covers the other",
    );
    fails(
        "proxy:
  inbound: { listen: 0.0.0.0:4143, app: 127.0.0.1:3000 }
  outbound: { listen: \"[::]:4143\" }
",
        "mesh.yaml:3:23: proxy.outbound.listen: [::]:4143 overlaps proxy.inbound.listen \
         (0.0.0.0:4143): same port, and a wildcard address covers the other",
    );
    // Different addresses, or different families without a wildcard, do not clash.
    ok("proxy:
  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:3000 }
  outbound: { listen: \"[::1]:4143\" }
  admin: { listen: 127.0.0.2:4143 }
");
}

#[test]
fn port_zero_never_clashes() {
    // Tests bind every listener to port 0 and let the kernel choose.
    let config = ok("proxy:
  inbound: { listen: 127.0.0.1:0, app: 127.0.0.1:3000 }
  outbound: { listen: 127.0.0.1:0 }
  admin: { listen: 127.0.0.1:0 }
services:
  - { name: db, protocol: opaque, listen: 127.0.0.1:0, endpoints: [127.0.0.1:5432] }
");
    assert_eq!(config.proxy.admin.listen.port(), 0);
}

#[test]
fn transparent_listeners_and_an_optional_app() {
    let config = ok("proxy:
  inbound: { listen: \"[::]:4143\", transparent: true }
  outbound: { listen: 127.0.0.1:4140, transparent: true }
");
    let inbound = config.proxy.inbound.unwrap();
    assert_eq!((inbound.app, inbound.transparent), (None, true));
    assert!(config.proxy.outbound.unwrap().transparent);
    // Off unless asked for.
    let config = ok(
        "proxy:\n  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:3000 }\n  outbound: { listen: 127.0.0.1:4140 }\n",
    );
    assert!(!config.proxy.inbound.unwrap().transparent);
    assert!(!config.proxy.outbound.unwrap().transparent);
    fails(
        "proxy:\n  inbound: { listen: 127.0.0.1:4143, transparent: false }\n",
        "mesh.yaml:2:12: proxy.inbound: missing required key `app` (optional only with \
         `transparent: true`, where connections go to their original destination)",
    );
    fails(
        "proxy:\n  outbound:\n    listen: 127.0.0.1:4140\n    transparent: yes\n",
        "mesh.yaml:4:18: proxy.outbound.transparent: expected true or false, found `yes`",
    );
}

#[test]
fn cluster_ips_are_connectable_and_claimed_once() {
    let config = ok("services:
  - name: web
    endpoints: [127.0.0.1:3000]
    clusterIps: [10.96.0.10:80, \"[fd00:10:96::a]:80\"]
  - name: redis
    protocol: opaque
    endpoints: [127.0.0.1:6379]
    clusterIps: [10.96.0.11:6379]
");
    assert_eq!(config.services[0].cluster_ips.len(), 2);
    fails(
        "services:
  - name: web
    endpoints: [127.0.0.1:3000]
    clusterIps: [10.96.0.10:80]
  - name: api
    endpoints: [127.0.0.1:3001]
    clusterIps: [10.96.0.11:80, 10.96.0.10:80]
",
        "mesh.yaml:7:33: services[1].clusterIps[1]: 10.96.0.10:80 is already claimed by service \
         `web` at services[0].clusterIps[0] (line 4)",
    );
    fails(
        "services:\n  - name: web\n    endpoints: [127.0.0.1:3000]\n    clusterIps: [10.96.0.10:80, 10.96.0.10:80]\n",
        "mesh.yaml:4:33: services[0].clusterIps[1]: 10.96.0.10:80 is already claimed by this \
         service at services[0].clusterIps[0] (line 4)",
    );
    fails(
        "services:\n  - name: web\n    endpoints: [127.0.0.1:3000]\n    clusterIps: [10.96.0.10:0]\n",
        "mesh.yaml:4:18: services[0].clusterIps[0]: cannot connect to port 0 (`10.96.0.10:0`)",
    );
    fails(
        "services:\n  - name: web\n    endpoints: [127.0.0.1:3000]\n    clusterIps: [0.0.0.0:80]\n",
        "mesh.yaml:4:18: services[0].clusterIps[0]: 0.0.0.0:80: no client connects to the \
         unspecified address",
    );
    fails(
        "services:\n  - name: web\n    endpoints: [127.0.0.1:3000]\n    clusterIps: [10.96.0.10]\n",
        "mesh.yaml:4:18: services[0].clusterIps[0]: invalid socket address `10.96.0.10`: expected \
         ip:port, e.g. 127.0.0.1:4143 or \"[::1]:4143\"",
    );
}
