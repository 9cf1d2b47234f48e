//! The rules themselves, as `iptables-restore` input: pure text, built from the options.

use super::Options;

/// The chain traffic arriving for the pod goes through (from `PREROUTING`).
pub const INBOUND_CHAIN: &str = "HERD_INBOUND";
/// The chain connections the pod opens go through (from `OUTPUT`).
pub const OUTBOUND_CHAIN: &str = "HERD_OUTBOUND";

/// iptables (IPv4) or ip6tables (IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// One family's nat rules: herd's two chains and the jumps into them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    /// `-A CHAIN ...` lines of herd's chains, in order.
    pub chain_rules: Vec<String>,
    /// The jumps from the built-in chains, each as its arguments after `-A`/`-C`
    /// (`PREROUTING -p tcp -j HERD_INBOUND`).
    pub jumps: Vec<Vec<String>>,
}

impl Rules {
    pub fn new(options: &Options, family: Family) -> Rules {
        let mut chain_rules = Vec::new();
        let inbound = |rule: &str| format!("-A {INBOUND_CHAIN} {rule}");
        let outbound = |rule: &str| format!("-A {OUTBOUND_CHAIN} {rule}");
        let dport = |(low, high): (u16, u16)| {
            if low == high {
                format!("--dport {low}")
            } else {
                format!("--dport {low}:{high}")
            }
        };

        chain_rules.push(inbound(&format!(
            "-p tcp --dport {} -j RETURN",
            options.admin_port
        )));
        for &range in &options.skip_inbound_ports.0 {
            chain_rules.push(inbound(&format!("-p tcp {} -j RETURN", dport(range))));
        }
        chain_rules.push(inbound(&format!(
            "-p tcp -j REDIRECT --to-ports {}",
            options.inbound_port
        )));

        chain_rules.push(outbound(&format!(
            "-m owner --uid-owner {} -j RETURN",
            options.proxy_uid
        )));
        chain_rules.push(outbound("-o lo -j RETURN"));
        for &range in &options.skip_outbound_ports.0 {
            chain_rules.push(outbound(&format!("-p tcp {} -j RETURN", dport(range))));
        }
        for net in &options.skip_outbound_cidrs.0 {
            let ours = match family {
                Family::V4 => net.addr().is_ipv4(),
                Family::V6 => net.addr().is_ipv6(),
            };
            if ours {
                chain_rules.push(outbound(&format!("-d {net} -j RETURN")));
            }
        }
        chain_rules.push(outbound(&format!(
            "-p tcp -j REDIRECT --to-ports {}",
            options.outbound_port
        )));

        let jump = |from: &str, to: &str| [from, "-p", "tcp", "-j", to].map(str::to_owned).to_vec();
        Rules {
            chain_rules,
            jumps: vec![
                jump("PREROUTING", INBOUND_CHAIN),
                jump("OUTPUT", OUTBOUND_CHAIN),
            ],
        }
    }

    /// The `iptables-restore --noflush` input: the `nat` table, herd's chains declared (which
    /// flushes them if they exist) and filled, and the jumps in `missing` (indices into
    /// [`Rules::jumps`]) appended.
    pub fn restore_input(&self, missing: &[usize]) -> String {
        let mut text = String::from("*nat\n");
        for chain in [INBOUND_CHAIN, OUTBOUND_CHAIN] {
            text.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for rule in &self.chain_rules {
            text.push_str(rule);
            text.push('\n');
        }
        for &i in missing {
            text.push_str("-A ");
            text.push_str(&self.jumps[i].join(" "));
            text.push('\n');
        }
        text.push_str("COMMIT\n");
        text
    }
}

/// Line `line` (1-based) of `input`: what iptables-restore names when it fails.
pub fn line_at(input: &str, line: usize) -> Option<&str> {
    input.lines().nth(line.checked_sub(1)?)
}
