//! The injector's decisions and patches, pod spec in, JSON Patch out, without a server.

use serde_json::{Value, json};

use super::annotations::{is_quantity, port_list};
use super::patch::{ApplyError, Op, apply};
use super::review;
use super::webhook::supports_native;
use super::*;

/// A real root, so the proxy's configuration validates as herd-proxy would read it.
fn anchors() -> &'static str {
    static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PEM.get_or_init(|| {
        herd_identity::Issuer::generate("cluster.local", std::time::Duration::from_secs(86400))
            .unwrap()
            .certificate_pem()
    })
}

fn settings(native: bool) -> Settings {
    Settings {
        image: "ghcr.io/herd/herd-proxy:0.1.0".into(),
        native_sidecars: native,
        control: "herd-control-headless.herd.svc.cluster.local:8086".into(),
        identity: "herd-control-headless.herd.svc.cluster.local:8080".into(),
        trust_domain: "cluster.local".into(),
        control_identity: "spiffe://cluster.local/ns/herd/sa/herd-control".into(),
        token_audience: "herd".into(),
        trust_anchors_pem: anchors().into(),
    }
}

/// Mastodon's web pod: Puma on 3000, a migration init container, its own volume.
fn web() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "web-0",
            "namespace": "mastodon",
            "labels": { "app": "web" },
            "annotations": { "herd.io/inject": "enabled" },
        },
        "spec": {
            "serviceAccountName": "web",
            "initContainers": [{ "name": "migrate", "image": "mastodon:4.3", "command": ["rails", "db:migrate"] }],
            "containers": [{
                "name": "web",
                "image": "mastodon:4.3",
                "ports": [{ "name": "http", "containerPort": 3000 }],
            }],
            "volumes": [{ "name": "assets", "emptyDir": {} }],
        },
    })
}

/// `pod` with `value` set at `pointer` (or appended, for the index after an array's last).
fn with(mut pod: Value, pointer: &str, value: Value) -> Value {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    match pod.pointer_mut(parent).unwrap() {
        Value::Array(list) if key.parse() == Ok(list.len()) => list.push(value),
        Value::Array(list) => list[key.parse::<usize>().unwrap()] = value,
        parent => parent[key] = value,
    }
    pod
}

fn annotated(pod: Value, name: &str, value: &str) -> Value {
    let mut pod = pod;
    pod["metadata"]["annotations"][name] = json!(value);
    pod
}

/// The pod after the patch `plan` decides, which must inject.
fn injected(pod: &Value, native: bool) -> Value {
    let Decision::Inject(ops) = plan(pod, None, &settings(native)) else {
        panic!("not injected: {:?}", plan(pod, None, &settings(native)));
    };
    assert!(ops.iter().all(|op| op.op == "add"), "{ops:?}");
    let mut patched = pod.clone();
    apply(&mut patched, &ops).unwrap();
    patched
}

fn names(list: &Value) -> Vec<&str> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

fn refused(pod: &Value) -> String {
    match plan(pod, None, &settings(true)) {
        Decision::Refused(why) => why,
        other => panic!("not refused: {other:?}"),
    }
}

/// The proxy's configuration with the `$(VAR)`s filled in as the kubelet would for `web-0`.
fn bootstrap_of(proxy: &Value) -> Value {
    let env = proxy["env"].as_array().unwrap();
    let names: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "HERD_POD_NAME",
            "HERD_POD_NAMESPACE",
            "HERD_POD_SERVICE_ACCOUNT",
            "HERD_PROXY_CONFIG_YAML"
        ],
        "a $(VAR) may name only a variable defined before it"
    );
    assert_eq!(
        env[0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.name"
    );
    assert_eq!(
        env[1]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.namespace"
    );
    assert_eq!(
        env[2]["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName"
    );
    let yaml = env[3]["value"]
        .as_str()
        .unwrap()
        .replace("$(HERD_POD_NAME)", "web-0")
        .replace("$(HERD_POD_NAMESPACE)", "mastodon")
        .replace("$(HERD_POD_SERVICE_ACCOUNT)", "web");
    assert!(!yaml.contains("$("), "{yaml}");
    // What herd-proxy makes of it: a valid configuration.
    let config = herd_config::parse(&yaml, "$HERD_PROXY_CONFIG_YAML")
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert!(config.proxy.inbound.as_ref().unwrap().transparent);
    serde_saphyr::from_str(&yaml).unwrap()
}

#[test]
fn injection_follows_the_pod_then_its_namespace() {
    let s = settings(true);
    let plain = {
        let mut pod = web();
        pod["metadata"]["annotations"] = json!({});
        pod
    };
    assert!(matches!(plan(&plain, None, &s), Decision::NotWanted(_)));
    assert!(matches!(
        plan(&plain, Some("disabled"), &s),
        Decision::NotWanted(_)
    ));
    assert!(matches!(
        plan(&plain, Some("enabled"), &s),
        Decision::Inject(_)
    ));
    // The pod's own word wins over its namespace's, both ways.
    let out = annotated(plain.clone(), "herd.io/inject", "disabled");
    assert_eq!(
        plan(&out, Some("enabled"), &s),
        Decision::NotWanted("the pod says herd.io/inject: disabled")
    );
    assert!(matches!(
        plan(&web(), Some("disabled"), &s),
        Decision::Inject(_)
    ));
    // A value that is neither: refused, quoted.
    assert_eq!(
        refused(&annotated(plain.clone(), "herd.io/inject", "yes")),
        "herd.io/inject: `yes` is neither `enabled` nor `disabled`"
    );
    assert_eq!(
        plan(&plain, Some("true"), &s),
        Decision::Refused(
            "the namespace's herd.io/inject: `true` is neither `enabled` nor `disabled`".into()
        )
    );
}

#[test]
fn a_native_sidecar_starts_after_herd_init_and_before_everything_else() {
    let pod = injected(&web(), true);
    let spec = &pod["spec"];
    assert_eq!(
        names(&spec["initContainers"]),
        ["herd-init", "herd-proxy", "migrate"]
    );
    assert_eq!(names(&spec["containers"]), ["web"], "the app is untouched");
    assert_eq!(names(&spec["volumes"]), ["assets", "herd-identity-token"]);

    let proxy = &spec["initContainers"][1];
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["startupProbe"]["httpGet"]["port"], 4191);
    assert_eq!(proxy["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(proxy["livenessProbe"]["httpGet"]["path"], "/live");
    assert!(proxy.get("lifecycle").is_none());
    assert_eq!(proxy["image"], "ghcr.io/herd/herd-proxy:0.1.0");
    assert_eq!(proxy["command"], json!(["herd-proxy"]));
    assert_eq!(
        proxy["ports"],
        json!([
            { "name": "herd-inbound", "containerPort": 4143 },
            { "name": "herd-admin", "containerPort": 4191 },
        ])
    );
    assert_eq!(
        proxy["securityContext"],
        json!({
            "runAsUser": 2102, "runAsGroup": 2102, "runAsNonRoot": true,
            "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        })
    );
    assert_eq!(
        proxy["volumeMounts"],
        json!([{ "name": "herd-identity-token", "mountPath": "/var/run/secrets/herd.io/identity", "readOnly": true }])
    );
    assert!(proxy.get("resources").is_none(), "no limits unless asked");

    let init = &spec["initContainers"][0];
    assert_eq!(
        init["args"],
        json!([
            "init",
            "--inbound-port",
            "4143",
            "--outbound-port",
            "4140",
            "--admin-port",
            "4191",
            "--proxy-uid",
            "2102",
        ])
    );
    assert_eq!(
        init["securityContext"],
        json!({
            "runAsUser": 0, "runAsNonRoot": false, "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"] },
        })
    );
    assert_eq!(
        spec["volumes"][1]["projected"]["sources"][0]["serviceAccountToken"],
        json!({ "audience": "herd", "expirationSeconds": 86400, "path": "token" })
    );

    let metadata = &pod["metadata"];
    assert_eq!(
        metadata["labels"],
        json!({ "app": "web", "herd.io/meshed": "true" })
    );
    assert_eq!(
        metadata["annotations"],
        json!({
            "herd.io/inject": "enabled",
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "4191",
            "prometheus.io/path": "/metrics",
        })
    );
}

#[test]
fn a_regular_sidecar_is_the_first_container_and_holds_the_app_until_ready() {
    let pod = injected(&web(), false);
    let spec = &pod["spec"];
    assert_eq!(
        names(&spec["initContainers"]),
        ["migrate", "herd-init"],
        "the pod's own init containers run before the rules, with their network"
    );
    assert_eq!(names(&spec["containers"]), ["herd-proxy", "web"]);
    let proxy = &spec["containers"][0];
    assert!(proxy.get("restartPolicy").is_none());
    assert!(proxy.get("startupProbe").is_none());
    assert_eq!(
        proxy["lifecycle"]["postStart"]["httpGet"],
        json!({ "path": "/ready?wait=120s", "port": 4191 })
    );
}

#[test]
fn a_pod_without_init_containers_volumes_labels_or_annotations_gets_them_whole() {
    let bare = json!({
        "metadata": { "name": "worker", "annotations": { "herd.io/inject": "enabled" } },
        "spec": { "containers": [{ "name": "sidekiq", "image": "mastodon:4.3" }] },
    });
    let Decision::Inject(ops) = plan(&bare, None, &settings(true)) else {
        panic!()
    };
    let paths: Vec<&str> = ops.iter().map(|op| op.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/metadata/labels",
            "/metadata/annotations/prometheus.io~1path",
            "/metadata/annotations/prometheus.io~1port",
            "/metadata/annotations/prometheus.io~1scrape",
            "/spec/initContainers",
            "/spec/volumes",
        ]
    );
    let pod = injected(&bare, true);
    assert_eq!(
        names(&pod["spec"]["initContainers"]),
        ["herd-init", "herd-proxy"]
    );
    bootstrap_of(&pod["spec"]["initContainers"][1]);

    let regular = injected(&bare, false);
    assert_eq!(names(&regular["spec"]["initContainers"]), ["herd-init"]);
    assert_eq!(
        names(&regular["spec"]["containers"]),
        ["herd-proxy", "sidekiq"]
    );

    // A template with no metadata at all (legal in a workload).
    let no_metadata = json!({ "spec": { "containers": [{ "name": "app" }] } });
    let Decision::Inject(ops) = plan(&no_metadata, Some("enabled"), &settings(true)) else {
        panic!()
    };
    assert_eq!(ops[0].path, "/metadata");
    let mut patched = no_metadata.clone();
    apply(&mut patched, &ops).unwrap();
    assert_eq!(patched["metadata"]["labels"]["herd.io/meshed"], "true");
}

#[test]
fn injecting_an_injected_pod_changes_nothing() {
    for native in [true, false] {
        let once = injected(&web(), native);
        // Either shape is recognised by either setting.
        for again in [true, false] {
            assert_eq!(
                plan(&once, Some("enabled"), &settings(again)),
                Decision::AlreadyInjected,
                "native {native}, then {again}"
            );
        }
    }
}

#[test]
fn the_proxy_configuration_points_at_herd_control_with_the_pods_identity() {
    let pod = injected(&web(), true);
    let config = bootstrap_of(&pod["spec"]["initContainers"][1]);
    assert_eq!(
        config,
        json!({
            "proxy": {
                "inbound": { "listen": "[::]:4143", "transparent": true },
                "outbound": { "listen": "[::]:4140", "transparent": true },
                "admin": { "listen": "[::]:4191" },
                "control": {
                    "dns": "herd-control-headless.herd.svc.cluster.local:8086",
                    "id": "web-0",
                    "namespace": "mastodon",
                },
                "identity": {
                    "dns": "herd-control-headless.herd.svc.cluster.local:8080",
                    "id": "spiffe://cluster.local/ns/mastodon/sa/web",
                    "tokenFile": "/var/run/secrets/herd.io/identity/token",
                    "controlIdentity": "spiffe://cluster.local/ns/herd/sa/herd-control",
                    "trustAnchorsPem": anchors(),
                },
            }
        })
    );
}

#[test]
fn each_annotation_shapes_what_is_injected() {
    let pod = annotated(web(), "herd.io/opaque-ports", "25, 3306,8000-8010");
    let pod = annotated(pod, "herd.io/skip-inbound-ports", "22,4191");
    let pod = annotated(pod, "herd.io/skip-outbound-ports", "443,5432-5433");
    let pod = annotated(pod, "herd.io/proxy-cpu-limit", "500m");
    let pod = annotated(pod, "herd.io/proxy-memory-limit", "128Mi");
    let pod = injected(&pod, true);
    let init = &pod["spec"]["initContainers"][0];
    let args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args[9..],
        [
            "--skip-inbound-ports",
            "22,4191",
            "--skip-outbound-ports",
            "443,5432-5433"
        ]
    );
    let proxy = &pod["spec"]["initContainers"][1];
    assert_eq!(
        proxy["resources"],
        json!({ "limits": { "cpu": "500m", "memory": "128Mi" } })
    );
    let config = bootstrap_of(proxy);
    assert_eq!(
        config["proxy"]["inbound"]["opaquePorts"],
        json!(["25", "3306", "8000-8010"])
    );

    // The pod's own prometheus.io annotations are left alone, and none is added.
    let scraped = annotated(web(), "prometheus.io/port", "9394");
    let pod = injected(&scraped, true);
    assert_eq!(
        pod["metadata"]["annotations"],
        json!({ "herd.io/inject": "enabled", "prometheus.io/port": "9394" })
    );
}

#[test]
fn a_bad_annotation_value_is_refused_naming_it() {
    let cases = [
        (
            "herd.io/opaque-ports",
            "smtp",
            "herd.io/opaque-ports: `smtp` is not a port (1 to 65535) or a range of ports (`8000-8010`)",
        ),
        (
            "herd.io/skip-inbound-ports",
            "22,70000",
            "herd.io/skip-inbound-ports: `70000` is not a port (1 to 65535) or a range of ports (`8000-8010`)",
        ),
        (
            "herd.io/skip-outbound-ports",
            "9-8",
            "herd.io/skip-outbound-ports: `9-8`: a range's first port must not be above its last",
        ),
        (
            "herd.io/proxy-cpu-limit",
            "lots",
            "herd.io/proxy-cpu-limit: `lots` is not a Kubernetes quantity (e.g. `500m`, `1`, `128Mi`)",
        ),
        (
            "herd.io/proxy-memory-limit",
            "-1Gi",
            "herd.io/proxy-memory-limit: `-1Gi` is not a Kubernetes quantity (e.g. `500m`, `1`, `128Mi`)",
        ),
    ];
    for (name, value, want) in cases {
        assert_eq!(refused(&annotated(web(), name, value)), want, "{name}");
    }
}

#[test]
fn a_pod_herd_cannot_patch_is_refused_with_the_reason() {
    let clash = with(
        web(),
        "/spec/containers/0/ports",
        json!([{ "containerPort": 4191 }]),
    );
    assert_eq!(
        refused(&clash),
        "port clash: container web declares port 4191, which herd's proxy uses (4143 inbound, \
         4140 outbound, 4191 admin)"
    );
    let clash_in_init = with(
        web(),
        "/spec/initContainers/0/ports",
        json!([{ "containerPort": 4140 }]),
    );
    assert!(refused(&clash_in_init).contains("container migrate declares port 4140"));

    let host = with(web(), "/spec/hostNetwork", json!(true));
    assert!(refused(&host).contains("hostNetwork"), "{}", refused(&host));

    let half = with(
        web(),
        "/spec/containers/1",
        json!({ "name": "herd-proxy", "image": "somebody/else" }),
    );
    assert_eq!(
        refused(&half),
        "unknown container layout: the pod has herd-proxy but not the rest of herd's sidecar"
    );
    let volume_only = with(
        web(),
        "/spec/volumes/1",
        json!({ "name": "herd-identity-token", "emptyDir": {} }),
    );
    assert!(refused(&volume_only).contains("has herd-identity-token but not the rest"));

    let empty = with(web(), "/spec/containers", json!([]));
    assert_eq!(refused(&empty), "the pod has no containers");

    let proxy_uid = with(web(), "/spec/securityContext", json!({ "runAsUser": 2102 }));
    assert!(refused(&proxy_uid).contains("runs as uid 2102, the proxy's"));

    let unreadable = with(web(), "/spec/containers", json!("web"));
    assert!(
        refused(&unreadable).starts_with("the pod spec is not readable: "),
        "{}",
        refused(&unreadable)
    );
    let no_spec = {
        let mut pod = web();
        pod.as_object_mut().unwrap().remove("spec");
        pod
    };
    assert_eq!(refused(&no_spec), "the pod has no spec");

    // Not asked for: none of this matters.
    let mut quiet = host.clone();
    quiet["metadata"]["annotations"] = json!({});
    assert!(matches!(
        plan(&quiet, None, &settings(true)),
        Decision::NotWanted(_)
    ));
}

fn review_of(pod: &Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": "mastodon",
            "operation": "CREATE",
            "object": pod,
        },
    }))
    .unwrap()
}

#[test]
fn a_review_is_answered_with_the_patch_base64_encoded() {
    let request = review::parse(&review_of(&web())).unwrap();
    assert_eq!(request.uid, "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(request.namespace.as_deref(), Some("mastodon"));
    assert_eq!(request.operation, "CREATE");
    assert_eq!(request.pod_name(), "mastodon/web-0");

    let decision = plan(&request.object, None, &settings(true));
    let Decision::Inject(ops) = &decision else {
        panic!()
    };
    let answer = review::respond(&request.uid, &decision);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], request.uid.as_str());
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes: k8s_openapi::ByteString = serde_json::from_value(response["patch"].clone()).unwrap();
    let sent: Vec<Value> = serde_json::from_slice(&bytes.0).unwrap();
    assert_eq!(
        sent,
        serde_json::to_value(ops)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    );
    assert!(response.get("warnings").is_none());

    // Nothing to do: allowed, nothing else.
    let answer = review::respond("u", &Decision::AlreadyInjected);
    assert_eq!(answer["response"], json!({ "uid": "u", "allowed": true }));
}

#[test]
fn a_refused_pod_is_allowed_without_a_patch_and_with_a_warning() {
    let clash = with(
        web(),
        "/spec/containers/0/ports",
        json!([{ "containerPort": 4143 }]),
    );
    let decision = plan(&clash, None, &settings(true));
    let answer = review::respond("u", &decision);
    let response = &answer["response"];
    assert_eq!(response["allowed"], true);
    assert!(response.get("patch").is_none() && response.get("patchType").is_none());
    let warnings = response["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1);
    let warning = warnings[0].as_str().unwrap();
    assert!(
        warning.starts_with("herd: not injected: port clash: container web declares port 4143"),
        "{warning}"
    );

    // A long, multi-line reason is cut to one short line.
    let long = Decision::Refused(format!("line one\nline two {}", "x".repeat(400)));
    let answer = review::respond("u", &long);
    let warning = answer["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.len() <= 250 && !warning.contains('\n') && warning.ends_with("..."));
}

#[test]
fn a_malformed_review_is_allowed_with_a_warning() {
    let cases: Vec<(Vec<u8>, Option<&str>, &str)> = vec![
        (b"{not json".to_vec(), None, "the body is not JSON"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"a"}}"#.to_vec(),
            Some("a"),
            "not an admission.k8s.io/v1 AdmissionReview",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{}}"#.to_vec(),
            None,
            "the review has no request.uid",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"b","kind":{"group":"apps","version":"v1","kind":"Deployment"},"object":{}}}"#.to_vec(),
            Some("b"),
            "the review is about Deployment, not a Pod",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"c","kind":{"group":"","version":"v1","kind":"Pod"},"object":"pod"}}"#.to_vec(),
            Some("c"),
            "the review has no object",
        ),
    ];
    for (body, uid, reason) in cases {
        let malformed = review::parse(&body).unwrap_err();
        assert_eq!(malformed.uid.as_deref(), uid, "{reason}");
        assert!(malformed.reason.starts_with(reason), "{}", malformed.reason);
        let answer = review::respond_malformed(&malformed);
        let response = &answer["response"];
        assert_eq!(response["uid"], uid.unwrap_or(""));
        assert_eq!(response["allowed"], true);
        assert!(response.get("patch").is_none());
        assert!(
            response["warnings"][0]
                .as_str()
                .unwrap()
                .starts_with(&format!("herd: review not understood: {reason}"))
        );
    }
    // A pod whose spec is nonsense reads as a review, and is refused by the plan.
    let body = review_of(
        &json!({ "metadata": { "annotations": { "herd.io/inject": "enabled" } }, "spec": 7 }),
    );
    let request = review::parse(&body).unwrap();
    assert!(matches!(
        plan(&request.object, None, &settings(true)),
        Decision::Refused(_)
    ));
}

#[test]
fn port_lists_and_quantities_read_as_kubernetes_writes_them() {
    assert_eq!(port_list("").unwrap(), vec![]);
    assert_eq!(
        port_list(" 25 ,8000-8010,").unwrap(),
        vec![
            herd_config::PortRange {
                first: 25,
                last: 25
            },
            herd_config::PortRange {
                first: 8000,
                last: 8010
            }
        ]
    );
    assert!(port_list("25;26").is_err());
    for good in [
        "1", "500m", "0.5", "2Gi", "128Mi", "1e3", "1E-2", "+1", "10k", "1.5G", ".5",
    ] {
        assert!(is_quantity(good), "{good}");
    }
    for bad in [
        "", "lots", "-1", "1GB", "1.2.3", "m", "1e", "1 Gi", "0x10", ".",
    ] {
        assert!(!is_quantity(bad), "{bad}");
    }
}

#[test]
fn patches_apply_as_rfc_6902_says() {
    let mut doc = json!({ "a": [1, 2], "m": {} });
    let add = |path: &str, value: Value| Op {
        op: "add",
        path: path.into(),
        value,
    };
    apply(
        &mut doc,
        &[
            add("/a/0", json!(0)),
            add("/a/-", json!(3)),
            add("/m/x~1y~0z", json!("v")),
            add("/n", json!(true)),
        ],
    )
    .unwrap();
    assert_eq!(
        doc,
        json!({ "a": [0, 1, 2, 3], "m": { "x/y~z": "v" }, "n": true })
    );
    assert_eq!(
        apply(&mut doc, &[add("/a/9", json!(9))]),
        Err(ApplyError {
            path: "/a/9".into(),
            reason: "not an index of the array"
        })
    );
    assert_eq!(
        apply(&mut doc, &[add("/missing/x", json!(1))])
            .unwrap_err()
            .reason,
        "no such parent"
    );
    assert_eq!(
        apply(&mut doc, &[add("/n/x", json!(1))])
            .unwrap_err()
            .reason,
        "the parent is neither an object nor an array"
    );
}

#[test]
fn native_sidecars_from_kubernetes_1_29() {
    assert_eq!(supports_native("1", "37"), Some(true));
    assert_eq!(supports_native("1", "29"), Some(true));
    assert_eq!(supports_native("1", "29+"), Some(true));
    assert_eq!(supports_native("1", "28"), Some(false));
    assert_eq!(supports_native("2", "0"), Some(true));
    assert_eq!(supports_native("", ""), None);
    assert_eq!(supports_native("1", "x"), None);
}

mod manifests;
