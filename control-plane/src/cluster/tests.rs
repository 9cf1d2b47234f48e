use std::time::{Duration, SystemTime};

use herd_identity::Issuer;

use super::*;

#[test]
fn versions_are_read_from_what_servers_report() {
    assert_eq!(major_minor("1", "37"), Some((1, 37)));
    // Some managed clusters report a `+` on the minor version.
    assert_eq!(major_minor("1", "29+"), Some((1, 29)));
    assert_eq!(major_minor("", "29"), None);
}

#[test]
fn old_servers_fail_and_servers_without_native_sidecars_warn() {
    let levels = |v| {
        version_lines("vX", v)
            .into_iter()
            .map(|l| l.level)
            .collect::<Vec<_>>()
    };
    assert_eq!(levels((1, 37)), [Level::Ok, Level::Ok]);
    assert_eq!(levels((1, 28)), [Level::Ok, Level::Warn]);
    assert_eq!(levels((1, 25)), [Level::Fail, Level::Warn]);
}

#[test]
fn a_ca_near_its_end_warns_and_an_expired_one_fails() {
    let issuer = Issuer::generate("cluster.local", Duration::from_secs(90 * 86_400)).unwrap();
    let pem = issuer.certificate_pem();
    let now = SystemTime::now();
    let fresh = ca_line(pem.as_bytes(), now);
    assert_eq!(fresh.level, Level::Ok, "{fresh}");
    assert!(fresh.text.contains("days left"), "{fresh}");
    let late = ca_line(pem.as_bytes(), now + Duration::from_secs(70 * 86_400));
    assert_eq!(late.level, Level::Warn, "{late}");
    let gone = ca_line(pem.as_bytes(), now + Duration::from_secs(100 * 86_400));
    assert_eq!(gone.level, Level::Fail, "{gone}");
    assert!(gone.text.contains("expired"), "{gone}");
    assert_eq!(ca_line(b"not a certificate", now).level, Level::Fail);
}

#[test]
fn the_proxy_is_found_as_a_native_sidecar_or_a_container() {
    let container = |name: &str| Container {
        name: name.into(),
        ..Container::default()
    };
    let pod = |containers: Vec<Container>, init: Vec<Container>| Pod {
        spec: Some(PodSpec {
            containers,
            init_containers: Some(init),
            ..PodSpec::default()
        }),
        ..Pod::default()
    };
    assert!(has_proxy(&pod(
        vec![container("app")],
        vec![container(PROXY_CONTAINER)]
    )));
    assert!(has_proxy(&pod(
        vec![container("app"), container(PROXY_CONTAINER)],
        vec![]
    )));
    assert!(!has_proxy(&pod(vec![container("app")], vec![])));
}
