//! From the file as written ([`raw`]) to what the proxy acts on ([`crate::model`]).
//!
//! Types already refused what cannot be parsed; this module refuses what parses but cannot be
//! meant: a timeout of zero where zero would close every connection, two services claiming one
//! Host, a `listen` on a service the outbound listener already routes, two listeners on one
//! socket. It also fills every default, so the proxy never sees an `Option` it has to guess
//! about. The first problem found stops the walk: one precise line beats a page of follow-ups.
//!
//! Each check points at the node at fault (its [`Spanned`] location) and names its field path,
//! and when the fault is a clash, the message names the other party too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use crate::authority::Authority;
use crate::model::{
    AdminListener, Config, Downstream, InboundListener, OutboundListener, Protocol, ProxySettings,
    Route, RouteMatch, Service, Upstream,
};
use crate::raw;

#[cfg(test)]
mod tests;

/// A rule the file breaks: where, which field, what is wrong.
#[derive(Debug)]
pub struct Problem {
    pub at: Option<Location>,
    pub path: String,
    pub message: String,
}

type Result<T> = std::result::Result<T, Problem>;

fn problem<T>(node: &Spanned<T>, path: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        at: Some(node.referenced),
        path: path.into(),
        message: message.into(),
    }
}

/// Validates a whole file and fills its defaults.
pub fn config(root: raw::Root) -> Result<Config> {
    let mut listeners = Listeners::default();
    let proxy = proxy(root.proxy, &mut listeners)?;
    let mut services = Vec::new();
    let mut names: HashMap<String, (usize, u64)> = HashMap::new();
    let mut authorities: HashMap<Authority, Claim> = HashMap::new();
    for (i, raw) in root.services.unwrap_or_default().into_iter().enumerate() {
        let path = format!("services[{i}]");
        let name = &raw.name;
        if let Some((first, line)) = names.get(&name.value) {
            return Err(problem(
                name,
                format!("{path}.name"),
                format!(
                    "service name `{}` is already used by services[{first}] (line {line})",
                    name.value
                ),
            ));
        }
        let line = name.referenced.line();
        let service = service(raw, &path, &mut authorities, &mut listeners)?;
        names.insert(service.name.clone(), (i, line));
        services.push(service);
    }
    Ok(Config { proxy, services })
}

fn proxy(raw: Option<raw::Proxy>, listeners: &mut Listeners) -> Result<ProxySettings> {
    let defaults = ProxySettings::default();
    let Some(raw) = raw else {
        listeners.add("proxy.admin.listen", defaults.admin.listen, None)?;
        return Ok(defaults);
    };
    let inbound = raw.inbound.map(|raw| inbound(raw, listeners)).transpose()?;
    let outbound = raw
        .outbound
        .map(|raw| outbound(raw, listeners))
        .transpose()?;
    let admin = match raw.admin.and_then(|admin| admin.listen) {
        Some(listen) => {
            listeners.add(
                "proxy.admin.listen",
                listen.value.0,
                Some(listen.referenced),
            )?;
            AdminListener {
                listen: listen.value.0,
            }
        }
        None => {
            listeners.add("proxy.admin.listen", defaults.admin.listen, None)?;
            defaults.admin
        }
    };
    let drain_timeout = duration(raw.drain_timeout, defaults.drain_timeout);
    Ok(ProxySettings {
        inbound,
        outbound,
        admin,
        drain_timeout,
    })
}

fn inbound(raw: raw::Inbound, listeners: &mut Listeners) -> Result<InboundListener> {
    const PATH: &str = "proxy.inbound";
    listeners.add(
        "proxy.inbound.listen",
        raw.listen.value.0,
        Some(raw.listen.referenced),
    )?;
    let app = endpoint(&raw.app, "proxy.inbound.app")?;
    if overlaps(app, raw.listen.value.0) {
        return Err(problem(
            &raw.app,
            "proxy.inbound.app",
            format!(
                "{app} is proxy.inbound.listen ({}): every request would loop back into the proxy",
                raw.listen.value.0
            ),
        ));
    }
    let downstream = downstream(
        PATH,
        raw.max_connections,
        raw.header_timeout,
        raw.max_header_bytes,
        raw.detect_timeout,
    )?;
    let upstream = upstream(PATH, raw.connect_timeout, raw.idle_timeout)?;
    Ok(InboundListener {
        listen: raw.listen.value.0,
        app,
        protocol: raw.protocol.map_or(Protocol::Http, |p| p.value.0),
        downstream,
        upstream,
        timeout: duration(raw.timeout, InboundListener::DEFAULT_TIMEOUT),
    })
}

fn outbound(raw: raw::Outbound, listeners: &mut Listeners) -> Result<OutboundListener> {
    listeners.add(
        "proxy.outbound.listen",
        raw.listen.value.0,
        Some(raw.listen.referenced),
    )?;
    let downstream = downstream(
        "proxy.outbound",
        raw.max_connections,
        raw.header_timeout,
        raw.max_header_bytes,
        raw.detect_timeout,
    )?;
    Ok(OutboundListener {
        listen: raw.listen.value.0,
        downstream,
    })
}

type Field<T> = Option<Spanned<T>>;

fn downstream(
    path: &str,
    max_connections: Field<raw::Count>,
    header_timeout: Field<raw::Dur>,
    max_header_bytes: Field<raw::Count>,
    detect_timeout: Field<raw::Dur>,
) -> Result<Downstream> {
    let defaults = Downstream::default();
    Ok(Downstream {
        max_connections: count(
            max_connections,
            &format!("{path}.maxConnections"),
            defaults.max_connections,
            1..=u64::MAX,
        )?,
        header_timeout: positive(
            header_timeout,
            &format!("{path}.headerTimeout"),
            defaults.header_timeout,
        )?,
        max_header_bytes: count(
            max_header_bytes,
            &format!("{path}.maxHeaderBytes"),
            defaults.max_header_bytes,
            Downstream::MAX_HEADER_BYTES_RANGE,
        )?,
        detect_timeout: positive(
            detect_timeout,
            &format!("{path}.detectTimeout"),
            defaults.detect_timeout,
        )?,
    })
}

fn upstream(
    path: &str,
    connect_timeout: Field<raw::Dur>,
    idle_timeout: Field<raw::Dur>,
) -> Result<Upstream> {
    let defaults = Upstream::default();
    Ok(Upstream {
        connect_timeout: positive(
            connect_timeout,
            &format!("{path}.connectTimeout"),
            defaults.connect_timeout,
        )?,
        idle_timeout: positive(
            idle_timeout,
            &format!("{path}.idleTimeout"),
            defaults.idle_timeout,
        )?,
    })
}

/// Who first claimed an authority.
struct Claim {
    service: String,
    path: String,
    line: u64,
}

fn service(
    raw: raw::Service,
    path: &str,
    claims: &mut HashMap<Authority, Claim>,
    listeners: &mut Listeners,
) -> Result<Service> {
    let name = raw.name.value.clone();
    if !is_dns_label(&name) {
        return Err(problem(
            &raw.name,
            format!("{path}.name"),
            format!(
                "invalid service name `{name}`: use 1 to 63 lowercase letters, digits and `-`, \
                 starting and ending with a letter or digit"
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

    if raw.endpoints.value.is_empty() {
        return Err(problem(
            &raw.endpoints,
            format!("{path}.endpoints"),
            "at least one endpoint is required",
        ));
    }
    let endpoints = raw
        .endpoints
        .value
        .iter()
        .enumerate()
        .map(|(j, e)| endpoint(e, &format!("{path}.endpoints[{j}]")))
        .collect::<Result<Vec<_>>>()?;

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
    let upstream = upstream(path, raw.connect_timeout, raw.idle_timeout)?;

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
        listen,
        upstream,
        routes,
    })
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
        let timeout = duration(raw.timeout, Route::DEFAULT_TIMEOUT);
        routes.push(Route {
            name,
            matches,
            timeout,
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

/// An address the proxy connects to: port 0 would never answer.
fn endpoint(node: &Spanned<raw::Addr>, path: &str) -> Result<SocketAddr> {
    let addr = node.value.0;
    if addr.port() == 0 {
        return Err(problem(
            node,
            path,
            format!("cannot connect to port 0 (`{addr}`)"),
        ));
    }
    Ok(addr)
}

fn duration(node: Field<raw::Dur>, default: Duration) -> Duration {
    node.map_or(default, |d| d.value.0)
}

/// A timeout where zero cannot mean "none": it would refuse every connection at once.
fn positive(node: Field<raw::Dur>, path: &str, default: Duration) -> Result<Duration> {
    match node {
        Some(d) if d.value.0.is_zero() => Err(problem(&d, path, "must be more than 0s")),
        Some(d) => Ok(d.value.0),
        None => Ok(default),
    }
}

fn count(
    node: Field<raw::Count>,
    path: &str,
    default: usize,
    range: RangeInclusive<u64>,
) -> Result<usize> {
    let Some(node) = node else { return Ok(default) };
    let n = node.value.0;
    if !range.contains(&n) {
        let message = if *range.end() == u64::MAX {
            format!("must be at least {}, found {n}", range.start())
        } else {
            format!(
                "must be between {} and {}, found {n}",
                range.start(),
                range.end()
            )
        };
        return Err(problem(&node, path, message));
    }
    usize::try_from(n).map_err(|_| problem(&node, path, format!("{n} is too large")))
}

/// `^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`, at most 63: a DNS label, and so a safe metric label.
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let inner_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= 63
        && inner_ok(&bytes[0])
        && inner_ok(&bytes[bytes.len() - 1])
        && bytes.iter().all(|b| inner_ok(b) || *b == b'-')
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Every socket the proxy will bind, in the order the file declares them.
#[derive(Default)]
struct Listeners(Vec<(String, SocketAddr, Option<Location>)>);

impl Listeners {
    /// Refuses `addr` if an earlier listener binds it too. The error points at the later one, or
    /// at the earlier one when the later is a default that is not in the file.
    fn add(&mut self, path: &str, addr: SocketAddr, at: Option<Location>) -> Result<()> {
        let Some((first, first_addr, first_at)) =
            self.0.iter().find(|(_, a, _)| overlaps(*a, addr))
        else {
            self.0.push((path.to_owned(), addr, at));
            return Ok(());
        };
        let (at, here, here_addr, there, there_addr, there_is_default) = match at {
            Some(_) => (
                at,
                path,
                addr,
                first.as_str(),
                *first_addr,
                first_at.is_none(),
            ),
            None => (*first_at, first.as_str(), *first_addr, path, addr, true),
        };
        let there = if there_is_default {
            format!("{there} (its default)")
        } else {
            there.to_owned()
        };
        let message = if here_addr == there_addr {
            format!("{here_addr} is already used by {there}")
        } else {
            format!(
                "{here_addr} overlaps {there} ({there_addr}): same port, and a wildcard address covers the other"
            )
        };
        Err(Problem {
            at,
            path: here.to_owned(),
            message,
        })
    }
}

/// Two binds that the kernel would refuse: the same address, or the same port where one side
/// is a wildcard that covers the other (`[::]` covers IPv4 too, on Linux by default). Port 0
/// asks the kernel for a free port, so never clashes.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    let covers = |x: SocketAddr, y: SocketAddr| {
        x.ip() == y.ip() || (x.ip().is_unspecified() && (x.is_ipv6() || y.is_ipv4()))
    };
    a.port() != 0 && a.port() == b.port() && (covers(a, b) || covers(b, a))
}
