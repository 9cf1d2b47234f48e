//! The results: raw JSON, and the markdown section `scripts/bench-control` writes between the
//! `control-load` markers of `benches/RESULTS.md` (and prints).

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::fleet::Count;
use crate::procfs::Memory;
use crate::stats::{Quantiles, median, range};

pub const BEGIN: &str = "<!-- control-load:begin -->";
pub const END: &str = "<!-- control-load:end -->";

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub date: String,
    pub commit: String,
    pub machine: String,
    pub load_average: String,
    pub command: String,
    /// What herd-control build was measured, when it is not the commit's (`--label`).
    pub label: Option<String>,
    pub proxies: usize,
    pub services: usize,
    pub endpoints: usize,
    pub watches: usize,
    pub startup: Option<Startup>,
    pub sync: Option<Sync>,
    pub idle_cpu_per_second: Option<f64>,
    pub changes: Vec<ChangeResult>,
    pub rolling: Option<Rolling>,
    pub restart: Option<Restart>,
    pub end: Option<End>,
    pub routing_change: Option<RoutingChange>,
    pub machine_use: Option<MachineUse>,
    /// The phase that failed, and why.
    pub failure: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Startup {
    pub ready_seconds: f64,
    pub cpu_seconds: f64,
    pub memory: Memory,
}

#[derive(Debug, Serialize)]
pub struct Sync {
    pub synced: usize,
    pub seconds: f64,
    pub per_proxy: Option<Quantiles>,
    pub server_cpu: f64,
    pub load_cpu: f64,
    pub routing_sent: f64,
    pub endpoints_sent: f64,
    pub routing_received: u64,
    pub routing_bytes: u64,
    pub sets_received: u64,
    pub endpoint_bytes: u64,
    pub memory: Memory,
    pub sampled_peak_rss: u64,
    pub connect_failures: u64,
    pub load_memory: Memory,
    /// Connections refused at a full accept queue meanwhile (machine-wide).
    pub listen_overflows: Option<u64>,
    /// Why the sync stopped before every proxy had synced, if it did.
    pub stopped: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct ChangeResult {
    pub change: String,
    pub reached: usize,
    pub expected: usize,
    pub latency: Option<Quantiles>,
    pub all_seconds: f64,
    pub server_cpu_raw: f64,
    pub server_cpu: f64,
    pub window: f64,
    pub delivered: f64,
    pub received: u64,
    pub full_sets: u64,
    pub wrong: usize,
    pub versions_held: usize,
    pub load_cpu: f64,
}

#[derive(Debug, Serialize)]
pub struct Rolling {
    pub service: String,
    pub subscribers: usize,
    pub steps: usize,
    pub rate: f64,
    pub writing_seconds: f64,
    pub all_seconds: f64,
    pub per_update: Option<Quantiles>,
    pub last_per_step: Option<Quantiles>,
    pub missing: usize,
    pub complete: usize,
    pub versions_made: f64,
    pub updates_received: usize,
    pub delivered: f64,
    pub server_cpu_raw: f64,
    pub server_cpu: f64,
    pub window: f64,
    pub load_cpu: f64,
}

#[derive(Debug, Serialize)]
pub struct Restart {
    pub memory_before: Memory,
    pub start_seconds: f64,
    pub ready_seconds: Option<f64>,
    pub all_reopened_seconds: Option<f64>,
    pub server_counts_seconds: Option<f64>,
    pub reopened: usize,
    pub expected: usize,
    pub reopen: Option<Quantiles>,
    pub server_proxies: Option<f64>,
    pub server_watches: Option<f64>,
    pub watches_expected: usize,
    pub received: Count,
    pub held_changed: usize,
    /// Connections refused at a full accept queue meanwhile (machine-wide).
    pub listen_overflows: Option<u64>,
    pub server_cpu: f64,
    pub memory: Memory,
    pub load_cpu: f64,
}

#[derive(Debug, Serialize)]
pub struct End {
    pub last_change: ChangeResult,
    pub received_last_change: usize,
    pub client_open: usize,
    pub kernel_established: usize,
    pub server_proxies: f64,
    pub server_watches: f64,
    pub sessions: u64,
    pub session_ends: u64,
    pub connect_failures: u64,
    pub nacks: u64,
    pub server_memory: Memory,
    pub load_memory: Memory,
}

/// Where the machine's CPU went during the run: other work on the cores skews every figure.
#[derive(Debug, Serialize)]
pub struct MachineUse {
    pub seconds: f64,
    pub server_cpu: f64,
    pub load_cpu: f64,
    /// Busy time of the machine that was neither herd-control nor the load tool.
    pub others_cpu: f64,
    pub steal: f64,
}

#[derive(Debug, Serialize)]
pub struct RoutingChange {
    pub reached: usize,
    pub expected: usize,
    pub latency: Option<Quantiles>,
    pub all_seconds: f64,
    pub document_bytes: u64,
    pub delivered: f64,
    pub server_cpu: f64,
    pub server_rss_before: u64,
    pub server_rss_peak: u64,
    /// The server was killed for going above `max_rss`, at this RSS.
    pub killed_at_rss: Option<u64>,
    pub max_rss: u64,
    pub load_rss_peak: u64,
    pub load_cpu: f64,
}

pub fn write_raw(dir: &Path, results: &Results) -> Result<std::path::PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("control-load-{}.json", results.proxies));
    fs::write(&path, serde_json::to_string_pretty(results)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Replaces what lies between the marker lines of `file` with `section`, or appends both.
pub fn splice(file: &str, section: &str) -> String {
    let block = format!("{BEGIN}\n{}\n{END}", section.trim_end());
    match (file.find(BEGIN), file.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{block}{}", &file[..b], &file[e + END.len()..])
        }
        _ => format!("{}\n\n{block}\n", file.trim_end()),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn s(seconds: f64) -> String {
    if seconds < 0.1 {
        format!("{:.1} ms", seconds * 1e3)
    } else {
        format!("{seconds:.2} s")
    }
}

fn q(q: Option<Quantiles>) -> String {
    q.map_or_else(
        || "—".into(),
        |q| format!("{} / {} / {}", s(q.p50), s(q.p99), s(q.max)),
    )
}

fn opt_s(v: Option<f64>) -> String {
    v.map_or_else(|| "not reached".into(), s)
}

pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Median over the changes of one of their figures, with its range.
fn across(changes: &[&ChangeResult], f: impl Fn(&ChangeResult) -> Option<f64>) -> String {
    let v: Vec<f64> = changes.iter().filter_map(|c| f(c)).collect();
    match (median(&v), range(&v)) {
        (Some(m), Some((lo, hi))) => format!("{} ({}–{})", s(m), s(lo), s(hi)),
        _ => "—".into(),
    }
}

/// The markdown section.
pub fn render(r: &Results) -> String {
    let n = thousands(r.proxies);
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## Control plane (herd-control): a fleet of simulated proxies (`scripts/bench-control`)\n\n\
         Generated by `scripts/bench-control` (the `herd-control-load` binary, `benches/src/control/`); \
         everything between the `control-load` markers is rewritten by each run.\n"
    );
    let _ = writeln!(o, "- **Run:** {}, commit `{}`.", r.date, r.commit);
    if let Some(label) = &r.label {
        let _ = writeln!(o, "- **herd-control measured:** {label}");
    }
    let _ = writeln!(
        o,
        "- **Machine:** {}; 1-minute load average {} when the run started. herd-control and the \
         load tool share the cores (no pinning), as in go-control-plane's measurement.",
        r.machine, r.load_average
    );
    let _ = writeln!(
        o,
        "- **Shape:** {n} simulated proxies, each on its own TCP connection with a Routing and an \
         Endpoints stream; {} services × {} static endpoints in {} mesh files, plus `shared` ({} \
         endpoints) in a file of its own; each proxy watches {} services (`shared` and {} drawn at \
         random) and answers every update with a verdict.",
        thousands(r.services),
        r.endpoints,
        r.services.div_ceil(crate::plan::PER_FILE),
        r.endpoints,
        r.watches,
        r.watches.saturating_sub(1),
    );
    if let Some(m) = &r.machine_use {
        let _ = writeln!(
            o,
            "- **CPU during the run** ({:.0} s): herd-control {:.1} s, the load tool {:.1} s, other processes {:.1} s; steal (the host keeping the virtual CPUs waiting) {:.1} s.",
            m.seconds, m.server_cpu, m.load_cpu, m.others_cpu, m.steal
        );
    }
    let _ = writeln!(o, "- **Command:** `{}`", r.command);
    if let Some(f) = &r.failure {
        let _ = writeln!(o, "- **Failed:** {f}");
    }
    let _ = writeln!(o);

    let counted: Vec<&ChangeResult> = r.changes.iter().collect();
    let _ = writeln!(
        o,
        "| figure | herd-control | issue 13's target | go-control-plane (DESIGN.md) |\n| --- | --- | --- | --- |"
    );
    if let Some(sync) = &r.sync {
        let _ = writeln!(
            o,
            "| first sync: all {n} hold routing and their {} sets | {} ({} of {n}); per proxy p50 / p99 / max {}; server CPU {:.1} s, load tool {:.1} s | — | — |",
            r.watches,
            s(sync.seconds),
            thousands(sync.synced),
            q(sync.per_proxy),
            sync.server_cpu,
            sync.load_cpu,
        );
    }
    if !counted.is_empty() {
        let reached: usize = counted.iter().map(|c| c.reached).sum();
        let expected: usize = counted.iter().map(|c| c.expected).sum();
        let _ = writeln!(
            o,
            "| a change to `shared` (an endpoint added or removed in its file) until each proxy has it: first / p50 / p99 / max over proxies, median of {} changes (range) | first {}; p50 {}; **p99 {}**; max {}; {} of {} deliveries | p99 < 1 s | p99 0.67–1.0 s |",
            counted.len(),
            across(&counted, |c| c.latency.map(|q| q.min)),
            across(&counted, |c| c.latency.map(|q| q.p50)),
            across(&counted, |c| c.latency.map(|q| q.p99)),
            across(&counted, |c| c.latency.map(|q| q.max)),
            thousands(reached),
            thousands(expected),
        );
        let cpu: Vec<f64> = counted.iter().map(|c| c.server_cpu).collect();
        let per: Vec<f64> = counted
            .iter()
            .filter(|c| c.delivered > 0.0)
            .map(|c| c.server_cpu / c.delivered * 1e6)
            .collect();
        let load: Vec<f64> = counted.iter().map(|c| c.load_cpu).collect();
        let _ = writeln!(
            o,
            "| server CPU per change (net of idle), and per delivered update | {:.2} s ({:.2}–{:.2}); {:.0} µs per update; load tool {:.2} s per change | — | 0.8–1.0 s; 82–103 µs |",
            median(&cpu).unwrap_or(0.0),
            range(&cpu).map_or(0.0, |x| x.0),
            range(&cpu).map_or(0.0, |x| x.1),
            median(&per).unwrap_or(0.0),
            median(&load).unwrap_or(0.0),
        );
    }
    if let Some(roll) = &r.rolling {
        let _ = writeln!(
            o,
            "| rolling update of `{}` ({} subscribers): {} steps at {}/s, each replacing one endpoint; step → subscriber p50 / p99 / max | {} ({} of {} step deliveries; {} versions made of {} writes) | p99 < 1 s | — |",
            roll.service,
            roll.subscribers,
            roll.steps,
            roll.rate,
            q(roll.per_update),
            thousands(roll.steps * roll.subscribers - roll.missing),
            thousands(roll.steps * roll.subscribers),
            roll.versions_made,
            roll.steps,
        );
        let _ = writeln!(
            o,
            "| … until its last subscriber has each step: p50 / p99 / max over steps | {}; server CPU {:.2} s for the update, load tool {:.2} s | — | — |",
            q(roll.last_per_step),
            roll.server_cpu,
            roll.load_cpu,
        );
    }
    if let Some(rc) = &r.routing_change {
        let outcome = match rc.killed_at_rss {
            Some(rss) => format!(
                "**server killed at {} RSS** (the run's cap, {}, as a container limit would), {} of {n} had it",
                mib(rss),
                mib(rc.max_rss),
                thousands(rc.reached)
            ),
            None => format!(
                "{} ({} of {n}); server RSS {} → peak {} (sampled every 20 ms), CPU {:.2} s",
                q(rc.latency),
                thousands(rc.reached),
                mib(rc.server_rss_before),
                mib(rc.server_rss_peak),
                rc.server_cpu,
            ),
        };
        let _ = writeln!(
            o,
            "| a routing change (a setting of `shared`): the {} KiB routing document to every proxy; p50 / p99 / max | {outcome}; load tool peak RSS {} | p99 < 1 s, RSS < 1 GiB | — |",
            rc.document_bytes / 1024,
            mib(rc.load_rss_peak),
        );
    }
    let peak = [
        r.sync
            .as_ref()
            .map(|s| s.memory.hwm.max(s.sampled_peak_rss)),
        r.restart.as_ref().map(|x| x.memory_before.hwm),
        r.restart.as_ref().map(|x| x.memory.hwm),
    ]
    .into_iter()
    .flatten()
    .max();
    if let Some(peak) = peak {
        let steady = r.end.as_ref().map(|e| e.server_memory.rss);
        let _ = writeln!(
            o,
            "| server peak RSS (`VmHWM`) | **{}**{}{} | < 1 GiB | 827 MiB |",
            mib(peak),
            r.startup.as_ref().map_or(String::new(), |s| format!(
                "; {} before any proxy",
                mib(s.memory.rss)
            )),
            steady.map_or(String::new(), |x| format!("; {} at the end", mib(x))),
        );
    }
    if let Some(x) = &r.restart {
        let _ = writeln!(
            o,
            "| `kill -9` and restart on the same port: until all {n} have both streams open again (per proxy p50 / p99 / max) | **{}** ({}); {} of {n}; {} connections refused at the full accept queue (their SYNs sent again after 1 s, 3 s) | < 30 s | 4.0–5.7 s |",
            opt_s(x.all_reopened_seconds),
            q(x.reopen),
            thousands(x.reopened),
            x.listen_overflows
                .map_or_else(|| "?".into(), |o| thousands(o as usize)),
        );
        let _ = writeln!(
            o,
            "| … until the server counts {n} proxies and {} watches (`/metrics`); `/ready` | {}; `/ready` at {} | — | — |",
            thousands(x.watches_expected),
            opt_s(x.server_counts_seconds),
            opt_s(x.ready_seconds),
        );
        let _ = writeln!(
            o,
            "| … sent again to proxies that held current versions | {} routing updates, {} full sets, {} deltas ({} marked `unknown`); {} proxies' versions changed | 0 | — |",
            thousands(x.received.routing as usize),
            thousands(x.received.full as usize),
            thousands(x.received.deltas as usize),
            thousands(x.received.unknown as usize),
            thousands(x.held_changed),
        );
    }
    if let Some(e) = &r.end {
        let _ = writeln!(
            o,
            "| live at the end: proxies that received a last change; streams open (load tool); connections ESTABLISHED (kernel); proxies the server counts | {} of {n}; {}; {}; {} | {n} | up to 977 of 10,000 lost with grpc-go's keep-alive defaults |",
            thousands(e.received_last_change),
            thousands(e.client_open),
            thousands(e.kernel_established),
            thousands(e.server_proxies as usize),
        );
        let _ = writeln!(
            o,
            "| load tool: peak RSS; sessions opened, ended, failed connects; refusals sent | {}; {}, {}, {}; {} | — | — |",
            mib(e.load_memory.hwm),
            thousands(e.sessions as usize),
            thousands(e.session_ends as usize),
            thousands(e.connect_failures as usize),
            thousands(e.nacks as usize),
        );
    }
    let _ = writeln!(o);

    if let Some(sync) = &r.sync {
        let _ = writeln!(
            o,
            "First sync: the proxies received {} routing updates ({} of routing document in all, {} each) and {} endpoint sets ({} of endpoints); herd-control was ready {} after start ({:.1} s CPU, {} RSS), {} connection attempts failed on the way, and the load tool's RSS was {} at the end of it.\n",
            thousands(sync.routing_received as usize),
            mib(sync.routing_bytes),
            match sync.routing_received {
                0 => "—".into(),
                n => format!("{:.0} KiB", sync.routing_bytes as f64 / n as f64 / 1024.0),
            },
            thousands(sync.sets_received as usize),
            mib(sync.endpoint_bytes),
            r.startup
                .as_ref()
                .map_or("—".into(), |x| s(x.ready_seconds)),
            r.startup.as_ref().map_or(0.0, |s| s.cpu_seconds),
            r.startup.as_ref().map_or("—".into(), |s| mib(s.memory.rss)),
            thousands(sync.connect_failures as usize),
            mib(sync.load_memory.rss),
        );
    }
    if !r.changes.is_empty() {
        let _ = writeln!(
            o,
            "Each change to `shared` (idle server CPU {:.3} s per second subtracted):\n\n\
             | # | change | reached | p50 | p99 | max | server CPU (raw) | delivered | µs per update | load tool CPU |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            r.idle_cpu_per_second.unwrap_or(0.0)
        );
        let last = r.end.as_ref().map(|e| &e.last_change);
        for (i, c) in r.changes.iter().chain(last).enumerate() {
            let label = if i == r.changes.len() {
                "after restart".to_owned()
            } else {
                (i + 1).to_string()
            };
            let qq = c.latency.unwrap_or_default();
            let _ = writeln!(
                o,
                "| {label} | {} | {} / {}{} | {} | {} | {} | {:.2} s ({:.2}) | {} | {:.0} | {:.2} s |",
                c.change,
                thousands(c.reached),
                thousands(c.expected),
                if c.wrong > 0 {
                    format!(" ⚠ {} without the change", c.wrong)
                } else {
                    String::new()
                },
                s(qq.p50),
                s(qq.p99),
                s(qq.max),
                c.server_cpu,
                c.server_cpu_raw,
                thousands(c.delivered as usize),
                if c.delivered > 0.0 {
                    c.server_cpu / c.delivered * 1e6
                } else {
                    0.0
                },
                c.load_cpu,
            );
        }
        let _ = writeln!(o);
    }
    o
}

#[cfg(test)]
mod tests;
