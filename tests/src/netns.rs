//! Pods with addresses of their own: a network namespace joined to the host by a veth pair.
//!
//! A Kubernetes API server refuses loopback addresses in EndpointSlices, and a transparent proxy
//! needs traffic that leaves a namespace through a real interface, so a test's "pod" is a
//! namespace whose processes (`ip netns exec`) listen on an address from 198.18.0.0/15, the block
//! reserved for network tests (RFC 2544): nothing routes it off the machine. Each pod gets a /30
//! of it (host side `.1`, pod side `.2`, the pod's default route through the host side) and a
//! /64 of the ULA `fd00:198:18::/48` (host `::1`, pod `::2`), so the host reaches the pod's
//! addresses and the pod reaches the host's side of its link. Pod-to-pod traffic goes through
//! the host and so needs the host's IP forwarding on, which the kit leaves as it finds it.
//!
//! Parallel test processes must not collide: the block is picked from the process id and a
//! counter, and claimed atomically by creating the host-side interface `herdhBLOCK` (the kernel
//! refuses a second one of the same name; a taken block means trying the next). The namespace
//! is named `herd-PID-BLOCK`, so a later run can tell the namespaces of a crashed one (their
//! process is gone) and delete them; the veth pair goes with its namespace. On drop the pair
//! and the namespace are deleted; processes still running inside keep it alive only until
//! their handles (kill-on-drop) go too.
//!
//! Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN), as CI and the project's machines have.

use std::ffi::{OsStr, OsString};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::Stdio;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::process::{Child, Command};

/// How many /30 blocks 198.18.0.0/15 holds.
const BLOCKS: u32 = 1 << 15;

/// The prefix of every namespace this kit creates (`herd-PID-BLOCK`).
const PREFIX: &str = "herd-";

static NEXT: AtomicU32 = AtomicU32::new(0);
static CLEAN_STALE: Once = Once::new();

/// A network namespace with its veth link to the host; deleted on drop.
pub struct Pod {
    name: String,
    netns: String,
    block: u32,
}

impl Pod {
    /// Creates a pod's namespace, its veth pair and addresses; `name` is only for messages.
    ///
    /// Panics, with the failing `ip` command and its stderr, if the namespace cannot be made
    /// (not root, no iproute2).
    pub fn new(name: &str) -> Pod {
        CLEAN_STALE.call_once(clean_stale);
        let pid = std::process::id();
        let start = pid
            .wrapping_mul(2_654_435_761)
            .wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed));
        for probe in 0..BLOCKS {
            let block = start.wrapping_add(probe) % BLOCKS;
            let netns = format!("{PREFIX}{pid}-{block}");
            match ip_quiet(["netns", "add", &netns]) {
                Ok(()) => {}
                // Taken by another pod of this process (or left by a dead one with our pid).
                Err(stderr) if stderr.contains("File exists") => continue,
                Err(stderr) => panic!("pod {name}: create namespace {netns}: {stderr}"),
            }
            let host_link = format!("herdh{block}");
            let veth = [
                "link", "add", &host_link, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ];
            match ip_quiet(veth) {
                Ok(()) => {
                    let pod = Pod {
                        name: name.to_owned(),
                        netns,
                        block,
                    };
                    pod.configure();
                    return pod;
                }
                // Another process's pod holds the block: give our namespace back (not the
                // link, which is theirs) and try the next one.
                Err(stderr) if stderr.contains("File exists") => {
                    let _ = ip_quiet(["netns", "del", &netns]);
                }
                Err(stderr) => {
                    let _ = ip_quiet(["netns", "del", &netns]);
                    panic!("pod {name}: create the veth pair {host_link}: {stderr}");
                }
            }
        }
        panic!("pod {name}: every block of 198.18.0.0/15 is taken");
    }

    /// The pod's IPv4 address (what goes into an EndpointSlice).
    pub fn ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 2)
    }

    /// The pod's IPv6 address.
    pub fn ipv6(&self) -> Ipv6Addr {
        self.v6(2)
    }

    /// The host's address on the pod's link: how a process in the pod reaches the host.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base() + 1)
    }

    /// The host's IPv6 address on the pod's link.
    pub fn host_ipv6(&self) -> Ipv6Addr {
        self.v6(1)
    }

    /// Both of the pod's addresses.
    pub fn ips(&self) -> [IpAddr; 2] {
        [self.ip().into(), self.ipv6().into()]
    }

    /// The namespace's name (for `ip netns exec` in a test's own command lines).
    pub fn netns(&self) -> &str {
        &self.netns
    }

    /// A command that runs `program` inside the pod (`ip netns exec NETNS program`), killed when
    /// its child handle drops.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new(ip_binary());
        command
            .args(["netns", "exec", &self.netns])
            .arg(program)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// [`Pod::command`] as user and group `uid` (util-linux's `setpriv`, no supplementary
    /// groups): how a test runs the app, or the proxy, as the user the iptables rules of
    /// `herd-proxy init` tell apart.
    pub fn command_as(&self, uid: u32, program: impl AsRef<OsStr>) -> Command {
        let wrapper = self.wrapper_as(uid);
        let mut command = Command::new(&wrapper[0]);
        command
            .args(&wrapper[1..])
            .arg(program)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// The command line that runs what follows it inside the pod as `uid` (see
    /// [`Pod::command_as`]), for kit helpers that build their own command.
    pub fn wrapper_as(&self, uid: u32) -> Vec<OsString> {
        [
            ip_binary(),
            "netns",
            "exec",
            &self.netns,
            "setpriv",
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "--",
        ]
        .into_iter()
        .map(OsString::from)
        .collect()
    }

    /// Spawns `argv` inside the pod with stdout and stderr inherited (shown with the test's
    /// output); panics if it cannot start.
    pub fn spawn<S: AsRef<OsStr>>(&self, argv: &[S]) -> Child {
        let (program, args) = argv.split_first().expect("a command to run");
        self.command(program)
            .args(args)
            .spawn()
            .unwrap_or_else(|e| panic!("pod {}: spawn {:?}: {e}", self.name, program.as_ref()))
    }

    fn base(&self) -> u32 {
        u32::from(Ipv4Addr::new(198, 18, 0, 0)) + self.block * 4
    }

    fn v6(&self, host: u16) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0x198, 0x18, self.block as u16, 0, 0, 0, host)
    }

    fn host_link(&self) -> String {
        format!("herdh{}", self.block)
    }

    fn configure(&self) {
        let what = format!("pod {}: configure {}", self.name, self.netns);
        let host = self.host_link();
        let v4 = |ip: Ipv4Addr| format!("{ip}/30");
        let v6 = |ip: Ipv6Addr| format!("{ip}/64");
        ip(&what, ["addr", "add", &v4(self.host_ip()), "dev", &host]);
        // nodad: the addresses are unique by construction, and duplicate address detection
        // would keep them unusable for a second or two.
        ip(
            &what,
            ["addr", "add", &v6(self.host_ipv6()), "dev", &host, "nodad"],
        );
        ip(&what, ["link", "set", &host, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["-n", self.netns.as_str()];
            all.extend_from_slice(args);
            ip(&what, all);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &v4(self.ip()), "dev", "eth0"]);
        inside(&["addr", "add", &v6(self.ipv6()), "dev", "eth0", "nodad"]);
        inside(&["link", "set", "eth0", "up"]);
        inside(&[
            "route",
            "add",
            "default",
            "via",
            &self.host_ip().to_string(),
        ]);
        inside(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &self.host_ipv6().to_string(),
        ]);
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Deleting one end deletes the pair at once; deleting the namespace alone would leave
        // the pair to the kernel's cleanup, a moment later.
        let _ = ip_quiet(["link", "del", &self.host_link()]);
        if let Err(stderr) = ip_quiet(["netns", "del", &self.netns]) {
            eprintln!(
                "pod {}: delete namespace {}: {stderr}",
                self.name, self.netns
            );
        }
    }
}

/// Deletes the namespaces (and with them the veth pairs) of kit processes that are gone.
fn clean_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip_quiet(["netns", "del", &name]);
        }
    }
}

/// `ip` from iproute2, in sbin (often not on a user's PATH).
fn ip_binary() -> &'static str {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .unwrap_or("ip")
}

/// Runs `ip ARGS`; panics with `what`, the command and its stderr if it fails.
fn ip<I, S>(what: &str, args: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    if let Err(stderr) = ip_quiet(args.iter()) {
        let line: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        panic!("{what}: `ip {}` failed: {stderr}", line.join(" "));
    }
}

/// Runs `ip ARGS`; its stderr if it fails.
fn ip_quiet<I, S>(args: I) -> Result<(), String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let output = std::process::Command::new(ip_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {} (is iproute2 installed?): {e}", ip_binary()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_owned())
    }
}
