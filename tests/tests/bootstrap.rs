//! What an injected proxy relies on, run as the injector runs it: the whole configuration in
//! `HERD_PROXY_CONFIG_YAML` (no file), the trust anchors written in it (`trustAnchorsPem`),
//! `opaquePorts` for the pod's server-speaks-first ports, and `/ready?wait=` for the `postStart`
//! hook that holds a regular-sidecar pod's app until the proxy is ready.

use std::time::{Duration, Instant};

use herd_tests::control::Control;
use herd_tests::identity::{CaFiles, Root, sample, start};
use herd_tests::proxy::run_with_env;
use herd_tests::server::{self, reply};
use herd_tests::tcp::{self, Conn};
use herd_tests::{Proxy, curl};

const CONFIG_YAML: &str = "HERD_PROXY_CONFIG_YAML";

#[tokio::test(flavor = "multi_thread")]
async fn a_proxy_runs_on_the_configuration_in_its_environment_alone() {
    let app = server::http1(|_req| async { reply::text("from the app") }).await;
    let proxy = Proxy::start_from_environment(&format!(
        "
        proxy:
          inbound: {{ listen: $INBOUND, app: {} }}
          admin: {{ listen: $ADMIN }}
        ",
        app.addr()
    ))
    .await;

    let out = curl().get(proxy.inbound_url("/")).await;
    assert_eq!((out.status(), out.text().as_str()), (200, "from the app"));
    let config = proxy.admin_get("/config").await.json();
    assert_eq!(config["file"], "$HERD_PROXY_CONFIG_YAML", "{config}");
}

#[tokio::test]
async fn a_bad_configuration_in_the_environment_is_located_in_the_variable() {
    let bad = "proxy:\n  inbound:\n    listen: 127.0.0.1:4143\n    app: 127.0.0.1:3000\n    protocol: smtp\n";
    let exit = run_with_env(&["--check"], &[(CONFIG_YAML, bad)]).await;
    assert_eq!(exit.code, Some(64), "{}", exit.stderr);
    assert!(
        exit.stderr.starts_with(
            "$HERD_PROXY_CONFIG_YAML:5:15: proxy.inbound.protocol: unknown protocol `smtp`"
        ),
        "{}",
        exit.stderr
    );
    assert_eq!(exit.stderr.lines().count(), 1, "{}", exit.stderr);

    let good = "proxy:\n  admin: { listen: 127.0.0.1:4191 }\n";
    let exit = run_with_env(&["--check"], &[(CONFIG_YAML, good)]).await;
    assert_eq!(
        (exit.code, exit.stdout.as_str()),
        (Some(0), "$HERD_PROXY_CONFIG_YAML: ok\n"),
        "{}",
        exit.stderr
    );

    // A file, when given, wins over the variable.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herd.yaml");
    std::fs::write(&file, good).unwrap();
    let exit = run_with_env(
        &["--check", "--config", file.to_str().unwrap()],
        &[(CONFIG_YAML, bad)],
    )
    .await;
    assert_eq!(exit.code, Some(0), "{}", exit.stderr);

    // Neither: one line saying what to give.
    let exit = run_with_env(&["--check"], &[]).await;
    assert_eq!(exit.code, Some(64), "{}", exit.stderr);
    assert!(
        exit.stderr.starts_with(
            "herd-proxy: no configuration: give --config FILE (or HERD_PROXY_CONFIG), or the YAML itself in HERD_PROXY_CONFIG_YAML"
        ),
        "{}",
        exit.stderr
    );
}

/// The injector writes the mesh's roots into the configuration: the proxy asks for its
/// certificate over TLS with them, as with a file of them.
#[tokio::test(flavor = "multi_thread")]
async fn trust_anchors_written_inline_authenticate_the_identity_service() {
    let root = Root::generate("herd test root");
    let files = CaFiles::new(&root, &[&root]);
    files.write_tokens(
        "
        tokens:
          - { token: web-0123456789abcdef, namespace: mastodon, serviceAccount: web }
        ",
    );
    let (control, identity) = start(&files, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "web-0123456789abcdef").unwrap();
    // Written without indentation of its own, so the kit's dedent leaves it as it is.
    let yaml = |root: &str| {
        let pem: String = root.lines().map(|line| format!("      {line}\n")).collect();
        format!(
            "proxy:\n  admin: {{ listen: $ADMIN }}\n  identity:\n    addresses: [{identity}]\n    \
             id: spiffe://cluster.local/ns/mastodon/sa/web\n    tokenFile: {}\n    \
             trustAnchorsPem: |\n{pem}",
            token.display()
        )
    };

    let _proxy = Proxy::start_from_environment(&yaml(&root.cert_pem)).await;
    let metrics = control.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "herd_control_connections_total{port=\"identity\",security=\"tls\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "herd_control_certificates_issued_total"),
        1.0,
        "{metrics}"
    );

    // Another CA's root inline: the service is not trusted, and nothing is issued.
    let other = Root::generate("another root").cert_pem;
    let stranger = Proxy::start_unready_from_environment(&yaml(&other)).await;
    let line = stranger.wait_for_log("cannot get a certificate").await;
    assert!(line.contains("UnknownIssuer"), "{line}");
    assert_eq!(stranger.admin_get("/ready").await.status, 503);
}

/// A server that speaks first (SMTP's banner) behind an HTTP inbound listener: detection waits
/// for the client, which waits for the banner, until `detectTimeout`; on an opaque port the
/// bytes flow at once.
#[tokio::test(flavor = "multi_thread")]
async fn an_opaque_port_is_never_sniffed() {
    let app = server::banner(b"220 ready\r\n").await;
    let yaml = |ports: &str| {
        format!(
            "
            proxy:
              inbound: {{ listen: $INBOUND, app: {}, detectTimeout: 30s, opaquePorts: [{ports}] }}
              admin: {{ listen: $ADMIN }}
            ",
            app.addr()
        )
    };

    // Every port opaque (a range), the listener's among them.
    let opaque = Proxy::start_from_environment(&yaml("\"1-65535\"")).await;
    let start = Instant::now();
    let mut conn = Conn::connect(opaque.inbound()).await;
    assert_eq!(conn.read_exact(11).await, b"220 ready\r\n");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "the banner took {:?}",
        start.elapsed()
    );
    conn.send("HELO herd\r\n").await;
    assert_eq!(conn.read_exact(11).await, b"HELO herd\r\n");

    // Another port opaque: this one is sniffed, and the banner waits.
    let sniffed = Proxy::start_from_environment(&yaml("1")).await;
    let mut conn = Conn::connect(sniffed.inbound()).await;
    assert_eq!(conn.read_some(Duration::from_secs(1)).await, None);
}

/// `/ready?wait=` answers as soon as the proxy turns ready, or when the wait is over.
#[tokio::test(flavor = "multi_thread")]
async fn ready_wait_holds_the_answer_until_the_proxy_is_ready() {
    let mut control = Control::stopped(&[]);
    let proxy = Proxy::start_unready(&format!(
        "
        proxy:
          outbound: {{ listen: $OUTBOUND }}
          admin: {{ listen: $ADMIN }}
          control: {{ addresses: [{}], id: web-0, namespace: mastodon }}
        ",
        control.discovery()
    ))
    .await;

    let start = Instant::now();
    let answer = proxy.admin_get("/ready?wait=300ms").await;
    assert_eq!(answer.status, 503);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );

    for bad in ["/ready?wait=soon", "/ready?wait=1h"] {
        let answer = proxy.admin_get(bad).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.text());
    }

    let admin = proxy.admin();
    let waiting = tokio::spawn(async move { tcp::get(admin, "/ready?wait=60s").await });
    // The answer is held while the control plane is away...
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished());
    // ...and given once the proxy has its first state.
    control.restart().await;
    let answer = waiting.await.unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());
}
