//! HTTP/1 exchanges driven from the request's own task.
//!
//! hyper's client gives every upstream connection a task of its own: a request crosses a channel
//! to it, and the response comes back through a oneshot and its body through another channel.
//! That is five task polls and about a third of the proxy's instructions per request (callgrind,
//! see `benches/RESULTS.md`). Most requests a sidecar carries have no body, or a small one held
//! whole for retries, and ask for no upgrade. For those, the request's own task writes the
//! request to a pooled socket and reads the response head, and the response body reads the
//! socket as the client's side pulls it: no task, channel or wake-up in between. Requests that
//! stream a body or ask for an upgrade still go through hyper's client.
//!
//! What this module decides, as RFC 9112 says:
//! - The request's framing: `Content-Length` from the held body (none for a bodiless GET, as
//!   hyper's client does; `0` for an empty POST, PUT or PATCH). The origin-form target and `Host`
//!   are already set by the forward stage.
//! - The response's framing (§6.3): no body after HEAD or for 1xx, 204 and 304; chunked when
//!   `Transfer-Encoding` ends in `chunked`; to the connection's close for any other
//!   `Transfer-Encoding` or when neither header is there; else `Content-Length`, which must be one
//!   number (repeats must agree). Interim 1xx responses are dropped, as hyper's client does; a
//!   `101` to a request that asked for no upgrade is refused.
//! - Reuse: an HTTP/1.1 response without `Connection: close` (or HTTP/1.0 with `keep-alive`), not
//!   framed by the close or by both headers, whose body ended with no byte beyond it.
//!
//! This module knows sockets, not the pool: a response body hands its connection back through
//! the [`Pool`] it was given, so the pool's module uses this one and not the other way round.
//!
//! Limits keep a misbehaving upstream from growing memory: a head over 64 KiB or 100 headers, a
//! chunk-size line over 4 KiB and trailers over 16 KiB are refused (a 502 if no response went
//! out yet; the connection is closed).

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Version, header};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::body::RequestBody;
use crate::wire::{self, MAX_HEADERS, Span};

/// Bytes a response head may take: hyper's client's default read limit, which carries the
/// requests this path does not, so an app's response is refused or not whichever path carried
/// its request.
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// A chunk-size line, extensions included, longer than this is refused.
const MAX_CHUNK_LINE: usize = 4096;
/// A trailer section longer than this is refused.
const MAX_TRAILERS: usize = 16 * 1024;
/// Headers a trailer section may carry.
const MAX_TRAILER_FIELDS: usize = 32;
/// Room made for each read of a head, or of a body without a known length.
const READ_SIZE: usize = 8 * 1024;
/// The largest read of a body with a known length.
const MAX_READ: usize = 64 * 1024;
/// A held body at most this long is written with the head, in one write.
const COALESCE: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("connection closed before the response was complete")]
    Closed,
    #[error("invalid response: {0}")]
    Invalid(&'static str),
    #[error("invalid response head: {0}")]
    Parse(#[from] httparse::Error),
    #[error("response head over {MAX_HEAD} bytes")]
    HeadTooLarge,
}

/// An open connection: the socket, and bytes read from it not yet used.
pub struct Conn {
    io: TcpStream,
    buf: BytesMut,
}

impl Conn {
    pub fn new(io: TcpStream) -> Self {
        Conn {
            io,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection can take a request. An idle connection receives nothing but
    /// its close, so any readiness means it is closing or broken. Costs no syscall unless the
    /// socket has reported readiness since its last read.
    pub fn is_usable(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => true,
            Poll::Ready(Err(_)) => false,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// Whether `req` can be sent this way: no upgrade, and a body held whole without trailers (or
/// none at all).
pub fn eligible(req: &Request<RequestBody>) -> bool {
    matches!(req.body(), RequestBody::Buffered { trailers: None, .. })
        && !req.headers().contains_key(header::UPGRADE)
}

/// A failed exchange: what went wrong, whether any of the request was written, and whether any
/// of a response arrived.
#[derive(Debug)]
pub struct Failed {
    pub error: Error,
    pub written: bool,
    pub received: bool,
}

/// How a response's body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `remaining` bytes more.
    Length(u64),
    Chunked(Chunk),
    /// At the connection's close.
    Close,
}

/// Where a chunked body's decoding stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data.
    Data(u64),
    /// At the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk: trailers, then an empty line.
    Trailers,
}

/// A response head read off the wire.
pub struct Head {
    pub parts: http::response::Parts,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// Sends `req` on `conn` and reads the response head. `req` must be [`eligible`].
pub async fn exchange(conn: &mut Conn, req: &Request<RequestBody>) -> Result<Head, Failed> {
    let data = match req.body() {
        RequestBody::Buffered { data, .. } => data.as_ref(),
        RequestBody::Stream { .. } => None,
    };
    let mut out = BytesMut::with_capacity(256 + data.map_or(0, |d| d.len().min(COALESCE)));
    encode_head(req, data.map_or(0, Bytes::len), &mut out);
    // A small body goes with the head, in one write; a larger one follows it.
    let rest: &[u8] = match data {
        Some(data) if data.len() <= COALESCE => {
            out.extend_from_slice(data);
            &[]
        }
        Some(data) => data,
        None => &[],
    };
    let mut written = false;
    for part in [&out[..], rest] {
        write_all(&mut conn.io, part, &mut written)
            .await
            .map_err(|error| Failed {
                error: error.into(),
                written,
                received: false,
            })?;
    }
    let head_request = req.method() == Method::HEAD;
    read_head(conn, head_request)
        .await
        .map_err(|(error, received)| Failed {
            error,
            written: true,
            received,
        })
}

/// Writes all of `buf`, noting in `written` once any of it went out.
async fn write_all(io: &mut TcpStream, mut buf: &[u8], written: &mut bool) -> io::Result<()> {
    while !buf.is_empty() {
        let n = io.write(buf).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        *written = true;
        buf = &buf[n..];
    }
    Ok(())
}

/// The request line and headers, with `Content-Length` set from the held body.
fn encode_head(req: &Request<RequestBody>, body_len: usize, out: &mut BytesMut) {
    out.put_slice(req.method().as_str().as_bytes());
    out.put_u8(b' ');
    let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    out.put_slice(if target.is_empty() {
        b"/"
    } else {
        target.as_bytes()
    });
    out.put_slice(b" HTTP/1.1\r\n");
    let mut had_length = false;
    for (name, value) in req.headers() {
        if name == header::CONTENT_LENGTH {
            had_length = true;
            continue;
        }
        wire::put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let method = req.method();
    if body_len > 0
        || had_length
        || *method == Method::POST
        || *method == Method::PUT
        || *method == Method::PATCH
    {
        wire::put_content_length(out, body_len as u64);
    }
    out.put_slice(b"\r\n");
}

/// Reads until a final (non-1xx) response head is complete. On failure, also says whether any
/// response byte had arrived.
async fn read_head(conn: &mut Conn, head_request: bool) -> Result<Head, (Error, bool)> {
    let mut received = false;
    loop {
        if !conn.buf.is_empty() {
            match parse_head(&mut conn.buf, head_request).map_err(|e| (e, true))? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim => continue,
                Parsed::Partial => {}
            }
        }
        if conn.buf.len() >= MAX_HEAD {
            return Err((Error::HeadTooLarge, true));
        }
        conn.buf.reserve(READ_SIZE);
        match conn.io.read_buf(&mut conn.buf).await {
            Ok(0) if received => return Err((Error::Closed, true)),
            Ok(0) => return Err((Error::Closed, false)),
            Ok(_) => received = true,
            Err(e) => return Err((e.into(), received)),
        }
    }
}

enum Parsed {
    Final(Head),
    /// A 1xx head, consumed.
    Interim,
    /// More bytes needed.
    Partial,
}

/// What the headers that decide framing and reuse said.
#[derive(Default)]
struct Framers {
    length: Option<u64>,
    /// Whether `Transfer-Encoding` was there, and whether its last coding is `chunked`.
    transfer_encoding: bool,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

impl Framers {
    /// Notes what `name: value` says; false when the header is hop-by-hop and need not be kept.
    /// (The forward stage would strip it anyway; dropped here, it is neither added to the map
    /// nor removed from it. A `Connection` naming other headers stays, for the forward stage to
    /// strip those.)
    fn see(&mut self, name: &[u8], value: &[u8]) -> Result<bool, Error> {
        if name.eq_ignore_ascii_case(b"content-length") {
            for part in value.split(|b| *b == b',') {
                let n =
                    parse_length(part.trim_ascii()).ok_or(Error::Invalid("bad content-length"))?;
                if self.length.is_some_and(|l| l != n) {
                    return Err(Error::Invalid("conflicting content-length"));
                }
                self.length = Some(n);
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.transfer_encoding = true;
            let last = value.rsplit(|b| *b == b',').next().unwrap_or_default();
            self.chunked = last.trim_ascii().eq_ignore_ascii_case(b"chunked");
            return Ok(false);
        } else if name.eq_ignore_ascii_case(b"connection") {
            let mut only_ours = true;
            for token in value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    self.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    self.keep_alive = true;
                } else if !token.is_empty() {
                    only_ours = false;
                }
            }
            return Ok(!only_ours);
        } else if name.eq_ignore_ascii_case(b"keep-alive")
            || name.eq_ignore_ascii_case(b"proxy-connection")
            || name.eq_ignore_ascii_case(b"te")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Ok(false);
        }
        Ok(true)
    }
}

fn parse_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// Parses a response head at the front of `buf`, taking it out of `buf` once complete.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, Error> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut spans: [Span; MAX_HEADERS] = [[0; 4]; MAX_HEADERS];
    let mut framers = Framers::default();
    let (len, code, minor, count) = {
        let mut resp = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)?
        {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(Parsed::Partial),
        };
        let mut count = 0;
        for h in resp.headers.iter() {
            if framers.see(h.name.as_bytes(), h.value)? {
                spans[count] = wire::span(buf, h);
                count += 1;
            }
        }
        let code = resp.code.ok_or(Error::Invalid("no status"))?;
        (len, code, resp.version.unwrap_or(1), count)
    };
    let head = buf.split_to(len).freeze();
    if (100..200).contains(&code) {
        if code == 101 {
            return Err(Error::Invalid("101 to a request that asked for no upgrade"));
        }
        return Ok(Parsed::Interim);
    }
    let status = StatusCode::from_u16(code).map_err(|_| Error::Invalid("bad status"))?;
    let headers =
        // Room for the `connection: close` a drain adds.
        wire::header_map(&head, &spans[..count], 1).ok_or(Error::Invalid("bad header"))?;
    let no_body =
        head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let framing = if no_body {
        Framing::Length(0)
    } else if framers.transfer_encoding {
        if framers.chunked {
            Framing::Chunked(Chunk::Size)
        } else {
            Framing::Close
        }
    } else {
        match framers.length {
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let keep_alive = framing != Framing::Close
        && !(framers.transfer_encoding && framers.length.is_some())
        && !framers.close
        && (minor == 1 || framers.keep_alive);
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    parts.headers = headers;
    Ok(Parsed::Final(Head {
        parts,
        framing,
        keep_alive,
    }))
}

/// Where a connection goes back once its response body has ended cleanly: its endpoint's pool.
pub trait Pool {
    fn checkin(self, conn: Conn);
}

/// A response body read straight off its connection, which goes back to its pool `P` once the
/// body has ended cleanly. Dropped before then, it closes the connection.
pub struct Body<P> {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    done: bool,
    checkin: Option<P>,
}

impl<P: Pool> Body<P> {
    pub fn new(conn: Conn, head: &Head, checkin: P) -> Self {
        let mut body = Body {
            conn: Some(conn),
            framing: head.framing,
            keep_alive: head.keep_alive,
            done: false,
            checkin: Some(checkin),
        };
        if body.framing == Framing::Length(0) {
            body.finish();
        }
        body
    }

    /// The body has ended: the connection goes back to its pool if it can be reused.
    fn finish(&mut self) {
        self.done = true;
        let (Some(mut conn), Some(checkin)) = (self.conn.take(), self.checkin.take()) else {
            return;
        };
        if self.keep_alive && conn.buf.is_empty() {
            // Give back what the last read left over, so an idle connection holds no buffer.
            conn.buf = BytesMut::new();
            checkin.checkin(conn);
        }
    }

    /// Reads more into the connection's buffer, making room for up to `want` bytes; 0 means the
    /// connection closed.
    fn poll_fill(&mut self, cx: &mut Context<'_>, want: usize) -> Poll<Result<usize, Error>> {
        let conn = self.conn.as_mut().ok_or(Error::Closed)?;
        conn.buf.reserve(want);
        let n = ready!(tokio_util::io::poll_read_buf(
            Pin::new(&mut conn.io),
            cx,
            &mut conn.buf
        ))?;
        Poll::Ready(Ok(n))
    }

    fn buf(&mut self) -> &mut BytesMut {
        &mut self
            .conn
            .as_mut()
            .expect("the connection is held until the body ends")
            .buf
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        loop {
            match self.framing {
                Framing::Length(0) => {
                    self.finish();
                    return Poll::Ready(None);
                }
                Framing::Length(remaining) => {
                    if self.buf().is_empty() {
                        let want = usize::try_from(remaining)
                            .unwrap_or(MAX_READ)
                            .clamp(READ_SIZE, MAX_READ);
                        if ready!(self.poll_fill(cx, want))? == 0 {
                            return Poll::Ready(Some(Err(Error::Closed)));
                        }
                    }
                    let buf = self.buf();
                    let take = buf
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    let data = buf.split_to(take).freeze();
                    self.framing = Framing::Length(remaining - take as u64);
                    if self.framing == Framing::Length(0) {
                        self.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Close => {
                    if self.buf().is_empty() && ready!(self.poll_fill(cx, READ_SIZE))? == 0 {
                        self.finish();
                        return Poll::Ready(None);
                    }
                    let data = self.buf().split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Framing::Chunked(chunk) => {
                    if let Some(frame) = ready!(self.poll_chunked(cx, chunk))? {
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    if self.done {
                        return Poll::Ready(None);
                    }
                }
            }
        }
    }

    /// One step of chunked decoding: a frame, or `None` when the state moved on (or the body
    /// ended, which sets `done`).
    fn poll_chunked(
        &mut self,
        cx: &mut Context<'_>,
        chunk: Chunk,
    ) -> Poll<Result<Option<Frame<Bytes>>, Error>> {
        let next = match chunk {
            Chunk::Size => match httparse::parse_chunk_size(self.buf()) {
                Ok(httparse::Status::Complete((used, size))) => {
                    self.buf().advance(used);
                    if size == 0 {
                        Chunk::Trailers
                    } else {
                        Chunk::Data(size)
                    }
                }
                Ok(httparse::Status::Partial) => {
                    if self.buf().len() > MAX_CHUNK_LINE {
                        return Poll::Ready(Err(Error::Invalid("chunk-size line too long")));
                    }
                    ready!(self.fill_or_fail(cx))?;
                    return Poll::Ready(Ok(None));
                }
                Err(_) => return Poll::Ready(Err(Error::Invalid("bad chunk size"))),
            },
            Chunk::Data(remaining) => {
                if self.buf().is_empty() {
                    ready!(self.fill_or_fail(cx))?;
                }
                let buf = self.buf();
                let take = buf
                    .len()
                    .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                let data = buf.split_to(take).freeze();
                let left = remaining - take as u64;
                self.framing = Framing::Chunked(if left == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left)
                });
                return Poll::Ready(Ok(Some(Frame::data(data))));
            }
            Chunk::DataEnd => {
                if self.buf().len() < 2 {
                    ready!(self.fill_or_fail(cx))?;
                    return Poll::Ready(Ok(None));
                }
                if &self.buf()[..2] != b"\r\n" {
                    return Poll::Ready(Err(Error::Invalid("chunk data not followed by CRLF")));
                }
                self.buf().advance(2);
                Chunk::Size
            }
            Chunk::Trailers => {
                if self.buf().starts_with(b"\r\n") {
                    self.buf().advance(2);
                    self.finish();
                    return Poll::Ready(Ok(None));
                }
                let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
                match httparse::parse_headers(self.buf(), &mut fields) {
                    Ok(httparse::Status::Complete((used, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for f in fields {
                            let name = HeaderName::from_bytes(f.name.as_bytes())
                                .map_err(|_| Error::Invalid("bad trailer name"))?;
                            let value = HeaderValue::from_bytes(f.value)
                                .map_err(|_| Error::Invalid("bad trailer value"))?;
                            trailers.append(name, value);
                        }
                        self.buf().advance(used);
                        self.finish();
                        return Poll::Ready(Ok(Some(Frame::trailers(trailers))));
                    }
                    Ok(httparse::Status::Partial) => {
                        if self.buf().len() > MAX_TRAILERS {
                            return Poll::Ready(Err(Error::Invalid("trailers too long")));
                        }
                        ready!(self.fill_or_fail(cx))?;
                        return Poll::Ready(Ok(None));
                    }
                    Err(_) => return Poll::Ready(Err(Error::Invalid("bad trailers"))),
                }
            }
        };
        self.framing = Framing::Chunked(next);
        Poll::Ready(Ok(None))
    }

    /// Reads more of a body that must not end yet.
    fn fill_or_fail(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        match ready!(self.poll_fill(cx, READ_SIZE))? {
            0 => Poll::Ready(Err(Error::Closed)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl<P: Pool + Unpin> http_body::Body for Body<P> {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let polled = this.poll_next(cx);
        if let Poll::Ready(Some(Err(_))) = polled {
            // A broken body: the connection cannot be reused.
            this.done = true;
            this.conn = None;
            this.checkin = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            _ if self.done => SizeHint::with_exact(0),
            Framing::Length(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests;
