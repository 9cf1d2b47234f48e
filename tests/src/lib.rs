//! herd's integration-test kit: real servers, real clients, a real `herd-proxy`, on loopback.
//!
//! The tests in `tests/` drive the proxy the way an operator's pods do: curl, nghttp2, redis-cli
//! and WebSocket clients on one side; Puma, redis-server and small in-test servers on the other;
//! the proxy in between, started from a YAML file as its own process. This kit keeps each test a
//! few lines of prose (`let app = Puma::start(puma::ECHO).await;
//! let proxy = Proxy::inbound_to(app.addr()).await;`) and owns the chores every test needs:
//!
//! - every peer gets fresh loopback ports and its own temporary directory, so tests run in
//!   parallel without meeting;
//! - every child process is killed when its handle drops, even when a test panics;
//! - every wait is a bounded poll ([`eventually`], [`TIMEOUT`]), never a bare sleep, so a broken
//!   proxy fails a test instead of hanging it.
#![forbid(unsafe_code)]

pub mod bystander;
pub mod client;
pub mod control;
pub mod curl;
pub mod dns;
pub mod endpoints;
pub mod fleet;
pub mod h2raw;
pub mod helm;
pub mod identity;
pub mod inject;
pub mod kube;
pub mod load;
pub mod netns;
pub mod ports;
pub mod prometheus;
pub mod proxy;
pub mod puma;
pub mod redis;
pub mod server;
pub mod tcp;
pub mod ws;

use std::future::Future;
use std::time::{Duration, Instant};

pub use curl::curl;
pub use proxy::Proxy;
pub use puma::Puma;
pub use redis::Redis;

/// The longest any single step of a test waits before the test fails: a peer starting, a
/// response arriving, a process exiting.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Polls `check` every 20 ms until it returns `Some`, for at most `within`.
///
/// Panics with `what` if the time runs out. This is the kit's only way to wait for something
/// that has no event to await (a port opening, a file changing, a counter moving).
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (within [`TIMEOUT`]) until `addr` accepts TCP connections; panics naming `what`.
pub async fn until_accepting(what: &str, addr: std::net::SocketAddr) {
    eventually(&format!("{what} ({addr}) to accept"), TIMEOUT, || async {
        tokio::net::TcpStream::connect(addr).await.ok().map(|_| ())
    })
    .await;
}

/// Awaits `fut` for at most `within`, panicking with `what` when it takes longer.
pub async fn within<T>(what: &str, within: Duration, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(within, fut).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {within:?} waiting for {what}"),
    }
}

/// Removes the indentation common to every non-blank line, so tests can indent YAML with the
/// code around it.
pub fn dedent(text: &str) -> String {
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start().len())
        .min()
        .unwrap_or(0);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or("").trim_end());
        out.push('\n');
    }
    out.trim_start_matches('\n').to_owned()
}

/// FNV-1a over a byte stream, fed in pieces of any size: how a test checks that a large body
/// arrived intact without keeping it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u64);

impl Default for Digest {
    fn default() -> Self {
        Digest(0xcbf2_9ce4_8422_2325)
    }
}

impl Digest {
    pub fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub fn value(&self) -> u64 {
        self.0
    }

    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut digest = Digest::default();
        digest.update(bytes);
        digest
    }
}

/// `len` pseudo-random bytes (xorshift from `seed`): a request body no layer can compress or
/// mistake for another one sent with a different seed.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed ^ 0x2545_f491_4f6c_dd1d;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let take = (len - out.len()).min(8);
        out.extend_from_slice(&state.to_le_bytes()[..take]);
    }
    out
}
