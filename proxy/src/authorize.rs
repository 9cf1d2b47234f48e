//! The authorize stage: may this client use this inbound port?
//!
//! Built from the configuration in force ([`Authorizer::new`]): the `policies` whose `server`
//! names this proxy (its `proxy.identity.id`; a policy without `server` names every proxy that
//! reads it) and `proxy.inbound.defaultPolicy`. On a port some policy covers, a client is allowed
//! when an entry of one of those policies allows it (its verified SPIFFE ID, its address, or
//! `unauthenticated` for a plaintext client); on any other port the default decides. A snapshot
//! holds its authorizer, so a policy change applies to the next request or connection, without a
//! restart, and never to a request already admitted.
//!
//! HTTP is checked per request (a denied one gets 403 and the connection stays usable for the
//! rest of the app's ports' rules, which do not change mid-connection); an opaque connection is
//! checked once, before a byte reaches the app.

use std::net::IpAddr;

use herd_config::{Allow, Config, DefaultPolicy};
use herd_identity::{Matcher, SpiffeId};

use crate::errors::ProxyError;
use crate::metrics::Authorizations;

/// One policy that governs this proxy.
#[derive(Debug)]
struct Rule {
    /// Empty: every port.
    ports: Vec<u16>,
    allow: Vec<Entry>,
}

#[derive(Debug)]
enum Entry {
    Identity(Matcher),
    Network(ipnet::IpNet),
    Unauthenticated,
}

/// The decisions of one configuration.
#[derive(Debug)]
pub struct Authorizer {
    default: DefaultPolicy,
    /// This proxy's trust domain, for `cluster-authenticated`.
    trust_domain: Option<String>,
    rules: Vec<Rule>,
}

impl Authorizer {
    pub fn new(config: &Config) -> Self {
        let own = config
            .proxy
            .identity
            .as_ref()
            .and_then(|i| SpiffeId::parse(&i.id).ok());
        let rules = config
            .policies
            .iter()
            .filter(|policy| match (&policy.server, &own) {
                (None, _) => true,
                (Some(pattern), Some(own)) => Matcher::parse(pattern).is_ok_and(|m| m.matches(own)),
                // A policy for named servers governs none of a proxy without an identity.
                (Some(_), None) => false,
            })
            .map(|policy| Rule {
                ports: policy.ports.clone(),
                allow: policy
                    .allow
                    .iter()
                    .filter_map(|allow| match allow {
                        Allow::Identity(pattern) => {
                            Matcher::parse(pattern).ok().map(Entry::Identity)
                        }
                        Allow::Network(net) => Some(Entry::Network(*net)),
                        Allow::Unauthenticated => Some(Entry::Unauthenticated),
                    })
                    .collect(),
            })
            .collect();
        Authorizer {
            default: config
                .proxy
                .inbound
                .as_ref()
                .map_or(DefaultPolicy::All, |i| i.default_policy),
            trust_domain: own.map(|id| id.trust_domain().to_owned()),
            rules,
        }
    }

    /// Whether every client is allowed everywhere (the default `all`, no policy): nothing to
    /// check or count.
    pub fn is_open(&self) -> bool {
        self.default == DefaultPolicy::All && self.rules.is_empty()
    }

    /// Whether a client at `ip`, with `identity` verified by mutual TLS (or `None`), may use
    /// inbound port `port`.
    pub fn allows(&self, port: u16, ip: IpAddr, identity: Option<&SpiffeId>) -> bool {
        let mut covered = false;
        for rule in &self.rules {
            if !rule.ports.is_empty() && !rule.ports.contains(&port) {
                continue;
            }
            covered = true;
            let allowed = rule.allow.iter().any(|entry| match entry {
                Entry::Identity(matcher) => identity.is_some_and(|id| matcher.matches(id)),
                Entry::Network(net) => net.contains(&ip),
                Entry::Unauthenticated => identity.is_none(),
            });
            if allowed {
                return true;
            }
        }
        if covered {
            return false;
        }
        match self.default {
            DefaultPolicy::All => true,
            DefaultPolicy::AllAuthenticated => identity.is_some(),
            DefaultPolicy::ClusterAuthenticated => {
                identity.is_some_and(|id| self.trust_domain.as_deref() == Some(id.trust_domain()))
            }
            DefaultPolicy::Deny => false,
        }
    }
}

impl Authorizer {
    /// Decides for one request or connection and counts the decision (`counters`, resolved by
    /// the caller once per connection, is asked for only when there is something to decide).
    pub fn check<'c>(
        &self,
        port: u16,
        ip: IpAddr,
        identity: Option<&SpiffeId>,
        counters: impl FnOnce() -> &'c Authorizations,
    ) -> Result<(), ProxyError> {
        if self.is_open() {
            return Ok(());
        }
        if self.allows(port, ip, identity) {
            counters().allowed.inc();
            return Ok(());
        }
        counters().denied.inc();
        Err(ProxyError::Unauthorized {
            who: identity.map_or_else(|| ip.to_string(), |id| id.as_str().to_owned()),
            port,
        })
    }
}

/// The `client` label of a connection's decisions.
pub fn client_label(identity: Option<&SpiffeId>) -> &str {
    identity.map_or("unauthenticated", SpiffeId::as_str)
}

#[cfg(test)]
mod tests;
