use super::*;

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

#[test]
fn a_kubernetes_id_has_its_parts() {
    let web = SpiffeId::kubernetes("cluster.local", "mastodon", "web").unwrap();
    assert_eq!(web.as_str(), "spiffe://cluster.local/ns/mastodon/sa/web");
    assert_eq!(web.to_string(), "spiffe://cluster.local/ns/mastodon/sa/web");
    assert_eq!(web.trust_domain(), "cluster.local");
    assert_eq!(web.path(), "/ns/mastodon/sa/web");
    assert_eq!(web.namespace(), Some("mastodon"));
    assert_eq!(web.service_account(), Some("web"));
    assert_eq!(web, id("spiffe://cluster.local/ns/mastodon/sa/web"));
    assert_eq!(
        format!("{web:?}"),
        "SpiffeId(spiffe://cluster.local/ns/mastodon/sa/web)"
    );
}

#[test]
fn ids_of_other_shapes_have_no_namespace() {
    for other in [
        "spiffe://cluster.local",
        "spiffe://cluster.local/ns/mastodon",
        "spiffe://cluster.local/ns/mastodon/sa/web/extra",
        "spiffe://cluster.local/ns/mastodon/account/web",
        "spiffe://cluster.local/bootstrap/edge-1",
    ] {
        let other = id(other);
        assert_eq!(other.namespace(), None, "{other}");
        assert_eq!(other.service_account(), None, "{other}");
    }
    let domain = SpiffeId::trust_domain_id("example.org").unwrap();
    assert_eq!(domain.trust_domain(), "example.org");
    assert_eq!(domain.path(), "");
}

#[test]
fn the_kubernetes_constructor_refuses_a_part_that_is_not_one_segment() {
    assert_eq!(
        SpiffeId::kubernetes("cluster.local", "a/sa/b", "web"),
        Err(SpiffeIdError::PathChar('/'))
    );
    assert_eq!(
        SpiffeId::kubernetes("cluster.local", "mastodon", ""),
        Err(SpiffeIdError::EmptySegment)
    );
    assert_eq!(
        SpiffeId::kubernetes("cluster.local/x", "mastodon", "web"),
        Err(SpiffeIdError::TrustDomainChar('/'))
    );
    assert_eq!(
        SpiffeId::kubernetes("Cluster.local", "mastodon", "web"),
        Err(SpiffeIdError::TrustDomainChar('C'))
    );
}

#[test]
fn valid_ids_parse_and_print_unchanged() {
    for s in [
        "spiffe://td",
        "spiffe://cluster.local/ns/mastodon/sa/web",
        "spiffe://a-b_c.9/x",
        "spiffe://td/A.b-c_D/...x/x..",
        "spiffe://td/.hidden",
    ] {
        assert_eq!(id(s).to_string(), s);
        assert_eq!(s.parse::<SpiffeId>().unwrap().as_str(), s);
    }
}

#[test]
fn invalid_ids_are_refused_with_the_reason() {
    use SpiffeIdError::*;
    let cases = [
        ("", Scheme),
        ("spiffe:/td/x", Scheme),
        ("SPIFFE://td/x", Scheme),
        ("https://td/x", Scheme),
        ("spiffe://", EmptyTrustDomain),
        ("spiffe:///x", EmptyTrustDomain),
        ("spiffe://TD/x", TrustDomainChar('T')),
        ("spiffe://td:8080/x", TrustDomainChar(':')),
        ("spiffe://user@td/x", TrustDomainChar('@')),
        ("spiffe://td?q=1", TrustDomainChar('?')),
        ("spiffe://td/", EmptySegment),
        ("spiffe://td/x/", EmptySegment),
        ("spiffe://td//x", EmptySegment),
        ("spiffe://td/./x", DotSegment),
        ("spiffe://td/x/..", DotSegment),
        ("spiffe://td/x%2fy", PathChar('%')),
        ("spiffe://td/x?y", PathChar('?')),
        ("spiffe://td/x#y", PathChar('#')),
        ("spiffe://td/x y", PathChar(' ')),
        ("spiffe://td/é", PathChar('é')),
        ("spiffe://td/x/*", Wildcard),
        ("spiffe://td/x*", Wildcard),
    ];
    for (s, want) in cases {
        assert_eq!(SpiffeId::parse(s), Err(want), "{s:?}");
    }
}

#[test]
fn length_limits_are_bytes_of_the_id_and_of_the_trust_domain() {
    let domain = "d".repeat(MAX_TRUST_DOMAIN_BYTES);
    assert!(SpiffeId::parse(&format!("spiffe://{domain}")).is_ok());
    assert_eq!(
        SpiffeId::parse(&format!("spiffe://{domain}d")),
        Err(SpiffeIdError::TrustDomainTooLong(
            MAX_TRUST_DOMAIN_BYTES + 1
        ))
    );
    let prefix = "spiffe://td/";
    let longest = format!("{prefix}{}", "p".repeat(MAX_ID_BYTES - prefix.len()));
    assert_eq!(id(&longest).as_str().len(), MAX_ID_BYTES);
    assert_eq!(
        SpiffeId::parse(&format!("{longest}p")),
        Err(SpiffeIdError::TooLong(MAX_ID_BYTES + 1))
    );
}

#[test]
fn an_exact_matcher_matches_one_id() {
    let m = Matcher::parse("spiffe://cluster.local/ns/mastodon/sa/web").unwrap();
    assert!(m.matches(&id("spiffe://cluster.local/ns/mastodon/sa/web")));
    assert!(!m.matches(&id("spiffe://cluster.local/ns/mastodon/sa/web2")));
    assert!(!m.matches(&id("spiffe://cluster.local/ns/mastodon/sa/web/x")));
    assert!(!m.matches(&id("spiffe://other.local/ns/mastodon/sa/web")));
}

#[test]
fn a_wildcard_matcher_matches_whole_segments_below_its_prefix() {
    let m = Matcher::parse("spiffe://cluster.local/ns/mastodon/sa/*").unwrap();
    assert_eq!(m.to_string(), "spiffe://cluster.local/ns/mastodon/sa/*");
    for yes in [
        "spiffe://cluster.local/ns/mastodon/sa/web",
        "spiffe://cluster.local/ns/mastodon/sa/sidekiq",
        "spiffe://cluster.local/ns/mastodon/sa/web/deeper",
    ] {
        assert!(m.matches(&id(yes)), "{yes}");
    }
    for no in [
        "spiffe://cluster.local/ns/mastodon/sa",
        "spiffe://cluster.local/ns/mastodon/sab/web",
        "spiffe://cluster.local/ns/mastodon2/sa/web",
        "spiffe://cluster.local.evil/ns/mastodon/sa/web",
        "spiffe://other.local/ns/mastodon/sa/web",
    ] {
        assert!(!m.matches(&id(no)), "{no}");
    }

    let domain = Matcher::parse("spiffe://cluster.local/*").unwrap();
    assert!(domain.matches(&id("spiffe://cluster.local/ns/a/sa/b")));
    assert!(!domain.matches(&id("spiffe://cluster.local")));
    assert!(!domain.matches(&id("spiffe://cluster.localx/ns/a/sa/b")));
}

#[test]
fn a_wildcard_anywhere_but_the_whole_last_segment_is_refused() {
    for bad in [
        "spiffe://td/ns/*/sa/web",
        "spiffe://td/ns/web-*",
        "spiffe://td/ns/**",
        "spiffe://td/*/*",
        "spiffe://*",
        "spiffe://td/ns/*/",
    ] {
        assert!(Matcher::parse(bad).is_err(), "{bad}");
    }
}

/// Strings built from the pieces SPIFFE IDs are made of, and the pieces that break them.
fn hostile_string(rng: &mut fastrand::Rng) -> String {
    const PIECES: &[&str] = &[
        "spiffe://",
        "spiffe:",
        "//",
        "/",
        ".",
        "..",
        "*",
        "/*",
        "%2e",
        "%",
        "td",
        "cluster.local",
        "ns",
        "sa",
        "web",
        "A",
        "z",
        "0",
        "-",
        "_",
        ":",
        "@",
        "?",
        "#",
        " ",
        "\0",
        "é",
        "\u{202e}",
        "\u{10ffff}",
        "spiffe://td/",
        "/ns/a/sa/b",
    ];
    let mut s = String::new();
    if rng.bool() {
        s.push_str("spiffe://");
    }
    for _ in 0..rng.usize(0..24) {
        s.push_str(PIECES[rng.usize(..PIECES.len())]);
    }
    if rng.u8(..) < 8 {
        // Now and then, something near or past the length limits.
        let piece = PIECES[rng.usize(..PIECES.len())];
        let times = rng.usize(..(MAX_ID_BYTES + 64) / piece.len().max(1));
        s.push_str(&piece.repeat(times));
    }
    s
}

#[test]
fn parsing_hostile_strings_never_panics_and_whatever_parses_round_trips() {
    let mut rng = fastrand::Rng::with_seed(0x5_1FFE);
    let mut accepted = 0;
    for _ in 0..20_000 {
        let s = hostile_string(&mut rng);
        if let Ok(parsed) = SpiffeId::parse(&s) {
            accepted += 1;
            assert_eq!(parsed.as_str(), s);
            assert!(s.len() <= MAX_ID_BYTES && s.is_ascii(), "{s:?}");
            assert_eq!(SpiffeId::parse(&parsed.to_string()).as_ref(), Ok(&parsed));
            assert_eq!(
                format!("spiffe://{}{}", parsed.trust_domain(), parsed.path()),
                s
            );
            assert!(Matcher::parse(&s).unwrap().matches(&parsed));
        }
        if let Ok(m) = Matcher::parse(&s) {
            assert_eq!(m.to_string(), s);
        }
    }
    // The generator must reach both sides, or this test shows nothing.
    assert!(accepted > 100, "only {accepted} valid IDs generated");
}
