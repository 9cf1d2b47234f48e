//! The route stage: which service a request is for, and which of its routes applies.
//!
//! A service is found by the request's authority (absolute-form URI, HTTP/2 `:authority`, or
//! `Host`), normalized exactly as the config normalizes the authorities it lists (see
//! [`herd_config::authority`]) but into a stack buffer, so a lookup allocates nothing. Within a
//! service the first route whose match holds wins; a request matching none uses the service's
//! fallback route.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use herd_config::authority::{MAX_AUTHORITY, normalize};
use herd_config::{Hedge, HedgeDelay, Protocol, RetryPolicy, Route, RouteMatch};
use http::Method;

use crate::balance::Balancer;
use crate::discover::Resolution;
use crate::errors::ProxyError;
use crate::metrics::{RouteMetrics, TcpMetrics};
use crate::retry::{LatencyWindow, Plan, RetryBudget};

/// A service as the request path sees it.
pub struct ServiceTarget {
    pub name: Arc<str>,
    pub protocol: Protocol,
    pub routes: Vec<RouteTarget>,
    pub fallback: RouteTarget,
    pub balancer: Arc<Balancer>,
    /// The retry budget, when a route of the service retries or hedges.
    pub budget: Option<Arc<RetryBudget>>,
    /// Opaque connections (and upgraded ones) to the service.
    pub tcp: Arc<TcpMetrics>,
    /// Tunnels to the service silent this long are closed; `None`: never.
    pub tunnel_idle: Option<Duration>,
    /// Keeps the service's DNS resolution running while the service exists.
    pub resolution: Option<Arc<Resolution>>,
    /// Its endpoints' subscription, for a service whose endpoints come from the control plane.
    pub subscription: Option<Arc<crate::control::subscription::Subscription>>,
}

pub struct RouteTarget {
    pub name: Arc<str>,
    matches: RouteMatch,
    methods: Vec<Method>,
    /// Response timeout across all attempts; `None` for none.
    pub timeout: Option<Duration>,
    pub retry: Option<RetryPolicy>,
    pub hedge: Option<Hedge>,
    /// Recent latency, kept only for a percentile hedge delay.
    pub latency: Option<LatencyWindow>,
    pub metrics: Arc<RouteMetrics>,
}

/// How long a route's latency window is: long enough to hold a percentile, short enough to
/// follow a change of load.
const LATENCY_WINDOW: Duration = Duration::from_secs(10);

impl RouteTarget {
    pub fn new(route: &Route, metrics: Arc<RouteMetrics>) -> Self {
        let methods = route
            .matches
            .methods
            .iter()
            .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
            .collect();
        let latency = route
            .hedge
            .as_ref()
            .filter(|h| matches!(h.delay, HedgeDelay::Percentile(_)))
            .map(|_| LatencyWindow::new(LATENCY_WINDOW));
        RouteTarget {
            name: route.name.as_str().into(),
            matches: route.matches.clone(),
            methods,
            timeout: (!route.timeout.is_zero()).then_some(route.timeout),
            retry: route.retry.clone(),
            hedge: route.hedge,
            latency,
            metrics,
        }
    }

    /// What the retry stage needs to send a request of this route of `service`.
    pub fn plan<'a>(&'a self, service: &'a ServiceTarget) -> Plan<'a> {
        Plan {
            service: &service.name,
            balancer: &service.balancer,
            budget: service.budget.as_deref(),
            timeout: self.timeout,
            retry: self.retry.as_ref(),
            hedge: self.hedge.as_ref(),
            latency: self.latency.as_ref(),
            metrics: &self.metrics,
        }
    }

    fn is_match(&self, method: &Method, path: &str) -> bool {
        if !self.methods.is_empty() && !self.methods.contains(method) {
            return false;
        }
        self.matches.path.as_ref().is_none_or(|exact| path == exact)
            && self
                .matches
                .path_prefix
                .as_ref()
                .is_none_or(|prefix| has_prefix(path, prefix))
    }
}

/// `prefix` matches `path` on segment boundaries: `/api` matches `/api` and `/api/x`, not
/// `/apix`; a prefix ending in `/` matches everything under it.
fn has_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

impl ServiceTarget {
    pub fn route(&self, method: &Method, path: &str) -> &RouteTarget {
        self.routes
            .iter()
            .find(|r| r.is_match(method, path))
            .unwrap_or(&self.fallback)
    }
}

/// Services by normalized authority.
#[derive(Default)]
pub struct RouteTable {
    by_authority: HashMap<Box<str>, Arc<ServiceTarget>>,
}

impl RouteTable {
    pub fn insert(&mut self, authority: &str, service: Arc<ServiceTarget>) {
        self.by_authority.insert(authority.into(), service);
    }

    /// The service `authority` names.
    pub fn lookup(&self, authority: &str) -> Result<&Arc<ServiceTarget>, ProxyError> {
        let mut buf = [0u8; MAX_AUTHORITY];
        let key = normalize(authority, &mut buf).ok_or(ProxyError::InvalidAuthority)?;
        let service = self
            .by_authority
            .get(key)
            .ok_or_else(|| ProxyError::NoService(authority.to_owned()))?;
        // A service discovered through the control plane is followed once it is used.
        if let Some(subscription) = &service.subscription {
            subscription.touch();
        }
        Ok(service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::listen::Direction;
    use crate::metrics::Metrics;

    fn metrics() -> Arc<RouteMetrics> {
        Metrics::new().route(Direction::Outbound, "web", "r")
    }

    fn route(name: &str, m: RouteMatch) -> RouteTarget {
        let route = Route {
            name: name.into(),
            matches: m,
            timeout: Duration::from_secs(1),
            ..Route::fallback()
        };
        RouteTarget::new(&route, metrics())
    }

    fn service() -> ServiceTarget {
        ServiceTarget {
            name: "web".into(),
            protocol: Protocol::Http,
            routes: vec![
                route(
                    "stream",
                    RouteMatch {
                        path_prefix: Some("/api/v1/streaming".into()),
                        ..Default::default()
                    },
                ),
                route(
                    "api-reads",
                    RouteMatch {
                        path_prefix: Some("/api/".into()),
                        methods: vec!["GET".into()],
                        ..Default::default()
                    },
                ),
                route(
                    "health",
                    RouteMatch {
                        path: Some("/health".into()),
                        ..Default::default()
                    },
                ),
            ],
            fallback: RouteTarget::new(
                &Route {
                    timeout: Duration::ZERO,
                    ..Route::fallback()
                },
                metrics(),
            ),
            balancer: Arc::new(Balancer::new(
                "web",
                &Default::default(),
                &Default::default(),
                &Default::default(),
                Vec::new(),
            )),
            budget: None,
            tcp: Metrics::new().tcp(Direction::Outbound, "web"),
            tunnel_idle: None,
            resolution: None,
            subscription: None,
        }
    }

    #[test]
    fn first_matching_route_wins() {
        let s = service();
        assert_eq!(&*s.route(&Method::GET, "/api/v1/streaming").name, "stream");
        assert_eq!(
            &*s.route(&Method::GET, "/api/v1/streaming/user").name,
            "stream"
        );
        assert_eq!(
            &*s.route(&Method::GET, "/api/v1/streamingx").name,
            "api-reads"
        );
        assert_eq!(&*s.route(&Method::POST, "/api/v1/statuses").name, "default");
        assert_eq!(&*s.route(&Method::GET, "/health").name, "health");
        assert_eq!(&*s.route(&Method::GET, "/health/x").name, "default");
        assert!(s.route(&Method::GET, "/").timeout.is_none());
    }

    #[test]
    fn authorities_are_compared_normalized() {
        let mut table = RouteTable::default();
        table.insert("web.local", Arc::new(service()));
        for raw in ["web.local", "WEB.local", "web.local.", "web.local:80"] {
            assert!(table.lookup(raw).is_ok(), "{raw}");
        }
        assert!(matches!(
            table.lookup("web.local:3000"),
            Err(ProxyError::NoService(_))
        ));
        assert!(matches!(
            table.lookup("bad host"),
            Err(ProxyError::InvalidAuthority)
        ));
    }
}
