use std::net::IpAddr;

use herd_identity::SpiffeId;

use super::Authorizer;

fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    text.lines()
        .map(|l| l.get(indent..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

const PROXY: &str = "
    proxy:
      inbound: {listen: 127.0.0.1:4143, app: 127.0.0.1:5432, defaultPolicy: DEFAULT}
      identity:
        addresses: [127.0.0.1:8080]
        id: spiffe://cluster.local/ns/data/sa/postgres
        tokenFile: /t
";

fn with(default: &str, policies: &str) -> Authorizer {
    let yaml = format!(
        "{}\n{}\n",
        dedent(&PROXY.replace("DEFAULT", default)),
        dedent(policies)
    );
    let config = herd_config::parse(&yaml, "policy.yaml").unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    Authorizer::new(&config)
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

const WEB: &str = "spiffe://cluster.local/ns/mastodon/sa/web";
const SIDEKIQ: &str = "spiffe://cluster.local/ns/mastodon/sa/sidekiq";
const STREAMING: &str = "spiffe://cluster.local/ns/mastodon/sa/streaming";
const OTHER_DOMAIN: &str = "spiffe://elsewhere.example/ns/mastodon/sa/web";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn defaults_decide_where_no_policy_covers() {
    let here = ip("10.0.0.9");
    let open = with("all", "");
    assert!(open.is_open());
    assert!(open.allows(4143, here, None));

    let authenticated = with("all-authenticated", "");
    assert!(!authenticated.is_open());
    assert!(!authenticated.allows(4143, here, None));
    assert!(authenticated.allows(4143, here, Some(&id(OTHER_DOMAIN))));

    let cluster = with("cluster-authenticated", "");
    assert!(cluster.allows(4143, here, Some(&id(WEB))));
    assert!(!cluster.allows(4143, here, Some(&id(OTHER_DOMAIN))));
    assert!(!cluster.allows(4143, here, None));

    let deny = with("deny", "");
    assert!(!deny.allows(4143, here, Some(&id(WEB))));
}

#[test]
fn a_policy_locks_its_ports_to_whom_it_names() {
    let postgres = with(
        "all",
        "
        policies:
          - name: postgres-clients
            server: spiffe://cluster.local/ns/data/sa/postgres
            ports: [4143]
            allow: [spiffe://cluster.local/ns/mastodon/sa/web, spiffe://cluster.local/ns/mastodon/sa/sidekiq, 192.0.2.0/24]
          - name: another-server
            server: spiffe://cluster.local/ns/data/sa/redis
            allow: [unauthenticated]
        ",
    );
    let here = ip("10.0.0.9");
    assert!(postgres.allows(4143, here, Some(&id(WEB))));
    assert!(postgres.allows(4143, here, Some(&id(SIDEKIQ))));
    assert!(!postgres.allows(4143, here, Some(&id(STREAMING))));
    assert!(!postgres.allows(4143, here, None), "plaintext is not named");
    assert!(
        postgres.allows(4143, ip("192.0.2.7"), None),
        "a network, with or without TLS"
    );
    // Another port is not covered: the default (all) decides.
    assert!(postgres.allows(9999, here, None));
}

#[test]
fn patterns_and_the_union_of_policies() {
    let a = with(
        "deny",
        "
        policies:
          - name: mastodon
            allow: [spiffe://cluster.local/ns/mastodon/*]
          - name: monitoring
            ports: [4143]
            allow: [unauthenticated]
        ",
    );
    let here = ip("10.0.0.9");
    assert!(a.allows(4143, here, Some(&id(STREAMING))));
    assert!(
        a.allows(4143, here, None),
        "a second policy on the port adds to the first"
    );
    assert!(!a.allows(4143, here, Some(&id(OTHER_DOMAIN))));
    assert!(!a.allows(5000, here, None), "only `mastodon` covers 5000");
    assert!(a.allows(5000, here, Some(&id(WEB))));
}
