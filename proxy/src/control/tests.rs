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
    assert_eq!(usable, [("10.0.0.1:80".parse().unwrap(), 1)]);
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
    usable.sort();
    assert_eq!(
        usable,
        [
            ("10.0.0.2:80".parse().unwrap(), 7),
            ("[::1]:80".parse().unwrap(), 1)
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
fn backoff_is_full_jitter_under_a_doubling_cap() {
    assert_eq!(backoff(1, 1.0), Duration::from_millis(200));
    assert_eq!(backoff(3, 1.0), Duration::from_millis(800));
    assert_eq!(backoff(3, 0.5), Duration::from_millis(400));
    assert_eq!(backoff(3, 0.0), Duration::ZERO);
    assert_eq!(backoff(30, 1.0), BACKOFF_MAX);
    assert_eq!(backoff(u32::MAX, 1.0), BACKOFF_MAX);
}
