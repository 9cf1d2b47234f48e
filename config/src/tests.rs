//! The public API end to end: defaults, the contract file, the examples, what `/config`
//! prints. The errors that types and YAML syntax catch are tested in `tests_errors.rs`, semantic
//! rules in `validate/tests*.rs`.

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
        access_log: None,
        request_id: true,
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
    assert_eq!(config.proxy.tunnel_idle_timeout, secs(3600));

    let web = &config.services[0];
    assert_eq!(web.protocol, Protocol::Http);
    assert!(web.authorities.is_empty());
    assert_eq!(
        web.endpoints,
        [WeightedEndpoint::weighted(addr("127.0.0.1:3000"), 1)]
    );
    assert_eq!(web.dns, None);
    assert_eq!(web.listen, None);
    assert_eq!(
        web.balancer,
        BalancerConfig {
            algorithm: Algorithm::PeakEwma,
            decay: secs(10),
            default_rtt: Duration::from_millis(30),
            hash_on: None,
            bounded_load: 1.25,
        }
    );
    assert_eq!(
        web.outlier_detection,
        OutlierDetection {
            consecutive_failures: 7,
            min_ejection: secs(1),
            max_ejection: secs(60),
            max_ejected_percent: 50,
            failure_on: vec![
                FailureCondition::ConnectFailure,
                FailureCondition::Status5xx
            ],
        }
    );
    assert_eq!(
        web.limits,
        ServiceLimits {
            connect_timeout: secs(1),
            idle_timeout: secs(10),
            max_connections: 10_000,
            max_pending_requests: 10_000,
            fail_fast_timeout: secs(3),
            max_concurrent_streams: 100,
            tunnel_idle_timeout: None,
        }
    );
    assert_eq!(config.proxy.resolver, ResolverConfig::default());
    assert!(config.proxy.resolver.nameservers.is_empty());
    assert_eq!(web.routes[0].name, "routes[0]");
    assert_eq!(web.routes[0].matches, RouteMatch::default());
    assert_eq!(web.routes[0].timeout, secs(30));
    assert_eq!(web.routes[1].name, "routes[1]");
    assert_eq!(web.routes[1].matches.methods, ["GET"]);
    assert_eq!(
        web.retry_budget,
        RetryBudget {
            ratio: 0.2,
            min_per_second: 10,
            window: secs(10),
        }
    );
    for route in &web.routes {
        assert_eq!((&route.retry, &route.hedge), (&None, &None));
    }
}

/// Every key there is, none at its default.
const EVERY_FIELD: &str = r#"proxy:
  inbound:
    listen: "[::1]:4143"
    app: 127.0.0.1:3000
    transparent: true
    protocol: http2
    maxConnections: 5
    headerTimeout: 250ms
    maxHeaderBytes: 8192
    detectTimeout: 1m
    timeout: 0s
    connectTimeout: 2s
    idleTimeout: 5s
    mtls: strict
    clientIdentityHeader: X-Client-Identity
    defaultPolicy: cluster-authenticated
    opaquePorts: [25, "8000-8010"]
  outbound:
    listen: 127.0.0.1:4140
    transparent: true
    egress: mesh-only
    maxConnections: 6
    headerTimeout: 3s
    maxHeaderBytes: 1048576
    detectTimeout: 4s
  admin:
    listen: 0.0.0.0:9990
  resolver:
    nameservers: [127.0.0.1:5353, "[::1]:53"]
  drainTimeout: 1m 30s
  tunnelIdleTimeout: 2m
  identity:
    dns: herd-identity.herd:8080
    id: spiffe://cluster.local/ns/mastodon/sa/web
    tokenFile: /var/run/secrets/herd/token
services:
  - name: api-2
    authorities: [API.Local., "[::1]:8080"]
    protocol: http2
    endpoints:
      - 10.0.0.1:80
      - { address: "[fe80::1]:8080", weight: 3, identity: "spiffe://cluster.local/ns/mastodon/sa/api" }
    clusterIps: [10.96.0.10:8080, "[fd00:10:96::a]:8080"]
    balancer:
      algorithm: ring-hash
      hashOn: { header: X-User-Id }
      boundedLoad: 1.5
    outlierDetection:
      consecutiveFailures: 3
      minEjection: 500ms
      maxEjection: 2m
      maxEjectedPercent: 100
      failureOn: [timeout, gateway-error, 500, connect-failure, 5xx]
    limits:
      connectTimeout: 100ms
      idleTimeout: 1s
      maxConnections: 10
      maxPendingRequests: 20
      failFastTimeout: 250ms
      maxConcurrentStreams: 1
      tunnelIdleTimeout: 0s
    retryBudget: { ratio: 1.5, minPerSecond: 0, window: 1m }
    routes:
      - name: exact
        match: { path: /health, pathPrefix: /, methods: [get, Head] }
        timeout: 2s
        retry:
          attempts: 10
          perTryTimeout: 500ms
          conditions: [reset, 429, 5xx, refused-stream, connect-failure, gateway-error]
          backoff: { base: 10ms, max: 1s }
          nonIdempotent: true
          bufferLimit: 0
        hedge: { delay: 100ms }
      - name: hedged
        hedge: { delay: p99.9 }
"#;

#[test]
fn every_field_is_read() {
    let config = ok(EVERY_FIELD);
    let inbound = config.proxy.inbound.unwrap();
    assert_eq!(
        inbound,
        InboundListener {
            listen: addr("[::1]:4143"),
            app: Some(addr("127.0.0.1:3000")),
            transparent: true,
            protocol: Protocol::Http2,
            downstream: Downstream {
                max_connections: 5,
                header_timeout: Duration::from_millis(250),
                max_header_bytes: 8192,
                detect_timeout: secs(60),
                ..Downstream::default()
            },
            upstream: Upstream {
                connect_timeout: secs(2),
                idle_timeout: secs(5)
            },
            timeout: Duration::ZERO,
            mtls: Mtls::Strict,
            default_policy: DefaultPolicy::ClusterAuthenticated,
            client_identity_header: Some("x-client-identity".into()),
            opaque_ports: vec![
                PortRange {
                    first: 25,
                    last: 25
                },
                PortRange {
                    first: 8000,
                    last: 8010
                }
            ],
        }
    );
    assert_eq!(
        config.proxy.identity.unwrap(),
        IdentitySettings {
            target: ControlTarget::Dns {
                name: "herd-identity.herd".into(),
                port: 8080
            },
            id: "spiffe://cluster.local/ns/mastodon/sa/web".into(),
            token_file: "/var/run/secrets/herd/token".into(),
            trust_anchors: None,
            trust_anchors_pem: None,
            control_identity: "spiffe://cluster.local/ns/herd/sa/herd-control".into(),
        }
    );
    assert_eq!(
        config.proxy.outbound.unwrap(),
        OutboundListener {
            listen: addr("127.0.0.1:4140"),
            transparent: true,
            egress: Egress::MeshOnly,
            downstream: Downstream {
                max_connections: 6,
                header_timeout: secs(3),
                max_header_bytes: 1_048_576,
                detect_timeout: secs(4),
                ..Downstream::default()
            },
        }
    );
    assert_eq!(config.proxy.admin.listen, addr("0.0.0.0:9990"));
    assert_eq!(
        config.proxy.resolver.nameservers,
        [addr("127.0.0.1:5353"), addr("[::1]:53")]
    );
    assert_eq!(config.proxy.drain_timeout, secs(90));
    assert_eq!(config.proxy.tunnel_idle_timeout, secs(120));
    assert_eq!(
        config.services,
        [Service {
            name: "api-2".into(),
            authorities: vec![auth("api.local"), auth("[::1]:8080")],
            protocol: Protocol::Http2,
            endpoints: vec![
                WeightedEndpoint::new(addr("10.0.0.1:80")),
                WeightedEndpoint {
                    identity: Some("spiffe://cluster.local/ns/mastodon/sa/api".into()),
                    ..WeightedEndpoint::weighted(addr("[fe80::1]:8080"), 3)
                }
            ],
            dns: None,
            listen: None,
            cluster_ips: vec![addr("10.96.0.10:8080"), addr("[fd00:10:96::a]:8080")],
            balancer: BalancerConfig {
                algorithm: Algorithm::RingHash,
                decay: secs(10),
                default_rtt: Duration::from_millis(30),
                hash_on: Some(HashOn::Header("x-user-id".into())),
                bounded_load: 1.5,
            },
            outlier_detection: OutlierDetection {
                consecutive_failures: 3,
                min_ejection: Duration::from_millis(500),
                max_ejection: secs(120),
                max_ejected_percent: 100,
                failure_on: vec![
                    FailureCondition::Timeout,
                    FailureCondition::GatewayError,
                    FailureCondition::Status(500),
                    FailureCondition::ConnectFailure,
                    FailureCondition::Status5xx,
                ],
            },
            limits: ServiceLimits {
                connect_timeout: Duration::from_millis(100),
                idle_timeout: secs(1),
                max_connections: 10,
                max_pending_requests: 20,
                fail_fast_timeout: Duration::from_millis(250),
                max_concurrent_streams: 1,
                tunnel_idle_timeout: Some(Duration::ZERO),
            },
            retry_budget: RetryBudget {
                ratio: 1.5,
                min_per_second: 0,
                window: secs(60),
            },
            routes: vec![
                Route {
                    name: "exact".into(),
                    matches: RouteMatch {
                        path: Some("/health".into()),
                        path_prefix: Some("/".into()),
                        methods: vec!["GET".into(), "HEAD".into()],
                    },
                    timeout: secs(2),
                    retry: Some(RetryPolicy {
                        attempts: 10,
                        per_try_timeout: Some(Duration::from_millis(500)),
                        conditions: vec![
                            RetryCondition::Reset,
                            RetryCondition::Status(429),
                            RetryCondition::Status5xx,
                            RetryCondition::RefusedStream,
                            RetryCondition::ConnectFailure,
                            RetryCondition::GatewayError,
                        ],
                        backoff: Backoff {
                            base: Duration::from_millis(10),
                            max: secs(1),
                        },
                        non_idempotent: true,
                        buffer_limit: 0,
                    }),
                    hedge: Some(Hedge {
                        delay: HedgeDelay::After(Duration::from_millis(100)),
                    }),
                },
                Route {
                    name: "hedged".into(),
                    matches: RouteMatch::default(),
                    timeout: secs(30),
                    retry: None,
                    hedge: Some(Hedge {
                        delay: HedgeDelay::Percentile(99.9),
                    }),
                },
            ],
        }]
    );
}

#[test]
fn the_contract_file_parses_to_what_it_says() {
    let text = include_str!("../examples/standalone.yaml");
    let config = parse(text, "standalone.yaml").unwrap();
    let expected = Config {
        proxy: ProxySettings {
            inbound: Some(InboundListener {
                listen: addr("127.0.0.1:4143"),
                app: Some(addr("127.0.0.1:3000")),
                transparent: false,
                protocol: Protocol::Http,
                downstream: Downstream::default(),
                upstream: Upstream::default(),
                timeout: secs(30),
                mtls: Mtls::Permissive,
                default_policy: DefaultPolicy::All,
                client_identity_header: None,
                opaque_ports: Vec::new(),
            }),
            outbound: Some(OutboundListener {
                listen: addr("127.0.0.1:4140"),
                transparent: false,
                egress: Egress::Any,
                downstream: Downstream::default(),
            }),
            admin: AdminListener {
                listen: addr("127.0.0.1:4191"),
            },
            resolver: ResolverConfig::default(),
            drain_timeout: secs(30),
            control: None,
            tunnel_idle_timeout: secs(3600),
            identity: None,
        },
        services: vec![
            Service {
                name: "web".into(),
                authorities: vec![auth("web.local"), auth("web.local:3000")],
                protocol: Protocol::Http,
                endpoints: vec![WeightedEndpoint::new(addr("127.0.0.1:3000"))],
                dns: None,
                listen: None,
                cluster_ips: vec![],
                balancer: BalancerConfig::default(),
                outlier_detection: OutlierDetection::default(),
                limits: ServiceLimits::default(),
                retry_budget: RetryBudget::default(),
                routes: vec![],
            },
            Service {
                name: "streaming".into(),
                authorities: vec![auth("streaming.local")],
                protocol: Protocol::Http,
                endpoints: vec![WeightedEndpoint::new(addr("127.0.0.1:4000"))],
                dns: None,
                listen: None,
                cluster_ips: vec![],
                balancer: BalancerConfig::default(),
                outlier_detection: OutlierDetection::default(),
                limits: ServiceLimits::default(),
                retry_budget: RetryBudget::default(),
                routes: vec![Route {
                    name: "routes[0]".into(),
                    matches: RouteMatch {
                        path_prefix: Some("/api/v1/streaming".into()),
                        ..RouteMatch::default()
                    },
                    timeout: Duration::ZERO,
                    retry: None,
                    hedge: None,
                }],
            },
            Service {
                name: "redis".into(),
                authorities: vec![],
                protocol: Protocol::Opaque,
                endpoints: vec![WeightedEndpoint::new(addr("127.0.0.1:6379"))],
                dns: None,
                listen: Some(addr("127.0.0.1:16379")),
                cluster_ips: vec![],
                balancer: BalancerConfig::default(),
                outlier_detection: OutlierDetection::default(),
                limits: ServiceLimits::default(),
                retry_budget: RetryBudget::default(),
                routes: vec![],
            },
        ],
        policies: vec![],
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
    assert_eq!(config.proxy.outbound.as_ref().unwrap().egress, Egress::Any);
    for opaque in ["redis", "postgres"] {
        assert_eq!(service(opaque).protocol, Protocol::Opaque);
        assert!(service(opaque).listen.is_some());
    }

    let web = service("web");
    assert_eq!(
        web.endpoints,
        [
            WeightedEndpoint::new(addr("10.42.0.11:3000")),
            WeightedEndpoint::weighted(addr("10.42.1.12:3000"), 2)
        ]
    );
    assert_eq!(web.balancer, BalancerConfig::default());
    assert_eq!(
        web.outlier_detection.failure_on,
        [FailureCondition::ConnectFailure, FailureCondition::Timeout]
    );
    assert_eq!(web.limits.max_pending_requests, 500);

    let streaming = service("streaming");
    assert!(streaming.endpoints.is_empty());
    assert_eq!(
        streaming.dns,
        Some(DnsDiscovery {
            name: "streaming-headless.mastodon.svc.cluster.local.".into(),
            port: 4000,
            min_ttl: secs(1),
            max_ttl: secs(30),
        })
    );
    assert_eq!(streaming.balancer.algorithm, Algorithm::LeastRequest);
    assert_eq!(service("postgres").limits.connect_timeout, secs(2));

    assert_eq!(web.retry_budget, RetryBudget::default());
    let route = |name: &str| web.routes.iter().find(|r| r.name == name).unwrap();
    for upload in ["media-upload", "media-upload-v1"] {
        assert_eq!(route(upload).matches.methods, ["POST"]);
        assert_eq!((&route(upload).retry, &route(upload).hedge), (&None, &None));
    }
    let timelines = route("timelines");
    assert_eq!(timelines.matches.methods, ["GET", "HEAD"]);
    assert_eq!(
        timelines.retry,
        Some(RetryPolicy {
            attempts: 2,
            per_try_timeout: Some(secs(5)),
            ..RetryPolicy::default()
        })
    );
    assert_eq!(
        timelines.hedge,
        Some(Hedge {
            delay: HedgeDelay::Percentile(95.0)
        })
    );
    // Before the broader `/api/` route, which would otherwise match first.
    let reads = web
        .routes
        .iter()
        .position(|r| r.name == "api-reads")
        .unwrap();
    assert!(
        web.routes
            .iter()
            .position(|r| r.name == "timelines")
            .unwrap()
            < reads
    );
    assert_eq!(
        web.routes[reads].matches.path_prefix.as_deref(),
        Some("/api/")
    );
    assert_eq!(
        web.routes[reads].retry.as_ref().unwrap().conditions,
        [
            RetryCondition::ConnectFailure,
            RetryCondition::Status(502),
            RetryCondition::Status(503),
            RetryCondition::Status(504)
        ]
    );
    assert_eq!(web.routes[reads].hedge, None);
    assert_eq!(service("streaming").routes[0].retry, None);
}

#[test]
fn aliases_are_followed() {
    let config = ok(r#"services:
  - &common
    name: a
    endpoints: [127.0.0.1:1]
    limits: { connectTimeout: 3s }
  - <<: *common
    name: b
"#);
    assert_eq!(config.services[1].name, "b");
    assert_eq!(config.services[1].limits.connect_timeout, secs(3));
}

#[test]
fn what_config_prints_parses_back_the_same() {
    // The admin `/config` endpoint serializes the model; an operator may paste it into a file.
    for text in [
        include_str!("../examples/mastodon-pod.yaml"),
        include_str!("../examples/standalone.yaml"),
        EVERY_FIELD,
        "services:\n  - { name: a, dns: a.local:1, balancer: { algorithm: ring-hash, hashOn: clientIp } }\n",
        "services:\n  - { name: a, dns: a.local:1, balancer: { algorithm: ring-hash, hashOn: { cookie: s } } }\n",
        "services:\n  - { name: a, endpoints: [1.2.3.4:5], balancer: round-robin, outlierDetection: { failureOn: [503] } }\n",
        "services:\n  - { name: a, endpoints: [1.2.3.4:5], routes: [{ retry: {}, hedge: { delay: p50 } }] }\n",
        "services:\n  - { name: a, endpoints: [1.2.3.4:5], retryBudget: { ratio: 0 }, routes: [{ timeout: 0s, retry: { perTryTimeout: 0s, conditions: [\"503\"] } }] }\n",
    ] {
        let config = ok(text);
        let printed = serde_saphyr::to_string(&config).unwrap();
        assert_eq!(ok(&printed), config, "{printed}");
    }
}

#[test]
fn access_log_and_request_id_per_listener() {
    let config = parse(
        "proxy:\n  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:3000, accessLog: { format: apache }, requestId: false }\n  outbound: { listen: 127.0.0.1:4140, accessLog: { format: json } }\n",
        "mesh.yaml",
    )
    .unwrap();
    let inbound = config.proxy.inbound.unwrap().downstream;
    assert_eq!(
        inbound.access_log,
        Some(AccessLog {
            format: AccessLogFormat::Apache
        })
    );
    assert!(!inbound.request_id);
    let outbound = config.proxy.outbound.unwrap().downstream;
    assert_eq!(
        outbound.access_log,
        Some(AccessLog {
            format: AccessLogFormat::Json
        })
    );
    assert!(outbound.request_id);
    let err = parse(
        "proxy:\n  outbound: { listen: 127.0.0.1:4140, accessLog: { format: xml } }\n",
        "mesh.yaml",
    )
    .unwrap_err();
    assert_eq!(err.line(), Some(2), "{err}");
    assert!(err.to_string().contains("xml"), "{err}");
}

/// herd-control sends a mesh's services as the JSON of the validated model; a proxy reads it
/// back with [`crate::parse_mesh`]. Every example must come back as it left.
#[test]
fn services_survive_the_trip_through_json_and_parse_mesh() {
    for example in ["standalone.yaml", "mastodon-pod.yaml"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(example);
        let config = crate::load(&path).unwrap();
        assert!(!config.services.is_empty(), "{example} has services");
        let json =
            serde_json::to_string_pretty(&serde_json::json!({ "services": config.services }))
                .unwrap();
        let back = crate::parse_mesh(&json, "control", None)
            .unwrap_or_else(|e| panic!("{example}: {e}\n{json}"));
        assert_eq!(back.services, config.services, "{example}");
    }
}

/// The same trip for a service with every field set, `endpoints[].identity` among them.
#[test]
fn every_field_survives_the_trip_through_json() {
    let config = ok(EVERY_FIELD);
    let json = serde_json::to_string(&serde_json::json!({ "services": config.services })).unwrap();
    assert!(
        json.contains(r#""identity":"spiffe://cluster.local/ns/mastodon/sa/api""#),
        "{json}"
    );
    assert!(
        !json.contains(r#""identity":null"#),
        "an endpoint outside the mesh writes no identity: {json}"
    );
    let back = crate::parse_mesh(&json, "control", None).unwrap_or_else(|e| panic!("{e}\n{json}"));
    assert_eq!(back.services, config.services);
}

#[test]
fn a_mesh_may_leave_endpoints_to_the_control_plane_but_a_proxy_file_may_not() {
    let text = "services:\n  - name: web\n    authorities: [web]\n";
    let services = crate::parse_mesh(text, "mesh.yaml", None).unwrap().services;
    assert!(services[0].endpoints.is_empty() && services[0].dns.is_none());
    let err = crate::parse(text, "herd.yaml").unwrap_err().to_string();
    assert!(err.contains("missing required key `endpoints`"), "{err}");
}

#[test]
fn a_mesh_file_refuses_proxy_settings() {
    let text = "proxy:\n  outbound: { listen: 127.0.0.1:4140 }\nservices: []\n";
    let err = crate::parse_mesh(text, "mesh.yaml", None)
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("mesh.yaml: proxy: "), "{err}");
}

#[test]
fn a_mesh_service_may_not_bind_a_listener_of_the_proxy_that_runs_it() {
    let proxy = crate::parse(
        "proxy:\n  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:3000 }\n",
        "herd.yaml",
    )
    .unwrap()
    .proxy;
    let text = "services:\n  - name: redis\n    protocol: opaque\n    listen: 127.0.0.1:4143\n";
    let err = crate::parse_mesh(text, "control", Some(&proxy))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("control:4:13: services[0].listen: 127.0.0.1:4143 is already used by proxy.inbound.listen"),
        "{err}"
    );
}

#[test]
fn control_settings_and_their_defaults() {
    let text = "proxy:\n  control: { addresses: [127.0.0.1:8086, 127.0.0.1:8087], id: web-7f9c, namespace: mastodon }\n";
    let control = crate::parse(text, "herd.yaml")
        .unwrap()
        .proxy
        .control
        .unwrap();
    assert_eq!(
        control.target,
        crate::ControlTarget::Addresses(vec![
            "127.0.0.1:8086".parse().unwrap(),
            "127.0.0.1:8087".parse().unwrap()
        ])
    );
    assert_eq!(control.id.as_deref(), Some("web-7f9c"));
    assert_eq!(control.namespace, "mastodon");
    assert!(control.wait_for_state);
    assert_eq!(
        control.unwatch_after,
        crate::ControlSettings::DEFAULT_UNWATCH_AFTER
    );

    let dns = crate::parse(
        "proxy:\n  control: { dns: herd-control.herd.svc:8086 }\n",
        "f",
    )
    .unwrap()
    .proxy
    .control
    .unwrap();
    assert_eq!(
        dns.target,
        crate::ControlTarget::Dns {
            name: "herd-control.herd.svc".into(),
            port: 8086
        }
    );
}

#[test]
fn control_settings_errors() {
    let cases = [
        (
            "proxy:\n  control: {}\n",
            "f:2:12: proxy.control: missing required key `addresses`",
        ),
        (
            "proxy:\n  control: { addresses: [] }\n",
            "f:2:25: proxy.control.addresses: must list at least one address",
        ),
        (
            "proxy:\n  control: { addresses: [127.0.0.1:1, 127.0.0.1:1] }\n",
            "f:2:39: proxy.control.addresses[1]: 127.0.0.1:1 is already listed as proxy.control.addresses[0]",
        ),
        (
            "proxy:\n  control: { dns: 10.0.0.1:8086 }\n",
            "f:2:19: proxy.control.dns: `10.0.0.1` is an IP address",
        ),
        (
            "proxy:\n  control: { addresses: [127.0.0.1:1], id: 'a b' }\n",
            "f:2:44: proxy.control.id: invalid proxy id `a b`",
        ),
        (
            "proxy:\n  control: { addresses: [127.0.0.1:1], namespace: Mastodon }\n",
            "f:2:51: proxy.control.namespace: invalid namespace",
        ),
        (
            "proxy:\n  control: { addresses: [127.0.0.1:1] }\nservices:\n  - name: web\n    endpoints: [127.0.0.1:3000]\n",
            "f:4:5: services: `services` cannot be listed together with `proxy.control`",
        ),
    ];
    for (text, want) in cases {
        let err = crate::parse(text, "f").unwrap_err().to_string();
        assert!(err.starts_with(want), "{text}\n got: {err}\nwant: {want}");
    }
}

#[test]
fn opaque_ports_are_ports_or_ranges() {
    let config = ok(
        "proxy:\n  inbound: {listen: 127.0.0.1:4143, app: 127.0.0.1:3000, opaquePorts: [25, 3306, \"8000-8010\"]}\n",
    );
    let inbound = config.proxy.inbound.unwrap();
    for (port, opaque) in [
        (25, true),
        (26, false),
        (3306, true),
        (7999, false),
        (8000, true),
        (8010, true),
        (8011, false),
    ] {
        assert_eq!(inbound.is_opaque(port), opaque, "{port}");
    }
    let json = serde_json::to_value(&inbound).unwrap();
    assert_eq!(
        json["opaquePorts"],
        serde_json::json!(["25", "3306", "8000-8010"])
    );
}

#[test]
fn trust_anchors_may_be_written_inline_as_pem() {
    let root = include_str!("../../identity/src/ca/testdata/openssl-ca.crt");
    let indented: String = root.lines().map(|l| format!("      {l}\n")).collect();
    let text = format!(
        "proxy:\n  identity:\n    addresses: [127.0.0.1:8080]\n    id: spiffe://cluster.local/ns/mastodon/sa/web\n    tokenFile: /t\n    trustAnchorsPem: |\n{indented}"
    );
    let identity = ok(&text).proxy.identity.unwrap();
    assert_eq!(identity.trust_anchors_pem.as_deref(), Some(root));
    assert_eq!(identity.trust_anchors, None);
}
