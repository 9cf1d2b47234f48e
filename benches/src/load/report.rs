//! The markdown the harness writes into `benches/RESULTS.md` (between marker lines) and prints.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::stats::{median, spread};
use crate::{Scenario, Target};

pub const BEGIN: &str = "<!-- load-harness:begin -->";
pub const END: &str = "<!-- load-harness:end -->";

/// One measurement: one target, one scenario, one round.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    pub round: usize,
    pub scenario: Scenario,
    pub target: Target,
    /// Named figures (`rps`, `p99_us`, `cpu_us_per_req`, `peak_rss_mib`, ...).
    pub metrics: BTreeMap<String, f64>,
    /// Failed requests and non-200 responses.
    pub errors: u64,
    /// What makes this measurement suspect: errors, failed sanity checks, a failed start.
    pub problems: Vec<String>,
    /// Informational: warnings the servers logged.
    pub notes: Vec<String>,
}

/// Everything the report's header says about the run.
pub struct Header {
    pub date: String,
    pub commit: String,
    pub machine: String,
    pub tools: Vec<String>,
    pub pinning: String,
    pub rounds: usize,
    pub duration: String,
    pub warmup: String,
    pub command: String,
    pub targets: Vec<Target>,
    /// Generated configuration files, by name, one instance each.
    pub configs: BTreeMap<String, String>,
}

/// Replaces what lies between the marker lines with `section`, keeping the rest of `file`; adds
/// the markers at the end when absent.
pub fn splice(file: &str, section: &str) -> String {
    let section = section.trim_end_matches('\n');
    if let Some(b) = file.find(BEGIN)
        && let Some(e) = file[b..].find(END).map(|e| b + e)
    {
        return format!("{}{BEGIN}\n{section}\n{}", &file[..b], &file[e..]);
    }
    let sep = if file.is_empty() || file.ends_with("\n\n") {
        ""
    } else if file.ends_with('\n') {
        "\n"
    } else {
        "\n\n"
    };
    format!("{file}{sep}{BEGIN}\n{section}\n{END}\n")
}

/// 12345.6 -> "12,346".
pub fn thousands(x: f64) -> String {
    let n = x.round() as i64;
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Three significant figures or so: 1234 -> "1,234", 56.78 -> "56.8", 1.234 -> "1.23".
pub fn sig(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        thousands(x)
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn opt(x: Option<f64>, f: fn(f64) -> String) -> String {
    x.map_or_else(|| "—".to_string(), f)
}

fn signed(x: f64) -> String {
    if x >= 0.0 {
        format!("+{}", sig(x))
    } else {
        sig(x)
    }
}

fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

struct Table<'a> {
    all: &'a [Measurement],
    scenario: Scenario,
}

impl Table<'_> {
    fn of(&self, target: Target) -> impl Iterator<Item = &Measurement> {
        self.all
            .iter()
            .filter(move |m| m.scenario == self.scenario && m.target == target)
    }

    fn values(&self, target: Target, metric: &str) -> Vec<f64> {
        self.of(target)
            .filter_map(|m| m.metrics.get(metric).copied())
            .collect()
    }

    fn median(&self, target: Target, metric: &str) -> Option<f64> {
        median(&self.values(target, metric))
    }

    /// CPU µs per request, then the user-space and kernel parts (each a median of its own).
    fn cpu(&self, target: Target) -> String {
        let part = |metric| opt(self.median(target, metric), sig);
        match self.median(target, "cpu_us_per_req") {
            None => "—".to_string(),
            Some(total) => format!(
                "{} ({} + {})",
                sig(total),
                part("user_us_per_req"),
                part("system_us_per_req")
            ),
        }
    }

    /// Median over rounds of (target − direct) in the same round.
    fn added(&self, target: Target, metric: &str) -> Option<f64> {
        if target == Target::Direct {
            return None;
        }
        let diffs: Vec<f64> = self
            .of(target)
            .filter_map(|m| self.over_direct(m, metric))
            .collect();
        median(&diffs)
    }

    /// `m`'s figure minus `direct`'s in the same round.
    fn over_direct(&self, m: &Measurement, metric: &str) -> Option<f64> {
        let direct = self.of(Target::Direct).find(|d| d.round == m.round)?;
        Some(m.metrics.get(metric)? - direct.metrics.get(metric)?)
    }

    /// Per round, `f(target's measurement, other's)` for the rounds both have.
    fn paired<T>(
        &self,
        target: Target,
        other: Target,
        f: impl Fn(&Measurement, &Measurement) -> Option<T>,
    ) -> Vec<T> {
        self.of(target)
            .filter_map(|m| f(m, self.of(other).find(|o| o.round == m.round)?))
            .collect()
    }

    /// `x× (k/n) / y× (k/n)`: the median over rounds of the target's figure divided by nginx's
    /// (HAProxy's) in the same round, and in how many of the n rounds the target's figure was the
    /// larger. Pairing by round cancels the machine's slow swings, which move every target of a
    /// round together; a ratio of two medians would not. The count shows how often, not only by
    /// how much.
    fn versus(&self, target: Target, metric: &str, targets: &[Target]) -> String {
        let against = |other: Target| {
            if !targets.contains(&other) {
                return None;
            }
            let ratios = self.paired(target, other, |m, o| {
                let (mine, theirs) = (*m.metrics.get(metric)?, *o.metrics.get(metric)?);
                (theirs != 0.0).then(|| mine / theirs)
            });
            let median = median(&ratios)?;
            Some(if target == other {
                ratio(median)
            } else {
                let above = ratios.iter().filter(|r| **r > 1.0).count();
                format!("{} ({above}/{})", ratio(median), ratios.len())
            })
        };
        match (against(Target::Nginx), against(Target::Haproxy)) {
            (None, None) => "—".into(),
            (a, b) => format!(
                "{} / {}",
                a.unwrap_or_else(|| "—".into()),
                b.unwrap_or_else(|| "—".into())
            ),
        }
    }

    /// A line saying, for each proxy, in how many rounds the latency it added (`metric` minus
    /// `direct`'s in the same round) was below nginx's.
    fn added_below_nginx(&self, out: &mut String, metric: &str, what: &str, targets: &[Target]) {
        let added = |m: &Measurement| self.over_direct(m, metric);
        let counts: Vec<String> = targets
            .iter()
            .filter(|&&x| x != Target::Direct && x != Target::Nginx)
            .filter_map(|&x| {
                let below = self.paired(x, Target::Nginx, |m, o| Some(added(m)? < added(o)?));
                (!below.is_empty()).then(|| {
                    let k = below.iter().filter(|b| **b).count();
                    format!("{} {k} of {}", x.name(), below.len())
                })
            })
            .collect();
        if !counts.is_empty() {
            let _ = writeln!(
                out,
                "- Rounds in which the {what} added was below nginx's: {}.",
                counts.join("; ")
            );
        }
    }

    fn label(&self, target: Target) -> String {
        let ms: Vec<&Measurement> = self.of(target).collect();
        if ms.iter().any(|m| !m.problems.is_empty()) {
            format!("{} ⚠", target.name())
        } else {
            target.name().to_string()
        }
    }

    fn noise(&self, out: &mut String, metric: &str, what: &str, targets: &[Target]) {
        let spreads: Vec<(Target, crate::stats::Spread)> = targets
            .iter()
            .filter_map(|&t| Some((t, spread(&self.values(t, metric))?)))
            .collect();
        if spreads.is_empty() {
            return;
        }
        if spreads.iter().all(|(_, s)| s.rounds < 2) {
            if !out.contains("- Noise: one round") {
                let _ = writeln!(out, "- Noise: one round only, so no spread across rounds.");
            }
            return;
        }
        let parts: Vec<String> = spreads
            .iter()
            .map(|(t, s)| {
                let pct = s.percent.map_or("—".into(), |p| format!("{p:.1} %"));
                format!("{} {pct} ({}–{})", t.name(), sig(s.min), sig(s.max))
            })
            .collect();
        let _ = writeln!(
            out,
            "- Noise, (max − min) / median of {what} across rounds (min–max): {}.",
            parts.join("; ")
        );
    }

    fn problems(&self, out: &mut String, targets: &[Target]) {
        for &t in targets {
            for m in self.of(t) {
                for p in &m.problems {
                    let _ = writeln!(out, "- ⚠ {} round {}: {p}", t.name(), m.round);
                }
                for n in &m.notes {
                    let _ = writeln!(out, "- note, {} round {}: {n}", t.name(), m.round);
                }
            }
        }
    }
}

/// For each proxy of `two-hops-mtls`, one line setting its mTLS two-hop figures against its own
/// plaintext `two-hops` and one plaintext hop (`latency`), when those ran: issue 14's target is
/// an mTLS two-hop p50 added of at most 2 × one plaintext hop's. Ratios of the medians.
fn mtls_comparison(out: &mut String, all: &[Measurement], targets: &[Target]) {
    let table = |scenario| Table { all, scenario };
    let (mtls, two, one) = (
        table(Scenario::TwoHopsMtls),
        table(Scenario::TwoHops),
        table(Scenario::Latency),
    );
    let versus = |mine: Option<f64>, theirs: Option<f64>, what: &str, fmt: fn(f64) -> String| {
        let theirs = theirs?;
        let ratio = mine
            .filter(|_| theirs > 0.0)
            .map_or("—".into(), |m| ratio(m / theirs));
        Some(format!("{ratio} {what} ({})", fmt(theirs)))
    };
    for &x in targets.iter().filter(|&&x| x != Target::Direct) {
        let added = mtls.added(x, "p50_us");
        let cpu = mtls.median(x, "cpu_us_per_req");
        if added.is_none() && cpu.is_none() {
            continue;
        }
        let mut p50 = vec![format!("p50 added {}", opt(added, signed))];
        p50.extend(versus(
            added,
            two.added(x, "p50_us"),
            "its plaintext two-hops",
            signed,
        ));
        p50.extend(versus(
            added,
            one.added(x, "p50_us"),
            "one plaintext hop",
            signed,
        ));
        let mut cpus = vec![format!("CPU/req {} µs", opt(cpu, sig))];
        let two_cpu = two.median(x, "cpu_us_per_req");
        cpus.extend(versus(cpu, two_cpu, "its plaintext two-hops", sig));
        cpus.extend(versus(
            cpu,
            one.median(x, "cpu_us_per_req"),
            "one plaintext hop",
            sig,
        ));
        let handshakes = mtls
            .median(x, "b_tls_handshakes")
            .map_or("handshakes B saw: not measured".to_string(), |n| {
                format!("handshakes B saw: {}", thousands(n))
            });
        let _ = writeln!(
            out,
            "- {} with mTLS: {}; {}; {handshakes}.",
            x.name(),
            p50.join(", "),
            cpus.join(", ")
        );
    }
    if all
        .iter()
        .any(|m| m.scenario == Scenario::Latency && m.target != Target::Direct)
    {
        let _ = writeln!(
            out,
            "- Target (issue 14): mTLS two-hop p50 added at most 2.00× one plaintext hop's; \
             ratios are of medians across rounds."
        );
    }
}

fn row(out: &mut String, cells: &[String]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
}

fn head(out: &mut String, cells: &[&str]) {
    let _ = writeln!(out, "| {} |", cells.join(" | "));
    let _ = writeln!(out, "|{}", " --- |".repeat(cells.len()));
}

/// The tables, one per scenario that has measurements.
pub fn tables(all: &[Measurement], targets: &[Target], idle_conns: usize) -> String {
    let mut out = String::new();
    for scenario in Scenario::ALL {
        if !all.iter().any(|m| m.scenario == scenario) {
            continue;
        }
        let t = Table { all, scenario };
        let targets: Vec<Target> = targets
            .iter()
            .copied()
            .filter(|&x| t.of(x).next().is_some())
            .collect();
        let _ = writeln!(
            out,
            "### {}\n\n{}\n",
            scenario.name(),
            scenario.describe(idle_conns)
        );
        match scenario {
            Scenario::Latency | Scenario::TwoHops | Scenario::TwoHopsMtls => {
                let both = if scenario.two_hops() { " (both)" } else { "" };
                let mtls = scenario == Scenario::TwoHopsMtls;
                let cpu_head = format!("CPU µs/req{both} (user + kernel)");
                let rss_head = format!("peak RSS MiB{both}");
                let mut cells = vec![
                    "target",
                    "p50 µs",
                    "p99 µs",
                    "p99.9 µs",
                    "added p50 µs",
                    "added p99 µs",
                    "added p99.9 µs",
                    &cpu_head,
                    &rss_head,
                    "CPU vs nginx / HAProxy",
                    "rps achieved",
                ];
                if mtls {
                    cells.push("TLS handshakes B saw");
                }
                head(&mut out, &cells);
                for &x in &targets {
                    let mut cells = vec![
                        t.label(x),
                        opt(t.median(x, "p50_us"), sig),
                        opt(t.median(x, "p99_us"), sig),
                        opt(t.median(x, "p999_us"), sig),
                        opt(t.added(x, "p50_us"), signed),
                        opt(t.added(x, "p99_us"), signed),
                        opt(t.added(x, "p999_us"), signed),
                        t.cpu(x),
                        opt(t.median(x, "peak_rss_mib"), sig),
                        t.versus(x, "cpu_us_per_req", &targets),
                        opt(t.median(x, "rps"), thousands),
                    ];
                    if mtls {
                        cells.push(opt(t.median(x, "b_tls_handshakes"), thousands));
                    }
                    row(&mut out, &cells);
                }
                out.push('\n');
                if mtls {
                    mtls_comparison(&mut out, all, &targets);
                }
                t.noise(&mut out, "p50_us", "p50 µs", &targets);
                t.noise(&mut out, "p99_us", "p99 µs", &targets);
                t.added_below_nginx(&mut out, "p50_us", "p50", &targets);
                t.added_below_nginx(&mut out, "p99_us", "p99", &targets);
                t.noise(&mut out, "cpu_us_per_req", "CPU µs/req", &targets);
            }
            Scenario::MaxRps | Scenario::H2 => {
                head(
                    &mut out,
                    &[
                        "target",
                        "rps",
                        "CPU µs/req (user + kernel)",
                        "peak RSS MiB",
                        "rps vs nginx / HAProxy",
                        "CPU vs nginx / HAProxy",
                        "user CPU vs nginx / HAProxy",
                    ],
                );
                for &x in &targets {
                    row(
                        &mut out,
                        &[
                            t.label(x),
                            opt(t.median(x, "rps"), thousands),
                            t.cpu(x),
                            opt(t.median(x, "peak_rss_mib"), sig),
                            t.versus(x, "rps", &targets),
                            t.versus(x, "cpu_us_per_req", &targets),
                            t.versus(x, "user_us_per_req", &targets),
                        ],
                    );
                }
                out.push('\n');
                t.noise(&mut out, "rps", "rps", &targets);
                t.noise(&mut out, "cpu_us_per_req", "CPU µs/req", &targets);
            }
            Scenario::Body64k => {
                head(
                    &mut out,
                    &[
                        "target",
                        "MB/s",
                        "rps",
                        "CPU µs/req (user + kernel)",
                        "peak RSS MiB",
                        "MB/s vs nginx / HAProxy",
                        "CPU vs nginx / HAProxy",
                    ],
                );
                for &x in &targets {
                    row(
                        &mut out,
                        &[
                            t.label(x),
                            opt(t.median(x, "mb_per_s"), thousands),
                            opt(t.median(x, "rps"), thousands),
                            t.cpu(x),
                            opt(t.median(x, "peak_rss_mib"), sig),
                            t.versus(x, "mb_per_s", &targets),
                            t.versus(x, "cpu_us_per_req", &targets),
                        ],
                    );
                }
                out.push('\n');
                t.noise(&mut out, "mb_per_s", "MB/s", &targets);
                t.noise(&mut out, "cpu_us_per_req", "CPU µs/req", &targets);
            }
            Scenario::Idle => {
                head(
                    &mut out,
                    &[
                        "target",
                        "RSS at start MiB",
                        &format!("RSS with {} idle conns MiB", thousands(idle_conns as f64)),
                        "KiB per conn",
                        "peak RSS MiB",
                        "RSS vs nginx / HAProxy",
                    ],
                );
                for &x in &targets {
                    row(
                        &mut out,
                        &[
                            t.label(x),
                            opt(t.median(x, "rss_start_mib"), sig),
                            opt(t.median(x, "rss_mib"), sig),
                            opt(t.median(x, "kib_per_conn"), sig),
                            opt(t.median(x, "peak_rss_mib"), sig),
                            t.versus(x, "rss_mib", &targets),
                        ],
                    );
                }
                out.push('\n');
                t.noise(&mut out, "rss_mib", "RSS with idle conns", &targets);
            }
        }
        let mut problems = String::new();
        t.problems(&mut problems, &targets);
        if !problems.is_empty() {
            let _ = write!(
                out,
                "\nProblems (⚠: the target's figures include these rounds) and the servers' \
                 warnings:\n\n{problems}"
            );
        }
        out.push('\n');
    }
    out
}

/// The whole section: header, tables, generated configurations.
pub fn section(header: &Header, all: &[Measurement], idle_conns: usize) -> String {
    let mut out = String::new();
    let h = header;
    let _ = writeln!(
        out,
        "## Loopback load: herd-proxy vs nginx vs HAProxy (`scripts/bench`)

Generated by `scripts/bench` (the `herd-load` binary, `benches/src/load/`); everything between the
`load-harness` markers is rewritten by each run.

- **Run:** {date}, commit `{commit}`.
- **Machine:** {machine}.
- **Tools:** {tools}.
- **Pinning:** {pinning}.
- **Method:** {rounds} round(s), targets interleaved within each round ({targets}),
  each measurement {duration} after a {warmup} warm-up at the same load, with the proxy under
  test restarted for every measurement (so its peak RSS is that scenario's). Figures are medians
  across rounds; “added” is the target's figure minus `direct`'s in the same round (median of
  those differences), and “vs nginx / HAProxy” the target's figure over theirs in the same round
  (median of those ratios), followed by (k/n): in k of the n rounds the target's figure was the
  larger. Pairing by round cancels the swings that move a whole round. CPU µs/req is utime + stime of the proxy's process tree (`/proc/PID/stat`)
  over the measured run ÷ responses, followed in brackets by the two parts (each its own median):
  user is the proxy's own code, kernel its system calls, including the loopback TCP work they
  carry for the peer on the other end; peak RSS is the tree's summed `VmHWM` at the end. Every
  response must be a 200 and byte counts must match the bodies, or the target is marked ⚠ and
  the problem listed under its table.
- **Command:** `{command}`
",
        date = h.date,
        commit = h.commit,
        machine = h.machine,
        tools = h.tools.join(", "),
        pinning = h.pinning,
        rounds = h.rounds,
        targets = h
            .targets
            .iter()
            .map(|t| format!("`{}`", t.name()))
            .collect::<Vec<_>>()
            .join(", "),
        duration = h.duration,
        warmup = h.warmup,
        command = h.command,
    );
    out.push_str(&tables(all, &h.targets, idle_conns));
    if !h.configs.is_empty() {
        let _ = writeln!(
            out,
            "### Generated configurations\n\nOne instance of each; ports and paths change with every \
             start. Proxy B of two-hops (`nginx-b`, `haproxy-b`, `herd-b`, not shown) has the \
             one-hop configuration in front of the app (nginx and HAProxy without their h2c \
             listener); proxy A (shown) forwards to B. two-hops-mtls shows both (`-a-mtls`, \
             `-b-mtls`).\n"
        );
        for (name, text) in &h.configs {
            if name.contains("-b.") {
                continue;
            }
            let _ = writeln!(
                out,
                "<details><summary><code>{name}</code></summary>\n\n```\n{}\n```\n\n</details>\n",
                text.trim_end()
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splices_between_markers_or_appends_them() {
        let file = format!("# Results\n\nintro\n\n{BEGIN}\nold\nstuff\n{END}\n\n## Later\n");
        let out = splice(&file, "new\n");
        assert_eq!(
            out,
            format!("# Results\n\nintro\n\n{BEGIN}\nnew\n{END}\n\n## Later\n")
        );
        assert_eq!(splice(&out, "new\n"), out);
        assert_eq!(
            splice("# Results\nlast line\n", "new"),
            format!("# Results\nlast line\n\n{BEGIN}\nnew\n{END}\n")
        );
        assert_eq!(splice("", "x"), format!("{BEGIN}\nx\n{END}\n"));
    }

    #[test]
    fn number_formats() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(-1234.0), "-1,234");
        assert_eq!(sig(56.78), "56.8");
        assert_eq!(sig(1.234), "1.23");
        assert_eq!(signed(12.34), "+12.3");
    }

    fn m(round: usize, target: Target, metrics: &[(&str, f64)]) -> Measurement {
        Measurement {
            round,
            scenario: Scenario::Latency,
            target,
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            errors: 0,
            problems: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn added_latency_is_the_median_of_same_round_differences() {
        let all = vec![
            m(1, Target::Direct, &[("p50_us", 100.0)]),
            m(1, Target::Herd, &[("p50_us", 150.0)]),
            m(2, Target::Direct, &[("p50_us", 200.0)]),
            m(2, Target::Herd, &[("p50_us", 220.0)]),
            m(3, Target::Direct, &[("p50_us", 100.0)]),
            m(3, Target::Herd, &[("p50_us", 130.0)]),
        ];
        let t = Table {
            all: &all,
            scenario: Scenario::Latency,
        };
        assert_eq!(t.added(Target::Herd, "p50_us"), Some(30.0));
        assert_eq!(t.added(Target::Direct, "p50_us"), None);
        assert_eq!(t.median(Target::Herd, "p50_us"), Some(150.0));
    }

    #[test]
    fn ratios_are_the_median_of_same_round_ratios() {
        // nginx has one slow round; herd is 0.8 × nginx in every round.
        let all = vec![
            m(1, Target::Herd, &[("rps", 80.0)]),
            m(1, Target::Nginx, &[("rps", 100.0)]),
            m(2, Target::Herd, &[("rps", 8.0)]),
            m(2, Target::Nginx, &[("rps", 10.0)]),
            m(3, Target::Herd, &[("rps", 160.0)]),
            m(3, Target::Nginx, &[("rps", 200.0)]),
        ];
        let t = Table {
            all: &all,
            scenario: Scenario::Latency,
        };
        let versus = t.versus(Target::Herd, "rps", &[Target::Herd, Target::Nginx]);
        assert_eq!(versus, format!("{} (0/3) / —", ratio(0.8)));
        let nginx = t.versus(Target::Nginx, "rps", &[Target::Herd, Target::Nginx]);
        assert_eq!(nginx, format!("{} / —", ratio(1.0)));
    }

    #[test]
    fn cpu_cells_give_the_total_then_user_and_kernel() {
        let all = vec![
            m(
                1,
                Target::Herd,
                &[
                    ("cpu_us_per_req", 30.0),
                    ("user_us_per_req", 12.0),
                    ("system_us_per_req", 18.0),
                ],
            ),
            m(
                2,
                Target::Herd,
                &[
                    ("cpu_us_per_req", 26.0),
                    ("user_us_per_req", 11.0),
                    ("system_us_per_req", 15.0),
                ],
            ),
            m(3, Target::Herd, &[("cpu_us_per_req", 28.0)]),
        ];
        let t = Table {
            all: &all,
            scenario: Scenario::Latency,
        };
        assert_eq!(t.cpu(Target::Herd), "28.0 (11.5 + 16.5)");
        assert_eq!(t.cpu(Target::Nginx), "—");
    }

    #[test]
    fn mtls_two_hops_set_against_plaintext_two_hops_and_one_hop() {
        let with = |scenario, mut m: Measurement| {
            m.scenario = scenario;
            m
        };
        let all = vec![
            m(1, Target::Direct, &[("p50_us", 100.0)]),
            m(
                1,
                Target::Herd,
                &[("p50_us", 130.0), ("cpu_us_per_req", 20.0)],
            ),
            with(
                Scenario::TwoHops,
                m(1, Target::Direct, &[("p50_us", 100.0)]),
            ),
            with(
                Scenario::TwoHops,
                m(
                    1,
                    Target::Herd,
                    &[("p50_us", 150.0), ("cpu_us_per_req", 40.0)],
                ),
            ),
            with(
                Scenario::TwoHopsMtls,
                m(1, Target::Direct, &[("p50_us", 100.0)]),
            ),
            with(
                Scenario::TwoHopsMtls,
                m(
                    1,
                    Target::Herd,
                    &[
                        ("p50_us", 160.0),
                        ("cpu_us_per_req", 50.0),
                        ("b_tls_handshakes", 1.0),
                    ],
                ),
            ),
            with(
                Scenario::TwoHopsMtls,
                m(
                    1,
                    Target::Nginx,
                    &[("p50_us", 190.0), ("cpu_us_per_req", 60.0)],
                ),
            ),
        ];
        let mut out = String::new();
        mtls_comparison(
            &mut out,
            &all,
            &[Target::Direct, Target::Herd, Target::Nginx],
        );
        assert_eq!(
            out,
            "- herd with mTLS: p50 added +60.0, 1.20× its plaintext two-hops (+50.0), 2.00× one \
             plaintext hop (+30.0); CPU/req 50.0 µs, 1.25× its plaintext two-hops (40.0), 2.50× \
             one plaintext hop (20.0); handshakes B saw: 1.\n\
             - nginx with mTLS: p50 added +90.0; CPU/req 60.0 µs; handshakes B saw: not measured.\n\
             - Target (issue 14): mTLS two-hop p50 added at most 2.00× one plaintext hop's; \
             ratios are of medians across rounds.\n"
        );
    }

    #[test]
    fn counts_the_rounds_a_proxy_added_less_latency_than_nginx() {
        let all = vec![
            m(1, Target::Direct, &[("p50_us", 100.0)]),
            m(1, Target::Herd, &[("p50_us", 150.0)]),
            m(1, Target::Nginx, &[("p50_us", 170.0)]),
            m(2, Target::Direct, &[("p50_us", 200.0)]),
            m(2, Target::Herd, &[("p50_us", 300.0)]),
            m(2, Target::Nginx, &[("p50_us", 260.0)]),
            // No direct figure in round 3: it does not count.
            m(3, Target::Herd, &[("p50_us", 100.0)]),
            m(3, Target::Nginx, &[("p50_us", 900.0)]),
        ];
        let t = Table {
            all: &all,
            scenario: Scenario::Latency,
        };
        let mut out = String::new();
        let targets = [Target::Direct, Target::Herd, Target::Nginx];
        t.added_below_nginx(&mut out, "p50_us", "p50", &targets);
        assert_eq!(
            out,
            "- Rounds in which the p50 added was below nginx's: herd 1 of 2.\n"
        );
    }
}
