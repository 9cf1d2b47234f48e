//! Transparent mode, as a meshed pod has it: `herd-proxy init` installs its iptables rules in
//! the pod's network namespace, the proxy runs there as the uid the rules exempt, and the app
//! (curl, redis-cli, Puma, run as another uid) knows nothing of the proxy.
//!
//! Each test makes its own pod (a namespace joined to the host by a veth pair); the pod's
//! "cluster" is the host's side of that link, where the services' endpoints and the hosts
//! outside the mesh listen. Cluster IPs are addresses nobody has (10.96.0.0/16, fd00:10:96::/64):
//! only the proxy knows what they mean, as only kube-proxy would in a cluster. Everything goes
//! with the pod when a test ends.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;

use herd_tests::netns::Pod;
use herd_tests::prometheus::Exposition;
use herd_tests::{Proxy, Puma, Redis, TIMEOUT, curl, ports, puma, redis, within};

/// The uid the proxy runs as (`--proxy-uid`'s default): its connections are never redirected.
const PROXY_UID: u32 = 2102;
/// The app's uid: everything it opens goes through the proxy.
const APP_UID: u32 = 1000;

/// `herd-proxy init ARGS` run as root inside `pod`, with `path` as its PATH when given: exit
/// code, stdout, stderr.
async fn init(pod: &Pod, args: &[&str], path: Option<&std::path::Path>) -> (i32, String, String) {
    let mut command = pod.command(herd_tests::proxy::binary());
    command.arg("init").args(args);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let output = within(
        "herd-proxy init",
        TIMEOUT,
        command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output(),
    )
    .await
    .expect("run herd-proxy init");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Installs the default rules (auto backend, both families), asserting that init succeeds.
async fn install(pod: &Pod) {
    let (code, stdout, stderr) = init(pod, &[], None).await;
    assert_eq!(code, 0, "herd-proxy init failed:\n{stdout}{stderr}");
}

/// The pod's nat tables under `backend` (`legacy`, `nft`), both families, as
/// `iptables-save` shows them without its dated comments and packet counters.
async fn nat_rules(pod: &Pod, backend: &str) -> String {
    let mut all = String::new();
    for family in ["iptables", "ip6tables"] {
        let mut save = pod.command(format!("{family}-{backend}-save"));
        let output = within("iptables-save", TIMEOUT, save.args(["-t", "nat"]).output())
            .await
            .expect("run iptables-save");
        assert!(output.status.success(), "{family}-{backend}-save failed");
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = match line.rfind(" [") {
                Some(at) if line.starts_with(':') => &line[..at],
                _ => line,
            };
            all.push_str(line);
            all.push('\n');
        }
    }
    all
}

/// The proxy's metrics, summed over the series matching `labels`.
async fn metric(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = proxy.admin_get("/metrics").await.text();
    Exposition::parse(&text).sum(name, labels).unwrap_or(0.0)
}

/// Every label set of the TCP families for `service`, to show what they name.
async fn tcp_labels(proxy: &Proxy, service: &str) -> Vec<BTreeMap<String, String>> {
    let text = proxy.admin_get("/metrics").await.text();
    Exposition::parse(&text)
        .samples
        .into_iter()
        .filter(|s| s.name.starts_with("herd_tcp_"))
        .map(|s| s.labels)
        .filter(|labels| labels.get("service").map(String::as_str) == Some(service))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_prints_the_rules_and_changes_nothing_and_a_second_run_changes_nothing() {
    for backend in ["legacy", "nft"] {
        let pod = Pod::new(&format!("init-{backend}"));
        let before = nat_rules(&pod, backend).await;
        assert!(!before.contains("HERD"), "a fresh namespace: {before}");

        let (code, stdout, stderr) = init(&pod, &["--dry-run", "--backend", backend], None).await;
        assert_eq!(code, 0, "{stderr}");
        for rule in [
            "-A HERD_INBOUND -p tcp --dport 4191 -j RETURN",
            "-A HERD_INBOUND -p tcp -j REDIRECT --to-ports 4143",
            "-A HERD_OUTBOUND -m owner --uid-owner 2102 -j RETURN",
            "-A HERD_OUTBOUND -p tcp -j REDIRECT --to-ports 4140",
            "-A PREROUTING -p tcp -j HERD_INBOUND",
            "-A OUTPUT -p tcp -j HERD_OUTBOUND",
        ] {
            assert_eq!(
                stdout.matches(rule).count(),
                2,
                "{rule} for each family in:\n{stdout}"
            );
        }
        assert!(
            stdout.contains(&format!("ip6tables-{backend}-restore")),
            "{stdout}"
        );
        assert_eq!(
            nat_rules(&pod, backend).await,
            before,
            "--dry-run changed the rules"
        );

        let args = [
            "--backend",
            backend,
            "--skip-inbound-ports",
            "22,8000-8100",
            "--skip-outbound-cidrs",
            "10.0.0.0/8,fd00:10::/32",
        ];
        let (code, stdout, stderr) = init(&pod, &args, None).await;
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("2 jump(s) added"), "{stdout}");
        let installed = nat_rules(&pod, backend).await;
        // Once per family; a CIDR in its own family's table only.
        for (rule, times) in [
            ("-A PREROUTING -p tcp -j HERD_INBOUND", 2),
            (
                "-A HERD_INBOUND -p tcp -m tcp --dport 8000:8100 -j RETURN",
                2,
            ),
            ("-A HERD_OUTBOUND -d 10.0.0.0/8 -j RETURN", 1),
            ("-A HERD_OUTBOUND -d fd00:10::/32 -j RETURN", 1),
        ] {
            let found = installed.matches(rule).count();
            assert_eq!(found, times, "{rule} {times} times in:\n{installed}");
        }

        let (code, stdout, stderr) = init(&pod, &args, None).await;
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(stdout.contains("jumps already in place"), "{stdout}");
        assert_eq!(
            nat_rules(&pod, backend).await,
            installed,
            "a second run changed the rules"
        );
        // Auto keeps to the rule set in use.
        let (code, stdout, stderr) = init(&pod, &args[2..], None).await;
        assert_eq!(code, 0, "{stdout}{stderr}");
        assert!(
            stdout.contains(&format!("iptables-{backend}-restore")),
            "{stdout}"
        );
        assert_eq!(
            nat_rules(&pod, backend).await,
            installed,
            "auto changed the rules"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_flag_exits_64_with_one_line() {
    for (args, says) in [
        (&["--inbound-port", "0"][..], "--inbound-port"),
        (&["--skip-inbound-ports", "22,ssh"][..], "\"ssh\""),
        (
            &["--skip-outbound-cidrs", "10.0.0.0/99"][..],
            "expected a CIDR",
        ),
        (&["--backend", "iptables"][..], "'iptables'"),
        (&["--no-such-flag"][..], "--no-such-flag"),
    ] {
        let mut full = vec!["init"];
        full.extend_from_slice(args);
        let exit = herd_tests::proxy::run(&full).await;
        assert_eq!(exit.code, Some(64), "{args:?}: {}", exit.stderr);
        assert_eq!(exit.stderr.lines().count(), 1, "{args:?}: {}", exit.stderr);
        assert!(exit.stderr.contains(says), "{args:?}: {}", exit.stderr);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_iptables_failure_exits_non_zero_naming_the_rule_and_installs_nothing() {
    let pod = Pod::new("init-fails");
    // The legacy tools, but a restore that garbles the uid exemption on its way to the real one.
    let bin = tempfile::tempdir().expect("temp dir");
    for tool in [
        "iptables-legacy",
        "ip6tables-legacy",
        "ip6tables-legacy-restore",
    ] {
        std::os::unix::fs::symlink(format!("/usr/sbin/{tool}"), bin.path().join(tool))
            .expect("symlink a tool");
    }
    let fake = bin.path().join("iptables-legacy-restore");
    std::fs::write(
        &fake,
        "#!/bin/sh\n/bin/sed 's/--uid-owner/--uid-ownr/' | /usr/sbin/iptables-legacy-restore \"$@\"\n",
    )
    .expect("write the fake restore");
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the fake restore");

    let (code, stdout, stderr) = init(&pod, &["--backend", "legacy"], Some(bin.path())).await;
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.starts_with(
            "herd-proxy init: iptables-legacy-restore --noflush (IPv4) failed at line 6 \
             `-A HERD_OUTBOUND -m owner --uid-owner 2102 -j RETURN`: "
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("--uid-ownr"),
        "iptables' own words: {stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        !nat_rules(&pod, "legacy").await.contains("HERD"),
        "a refused table is not half installed"
    );

    // A backend that is not installed.
    let (code, _, stderr) = init(&pod, &["--backend", "nft"], Some(bin.path())).await;
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(
        stderr.trim(),
        "herd-proxy init: no iptables-nft-restore on PATH for the nft backend (nor a plain \
         iptables-restore of that variant)"
    );
}

/// A proxy config for a pod whose outbound services are on the host's side of its link.
fn outbound_mesh(web: SocketAddr, cache: SocketAddr) -> String {
    format!(
        "
        proxy:
          outbound: {{ listen: \"$OUTBOUND\", transparent: true }}
          admin: {{ listen: \"$ADMIN\" }}
        services:
          - name: web
            authorities: [web.mastodon]
            endpoints: [\"{web}\"]
            clusterIps: [10.96.0.10:80, \"[fd00:10:96::a]:80\"]
          - name: cache
            protocol: opaque
            endpoints: [\"{cache}\"]
            clusterIps: [10.96.0.11:6379, \"[fd00:10:96::b]:6379\"]
        "
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_to_a_cluster_ip_is_routed_as_its_service_over_ipv4_and_ipv6() {
    let pod = Pod::new("outbound");
    let web = Puma::start_on(
        puma::ECHO,
        SocketAddr::new(pod.host_ip().into(), ports::free()),
    )
    .await;
    let cache = Redis::start_on(SocketAddr::new(pod.host_ip().into(), ports::free())).await;
    install(&pod).await;
    let proxy = Proxy::start_in(&pod, PROXY_UID, &outbound_mesh(web.addr(), cache.addr())).await;

    for url in ["http://10.96.0.10/users", "http://[fd00:10:96::a]/users"] {
        let response = curl().in_pod(&pod, APP_UID).get(url).await;
        assert_eq!(response.status(), 200, "{url}: {response:?}");
        let echo = response.json();
        assert_eq!(echo["path"], "/users");
        // Through the proxy: it told the app who the client was.
        assert!(
            echo["headers"]["HTTP_X_FORWARDED_FOR"].is_string(),
            "{echo}"
        );
    }
    let requests = [("direction", "outbound"), ("service", "web")];
    assert_eq!(
        metric(&proxy, "herd_http_requests_total", &requests).await,
        2.0
    );

    for host in ["10.96.0.11", "fd00:10:96::b"] {
        let at = SocketAddr::new(host.parse().unwrap(), 6379);
        assert_eq!(
            redis::cli_in(&pod, APP_UID, at, &["SET", "toot", host]).await,
            "OK"
        );
        assert_eq!(
            redis::cli_in(&pod, APP_UID, at, &["GET", "toot"]).await,
            host
        );
    }
    // redis-cli's four connections, each balanced to the cache's endpoint as bytes.
    let opened = [("service", "cache")];
    assert_eq!(
        metric(&proxy, "herd_tcp_connections_opened_total", &opened).await,
        4.0
    );
    assert_eq!(
        redis::cli(cache.addr(), &["GET", "toot"]).await,
        "fd00:10:96::b"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn outbound_to_an_unknown_address_goes_there_as_tcp_counted_as_egress() {
    let pod = Pod::new("egress");
    let outside = Puma::start_on(
        puma::ECHO,
        SocketAddr::new(pod.host_ip().into(), ports::free()),
    )
    .await;
    let outside_v6 = Puma::start_on(
        puma::ECHO,
        SocketAddr::new(pod.host_ipv6().into(), ports::free()),
    )
    .await;
    let redis_outside = Redis::start_on(SocketAddr::new(pod.host_ip().into(), ports::free())).await;
    let closed = SocketAddr::new(pod.host_ip().into(), 1);
    install(&pod).await;
    let proxy = Proxy::start_in(&pod, PROXY_UID, &outbound_mesh(closed, closed)).await;

    for addr in [outside.addr(), outside_v6.addr()] {
        let response = curl()
            .in_pod(&pod, APP_UID)
            .get(format!("http://{addr}/"))
            .await;
        assert_eq!(response.status(), 200, "{addr}: {response:?}");
        // Bytes to where they were going: the proxy did not speak HTTP to the host.
        assert!(response.json()["headers"]["HTTP_X_FORWARDED_FOR"].is_null());
    }
    assert_eq!(
        redis::cli_in(&pod, APP_UID, redis_outside.addr(), &["PING"]).await,
        "PONG"
    );
    let egress = [("direction", "outbound"), ("service", "egress")];
    assert_eq!(
        metric(&proxy, "herd_tcp_connections_opened_total", &egress).await,
        3.0
    );
    assert_eq!(metric(&proxy, "herd_http_requests_total", &[]).await, 0.0);
    for labels in tcp_labels(&proxy, "egress").await {
        let keys: Vec<&str> = labels.keys().map(String::as_str).collect();
        let allowed = [
            "direction",
            "service",
            "outcome",
            "tls",
            "client_identity",
            "server_identity",
        ];
        assert!(
            keys.iter().all(|k| allowed.contains(k)),
            "no label names a host: {labels:?}"
        );
        // Egress is plain TCP to no one the mesh knows (where a family has these labels).
        for (key, plain) in [
            ("tls", "false"),
            ("server_identity", ""),
            ("client_identity", ""),
        ] {
            if let Some(value) = labels.get(key) {
                assert_eq!(value, plain, "{labels:?}");
            }
        }
    }

    // Under `egress: mesh-only` such a connection is closed, and counted.
    let refused = [("direction", "outbound"), ("reason", "egress-refused")];
    proxy
        .reload(
            &outbound_mesh(closed, closed)
                .replace("transparent: true", "transparent: true, egress: mesh-only"),
        )
        .await;
    let response = curl()
        .in_pod(&pod, APP_UID)
        .get(format!("http://{}/", outside.addr()))
        .await;
    assert_ne!(response.exit, Some(0), "{response:?}");
    assert_eq!(
        metric(&proxy, "herd_transparent_refused_total", &refused).await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_reaches_the_app_on_its_own_port_through_the_proxy_and_never_loops() {
    let pod = Pod::new("inbound");
    let app = Puma::start_in(&pod, puma::ECHO, SocketAddr::new(pod.ip().into(), 3000)).await;
    let app_v6 = Puma::start_in(&pod, puma::ECHO, SocketAddr::new(pod.ipv6().into(), 3001)).await;
    install(&pod).await;
    let proxy = Proxy::start_in(
        &pod,
        PROXY_UID,
        "
        proxy:
          inbound: { listen: \"$INBOUND\", transparent: true }
          outbound: { listen: \"$OUTBOUND\", transparent: true }
          admin: { listen: \"$ADMIN\" }
        ",
    )
    .await;

    // From outside the pod (the host's side of its link), to the app's own address and port.
    for app in [&app, &app_v6] {
        let url = format!("http://{}/statuses", app.addr());
        let response = curl().get(&url).await;
        assert_eq!(response.status(), 200, "{url}: {response:?}");
        let echo = response.json();
        assert_eq!(echo["path"], "/statuses");
        let host_side = if app.addr().is_ipv4() {
            pod.host_ip().to_string()
        } else {
            pod.host_ipv6().to_string()
        };
        assert_eq!(echo["headers"]["HTTP_X_FORWARDED_FOR"], host_side.as_str());
    }
    let inbound = [("direction", "inbound"), ("service", "inbound")];
    assert_eq!(
        metric(&proxy, "herd_http_requests_total", &inbound).await,
        2.0
    );

    // The outbound listener's port, redirected inbound, would be the proxy calling itself.
    let own = SocketAddr::new(pod.ip().into(), 4140);
    let response = curl().get(format!("http://{own}/")).await;
    assert_ne!(response.exit, Some(0), "{response:?}");
    let looped = [("direction", "inbound"), ("reason", "loop")];
    assert_eq!(
        metric(&proxy, "herd_transparent_refused_total", &looped).await,
        1.0
    );
    // So would the inbound listener itself, with no app to send to.
    let response = curl().get(format!("http://{}:4143/", pod.ip())).await;
    assert_ne!(response.exit, Some(0), "{response:?}");
    let none = [("direction", "inbound"), ("reason", "no-destination")];
    assert_eq!(
        metric(&proxy, "herd_transparent_refused_total", &none).await,
        1.0
    );
    assert_eq!(
        metric(&proxy, "herd_http_requests_total", &inbound).await,
        2.0
    );
    let log = proxy.stderr_text();
    assert!(log.contains("redirected connection refused"), "{log}");
}
