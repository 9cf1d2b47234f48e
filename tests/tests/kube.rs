//! The Kubernetes test kit itself: a real kube-apiserver (with etcd) on loopback, driven with
//! kubectl, and pods as network namespaces whose addresses an EndpointSlice may hold.
//!
//! These are the facts later tests stand on: objects applied read back; a process in a pod
//! answers at the pod's address, which is the address the EndpointSlice names; the server
//! refuses loopback endpoint addresses (why pods need namespaces); a bound service-account
//! token passes a TokenReview for its audience only; and the server can be restarted under a
//! test with everything stored kept.

use std::net::{IpAddr, SocketAddr};

use herd_tests::kube::KubeApi;
use herd_tests::netns::Pod;
use herd_tests::{Puma, TIMEOUT, curl, puma, server, within};
use serde_json::Value;

/// A Service `web` (port 3000, no selector: its endpoints come from the slice) and an
/// EndpointSlice for it holding `ip`.
fn web_service_with_endpoint(ip: IpAddr) -> String {
    format!(
        "apiVersion: v1
         kind: Service
         metadata: {{ name: web, namespace: mastodon }}
         spec:
           ports: [{{ name: http, port: 3000, targetPort: 3000 }}]
         ---
         apiVersion: discovery.k8s.io/v1
         kind: EndpointSlice
         metadata:
           name: web-1
           namespace: mastodon
           labels: {{ kubernetes.io/service-name: web }}
         addressType: IPv4
         ports: [{{ name: http, port: 3000, protocol: TCP }}]
         endpoints:
           - addresses: [\"{ip}\"]
             conditions: {{ ready: true }}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn applied_objects_read_back_and_the_endpoint_pod_answers_at_its_address() {
    let kube = KubeApi::start().await;
    let pod = Pod::new("web-0");
    let app = Puma::start_in(&pod, puma::ECHO, SocketAddr::new(pod.ip().into(), 3000)).await;

    kube.namespace("mastodon").await;
    kube.apply(
        "apiVersion: v1
         kind: ServiceAccount
         metadata: { name: web, namespace: mastodon }",
    )
    .await;
    kube.apply(&web_service_with_endpoint(pod.ip().into()))
        .await;

    let account = kube.get("mastodon", "serviceaccount", "web").await;
    assert_eq!(account["metadata"]["name"], "web");
    let service = kube.get("mastodon", "service", "web").await;
    assert_eq!(service["spec"]["ports"][0]["port"], 3000);
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap_or_default();
    assert!(
        cluster_ip.starts_with("10.96."),
        "a cluster IP from --service-cluster-ip-range, got {service}"
    );
    let slice = kube.get("mastodon", "endpointslice", "web-1").await;
    assert_eq!(
        slice["metadata"]["labels"]["kubernetes.io/service-name"],
        "web"
    );
    let address = &slice["endpoints"][0]["addresses"][0];
    assert_eq!(*address, Value::from(pod.ip().to_string()));

    // What the slice says is where the app is: curl from the host at that address and port.
    let url = format!(
        "http://{}:{}/hello",
        address.as_str().unwrap_or_default(),
        slice["ports"][0]["port"]
    );
    let out = curl().get(&url).await;
    assert_eq!(out.status(), 200, "{}\n{}", out.stderr, app.log());
    assert_eq!(out.json()["path"], "/hello");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_endpoint_address_is_refused() {
    let kube = KubeApi::start().await;
    kube.namespace("mastodon").await;

    let refused = kube
        .try_apply(&web_service_with_endpoint("127.0.0.1".parse().unwrap()))
        .await;

    assert!(!refused.success, "stored: {}", refused.stdout);
    assert!(
        refused.stderr.contains("may not be in the loopback range"),
        "refused for another reason: {}",
        refused.stderr
    );
    let slices = kube
        .kubectl(&["get", "endpointslices", "-n", "mastodon", "-o", "name"])
        .await;
    assert!(!slices.contains("web-1"), "stored anyway: {slices}");
}

/// `kubectl create` of a TokenReview of `token` for `audience`: the server's answer.
async fn review(kube: &KubeApi, token: &str, audience: &str) -> Value {
    kube.create(&format!(
        "apiVersion: authentication.k8s.io/v1
         kind: TokenReview
         spec:
           token: {token}
           audiences: [{audience}]"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_token_passes_a_token_review_for_its_audience_only() {
    let kube = KubeApi::start().await;
    kube.namespace("mastodon").await;
    kube.apply(
        "apiVersion: v1
         kind: ServiceAccount
         metadata: { name: web, namespace: mastodon }",
    )
    .await;
    let token = kube.create_token("mastodon", "web", "herd").await;

    let passed = review(&kube, &token, "herd").await;
    assert_eq!(passed["status"]["authenticated"], true, "{passed}");
    assert_eq!(
        passed["status"]["user"]["username"],
        "system:serviceaccount:mastodon:web"
    );
    assert_eq!(passed["status"]["audiences"], serde_json::json!(["herd"]));

    let refused = review(&kube, &token, "other").await;
    assert_ne!(refused["status"]["authenticated"], true, "{refused}");
    let error = refused["status"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("audience"), "refused, but why? {refused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_a_restart_the_server_answers_on_its_port_with_what_it_stored() {
    let mut kube = KubeApi::start().await;
    kube.namespace("mastodon").await;
    kube.apply(
        "apiVersion: v1
         kind: ConfigMap
         metadata: { name: before, namespace: mastodon }
         data: { said: before }",
    )
    .await;
    let url = kube.url();

    kube.restart_apiserver().await;

    assert_eq!(kube.url(), url);
    // kubectl (and any client that checks the server's version) needs a version it can parse,
    // which the build stamps in.
    let version = kube.kubectl(&["version", "-o", "json"]).await;
    let version: Value = serde_json::from_str(&version).expect("kubectl version -o json");
    assert_eq!(
        version["serverVersion"]["gitVersion"],
        format!("v{}", herd_tests::kube::VERSION)
    );
    let before = kube.get("mastodon", "configmap", "before").await;
    assert_eq!(before["data"]["said"], "before");
    kube.apply(
        "apiVersion: v1
         kind: ConfigMap
         metadata: { name: after, namespace: mastodon }
         data: { said: after }",
    )
    .await;
    let after = kube.get("mastodon", "configmap", "after").await;
    assert_eq!(after["data"]["said"], "after");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_and_the_host_reach_each_other_over_ipv4_and_ipv6() {
    let pod = Pod::new("client");
    let other = Pod::new("other");
    assert_ne!(pod.ip(), other.ip(), "two pods, one address");

    // Host -> pod, over IPv6 (the first test covers IPv4).
    let app = Puma::start_in(&pod, puma::ECHO, SocketAddr::new(pod.ipv6().into(), 3000)).await;
    let out = curl()
        .get(format!("http://[{}]:3000/six", pod.ipv6()))
        .await;
    assert_eq!(out.status(), 200, "{}\n{}", out.stderr, app.log());

    // Pod -> host, at the host's side of the pod's link, both families.
    for host in [IpAddr::from(pod.host_ip()), pod.host_ipv6().into()] {
        let server = server::http1_on(SocketAddr::new(host, 0), |_| async {
            server::reply::text("from the host")
        })
        .await;
        let url = format!("http://{}/", server.addr());
        let mut curl_in_pod = pod.command("curl");
        curl_in_pod.args(["-sS", "--max-time", "5", &url]);
        let out = within("curl inside the pod", TIMEOUT, curl_in_pod.output())
            .await
            .expect("run curl in the pod");
        assert!(
            out.status.success(),
            "curl {url} from the pod: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), "from the host");
    }

    let netns = pod.netns().to_owned();
    drop(app);
    drop(pod);
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    assert!(
        !String::from_utf8_lossy(&left.stdout).contains(&netns),
        "{netns} outlived its pod"
    );
}
