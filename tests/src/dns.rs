//! A real DNS server on loopback whose answers the test controls: Debian's `dnsmasq`.
//!
//! [`Dnsmasq::start`] serves the names under `.test` from a hosts file of the test's (`IP NAME`
//! lines; an IPv6 address gives an AAAA record) with a TTL of 1 s, on `127.0.0.1` and a free
//! port (UDP and TCP), forwarding nothing: a `.test` name not in the file is NXDOMAIN, a name
//! with only an IPv6 address answers A queries with no records. [`Dnsmasq::answer`] rewrites
//! the file, sends SIGHUP (dnsmasq rereads its hosts files and empties its cache) and waits
//! until dnsmasq gives the new answer; [`Dnsmasq::stop`] kills it, for a resolver outage.
//!
//! The kit asks dnsmasq itself with a few lines of DNS over UDP ([`query`]), so no `dig` is
//! needed. `dnsmasq` comes from the `dnsmasq-base` package, which starts no system service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tempfile::TempDir;
use tokio::net::UdpSocket;
use tokio::process::{Child, Command};

use crate::{TIMEOUT, eventually};

/// A running dnsmasq, killed when dropped.
pub struct Dnsmasq {
    child: Option<Child>,
    addr: SocketAddr,
    dir: TempDir,
    hosts: PathBuf,
}

/// `A` (IPv4 address) query type.
pub const A: u16 = 1;
/// `AAAA` (IPv6 address) query type.
pub const AAAA: u16 = 28;

impl Dnsmasq {
    /// Starts dnsmasq answering `records` (`("web.test", ip)`, a name may appear more than once)
    /// and waits until it answers queries.
    pub async fn start(records: &[(&str, IpAddr)]) -> Dnsmasq {
        let dir = tempfile::Builder::new()
            .prefix("herd-dnsmasq-")
            .tempdir()
            .expect("temp dir");
        // dnsmasq started as root drops to `nobody` and rereads the hosts file as that user on
        // SIGHUP: the directory and the file must be readable by everyone.
        set_mode(dir.path(), 0o755);
        let hosts = dir.path().join("hosts");
        write_hosts(&hosts, records);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_udp_and_tcp_port()));
        let log = std::fs::File::create(dir.path().join("dnsmasq.log")).expect("create log");
        let child = Command::new(binary())
            .arg("--keep-in-foreground")
            .arg("--conf-file=/dev/null")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg(format!("--port={}", addr.port()))
            .arg(format!("--listen-address={}", addr.ip()))
            .arg("--bind-interfaces")
            .arg(format!("--addn-hosts={}", hosts.display()))
            .arg("--local-ttl=1")
            .arg("--local=/test/")
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg("--log-facility=-")
            .arg("--log-queries")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("spawn dnsmasq: {e} (is dnsmasq-base installed? scripts/test installs it)")
            });
        let mut dnsmasq = Dnsmasq {
            child: Some(child),
            addr,
            dir,
            hosts,
        };
        let (probe, _) = records
            .first()
            .copied()
            .unwrap_or(("probe.test", IpAddr::from([0; 4])));
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while query(addr, probe, A).await.is_none() {
            if let Some(child) = dnsmasq.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("dnsmasq exited with {status}:\n{}", dnsmasq.log());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "dnsmasq did not answer within {TIMEOUT:?}:\n{}",
                dnsmasq.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        dnsmasq
    }

    /// Where dnsmasq listens (UDP and TCP): what goes in `proxy.resolver.nameservers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces every record with `records`, makes dnsmasq reread them, and waits until its
    /// answers for the names in `records` are exactly the new addresses.
    pub async fn answer(&self, records: &[(&str, IpAddr)]) {
        write_hosts(&self.hosts, records);
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("dnsmasq is running");
        crate::proxy::signal(pid, "HUP");
        for (name, _) in records {
            let mut want: Vec<IpAddr> = records
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, ip)| *ip)
                .collect();
            want.sort();
            eventually(
                &format!("dnsmasq to answer {name} with {want:?}"),
                TIMEOUT,
                || {
                    let want = want.clone();
                    async move {
                        let mut got = Vec::new();
                        for qtype in [A, AAAA] {
                            got.extend(query(self.addr, name, qtype).await?.addresses);
                        }
                        got.sort();
                        (got == want).then_some(())
                    }
                },
            )
            .await;
        }
    }

    /// Kills dnsmasq and waits until it is gone: queries to [`Dnsmasq::addr`] now fail.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            crate::within("dnsmasq to exit", TIMEOUT, child.wait())
                .await
                .expect("wait for dnsmasq");
        }
    }

    /// How many queries (of any type) for `name` dnsmasq has received so far, the kit's own
    /// included: a client that re-resolves at the TTL makes this grow.
    pub fn queries(&self, name: &str) -> usize {
        self.log()
            .lines()
            .filter(|line| line.contains("query[") && line.contains(&format!("] {name} from")))
            .count()
    }

    /// What dnsmasq has logged (every query, with `--log-queries`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dnsmasq.log")).unwrap_or_default()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- dnsmasq log ----\n{}---- end ----", self.log());
        }
    }
}

/// `/usr/sbin/dnsmasq`, or `dnsmasq` from `PATH`.
fn binary() -> PathBuf {
    let sbin = Path::new("/usr/sbin/dnsmasq");
    if sbin.is_file() {
        sbin.to_owned()
    } else {
        PathBuf::from("dnsmasq")
    }
}

fn write_hosts(path: &Path, records: &[(&str, IpAddr)]) {
    let text: String = records
        .iter()
        .map(|(name, ip)| format!("{ip} {name}\n"))
        .collect();
    let staged = path.with_extension("new");
    std::fs::write(&staged, text).expect("write hosts file");
    set_mode(&staged, 0o644);
    std::fs::rename(&staged, path).expect("rename hosts file into place");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A port free on `127.0.0.1` for both TCP and UDP.
fn free_udp_and_tcp_port() -> u16 {
    loop {
        let port = crate::ports::free();
        if std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return port;
        }
    }
}

/// One DNS answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// 0 NOERROR, 2 SERVFAIL, 3 NXDOMAIN, 5 REFUSED.
    pub rcode: u8,
    /// The A or AAAA addresses in the answer section.
    pub addresses: Vec<IpAddr>,
}

/// Asks `server` over UDP for `name`'s `qtype` records; `None` if nothing answers in 500 ms.
pub async fn query(server: SocketAddr, name: &str, qtype: u16) -> Option<Answer> {
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.ok()?;
    socket.connect(server).await.ok()?;
    let id: u16 = rand_id();
    let mut packet = Vec::with_capacity(64);
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        packet.push(label.len() as u8);
        packet.extend_from_slice(label.as_bytes());
    }
    packet.push(0);
    packet.extend_from_slice(&qtype.to_be_bytes());
    packet.extend_from_slice(&1u16.to_be_bytes()); // IN
    socket.send(&packet).await.ok()?;
    let mut buf = [0u8; 1500];
    let n = tokio::time::timeout(Duration::from_millis(500), socket.recv(&mut buf))
        .await
        .ok()?
        .ok()?;
    parse_answer(&buf[..n], id)
}

fn rand_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.finish() as u16
}

fn parse_answer(msg: &[u8], id: u16) -> Option<Answer> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*msg.get(i)?, *msg.get(i + 1)?]));
    if u16_at(0)? != id {
        return None;
    }
    let rcode = (u16_at(2)? & 0x000f) as u8;
    let (questions, answers) = (u16_at(4)?, u16_at(6)?);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let (rtype, len) = (u16_at(at)?, usize::from(u16_at(at + 8)?));
        let data = msg.get(at + 10..at + 10 + len)?;
        match (rtype, len) {
            (A, 4) => addresses.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (AAAA, 16) => addresses.push(IpAddr::from(Ipv6Addr::from(
                <[u8; 16]>::try_from(data).ok()?,
            ))),
            _ => {}
        }
        at += 10 + len;
    }
    Some(Answer { rcode, addresses })
}

/// The offset just past the (possibly compressed) name at `at`.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}
