//! Request smuggling guard: refuse an HTTP/1 request that carries both `Content-Length` and
//! `Transfer-Encoding`.
//!
//! Such a message can be framed two ways, and when two HTTP/1 parsers on a path (an ingress and
//! this proxy, or this proxy and the app) pick differently, the bytes one treats as body the
//! other treats as a second request: request smuggling. hyper resolves the conflict the way RFC
//! 9112 §6.3 allows (chunked wins, the length is dropped, the connection closes afterwards), but
//! it forwards the request, and it hides the conflict from the service. This guard sits between
//! the socket and hyper, follows the connection's framing (request heads, then bodies by length
//! or by chunks) without copying bodies, and records which request, counted from 1, had both
//! headers; the service answers that request 400 without forwarding it.
//!
//! The guard gives up (and leaves everything to hyper) on anything it cannot follow: an upgrade
//! or `CONNECT` (the bytes after it are not HTTP), a length it cannot read (unless a
//! `Transfer-Encoding` is there too: that is a conflict whatever the length says), or a
//! malformed chunk. A head hyper refuses needs nothing from it: hyper answers 400 and closes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which request on the connection (counted from 1) had conflicting framing; 0 for none.
#[derive(Debug, Default)]
pub struct Conflict(AtomicU64);

impl Conflict {
    pub fn is(&self, request: u64) -> bool {
        self.0.load(Ordering::Acquire) == request
    }
}

#[derive(Debug)]
enum State {
    /// Reading a request head into the buffer.
    Head,
    /// Skipping a body of known length.
    Body(u64),
    /// Reading a chunk-size line (hex digits, then extensions, to LF).
    ChunkSize {
        size: u64,
        digits: bool,
        in_ext: bool,
    },
    /// Skipping chunk data, then its CRLF.
    ChunkData(u64),
    ChunkDataEnd {
        seen_cr: bool,
    },
    /// Reading trailer lines after the last chunk, until an empty one.
    Trailers {
        line_len: usize,
    },
    /// Not following any more.
    Off,
}

pin_project_lite::pin_project! {
    pub struct FramingGuard<T> {
        #[pin]
        inner: T,
        state: State,
        head: BytesMut,
        max_head: usize,
        requests: u64,
        conflict: Arc<Conflict>,
    }
}

impl<T> FramingGuard<T> {
    pub fn new(inner: T, max_head: usize) -> (Self, Arc<Conflict>) {
        let conflict = Arc::new(Conflict::default());
        let guard = FramingGuard {
            inner,
            state: State::Head,
            head: BytesMut::new(),
            max_head,
            requests: 0,
            conflict: conflict.clone(),
        };
        (guard, conflict)
    }
}

/// What one request head says about the body that follows.
enum Framing {
    Length(u64),
    Chunked,
    Conflict,
    /// Upgrade, CONNECT, or something hyper will refuse: stop following.
    Unknown,
}

/// Where the head at the start of `bytes` ends (just past its blank line), searching for line
/// ends from `from`: how a head read in pieces is found to be whole without reading it again
/// with every piece. A line ends with CRLF or, as httparse (and so hyper) also accepts, a bare
/// LF; the head is over at the first empty line.
fn head_end(bytes: &[u8], from: usize) -> Option<usize> {
    memchr::memchr_iter(b'\n', &bytes[from..]).find_map(|at| {
        let rest = &bytes[from + at + 1..];
        if rest.first() == Some(&b'\n') {
            Some(from + at + 2)
        } else if rest.starts_with(b"\r\n") {
            Some(from + at + 3)
        } else {
            None
        }
    })
}

/// The value of `line` if it is the header field `name` (lower case), which it is when the
/// name, in any case, is followed at once by the colon: httparse, and so hyper, refuses white
/// space before the colon, so a head hyper accepts names its fields exactly so.
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    (line.len() > name.len()
        && line[name.len()] == b':'
        && line[..name.len()].eq_ignore_ascii_case(name))
    .then(|| line[name.len() + 1..].trim_ascii())
}

/// Where the request head at the start of `bytes` ends (just past its blank line), and what it
/// says about the body after it; `None` if the head does not end within `bytes`.
///
/// The head is read line by line, looking only at the lines that frame a body, in the one pass
/// that finds its end: this runs on every request, and a full parse here cost as much again as
/// the rest of the guard. A head hyper would refuse may be read wrongly, which does not matter:
/// hyper answers it 400 and closes the connection. For every head hyper accepts, the lines are
/// the fields it sees.
fn scan(bytes: &[u8]) -> Option<(usize, Framing)> {
    let mut start = 0;
    // `Some(None)`: a `Content-Length` that is not a number (once, in any of its lines).
    let mut length: Option<Option<u64>> = None;
    let mut chunked = false;
    let mut te = false;
    for end in memchr::memchr_iter(b'\n', bytes) {
        let line = &bytes[start..end];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            let framing = match (te, length) {
                (true, Some(_)) => Framing::Conflict,
                (true, None) if chunked => Framing::Chunked,
                (true, None) => Framing::Unknown,
                // hyper refuses the length itself.
                (false, Some(None)) => Framing::Unknown,
                (false, n) => Framing::Length(n.flatten().unwrap_or(0)),
            };
            return Some((end + 1, framing));
        }
        if start == 0 {
            // The request line; methods are case-sensitive.
            if line.starts_with(b"CONNECT ") {
                return Some((end + 1, Framing::Unknown));
            }
        } else if let Some(value) = field(line, b"content-length") {
            // A length that is not a number still frames the request a second way beside a
            // `Transfer-Encoding`, which makes hyper ignore it (a lenient parser in front may
            // read `6x` as 6).
            let n = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok());
            length = Some(if length == Some(None) { None } else { n });
        } else if let Some(value) = field(line, b"transfer-encoding") {
            te = true;
            chunked = value
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if field(line, b"upgrade").is_some() {
            return Some((end + 1, Framing::Unknown));
        }
        start = end + 1;
    }
    None
}

/// The state after a request head framed as `framing`; a conflict is recorded against the
/// request's number.
fn next_state(framing: Framing, requests: &mut u64, conflict: &Conflict) -> State {
    *requests += 1;
    match framing {
        Framing::Length(0) => State::Head,
        Framing::Length(n) => State::Body(n),
        Framing::Chunked => State::ChunkSize {
            size: 0,
            digits: false,
            in_ext: false,
        },
        Framing::Conflict => {
            let _ = conflict
                .0
                .compare_exchange(0, *requests, Ordering::AcqRel, Ordering::Acquire);
            State::Off
        }
        Framing::Unknown => State::Off,
    }
}

/// Advances the state machine over `bytes`, the newest bytes read from the client.
fn follow(
    state: &mut State,
    head: &mut BytesMut,
    max_head: usize,
    requests: &mut u64,
    conflict: &Conflict,
    mut bytes: &[u8],
) {
    while !bytes.is_empty() {
        match state {
            State::Off => return,
            State::Head => {
                // Blank lines before a request line are allowed (RFC 9112 §2.2).
                if head.is_empty() {
                    let skip = bytes
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    bytes = &bytes[skip..];
                    if bytes.is_empty() {
                        return;
                    }
                    // The common case: the whole head arrived in one read, and is examined where
                    // it lies, without a copy.
                    if let Some((end, framing)) = scan(bytes) {
                        *state = next_state(framing, requests, conflict);
                        bytes = &bytes[end..];
                        continue;
                    }
                }
                // A line end read before may be followed by the blank line now.
                let searched_from = head.len().saturating_sub(2);
                head.extend_from_slice(bytes);
                let Some(end) = head_end(head, searched_from) else {
                    if head.len() > max_head {
                        *state = State::Off;
                    }
                    return;
                };
                let consumed_before = head.len() - bytes.len();
                let framing = scan(&head[..end]).map_or(Framing::Unknown, |(_, f)| f);
                *state = next_state(framing, requests, conflict);
                bytes = &bytes[end - consumed_before..];
                head.clear();
            }
            State::Body(remaining) => {
                let n = (*remaining).min(bytes.len() as u64);
                *remaining -= n;
                bytes = &bytes[n as usize..];
                if *remaining == 0 {
                    *state = State::Head;
                }
            }
            State::ChunkSize {
                size,
                digits,
                in_ext,
            } => {
                let b = bytes[0];
                bytes = &bytes[1..];
                if b == b'\n' {
                    *state = match (*digits, *size) {
                        (false, _) => State::Off,
                        (true, 0) => State::Trailers { line_len: 0 },
                        (true, n) => State::ChunkData(n),
                    };
                } else if *in_ext || b == b'\r' {
                    continue;
                } else if let Some(d) = (b as char).to_digit(16) {
                    match size.checked_mul(16) {
                        Some(s) => {
                            *size = s + u64::from(d);
                            *digits = true;
                        }
                        None => *state = State::Off,
                    }
                } else if b == b';' || b == b' ' || b == b'\t' {
                    *in_ext = true;
                } else {
                    *state = State::Off;
                }
            }
            State::ChunkData(remaining) => {
                let n = (*remaining).min(bytes.len() as u64);
                *remaining -= n;
                bytes = &bytes[n as usize..];
                if *remaining == 0 {
                    *state = State::ChunkDataEnd { seen_cr: false };
                }
            }
            State::ChunkDataEnd { seen_cr } => {
                let b = bytes[0];
                bytes = &bytes[1..];
                *state = match (b, *seen_cr) {
                    (b'\r', false) => State::ChunkDataEnd { seen_cr: true },
                    (b'\n', _) => State::ChunkSize {
                        size: 0,
                        digits: false,
                        in_ext: false,
                    },
                    _ => State::Off,
                };
            }
            State::Trailers { line_len } => {
                let b = bytes[0];
                bytes = &bytes[1..];
                match b {
                    b'\n' if *line_len == 0 => *state = State::Head,
                    b'\n' => *line_len = 0,
                    b'\r' => {}
                    _ => *line_len += 1,
                }
            }
        }
    }
}

impl<T: AsyncRead> AsyncRead for FramingGuard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            follow(
                this.state,
                this.head,
                *this.max_head,
                this.requests,
                this.conflict,
                &buf.filled()[before..],
            );
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for FramingGuard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
