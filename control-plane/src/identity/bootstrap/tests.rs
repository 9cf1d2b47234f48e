use super::*;

const TD: &str = "cluster.local";

fn parse(text: &str) -> Result<BootstrapTokens, BootstrapError> {
    BootstrapTokens::parse(text, "tokens.yaml", TD)
}

#[test]
fn a_token_proves_its_identity_and_nothing_else_does() {
    let tokens = parse(
        "tokens:
  - token: aaaaaaaaaaaaaaaa-postgres
    namespace: data
    serviceAccount: postgres
  - token: bbbbbbbbbbbbbbbb-postgres-next
    namespace: data
    serviceAccount: postgres
  - token: cccccccccccccccc-redis
    namespace: data
    serviceAccount: redis
",
    )
    .unwrap();
    assert_eq!(tokens.len(), 3);
    let postgres = SpiffeId::kubernetes(TD, "data", "postgres").unwrap();
    assert_eq!(
        tokens.identity("aaaaaaaaaaaaaaaa-postgres"),
        Some(&postgres)
    );
    assert_eq!(
        tokens.identity("bbbbbbbbbbbbbbbb-postgres-next"),
        Some(&postgres)
    );
    assert_eq!(
        tokens
            .identity("cccccccccccccccc-redis")
            .map(|id| id.as_str()),
        Some("spiffe://cluster.local/ns/data/sa/redis")
    );
    for wrong in [
        "",
        "aaaaaaaaaaaaaaaa-postgre",
        "aaaaaaaaaaaaaaaa-postgres ",
        "AAAAAAAAAAAAAAAA-postgres",
    ] {
        assert_eq!(tokens.identity(wrong), None, "{wrong:?}");
    }
    // The Debug form shows identities, never tokens.
    let debug = format!("{tokens:?}");
    assert!(
        debug.contains("postgres") && !debug.contains("aaaa"),
        "{debug}"
    );
}

#[test]
fn an_empty_file_or_list_holds_no_token() {
    assert!(parse("").unwrap().is_empty());
    assert!(parse("tokens: []\n").unwrap().is_empty());
}

#[test]
fn mistakes_are_refused_with_file_line_column() {
    let cases = [
        (
            "tokens:\n  - token: short\n    namespace: data\n    serviceAccount: pg\n",
            "tokens.yaml:2:12: tokens[0].token: a bootstrap token has at least 16 bytes (this one has 5)",
        ),
        (
            "tokens:\n  - token: 0123456789abcdef\n    namespace: da/ta\n    serviceAccount: pg\n",
            "tokens.yaml:3:16: tokens[0].namespace: ",
        ),
        (
            "tokens:\n  - token: 0123456789abcdef\n    namespace: data\n    serviceAccount: \"*\"\n",
            "tokens.yaml:4:21: tokens[0].serviceAccount: ",
        ),
        (
            "tokens:\n  - token: 0123456789abcdef\n    namespace: a\n    serviceAccount: b\n  - token: 0123456789abcdef\n    namespace: c\n    serviceAccount: d\n",
            "tokens.yaml:5:12: tokens[1].token: the same token as tokens[0]",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(text).unwrap_err().to_string();
        assert!(error.starts_with(expected), "{error}\nexpected {expected}");
        assert!(!error.contains('\n'), "{error}");
        assert!(
            !error.contains("0123456789abcdef"),
            "the token is repeated: {error}"
        );
    }
    for (text, expected) in [
        (
            "tokens:\n  - token: 0123456789abcdef\n    namespace: a\n",
            "missing field `serviceAccount`",
        ),
        ("tokens:\n  - tokn: x\n", "tokn"),
        ("tokens: {\n", ""),
    ] {
        let error = parse(text).unwrap_err().to_string();
        assert!(error.starts_with("tokens.yaml:"), "{text:?}: {error}");
        assert!(error.contains(expected), "{text:?}: {error}");
        assert!(!error.contains('\n'), "{error}");
    }
}

#[tokio::test]
async fn the_authenticator_reads_the_file_in_force() {
    let first =
        parse("tokens:\n  - token: 0123456789abcdef\n    namespace: a\n    serviceAccount: b\n")
            .unwrap();
    let (tx, rx) = watch::channel(Arc::new(first));
    let bootstrap = Bootstrap::new(rx);
    assert_eq!(
        bootstrap
            .authenticate("0123456789abcdef")
            .await
            .unwrap()
            .as_str(),
        "spiffe://cluster.local/ns/a/sa/b"
    );
    tx.send_replace(Arc::new(BootstrapTokens::default()));
    assert_eq!(
        bootstrap.authenticate("0123456789abcdef").await,
        Err(TokenError::Unknown)
    );
}
