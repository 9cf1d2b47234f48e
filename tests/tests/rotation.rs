//! Certificates renewed and roots rotated under steady traffic (issue 14), and `herdctl identity`
//! following a proxy's certificate as it is renewed.
//!
//! Two pods: sidekiq's proxy (an outbound listener, the service `web` at a meshed endpoint) and
//! web's proxy (a strict inbound port in front of the app), both certified by herd-control with
//! one-minute certificates. Several keep-alive clients send a few requests a second each through
//! sidekiq's outbound listener for five minutes, while both proxies renew (every 36 to 42 s) or
//! while the CA's root is rotated (new root added, issuer switched, old root removed). Not one
//! request may fail. The two load tests run side by side, so the file takes about five minutes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use herd_tests::control::Control;
use herd_tests::curl::{Output, curl};
use herd_tests::identity::{self as kit, CaFiles, RELOAD, Root, sample};
use herd_tests::load::{Client, Tally};
use herd_tests::proxy::Proxy;
use herd_tests::server::{self, Server, reply};
use herd_tests::{TIMEOUT, eventually};
use tempfile::TempDir;
use tokio::sync::watch;
use tokio::task::JoinSet;

const WEB: &str = "spiffe://cluster.local/ns/mastodon/sa/web";
const SIDEKIQ: &str = "spiffe://cluster.local/ns/mastodon/sa/sidekiq";
const PROBE: &str = "spiffe://cluster.local/ns/mastodon/sa/probe";
const TOKENS: [(&str, &str, &str); 3] = [
    ("web", "web-token-0123456789abcdef", WEB),
    ("sidekiq", "sidekiq-token-0123456789abcdef", SIDEKIQ),
    ("probe", "probe-token-0123456789abcdef", PROBE),
];

/// How long the load runs, how many clients send it, and each client's pause between requests.
const LOAD_FOR: Duration = Duration::from_secs(300);
const CLIENTS: usize = 4;
const PAUSE: Duration = Duration::from_millis(200);
/// Longest wait for a proxy's next renewal: at most 70 % of a one-minute lifetime, plus the
/// control plane's reload of its files and some slack.
const RENEWAL: Duration = Duration::from_secs(70);

/// A CA's files, herd-control serving them, and the pods' token files.
struct Mesh {
    files: CaFiles,
    control: Control,
    identity: SocketAddr,
    dir: TempDir,
}

async fn mesh(root: &Root, lifetime: &str) -> Mesh {
    let files = CaFiles::new(root, &[root]);
    let entries: String = TOKENS
        .iter()
        .map(|(account, token, _)| {
            format!("  - {{token: {token}, namespace: mastodon, serviceAccount: {account}}}\n")
        })
        .collect();
    files.write_tokens(&format!("tokens:\n{entries}"));
    let (control, identity) = kit::start(&files, &["--identity-lifetime", lifetime]).await;
    let dir = tempfile::tempdir().expect("temp dir");
    for (account, token, _) in TOKENS {
        std::fs::write(dir.path().join(format!("{account}.token")), token).expect("token file");
    }
    Mesh {
        files,
        control,
        identity,
        dir,
    }
}

impl Mesh {
    fn token(&self, account: &str) -> String {
        self.dir
            .path()
            .join(format!("{account}.token"))
            .display()
            .to_string()
    }

    /// `proxy.identity` for `account`. The trust anchors are the CA's bundle file itself, so
    /// the proxy authenticates the identity service with the roots of the moment (during a root
    /// rotation, both).
    fn identity_yaml(&self, account: &str, id: &str) -> String {
        format!(
            "identity: {{addresses: [{}], id: {id}, tokenFile: {}, trustAnchors: {}}}",
            self.identity,
            self.token(account),
            self.files.path("bundle.pem").display()
        )
    }

    /// web's proxy: a strict inbound port in front of `app`.
    async fn web(&self, app: SocketAddr) -> Proxy {
        Proxy::start(&format!(
            "
            proxy:
              admin: {{listen: $ADMIN}}
              inbound: {{listen: $INBOUND, app: {app}, mtls: strict}}
              {identity}
            ",
            identity = self.identity_yaml("web", WEB),
        ))
        .await
    }

    /// sidekiq's proxy: `web` and `web-late` (the same pod, in a pool of its own: other limits)
    /// at web's inbound port, meshed.
    async fn sidekiq(&self, web: &Proxy) -> Proxy {
        Proxy::start(&format!(
            "
            proxy:
              admin: {{listen: $ADMIN}}
              outbound: {{listen: $OUTBOUND}}
              {identity}
            services:
              - name: web
                authorities: [web]
                endpoints: [{{address: {addr}, identity: {WEB}}}]
              - name: web-late
                authorities: [web-late]
                limits: {{connectTimeout: 3s}}
                endpoints: [{{address: {addr}, identity: {WEB}}}]
            ",
            identity = self.identity_yaml("sidekiq", SIDEKIQ),
            addr = web.inbound(),
        ))
        .await
    }

    /// A fresh client certificate for the probe identity, for openssl.
    async fn probe_files(&self, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        kit::client_files(self.identity, self.dir.path(), name, PROBE, TOKENS[2].1).await
    }

    /// The leaf the identity service issues now, and the bundle it sends with it.
    async fn issued_now(&self) -> herd_api::identity::CertifyResponse {
        kit::certify(self.identity, kit::csr(PROBE), TOKENS[2].1)
            .await
            .expect("certified")
    }
}

async fn app() -> Server {
    server::http1(|_req| async move { reply::text("ok") }).await
}

/// Steady requests from [`CLIENTS`] keep-alive clients, each pausing [`PAUSE`] between its
/// requests, until stopped.
struct Traffic {
    stop: watch::Sender<bool>,
    workers: JoinSet<Tally>,
    started: Instant,
}

fn traffic(addr: SocketAddr, authority: &'static str) -> Traffic {
    let (stop, stopped) = watch::channel(false);
    let mut workers = JoinSet::new();
    for _ in 0..CLIENTS {
        let mut stopped = stopped.clone();
        workers.spawn(async move {
            let mut client = Client::new(addr);
            let mut tally = Tally::default();
            while !*stopped.borrow() {
                tally.outcomes.push(client.get(authority, "/", &[]).await);
                tokio::select! {
                    () = tokio::time::sleep(PAUSE) => {}
                    _ = stopped.changed() => {}
                }
            }
            tally
        });
    }
    Traffic {
        stop,
        workers,
        started: Instant::now(),
    }
}

impl Traffic {
    /// Lets the traffic run until [`LOAD_FOR`] after it started, then stops it; every outcome.
    async fn finish(mut self) -> (Tally, Duration) {
        let left = LOAD_FOR.saturating_sub(self.started.elapsed());
        tokio::time::sleep(left).await;
        let _ = self.stop.send(true);
        let mut all = Tally::default();
        while let Some(tally) = self.workers.join_next().await {
            all.outcomes
                .extend(tally.expect("a load worker panicked").outcomes);
        }
        (all, self.started.elapsed())
    }
}

async fn renewals(proxy: &Proxy) -> f64 {
    let text = proxy.admin_get("/metrics").await.text();
    sample(&text, "herd_identity_renewals_total{result=\"ok\"}")
}

/// New TLS connections web's proxy accepted on its inbound port.
async fn handshakes(web: &Proxy) -> f64 {
    let text = web.admin_get("/metrics").await.text();
    sample(
        &text,
        r#"herd_tls_handshakes_total{direction="inbound",listener="inbound"}"#,
    )
}

/// Waits until every one of `proxies` has been certified again since now.
async fn renewed(proxies: &[&Proxy], what: &str) {
    let mut before = Vec::new();
    for proxy in proxies {
        before.push(renewals(proxy).await);
    }
    for (proxy, before) in proxies.iter().zip(before) {
        eventually(what, RENEWAL, || async {
            (renewals(proxy).await > before).then_some(())
        })
        .await;
    }
}

/// Fails with the first few failures, counted by what went wrong.
fn assert_no_failures(tally: &Tally, what: &str) {
    let failures = tally.failures();
    let shown: Vec<String> = failures
        .iter()
        .take(5)
        .map(|o| format!("{} {:?} after {:?}", o.status, o.error, o.elapsed))
        .collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} requests failed, e.g. {shown:#?}",
        failures.len(),
        tally.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_minute_certificates_renew_under_five_minutes_of_traffic_without_a_failed_request() {
    let root = Root::generate("herd rotation root");
    let mesh = mesh(&root, "1m").await;
    let app = app().await;
    let web = mesh.web(app.addr()).await;
    let sidekiq = mesh.sidekiq(&web).await;

    let load = traffic(sidekiq.outbound(), "web");
    let (tally, took) = load.finish().await;
    assert_no_failures(&tally, "renewals under load");

    let (web_renewals, sidekiq_renewals) = (renewals(&web).await, renewals(&sidekiq).await);
    let accepted = handshakes(&web).await;
    eprintln!(
        "renewals under load: {} requests in {took:?}, 0 failed; certificates issued: web {web_renewals}, sidekiq {sidekiq_renewals}; TLS handshakes at web: {accepted}",
        tally.len()
    );
    // About 300 / 39 renewals after the first certificate; at least four each.
    assert!(
        web_renewals >= 5.0 && sidekiq_renewals >= 5.0,
        "web {web_renewals}, sidekiq {sidekiq_renewals}"
    );
    assert!(tally.len() >= 1000, "{} requests", tally.len());
    // The HTTP/2 connection between the pods is never idle, yet it does not outlive the
    // certificates that authenticated it: it is replaced once the earlier of the two expires
    // (at least once a lifetime), and at most once per certificate issued.
    assert!(
        accepted >= 4.0 && accepted <= web_renewals + sidekiq_renewals,
        "{accepted} handshakes for {web_renewals} + {sidekiq_renewals} certificates"
    );
    assert_eq!(app.requests(), tally.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_is_rotated_under_traffic_without_a_failed_request() {
    let old = Root::generate("herd root old");
    let new = Root::generate("herd root new");
    let mut mesh = mesh(&old, "1m").await;
    let app = app().await;
    let web = mesh.web(app.addr()).await;
    let sidekiq = mesh.sidekiq(&web).await;
    // A workload certified by the old root (for a year, so only the root can make it fail).
    let (old_cert, old_key) = kit::leaf_signed_by(&old, PROBE, mesh.dir.path(), "probe-old");
    let out = tls_get(&web, &old_cert, &old_key).await;
    assert_eq!((out.exit, out.status()), (Some(0), 200), "{}", out.stderr);
    let load = traffic(sidekiq.outbound(), "web");
    let pods = [&web, &sidekiq];

    // 1. The new root joins the bundle; each pod renews and so trusts both.
    mesh.files.update(&old, &[&old, &new]);
    eventually("two roots in the bundle", RELOAD, || async {
        (mesh.issued_now().await.trust_bundle.len() == 2).then_some(())
    })
    .await;
    renewed(&pods, "both pods to trust both roots").await;

    // 2. The issuer switches to the new root; each pod renews with a leaf from it.
    mesh.files.update(&new, &[&old, &new]);
    eventually("leaves from the new root", RELOAD, || async {
        let leaf = kit::pem(&mesh.issued_now().await.certificate_chain[..1]);
        kit::issued_by(&leaf, &new).await.then_some(())
    })
    .await;
    renewed(&pods, "both pods to hold leaves from the new root").await;
    let (cert, key) = mesh.probe_files("probe-new").await;
    let presented = kit::presented_leaf(web.inbound(), &cert, &key).await;
    assert!(kit::issued_by(&presented, &new).await && !kit::issued_by(&presented, &old).await);

    // 3. The old root leaves the bundle; each pod renews and trusts only the new one.
    mesh.files.update(&new, &[&new]);
    eventually("one root in the bundle", RELOAD, || async {
        (mesh.issued_now().await.trust_bundle.len() == 1).then_some(())
    })
    .await;
    renewed(&pods, "both pods to trust only the new root").await;
    let rotated_at = load.started.elapsed();

    // A connection made now (a pool of its own), under the new bundle on both sides, works.
    let late = Client::new(sidekiq.outbound())
        .get("web-late", "/", &[])
        .await;
    assert_eq!(late.status, 200, "{late:?}");
    // And a workload whose certificate chains to the old root only is refused now.
    let out = tls_get(&web, &old_cert, &old_key).await;
    assert_ne!(out.exit, Some(0), "the old root is no longer trusted");
    let text = web.admin_get("/metrics").await.text();
    assert!(text.contains(r#"reason="unknown-issuer"} 1"#), "{text}");

    let (tally, took) = load.finish().await;
    assert_no_failures(&tally, "root rotation under load");
    eprintln!(
        "root rotation under load: rotated in {rotated_at:?}; {} requests in {took:?}, 0 failed; certificates issued: web {}, sidekiq {}; TLS handshakes at web: {}",
        tally.len(),
        renewals(&web).await,
        renewals(&sidekiq).await,
        handshakes(&web).await,
    );
}

/// `GET /` on web's inbound port over TLS with this client certificate (`-k`: a mesh server
/// names a SPIFFE ID, not a host).
async fn tls_get(web: &Proxy, cert: &std::path::Path, key: &std::path::Path) -> Output {
    curl()
        .arg("-k")
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .get(format!("https://{}/", web.inbound()))
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn herdctl_identity_shows_the_certificate_a_proxy_presents_and_follows_its_renewals() {
    let root = Root::generate("herd identity root");
    let mesh = mesh(&root, "20s").await;
    let app = app().await;
    let discovery = mesh.control.discovery();
    let web = Proxy::start(&format!(
        "
        proxy:
          admin: {{listen: $ADMIN}}
          inbound: {{listen: $INBOUND, app: {app}, mtls: strict}}
          control: {{addresses: [{discovery}], id: web-1, namespace: mastodon}}
          {identity}
        ",
        app = app.addr(),
        identity = mesh.identity_yaml("web", WEB),
    ))
    .await;
    let (cert, key) = mesh.probe_files("probe").await;

    // What herdctl says is what a peer is shown in a handshake.
    let shown = |out: &herd_tests::control::Exit, field: &str| {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no `{field}` in {out:?}"))
    };
    let first = eventually("herdctl identity to show web-1", TIMEOUT, || async {
        let out = mesh.control.herdctl(&["identity", "web-1"]).await;
        (out.code == Some(0)).then_some(out)
    })
    .await;
    assert_eq!(shown(&first, "identity"), WEB);
    // The proxy reached the control plane over mutual TLS: herd-control verified who it is.
    assert_eq!(shown(&first, "connection"), format!("mutual TLS as {WEB}"));
    let serial = shown(&first, "serial");
    let presented = kit::presented_leaf(web.inbound(), &cert, &key).await;
    assert_eq!(
        serial.trim_start_matches('0'),
        kit::serial_of(&presented).await.trim_start_matches('0')
    );
    let not_after = shown(&first, "not after");
    assert!(
        not_after.ends_with("s)") && not_after.contains("Z (in "),
        "RFC 3339 and the time left: {not_after}"
    );

    // After a renewal (at 12 to 14 s of 20), another serial, and the one web now presents.
    let second = eventually(
        "herdctl identity to show a renewal",
        Duration::from_secs(30),
        || async {
            let out = mesh.control.herdctl(&["identity", "web-1"]).await;
            (out.code == Some(0) && shown(&out, "serial") != serial).then_some(out)
        },
    )
    .await;
    let renewed_serial = shown(&second, "serial");
    let presented = kit::presented_leaf(web.inbound(), &cert, &key).await;
    assert_eq!(
        renewed_serial.trim_start_matches('0'),
        kit::serial_of(&presented).await.trim_start_matches('0')
    );

    // `stat` shows it too.
    let stat = mesh.control.herdctl(&["stat"]).await;
    assert!(
        stat.stdout
            .contains(&format!("  certificate: {WEB}, not after ")),
        "{stat:?}"
    );
    assert!(
        stat.stdout
            .contains(&format!("  connection: mutual TLS as {WEB}")),
        "{stat:?}"
    );
    // web's certificates (first and renewal) went over TLS, its routing over mutual TLS (the
    // test's own probe certificate and herdctl are plaintext clients).
    let metrics = mesh.control.metrics().await;
    let connections = |port: &str, security: &str| {
        kit::sample(
            &metrics,
            &format!("herd_control_connections_total{{port=\"{port}\",security=\"{security}\"}}"),
        )
    };
    assert!(connections("identity", "tls") >= 2.0, "{metrics}");
    assert!(connections("discovery", "mutual") >= 1.0, "{metrics}");

    // A proxy the replica does not know, and one without a certificate: one line, exit 1.
    let unknown = mesh.control.herdctl(&["identity", "web-9"]).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert_eq!(
        unknown.stderr,
        "herdctl: no proxy `web-9` is connected to this replica\n"
    );
    let _plain = Proxy::start(&herd_tests::control::proxy_yaml(
        "plain-1",
        &[&mesh.control],
        "",
    ))
    .await;
    let none = mesh.control.herdctl(&["identity", "plain-1"]).await;
    assert_eq!(none.code, Some(1), "{none:?}");
    assert_eq!(
        none.stderr,
        "herdctl: proxy `plain-1` has reported no certificate (no proxy.identity, or none issued yet)\n"
    );
}
