use herd_api::discovery::{Endpoint, EndpointsUpdate, RoutingUpdate};

use super::*;

#[test]
fn views_read_what_the_api_writes() {
    let update = EndpointsUpdate {
        service: "web".into(),
        version: "v2".into(),
        base_version: "v1".into(),
        endpoints: vec![
            Endpoint {
                address: "10.0.0.1:8080".into(),
                weight: 3,
                ready: true,
                zone: "z".into(),
                ..Endpoint::default()
            },
            Endpoint {
                address: "10.0.0.2:8080".into(),
                ..Endpoint::default()
            },
        ],
        removed: vec!["10.0.0.3:8080".into()],
        unknown: true,
    };
    let view = EndpointsView::decode(update.encode_to_vec().as_slice()).unwrap();
    assert_eq!(view.service, "web");
    assert_eq!(view.version, "v2");
    assert_eq!(view.base_version, "v1");
    assert_eq!(view.endpoints.len(), 2);
    assert_eq!(view.removed, vec!["10.0.0.3:8080".to_owned()]);
    assert!(view.unknown);
    assert_eq!(addresses(&view), vec!["10.0.0.1:8080", "10.0.0.2:8080"]);

    let routing = RoutingUpdate {
        version: "r1".into(),
        mesh: "{\"services\": []}".into(),
    };
    let view = RoutingView::decode(routing.encode_to_vec().as_slice()).unwrap();
    assert_eq!(view.version, "r1");
    assert_eq!(&view.mesh[..], b"{\"services\": []}");
}
