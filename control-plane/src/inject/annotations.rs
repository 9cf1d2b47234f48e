//! The `herd.io/*` annotations the injector reads, and their values checked.
//!
//! A value herd cannot read (a port list with a typo, a CPU limit the API server would refuse)
//! is a reason not to inject rather than something to guess at: the pod is created without the
//! proxy and the warning names the annotation and the value.

use std::collections::BTreeMap;

use herd_config::PortRange;

/// `enabled` (inject) or `disabled` (do not), on a Pod, or on its Namespace (annotation or
/// label); the Pod's own wins.
pub const INJECT: &str = "herd.io/inject";
/// Ports whose inbound connections the proxy never sniffs (`proxy.inbound.opaquePorts`).
pub const OPAQUE_PORTS: &str = "herd.io/opaque-ports";
/// Inbound ports not redirected to the proxy at all (`herd-proxy init --skip-inbound-ports`).
pub const SKIP_INBOUND_PORTS: &str = "herd.io/skip-inbound-ports";
/// Outbound destination ports not redirected (`herd-proxy init --skip-outbound-ports`).
pub const SKIP_OUTBOUND_PORTS: &str = "herd.io/skip-outbound-ports";
/// The proxy container's CPU limit, a Kubernetes quantity (`500m`).
pub const PROXY_CPU_LIMIT: &str = "herd.io/proxy-cpu-limit";
/// The proxy container's memory limit, a Kubernetes quantity (`128Mi`).
pub const PROXY_MEMORY_LIMIT: &str = "herd.io/proxy-memory-limit";

/// What a Pod (or its Namespace) says about injection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    Enabled,
    Disabled,
}

impl Wanted {
    /// `enabled` or `disabled`; anything else is refused, quoting it.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim() {
            "enabled" => Ok(Wanted::Enabled),
            "disabled" => Ok(Wanted::Disabled),
            other => Err(format!(
                "{INJECT}: `{}` is neither `enabled` nor `disabled`",
                quote(other)
            )),
        }
    }
}

/// The annotations that shape what is injected, read and checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shape {
    pub opaque_ports: Vec<PortRange>,
    pub skip_inbound_ports: Vec<PortRange>,
    pub skip_outbound_ports: Vec<PortRange>,
    pub cpu_limit: Option<String>,
    pub memory_limit: Option<String>,
}

impl Shape {
    /// Reads the annotations; the first bad one is the error, naming it.
    pub fn read(annotations: &BTreeMap<String, String>) -> Result<Self, String> {
        let ports = |name: &str| match annotations.get(name) {
            Some(value) => port_list(value).map_err(|e| format!("{name}: {e}")),
            None => Ok(Vec::new()),
        };
        let quantity = |name: &str| match annotations.get(name) {
            Some(value) if is_quantity(value.trim()) => Ok(Some(value.trim().to_owned())),
            Some(value) => Err(format!(
                "{name}: `{}` is not a Kubernetes quantity (e.g. `500m`, `1`, `128Mi`)",
                quote(value)
            )),
            None => Ok(None),
        };
        Ok(Shape {
            opaque_ports: ports(OPAQUE_PORTS)?,
            skip_inbound_ports: ports(SKIP_INBOUND_PORTS)?,
            skip_outbound_ports: ports(SKIP_OUTBOUND_PORTS)?,
            cpu_limit: quantity(PROXY_CPU_LIMIT)?,
            memory_limit: quantity(PROXY_MEMORY_LIMIT)?,
        })
    }
}

/// `5432,6379, 8000-8010`: ports and ranges, comma-separated (spaces allowed); empty is none.
pub fn port_list(value: &str) -> Result<Vec<PortRange>, String> {
    let mut list = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let range = PortRange::parse(item).map_err(|e| {
            if item.chars().count() > 64 {
                format!("`{}` is not a port or a range of ports", quote(item))
            } else {
                e
            }
        })?;
        list.push(range);
    }
    Ok(list)
}

/// Ports and ranges as `herd-proxy init` takes them: `25,8000-8010`.
pub fn port_list_text(list: &[PortRange]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// A Kubernetes resource quantity the API server accepts, not negative: a decimal number
/// (`0.5`, `500`), optionally with a binary suffix (`Ki` ... `Ei`), a decimal one (`m`, `k`,
/// `M` ... `E`) or an exponent (`1e3`).
pub fn is_quantity(text: &str) -> bool {
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let valid_number = !number.is_empty()
        && number.matches('.').count() <= 1
        && number != "."
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if !valid_number {
        return false;
    }
    const SUFFIXES: [&str; 13] = [
        "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P",
    ];
    if SUFFIXES.contains(&suffix) || suffix == "E" {
        return true;
    }
    // An exponent: e or E, an optional sign, digits.
    let Some(exponent) = suffix.strip_prefix(['e', 'E']) else {
        return false;
    };
    let exponent = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    !exponent.is_empty() && exponent.bytes().all(|b| b.is_ascii_digit())
}

/// At most 64 characters of what a pod said, for a warning (a warning must stay short, and an
/// annotation can be long).
pub fn quote(text: &str) -> String {
    let mut quoted: String = text.chars().filter(|c| !c.is_control()).take(64).collect();
    if text.chars().count() > 64 {
        quoted.push_str("...");
    }
    quoted
}
