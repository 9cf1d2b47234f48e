use k8s_openapi::api::authentication::v1::UserInfo;

use super::*;

fn answer(authenticated: bool, audiences: &[&str], username: &str) -> TokenReviewStatus {
    TokenReviewStatus {
        authenticated: Some(authenticated),
        audiences: Some(audiences.iter().map(|a| (*a).to_owned()).collect()),
        user: Some(UserInfo {
            username: Some(username.to_owned()),
            ..UserInfo::default()
        }),
        error: None,
    }
}

#[test]
fn a_service_account_for_our_audience_is_its_spiffe_id() {
    let status = answer(true, &["herd"], "system:serviceaccount:mastodon:web");
    assert_eq!(
        identity_of(&status, "herd", "cluster.local")
            .unwrap()
            .as_str(),
        "spiffe://cluster.local/ns/mastodon/sa/web"
    );
    let status = answer(
        true,
        &["other", "herd"],
        "system:serviceaccount:mastodon:web",
    );
    assert_eq!(
        identity_of(&status, "herd", "mesh.example")
            .unwrap()
            .as_str(),
        "spiffe://mesh.example/ns/mastodon/sa/web"
    );
}

#[test]
fn anything_else_is_refused_for_its_own_reason() {
    let mut refused = answer(false, &[], "");
    refused.error = Some("token has been invalidated\nand more".into());
    assert_eq!(
        identity_of(&refused, "herd", "cluster.local"),
        Err(TokenError::Refused("token has been invalidated".into()))
    );
    let unanswered = TokenReviewStatus::default();
    assert_eq!(
        identity_of(&unanswered, "herd", "cluster.local"),
        Err(TokenError::Refused("not authenticated".into()))
    );

    // A server that ignored spec.audiences, or a token for someone else.
    let status = answer(
        true,
        &["https://kubernetes.default.svc"],
        "system:serviceaccount:a:b",
    );
    let error = identity_of(&status, "herd", "cluster.local").unwrap_err();
    assert_eq!(error.reason(), "audience");
    let status = answer(true, &[], "system:serviceaccount:a:b");
    assert_eq!(
        identity_of(&status, "herd", "cluster.local")
            .unwrap_err()
            .reason(),
        "audience"
    );

    for user in [
        "admin",
        "system:node:n1",
        "system:serviceaccount:a",
        "system:serviceaccounts:a:b",
        "",
    ] {
        let status = answer(true, &["herd"], user);
        assert_eq!(
            identity_of(&status, "herd", "cluster.local"),
            Err(TokenError::NotServiceAccount(user.to_owned())),
            "{user}"
        );
    }
    // An account name that is not one SPIFFE segment.
    let status = answer(true, &["herd"], "system:serviceaccount:a:b:c");
    assert_eq!(
        identity_of(&status, "herd", "cluster.local")
            .unwrap_err()
            .reason(),
        "not-service-account"
    );
}
