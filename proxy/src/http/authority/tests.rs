use super::*;

/// A request as hyper hands it over: `target` as the request line (or `:authority` and path)
/// gave it, `version`, and `Host` lines.
fn request(version: Version, target: &str, hosts: &[&[u8]]) -> Request<()> {
    let mut req = Request::builder().version(version).uri(target);
    for host in hosts {
        req = req.header(header::HOST, http::HeaderValue::from_bytes(host).unwrap());
    }
    req.body(()).unwrap()
}

fn h1(target: &str, hosts: &[&[u8]]) -> Result<Option<String>, ProxyError> {
    of(&request(Version::HTTP_11, target, hosts)).map(|a| a.map(str::to_owned))
}

fn h2(target: &str, hosts: &[&[u8]]) -> Result<Option<String>, ProxyError> {
    of(&request(Version::HTTP_2, target, hosts)).map(|a| a.map(str::to_owned))
}

#[test]
fn origin_form_is_for_its_host() {
    assert_eq!(
        h1("/", &[b"web.local"]).unwrap().as_deref(),
        Some("web.local")
    );
    assert_eq!(
        h1("/", &[b"[::1]:8080"]).unwrap().as_deref(),
        Some("[::1]:8080")
    );
}

#[test]
fn absolute_form_is_for_its_target_whatever_host_says() {
    let got = h1("http://web.local/x", &[b"other.local"]).unwrap();
    assert_eq!(got.as_deref(), Some("web.local"));
}

#[test]
fn http1_1_needs_exactly_one_valid_host() {
    assert!(matches!(h1("/", &[]), Err(ProxyError::MissingHost)));
    assert!(matches!(
        h1("http://web.local/", &[]),
        Err(ProxyError::MissingHost)
    ));
    assert!(matches!(
        h1("/", &[b"web.local", b"web.local"]),
        Err(ProxyError::DuplicateHost)
    ));
    for bad in [
        &b""[..],
        b"a b",
        b"evil@web.local",
        b"web.local:99999",
        b"web.local:",
        b"web.local/x",
        b"[::1",
        b"[web]",
        b"caf\xc3\xa9.local",
    ] {
        assert!(
            matches!(h1("/", &[bad]), Err(ProxyError::InvalidHost)),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // Checked in absolute-form too, though the target's authority replaces it.
    assert!(matches!(
        h1("http://web.local/", &[b"a b"]),
        Err(ProxyError::InvalidHost)
    ));
}

#[test]
fn a_target_with_userinfo_is_invalid() {
    assert!(matches!(
        h1("http://evil@web.local/", &[b"web.local"]),
        Err(ProxyError::InvalidAuthority)
    ));
}

#[test]
fn http1_0_may_name_no_authority() {
    let req = request(Version::HTTP_10, "/", &[]);
    assert_eq!(of(&req).unwrap(), None);
    let req = request(Version::HTTP_10, "/", &[b"a", b"b"]);
    assert!(matches!(of(&req), Err(ProxyError::DuplicateHost)));
}

#[test]
fn http2_host_must_name_the_authority_if_present() {
    assert_eq!(
        h2("http://web.local/", &[]).unwrap().as_deref(),
        Some("web.local")
    );
    for same in [
        &b"web.local"[..],
        b"WEB.local",
        b"web.local:80",
        b"web.local.",
    ] {
        assert_eq!(
            h2("http://web.local/", &[same]).unwrap().as_deref(),
            Some("web.local")
        );
    }
    for other in [&b"other.local"[..], b"web.local:8080"] {
        assert!(matches!(
            h2("http://web.local/", &[other]),
            Err(ProxyError::AuthorityMismatch)
        ));
    }
    assert!(matches!(
        h2("http://web.local/", &[b"web.local", b"web.local"]),
        Err(ProxyError::DuplicateHost)
    ));
    // No `:authority`: `host` is the authority; neither: none to route by.
    assert_eq!(
        h2("/", &[b"web.local"]).unwrap().as_deref(),
        Some("web.local")
    );
    assert!(matches!(h2("/", &[]), Err(ProxyError::NoAuthority)));
}

#[test]
fn connect_is_for_its_authority() {
    let req = Request::builder()
        .method(http::Method::CONNECT)
        .uri("example.org:443")
        .header(header::HOST, "example.org:443")
        .body(())
        .unwrap();
    assert_eq!(of(&req).unwrap(), Some("example.org:443"));
}
