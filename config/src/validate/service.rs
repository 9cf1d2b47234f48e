//! `services[]`: names, authorities, where the endpoints come from, routes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use serde_saphyr::Spanned;

use super::{
    Claim, Listeners, Problem, Result, connectable, count, duration, endpoint, is_dns_label,
    is_token_byte, not_above, positive, problem, retry, traffic,
};
use crate::authority::Authority;
use crate::model::{DnsDiscovery, Protocol, Route, RouteMatch, Service, WeightedEndpoint};
use crate::raw;

/// Longest service name: a DNS name's limit, and what a metric label should carry at most.
const MAX_SERVICE_NAME: usize = 253;

/// A service name: DNS labels joined by dots, so that the mesh files can name the services the
/// Kubernetes source discovers (`NAME.NAMESPACE`, `NAME.NAMESPACE.PORT-NAME`). Lowercase, no
/// empty label, no `_`: safe as a metric label and as a log field.
pub fn is_service_name(name: &str) -> bool {
    name.len() <= MAX_SERVICE_NAME && name.split('.').all(is_dns_label)
}

pub(super) fn service(
    node: Spanned<raw::Service>,
    path: &str,
    claims: &mut HashMap<Authority, Claim>,
    addresses: &mut HashMap<SocketAddr, Claim>,
    listeners: &mut Listeners,
    discovery: super::Endpoints,
) -> Result<Service> {
    let at = node.referenced;
    let raw = node.value;
    let name = raw.name.value.clone();
    if !is_service_name(&name) {
        return Err(problem(
            &raw.name,
            format!("{path}.name"),
            format!(
                "invalid service name `{name}`: use DNS labels joined by `.` (`web`, \
                 `web.mastodon`), each 1 to 63 lowercase letters, digits and `-` starting and \
                 ending with a letter or digit, {MAX_SERVICE_NAME} characters in all"
            ),
        ));
    }
    let protocol = raw.protocol.map_or(Protocol::Http, |p| p.value.0);

    let mut authorities = Vec::new();
    for (j, raw) in raw.authorities.unwrap_or_default().iter().enumerate() {
        let at = format!("{path}.authorities[{j}]");
        let Some(authority) = Authority::parse(&raw.value) else {
            return Err(problem(
                raw,
                at,
                format!(
                    "invalid authority `{}`: expected host or host:port",
                    raw.value
                ),
            ));
        };
        if let Some(claim) = claims.get(&authority) {
            let owner = if claim.service == name {
                "this service".to_owned()
            } else {
                format!("service `{}`", claim.service)
            };
            return Err(problem(
                raw,
                at,
                format!(
                    "authority `{}` (normalized `{authority}`) is already claimed by {owner} at {} (line {})",
                    raw.value, claim.path, claim.line
                ),
            ));
        }
        claims.insert(
            authority.clone(),
            Claim {
                service: name.clone(),
                path: at,
                line: raw.referenced.line(),
            },
        );
        authorities.push(authority);
    }

    let (endpoints, dns) = match (raw.endpoints, raw.dns) {
        (Some(list), None) => (endpoints(list, &format!("{path}.endpoints"))?, None),
        (None, Some(node)) => (Vec::new(), Some(dns(node, &format!("{path}.dns"))?)),
        (Some(list), Some(node)) => {
            return Err(problem(
                &node,
                format!("{path}.dns"),
                format!(
                    "`dns` and `endpoints` (line {}) cannot both be given: list the endpoints, \
                     or discover them by DNS",
                    list.referenced.line()
                ),
            ));
        }
        (None, None) if discovery == super::Endpoints::Discovered => (Vec::new(), None),
        (None, None) => {
            return Err(Problem {
                at: Some(at),
                path: path.to_owned(),
                message: "missing required key `endpoints` (or `dns`, to discover them by DNS)"
                    .to_owned(),
            });
        }
    };

    let listen = match raw.listen {
        Some(listen) if protocol != Protocol::Opaque => {
            return Err(problem(
                &listen,
                format!("{path}.listen"),
                format!(
                    "`listen` is only allowed on opaque services, and this one is `{}`: \
                     HTTP services are reached through the outbound listener, by authority",
                    protocol.as_str()
                ),
            ));
        }
        Some(listen) => {
            listeners.add(
                &format!("{path}.listen"),
                listen.value.0,
                Some(listen.referenced),
            )?;
            Some(listen.value.0)
        }
        None => None,
    };
    let cluster_ips = match raw.cluster_ips {
        Some(list) => cluster_ips(list, &format!("{path}.clusterIps"), &name, addresses)?,
        None => Vec::new(),
    };
    let balancer = traffic::balancer(raw.balancer, &format!("{path}.balancer"), protocol)?;
    let outlier_detection =
        traffic::outlier_detection(raw.outlier_detection, &format!("{path}.outlierDetection"))?;
    let limits = traffic::limits(raw.limits, &format!("{path}.limits"))?;
    let retry_budget = retry::retry_budget(raw.retry_budget, &format!("{path}.retryBudget"))?;

    let routes = match raw.routes {
        Some(routes) if protocol == Protocol::Opaque && !routes.value.is_empty() => {
            return Err(problem(
                &routes,
                format!("{path}.routes"),
                "`routes` are only allowed on http and http2 services: an opaque service has no requests to route",
            ));
        }
        Some(routes) => self::routes(routes.value, &format!("{path}.routes"))?,
        None => Vec::new(),
    };

    Ok(Service {
        name,
        authorities,
        protocol,
        endpoints,
        dns,
        listen,
        cluster_ips,
        balancer,
        outlier_detection,
        limits,
        retry_budget,
        routes,
    })
}

/// `clusterIps:`: addresses a client connects to that mean this service; each claimed by one
/// service only (a transparent proxy could not tell which of two was meant), none that no
/// client can connect to (port 0, the unspecified address).
fn cluster_ips(
    list: Spanned<Vec<Spanned<raw::Addr>>>,
    path: &str,
    service: &str,
    claims: &mut HashMap<SocketAddr, Claim>,
) -> Result<Vec<SocketAddr>> {
    let mut addresses = Vec::with_capacity(list.value.len());
    for (j, node) in list.value.iter().enumerate() {
        let at = format!("{path}[{j}]");
        let addr = connectable(node, node.value.0, &at)?;
        if addr.ip().is_unspecified() {
            return Err(problem(
                node,
                at,
                format!("{addr}: no client connects to the unspecified address"),
            ));
        }
        if let Some(claim) = claims.get(&addr) {
            let owner = if claim.service == service {
                "this service".to_owned()
            } else {
                format!("service `{}`", claim.service)
            };
            return Err(problem(
                node,
                at,
                format!(
                    "{addr} is already claimed by {owner} at {} (line {})",
                    claim.path, claim.line
                ),
            ));
        }
        claims.insert(
            addr,
            Claim {
                service: service.to_owned(),
                path: at,
                line: node.referenced.line(),
            },
        );
        addresses.push(addr);
    }
    Ok(addresses)
}

/// `endpoints:`: at least one, each address once.
fn endpoints(
    list: Spanned<Vec<Spanned<raw::Endpoint>>>,
    path: &str,
) -> Result<Vec<WeightedEndpoint>> {
    if list.value.is_empty() {
        return Err(problem(&list, path, "at least one endpoint is required"));
    }
    let mut endpoints: Vec<WeightedEndpoint> = Vec::with_capacity(list.value.len());
    for (j, node) in list.value.into_iter().enumerate() {
        let at = format!("{path}[{j}]");
        let (endpoint, address_path) = match &node.value {
            raw::Form::Short(addr) => (
                WeightedEndpoint::new(connectable(&node, addr.0, &at)?),
                at.clone(),
            ),
            raw::Form::Long(map) => {
                let address_path = format!("{at}.address");
                let address = endpoint(&map.address, &address_path)?;
                let range = WeightedEndpoint::WEIGHT_RANGE;
                let weight = count(
                    map.weight.clone(),
                    &format!("{at}.weight"),
                    WeightedEndpoint::DEFAULT_WEIGHT,
                    u64::from(*range.start())..=u64::from(*range.end()),
                )?;
                let identity = map
                    .identity
                    .as_ref()
                    .map(|id| workload_identity(id, &format!("{at}.identity")))
                    .transpose()?;
                (
                    WeightedEndpoint {
                        address,
                        weight,
                        identity,
                    },
                    address_path,
                )
            }
        };
        if let Some(first) = endpoints.iter().position(|e| e.address == endpoint.address) {
            let address_node = match &node.value {
                raw::Form::Long(map) => map.address.referenced,
                raw::Form::Short(_) => node.referenced,
            };
            return Err(Problem {
                at: Some(address_node),
                path: address_path,
                message: format!("{} is already listed as {path}[{first}]", endpoint.address),
            });
        }
        endpoints.push(endpoint);
    }
    Ok(endpoints)
}

/// `endpoints[].identity`: see [`WeightedEndpoint::check_identity`].
fn workload_identity(node: &Spanned<String>, path: &str) -> Result<String> {
    WeightedEndpoint::check_identity(&node.value)
        .map_err(|message| problem(node, path, message))?;
    Ok(node.value.clone())
}

/// `dns:`: a name to resolve and a port, and how often to resolve it again.
fn dns(node: Spanned<raw::Dns>, path: &str) -> Result<DnsDiscovery> {
    let (target, min_ttl, max_ttl) = match node.value {
        raw::Form::Short(ref text) => {
            let (name, port) = dns_target(text).map_err(|m| problem(&node, path, m))?;
            return Ok(DnsDiscovery {
                name,
                port,
                min_ttl: DnsDiscovery::DEFAULT_MIN_TTL,
                max_ttl: DnsDiscovery::DEFAULT_MAX_TTL,
            });
        }
        raw::Form::Long(map) => (map.name, map.min_ttl, map.max_ttl),
    };
    let (name, port) =
        dns_target(&target.value).map_err(|m| problem(&target, format!("{path}.name"), m))?;
    let min_path = format!("{path}.minTtl");
    let max_path = format!("{path}.maxTtl");
    let min = positive(min_ttl.clone(), &min_path, DnsDiscovery::DEFAULT_MIN_TTL)?;
    let max = duration(max_ttl.clone(), DnsDiscovery::DEFAULT_MAX_TTL);
    not_above((&min_ttl, min, &min_path), (&max_ttl, max, &max_path))?;
    Ok(DnsDiscovery {
        name,
        port,
        min_ttl: min,
        max_ttl: max,
    })
}

/// `NAME:PORT`, where NAME is a DNS name and not an IP address; the error is the message.
pub(super) fn dns_target(text: &str) -> std::result::Result<(String, u16), String> {
    let text = text.trim();
    let example = "e.g. web.mastodon.svc.cluster.local:3000";
    let Some((name, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` has no port: expected NAME:PORT, {example}"
        ));
    };
    let bare = name.trim_start_matches('[').trim_end_matches(']');
    if text.parse::<SocketAddr>().is_ok() || bare.parse::<IpAddr>().is_ok() {
        return Err(format!(
            "`{name}` is an IP address, not a DNS name: list it under `endpoints` instead"
        ));
    }
    let port = match port.parse::<u16>() {
        Ok(port) if port > 0 => port,
        _ => {
            return Err(format!(
                "invalid port `{port}` in `{text}`: expected 1 to 65535, {example}"
            ));
        }
    };
    if let Err(why) = check_dns_name(name) {
        return Err(format!("invalid DNS name `{name}`: {why}"));
    }
    Ok((name.to_owned(), port))
}

/// Letters, digits, `-` and `.`; an optional trailing dot; labels of 1 to 63 characters, 253
/// in all (without the trailing dot): what a resolver will look up.
fn check_dns_name(name: &str) -> std::result::Result<(), &'static str> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err("the name is empty");
    }
    if !bare
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err("use only letters, digits, `-` and `.`");
    }
    if bare.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err("a label is empty (two dots in a row, or a leading dot)");
        }
        if label.len() > 63 {
            return Err("a label is longer than 63 characters");
        }
    }
    Ok(())
}

fn routes(raw: Vec<raw::Route>, path: &str) -> Result<Vec<Route>> {
    let mut routes: Vec<Route> = Vec::with_capacity(raw.len());
    for (k, raw) in raw.into_iter().enumerate() {
        let at = format!("{path}[{k}]");
        let positional = format!("routes[{k}]");
        let name = match raw.name {
            // A route without a name is `routes[N]`: unique by position, so only an explicit
            // name can clash, and an explicit `routes[N]` is only allowed where it is the default.
            None => positional,
            Some(name) => {
                let message = if name.value.trim().is_empty() {
                    Some("route name is empty".to_owned())
                } else if name.value == Route::fallback().name {
                    Some(format!(
                        "route name `{}` is reserved for requests that match no route",
                        name.value
                    ))
                } else if name.value.starts_with("routes[") && name.value != positional {
                    Some(format!(
                        "route name `{}` is reserved for an unnamed route at that position",
                        name.value
                    ))
                } else {
                    routes
                        .iter()
                        .position(|r| r.name == name.value)
                        .map(|first| {
                            format!(
                                "route name `{}` is already used by {path}[{first}]",
                                name.value
                            )
                        })
                };
                if let Some(message) = message {
                    return Err(problem(&name, format!("{at}.name"), message));
                }
                name.value
            }
        };
        let matches = match raw.matches {
            Some(m) => route_match(m, &format!("{at}.match"))?,
            None => RouteMatch::default(),
        };
        let limit = retry::RouteTimeout {
            value: duration(raw.timeout.clone(), Route::DEFAULT_TIMEOUT),
            written: raw.timeout.is_some(),
        };
        let retry = raw
            .retry
            .map(|r| retry::retry(r, &format!("{at}.retry"), limit))
            .transpose()?;
        let hedge = raw
            .hedge
            .map(|h| retry::hedge(h, &format!("{at}.hedge"), limit))
            .transpose()?;
        routes.push(Route {
            name,
            matches,
            timeout: limit.value,
            retry,
            hedge,
        });
    }
    Ok(routes)
}

fn route_match(raw: raw::RouteMatch, path: &str) -> Result<RouteMatch> {
    let check_path = |node: &Option<Spanned<String>>, key: &str| -> Result<Option<String>> {
        let Some(node) = node else { return Ok(None) };
        let value = &node.value;
        let at = format!("{path}.{key}");
        if !value.starts_with('/') {
            return Err(problem(
                node,
                at,
                format!("path `{value}` must start with `/`"),
            ));
        }
        if let Some(c) = value
            .chars()
            .find(|c| matches!(c, '?' | '#') || c.is_whitespace())
        {
            return Err(problem(
                node,
                at,
                format!(
                    "path `{value}` must not contain {c:?}: only the path is matched, not the query"
                ),
            ));
        }
        Ok(Some(value.clone()))
    };
    let exact = check_path(&raw.path, "path")?;
    let prefix = check_path(&raw.path_prefix, "pathPrefix")?;
    let mut methods = Vec::new();
    for (m, node) in raw.methods.unwrap_or_default().iter().enumerate() {
        let method = node.value.to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(is_token_byte) {
            return Err(problem(
                node,
                format!("{path}.methods[{m}]"),
                format!("invalid HTTP method `{}`", node.value),
            ));
        }
        if !methods.contains(&method) {
            methods.push(method);
        }
    }
    Ok(RouteMatch {
        path: exact,
        path_prefix: prefix,
        methods,
    })
}
