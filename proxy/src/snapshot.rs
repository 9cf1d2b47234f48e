//! The routing snapshot: a config compiled into what the request path reads.
//!
//! A snapshot is immutable and shared (`Arc`); the proxy publishes each new one on a
//! `tokio::sync::watch` channel. A connection takes the current snapshot when a request starts
//! and keeps it for that request, so a reload applies to new requests and never disturbs one in
//! flight. Endpoint pools outlive snapshots: [`Pools`] hands the same pool to every snapshot that
//! names the same endpoint with the same settings, so a reload keeps warm connections.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use herd_config::{Config, Protocol, Route, RouteMatch, Upstream};

use crate::balance::Balancer;
use crate::endpoint::{Endpoint, PoolKey, Wire};
use crate::route::{RouteTable, RouteTarget, ServiceTarget};

pub struct Snapshot {
    /// 1 for the config the proxy started with, +1 per applied reload.
    pub version: u64,
    pub file: PathBuf,
    pub config: Arc<Config>,
    /// Where inbound traffic goes: the app.
    pub inbound: Option<Arc<ServiceTarget>>,
    /// Outbound HTTP services by authority.
    pub routes: RouteTable,
    /// Opaque services by the address of their own listener.
    pub by_listener: HashMap<SocketAddr, Arc<ServiceTarget>>,
}

/// Endpoint pools by their settings, shared across snapshots.
#[derive(Default)]
pub struct Pools {
    pools: HashMap<PoolKey, Weak<Endpoint>>,
}

impl Pools {
    fn get(&mut self, key: PoolKey) -> Arc<Endpoint> {
        if let Some(ep) = self.pools.get(&key).and_then(Weak::upgrade) {
            return ep;
        }
        let ep = Endpoint::new(key);
        self.pools.insert(key, Arc::downgrade(&ep));
        ep
    }

    fn forget_unused(&mut self) {
        self.pools.retain(|_, ep| ep.strong_count() > 0);
    }
}

fn wire(protocol: Protocol) -> Wire {
    match protocol {
        Protocol::Http2 => Wire::Http2,
        Protocol::Http | Protocol::Opaque => Wire::Http1,
    }
}

impl Snapshot {
    pub fn build(version: u64, file: PathBuf, config: Config, pools: &mut Pools) -> Snapshot {
        let mut endpoints = |addrs: &[SocketAddr], protocol: Protocol, up: &Upstream| -> Balancer {
            Balancer::new(
                addrs
                    .iter()
                    .map(|&addr| {
                        pools.get(PoolKey {
                            addr,
                            wire: wire(protocol),
                            connect_timeout: up.connect_timeout,
                            idle_timeout: up.idle_timeout,
                        })
                    })
                    .collect(),
            )
        };

        let inbound = config.proxy.inbound.as_ref().map(|inb| {
            Arc::new(ServiceTarget {
                name: "inbound".into(),
                protocol: inb.protocol,
                routes: Vec::new(),
                fallback: RouteTarget::new("default", RouteMatch::default(), inb.timeout),
                balancer: endpoints(&[inb.app], inb.protocol, &inb.upstream),
            })
        });

        let mut routes = RouteTable::default();
        let mut by_listener = HashMap::new();
        for svc in &config.services {
            let fallback = Route::fallback();
            let target = Arc::new(ServiceTarget {
                name: svc.name.as_str().into(),
                protocol: svc.protocol,
                routes: svc
                    .routes
                    .iter()
                    .map(|r| RouteTarget::new(&r.name, r.matches.clone(), r.timeout))
                    .collect(),
                fallback: RouteTarget::new(&fallback.name, fallback.matches, fallback.timeout),
                balancer: endpoints(&svc.endpoints, svc.protocol, &svc.upstream),
            });
            for authority in &svc.authorities {
                routes.insert(authority.as_str(), target.clone());
            }
            if let Some(listen) = svc.listen {
                by_listener.insert(listen, target.clone());
            }
        }
        pools.forget_unused();
        Snapshot {
            version,
            file,
            config: Arc::new(config),
            inbound,
            routes,
            by_listener,
        }
    }
}
