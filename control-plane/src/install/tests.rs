use super::*;

fn options() -> Options {
    Options::new(
        "herd",
        Issuer {
            cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            key_pem: "-----BEGIN PRIVATE KEY-----\nMIIC\n-----END PRIVATE KEY-----\n".into(),
        },
    )
}

#[test]
fn every_object_is_printed_with_its_kind_in_the_order_it_is_applied() {
    let yaml = to_yaml(&objects(&options())).unwrap();
    let kinds: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Secret",
            "ConfigMap",
            "ConfigMap",
            "Deployment",
            "PodDisruptionBudget",
            "Service",
            "Service",
            "MutatingWebhookConfiguration",
        ]
    );
    assert_eq!(yaml.lines().filter(|l| *l == "---").count(), kinds.len());
    assert!(
        yaml.contains("apiVersion: admissionregistration.k8s.io/v1"),
        "{yaml}"
    );
}

#[test]
fn the_control_identity_and_the_webhook_name_follow_the_namespace() {
    let mut o = options();
    o.namespace = "mesh".into();
    o.namespaces = vec!["mastodon".into(), "data".into()];
    let all = objects(&o);
    let Some(Object::Deployment(deployment)) =
        all.iter().find(|o| matches!(o, Object::Deployment(_)))
    else {
        panic!("no Deployment");
    };
    let args = deployment.spec.template.spec.as_ref().unwrap().containers[0]
        .args
        .clone()
        .unwrap();
    assert!(
        args.contains(&"--namespaces=mastodon,data".to_owned()),
        "{args:?}"
    );
    assert!(
        args.contains(
            &"--control-identity=spiffe://cluster.local/ns/mesh/sa/herd-control".to_owned()
        ),
        "{args:?}"
    );
    assert!(
        args.contains(&"--webhook-dns-names=herd-control.mesh.svc".to_owned()),
        "{args:?}"
    );
}
