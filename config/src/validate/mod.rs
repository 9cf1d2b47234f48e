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
    AccessLog, AdminListener, Config, ControlSettings, ControlTarget, DefaultPolicy, Downstream,
    Egress, IdentitySettings, InboundListener, Mesh, Mtls, OutboundListener, PortRange, Protocol,
    ProxySettings, ResolverConfig, Service, Upstream,
};
use crate::raw;

mod policy;
mod retry;
mod service;
mod traffic;

pub use service::is_service_name;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_discovery;
#[cfg(test)]
mod tests_retry;
#[cfg(test)]
mod tests_traffic;

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
    if proxy.control.is_some()
        && let Some(first) = root.services.as_ref().and_then(|s| s.first())
    {
        return Err(problem(
            first,
            "services",
            "`services` cannot be listed together with `proxy.control`: the control plane is \
             the one source of services",
        ));
    }
    let services = services(root.services, &mut listeners, Endpoints::Required)?;
    let policies = policy::policies(root.policies)?;
    Ok(Config {
        proxy,
        services,
        policies,
    })
}

/// Whether a service must say where its endpoints are.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Endpoints {
    /// A proxy's own file: `endpoints` or `dns`.
    Required,
    /// A mesh served by herd-control: neither means the control plane supplies them.
    Discovered,
}

/// Validates the services of a mesh served by herd-control. `proxy`, when given, is the
/// settings of the proxy that will run them: its listeners are taken, so a service listening
/// on one of them is refused. A `proxy:` key is refused: each proxy's settings are its own.
pub fn mesh(root: raw::Root, proxy: Option<&ProxySettings>) -> Result<Mesh> {
    if let Some(raw) = &root.proxy {
        return Err(Problem {
            at: None,
            path: "proxy".to_owned(),
            message: format!(
                "a mesh file holds `services` and `policies`; `proxy` settings ({}) belong in each proxy's own file",
                if raw.control.is_some() {
                    "with `control`"
                } else {
                    "listeners"
                }
            ),
        });
    }
    let mut listeners = Listeners::default();
    if let Some(proxy) = proxy {
        listeners.taken(proxy);
    }
    Ok(Mesh {
        services: services(root.services, &mut listeners, Endpoints::Discovered)?,
        policies: policy::policies(root.policies)?,
    })
}

fn services(
    raw: Option<Vec<Spanned<raw::Service>>>,
    listeners: &mut Listeners,
    endpoints: Endpoints,
) -> Result<Vec<Service>> {
    let mut services = Vec::new();
    let mut names: HashMap<String, (usize, u64)> = HashMap::new();
    let mut authorities: HashMap<Authority, Claim> = HashMap::new();
    let mut cluster_ips: HashMap<SocketAddr, Claim> = HashMap::new();
    for (i, raw) in raw.unwrap_or_default().into_iter().enumerate() {
        let path = format!("services[{i}]");
        let name = &raw.value.name;
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
        let service = service::service(
            raw,
            &path,
            &mut authorities,
            &mut cluster_ips,
            listeners,
            endpoints,
        )?;
        names.insert(service.name.clone(), (i, line));
        services.push(service);
    }
    Ok(services)
}

fn proxy(raw: Option<raw::Proxy>, listeners: &mut Listeners) -> Result<ProxySettings> {
    let defaults = ProxySettings::default();
    let Some(raw) = raw else {
        listeners.add("proxy.admin.listen", defaults.admin.listen, None)?;
        return Ok(defaults);
    };
    // `strict` refuses every client without a certificate, so it needs one of its own to offer.
    if raw.identity.is_none()
        && let Some(mtls) = raw.inbound.as_ref().and_then(|i| i.value.mtls.as_ref())
        && mtls.value.0 == Mtls::Strict
    {
        return Err(problem(
            mtls,
            "proxy.inbound.mtls",
            "`strict` needs `proxy.identity`: without a certificate the proxy can serve no \
             mutual-TLS client, and strict refuses every other",
        ));
    }
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
    let resolver = match raw.resolver {
        Some(raw) => resolver(raw)?,
        None => defaults.resolver,
    };
    let drain_timeout = duration(raw.drain_timeout, defaults.drain_timeout);
    let control = raw.control.map(control).transpose()?;
    let tunnel_idle_timeout = duration(raw.tunnel_idle_timeout, defaults.tunnel_idle_timeout);
    let identity = raw.identity.map(identity).transpose()?;
    Ok(ProxySettings {
        inbound,
        outbound,
        admin,
        resolver,
        drain_timeout,
        control,
        tunnel_idle_timeout,
        identity,
    })
}

fn control(node: Spanned<raw::Control>) -> Result<ControlSettings> {
    const PATH: &str = "proxy.control";
    let raw = node.value;
    let target = target(PATH, node.referenced, raw.addresses, raw.dns)?;
    let id = match raw.id {
        Some(id) => {
            let valid = !id.value.is_empty()
                && id.value.len() <= 253
                && id.value.bytes().all(|b| b.is_ascii_graphic());
            if !valid {
                return Err(problem(
                    &id,
                    format!("{PATH}.id"),
                    format!(
                        "invalid proxy id `{}`: use 1 to 253 printable characters without spaces",
                        id.value
                    ),
                ));
            }
            Some(id.value)
        }
        None => None,
    };
    let namespace = match raw.namespace {
        Some(ns) if !is_dns_label(&ns.value) => {
            return Err(problem(
                &ns,
                format!("{PATH}.namespace"),
                format!(
                    "invalid namespace `{}`: a Kubernetes namespace is a DNS label",
                    ns.value
                ),
            ));
        }
        Some(ns) => ns.value,
        None => String::new(),
    };
    Ok(ControlSettings {
        target,
        id,
        namespace,
        wait_for_state: raw.wait_for_state.is_none_or(|b| b.value.0),
        unwatch_after: positive(
            raw.unwatch_after,
            &format!("{PATH}.unwatchAfter"),
            ControlSettings::DEFAULT_UNWATCH_AFTER,
        )?,
    })
}

/// `addresses: [ip:port, ...]` or `dns: NAME:PORT`, exactly one, under `path`.
fn target(
    path: &str,
    at: serde_saphyr::Location,
    addresses: Field<Vec<Spanned<raw::Addr>>>,
    dns: Field<String>,
) -> Result<ControlTarget> {
    match (addresses, dns) {
        (Some(list), None) => {
            if list.value.is_empty() {
                return Err(problem(
                    &list,
                    format!("{path}.addresses"),
                    "must list at least one address",
                ));
            }
            let mut addrs: Vec<SocketAddr> = Vec::new();
            for (i, node) in list.value.iter().enumerate() {
                let at = format!("{path}.addresses[{i}]");
                let addr = endpoint(node, &at)?;
                if let Some(first) = addrs.iter().position(|a| *a == addr) {
                    return Err(problem(
                        node,
                        at,
                        format!("{addr} is already listed as {path}.addresses[{first}]"),
                    ));
                }
                addrs.push(addr);
            }
            Ok(ControlTarget::Addresses(addrs))
        }
        (None, Some(dns)) => {
            let (name, port) = service::dns_target(&dns.value)
                .map_err(|m| problem(&dns, format!("{path}.dns"), m))?;
            Ok(ControlTarget::Dns { name, port })
        }
        (Some(list), Some(dns)) => Err(problem(
            &dns,
            format!("{path}.dns"),
            format!(
                "`dns` and `addresses` (line {}) cannot both be given",
                list.referenced.line()
            ),
        )),
        (None, None) => Err(Problem {
            at: Some(at),
            path: path.to_owned(),
            message: "missing required key `addresses` (or `dns: NAME:PORT`)".to_owned(),
        }),
    }
}

fn identity(node: Spanned<raw::Identity>) -> Result<IdentitySettings> {
    const PATH: &str = "proxy.identity";
    let raw = node.value;
    let target = target(PATH, node.referenced, raw.addresses, raw.dns)?;
    let missing = |key: &str, what: &str| Problem {
        at: Some(node.referenced),
        path: PATH.to_owned(),
        message: format!("missing required key `{key}` ({what})"),
    };
    let id = raw.id.ok_or_else(|| {
        missing(
            "id",
            "the SPIFFE ID to ask for, spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT",
        )
    })?;
    match herd_identity::SpiffeId::parse(&id.value) {
        Err(e) => return Err(problem(&id, format!("{PATH}.id"), e.to_string())),
        // The identity service certifies workloads only, named by namespace and account.
        Ok(spiffe) if spiffe.namespace().is_none() || spiffe.service_account().is_none() => {
            return Err(problem(
                &id,
                format!("{PATH}.id"),
                format!(
                    "`{}` is not a workload identity: expected \
                     spiffe://TRUST-DOMAIN/ns/NAMESPACE/sa/ACCOUNT",
                    id.value
                ),
            ));
        }
        Ok(_) => {}
    }
    let token_file = raw
        .token_file
        .ok_or_else(|| missing("tokenFile", "the file holding the token that proves it"))?;
    if token_file.value.is_empty() {
        return Err(problem(
            &token_file,
            format!("{PATH}.tokenFile"),
            "must not be empty",
        ));
    }
    if let Some(anchors) = &raw.trust_anchors
        && anchors.value.is_empty()
    {
        return Err(problem(
            anchors,
            format!("{PATH}.trustAnchors"),
            "must not be empty",
        ));
    }
    if let Some(pem) = &raw.trust_anchors_pem {
        if let Some(file) = &raw.trust_anchors {
            return Err(problem(
                pem,
                format!("{PATH}.trustAnchorsPem"),
                format!(
                    "`trustAnchorsPem` and `trustAnchors` (line {}) cannot both be given",
                    file.referenced.line()
                ),
            ));
        }
        if let Err(e) = herd_identity::TrustBundle::from_pem(&pem.value) {
            return Err(problem(
                pem,
                format!("{PATH}.trustAnchorsPem"),
                format!("not a trust bundle: {e}"),
            ));
        }
    }
    let control_identity = match raw.control_identity {
        Some(given) => match herd_identity::SpiffeId::parse(&given.value) {
            Ok(parsed) => parsed.to_string(),
            Err(e) => {
                return Err(problem(
                    &given,
                    format!("{PATH}.controlIdentity"),
                    e.to_string(),
                ));
            }
        },
        None => {
            let trust_domain = herd_identity::SpiffeId::parse(&id.value)
                .map(|parsed| parsed.trust_domain().to_owned())
                .expect("checked above");
            herd_identity::SpiffeId::kubernetes(&trust_domain, "herd", "herd-control")
                .expect("a valid trust domain and fixed segments")
                .to_string()
        }
    };
    Ok(IdentitySettings {
        target,
        id: id.value,
        token_file: token_file.value,
        trust_anchors: raw.trust_anchors.map(|a| a.value),
        trust_anchors_pem: raw.trust_anchors_pem.map(|a| a.value),
        control_identity,
    })
}

fn resolver(raw: raw::Resolver) -> Result<ResolverConfig> {
    let mut nameservers: Vec<SocketAddr> = Vec::new();
    for (i, node) in raw.nameservers.unwrap_or_default().iter().enumerate() {
        let path = format!("proxy.resolver.nameservers[{i}]");
        let addr = endpoint(node, &path)?;
        if let Some(first) = nameservers.iter().position(|a| *a == addr) {
            return Err(problem(
                node,
                path,
                format!("{addr} is already listed as proxy.resolver.nameservers[{first}]"),
            ));
        }
        nameservers.push(addr);
    }
    Ok(ResolverConfig { nameservers })
}

fn inbound(node: Spanned<raw::Inbound>, listeners: &mut Listeners) -> Result<InboundListener> {
    const PATH: &str = "proxy.inbound";
    let at = node.referenced;
    let raw = node.value;
    listeners.add(
        "proxy.inbound.listen",
        raw.listen.value.0,
        Some(raw.listen.referenced),
    )?;
    let transparent = raw.transparent.is_some_and(|t| t.value.0);
    let app = match &raw.app {
        Some(node) => {
            let app = endpoint(node, "proxy.inbound.app")?;
            if overlaps(app, raw.listen.value.0) {
                return Err(problem(
                    node,
                    "proxy.inbound.app",
                    format!(
                        "{app} is proxy.inbound.listen ({}): every request would loop back into the proxy",
                        raw.listen.value.0
                    ),
                ));
            }
            Some(app)
        }
        None if transparent => None,
        None => {
            return Err(Problem {
                at: Some(at),
                path: PATH.to_owned(),
                message: "missing required key `app` (optional only with `transparent: true`, \
                          where connections go to their original destination)"
                    .to_owned(),
            });
        }
    };
    let downstream = downstream(
        PATH,
        raw.max_connections,
        raw.header_timeout,
        raw.max_header_bytes,
        raw.detect_timeout,
        raw.access_log,
        raw.request_id,
    )?;
    let upstream = upstream(PATH, raw.connect_timeout, raw.idle_timeout)?;
    let client_identity_header = match raw.client_identity_header {
        Some(name) => match http_header_name(&name.value) {
            Some(lower) => Some(lower),
            None => {
                return Err(problem(
                    &name,
                    format!("{PATH}.clientIdentityHeader"),
                    format!("`{}` is not an HTTP header name", name.value),
                ));
            }
        },
        None => None,
    };
    let mut opaque_ports: Vec<PortRange> = Vec::new();
    if let Some(list) = &raw.opaque_ports {
        for (i, node) in list.value.iter().enumerate() {
            let range = node.value.0;
            if let Some(first) = opaque_ports
                .iter()
                .position(|r| r.first <= range.last && range.first <= r.last)
            {
                return Err(problem(
                    node,
                    format!("{PATH}.opaquePorts[{i}]"),
                    format!("{range} overlaps {PATH}.opaquePorts[{first}]"),
                ));
            }
            opaque_ports.push(range);
        }
    }
    Ok(InboundListener {
        listen: raw.listen.value.0,
        app,
        transparent,
        protocol: raw.protocol.map_or(Protocol::Http, |p| p.value.0),
        downstream,
        upstream,
        timeout: duration(raw.timeout, InboundListener::DEFAULT_TIMEOUT),
        mtls: raw.mtls.map_or(Mtls::default(), |m| m.value.0),
        default_policy: raw
            .default_policy
            .map_or(DefaultPolicy::default(), |p| p.value.0),
        client_identity_header,
        opaque_ports,
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
        raw.access_log,
        raw.request_id,
    )?;
    Ok(OutboundListener {
        listen: raw.listen.value.0,
        transparent: raw.transparent.is_some_and(|t| t.value.0),
        egress: raw.egress.map_or(Egress::default(), |e| e.value.0),
        downstream,
    })
}

type Field<T> = Option<Spanned<T>>;

/// `name` lower-cased when it is a valid HTTP header name (RFC 9110 token characters).
fn http_header_name(name: &str) -> Option<String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    (!name.is_empty() && name.len() <= 64 && name.bytes().all(token))
        .then(|| name.to_ascii_lowercase())
}

fn downstream(
    path: &str,
    max_connections: Field<raw::Count>,
    header_timeout: Field<raw::Dur>,
    max_header_bytes: Field<raw::Count>,
    detect_timeout: Field<raw::Dur>,
    access_log: Option<raw::AccessLog>,
    request_id: Field<raw::Bool>,
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
        access_log: access_log.map(|a| AccessLog { format: a.format }),
        request_id: request_id.is_none_or(|b| b.value.0),
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

/// An address the proxy connects to: port 0 would never answer.
fn endpoint(node: &Spanned<raw::Addr>, path: &str) -> Result<SocketAddr> {
    connectable(node, node.value.0, path)
}

/// `addr`, read from `node`, unless it is port 0.
fn connectable<T>(node: &Spanned<T>, addr: SocketAddr, path: &str) -> Result<SocketAddr> {
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

/// `low <= high` for two durations either of which may be a default (`path` ends in the key).
/// The error points at the one written, the upper bound when both are.
fn not_above(
    (low_node, low, low_path): (&Field<raw::Dur>, Duration, &str),
    (high_node, high, high_path): (&Field<raw::Dur>, Duration, &str),
) -> Result<()> {
    if low <= high {
        return Ok(());
    }
    let key = |path: &'_ str| path.rsplit('.').next().unwrap_or(path).to_owned();
    let show = |d: Duration| humantime::format_duration(d).to_string();
    let default = |node: &Field<raw::Dur>| if node.is_none() { ", its default" } else { "" };
    match (high_node, low_node) {
        (Some(node), _) => Err(problem(
            node,
            high_path,
            format!(
                "must be at least {} ({}{}), found {}",
                key(low_path),
                show(low),
                default(low_node),
                show(high)
            ),
        )),
        (None, Some(node)) => Err(problem(
            node,
            low_path,
            format!(
                "must be at most {} ({}, its default), found {}",
                key(high_path),
                show(high),
                show(low)
            ),
        )),
        (None, None) => unreachable!("defaults are in order"),
    }
}

/// A whole number in `range`, which must fit `T`.
fn count<T: TryFrom<u64>>(
    node: Field<raw::Count>,
    path: &str,
    default: T,
    range: RangeInclusive<u64>,
) -> Result<T> {
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
    T::try_from(n).map_err(|_| problem(&node, path, format!("{n} is too large")))
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
    /// The listeners of a running proxy, which a mesh's services may not bind again.
    fn taken(&mut self, proxy: &ProxySettings) {
        let inbound = proxy
            .inbound
            .as_ref()
            .map(|i| ("proxy.inbound.listen", i.listen));
        let outbound = proxy
            .outbound
            .as_ref()
            .map(|o| ("proxy.outbound.listen", o.listen));
        let admin = Some(("proxy.admin.listen", proxy.admin.listen));
        for (path, addr) in [inbound, outbound, admin].into_iter().flatten() {
            self.0.push((format!("{path} (this proxy's)"), addr, None));
        }
    }

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
