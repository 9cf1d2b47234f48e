//! herd-control's Kubernetes source, end to end: a real kube-apiserver (the kit's), a Service and
//! its EndpointSlice applied with kubectl, Puma in network-namespace pods at the slice's
//! addresses, herd-control watching with `--kubeconfig`, and a herd-proxy taking its services
//! from that herd-control. Requests go to the proxy's outbound listener by the authorities
//! Kubernetes DNS would give the Service.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use herd_tests::control::{Control, proxy_yaml};
use herd_tests::kube::KubeApi;
use herd_tests::load::{self, Client, Outcome, Tally};
use herd_tests::netns::Pod;
use herd_tests::{Proxy, Puma, eventually, within};
use serde_json::json;

/// How long a whole test may take: an API server or two starting on a busy machine included.
const BOUND: Duration = Duration::from_secs(240);

/// How the Service's pods answer: a Rack app given the pod's name.
type App = fn(&str) -> String;

/// Answers with its name in `x-endpoint` (what the load kit's tally reads), after `?sleep=S`.
fn named(name: &str) -> String {
    format!(
        "run lambda {{ |env|
           s = Rack::Utils.parse_query(env['QUERY_STRING'])['sleep']
           sleep(s.to_f) if s
           [200, {{ 'content-type' => 'text/plain', 'x-endpoint' => '{name}' }}, ['{name}']]
         }}\n"
    )
}

/// Fails every other request with 503, whatever the path: a pod a retry can get past.
fn flaky(name: &str) -> String {
    format!(
        "calls = 0
         lock = Mutex.new
         run lambda {{ |env|
           n = lock.synchronize {{ calls += 1 }}
           status = n.odd? ? 503 : 200
           [status, {{ 'content-type' => 'text/plain', 'x-endpoint' => '{name}' }}, [\"call #{{n}}\"]]
         }}\n"
    )
}

/// A real cluster's worth of pieces for Service `web` in namespace `mastodon`.
struct Cluster {
    // Fields drop in order: clients of the pods first, the pods' namespaces last.
    proxy: Proxy,
    control: Control,
    _apps: Vec<Puma>,
    pods: Vec<Pod>,
    kube: KubeApi,
}

/// The authority a Mastodon pod would use for the web Service.
const WEB: &str = "web.mastodon.svc.cluster.local:3000";

impl Cluster {
    /// `pods` pods running `app` on port 3000, Service `web` (port `http` 3000, no selector) and
    /// EndpointSlice `web-1` listing every pod as ready; herd-control on `mesh` files and the
    /// cluster; a proxy of it.
    async fn start(pods: usize, app: App, mesh: &[(&str, &str)]) -> Cluster {
        let kube = KubeApi::start().await;
        kube.namespace("mastodon").await;
        let mut cluster_pods = Vec::new();
        let mut apps = Vec::new();
        for i in 0..pods {
            let pod = Pod::new(&format!("web-{i}"));
            let addr = SocketAddr::new(pod.ip().into(), 3000);
            apps.push(Puma::start_in(&pod, &app(&format!("web-{i}")), addr).await);
            cluster_pods.push(pod);
        }
        let service = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": "web", "namespace": "mastodon" },
            "spec": { "ports": [{ "name": "http", "port": 3000, "targetPort": 3000 }] },
        });
        kube.apply(&service.to_string()).await;
        let all: Vec<usize> = (0..pods).collect();
        kube.apply(&slice(&cluster_pods, &all, &[])).await;
        let kubeconfig = kube
            .kubeconfig_path()
            .to_str()
            .expect("UTF-8 path")
            .to_owned();
        let control = Control::start_with_args(
            mesh,
            &["--kubeconfig", &kubeconfig, "--namespaces", "mastodon"],
        )
        .await;
        let proxy = Proxy::start(&proxy_yaml("client-0", &[&control], "")).await;
        Cluster {
            proxy,
            control,
            _apps: apps,
            pods: cluster_pods,
            kube,
        }
    }

    /// Applies EndpointSlice `web-1` with the pods at `listed` (ready) and those at `terminating`
    /// (shutting down: not ready, still serving).
    async fn slice(&self, listed: &[usize], terminating: &[usize]) {
        self.kube
            .apply(&slice(&self.pods, listed, terminating))
            .await;
    }

    /// `n` requests for `authority`, two at a time.
    async fn fire(&self, authority: &str, n: usize) -> Tally {
        load::fire(self.proxy.outbound(), authority, n, 2).await
    }
}

/// EndpointSlice `web-1` as JSON (which kubectl reads as YAML).
fn slice(pods: &[Pod], listed: &[usize], terminating: &[usize]) -> String {
    let endpoint = |i: usize, ready: bool| {
        json!({
            "addresses": [pods[i].ip().to_string()],
            "conditions": { "ready": ready, "serving": true, "terminating": !ready },
            "targetRef": { "kind": "Pod", "name": format!("web-{i}"), "namespace": "mastodon" },
        })
    };
    let endpoints: Vec<_> = listed
        .iter()
        .map(|&i| endpoint(i, true))
        .chain(terminating.iter().map(|&i| endpoint(i, false)))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-1",
            "namespace": "mastodon",
            "labels": { "kubernetes.io/service-name": "web" },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 3000, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
    .to_string()
}

/// Requests in a steady loop on `clients` connections, each request stamped with when it was
/// sent, until stopped (and at most 20,000 per connection).
struct Steady {
    stop: Arc<AtomicBool>,
    workers: tokio::task::JoinSet<Vec<(Instant, Outcome)>>,
}

impl Steady {
    fn start(proxy: SocketAddr, clients: usize, path: &'static str) -> Steady {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..clients {
            let stop = stop.clone();
            workers.spawn(async move {
                let mut client = Client::new(proxy);
                let mut sent = Vec::new();
                while !stop.load(Ordering::Relaxed) && sent.len() < 20_000 {
                    let at = Instant::now();
                    sent.push((at, client.get(WEB, path, &[]).await));
                }
                sent
            });
        }
        Steady { stop, workers }
    }

    async fn finish(mut self) -> Vec<(Instant, Outcome)> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        while let Some(sent) = self.workers.join_next().await {
            all.extend(sent.expect("load worker"));
        }
        all.sort_by_key(|(at, _)| *at);
        all
    }
}

fn failures(sent: &[(Instant, Outcome)]) -> Vec<String> {
    sent.iter()
        .filter(|(_, o)| !o.is_ok())
        .map(|(_, o)| format!("{} {:?} {}", o.status, o.error, o.body))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_routes_a_discovered_service_by_its_kubernetes_names_to_its_pods() {
    within("the test", BOUND, async {
        let cluster = Cluster::start(3, named, &[]).await;

        // Slow enough answers, six at a time, that the balancer has reason to use every pod.
        let tally = load::fire_path(cluster.proxy.outbound(), WEB, "/?sleep=0.05", 60, 6).await;
        assert_eq!(tally.ok(), 60, "{:?}", tally.failures());
        let pods: Vec<String> = tally.by_endpoint().into_keys().collect();
        assert_eq!(pods, ["web-0", "web-1", "web-2"], "{}", tally.shares());

        // Every name Kubernetes DNS gives the Service, with the port and without it (a URL
        // without one names the Service's only HTTP port).
        for authority in [
            "web:3000",
            "web",
            "web.mastodon:3000",
            "web.mastodon",
            "web.mastodon.svc:3000",
            "web.mastodon.svc.cluster.local",
        ] {
            let tally = cluster.fire(authority, 4).await;
            assert_eq!(tally.ok(), 4, "{authority}: {:?}", tally.failures());
        }

        // The Service's cluster IP with its port reaches the proxy as the service's
        // `clusterIps`: what a transparent proxy routes a connection to it by.
        let service = cluster.kube.get("mastodon", "service", "web").await;
        let cluster_ip = service["spec"]["clusterIP"].as_str().expect("a cluster IP");
        let config = cluster.proxy.admin_get("/config").await.json();
        let web = &config["config"]["services"]
            .as_array()
            .expect("services")
            .iter()
            .find(|s| s["name"] == "web.mastodon")
            .expect("web.mastodon in the proxy's state");
        assert_eq!(
            web["clusterIps"],
            json!([format!("{cluster_ip}:3000")]),
            "{web}"
        );

        let metrics = cluster.control.metrics().await;
        assert!(
            metrics.contains("herd_control_source_problems{source=\"kubernetes\"} 0"),
            "{metrics}"
        );
        assert!(metrics.contains("herd_control_services 1"), "{metrics}");

        // Objects herd cannot use are logged and skipped; the mesh keeps what it has.
        for unusable in [
            json!({ "apiVersion": "v1", "kind": "Service",
                    "metadata": { "name": "mail", "namespace": "mastodon" },
                    "spec": { "type": "ExternalName", "externalName": "smtp.example" } }),
            json!({ "apiVersion": "v1", "kind": "Service",
                    "metadata": { "name": "dns", "namespace": "mastodon" },
                    "spec": { "ports": [{ "port": 53, "protocol": "UDP" }] } }),
        ] {
            cluster.kube.apply(&unusable.to_string()).await;
        }
        eventually("both to be logged", BOUND, || async {
            let log = cluster.control.log();
            (log.contains("Service mastodon/mail: type ExternalName")
                && log.contains("Service mastodon/dns: no TCP port"))
            .then_some(())
        })
        .await;
        let tally = cluster.fire(WEB, 10).await;
        assert_eq!(tally.ok(), 10, "{:?}", tally.failures());

        let check = cluster.control.herdctl(&["check"]).await;
        assert_eq!(check.code, Some(0), "{check:?}");
        assert!(
            check.stdout.contains("ok   source kubernetes synced"),
            "{}",
            check.stdout
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_the_slice_down_moves_traffic_within_a_second_without_a_failed_request() {
    within("the test", BOUND, async {
        let cluster = Cluster::start(3, named, &[]).await;
        // Each request takes 50 ms at the app, so some are always in flight on every pod.
        let load = Steady::start(cluster.proxy.outbound(), 4, "/?sleep=0.05");
        eventually("every pod to take traffic", BOUND, || async {
            let tally = cluster.fire(WEB, 30).await;
            (tally.by_endpoint().len() == 3).then_some(())
        })
        .await;

        // As Kubernetes scales down: the pod is marked terminating, then it leaves the slice.
        // Timed from before kubectl runs: the server stores the change somewhere inside it.
        let changed = Instant::now();
        cluster.slice(&[0, 1], &[2]).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.slice(&[0, 1], &[]).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let sent = load.finish().await;

        assert!(failures(&sent).is_empty(), "{:?}", failures(&sent));
        let to_removed: Vec<Instant> = sent
            .iter()
            .filter(|(_, o)| o.endpoint.as_deref() == Some("web-2"))
            .map(|(at, _)| *at)
            .collect();
        assert!(!to_removed.is_empty(), "web-2 had traffic before");
        let last = *to_removed.last().unwrap();
        let after = last.saturating_duration_since(changed);
        let before = changed.saturating_duration_since(last);
        eprintln!(
            "{} requests, none failed; the last one web-2 got was sent {after:?} after (or \
             {before:?} before) `kubectl apply` marking it terminating began",
            sent.len()
        );
        assert!(
            last < changed + Duration::from_secs(1),
            "web-2 still got a request sent {after:?} after it was marked terminating"
        );
        let late = sent
            .iter()
            .filter(|(at, _)| *at > changed + Duration::from_secs(1))
            .count();
        assert!(
            late > 50,
            "the load kept going: {late} requests after the change"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watch_survives_an_api_server_restart() {
    within("the test", BOUND, async {
        let mut cluster = Cluster::start(3, named, &[]).await;

        // The mesh stays while the API server is gone: no request fails.
        let load = Steady::start(cluster.proxy.outbound(), 2, "/");
        cluster.kube.restart_apiserver().await;
        let sent = load.finish().await;
        assert!(failures(&sent).is_empty(), "{:?}", failures(&sent));
        assert!(sent.len() > 10, "the load ran: {}", sent.len());

        // A change after the restart still reaches the proxy.
        cluster.slice(&[0, 1], &[]).await;
        let tally = eventually("web-2 to leave the proxy's endpoints", BOUND, || async {
            let tally = cluster.fire(WEB, 20).await;
            (!tally.by_endpoint().contains_key("web-2")).then_some(tally)
        })
        .await;
        assert_eq!(tally.ok(), 20, "{:?}", tally.failures());

        // And herd-control says the watches are well again.
        eventually("the problems to clear", BOUND, || async {
            let metrics = cluster.control.metrics().await;
            metrics
                .contains("herd_control_source_problems{source=\"kubernetes\"} 0")
                .then_some(())
        })
        .await;
        assert!(
            cluster.control.log().contains("starting over"),
            "the failure was logged:\n{}",
            cluster.control.log()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mesh_file_gives_the_discovered_service_its_routes() {
    within("the test", BOUND, async {
        let mesh = "
            services:
              - name: web.mastodon
                routes:
                  - match: { pathPrefix: /flaky }
                    retry: { attempts: 1, conditions: [503] }
            ";
        let cluster = Cluster::start(1, flaky, &[("web.yaml", mesh)]).await;
        let mut client = Client::new(cluster.proxy.outbound());

        // The route's retry takes every request past the pod's every other 503 ...
        let retried = client.repeat("GET", WEB, "/flaky", 10).await;
        assert_eq!(retried.ok(), 10, "{:?}", retried.failures());
        // ... where a path no route names has none.
        let plain = client.repeat("GET", WEB, "/plain", 10).await;
        assert_eq!(
            plain.statuses().get(&503),
            Some(&5),
            "{:?}",
            plain.statuses()
        );

        let metrics = cluster.proxy.admin_get("/metrics").await.text();
        assert!(
            metrics.contains("service=\"web.mastodon\""),
            "the proxy knows the service by its discovered name:\n{metrics}"
        );
    })
    .await;
}

/// Runs `herd-control ARGS` to completion (bounded): its exit code and stderr.
async fn control_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut command = tokio::process::Command::new(herd_tests::proxy::bin("herd-control"));
    command
        .args(args)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = within(
        "herd-control to exit",
        herd_tests::TIMEOUT,
        command.output(),
    )
    .await
    .expect("run herd-control");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn a_missing_source_or_a_bad_kubeconfig_exits_64_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("kubeconfig");
    std::fs::write(&junk, "clusters: [oops").unwrap();
    let junk = junk.to_str().unwrap();
    for (args, says) in [
        (
            &[][..],
            "no source: give --mesh DIR, --kubeconfig FILE or --kubernetes",
        ),
        (
            &["--kubeconfig", "/nonexistent/kubeconfig"][..],
            "cannot read kubeconfig /nonexistent/kubeconfig",
        ),
        (&["--kubeconfig", junk][..], "cannot read kubeconfig"),
        (
            &["--kubeconfig", junk, "--kubernetes"][..],
            "cannot be used with",
        ),
        (
            &["--kubernetes"][..],
            "--kubernetes: no in-cluster configuration",
        ),
        (
            &["--kubeconfig", junk, "--namespaces", "mastodon,Bad_NS"][..],
            "`Bad_NS` is not a namespace name",
        ),
    ] {
        let (code, stderr) = control_exit(args).await;
        assert_eq!(code, Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}

/// What herd-control sends for service `web.mastodon`, followed the way a proxy follows it:
/// the full set, then deltas applied on top. `address -> (meshed, identity)`.
struct Followed {
    stream: tonic::Streaming<herd_api::discovery::EndpointsUpdate>,
    _requests: tokio::sync::mpsc::Sender<herd_api::discovery::EndpointsRequest>,
    set: std::collections::BTreeMap<String, (bool, String)>,
}

impl Followed {
    async fn start(control: &Control, service: &str) -> Followed {
        use herd_api::discovery::discovery_client::DiscoveryClient;
        use herd_api::discovery::{EndpointsRequest, Hello, Node, Watch, endpoints_request};
        let mut client = DiscoveryClient::connect(format!("http://{}", control.discovery()))
            .await
            .expect("connect to the discovery port");
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        for request in [
            endpoints_request::Request::Hello(Hello {
                node: Some(Node {
                    id: "follower".into(),
                    ..Node::default()
                }),
            }),
            endpoints_request::Request::Watch(Watch {
                service: service.into(),
                have_version: String::new(),
            }),
        ] {
            tx.send(EndpointsRequest {
                request: Some(request),
            })
            .await
            .unwrap();
        }
        let stream = client
            .endpoints(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("endpoints stream")
            .into_inner();
        Followed {
            stream,
            _requests: tx,
            set: Default::default(),
        }
    }

    /// Applies updates until the set is `expected` (bounded by the test's own bound).
    async fn until(&mut self, expected: &[(&str, bool, &str)]) {
        let expected: std::collections::BTreeMap<String, (bool, String)> = expected
            .iter()
            .map(|(a, m, i)| ((*a).to_owned(), (*m, (*i).to_owned())))
            .collect();
        while self.set != expected {
            let update = self
                .stream
                .message()
                .await
                .expect("the stream stays up")
                .expect("the stream does not end");
            if update.base_version.is_empty() {
                self.set.clear();
            }
            for gone in &update.removed {
                self.set.remove(gone);
            }
            for ep in update.endpoints {
                self.set.insert(ep.address, (ep.meshed, ep.identity));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn endpoints_of_pods_with_the_sidecar_carry_their_service_accounts_identity() {
    within("the test", BOUND, async {
        let kube = KubeApi::start().await;
        kube.namespace("mastodon").await;
        // No kubelet runs: these Pods are objects only, which is all herd-control reads.
        let pod = |name: &str, account: &str, sidecar: bool| {
            let mut containers = vec![json!({ "name": "puma", "image": "mastodon" })];
            if sidecar {
                containers.push(json!({ "name": "herd-proxy", "image": "herd" }));
            }
            json!({ "apiVersion": "v1", "kind": "Pod",
                    "metadata": { "name": name, "namespace": "mastodon" },
                    "spec": { "serviceAccountName": account, "containers": containers } })
            .to_string()
        };
        kube.apply(
            &json!({ "apiVersion": "v1", "kind": "ServiceAccount",
                     "metadata": { "name": "web", "namespace": "mastodon" } })
            .to_string(),
        )
        .await;
        kube.apply(&pod("web-0", "web", true)).await;
        kube.apply(&pod("web-1", "web", false)).await;
        kube.apply(
            &json!({ "apiVersion": "v1", "kind": "Service",
                     "metadata": { "name": "web", "namespace": "mastodon" },
                     "spec": { "ports": [{ "name": "http", "port": 3000, "targetPort": 3000 }] } })
            .to_string(),
        )
        .await;
        // Addresses from 198.18.0.0/15: the API server refuses loopback ones. No traffic goes
        // to them; only what herd-control makes of them is looked at.
        let endpoint = |ip: &str, pod: &str| {
            json!({ "addresses": [ip], "conditions": { "ready": true },
                    "targetRef": { "kind": "Pod", "name": pod, "namespace": "mastodon" } })
        };
        kube.apply(
            &json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": { "name": "web-1", "namespace": "mastodon",
                              "labels": { "kubernetes.io/service-name": "web" } },
                "addressType": "IPv4",
                "ports": [{ "name": "http", "port": 3000, "protocol": "TCP" }],
                "endpoints": [endpoint("198.18.7.2", "web-0"), endpoint("198.18.7.3", "web-1")],
            })
            .to_string(),
        )
        .await;
        let kubeconfig = kube.kubeconfig_path().to_str().expect("UTF-8 path");
        let control = Control::start_with_args(
            &[],
            &[
                "--kubeconfig",
                kubeconfig,
                "--namespaces",
                "mastodon",
                "--trust-domain",
                "home.lab",
            ],
        )
        .await;

        let mut web = Followed::start(&control, "web.mastodon").await;
        let identity = "spiffe://home.lab/ns/mastodon/sa/web";
        web.until(&[
            ("198.18.7.2:3000", true, identity),
            ("198.18.7.3:3000", false, ""),
        ])
        .await;

        // The pod without the sidecar asks for it: its endpoint becomes meshed, by a delta.
        kube.kubectl(&[
            "annotate",
            "pod",
            "web-1",
            "-n",
            "mastodon",
            "herd.io/inject=enabled",
        ])
        .await;
        web.until(&[
            ("198.18.7.2:3000", true, identity),
            ("198.18.7.3:3000", true, identity),
        ])
        .await;
        // A pod deleted while its slice still lists it: known no more, so not meshed.
        kube.kubectl(&["delete", "pod", "web-0", "-n", "mastodon", "--wait=false"])
            .await;
        web.until(&[
            ("198.18.7.2:3000", false, ""),
            ("198.18.7.3:3000", true, identity),
        ])
        .await;
    })
    .await;
}
