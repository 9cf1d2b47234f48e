//! `policies:` and `proxy.inbound.defaultPolicy`.

use std::collections::HashMap;

use serde_saphyr::Spanned;

use super::{Problem, Result, problem};
use crate::model::{Allow, Policy};
use crate::raw;

/// Every policy of one file; names unique.
pub fn policies(raw: Option<Vec<Spanned<raw::Policy>>>) -> Result<Vec<Policy>> {
    let mut policies = Vec::new();
    let mut names: HashMap<String, (usize, u64)> = HashMap::new();
    for (i, node) in raw.unwrap_or_default().into_iter().enumerate() {
        let path = format!("policies[{i}]");
        let name = &node.value.name;
        if let Some((first, line)) = names.get(&name.value) {
            return Err(problem(
                name,
                format!("{path}.name"),
                format!(
                    "policy name `{}` is already used by policies[{first}] (line {line})",
                    name.value
                ),
            ));
        }
        names.insert(name.value.clone(), (i, name.referenced.line()));
        policies.push(policy(node, &path)?);
    }
    Ok(policies)
}

fn policy(node: Spanned<raw::Policy>, path: &str) -> Result<Policy> {
    let at = node.referenced;
    let raw = node.value;
    if !crate::validate::is_service_name(&raw.name.value) {
        return Err(problem(
            &raw.name,
            format!("{path}.name"),
            format!(
                "invalid policy name `{}`: use lowercase letters, digits, `-` and `.`",
                raw.name.value
            ),
        ));
    }
    if let Some(server) = &raw.server
        && let Err(e) = herd_identity::Matcher::parse(&server.value)
    {
        return Err(problem(server, format!("{path}.server"), e.to_string()));
    }
    let mut ports: Vec<u16> = Vec::new();
    for (i, port) in raw
        .ports
        .map(|p| p.value)
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let at = format!("{path}.ports[{i}]");
        let value = u16::try_from(port.value.0)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| {
                problem(
                    port,
                    &at,
                    format!("{} is not a port: 1 to 65535", port.value.0),
                )
            })?;
        if ports.contains(&value) {
            return Err(problem(port, at, format!("port {value} is listed twice")));
        }
        ports.push(value);
    }
    let Some(list) = raw.allow else {
        return Err(Problem {
            at: Some(at),
            path: path.to_owned(),
            message: "missing required key `allow` (SPIFFE IDs, networks, or `unauthenticated`)"
                .to_owned(),
        });
    };
    if list.value.is_empty() {
        return Err(problem(
            &list,
            format!("{path}.allow"),
            "must allow someone; to refuse everyone, leave the port to `defaultPolicy: deny`",
        ));
    }
    let mut allow = Vec::new();
    for (i, entry) in list.value.iter().enumerate() {
        let parsed = allowed(&entry.value)
            .map_err(|message| problem(entry, format!("{path}.allow[{i}]"), message))?;
        allow.push(parsed);
    }
    Ok(Policy {
        name: raw.name.value,
        server: raw.server.map(|s| s.value),
        ports,
        allow,
    })
}

/// One `allow` entry: `unauthenticated`, a SPIFFE ID pattern, or a network.
fn allowed(text: &str) -> std::result::Result<Allow, String> {
    if text == "unauthenticated" {
        return Ok(Allow::Unauthenticated);
    }
    if text.starts_with("spiffe://") {
        return herd_identity::Matcher::parse(text)
            .map(|_| Allow::Identity(text.to_owned()))
            .map_err(|e| e.to_string());
    }
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        if net.trunc() != net {
            return Err(format!(
                "`{text}` has bits set past its prefix length: did you mean `{}`?",
                net.trunc()
            ));
        }
        return Ok(Allow::Network(net));
    }
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(Allow::Network(ipnet::IpNet::from(ip)));
    }
    Err(format!(
        "`{text}` is not a SPIFFE ID (spiffe://…), a network (10.0.0.0/8, an address), or \
         `unauthenticated`"
    ))
}
