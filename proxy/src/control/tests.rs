use super::*;

fn ep(address: &str, ready: bool, terminating: bool) -> Endpoint {
    Endpoint {
        address: address.into(),
        weight: 1,
        ready,
        terminating,
        ..Endpoint::default()
    }
}

fn full(version: &str, endpoints: Vec<Endpoint>) -> EndpointsUpdate {
    EndpointsUpdate {
        service: "web".into(),
        version: version.into(),
        endpoints,
        ..EndpointsUpdate::default()
    }
}

#[test]
fn a_full_set_replaces_and_only_ready_endpoints_take_requests() {
    let held = (
        "v0".to_owned(),
        BTreeMap::from([("10.0.0.9:80".to_owned(), ep("10.0.0.9:80", true, false))]),
    );
    let update = full(
        "v1",
        vec![
            ep("10.0.0.1:80", true, false),
            ep("10.0.0.2:80", false, false),
            ep("10.0.0.3:80", true, true),
        ],
    );
    let (set, usable) = merge(Some(&held), &update).unwrap();
    assert_eq!(
        set.len(),
        3,
        "the set keeps every endpoint, whatever its state"
    );
    assert_eq!(
        usable,
        [WeightedEndpoint::new("10.0.0.1:80".parse().unwrap())]
    );
}

#[test]
fn a_delta_applies_only_on_its_base() {
    let (set, _) = merge(
        None,
        &full(
            "v1",
            vec![
                ep("10.0.0.1:80", true, false),
                ep("10.0.0.2:80", true, false),
            ],
        ),
    )
    .unwrap();
    let held = ("v1".to_owned(), set);
    let delta = EndpointsUpdate {
        service: "web".into(),
        version: "v2".into(),
        base_version: "v1".into(),
        endpoints: vec![
            Endpoint {
                weight: 7,
                ..ep("10.0.0.2:80", true, false)
            },
            ep("[::1]:80", true, false),
        ],
        removed: vec!["10.0.0.1:80".into()],
        unknown: false,
    };
    let (set, mut usable) = merge(Some(&held), &delta).unwrap();
    assert_eq!(set.keys().collect::<Vec<_>>(), ["10.0.0.2:80", "[::1]:80"]);
    usable.sort_by_key(|ep| ep.address);
    assert_eq!(
        usable,
        [
            WeightedEndpoint::weighted("10.0.0.2:80".parse().unwrap(), 7),
            WeightedEndpoint::new("[::1]:80".parse().unwrap())
        ]
    );

    let stale = ("v0".to_owned(), BTreeMap::new());
    let error = merge(Some(&stale), &delta).unwrap_err();
    assert_eq!(error, "a delta from version v1 to a proxy holding v0");
    assert_eq!(
        merge(None, &delta).unwrap_err(),
        "a delta from version v1 to a proxy holding nothing"
    );
}

#[test]
fn an_unknown_service_has_no_endpoints_and_a_bad_address_is_refused() {
    let update = EndpointsUpdate {
        unknown: true,
        ..full("v1", vec![ep("10.0.0.1:80", true, false)])
    };
    let (set, usable) = merge(None, &update).unwrap();
    assert!(set.is_empty() && usable.is_empty());
    let bad = full("v2", vec![ep("web:80", true, false)]);
    assert!(
        merge(None, &bad)
            .unwrap_err()
            .starts_with("endpoint address `web:80`")
    );
}

#[test]
fn a_meshed_endpoint_keeps_its_identity_through_full_sets_and_deltas() {
    let web = "spiffe://cluster.local/ns/mastodon/sa/web";
    let meshed = |address: &str, identity: &str| Endpoint {
        meshed: true,
        identity: identity.into(),
        ..ep(address, true, false)
    };
    let (set, usable) = merge(
        None,
        &full(
            "v1",
            vec![meshed("10.0.0.1:80", web), ep("10.0.0.2:80", true, false)],
        ),
    )
    .unwrap();
    let identities = |usable: &[WeightedEndpoint]| -> Vec<(String, Option<String>)> {
        usable
            .iter()
            .map(|e| (e.address.to_string(), e.identity.clone()))
            .collect()
    };
    assert_eq!(
        identities(&usable),
        [
            ("10.0.0.1:80".to_owned(), Some(web.to_owned())),
            ("10.0.0.2:80".to_owned(), None),
        ]
    );

    // A delta that changes only the identity (the pod's account changed) replaces the entry.
    let other = "spiffe://cluster.local/ns/mastodon/sa/sidekiq";
    let delta = EndpointsUpdate {
        service: "web".into(),
        version: "v2".into(),
        base_version: "v1".into(),
        endpoints: vec![meshed("10.0.0.2:80", other), ep("10.0.0.1:80", true, false)],
        ..EndpointsUpdate::default()
    };
    let (_, usable) = merge(Some(&("v1".to_owned(), set)), &delta).unwrap();
    assert_eq!(
        identities(&usable),
        [
            ("10.0.0.1:80".to_owned(), None),
            ("10.0.0.2:80".to_owned(), Some(other.to_owned())),
        ]
    );
}

#[test]
fn an_endpoint_whose_identity_is_not_a_workload_id_is_refused() {
    for (identity, reason) in [
        (
            "spiffe://cluster.local",
            "endpoint `10.0.0.1:80`: identity: `spiffe://cluster.local` is not a workload \
             identity: expected spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT",
        ),
        (
            "web",
            "endpoint `10.0.0.1:80`: identity: invalid SPIFFE ID `web`: a SPIFFE ID starts with \
             `spiffe://`",
        ),
    ] {
        let update = full(
            "v1",
            vec![Endpoint {
                identity: identity.into(),
                ..ep("10.0.0.1:80", false, false)
            }],
        );
        assert_eq!(merge(None, &update).unwrap_err(), reason);
    }
}

#[test]
fn backoff_is_full_jitter_under_a_doubling_cap() {
    assert_eq!(backoff(1, 1.0), Duration::from_millis(200));
    assert_eq!(backoff(3, 1.0), Duration::from_millis(800));
    assert_eq!(backoff(3, 0.5), Duration::from_millis(400));
    assert_eq!(backoff(3, 0.0), Duration::ZERO);
    assert_eq!(backoff(30, 1.0), BACKOFF_MAX);
    assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_MAX);
}

#[tokio::test(start_paused = true)]
async fn each_certificate_put_in_use_is_reported_once_and_none_without_an_identity() {
    use crate::identity::tests::credentials;
    const WEB: &str = "spiffe://cluster.local/ns/mastodon/sa/web";
    let wait = Duration::from_secs(60);

    // Without `proxy.identity`: never a report.
    assert!(tokio::time::timeout(wait, renewed(None)).await.is_err());

    let (tx, mut rx) = watch::channel(None);
    // Nothing before the first certificate.
    assert!(
        tokio::time::timeout(wait, renewed(Some(&mut rx)))
            .await
            .is_err()
    );
    let mut serials = Vec::new();
    for _ in 0..2 {
        let issued = credentials(WEB, Duration::from_secs(60));
        let expected = Certificate {
            identity: WEB.to_owned(),
            serial: issued.leaf.serial_hex(),
            not_after: issued
                .leaf
                .not_after()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64,
        };
        tx.send_replace(Some(Arc::new(issued)));
        let reported = renewed(Some(&mut rx)).await;
        assert_eq!(reported, expected);
        // Once: nothing more until the next renewal.
        assert!(
            tokio::time::timeout(wait, renewed(Some(&mut rx)))
                .await
                .is_err()
        );
        serials.push(reported.serial);
    }
    assert_ne!(serials[0], serials[1]);

    // The identity task gone: no busy loop, just nothing.
    drop(tx);
    assert!(
        tokio::time::timeout(wait, renewed(Some(&mut rx)))
            .await
            .is_err()
    );
}
