use std::net::SocketAddr;
use std::sync::Arc;

use super::*;

fn snapshot(yaml: &str) -> Snapshot {
    let config = herd_config::parse(yaml, "mesh.yaml").unwrap_or_else(|e| panic!("{e}"));
    let mut registry = Registry::new(&config, Metrics::new());
    Snapshot::build(1, "mesh.yaml".into(), config, &mut registry)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn a_redirected_destination_finds_its_service_or_its_meshed_endpoint() {
    let snapshot = snapshot(
        "services:
  - name: db
    protocol: opaque
    clusterIps: [10.96.0.12:5432, \"[fd00:10:96::c]:5432\"]
    endpoints:
      - { address: 10.0.0.5:5432, identity: spiffe://cluster.local/ns/mastodon/sa/db }
      - 10.0.0.6:5432
",
    );
    let name = |s: Option<&Arc<ServiceTarget>>| s.map(|s| s.name.to_string());
    assert_eq!(
        name(snapshot.by_cluster_ip(addr("10.96.0.12:5432"))).as_deref(),
        Some("db")
    );
    // However the listener spelled it.
    let mapped = addr("[::ffff:10.96.0.12]:5432");
    assert_eq!(name(snapshot.by_cluster_ip(mapped)).as_deref(), Some("db"));
    assert_eq!(
        name(snapshot.by_cluster_ip(addr("[fd00:10:96::c]:5432"))).as_deref(),
        Some("db")
    );
    assert!(snapshot.by_cluster_ip(addr("10.96.0.12:5433")).is_none());

    let (service, member) = snapshot
        .meshed_endpoint(addr("10.0.0.5:5432"))
        .expect("a meshed endpoint");
    assert_eq!(
        (&*service.name, member.addr()),
        ("db", addr("10.0.0.5:5432"))
    );
    assert!(
        snapshot.meshed_endpoint(addr("10.0.0.6:5432")).is_none(),
        "an endpoint outside the mesh is only an address"
    );
    assert!(snapshot.meshed_endpoint(addr("10.0.0.5:5433")).is_none());
}

#[tokio::test]
async fn a_transparent_inbound_listener_has_the_app_at_each_address_it_is_sent() {
    let snapshot = snapshot("proxy:\n  inbound: { listen: \"[::]:4143\", transparent: true }\n");
    assert!(snapshot.inbound.is_none(), "no `app`");
    let apps = snapshot.inbound_apps.as_ref().expect("transparent");
    let web = apps.get(addr("198.18.0.2:3000"));
    assert_eq!(&*web.name, "inbound");
    let endpoints = web.balancer.endpoints();
    let (member, _) = endpoints.iter().next().expect("one endpoint");
    assert_eq!(member.addr(), addr("198.18.0.2:3000"));
    assert!(Arc::ptr_eq(
        &web,
        &apps.get(addr("[::ffff:198.18.0.2]:3000"))
    ));
    assert!(!Arc::ptr_eq(&web, &apps.get(addr("198.18.0.2:4000"))));

    let plain =
        self::snapshot("proxy:\n  inbound: { listen: 127.0.0.1:4143, app: 127.0.0.1:3000 }\n");
    assert!(plain.inbound.is_some() && plain.inbound_apps.is_none());
}
