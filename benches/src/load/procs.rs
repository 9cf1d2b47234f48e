//! Child processes and what `/proc` says about them.
//!
//! Every child runs in its own process group, registered here, so the harness can take down a
//! whole tree (nginx's master and worker, say) when a measurement ends, when it fails, and on
//! SIGINT/SIGTERM/SIGHUP (a dedicated thread waits for those). Children also get SIGTERM should
//! the harness die without cleaning up (`PR_SET_PDEATHSIG`).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Process groups alive right now (each child's pid, which is its group id).
static GROUPS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// The run's temporary directory, which the signal thread removes before exiting.
static TEMP_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Set once a signal arrived: the main thread stops reporting, the signal thread exits.
static STOPPING: AtomicBool = AtomicBool::new(false);

pub fn set_temp_dir(dir: Option<PathBuf>) {
    *TEMP_DIR.lock().unwrap_or_else(|e| e.into_inner()) = dir;
}

/// Whether a signal is taking the harness down (failures from here on are its doing).
pub fn stopping() -> bool {
    STOPPING.load(Ordering::SeqCst)
}

fn register(pgid: i32) {
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pgid);
}

fn unregister(pgid: i32) {
    GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pgid);
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; no memory is involved.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in this thread (threads spawned later inherit the mask;
/// children get an empty one, see `prepare`) and starts a thread that waits for them, kills every
/// registered process group, and exits. Call first thing in `main`, before any thread exists.
pub fn install_signal_handler() {
    // SAFETY: plain libc signal-set calls on a zeroed, locally owned sigset_t.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, signal);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    thread::spawn(move || {
        let mut signal = 0;
        // SAFETY: `set` is a valid sigset_t; sigwait writes the signal number into `signal`.
        unsafe {
            libc::sigwait(&set, &mut signal);
        }
        STOPPING.store(true, Ordering::SeqCst);
        eprintln!("herd-load: signal {signal}, stopping every child process");
        kill_all();
        if let Some(dir) = TEMP_DIR.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = fs::remove_dir_all(dir);
        }
        std::process::exit(128 + signal);
    });
}

/// SIGTERM to every registered group, a moment's grace, then SIGKILL.
pub fn kill_all() {
    let groups: Vec<i32> = GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .copied()
        .collect();
    for &pgid in &groups {
        signal_group(pgid, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline && groups.iter().any(|&g| !group_members(g).is_empty()) {
        thread::sleep(Duration::from_millis(50));
    }
    for &pgid in &groups {
        signal_group(pgid, libc::SIGKILL);
    }
}

fn prepare(command: &mut Command) {
    command.process_group(0);
    // SAFETY: prctl, sigemptyset, sigprocmask and signal are async-signal-safe and only touch the
    // child (and a local sigset_t) between fork and exec.
    unsafe {
        command.pre_exec(|| {
            // The child inherits this thread's signal mask (SIGINT, SIGTERM and SIGHUP blocked
            // for the signal thread) and ignored dispositions (a shell's background job ignores
            // SIGINT and SIGQUIT): start it with neither, as a shell would. herd-proxy, for
            // one, relies on the default mask to see SIGTERM.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            if libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for signal in [
                libc::SIGHUP,
                libc::SIGINT,
                libc::SIGQUIT,
                libc::SIGTERM,
                libc::SIGPIPE,
            ] {
                libc::signal(signal, libc::SIG_DFL);
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A long-running child (a server) in its own process group; stopped, with its whole group,
/// when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Result<Proc> {
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("opening {}", log.display()))?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        prepare(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        register(child.id() as i32);
        Ok(Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    /// Fails (with the log's tail) when the process has already exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            let tail = log_tail(&self.log);
            self.child = None;
            bail!("{} exited ({status}); its log ends:\n{tail}", self.name);
        }
        Ok(())
    }

    /// SIGTERM to the group, up to 5 s for the leader to exit, then SIGKILL; then kills any
    /// member of the group that outlived its leader.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let pgid = child.id() as i32;
        signal_group(pgid, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut status = None;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(s)) => {
                    status = Some(s);
                    break;
                }
                Ok(None) => thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        if status.is_none() {
            eprintln!(
                "herd-load: {} ignored SIGTERM for 5 s, killing it",
                self.name
            );
            signal_group(pgid, libc::SIGKILL);
            status = child.wait().ok();
        }
        for pid in group_members(pgid) {
            // SAFETY: see signal_group.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        unregister(pgid);
        status
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn log_tail(path: &std::path::Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Runs a short-lived tool (a load generator) to completion in its own registered process group,
/// capturing its output.
pub fn run_tool(mut command: Command) -> Result<Output> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    prepare(&mut command);
    let child = command
        .spawn()
        .with_context(|| format!("starting {command:?}"))?;
    let pgid = child.id() as i32;
    register(pgid);
    let output = child.wait_with_output();
    unregister(pgid);
    Ok(output?)
}

/// One `/proc/PID/stat` line's fields the harness uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub ppid: i32,
    pub pgrp: i32,
    pub cpu: Ticks,
}

/// CPU time in clock ticks, split as `/proc/PID/stat` gives it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Ticks {
    /// utime: in the process's own code and its libraries.
    pub user: u64,
    /// stime: in the kernel on its behalf (system calls, and the TCP work they carry, which on
    /// loopback includes the receiving side's).
    pub system: u64,
}

impl Ticks {
    pub fn total(self) -> u64 {
        self.user + self.system
    }

    /// The ticks spent since `earlier`.
    pub fn since(self, earlier: Ticks) -> Ticks {
        Ticks {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

impl std::ops::Add for Ticks {
    type Output = Ticks;

    fn add(self, other: Ticks) -> Ticks {
        Ticks {
            user: self.user + other.user,
            system: self.system + other.system,
        }
    }
}

/// Parses a `/proc/PID/stat` line. The command name (field 2) sits in parentheses and may hold
/// spaces and parentheses itself, so fields are counted after the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let rest = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state): field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        cpu: Ticks {
            user: field(14)?.parse().ok()?,
            system: field(15)?.parse().ok()?,
        },
    })
}

fn all_stats() -> HashMap<i32, Stat> {
    let mut stats = HashMap::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return stats;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Ok(line) = fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some(stat) = parse_stat(&line)
        {
            stats.insert(pid, stat);
        }
    }
    stats
}

fn group_members(pgid: i32) -> Vec<i32> {
    all_stats()
        .into_iter()
        .filter(|(_, s)| s.pgrp == pgid)
        .map(|(pid, _)| pid)
        .collect()
}

/// `root` and all its descendants (by ppid), with their stats.
fn tree(root: i32) -> Vec<(i32, Stat)> {
    let stats = all_stats();
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(pid) = frontier.pop() {
        if let Some(stat) = stats.get(&pid) {
            out.push((pid, *stat));
            frontier.extend(
                stats
                    .iter()
                    .filter(|(_, s)| s.ppid == pid)
                    .map(|(child, _)| *child),
            );
        }
    }
    out
}

/// utime and stime, in clock ticks, summed over the trees rooted at `roots`.
pub fn cpu_ticks(roots: &[i32]) -> Ticks {
    roots
        .iter()
        .flat_map(|&r| tree(r))
        .fold(Ticks::default(), |sum, (_, s)| sum + s.cpu)
}

/// A `kB` field (`VmRSS`, `VmHWM`) of `/proc/PID/status`, in KiB.
pub fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// `key` (`VmRSS` or `VmHWM`) summed over the trees rooted at `roots`, in KiB.
pub fn memory_kib(roots: &[i32], key: &str) -> u64 {
    roots
        .iter()
        .flat_map(|&r| tree(r))
        .filter_map(|(pid, _)| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            parse_status_kib(&status, key)
        })
        .sum()
}

/// `sysconf(_SC_CLK_TCK)`: the unit of utime and stime.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let line = "4391 (nginx: wor) ker (x)) S 4384 4384 4384 0 -1 4194624 1210 0 0 0 \
                    417 112 0 0 20 0 1 0 1234 14123008 1595 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                ppid: 4384,
                pgrp: 4384,
                cpu: Ticks {
                    user: 417,
                    system: 112
                }
            })
        );
        assert_eq!(parse_stat("12 (short) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn own_stat_parses() {
        let line = fs::read_to_string("/proc/self/stat").unwrap();
        let stat = parse_stat(&line).unwrap();
        assert!(stat.ppid > 0);
    }

    #[test]
    fn status_fields_in_kib() {
        let status =
            "Name:\tnginx\nVmPeak:\t  14000 kB\nVmHWM:\t    6792 kB\nVmRSS:\t    6380 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(6792));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(6380));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }
}
