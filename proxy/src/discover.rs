//! Discovery by DNS: a service's endpoints are whatever its name resolves to.
//!
//! Each distinct `dns:` name (with its port and TTL bounds) has one resolution task, shared by
//! every snapshot that names it, so a reload neither re-resolves nor starts from nothing. The task
//! asks for A and AAAA records, publishes the sorted addresses on a watch channel when they
//! change, and asks again when the answer's TTL runs out, clamped to `[minTtl, maxTtl]`: a TTL
//! of 0 must not become a query storm, and a day-long TTL must not hide a rescheduled pod. When
//! the resolver fails (timeout, refused, unreachable) the last good answer stays in force and the
//! query is retried after `minTtl`; a name that does not exist, or has no addresses, is an answer:
//! the service then has no endpoints. The task ends when the last service using it goes away.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use herd_config::{DnsDiscovery, ResolverConfig};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolverConfig as HickoryConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

/// The addresses a name resolves to; `None` until the first answer.
pub type Answer = Option<Arc<[SocketAddr]>>;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    name: String,
    port: u16,
    min_ttl: Duration,
    max_ttl: Duration,
}

/// One name being kept resolved; the task stops when this drops.
pub struct Resolution {
    rx: watch::Receiver<Answer>,
    task: AbortHandle,
}

impl Resolution {
    pub fn subscribe(&self) -> watch::Receiver<Answer> {
        self.rx.clone()
    }
}

impl Drop for Resolution {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The resolver and the names being resolved with it.
pub struct Discovery {
    config: ResolverConfig,
    resolver: Option<Arc<TokioResolver>>,
    resolutions: Mutex<HashMap<Key, Weak<Resolution>>>,
}

impl Discovery {
    /// A resolver for `config`: its nameservers, or the system's `/etc/resolv.conf` when it lists
    /// none. A resolver that cannot be built is logged; names then never resolve.
    pub fn new(config: &ResolverConfig) -> Self {
        let resolver = match build(config) {
            Ok(resolver) => Some(Arc::new(resolver)),
            Err(error) => {
                warn!(%error, "no DNS resolver: services discovered by DNS will have no endpoints");
                None
            }
        };
        Discovery {
            config: config.clone(),
            resolver,
            resolutions: Mutex::default(),
        }
    }

    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// The shared resolution of `dns`, started if no one resolves it yet.
    pub fn resolve(&self, dns: &DnsDiscovery) -> Arc<Resolution> {
        let key = Key {
            name: dns.name.clone(),
            port: dns.port,
            min_ttl: dns.min_ttl,
            max_ttl: dns.max_ttl,
        };
        let mut resolutions = self.resolutions.lock().expect("discovery lock poisoned");
        resolutions.retain(|_, r| r.strong_count() > 0);
        if let Some(existing) = resolutions.get(&key).and_then(Weak::upgrade) {
            return existing;
        }
        let (tx, rx) = watch::channel(None);
        let task = match &self.resolver {
            Some(resolver) => {
                tokio::spawn(keep_resolved(resolver.clone(), key.clone(), tx)).abort_handle()
            }
            None => tokio::spawn(async move { tx.closed().await }).abort_handle(),
        };
        let resolution = Arc::new(Resolution { rx, task });
        resolutions.insert(key, Arc::downgrade(&resolution));
        resolution
    }
}

fn build(config: &ResolverConfig) -> Result<TokioResolver, hickory_resolver::net::NetError> {
    let mut builder = if config.nameservers.is_empty() {
        TokioResolver::builder_tokio()?
    } else {
        let servers = config
            .nameservers
            .iter()
            .map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            })
            .collect();
        TokioResolver::builder_with_config(
            HickoryConfig::from_parts(None, Vec::new(), servers),
            TokioRuntimeProvider::default(),
        )
    };
    builder.options_mut().ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    builder.build()
}

async fn keep_resolved(resolver: Arc<TokioResolver>, key: Key, tx: watch::Sender<Answer>) {
    loop {
        let next = match resolver.lookup_ip(key.name.as_str()).await {
            Ok(lookup) => {
                let mut addrs: Vec<SocketAddr> = lookup
                    .iter()
                    .map(|ip| SocketAddr::new(ip, key.port))
                    .collect();
                addrs.sort_unstable();
                addrs.dedup();
                publish(&tx, &key, addrs);
                lookup
                    .valid_until()
                    .saturating_duration_since(std::time::Instant::now())
            }
            Err(error) if error.is_no_records_found() => {
                publish(&tx, &key, Vec::new());
                key.min_ttl
            }
            Err(error) => {
                warn!(name = %key.name, %error, "DNS lookup failed; keeping the last answer");
                key.min_ttl
            }
        };
        tokio::time::sleep(next.clamp(key.min_ttl, key.max_ttl)).await;
    }
}

fn publish(tx: &watch::Sender<Answer>, key: &Key, addrs: Vec<SocketAddr>) {
    tx.send_if_modified(|current| {
        if current.as_deref() == Some(&addrs[..]) {
            debug!(name = %key.name, "DNS answer unchanged");
            return false;
        }
        info!(name = %key.name, endpoints = ?addrs, "DNS answer changed");
        *current = Some(addrs.into());
        true
    });
}
