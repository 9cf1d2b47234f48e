//! Mutual TLS on the inbound listener (issue 14): a proxy certified by herd-control's identity
//! service, and real TLS clients (curl, openssl s_client) holding certificates from the same CA,
//! from another CA, expired ones, none at all, or no TLS.

use std::net::SocketAddr;
use std::time::Duration;

use herd_tests::control::Control;
use herd_tests::curl::{Output, curl};
use herd_tests::identity::{self as kit, CaFiles, Root};
use herd_tests::prometheus::Exposition;
use herd_tests::proxy::Proxy;
use herd_tests::server::{self, Server, reply};
use herd_tests::{TIMEOUT, eventually};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use tempfile::TempDir;

const WEB: &str = "spiffe://cluster.local/ns/mastodon/sa/web";
const SIDEKIQ: &str = "spiffe://cluster.local/ns/mastodon/sa/sidekiq";
const WEB_TOKEN: &str = "web-token-0123456789abcdef";
const SIDEKIQ_TOKEN: &str = "sidekiq-token-0123456789abcdef";
const STREAMING: &str = "spiffe://cluster.local/ns/mastodon/sa/streaming";
const STREAMING_TOKEN: &str = "streaming-token-0123456789abcdef";

/// A CA, herd-control serving it, and a directory for the files clients use.
struct Mesh {
    root: Root,
    _files: CaFiles,
    _control: Control,
    identity: SocketAddr,
    dir: TempDir,
}

async fn mesh() -> Mesh {
    let root = Root::generate("herd test root");
    let files = CaFiles::new(&root, &[&root]);
    files.write_tokens(&format!(
        "
        tokens:
          - {{token: {WEB_TOKEN}, namespace: mastodon, serviceAccount: web}}
          - {{token: {SIDEKIQ_TOKEN}, namespace: mastodon, serviceAccount: sidekiq}}
          - {{token: {STREAMING_TOKEN}, namespace: mastodon, serviceAccount: streaming}}
        "
    ));
    let (control, identity) = kit::start(&files, &[]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("web.token"), WEB_TOKEN).expect("token file");
    Mesh {
        root,
        _files: files,
        _control: control,
        identity,
        dir,
    }
}

impl Mesh {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// The web pod's proxy in front of `app`.
    async fn proxy(&self, app: SocketAddr, mtls: &str) -> Proxy {
        Proxy::start(&self.proxy_yaml(app, mtls, "")).await
    }

    /// A strict opaque pod's proxy in front of `app` (bytes, Redis-like).
    async fn opaque_proxy(&self, app: SocketAddr) -> Proxy {
        Proxy::start(&format!(
            "
            proxy:
              admin: {{listen: $ADMIN}}
              inbound: {{listen: $INBOUND, app: {app}, protocol: opaque, mtls: strict}}
              identity: {{addresses: [{identity}], id: {WEB}, tokenFile: {token}}}
            ",
            identity = self.identity,
            token = self.path("web.token"),
        ))
        .await
    }

    /// The web pod's proxy's file, with `more` (top-level keys) after it.
    fn proxy_yaml(&self, app: SocketAddr, mtls: &str, more: &str) -> String {
        format!(
            "{}\n{}",
            herd_tests::dedent(&format!(
                "
                proxy:
                  admin: {{listen: $ADMIN}}
                  inbound:
                    listen: $INBOUND
                    app: {app}
                    mtls: {mtls}
                    clientIdentityHeader: X-Client-Identity
                    accessLog: {{format: json}}
                  identity:
                    addresses: [{identity}]
                    id: {WEB}
                    tokenFile: {token}
                ",
                identity = self.identity,
                token = self.path("web.token"),
            )),
            herd_tests::dedent(more)
        )
    }

    /// A client certificate for `who`, certified by the identity service like any workload's:
    /// writes `NAME.crt`, `NAME.key` and `NAME.bundle` and returns NAME.
    async fn client(&self, name: &str, who: &str, token: &str) -> String {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(who.try_into().expect("URI"))];
        let csr = params.serialize_request(&key).expect("CSR").der().to_vec();
        let answer = kit::certify(self.identity, csr, token)
            .await
            .expect("certified");
        std::fs::write(
            self.path(&format!("{name}.crt")),
            kit::pem(&answer.certificate_chain),
        )
        .expect("cert");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("key");
        std::fs::write(
            self.path(&format!("{name}.bundle")),
            kit::pem(&answer.trust_bundle),
        )
        .expect("bundle");
        name.to_owned()
    }

    /// A leaf for `who` signed by `issuer` directly (another CA, or a validity of our choosing).
    fn signed_by(&self, name: &str, issuer: &Root, who: &str, days: (i64, i64)) -> String {
        let valid = time::Duration::days(days.0)..time::Duration::days(days.1);
        kit::leaf_valid(issuer, who, self.dir.path(), name, valid);
        name.to_owned()
    }

    /// `brief.crt`/`brief.key`: sidekiq's certificate, expiring 4 seconds from now.
    fn signed_brief(&self) {
        let valid = time::Duration::minutes(-1)..time::Duration::seconds(4);
        kit::leaf_valid(&self.root, SIDEKIQ, self.dir.path(), "brief", valid);
    }

    /// curl over TLS with `client`'s certificate (`None`: without one). `-k`: a mesh server's
    /// certificate names a SPIFFE ID, not a host name, so curl cannot check it; the proxy's
    /// own outbound side checks it exactly (its own tests).
    async fn curl_tls(&self, proxy: &Proxy, client: Option<&str>, extra: &[&str]) -> Output {
        let mut c = curl().arg("-k");
        if let Some(name) = client {
            c = c
                .arg("--cert")
                .arg(self.path(&format!("{name}.crt")))
                .arg("--key")
                .arg(self.path(&format!("{name}.key")));
        }
        c.args(extra.iter().copied())
            .get(format!("https://{}/whoami", proxy.inbound()))
            .await
    }

    /// `openssl s_client` with `client`'s certificate and these extra flags, sending one request.
    async fn s_client(
        &self,
        proxy: &Proxy,
        client: Option<&str>,
        extra: &[&str],
    ) -> (bool, String) {
        let mut args = vec![
            "s_client".to_owned(),
            "-connect".to_owned(),
            proxy.inbound().to_string(),
            "-quiet".to_owned(),
            "-no_ign_eof".to_owned(),
        ];
        if let Some(name) = client {
            args.extend([
                "-cert".into(),
                self.path(&format!("{name}.crt")),
                "-key".into(),
                self.path(&format!("{name}.key")),
            ]);
        }
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut command = tokio::process::Command::new("openssl");
        command
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("openssl");
        let mut stdin = child.stdin.take().expect("stdin");
        use tokio::io::AsyncWriteExt;
        let _ = stdin
            .write_all(b"GET /whoami HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            .await;
        let output = herd_tests::within("openssl s_client", TIMEOUT, child.wait_with_output())
            .await
            .expect("openssl ran");
        drop(stdin);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        (text.contains("HTTP/1.1 200"), text)
    }
}

/// The app: answers with the identity header it was given, if any.
async fn whoami() -> Server {
    server::http1(|req| async move {
        let id = req
            .headers()
            .get("x-client-identity")
            .map_or("none".to_owned(), |v| v.to_str().unwrap_or("?").to_owned());
        reply::text_owned(id)
    })
    .await
}

fn metric(text: &str, line_start: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_strict_port_serves_mutual_tls_with_the_clients_identity_and_refuses_plaintext() {
    let mesh = mesh().await;
    let app = whoami().await;
    let proxy = mesh.proxy(app.addr(), "strict").await;
    let sidekiq = mesh.client("sidekiq", SIDEKIQ, SIDEKIQ_TOKEN).await;

    // HTTP/1.1 over mutual TLS: the app learns who called, and a client cannot claim otherwise.
    let out = mesh
        .curl_tls(
            &proxy,
            Some(&sidekiq),
            &[
                "--http1.1",
                "-H",
                "X-Client-Identity: spiffe://evil/ns/x/sa/y",
            ],
        )
        .await;
    assert_eq!((out.exit, out.status()), (Some(0), 200), "{}", out.stderr);
    assert_eq!(out.text(), SIDEKIQ);
    assert_eq!(out.head().version, "HTTP/1.1");

    // HTTP/2, negotiated by ALPN.
    let out = mesh.curl_tls(&proxy, Some(&sidekiq), &["--http2"]).await;
    assert_eq!((out.status(), out.head().version.as_str()), (200, "HTTP/2"));
    assert_eq!(out.text(), SIDEKIQ);

    // TLS without a client certificate: refused in the handshake.
    let out = mesh.curl_tls(&proxy, None, &[]).await;
    assert_ne!(out.exit, Some(0), "no client certificate must fail");
    assert!(out.heads.is_empty());

    // Plaintext: a 403 that says why, and nothing reaches the app.
    let before = app.requests();
    let out = curl()
        .get(format!("http://{}/whoami", proxy.inbound()))
        .await;
    assert_eq!(out.status(), 403);
    let port = proxy.inbound().port();
    assert_eq!(
        out.header("herd-proxy-error"),
        Some(format!("plaintext refused: port {port} requires mutual TLS").as_str())
    );
    // Not even bytes that are not HTTP.
    let mut raw = tokio::net::TcpStream::connect(proxy.inbound())
        .await
        .unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut buf = Vec::new();
    let read = herd_tests::within("the proxy to close", TIMEOUT, raw.read_to_end(&mut buf)).await;
    assert!(read.is_err() || buf.is_empty(), "{buf:?}");
    assert_eq!(app.requests(), before);

    // Metrics and the access log say what happened.
    let text = proxy.admin_get("/metrics").await.text();
    let labels = r#"{direction="inbound",listener="inbound""#;
    assert!(
        metric(&text, &format!("herd_tls_handshakes_total{labels}}}")) >= 2.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("herd_tls_plaintext_refused_total{labels}}}")
        ),
        2.0
    );
    assert_eq!(
        metric(
            &text,
            &format!(
                "herd_tls_handshake_failures_total{labels},reason=\"no-client-certificate\"}}"
            )
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(&text, "herd_identity_renewals_total{result=\"ok\"}"),
        1.0
    );
    let expiry = metric(&text, "herd_identity_certificate_expiry_timestamp_seconds");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (expiry - now - 86_400.0).abs() < 120.0,
        "expiry {expiry}, now {now}"
    );
    let lines = proxy.wait_for_stdout_lines(2).await;
    let entry: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(entry["clientIdentity"], SIDEKIQ);
}

#[tokio::test]
async fn foreign_peers_are_refused_and_others_are_unaffected() {
    let mesh = mesh().await;
    let app = whoami().await;
    let proxy = mesh.proxy(app.addr(), "strict").await;
    let sidekiq = mesh.client("sidekiq", SIDEKIQ, SIDEKIQ_TOKEN).await;
    let (ok, text) = mesh.s_client(&proxy, Some(&sidekiq), &[]).await;
    assert!(ok, "a good peer, through openssl: {text}");
    assert!(text.contains(SIDEKIQ), "{text}");

    let stranger = Root::generate("another mesh");
    let cases = [
        (
            "another CA",
            mesh.signed_by("stranger", &stranger, SIDEKIQ, (-1, 1)),
            vec![],
        ),
        (
            "an expired certificate",
            mesh.signed_by("expired", &mesh.root, SIDEKIQ, (-3, -1)),
            vec![],
        ),
        (
            "not yet valid",
            mesh.signed_by("future", &mesh.root, SIDEKIQ, (1, 3)),
            vec![],
        ),
        ("TLS 1.2 only", sidekiq.clone(), vec!["-tls1_2"]),
    ];
    for (what, client, extra) in cases {
        let (ok, text) = mesh.s_client(&proxy, Some(&client), &extra).await;
        assert!(!ok, "{what} must be refused: {text}");
        assert!(!text.contains(SIDEKIQ), "{what}: {text}");
        // A good client right after is served.
        let out = mesh.curl_tls(&proxy, Some(&sidekiq), &[]).await;
        assert_eq!(out.status(), 200, "after {what}: {}", out.stderr);
    }
    // A certificate without a SPIFFE ID (a DNS name only), from the mesh's own CA.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["web.example".to_owned()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let ca = rcgen::Issuer::from_ca_cert_pem(
        &mesh.root.cert_pem,
        KeyPair::from_pem(&mesh.root.key_pem).unwrap(),
    )
    .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(mesh.path("dns.crt"), cert.pem()).unwrap();
    std::fs::write(mesh.path("dns.key"), key.serialize_pem()).unwrap();
    let (ok, text) = mesh.s_client(&proxy, Some("dns"), &[]).await;
    assert!(!ok, "a certificate without a SPIFFE ID: {text}");

    let text = proxy.admin_get("/metrics").await.text();
    let failures: f64 = text
        .lines()
        .filter(|l| l.starts_with("herd_tls_handshake_failures_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(failures >= 5.0, "{text}");
    assert!(
        text.contains(r#"reason="expired-certificate"} 1"#)
            && text.contains(r#"reason="unknown-issuer"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn a_permissive_port_serves_both_and_only_mutual_tls_carries_an_identity() {
    let mesh = mesh().await;
    let app = whoami().await;
    let proxy = mesh.proxy(app.addr(), "permissive").await;
    let sidekiq = mesh.client("sidekiq", SIDEKIQ, SIDEKIQ_TOKEN).await;

    let out = curl()
        .header("X-Client-Identity: spiffe://cluster.local/ns/mastodon/sa/admin")
        .get(format!("http://{}/whoami", proxy.inbound()))
        .await;
    assert_eq!(
        (out.status(), out.text().as_str()),
        (200, "none"),
        "a claim in plaintext is dropped"
    );
    let out = mesh.curl_tls(&proxy, Some(&sidekiq), &[]).await;
    assert_eq!((out.status(), out.text().as_str()), (200, SIDEKIQ));
}

#[tokio::test]
async fn ready_waits_for_the_first_certificate() {
    let mesh = mesh().await;
    let app = whoami().await;
    // A token the identity service does not know: no certificate, not ready.
    std::fs::write(mesh.path("web.token"), "not-a-known-token-000000").unwrap();
    let proxy = Proxy::start_unready(&format!(
        "
        proxy:
          admin: {{listen: $ADMIN}}
          inbound: {{listen: $INBOUND, app: {app}, mtls: strict}}
          identity: {{addresses: [{identity}], id: {WEB}, tokenFile: {token}}}
        ",
        app = app.addr(),
        identity = mesh.identity,
        token = mesh.path("web.token"),
    ))
    .await;
    eventually("a refused renewal", TIMEOUT, || async {
        let text = proxy.admin_get("/metrics").await.text();
        (metric(&text, "herd_identity_renewals_total{result=\"error\"}") >= 1.0).then_some(())
    })
    .await;
    assert_eq!(proxy.admin_get("/ready").await.status, 503);
    let log = proxy.wait_for_log("cannot get a certificate").await;
    assert!(log.contains("the identity service refused"), "{log}");
    assert!(
        !log.contains("not-a-known-token"),
        "a token is never logged: {log}"
    );

    // The right token (a projected token is rewritten in place by the kubelet): ready, once
    // the next attempt (full-jitter backoff, at most 2 s after two failures) is made.
    std::fs::write(mesh.path("web.token"), WEB_TOKEN).unwrap();
    eventually("ready", Duration::from_secs(70), || async {
        (proxy.admin_get("/ready").await.status == 200).then_some(())
    })
    .await;
}

/// A TCP relay to `to` that keeps what the client side sent, to look at the wire.
async fn relay(to: SocketAddr) -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(to).await else {
                    return;
                };
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let up = async {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        match client_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                keep.lock().unwrap().extend_from_slice(&buf[..n]);
                                if server_write.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = server_write.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    let _ = client_write.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (addr, seen)
}

impl Mesh {
    /// The sidekiq pod's proxy: an outbound listener and these services.
    async fn client_proxy(&self, services: &str) -> Proxy {
        std::fs::write(self.path("sidekiq.token"), SIDEKIQ_TOKEN).expect("token file");
        Proxy::start(&format!(
            "
            proxy:
              admin: {{listen: $ADMIN}}
              outbound: {{listen: $OUTBOUND}}
              identity:
                addresses: [{identity}]
                id: {SIDEKIQ}
                tokenFile: {token}
            services:
            {services}
            ",
            identity = self.identity,
            token = self.path("sidekiq.token"),
        ))
        .await
    }
}

#[tokio::test]
async fn two_proxies_carry_requests_over_mutual_tls_and_one_http2_connection() {
    let mesh = mesh().await;
    let app = whoami().await;
    let web = mesh.proxy(app.addr(), "strict").await;
    let (wire, seen) = relay(web.inbound()).await;
    let db = "spiffe://cluster.local/ns/mastodon/sa/db";
    let sidekiq = mesh
        .client_proxy(&format!(
            "
              - name: web
                authorities: [web]
                endpoints: [{{address: {wire}, identity: {WEB}}}]
              - name: impostor
                authorities: [db]
                endpoints: [{{address: {web_inbound}, identity: {db}}}]
            ",
            web_inbound = web.inbound(),
        ))
        .await;

    let out = curl()
        .proxy(sidekiq.outbound())
        .get("http://web/whoami")
        .await;
    assert_eq!(out.status(), 200, "{}", out.stderr);
    assert_eq!(out.text(), SIDEKIQ, "the app behind web learns who called");

    // Twenty at once: one connection between the proxies, multiplexed.
    let calls = (0..20).map(|_| curl().proxy(sidekiq.outbound()).get("http://web/whoami"));
    for out in futures_util::future::join_all(calls).await {
        assert_eq!((out.status(), out.text().as_str()), (200, SIDEKIQ));
    }
    let text = web.admin_get("/metrics").await.text();
    let labels = r#"{direction="inbound",listener="inbound"}"#;
    assert_eq!(
        metric(&text, &format!("herd_tls_handshakes_total{labels}")),
        1.0,
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            &format!("herd_listener_connections_accepted_total{labels}")
        ),
        1.0
    );
    assert_eq!(app.requests(), 21);

    // On the wire between the proxies: a TLS handshake record, and no request in the clear.
    let bytes = seen.lock().unwrap().clone();
    assert_eq!(&bytes[..2], &[0x16, 0x03], "a TLS record first");
    let plain = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    assert!(
        !plain(b"whoami") && !plain(b"PRI * HTTP/2.0"),
        "nothing in the clear"
    );

    // A server that is not who the endpoint says: 502 naming both identities.
    let out = curl()
        .proxy(sidekiq.outbound())
        .get("http://db/whoami")
        .await;
    assert_eq!(out.status(), 502);
    let error = out.header("herd-proxy-error").unwrap_or_default();
    assert!(
        error.contains(&format!("the server is {WEB}, not the expected {db}")),
        "{error}"
    );
    assert_eq!(app.requests(), 21, "nothing reached the app");
    let text = sidekiq.admin_get("/metrics").await.text();
    assert!(text.contains(r#"error="tls""#), "{text}");
}

/// `herd_http_responses_total` where traffic crosses the mesh: the inbound proxy counts the
/// client's identity, the outbound one the server's, and plaintext stays `tls="false"` without
/// identities; a response the proxy made after trying a meshed endpoint carries the identity it
/// had to present, one it made before trying any carries none.
#[tokio::test]
async fn responses_are_counted_with_tls_and_the_peers_identity() {
    let mesh = mesh().await;
    let app = whoami().await;
    let web = mesh.proxy(app.addr(), "permissive").await;
    let db = "spiffe://cluster.local/ns/mastodon/sa/db";
    let sidekiq = mesh
        .client_proxy(&format!(
            "
              - name: web
                authorities: [web]
                endpoints: [{{address: {inbound}, identity: {WEB}}}]
              - name: plain
                authorities: [plain]
                endpoints: [{app}]
              - name: impostor
                authorities: [db]
                endpoints: [{{address: {inbound}, identity: {db}}}]
            ",
            inbound = web.inbound(),
            app = app.addr(),
        ))
        .await;

    const MESHED: usize = 7;
    for _ in 0..MESHED {
        let out = curl()
            .proxy(sidekiq.outbound())
            .get("http://web/whoami")
            .await;
        assert_eq!((out.status(), out.text().as_str()), (200, SIDEKIQ));
    }
    // Plaintext both ways: an outbound service that is not meshed, and a client of the
    // permissive port without TLS.
    let out = curl()
        .proxy(sidekiq.outbound())
        .get("http://plain/whoami")
        .await;
    assert_eq!((out.status(), out.text().as_str()), (200, "none"));
    let out = curl().get(format!("http://{}/whoami", web.inbound())).await;
    assert_eq!((out.status(), out.text().as_str()), (200, "none"));
    // The proxy's own answers: the server is not who the endpoint says; no service at all.
    let out = curl()
        .proxy(sidekiq.outbound())
        .get("http://db/whoami")
        .await;
    assert_eq!(out.status(), 502);
    let out = curl()
        .proxy(sidekiq.outbound())
        .get("http://nobody/whoami")
        .await;
    assert_eq!(out.status(), 404);

    let name = "herd_http_responses_total";
    let text = web.admin_get("/metrics").await.text();
    let inbound = Exposition::parse(&text);
    let meshed = MESHED as f64;
    assert_eq!(
        inbound.sum(
            name,
            &[
                ("direction", "inbound"),
                ("tls", "true"),
                ("client_identity", SIDEKIQ),
                ("server_identity", ""),
                ("status_code", "200"),
            ]
        ),
        Some(meshed),
        "{text}"
    );
    assert_eq!(
        inbound.sum(
            name,
            &[
                ("direction", "inbound"),
                ("tls", "false"),
                ("client_identity", ""),
                ("server_identity", ""),
            ]
        ),
        Some(1.0),
        "the plaintext client"
    );
    assert_eq!(
        inbound.sum(name, &[]),
        Some(meshed + 1.0),
        "nothing else counted"
    );

    let text = sidekiq.admin_get("/metrics").await.text();
    let outbound = Exposition::parse(&text);
    let count = |labels: &[(&str, &str)]| outbound.sum(name, labels);
    assert_eq!(
        count(&[
            ("service", "web"),
            ("tls", "true"),
            ("client_identity", ""),
            ("server_identity", WEB),
            ("status_code", "200"),
        ]),
        Some(meshed),
        "{text}"
    );
    assert_eq!(
        count(&[
            ("service", "plain"),
            ("tls", "false"),
            ("client_identity", ""),
            ("server_identity", ""),
        ]),
        Some(1.0)
    );
    assert_eq!(
        count(&[
            ("service", "impostor"),
            ("tls", "true"),
            ("server_identity", db),
            ("error", "tls"),
        ]),
        Some(1.0),
        "a mismatch counts under the identity the endpoint had to present"
    );
    assert_eq!(
        count(&[
            ("service", "unknown"),
            ("tls", "false"),
            ("server_identity", ""),
            ("error", "no-route"),
        ]),
        Some(1.0),
        "no endpoint was tried"
    );
    assert_eq!(count(&[]), Some(meshed + 3.0), "nothing else counted");
    // Requests are counted before an endpoint is chosen: no such labels there.
    let requests: Vec<_> = outbound.find("herd_http_requests_total", &[]).collect();
    assert!(!requests.is_empty());
    assert!(
        requests.iter().all(|s| !s.labels.contains_key("tls")),
        "{requests:?}"
    );
}

#[tokio::test]
async fn websockets_and_opaque_bytes_cross_the_mesh_over_mutual_tls() {
    let mesh = mesh().await;
    let echo_ws = server::websocket_echo().await;
    let ws_pod = mesh.proxy(echo_ws.addr(), "strict").await;

    // An opaque pod (Redis-like: bytes echoed), strict.
    let echo = server::tcp_echo().await;
    let redis = mesh.opaque_proxy(echo.addr()).await;
    let redis_listen = herd_tests::ports::addr();
    let sidekiq = mesh
        .client_proxy(&format!(
            "
              - name: stream
                authorities: [stream]
                endpoints: [{{address: {ws}, identity: {WEB}}}]
              - name: redis
                protocol: opaque
                listen: {redis_listen}
                endpoints: [{{address: {redis}, identity: {WEB}}}]
            ",
            ws = ws_pod.inbound(),
            redis = redis.inbound(),
        ))
        .await;

    let mut ws = herd_tests::ws::connect(sidekiq.outbound(), "stream", "/").await;
    assert_eq!(
        herd_tests::ws::next(&mut ws).await,
        tokio_tungstenite::tungstenite::Message::text("welcome")
    );
    herd_tests::ws::round_trip(&mut ws, tokio_tungstenite::tungstenite::Message::text("hi")).await;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(redis_listen).await.unwrap();
    conn.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
    let mut buf = [0u8; 14];
    herd_tests::within("the echo", TIMEOUT, conn.read_exact(&mut buf))
        .await
        .unwrap();
    assert_eq!(&buf, b"*1\r\n$4\r\nPING\r\n");

    for pod in [&ws_pod, &redis] {
        let text = pod.admin_get("/metrics").await.text();
        let labels = r#"{direction="inbound",listener="inbound"}"#;
        assert_eq!(
            metric(&text, &format!("herd_tls_handshakes_total{labels}")),
            1.0,
            "{text}"
        );
        // The tunnel (an upgraded WebSocket, opaque bytes) counts with the client's identity.
        let opened = Exposition::parse(&text).sum(
            "herd_tcp_connections_opened_total",
            &[
                ("direction", "inbound"),
                ("tls", "true"),
                ("client_identity", SIDEKIQ),
                ("server_identity", ""),
            ],
        );
        assert_eq!(opened, Some(1.0), "{text}");
    }
    // And on the calling side, with the identity each endpoint presented.
    let text = sidekiq.admin_get("/metrics").await.text();
    let outbound = Exposition::parse(&text);
    for service in ["stream", "redis"] {
        let opened = outbound.sum(
            "herd_tcp_connections_opened_total",
            &[
                ("direction", "outbound"),
                ("service", service),
                ("tls", "true"),
                ("client_identity", ""),
                ("server_identity", WEB),
            ],
        );
        assert_eq!(opened, Some(1.0), "{service}: {text}");
    }
}

#[tokio::test]
async fn a_policy_locks_a_port_to_the_identities_it_names_and_changes_without_a_restart() {
    let mesh = mesh().await;
    let app = whoami().await;
    let yaml = |allow: &str| {
        mesh.proxy_yaml(
            app.addr(),
            "permissive",
            &format!(
                "
                policies:
                  - name: web-clients
                    server: {WEB}
                    allow: [{allow}]
                "
            ),
        )
    };
    let proxy = Proxy::start(&yaml(SIDEKIQ)).await;
    let port = proxy.inbound().port();
    let sidekiq = mesh.client("sidekiq", SIDEKIQ, SIDEKIQ_TOKEN).await;
    let streaming = mesh.client("streaming", STREAMING, STREAMING_TOKEN).await;
    let plaintext = || curl().get(format!("http://{}/whoami", proxy.inbound()));

    let out = mesh.curl_tls(&proxy, Some(&sidekiq), &[]).await;
    assert_eq!((out.status(), out.text().as_str()), (200, SIDEKIQ));
    let out = mesh.curl_tls(&proxy, Some(&streaming), &[]).await;
    assert_eq!(out.status(), 403);
    assert_eq!(
        out.header("herd-proxy-error"),
        Some(format!("unauthorized: {STREAMING} on port {port}").as_str())
    );
    let out = plaintext().await;
    assert_eq!(out.status(), 403);
    assert_eq!(
        out.header("herd-proxy-error"),
        Some(format!("unauthorized: 127.0.0.1 on port {port}").as_str())
    );
    assert_eq!(
        app.requests(),
        1,
        "only the allowed request reached the app"
    );

    // A new policy applies to the next requests, without a restart.
    proxy.reload(&yaml("unauthenticated")).await;
    assert_eq!(plaintext().await.status(), 200);
    assert_eq!(
        mesh.curl_tls(&proxy, Some(&sidekiq), &[]).await.status(),
        403
    );

    let text = proxy.admin_get("/metrics").await.text();
    let decision = |client: &str, result: &str| {
        metric(
            &text,
            &format!(
                "herd_authorization_decisions_total{{client=\"{client}\",port=\"{port}\",result=\"{result}\"}}"
            ),
        )
    };
    assert_eq!(decision(SIDEKIQ, "allowed"), 1.0, "{text}");
    assert_eq!(decision(SIDEKIQ, "denied"), 1.0);
    assert_eq!(decision(STREAMING, "denied"), 1.0);
    assert_eq!(decision("unauthenticated", "denied"), 1.0);
    assert_eq!(decision("unauthenticated", "allowed"), 1.0);
    assert!(text.contains(r#"error="unauthorized""#), "{text}");
}

#[tokio::test]
async fn a_denied_opaque_connection_is_closed_before_a_byte_reaches_the_app() {
    let mesh = mesh().await;
    let echo = server::tcp_echo().await;
    // Postgres-like: an opaque port that only the web account may use; everyone else denied.
    let postgres = Proxy::start(&format!(
        "
        proxy:
          admin: {{listen: $ADMIN}}
          inbound: {{listen: $INBOUND, app: {app}, protocol: opaque, defaultPolicy: deny}}
          identity: {{addresses: [{identity}], id: {WEB}, tokenFile: {token}}}
        policies:
          - name: postgres-clients
            allow: [{WEB}]
        ",
        app = echo.addr(),
        identity = mesh.identity,
        token = mesh.path("web.token"),
    ))
    .await;
    let listen = herd_tests::ports::addr();
    let sidekiq = mesh
        .client_proxy(&format!(
            "
              - name: postgres
                protocol: opaque
                listen: {listen}
                endpoints: [{{address: {postgres}, identity: {WEB}}}]
            ",
            postgres = postgres.inbound(),
        ))
        .await;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(listen).await.unwrap();
    let _ = conn.write_all(b"SELECT 1;").await;
    let mut buf = Vec::new();
    let read = herd_tests::within("the tunnel to close", TIMEOUT, conn.read_to_end(&mut buf)).await;
    assert!(
        read.is_err() || buf.is_empty(),
        "nothing comes back: {buf:?}"
    );
    // Plaintext straight to the port: denied too.
    let mut raw = tokio::net::TcpStream::connect(postgres.inbound())
        .await
        .unwrap();
    let _ = raw.write_all(b"SELECT 1;").await;
    let mut buf = Vec::new();
    let read = herd_tests::within("the proxy to close", TIMEOUT, raw.read_to_end(&mut buf)).await;
    assert!(read.is_err() || buf.is_empty(), "{buf:?}");
    assert_eq!(echo.connections(), 0, "the app never saw a connection");
    let text = postgres.admin_get("/metrics").await.text();
    let port = postgres.inbound().port();
    assert_eq!(
        metric(
            &text,
            &format!(
                "herd_authorization_decisions_total{{client=\"{SIDEKIQ}\",port=\"{port}\",result=\"denied\"}}"
            )
        ),
        1.0,
        "{text}"
    );
    drop(sidekiq);
}

#[tokio::test]
async fn policies_from_the_control_plane_govern_the_proxies_they_name() {
    let root = Root::generate("herd test root");
    let files = CaFiles::new(&root, &[&root]);
    files.write_tokens(&format!(
        "
        tokens:
          - {{token: {WEB_TOKEN}, namespace: mastodon, serviceAccount: web}}
          - {{token: {SIDEKIQ_TOKEN}, namespace: mastodon, serviceAccount: sidekiq}}
        "
    ));
    let identity = herd_tests::ports::addr();
    let policy = |allow: &str| {
        format!(
            "
            policies:
              - name: web-clients
                server: spiffe://cluster.local/ns/mastodon/*
                allow: [{allow}]
              - name: someone-else
                server: spiffe://cluster.local/ns/data/sa/postgres
                allow: [unauthenticated]
            "
        )
    };
    let args = files.args(identity);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let control = Control::start_with_args(&[("policies.yaml", &policy(WEB))], &args).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("web.token");
    std::fs::write(&token, WEB_TOKEN).unwrap();
    let app = whoami().await;
    let proxy = Proxy::start(&format!(
        "
        proxy:
          admin: {{listen: $ADMIN}}
          inbound: {{listen: $INBOUND, app: {app}}}
          control: {{addresses: [{discovery}], id: web-1, namespace: mastodon}}
          identity: {{addresses: [{identity}], id: {WEB}, tokenFile: {token}}}
        ",
        app = app.addr(),
        discovery = control.discovery(),
        token = token.display(),
    ))
    .await;
    // Only the policy naming this proxy applies: plaintext is not allowed here.
    let out = curl()
        .get(format!("http://{}/whoami", proxy.inbound()))
        .await;
    assert_eq!(out.status(), 403, "{}", out.text());

    control.write("policies.yaml", &policy("unauthenticated"));
    eventually("the new policy", TIMEOUT, || async {
        let out = curl()
            .get(format!("http://{}/whoami", proxy.inbound()))
            .await;
        (out.status() == 200).then_some(())
    })
    .await;
    let config = proxy.admin_get("/config").await.text();
    assert!(
        config.contains("web-clients") && config.contains("someone-else"),
        "{config}"
    );
}

/// The dashboard's identity row, against a real Prometheus scraping a proxy with a certificate,
/// a policy, mutual-TLS clients and refused ones, and the proxy of a client pod calling it over
/// mutual TLS: every expression must return data.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboards_identity_row_has_data_for_a_meshed_proxy() {
    let mesh = mesh().await;
    let app = whoami().await;
    let proxy = Proxy::start(&mesh.proxy_yaml(
        app.addr(),
        "strict",
        &format!(
            "
            policies:
              - name: web-clients
                allow: [{SIDEKIQ}]
            "
        ),
    ))
    .await;
    let caller = mesh
        .client_proxy(&format!(
            "
              - name: web
                authorities: [web]
                endpoints: [{{address: {inbound}, identity: {WEB}}}]
            ",
            inbound = proxy.inbound(),
        ))
        .await;
    let prometheus =
        herd_tests::prometheus::Prometheus::scraping_all(&[proxy.admin(), caller.admin()]).await;
    let sidekiq = mesh.client("sidekiq", SIDEKIQ, SIDEKIQ_TOKEN).await;
    let streaming = mesh.client("streaming", STREAMING, STREAMING_TOKEN).await;
    for round in 0..3 {
        if round == 1 {
            // A series is born at its first count, which rate() cannot see as an increase: the
            // success rates by identity need a scrape of them between two rounds (0 / 0 else).
            // Three: from sidekiq (200), from streaming (403), to web (200).
            prometheus
                .wait_for(r#"count(herd_http_responses_total{tls="true"})"#, |v| {
                    v.first().is_some_and(|(_, n)| *n >= 3.0)
                })
                .await;
        }
        let out = curl()
            .proxy(caller.outbound())
            .get("http://web/whoami")
            .await;
        assert_eq!((out.status(), out.text().as_str()), (200, SIDEKIQ));
        assert_eq!(
            mesh.curl_tls(&proxy, Some(&sidekiq), &[]).await.status(),
            200
        );
        assert_eq!(
            mesh.curl_tls(&proxy, Some(&streaming), &[]).await.status(),
            403
        );
        assert_ne!(mesh.curl_tls(&proxy, None, &[]).await.exit, Some(0));
        assert_eq!(
            curl()
                .get(format!("http://{}/", proxy.inbound()))
                .await
                .status(),
            403
        );
    }
    prometheus
        .wait_for("sum(herd_authorization_decisions_total)", |v| {
            v.first().is_some_and(|(_, n)| *n >= 9.0)
        })
        .await;
    // Per round: from sidekiq twice (curl, the caller's proxy), from streaming, to web.
    prometheus
        .wait_for(r#"sum(herd_http_responses_total{tls="true"})"#, |v| {
            v.first().is_some_and(|(_, n)| *n >= 12.0)
        })
        .await;
    // rate() needs two samples after the traffic.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/herd/dashboards/herd.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut row = "";
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] == "row" {
            row = panel["title"].as_str().unwrap_or_default();
        }
        if row != "Identity" {
            continue;
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_default();
            exprs.push((
                panel["title"].clone(),
                expr.replace("$__rate_interval", "1m"),
            ));
        }
    }
    assert!(
        exprs.len() >= 8,
        "the identity row has its panels: {exprs:?}"
    );
    let mut problems = Vec::new();
    for (title, promql) in &exprs {
        assert!(
            !promql.contains('$'),
            "{title}: a variable left in {promql}"
        );
        match prometheus.try_query(promql).await {
            Ok(vector) if vector.iter().any(|(_, v)| v.is_finite()) => {}
            other => problems.push(format!("{title}: {promql}: {other:?}")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// TLS checks a certificate only at its handshake: a connection made with a certificate about
/// to expire must not carry on after it does, on an HTTP port or an opaque one.
#[tokio::test]
async fn a_connection_does_not_outlive_its_clients_certificate() {
    let mesh = mesh().await;
    let app = whoami().await;
    let http = mesh.proxy(app.addr(), "strict").await;
    let echo = server::tcp_echo().await;
    let opaque = mesh.opaque_proxy(echo.addr()).await;
    for (proxy, first) in [
        (&http, &b"GET /whoami HTTP/1.1\r\nHost: web\r\n\r\n"[..]),
        (&opaque, &b"PING\r\n"[..]),
    ] {
        // A certificate from the mesh's CA that expires in a few seconds.
        mesh.signed_brief();
        let mut child = tokio::process::Command::new("openssl")
            .args(["s_client", "-quiet", "-connect"])
            .arg(proxy.inbound().to_string())
            .args([
                "-cert",
                &mesh.path("brief.crt"),
                "-key",
                &mesh.path("brief.key"),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        use tokio::io::AsyncWriteExt;
        stdin.write_all(first).await.unwrap();
        // stdin stays open: only the proxy can end this connection.
        let started = std::time::Instant::now();
        let output = herd_tests::within(
            "the proxy to end the connection at the certificate's expiry",
            Duration::from_secs(15),
            child.wait_with_output(),
        )
        .await
        .unwrap();
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.contains(SIDEKIQ) || text.contains("PING"),
            "served while valid: {text}\n{}\n{}",
            String::from_utf8_lossy(&output.stderr),
            proxy.stderr_text()
        );
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "not before the certificate expired: {:?}",
            started.elapsed()
        );
        drop(stdin);
    }
}
