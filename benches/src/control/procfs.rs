//! What `/proc` says about a process and the machine: CPU time, memory, limits, sockets.
//!
//! CPU times in `/proc/PID/stat` are in clock ticks of `USER_HZ`, which Linux fixes at 100 for
//! user space on every architecture it exports `/proc` from; 10 ms resolution is enough for the
//! seconds a phase lasts.

use std::fs;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};

const TICKS_PER_SECOND: u64 = 100;

/// utime + stime of `pid` (`"self"` for this process), from `/proc/PID/stat`.
pub fn cpu(pid: &str) -> Result<Duration> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    cpu_of_stat(&stat).ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat: {stat}"))
}

fn cpu_of_stat(stat: &str) -> Option<Duration> {
    // The command name may hold spaces and parentheses: the fields start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5), counted from 1 with pid and comm as 1 and 2.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        (utime + stime) * 1000 / TICKS_PER_SECOND,
    ))
}

/// CPU time the whole machine spent busy, and the time its virtual CPUs waited for the host
/// (steal), since boot, from the `cpu` line of `/proc/stat`.
pub fn machine_cpu() -> Option<(Duration, Duration)> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    machine_cpu_of(&stat)
}

fn machine_cpu_of(stat: &str) -> Option<(Duration, Duration)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let t: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal ...
    let busy = t.first()? + t.get(1)? + t.get(2)? + t.get(5)? + t.get(6)?;
    let ticks = |n: u64| Duration::from_millis(n * 1000 / TICKS_PER_SECOND);
    Some((ticks(busy), ticks(*t.get(7)?)))
}

/// The kernel's count of connections refused at a full accept queue (a listener's backlog):
/// `ListenOverflows` in `/proc/net/netstat`, machine-wide since boot. The client's SYN is
/// dropped and sent again after 1 s, then 3 s, so each one is a connection delayed.
pub fn listen_overflows() -> Option<u64> {
    let netstat = fs::read_to_string("/proc/net/netstat").ok()?;
    listen_overflows_of(&netstat)
}

fn listen_overflows_of(netstat: &str) -> Option<u64> {
    let lines: Vec<&str> = netstat.lines().collect();
    lines.chunks(2).find_map(|pair| {
        let (names, values) = (pair.first()?, pair.get(1)?);
        let i = names
            .split_whitespace()
            .position(|n| n == "ListenOverflows")?;
        values.split_whitespace().nth(i)?.parse().ok()
    })
}

/// Resident memory now and at its peak, bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Memory {
    pub rss: u64,
    pub hwm: u64,
}

pub fn memory(pid: &str) -> Result<Memory> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    Ok(memory_of_status(&status))
}

fn memory_of_status(status: &str) -> Memory {
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    };
    Memory {
        rss: kib("VmRSS:"),
        hwm: kib("VmHWM:"),
    }
}

/// This process's soft limit on open files.
pub fn open_files_limit() -> Option<u64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// TCP connections in state ESTABLISHED whose remote port is `port` (the clients' ends of
/// connections to a server on that port), as the kernel holds them.
pub fn established_to(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| fs::read_to_string(f).ok())
        .map(|table| established_in(&table, port))
        .sum()
}

fn established_in(table: &str, port: u16) -> usize {
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let remote_port = fields
                .get(2)
                .and_then(|r| r.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            remote_port == Some(port) && fields.get(3) == Some(&"01")
        })
        .count()
}

/// The 1-minute load average, as `/proc/loadavg` gives it.
pub fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The CPU's model name and the machine's memory, for the report.
pub fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib =
        memory_of_status(&meminfo.replace("MemTotal:", "VmRSS:")).rss as f64 / (1u64 << 30) as f64;
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "`{model}`, {cores} cores, {mem_gib:.0} GiB, Linux {}",
        kernel.trim()
    )
}

#[cfg(test)]
mod tests;
