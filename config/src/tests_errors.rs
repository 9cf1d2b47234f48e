//! The errors that types and YAML syntax catch, before any rule runs: unknown keys, bad
//! addresses and durations, wrong shapes, missing keys, syntax. Each pins the whole line.

use crate::{ConfigError, load, parse};

/// Asserts the one-line message exactly: that pins file, line, column, path and wording.
#[track_caller]
fn fails(yaml: &str, expected: &str) -> ConfigError {
    let err = parse(yaml, "mesh.yaml").expect_err("should be refused");
    assert_eq!(err.to_string(), expected);
    assert!(!err.to_string().contains('\n'), "one line: {err}");
    err
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
         allowed: name, authorities, protocol, endpoints, dns, listen, clusterIps, balancer, outlierDetection, limits, retryBudget, routes",
    );
    assert_eq!(
        (err.file(), err.line(), err.column()),
        ("mesh.yaml", Some(3), Some(5))
    );
    assert_eq!(err.path(), Some("services[0].endpoint"));
    fails(
        "proxy:\n  inbound:\n    max_connections: 5\n",
        "mesh.yaml:3:5: proxy.inbound.max_connections: unknown key `max_connections` (did you mean \
         `maxConnections`?); allowed: listen, app, transparent, protocol, mtls, clientIdentityHeader, defaultPolicy, opaquePorts, maxConnections, headerTimeout, \
         maxHeaderBytes, detectTimeout, accessLog, requestId, timeout, connectTimeout, idleTimeout",
    );
    fails(
        "servics: []\n",
        "mesh.yaml:1:1: servics: unknown key `servics` (did you mean `services`?); allowed: proxy, services, policies",
    );
    fails(
        "services:\n  - name: web\n    endpoints: [127.0.0.1:1]\n    routes:\n      - value: 1\n",
        "mesh.yaml:5:9: services[0].routes[0].value: unknown key `value`; allowed: name, match, timeout, retry, hedge",
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
fn a_bad_egress_lists_the_good_ones() {
    fails(
        "proxy:\n  outbound: { listen: 127.0.0.1:4140, egress: mesh }\n",
        "mesh.yaml:2:47: proxy.outbound.egress: unknown egress `mesh` (did you mean `mesh-only`?); \
         expected one of: any, mesh-only",
    );
    fails(
        "proxy:\n  outbound:\n    listen: 127.0.0.1:4140\n    egress: open\n",
        "mesh.yaml:4:13: proxy.outbound.egress: unknown egress `open`; expected one of: any, mesh-only",
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
        "mesh.yaml:3:5: proxy.inbound: missing required key `app` (optional only with \
         `transparent: true`, where connections go to their original destination)",
    );
    fails(
        "services:\n  - endpoints: [127.0.0.1:1]\n",
        "mesh.yaml:2:5: services[0]: missing required key `name`",
    );
    fails(
        "services:\n  - name: web\n",
        "mesh.yaml:2:5: services[0]: missing required key `endpoints` (or `dns`, to discover them by DNS)",
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
         authorities, protocol, endpoints, dns, listen, clusterIps, balancer, outlierDetection, limits, retryBudget, routes",
    );
    assert_eq!(err.message().lines().count(), 1);
}

#[test]
fn identity_settings_are_checked() {
    const INBOUND: &str =
        "proxy:\n  inbound: {listen: 127.0.0.1:4143, app: 127.0.0.1:3000, mtls: strict}\n";
    fails(
        INBOUND,
        "mesh.yaml:2:64: proxy.inbound.mtls: `strict` needs `proxy.identity`: without a \
         certificate the proxy can serve no mutual-TLS client, and strict refuses every other",
    );
    let identity = |body: &str| format!("{INBOUND}  identity:\n{body}");
    fails(
        &identity(
            "    addresses: [127.0.0.1:8080]\n    id: spiffe://cluster.local/ns/web\n    tokenFile: /t\n",
        ),
        "mesh.yaml:5:9: proxy.identity.id: `spiffe://cluster.local/ns/web` is not a workload \
         identity: expected spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT",
    );
    fails(
        &identity(
            "    addresses: [127.0.0.1:8080]\n    id: spiffe://cluster.local/ns/mastodon/sa/web\n",
        ),
        "mesh.yaml:4:5: proxy.identity: missing required key `tokenFile` (the file holding the \
         token that proves it)",
    );
    fails(
        &identity(
            "    addresses: [127.0.0.1:8080]\n    id: spiffe://cluster.local/ns/mastodon/sa/web\n    tokenFile: /t\n    controlIdentity: herd-control\n",
        ),
        "mesh.yaml:7:22: proxy.identity.controlIdentity: a SPIFFE ID starts with `spiffe://`",
    );
    fails(
        &identity(
            "    addresses: [127.0.0.1:8080]\n    id: spiffe://cluster.local/ns/mastodon/sa/web\n    tokenFile: /t\n    trustAnchors: \"\"\n",
        ),
        "mesh.yaml:7:19: proxy.identity.trustAnchors: must not be empty",
    );
    fails(
        &identity(
            "    addresses: [127.0.0.1:8080]\n    id: spiffe://cluster.local/ns/mastodon/sa/web\n    tokenFile: /t\n    trustAnchors: /a.pem\n    trustAnchorsPem: x\n",
        ),
        "mesh.yaml:8:22: proxy.identity.trustAnchorsPem: `trustAnchorsPem` and `trustAnchors` \
         (line 7) cannot both be given",
    );
    fails(
        &identity(
            "    addresses: [127.0.0.1:8080]\n    id: spiffe://cluster.local/ns/mastodon/sa/web\n    tokenFile: /t\n    trustAnchorsPem: not a certificate\n",
        ),
        "mesh.yaml:7:22: proxy.identity.trustAnchorsPem: not a trust bundle: the PEM has no \
         certificate",
    );
    fails(
        &identity("    id: spiffe://cluster.local/ns/mastodon/sa/web\n    tokenFile: /t\n"),
        "mesh.yaml:4:5: proxy.identity: missing required key `addresses` (or `dns: NAME:PORT`)",
    );
    fails(
        "proxy:\n  inbound: {listen: 127.0.0.1:4143, app: 127.0.0.1:3000, mtls: required}\n",
        "mesh.yaml:2:64: proxy.inbound.mtls: unknown mtls mode `required` (did you mean \
         `strict`?); expected one of: permissive, strict",
    );
    let opaque = |ports: &str| {
        format!(
            "proxy:\n  inbound: {{listen: 127.0.0.1:4143, app: 127.0.0.1:3000, opaquePorts: {ports}}}\n"
        )
    };
    fails(
        &opaque("[0]"),
        "mesh.yaml:2:72: proxy.inbound.opaquePorts[0]: `0` is not a port (1 to 65535) or a range \
         of ports (`8000-8010`)",
    );
    fails(
        &opaque("[\"9-8\"]"),
        "mesh.yaml:2:72: proxy.inbound.opaquePorts[0]: `9-8`: a range's first port must not be \
         above its last",
    );
    fails(
        &opaque("[25, \"20-30\"]"),
        "mesh.yaml:2:76: proxy.inbound.opaquePorts[1]: 20-30 overlaps proxy.inbound.opaquePorts[0]",
    );
    fails(
        "proxy:\n  inbound: {listen: 127.0.0.1:4143, app: 127.0.0.1:3000, clientIdentityHeader: \"x client\"}\n",
        "mesh.yaml:2:80: proxy.inbound.clientIdentityHeader: `x client` is not an HTTP header name",
    );
}
