//! HTTP/2 frames written by hand, for the abuse a client library will not commit: a flood of
//! CONTINUATION frames, SETTINGS never acknowledged, more streams than the server allows,
//! thousands of streams opened and reset at once.
//!
//! [`Attacker`] is one h2c connection (prior knowledge): it sends the preface and a SETTINGS
//! frame of the test's choosing, then whatever bytes the test builds with [`frame`] and the
//! helpers beside it. Unless asked not to, a task reads every frame the server sends and
//! records what matters to a test ([`Seen`]): the server's settings, acknowledgements, response
//! headers, data, resets, a GOAWAY, the end of the connection. It never answers anything (no
//! SETTINGS or PING acknowledgements, no WINDOW_UPDATE): an attacker does not.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::task::JoinHandle;

use crate::{TIMEOUT, eventually};

/// RFC 9113 §3.4.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Frame types (RFC 9113 §6).
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
}

/// SETTINGS parameters.
pub mod setting {
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
}

/// Error codes (RFC 9113 §7).
pub mod code {
    pub const NO_ERROR: u32 = 0x0;
    pub const CANCEL: u32 = 0x8;
    pub const REFUSED_STREAM: u32 = 0x7;
    pub const ENHANCE_YOUR_CALM: u32 = 0xb;
}

/// Appends one frame to `out`.
pub fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let len = u32::try_from(payload.len()).expect("frame length");
    assert!(len < 1 << 24, "frame payload of {len} bytes");
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
}

/// A SETTINGS frame with `params`.
pub fn settings(out: &mut Vec<u8>, params: &[(u16, u32)]) {
    let mut payload = Vec::with_capacity(params.len() * 6);
    for (id, value) in params {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    frame(out, kind::SETTINGS, 0, 0, &payload);
}

/// An RST_STREAM frame.
pub fn reset(out: &mut Vec<u8>, stream: u32, error: u32) {
    frame(out, kind::RST_STREAM, 0, stream, &error.to_be_bytes());
}

/// An HPACK integer with an `prefix`-bit prefix, the first byte's other bits set to `high`
/// (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, high: u8, prefix: u32, value: usize) {
    let max = (1usize << prefix) - 1;
    if value < max {
        out.push(high | value as u8);
        return;
    }
    out.push(high | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    out.push(rest as u8);
}

/// A header field without indexing whose name is static-table entry `index` (RFC 7541 §6.2.2).
fn hpack_field(out: &mut Vec<u8>, index: usize, value: &str) {
    hpack_int(out, 0x00, 4, index);
    hpack_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// A header field without indexing with a literal name.
pub fn hpack_literal(out: &mut Vec<u8>, name: &str, value: &str) {
    out.push(0x00);
    hpack_int(out, 0x00, 7, name.len());
    out.extend_from_slice(name.as_bytes());
    hpack_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value.as_bytes());
}

/// The header block of `GET http://authority{path}`: `:method GET` and `:scheme http` from the
/// static table, `:path` and `:authority` as literals.
pub fn get_block(authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    hpack_field(&mut block, 4, path);
    hpack_field(&mut block, 1, authority);
    block
}

/// A complete `GET` on `stream`: one HEADERS frame with END_HEADERS and END_STREAM.
pub fn get(out: &mut Vec<u8>, stream: u32, authority: &str, path: &str) {
    frame(
        out,
        kind::HEADERS,
        flag::END_HEADERS | flag::END_STREAM,
        stream,
        &get_block(authority, path),
    );
}

/// A GOAWAY as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream: u32,
    pub code: u32,
    pub debug: String,
}

/// What the server has sent on an [`Attacker`]'s connection so far.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// The server's (non-ACK) SETTINGS, merged in order.
    pub settings: BTreeMap<u16, u32>,
    pub settings_frames: usize,
    pub settings_acks: usize,
    pub ping_acks: usize,
    /// Streams that got response headers.
    pub headers: Vec<u32>,
    /// DATA bytes by stream.
    pub data: BTreeMap<u32, usize>,
    /// RST_STREAM error codes by stream.
    pub resets: BTreeMap<u32, u32>,
    pub goaway: Option<GoAway>,
    /// The server closed the connection (or reset it).
    pub closed: bool,
    /// Frames of any kind.
    pub frames: usize,
}

impl Seen {
    /// Streams reset with `error`.
    pub fn reset_with(&self, error: u32) -> Vec<u32> {
        self.resets
            .iter()
            .filter(|(_, c)| **c == error)
            .map(|(s, _)| *s)
            .collect()
    }
}

/// How a bounded write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sent {
    /// Every byte was written.
    All,
    /// The server stopped reading: only this many bytes were accepted within the time given.
    Blocked(usize),
    /// The connection failed after this many bytes (the server closed it).
    Failed(usize),
}

/// One raw HTTP/2 connection; see the module doc.
pub struct Attacker {
    write: OwnedWriteHalf,
    seen: Arc<Mutex<Seen>>,
    reader: Option<JoinHandle<()>>,
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if let Some(reader) = &self.reader {
            reader.abort();
        }
    }
}

impl Attacker {
    /// Connects to `addr`, sends the preface and SETTINGS with `params`, and reads what the
    /// server sends from then on.
    pub async fn connect(addr: SocketAddr, params: &[(u16, u32)]) -> Attacker {
        Self::open(addr, params, true).await
    }

    /// [`Attacker::connect`], but nothing is ever read: what the server sends piles up in the
    /// socket buffers until it must stop writing (or buffer it).
    pub async fn connect_without_reading(addr: SocketAddr, params: &[(u16, u32)]) -> Attacker {
        Self::open(addr, params, false).await
    }

    async fn open(addr: SocketAddr, params: &[(u16, u32)], read: bool) -> Attacker {
        let stream = crate::tcp::Conn::connect(addr).await.into_inner();
        let (read_half, write) = stream.into_split();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let reader = if read {
            Some(tokio::spawn(read_frames(read_half, seen.clone())))
        } else {
            // Kept open (not read) for as long as the attacker lives.
            Some(tokio::spawn(async move {
                let _open = read_half;
                std::future::pending::<()>().await
            }))
        };
        let mut attacker = Attacker {
            write,
            seen,
            reader,
        };
        let mut hello = PREFACE.to_vec();
        settings(&mut hello, params);
        assert_eq!(
            attacker.send_within(&hello, TIMEOUT).await,
            Sent::All,
            "the preface and SETTINGS"
        );
        attacker
    }

    /// Writes `bytes`, for at most `within`; says how far it got.
    pub async fn send_within(&mut self, bytes: &[u8], within: Duration) -> Sent {
        let deadline = tokio::time::Instant::now() + within;
        let mut written = 0;
        for piece in bytes.chunks(64 * 1024) {
            match tokio::time::timeout_at(deadline, self.write.write_all(piece)).await {
                Err(_) => return Sent::Blocked(written),
                Ok(Err(_)) => return Sent::Failed(written),
                Ok(Ok(())) => written += piece.len(),
            }
        }
        Sent::All
    }

    /// What the server has sent so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits (at most [`TIMEOUT`]) until what the server sent satisfies `check`.
    pub async fn wait_for(&self, what: &str, check: impl Fn(&Seen) -> bool) -> Seen {
        eventually(what, TIMEOUT, || async {
            let seen = self.seen();
            check(&seen).then_some(seen)
        })
        .await
    }

    /// Waits for the server's GOAWAY and the end of the connection.
    pub async fn wait_for_goaway_and_close(&self) -> GoAway {
        let seen = self
            .wait_for("a GOAWAY and the connection's end", |s| {
                s.goaway.is_some() && s.closed
            })
            .await;
        seen.goaway.expect("a GOAWAY")
    }
}

/// Reads frames until the connection ends, recording them in `seen`.
async fn read_frames(mut read: tokio::net::tcp::OwnedReadHalf, seen: Arc<Mutex<Seen>>) {
    let mut head = [0u8; 9];
    let mut payload = Vec::new();
    loop {
        if read.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        payload.resize(len, 0);
        if read.read_exact(&mut payload).await.is_err() {
            break;
        }
        let mut seen = seen.lock().unwrap();
        seen.frames += 1;
        let word = |at: usize| {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match kind {
            kind::SETTINGS if flags & flag::ACK != 0 => seen.settings_acks += 1,
            kind::SETTINGS => {
                seen.settings_frames += 1;
                for param in payload.chunks_exact(6) {
                    let id = u16::from_be_bytes([param[0], param[1]]);
                    let value = u32::from_be_bytes([param[2], param[3], param[4], param[5]]);
                    seen.settings.insert(id, value);
                }
            }
            kind::PING if flags & flag::ACK != 0 => seen.ping_acks += 1,
            kind::HEADERS => seen.headers.push(stream),
            kind::DATA => *seen.data.entry(stream).or_default() += len,
            kind::RST_STREAM => {
                let error = word(0).unwrap_or(u32::MAX);
                seen.resets.insert(stream, error);
            }
            kind::GOAWAY => {
                seen.goaway = Some(GoAway {
                    last_stream: word(0).unwrap_or(0) & 0x7fff_ffff,
                    code: word(4).unwrap_or(u32::MAX),
                    debug: String::from_utf8_lossy(payload.get(8..).unwrap_or_default())
                        .into_owned(),
                });
            }
            _ => {}
        }
    }
    seen.lock().unwrap().closed = true;
}
