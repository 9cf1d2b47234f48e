//! `policies:` and `proxy.inbound.defaultPolicy`: who may connect to a proxy's inbound ports.
//!
//! A policy names the proxies it governs (`server`: their SPIFFE ID, exact or `…/*`), the inbound
//! ports it covers, and the clients it allows: SPIFFE identities (verified by mutual TLS), networks
//! (the client's address, with or without TLS), or `unauthenticated` (any plaintext client). On a
//! port some policy covers, a client is allowed when any entry of any covering policy allows it;
//! on a port none covers, the proxy's default policy decides. The decision itself is the proxy's
//! (its `authorize` stage); this is only the model.

use serde::{Serialize, Serializer};

/// One entry of `policies`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// Unique in the mesh: a second policy of the same name is an error naming both.
    pub name: String,
    /// The proxies it governs: a SPIFFE ID, or a prefix ending in `/*`. Absent: every proxy that
    /// reads it (in a proxy's own file, that proxy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The inbound ports it covers (the port a client connected to). Empty: every port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
    /// Who may connect; at least one entry.
    pub allow: Vec<Allow>,
}

/// A client a policy allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allow {
    /// A verified SPIFFE ID: exact, or a prefix ending in `/*` (`spiffe://cluster.local/ns/mastodon/*`).
    Identity(String),
    /// A client address in this network, whether or not it came over TLS.
    Network(ipnet::IpNet),
    /// Any client without a verified identity (plaintext).
    Unauthenticated,
}

impl std::fmt::Display for Allow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Allow::Identity(id) => f.write_str(id),
            Allow::Network(net) => write!(f, "{net}"),
            Allow::Unauthenticated => f.write_str("unauthenticated"),
        }
    }
}

/// Written back as it is read: one string per entry.
impl Serialize for Allow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// `proxy.inbound.defaultPolicy`: who may connect on a port no policy covers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Every client, with or without TLS: a proxy added to a pod changes nothing until told to.
    #[default]
    All,
    /// Clients with a verified identity from any trust domain the bundle accepts.
    AllAuthenticated,
    /// Clients with a verified identity in this proxy's own trust domain.
    ClusterAuthenticated,
    /// Nobody (only what policies allow).
    Deny,
}

impl DefaultPolicy {
    pub const ALL: [DefaultPolicy; 4] = [
        DefaultPolicy::All,
        DefaultPolicy::AllAuthenticated,
        DefaultPolicy::ClusterAuthenticated,
        DefaultPolicy::Deny,
    ];

    /// The name as written in YAML.
    pub fn as_str(self) -> &'static str {
        match self {
            DefaultPolicy::All => "all",
            DefaultPolicy::AllAuthenticated => "all-authenticated",
            DefaultPolicy::ClusterAuthenticated => "cluster-authenticated",
            DefaultPolicy::Deny => "deny",
        }
    }
}
