//! The public API end to end: defaults, the contract file, the examples, and the errors that
//! types and YAML syntax catch. Semantic rules are tested in `validate/tests.rs`.

use std::net::SocketAddr;
use std::time::Duration;

use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn auth(s: &str) -> Authority {
    Authority::parse(s).unwrap()
}

#[track_caller]
fn ok(yaml: &str) -> Config {
    parse(yaml, "mesh.yaml").unwrap_or_else(|e| panic!("{e}"))
}

/// Asserts the one-line message exactly: that pins file, line, column, path and wording.
#[track_caller]
fn fails(yaml: &str, expected: &str) -> ConfigError {
    let err = parse(yaml, "mesh.yaml").expect_err("should be refused");
    assert_eq!(err.to_string(), expected);
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    err
}

#[test]
fn an_empty_file_is_all_defaults() {
    for text in [
        "",
        "\n\n",
        "# nothing here\n",
        "---\n",
        "proxy:\nservices:\n",
    ] {
        assert_eq!(ok(text), Config::default(), "{text:?}");
    }
    let config = Config::default();
    assert_eq!(config.proxy.inbound, None);
    assert_eq!(config.proxy.outbound, None);
    assert_eq!(config.proxy.admin.listen, addr("127.0.0.1:4191"));
    assert_eq!(config.proxy.drain_timeout, secs(30));
    assert!(config.services.is_empty());
}

#[test]
fn defaults_are_filled() {
    let config = ok(r#"proxy:
  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:3000 }
  outbound: { listen: 127.0.0.1:4140 }
services:
  - name: web
    endpoints: [127.0.0.1:3000]
    routes:
      - {}
      - match: { methods: [get] }
"#);
    let downstream = Downstream {
        max_connections: 10_000,
        header_timeout: secs(10),
        max_header_bytes: 65_536,
        detect_timeout: secs(10),
    };
    let upstream = Upstream {
        connect_timeout: secs(1),
        idle_timeout: secs(10),
    };
    let inbound = config.proxy.inbound.unwrap();
    assert_eq!(inbound.protocol, Protocol::Http);
    assert_eq!(inbound.downstream, downstream);
    assert_eq!(inbound.upstream, upstream);
    assert_eq!(inbound.timeout, secs(30));
    assert_eq!(config.proxy.outbound.unwrap().downstream, downstream);
    assert_eq!(config.proxy.admin.listen, addr("127.0.0.1:4191"));
    assert_eq!(config.proxy.drain_timeout, secs(30));

    let web = &config.services[0];
    assert_eq!(web.protocol, Protocol::Http);
    assert!(web.authorities.is_empty());
    assert_eq!(web.listen, None);
    assert_eq!(web.upstream, upstream);
    assert_eq!(web.routes[0].name, "routes[0]");
    assert_eq!(web.routes[0].matches, RouteMatch::default());
    assert_eq!(web.routes[0].timeout, secs(30));
    assert_eq!(web.routes[1].name, "routes[1]");
    assert_eq!(web.routes[1].matches.methods, ["GET"]);
}

#[test]
fn every_field_is_read() {
    let config = ok(r#"proxy:
  inbound:
    listen: "[::1]:4143"
    app: 127.0.0.1:3000
    protocol: http2
    maxConnections: 5
    headerTimeout: 250ms
    maxHeaderBytes: 8192
    detectTimeout: 1m
    timeout: 0s
    connectTimeout: 2s
    idleTimeout: 5s
  outbound:
    listen: 127.0.0.1:4140
    maxConnections: 6
    headerTimeout: 3s
    maxHeaderBytes: 1048576
    detectTimeout: 4s
  admin:
    listen: 0.0.0.0:9990
  drainTimeout: 1m 30s
services:
  - name: api-2
    authorities: [API.Local., "[::1]:8080"]
    protocol: http2
    endpoints: [10.0.0.1:80, "[fe80::1]:8080"]
    connectTimeout: 100ms
    idleTimeout: 1s
    routes:
      - name: exact
        match: { path: /health, pathPrefix: /, methods: [get, Head] }
        timeout: 2s
"#);
    let inbound = config.proxy.inbound.unwrap();
    assert_eq!(
        inbound,
        InboundListener {
            listen: addr("[::1]:4143"),
            app: addr("127.0.0.1:3000"),
            protocol: Protocol::Http2,
            downstream: Downstream {
                max_connections: 5,
                header_timeout: Duration::from_millis(250),
                max_header_bytes: 8192,
                detect_timeout: secs(60),
            },
            upstream: Upstream {
                connect_timeout: secs(2),
                idle_timeout: secs(5)
            },
            timeout: Duration::ZERO,
        }
    );
    assert_eq!(
        config.proxy.outbound.unwrap(),
        OutboundListener {
            listen: addr("127.0.0.1:4140"),
            downstream: Downstream {
                max_connections: 6,
                header_timeout: secs(3),
                max_header_bytes: 1_048_576,
                detect_timeout: secs(4),
            },
        }
    );
    assert_eq!(config.proxy.admin.listen, addr("0.0.0.0:9990"));
    assert_eq!(config.proxy.drain_timeout, secs(90));
    assert_eq!(
        config.services,
        [Service {
            name: "api-2".into(),
            authorities: vec![auth("api.local"), auth("[::1]:8080")],
            protocol: Protocol::Http2,
            endpoints: vec![addr("10.0.0.1:80"), addr("[fe80::1]:8080")],
            listen: None,
            upstream: Upstream {
                connect_timeout: Duration::from_millis(100),
                idle_timeout: secs(1),
            },
            routes: vec![Route {
                name: "exact".into(),
                matches: RouteMatch {
                    path: Some("/health".into()),
                    path_prefix: Some("/".into()),
                    methods: vec!["GET".into(), "HEAD".into()],
                },
                timeout: secs(2),
            }],
        }]
    );
}

#[test]
fn the_contract_file_parses_to_what_it_says() {
    let text = include_str!("../examples/standalone.yaml");
    let config = parse(text, "standalone.yaml").unwrap();
    let upstream = Upstream::default();
    let expected = Config {
        proxy: ProxySettings {
            inbound: Some(InboundListener {
                listen: addr("127.0.0.1:4143"),
                app: addr("127.0.0.1:3000"),
                protocol: Protocol::Http,
                downstream: Downstream::default(),
                upstream: upstream.clone(),
                timeout: secs(30),
            }),
            outbound: Some(OutboundListener {
                listen: addr("127.0.0.1:4140"),
                downstream: Downstream::default(),
            }),
            admin: AdminListener {
                listen: addr("127.0.0.1:4191"),
            },
            drain_timeout: secs(30),
        },
        services: vec![
            Service {
                name: "web".into(),
                authorities: vec![auth("web.local"), auth("web.local:3000")],
                protocol: Protocol::Http,
                endpoints: vec![addr("127.0.0.1:3000")],
                listen: None,
                upstream: upstream.clone(),
                routes: vec![],
            },
            Service {
                name: "streaming".into(),
                authorities: vec![auth("streaming.local")],
                protocol: Protocol::Http,
                endpoints: vec![addr("127.0.0.1:4000")],
                listen: None,
                upstream: upstream.clone(),
                routes: vec![Route {
                    name: "routes[0]".into(),
                    matches: RouteMatch {
                        path_prefix: Some("/api/v1/streaming".into()),
                        ..RouteMatch::default()
                    },
                    timeout: Duration::ZERO,
                }],
            },
            Service {
                name: "redis".into(),
                authorities: vec![],
                protocol: Protocol::Opaque,
                endpoints: vec![addr("127.0.0.1:6379")],
                listen: Some(addr("127.0.0.1:16379")),
                upstream,
                routes: vec![],
            },
        ],
    };
    assert_eq!(config, expected);
}

#[test]
fn every_example_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut loaded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            load(&path).unwrap_or_else(|e| panic!("{e}"));
            loaded += 1;
        }
    }
    assert!(loaded >= 2, "examples found in {}: {loaded}", dir.display());
}

#[test]
fn the_mastodon_example_says_what_its_comments_say() {
    let config =
        load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mastodon-pod.yaml"))
            .unwrap();
    let service = |name: &str| config.services.iter().find(|s| s.name == name).unwrap();
    let streaming = &service("streaming").routes[0];
    assert_eq!(
        streaming.matches.path_prefix.as_deref(),
        Some("/api/v1/streaming")
    );
    assert_eq!(streaming.timeout, Duration::ZERO);
    assert_eq!(service("web").routes[0].timeout, secs(120));
    for opaque in ["redis", "postgres"] {
        assert_eq!(service(opaque).protocol, Protocol::Opaque);
        assert!(service(opaque).listen.is_some());
    }
}

#[test]
fn a_missing_file_says_cannot_read() {
    let err = load(std::path::Path::new("/nonexistent/mesh.yaml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/mesh.yaml: cannot read: "),
        "{err}"
    );
    assert_eq!((err.line(), err.column(), err.path()), (None, None, None));
}

#[test]
fn an_unknown_key_is_named_with_what_is_allowed() {
    let err = fails(
        "services:\n  - name: web\n    endpoint: [127.0.0.1:3000]\n",
        "mesh.yaml:3:5: services[0].endpoint: unknown key `endpoint` (did you mean `endpoints`?); \
         allowed: name, authorities, protocol, endpoints, listen, connectTimeout, idleTimeout, routes",
    );
    assert_eq!(
        (err.file(), err.line(), err.column()),
        ("mesh.yaml", Some(3), Some(5))
    );
    assert_eq!(err.path(), Some("services[0].endpoint"));
    fails(
        "proxy:\n  inbound:\n    max_connections: 5\n",
        "mesh.yaml:3:5: proxy.inbound.max_connections: unknown key `max_connections` (did you mean \
         `maxConnections`?); allowed: listen, app, protocol, maxConnections, headerTimeout, \
         maxHeaderBytes, detectTimeout, timeout, connectTimeout, idleTimeout",
    );
    fails(
        "servics: []\n",
        "mesh.yaml:1:1: servics: unknown key `servics` (did you mean `services`?); allowed: proxy, services",
    );
    fails(
        "services:\n  - name: web\n    endpoints: [127.0.0.1:1]\n    routes:\n      - value: 1\n",
        "mesh.yaml:5:9: services[0].routes[0].value: unknown key `value`; allowed: name, match, timeout",
    );
}

#[test]
fn a_bad_socket_address_is_shown() {
    fails(
        "proxy:\n  inbound:\n    listen: 127.0.0.1:4143\n    app: 127.0.0.1\n",
        "mesh.yaml:4:10: proxy.inbound.app: invalid socket address `127.0.0.1`: expected ip:port, \
         e.g. 127.0.0.1:4143 or \"[::1]:4143\"",
    );
    fails(
        "services:\n  - name: a\n    endpoints:\n      - 127.0.0.1:1\n      - web.local:3000\n",
        "mesh.yaml:5:9: services[0].endpoints[1]: invalid socket address `web.local:3000`: expected \
         ip:port, e.g. 127.0.0.1:4143 or \"[::1]:4143\"",
    );
}

#[test]
fn an_unquoted_ipv6_address_gets_a_hint() {
    fails(
        "proxy:\n  outbound:\n    listen: [::1]:4140\n",
        "mesh.yaml:3:13: proxy.outbound.listen: expected a single value, found a list (an IPv6 \
         address must be quoted: \"[::1]:4143\")",
    );
}

#[test]
fn a_bad_duration_is_shown() {
    fails(
        "proxy:\n  drainTimeout: 10sex\n",
        "mesh.yaml:2:17: proxy.drainTimeout: invalid duration `10sex`: unknown unit `sex`; \
         expected a number and a unit, e.g. 250ms, 10s, 1m",
    );
    fails(
        "proxy:\n  drainTimeout: -1s\n",
        "mesh.yaml:2:17: proxy.drainTimeout: invalid duration `-1s`; expected a number and a unit, \
         e.g. 250ms, 10s, 1m",
    );
}

#[test]
fn a_bare_number_duration_asks_for_a_unit() {
    fails(
        "proxy:\n  outbound:\n    listen: 127.0.0.1:4140\n    headerTimeout: 10\n",
        "mesh.yaml:4:20: proxy.outbound.headerTimeout: duration `10` has no unit: add one, e.g. `10s` or `10ms`",
    );
    fails(
        "services:\n  - name: a\n    endpoints: [127.0.0.1:1]\n    routes: [{ timeout: 1.5 }]\n",
        "mesh.yaml:4:25: services[0].routes[0].timeout: duration `1.5` has no unit: add one, e.g. `1.5s` or `1.5ms`",
    );
}

#[test]
fn a_bad_protocol_lists_the_good_ones() {
    fails(
        "services:\n  - name: redis\n    protocol: tcp\n    endpoints: [127.0.0.1:6379]\n",
        "mesh.yaml:3:15: services[0].protocol: unknown protocol `tcp` (plain TCP is `opaque`); \
         expected one of: http, http2, opaque",
    );
    fails(
        "proxy:\n  inbound: { listen: 127.0.0.1:1, app: 127.0.0.1:2, protocol: HTTP }\n",
        "mesh.yaml:2:63: proxy.inbound.protocol: unknown protocol `HTTP`; expected one of: http, http2, opaque",
    );
}

#[test]
fn numbers_must_be_whole() {
    fails(
        "proxy:\n  outbound:\n    listen: 127.0.0.1:4140\n    maxConnections: -1\n",
        "mesh.yaml:4:21: proxy.outbound.maxConnections: expected a whole number, found `-1`",
    );
    fails(
        "proxy:\n  outbound:\n    listen: 127.0.0.1:4140\n    maxHeaderBytes: 64KiB\n",
        "mesh.yaml:4:21: proxy.outbound.maxHeaderBytes: expected a whole number, found `64KiB`",
    );
}

#[test]
fn shapes_are_checked() {
    fails(
        "- web\n",
        "mesh.yaml:1:1: expected a mapping (key: value), found a list",
    );
    fails(
        "proxy: 5\n",
        "mesh.yaml:1:8: proxy: expected a mapping (key: value), found `5`",
    );
    fails(
        "services:\n  name: web\n",
        "mesh.yaml:2:3: services: expected a list, found a mapping",
    );
    fails(
        "services:\n  - name: web\n    endpoints: 127.0.0.1:3000   # the app\n",
        "mesh.yaml:3:16: services[0].endpoints: expected a list, found `127.0.0.1:3000`",
    );
    fails(
        "proxy:\n  inbound:\n    listen:\n      port: 1\n",
        "mesh.yaml:4:7: proxy.inbound.listen: expected a single value, found a mapping",
    );
    fails(
        "proxy:\n  inbound:\n    listen:\n    app: 127.0.0.1:3000\n",
        "mesh.yaml:3:11: proxy.inbound.listen: value is empty",
    );
}

#[test]
fn required_keys_are_named() {
    fails(
        "proxy:\n  inbound:\n    listen: 127.0.0.1:4143\n",
        "mesh.yaml:3:5: proxy.inbound: missing required key `app`",
    );
    fails(
        "services:\n  - endpoints: [127.0.0.1:1]\n",
        "mesh.yaml:2:5: services[0]: missing required key `name`",
    );
    fails(
        "services:\n  - name: web\n",
        "mesh.yaml:2:5: services[0]: missing required key `endpoints`",
    );
    fails(
        "proxy:\n  inbound: {}\n",
        "mesh.yaml:2:12: proxy.inbound: missing required key `listen`",
    );
}

#[test]
fn flow_and_block_styles_locate_alike() {
    // The same bad value, written three ways: the column is the value's, as an editor shows it.
    fails(
        "services:\n  - name: web\n    endpoints:\n      - 127.0.0.1:1\n      - nope\n",
        "mesh.yaml:5:9: services[0].endpoints[1]: invalid socket address `nope`: expected ip:port, \
         e.g. 127.0.0.1:4143 or \"[::1]:4143\"",
    );
    fails(
        "services:\n  - name: web\n    endpoints: [127.0.0.1:1, nope]\n",
        "mesh.yaml:3:30: services[0].endpoints[1]: invalid socket address `nope`: expected ip:port, \
         e.g. 127.0.0.1:4143 or \"[::1]:4143\"",
    );
    fails(
        "services: [{ name: web,\n             endpoints: [127.0.0.1:1,\n                         nope] }]\n",
        "mesh.yaml:3:26: services[0].endpoints[1]: invalid socket address `nope`: expected ip:port, \
         e.g. 127.0.0.1:4143 or \"[::1]:4143\"",
    );
}

#[test]
fn syntax_errors_have_a_location_and_no_path() {
    let err = fails(
        "services:\n  - name: web\n    endpoints: [127.0.0.1:1\n",
        "mesh.yaml:3:16: unclosed bracket '['",
    );
    assert_eq!(err.path(), None);
    fails(
        "proxy:\n  drainTimeout: 1s\n  drainTimeout: 2s\n",
        "mesh.yaml:3:3: proxy.drainTimeout: duplicate key `drainTimeout`",
    );
    let err = parse("proxy: {}\n---\nproxy: {}\n", "mesh.yaml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "mesh.yaml:3:1: only single YAML document expected but multiple found"
    );
}

#[test]
fn errors_are_one_line() {
    // A quoted key with a newline in it, echoed in the message, stays on one line.
    let err = fails(
        "services:\n  - name: web\n    \"bad\\nkey\": []\n",
        "mesh.yaml:3:5: services[0].bad\\nkey: unknown key `bad\\nkey`; allowed: name, \
         authorities, protocol, endpoints, listen, connectTimeout, idleTimeout, routes",
    );
    assert_eq!(err.message().lines().count(), 1);
}

#[test]
fn aliases_are_followed() {
    let config = ok(r#"services:
  - &common
    name: a
    endpoints: [127.0.0.1:1]
    connectTimeout: 3s
  - <<: *common
    name: b
"#);
    assert_eq!(config.services[1].name, "b");
    assert_eq!(config.services[1].upstream.connect_timeout, secs(3));
}

#[test]
fn what_config_prints_parses_back_the_same() {
    // The admin `/config` endpoint serializes the model; an operator may paste it into a file.
    for text in [
        include_str!("../examples/mastodon-pod.yaml"),
        include_str!("../examples/standalone.yaml"),
    ] {
        let config = ok(text);
        let printed = serde_saphyr::to_string(&config).unwrap();
        assert_eq!(ok(&printed), config, "{printed}");
    }
}
