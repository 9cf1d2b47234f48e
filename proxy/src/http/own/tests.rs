use super::*;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_listener_is_reached_by_its_own_address() {
    let listeners = [addr("127.0.0.1:4191"), addr("10.0.1.5:4143")];
    assert!(reaches(listeners, addr("127.0.0.1:4191"), None));
    assert!(reaches(listeners, addr("10.0.1.5:4143"), None));
    assert!(!reaches(listeners, addr("127.0.0.1:4192"), None));
    // Another loopback address, or the other family, is another socket.
    assert!(!reaches(listeners, addr("127.0.0.2:4191"), None));
    assert!(!reaches(listeners, addr("[::1]:4191"), None));
}

#[test]
fn unspecified_and_mapped_targets_are_loopback() {
    let listeners = [addr("127.0.0.1:4191"), addr("[::1]:4140")];
    assert!(reaches(listeners, addr("0.0.0.0:4191"), None));
    assert!(reaches(listeners, addr("[::ffff:127.0.0.1]:4191"), None));
    assert!(reaches(listeners, addr("[::]:4140"), None));
    // `[::]` connects to `::1`, not to 127.0.0.1.
    assert!(!reaches(listeners, addr("[::]:4191"), None));
}

#[test]
fn a_wildcard_listener_is_reached_by_every_address_of_this_host() {
    let v4 = [addr("0.0.0.0:4143")];
    assert!(reaches(v4, addr("127.0.0.1:4143"), None));
    assert!(reaches(v4, addr("127.0.0.2:4143"), None));
    assert!(reaches(v4, addr("0.0.0.0:4143"), None));
    assert!(
        !reaches(v4, addr("[::1]:4143"), None),
        "0.0.0.0 takes no IPv6"
    );
    // A host address is known to be this host's only once connected.
    assert!(!reaches(v4, addr("10.0.1.5:4143"), None));
    assert!(reaches(v4, addr("10.0.1.5:4143"), Some(ip("10.0.1.5"))));
    assert!(!reaches(v4, addr("10.0.1.6:4143"), Some(ip("10.0.1.5"))));
    assert!(!reaches(v4, addr("127.0.0.1:4144"), None));

    let v6 = [addr("[::]:4143")];
    assert!(reaches(v6, addr("[::1]:4143"), None));
    assert!(
        reaches(v6, addr("127.0.0.1:4143"), None),
        "[::] takes IPv4 too"
    );
    assert!(reaches(v6, addr("[fd00::5]:4143"), Some(ip("fd00::5"))));
    assert!(reaches(
        v6,
        addr("[::ffff:10.0.1.5]:4143"),
        Some(ip("10.0.1.5"))
    ));
}

#[test]
fn literal_names_need_no_dns() {
    let v4 = Some(IpAddr::from(Ipv4Addr::LOCALHOST));
    let v6 = Some(IpAddr::from(Ipv6Addr::LOCALHOST));
    assert_eq!(literal("127.0.0.1"), [v4, None]);
    assert_eq!(literal("[::1]"), [v6, None]);
    assert_eq!(literal("localhost"), [v4, v6]);
    assert_eq!(literal("LocalHost."), [v4, v6]);
    assert_eq!(literal("web.local"), [None, None]);
    assert_eq!(literal("localhost.web"), [None, None]);
}

#[test]
fn absolute_form_naming_a_listener_is_refused() {
    let fixed = [addr("127.0.0.1:4191")];
    let opaque = HashMap::new();
    let listeners = Listeners {
        fixed: &fixed,
        opaque: &opaque,
    };
    let check = |target: &str, method: Method, version: Version| {
        let req = Request::builder()
            .method(method)
            .version(version)
            .uri(target)
            .body(())
            .unwrap();
        listeners.check_absolute_form(&req)
    };
    for target in [
        "http://127.0.0.1:4191/config",
        "http://localhost:4191/",
        "http://0.0.0.0:4191/",
    ] {
        assert!(
            matches!(
                check(target, Method::GET, Version::HTTP_11),
                Err(ProxyError::OwnListener(_))
            ),
            "{target}"
        );
    }
    for target in [
        "http://127.0.0.1:4192/",
        "http://127.0.0.1/",
        "http://web.local:4191/",
        "/config",
    ] {
        assert!(
            check(target, Method::GET, Version::HTTP_11).is_ok(),
            "{target}"
        );
    }
    // HTTP/2's `:authority` is not absolute-form, and CONNECT is checked where it connects.
    assert!(check("http://127.0.0.1:4191/", Method::GET, Version::HTTP_2).is_ok());
    assert!(check("127.0.0.1:4191", Method::CONNECT, Version::HTTP_11).is_ok());
}
