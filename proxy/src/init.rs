//! `herd-proxy init`: the iptables rules that make a pod's TCP go through its proxy.
//!
//! This is what the injected init container runs, once, before the app and the proxy start, with
//! CAP_NET_ADMIN in the pod's network namespace. It installs, in the `nat` table of iptables and
//! (unless `--no-ipv6`) ip6tables, two chains of herd's own and one jump to each:
//!
//! ```text
//! PREROUTING -p tcp -j HERD_INBOUND                 traffic arriving for the pod
//!   HERD_INBOUND -p tcp --dport ADMIN -j RETURN       the proxy's admin port (probes, metrics)
//!   HERD_INBOUND -p tcp --dport SKIPPED -j RETURN     each --skip-inbound-ports entry
//!   HERD_INBOUND -p tcp -j REDIRECT --to-ports 4143   everything else: the inbound listener
//! OUTPUT -p tcp -j HERD_OUTBOUND                    traffic the pod's processes open
//!   HERD_OUTBOUND -m owner --uid-owner UID -j RETURN  the proxy's own connections
//!   HERD_OUTBOUND -o lo -j RETURN                     the pod talking to itself
//!   HERD_OUTBOUND -p tcp --dport SKIPPED -j RETURN    each --skip-outbound-ports entry
//!   HERD_OUTBOUND -d CIDR -j RETURN                   each --skip-outbound-cidrs entry
//!   HERD_OUTBOUND -p tcp -j REDIRECT --to-ports 4140  everything else: the outbound listener
//! ```
//!
//! The proxy's uid is what keeps its own connections (to the app, to endpoints, to the control
//! plane) from being redirected back into it: the proxy must run as `--proxy-uid`.
//!
//! Why `iptables-restore` rather than one `iptables` command per rule: a table given to
//! `iptables-restore` is committed whole or not at all, so a failure leaves the pod's rules as
//! they were rather than half-installed (a pod whose outbound chain lost its uid exemption would
//! loop its proxy's connections into itself). `--noflush` keeps every other chain of the table
//! (the CNI's, a service mesh's before ours); declaring our chains flushes and refills just them,
//! so a second run installs the same rules again and changes nothing. The two jumps are added
//! only when `iptables -C` says they are absent. When iptables refuses the input it names a line;
//! the error names the rule on that line, so the failing pod's log says which rule and why.
//!
//! Which iptables (`--backend auto`, the default): a kernel has two rule sets, legacy
//! (`ip_tables`) and nf_tables, and rules in the wrong one are silently ignored by whoever reads
//! the other. Auto takes the one that already holds rules in the pod's network namespace
//! (counting `-A` lines of `iptables-legacy-save` and `iptables-nft-save`; more wins), which keeps
//! a second run, and a CNI's own rules, in the same set; when neither holds any (a fresh pod),
//! the variant the image's plain `iptables` is (`iptables --version` says `nf_tables` or
//! `legacy`); without a plain `iptables`, whichever variant is installed, nft first.

mod iptables;
mod rules;

use std::fmt;
use std::io::Write;
use std::net::IpAddr;

use ipnet::IpNet;

pub use iptables::{Backend, InitError};
pub use rules::{Family, Rules};

/// `herd-proxy init`'s flags.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// The proxy's inbound listener: where traffic for the pod is redirected.
    #[arg(long, value_name = "PORT", default_value_t = 4143, value_parser = port)]
    pub inbound_port: u16,
    /// The proxy's outbound listener: where the pod's own connections are redirected.
    #[arg(long, value_name = "PORT", default_value_t = 4140, value_parser = port)]
    pub outbound_port: u16,
    /// The proxy's admin port: never redirected inbound (probes and scrapes reach it as they are).
    #[arg(long, value_name = "PORT", default_value_t = 4191, value_parser = port)]
    pub admin_port: u16,
    /// The uid the proxy runs as: its connections are never redirected.
    #[arg(long, value_name = "UID", default_value_t = 2102)]
    pub proxy_uid: u32,
    /// Inbound ports left alone (comma-separated ports or ranges `A-B`, e.g. `22,8000-8100`).
    #[arg(long, value_name = "LIST", default_value = "", value_parser = ports)]
    pub skip_inbound_ports: PortList,
    /// Outbound destination ports left alone (comma-separated ports or ranges `A-B`).
    #[arg(long, value_name = "LIST", default_value = "", value_parser = ports)]
    pub skip_outbound_ports: PortList,
    /// Outbound destinations left alone (comma-separated CIDRs, IPv4 and IPv6, or addresses).
    #[arg(long, value_name = "LIST", default_value = "", value_parser = cidrs)]
    pub skip_outbound_cidrs: CidrList,
    /// Which iptables to use: `legacy`, `nft`, or `auto` (the one the namespace already has rules
    /// in, else the variant the plain `iptables` is).
    #[arg(long, value_name = "auto|nft|legacy", default_value = "auto")]
    pub backend: Backend,
    /// IPv4 only: leave ip6tables alone (for kernels or images without IPv6).
    #[arg(long)]
    pub no_ipv6: bool,
    /// Print the rules that would be applied, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// Ports and port ranges, inclusive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<(u16, u16)>);

/// Networks, as written (an address alone is its /32 or /128).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<IpNet>);

fn port(text: &str) -> Result<u16, String> {
    match text.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("expected a port from 1 to 65535, got {text:?}")),
    }
}

/// `22,8000-8100`: ports and inclusive ranges, comma-separated; empty is none.
pub fn ports(text: &str) -> Result<PortList, String> {
    let mut list = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let range = match item.split_once('-') {
            Some((low, high)) => (port(low)?, port(high)?),
            None => (port(item)?, port(item)?),
        };
        if range.0 > range.1 {
            return Err(format!("range {item:?} ends before it starts"));
        }
        list.push(range);
    }
    Ok(PortList(list))
}

/// `10.0.0.0/8,fd00::/8,169.254.169.254`: networks, comma-separated; empty is none.
pub fn cidrs(text: &str) -> Result<CidrList, String> {
    let mut list = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let net = match item.parse::<IpNet>() {
            Ok(net) => net.trunc(),
            Err(_) => match item.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return Err(format!("expected a CIDR such as 10.0.0.0/8, got {item:?}")),
            },
        };
        list.push(net);
    }
    Ok(CidrList(list))
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Installs the rules (or, with `--dry-run`, prints them) for each family; reports on `out`.
pub fn run(options: &Options, out: &mut dyn Write) -> Result<(), InitError> {
    let backend = iptables::resolve(options.backend)?;
    let families: &[Family] = if options.no_ipv6 {
        &[Family::V4]
    } else {
        &[Family::V4, Family::V6]
    };
    for &family in families {
        let rules = Rules::new(options, family);
        let tools = iptables::Tools::find(backend, family)?;
        let missing = tools.missing_jumps(&rules)?;
        let input = rules.restore_input(&missing);
        if options.dry_run {
            let _ = writeln!(
                out,
                "# {family}, backend {backend}: `{} --noflush` would be given:\n{input}",
                tools.restore_name()
            );
            continue;
        }
        tools.restore(&input)?;
        let jumps = if missing.is_empty() {
            "jumps already in place".to_owned()
        } else {
            format!("{} jump(s) added", missing.len())
        };
        let _ = writeln!(
            out,
            "herd-proxy init: {family} nat rules installed with {} ({jumps}): inbound to :{}, \
             outbound to :{}, uid {} exempt",
            tools.restore_name(),
            options.inbound_port,
            options.outbound_port,
            options.proxy_uid
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
