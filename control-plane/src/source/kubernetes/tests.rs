//! The watches against a mocked API server (tower-test): a small store that answers lists and
//! keeps watch bodies open, sending each change as it is made, the way the real server does.
//! (A watch body that ended would make kube's watcher start over, which is a different test.)

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Mutex;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tower_test::mock;

use super::*;
use crate::index::{Index, Sources};
use crate::metrics::Metrics;
use crate::push::SourceStatus;

type Body = UnsyncBoxBody<Bytes, Infallible>;
type Frames = mpsc::UnboundedSender<Result<Frame<Bytes>, Infallible>>;

const SERVICES: &str = "services";
const SLICES: &str = "endpointslices";
const PODS: &str = "pods";

/// The mocked API server's state.
#[derive(Default)]
struct Store {
    version: u64,
    /// By (resource, namespace, name).
    objects: BTreeMap<(&'static str, String, String), Value>,
    /// Every change: resource, namespace, version, the watch event's line.
    log: Vec<(&'static str, String, u64, Bytes)>,
    /// Open watches: resource, namespace (None: all), where their events go.
    watches: Vec<(&'static str, Option<String>, Frames)>,
    /// Answer everything with 503, as a server that is down behind its load balancer.
    down: bool,
    /// Every request's path and query.
    requests: Vec<String>,
}

#[derive(Clone)]
struct FakeApi(Arc<Mutex<Store>>);

impl FakeApi {
    /// The server and a client of it.
    fn start() -> (FakeApi, Client) {
        let (service, mut handle) =
            mock::pair::<http::Request<kube::client::Body>, Response<Body>>();
        let api = FakeApi(Arc::default());
        let server = api.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                respond.send_response(server.answer(&request));
            }
        });
        (api, Client::new(service, "default"))
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<Body> {
        let mut store = self.0.lock().unwrap();
        let uri = request.uri();
        store.requests.push(uri.to_string());
        if store.down {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "message": "the server is shutting down", "reason": "ServiceUnavailable",
                         "code": 503 }),
            );
        }
        let path: Vec<&str> = uri.path().split('/').filter(|p| !p.is_empty()).collect();
        let (resource, namespace) = match path.as_slice() {
            [.., "namespaces", ns, resource] => (*resource, Some((*ns).to_owned())),
            [.., resource] => (*resource, None),
            [] => panic!("request for /"),
        };
        let resource = match resource {
            SERVICES => SERVICES,
            SLICES => SLICES,
            PODS => PODS,
            other => panic!("unexpected request for {other}: {uri}"),
        };
        let query = uri.query().unwrap_or_default();
        if query
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
        {
            let since: u64 = query
                .split('&')
                .find_map(|p| p.strip_prefix("resourceVersion="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            // What changed since the list it follows comes first, as from the real server.
            let (tx, rx) = mpsc::unbounded_channel();
            for (r, ns, version, line) in &store.log {
                if *r == resource && *version > since && namespace.as_ref().is_none_or(|n| n == ns)
                {
                    let _ = tx.send(Ok(Frame::data(line.clone())));
                }
            }
            store.watches.push((resource, namespace, tx));
            let body = StreamBody::new(UnboundedReceiverStream::new(rx));
            return Response::new(body.boxed_unsync());
        }
        let items: Vec<Value> = store
            .objects
            .iter()
            .filter(|((r, ns, _), _)| *r == resource && namespace.as_ref().is_none_or(|n| n == ns))
            .map(|(_, object)| object.clone())
            .collect();
        let (api_version, kind, _) = kind_of(resource);
        json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": api_version,
                "kind": format!("{kind}List"),
                "metadata": { "resourceVersion": store.version.to_string() },
                "items": items,
            }),
        )
    }

    /// Creates or replaces an object, telling the watches.
    fn apply(&self, resource: &'static str, mut object: Value) {
        let mut store = self.0.lock().unwrap();
        store.version += 1;
        object["metadata"]["resourceVersion"] = json!(store.version.to_string());
        let id = (resource, ns_of(&object), name_of(&object));
        let kind = if store.objects.contains_key(&id) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        store.objects.insert(id.clone(), object.clone());
        store.tell(resource, &id.1, kind, &object);
    }

    fn delete(&self, resource: &'static str, namespace: &str, name: &str) {
        let mut store = self.0.lock().unwrap();
        store.version += 1;
        let id = (resource, namespace.to_owned(), name.to_owned());
        let mut object = store.objects.remove(&id).expect("deleting what exists");
        object["metadata"]["resourceVersion"] = json!(store.version.to_string());
        store.tell(resource, namespace, "DELETED", &object);
    }

    /// The server goes down: open watches end, every request gets 503.
    fn go_down(&self) {
        let mut store = self.0.lock().unwrap();
        store.down = true;
        store.watches.clear();
    }

    fn come_back(&self) {
        self.0.lock().unwrap().down = false;
    }

    fn requests(&self) -> Vec<String> {
        self.0.lock().unwrap().requests.clone()
    }
}

impl Store {
    fn tell(&mut self, resource: &str, namespace: &str, kind: &str, object: &Value) {
        let mut line = serde_json::to_vec(&json!({ "type": kind, "object": object })).unwrap();
        line.push(b'\n');
        let line = Bytes::from(line);
        let resource = kind_of(resource).2;
        self.log
            .push((resource, namespace.to_owned(), self.version, line.clone()));
        self.watches.retain(|(r, ns, tx)| {
            if *r != resource || ns.as_ref().is_some_and(|ns| ns != namespace) {
                return !tx.is_closed();
            }
            tx.send(Ok(Frame::data(line.clone()))).is_ok()
        });
    }
}

/// apiVersion, kind, and the resource's name as a `'static`.
fn kind_of(resource: &str) -> (&'static str, &'static str, &'static str) {
    match resource {
        SERVICES => ("v1", "Service", SERVICES),
        PODS => ("v1", "Pod", PODS),
        _ => ("discovery.k8s.io/v1", "EndpointSlice", SLICES),
    }
}

fn ns_of(object: &Value) -> String {
    object["metadata"]["namespace"].as_str().unwrap().to_owned()
}

fn name_of(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap().to_owned()
}

fn json_response(status: StatusCode, value: &Value) -> Response<Body> {
    let body = Full::new(Bytes::from(serde_json::to_vec(value).unwrap()));
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(body.boxed_unsync())
        .unwrap()
}

/// A Service `NAME` in `namespace` with one port, 3000.
fn service(namespace: &str, name: &str) -> Value {
    service_with(
        namespace,
        name,
        json!({ "ports": [{ "name": "http", "port": 3000 }] }),
    )
}

fn service_with(namespace: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": name, "namespace": namespace },
        "spec": spec,
    })
}

/// An EndpointSlice of Service `service` listing `endpoints`: (address, conditions).
fn slice(namespace: &str, service: &str, name: &str, endpoints: &[(&str, Value)]) -> Value {
    let endpoints: Vec<Value> = endpoints
        .iter()
        .map(|(address, conditions)| json!({ "addresses": [address], "conditions": conditions }))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { SERVICE_NAME_LABEL: service },
        },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 3000, "protocol": "TCP" }],
        "endpoints": endpoints,
    })
}

fn ready() -> Value {
    json!({ "ready": true })
}

fn all_namespaces() -> Options {
    Options {
        namespaces: Vec::new(),
        cluster_domain: "cluster.local".to_owned(),
        trust_domain: "cluster.local".to_owned(),
    }
}

/// Waits (on paused time, so at no cost) for a snapshot that satisfies `check`.
async fn until(
    rx: &mut watch::Receiver<Snapshot>,
    what: &str,
    check: impl FnMut(&Snapshot) -> bool,
) -> Snapshot {
    let found = tokio::time::timeout(Duration::from_secs(120), async {
        rx.wait_for(check).await.map(|s| s.clone())
    })
    .await;
    match found {
        Ok(snapshot) => snapshot.expect("the source stopped"),
        Err(_) => panic!("no snapshot with {what}; last: {:?}", *rx.borrow()),
    }
}

/// Polls `check` (on paused time) until it holds: for what another task does with a snapshot.
async fn settles(what: &str, check: impl Fn() -> bool) {
    for _ in 0..1000 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{what} never came to be");
}

/// `service name -> sorted (address, ready, terminating)`.
fn endpoints_of(snapshot: &Snapshot) -> BTreeMap<String, Vec<(String, bool, bool)>> {
    snapshot
        .discovered
        .iter()
        .map(|d| {
            let endpoints = d
                .endpoints
                .values()
                .map(|e| (e.address.clone(), e.ready, e.terminating))
                .collect();
            (d.service.name.clone(), endpoints)
        })
        .collect()
}

fn ep(address: &str, ready: bool, terminating: bool) -> (String, bool, bool) {
    (address.to_owned(), ready, terminating)
}

#[tokio::test(start_paused = true)]
async fn services_and_their_slices_become_discovered_services_once_both_kinds_are_listed() {
    let (api, client) = FakeApi::start();
    api.apply(SERVICES, service("mastodon", "web"));
    let two = [("198.18.0.2", ready()), ("198.18.0.6", ready())];
    api.apply(SLICES, slice("mastodon", "web", "web-1", &two));

    let mut rx = spawn(client, all_namespaces());
    let snapshot = until(&mut rx, "synced", |s| s.synced).await;

    assert!(snapshot.problems.is_empty(), "{:?}", snapshot.problems);
    assert_eq!(
        endpoints_of(&snapshot),
        BTreeMap::from([(
            "web.mastodon".to_owned(),
            vec![
                ep("198.18.0.2:3000", true, false),
                ep("198.18.0.6:3000", true, false)
            ]
        )])
    );
}

#[tokio::test(start_paused = true)]
async fn watch_events_move_endpoints_whatever_order_objects_arrive_in() {
    let (api, client) = FakeApi::start();
    api.apply(SERVICES, service("mastodon", "web"));
    let three = [
        ("198.18.0.2", ready()),
        ("198.18.0.6", ready()),
        ("198.18.0.10", ready()),
    ];
    api.apply(SLICES, slice("mastodon", "web", "web-1", &three));
    let mut rx = spawn(client, all_namespaces());
    until(&mut rx, "synced", |s| s.synced).await;

    // Scaling down as Kubernetes does: terminating first, then gone.
    let terminating = json!({ "ready": false, "serving": true, "terminating": true });
    let draining = [
        ("198.18.0.2", ready()),
        ("198.18.0.6", ready()),
        ("198.18.0.10", terminating),
    ];
    api.apply(SLICES, slice("mastodon", "web", "web-1", &draining));
    let snapshot = until(&mut rx, "a terminating endpoint", |s| {
        endpoints_of(s)["web.mastodon"].contains(&ep("198.18.0.10:3000", false, true))
    })
    .await;
    assert_eq!(endpoints_of(&snapshot)["web.mastodon"].len(), 3);
    api.apply(SLICES, slice("mastodon", "web", "web-1", &three[..2]));
    until(&mut rx, "two endpoints", |s| {
        endpoints_of(s)["web.mastodon"].len() == 2
    })
    .await;

    // A second slice adds to the first.
    api.apply(
        SLICES,
        slice("mastodon", "web", "web-2", &[("198.18.0.14", ready())]),
    );
    until(&mut rx, "three endpoints over two slices", |s| {
        endpoints_of(s)["web.mastodon"].len() == 3
    })
    .await;

    // A slice before its Service: its endpoints are there when the Service comes.
    api.apply(
        SLICES,
        slice("mastodon", "api", "api-1", &[("198.18.0.18", ready())]),
    );
    api.apply(SERVICES, service("mastodon", "api"));
    let snapshot = until(&mut rx, "api", |s| {
        endpoints_of(s).contains_key("api.mastodon")
    })
    .await;
    assert_eq!(
        endpoints_of(&snapshot)["api.mastodon"],
        [ep("198.18.0.18:3000", true, false)]
    );

    api.delete(SLICES, "mastodon", "web-1");
    until(&mut rx, "web-1 gone", |s| {
        endpoints_of(s)["web.mastodon"].len() == 1
    })
    .await;
    api.delete(SERVICES, "mastodon", "web");
    let snapshot = until(&mut rx, "web gone", |s| {
        !endpoints_of(s).contains_key("web.mastodon")
    })
    .await;
    assert_eq!(snapshot.discovered.len(), 1);
}

/// A Pod `name` in `namespace` with service account `account`, meshed by a `herd-proxy`
/// container or not.
fn pod(namespace: &str, name: &str, account: &str, meshed: bool) -> Value {
    let mut containers = vec![json!({ "name": "puma", "image": "mastodon" })];
    if meshed {
        containers.push(json!({ "name": "herd-proxy", "image": "herd" }));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": namespace },
        "spec": { "serviceAccountName": account, "containers": containers },
    })
}

/// An EndpointSlice of Service `service` with one ready endpoint per (address, Pod name).
fn slice_of_pods(namespace: &str, service: &str, name: &str, pods: &[(&str, &str)]) -> Value {
    let mut slice = slice(namespace, service, name, &[]);
    slice["endpoints"] = pods
        .iter()
        .map(|(address, pod)| {
            json!({ "addresses": [address], "conditions": ready(),
                    "targetRef": { "kind": "Pod", "name": pod, "namespace": namespace } })
        })
        .collect();
    slice
}

/// `address -> identity` of service `name` (empty: not meshed).
fn identities_of(snapshot: &Snapshot, name: &str) -> BTreeMap<String, String> {
    snapshot
        .discovered
        .iter()
        .find(|d| d.service.name == name)
        .map(|d| {
            d.endpoints
                .values()
                .inspect(|e| assert_eq!(e.meshed, !e.identity.is_empty(), "{e:?}"))
                .map(|e| (e.address.clone(), e.identity.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn endpoints_of_meshed_pods_follow_their_pods_identity() {
    let (api, client) = FakeApi::start();
    api.apply(SERVICES, service("mastodon", "web"));
    api.apply(SERVICES, service("mastodon", "api"));
    api.apply(PODS, pod("mastodon", "web-0", "web", true));
    api.apply(PODS, pod("mastodon", "web-1", "web", false));
    api.apply(
        SLICES,
        slice_of_pods(
            "mastodon",
            "web",
            "web-a",
            &[("198.18.0.2", "web-0"), ("198.18.0.3", "web-1")],
        ),
    );
    api.apply(
        SLICES,
        slice_of_pods("mastodon", "api", "api-a", &[("198.18.0.9", "api-0")]),
    );
    let options = Options {
        trust_domain: "home.lab".to_owned(),
        ..all_namespaces()
    };
    let mut rx = spawn(client, options);
    let synced = until(&mut rx, "synced", |s| s.synced).await;
    let web = "spiffe://home.lab/ns/mastodon/sa/web";
    assert_eq!(
        identities_of(&synced, "web.mastodon"),
        BTreeMap::from([
            ("198.18.0.2:3000".to_owned(), web.to_owned()),
            ("198.18.0.3:3000".to_owned(), String::new()),
        ])
    );

    // A Pod seen after its slice: the Service that names it is translated again.
    api.apply(PODS, pod("mastodon", "api-0", "api", true));
    until(&mut rx, "api-0 meshed", |s| {
        identities_of(s, "api.mastodon")["198.18.0.9:3000"]
            == "spiffe://home.lab/ns/mastodon/sa/api"
    })
    .await;
    // The sidecar added to web-1 (a rollout would make a new Pod; an edit does as well).
    api.apply(PODS, pod("mastodon", "web-1", "web", true));
    until(&mut rx, "web-1 meshed", |s| {
        identities_of(s, "web.mastodon")["198.18.0.3:3000"] == web
    })
    .await;
    // A Pod deleted: its endpoint is no longer meshed (the slice still lists it, for now).
    api.delete(PODS, "mastodon", "web-0");
    let after = until(&mut rx, "web-0 gone", |s| {
        identities_of(s, "web.mastodon")["198.18.0.2:3000"].is_empty()
    })
    .await;
    assert_eq!(
        identities_of(&after, "web.mastodon")["198.18.0.3:3000"],
        web
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_api_server_keeps_the_last_state_is_reported_and_is_caught_up_with() {
    let (api, client) = FakeApi::start();
    api.apply(SERVICES, service("mastodon", "web"));
    api.apply(SERVICES, service("mastodon", "api"));
    let two = [("198.18.0.2", ready()), ("198.18.0.6", ready())];
    api.apply(SLICES, slice("mastodon", "web", "web-1", &two));
    let mut rx = spawn(client, all_namespaces());
    let before = until(&mut rx, "synced", |s| s.synced).await;

    api.go_down();
    let down = until(&mut rx, "every watch failing", |s| s.problems.len() == 3).await;
    assert!(down.synced, "synced once is synced");
    assert_eq!(
        endpoints_of(&down),
        endpoints_of(&before),
        "the last state stays"
    );
    assert!(
        down.problems
            .iter()
            .all(|p| p.contains("503") || p.contains("shutting down")),
        "{:?}",
        down.problems
    );

    // While it is down, things change that no watch hears.
    api.delete(SERVICES, "mastodon", "api");
    api.apply(SLICES, slice("mastodon", "web", "web-1", &two[..1]));
    api.come_back();

    let back = until(&mut rx, "no problems", |s| s.problems.is_empty()).await;
    assert_eq!(
        endpoints_of(&back),
        BTreeMap::from([(
            "web.mastodon".to_owned(),
            vec![ep("198.18.0.2:3000", true, false)]
        )]),
        "the fresh lists replaced what the watches had, deletions included"
    );
}

#[tokio::test(start_paused = true)]
async fn nothing_is_synced_while_the_first_lists_fail() {
    let (api, client) = FakeApi::start();
    api.apply(SERVICES, service("mastodon", "web"));
    api.go_down();
    let mut rx = spawn(client, all_namespaces());
    let failing = until(&mut rx, "three problems", |s| s.problems.len() == 3).await;
    assert!(!failing.synced);
    assert!(failing.discovered.is_empty());
    let lists = api.requests().len();
    // Retried with a backoff, not in a loop: within a minute, a handful of tries per watch.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let tries = api.requests().len() - lists;
    assert!((4..=50).contains(&tries), "{tries} requests in a minute");

    api.come_back();
    let synced = until(&mut rx, "synced", |s| s.synced && s.problems.is_empty()).await;
    assert_eq!(synced.discovered.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn only_the_namespaces_asked_for_are_watched() {
    let (api, client) = FakeApi::start();
    for ns in ["mastodon", "other"] {
        api.apply(SERVICES, service(ns, "web"));
        api.apply(
            SLICES,
            slice(ns, "web", "web-1", &[("198.18.0.2", ready())]),
        );
    }
    let options = Options {
        namespaces: vec!["mastodon".to_owned()],
        ..all_namespaces()
    };
    let mut rx = spawn(client, options);
    let snapshot = until(&mut rx, "synced", |s| s.synced).await;
    assert_eq!(
        endpoints_of(&snapshot).into_keys().collect::<Vec<_>>(),
        ["web.mastodon"]
    );
    api.apply(SERVICES, service("other", "api"));
    api.apply(SERVICES, service("mastodon", "api"));
    until(&mut rx, "api.mastodon", |s| s.discovered.len() == 2).await;
    let requests = api.requests();
    assert!(
        requests.iter().all(|r| r.contains("/namespaces/mastodon/")),
        "{requests:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_object_herd_cannot_use_is_skipped_and_everything_else_stands() {
    let (api, client) = FakeApi::start();
    api.apply(SERVICES, service("mastodon", "web"));
    api.apply(
        SERVICES,
        service_with(
            "mastodon",
            "mail",
            json!({ "type": "ExternalName", "externalName": "smtp.example" }),
        ),
    );
    api.apply(
        SERVICES,
        service_with(
            "mastodon",
            "dns",
            json!({ "ports": [{ "port": 53, "protocol": "UDP" }] }),
        ),
    );
    api.apply(SERVICES, service_with("mastodon", "bare", json!({})));
    // The real server refuses such an address; a fake may send anything.
    let odd = [("198.18.0.2", ready()), ("not-an-address", ready())];
    api.apply(SLICES, slice("mastodon", "web", "web-1", &odd));
    let mut rx = spawn(client, all_namespaces());
    let snapshot = until(&mut rx, "synced", |s| s.synced).await;
    assert_eq!(
        endpoints_of(&snapshot),
        BTreeMap::from([(
            "web.mastodon".to_owned(),
            vec![ep("198.18.0.2:3000", true, false)]
        )])
    );
    assert!(
        snapshot.problems.is_empty(),
        "skipping is no problem of the source"
    );

    // Arriving by watch changes nothing either.
    api.apply(
        SERVICES,
        service_with(
            "mastodon",
            "web2",
            json!({ "type": "ExternalName", "externalName": "x.example" }),
        ),
    );
    api.apply(SERVICES, service("mastodon", "api"));
    let snapshot = until(&mut rx, "api", |s| s.discovered.len() == 2).await;
    assert!(endpoints_of(&snapshot).contains_key("web.mastodon"));
}

#[tokio::test(start_paused = true)]
async fn the_index_hears_the_cluster_once_it_is_synced_and_the_status_says_how_it_goes() {
    let (api, client) = FakeApi::start();
    api.apply(SERVICES, service("mastodon", "web"));
    api.apply(
        SLICES,
        slice("mastodon", "web", "web-1", &[("198.18.0.2", ready())]),
    );
    api.go_down();
    let index = Arc::new(std::sync::Mutex::new(Index::with_sources(Sources {
        mesh: false,
        kubernetes: true,
    })));
    let push = Push::new(index.clone(), Metrics::new());
    push.sources.lock().unwrap().push(SourceStatus {
        name: NAME.to_owned(),
        synced: false,
        problems: Vec::new(),
    });
    let ready = Arc::new(AtomicBool::new(false));
    let rx = spawn(client, all_namespaces());
    let mut watched = rx.clone();
    tokio::spawn(feed(rx, push.clone(), ready.clone()));
    let gauge = || {
        push.metrics
            .source_problems
            .with_label_values(&[NAME])
            .get()
    };

    until(&mut watched, "problems", |s| s.problems.len() == 3).await;
    settles("the gauge", || gauge() == 3).await;
    let status = push.sources.lock().unwrap()[0].clone();
    assert!(!status.synced && status.problems.len() == 3, "{status:?}");
    assert!(!ready.load(std::sync::atomic::Ordering::Acquire));
    assert_eq!(
        index.lock().unwrap().current_routing().version,
        "",
        "nothing published"
    );

    api.come_back();
    until(&mut watched, "synced", |s| {
        s.synced && s.problems.is_empty()
    })
    .await;
    let mut routing = index.lock().unwrap().routing();
    tokio::time::timeout(
        Duration::from_secs(10),
        routing.wait_for(|r| !r.version.is_empty()),
    )
    .await
    .expect("routing published")
    .unwrap();
    assert_eq!(index.lock().unwrap().current_routing().services, 1);
    settles("ready", || ready.load(std::sync::atomic::Ordering::Acquire)).await;
    settles("no problems", || gauge() == 0).await;
    assert_eq!(push.metrics.services.get(), 1);

    // Down again: still ready, routing kept, the problem shown.
    api.go_down();
    until(&mut watched, "problems", |s| !s.problems.is_empty()).await;
    settles("the problem in the gauge", || gauge() > 0).await;
    assert!(ready.load(std::sync::atomic::Ordering::Acquire));
    assert_eq!(index.lock().unwrap().current_routing().services, 1);
}
