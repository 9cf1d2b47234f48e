//! HTTP/1 connections: served by the proxy's own loop while their requests are plain, and by
//! hyper from the first request that is not.
//!
//! hyper's server is general: a dispatcher polls the connection, a service future and a body
//! channel, re-arming timers and wakers on each request. On the path every GET of a Mastodon pod
//! takes, that was about 14,000 instructions per request of the proxy's 36,600 (callgrind, see
//! `benches/RESULTS.md`). This loop does the same work for the common request in a straight line:
//! read and parse the head (httparse), [`forward`] it, write the response head and body, repeat.
//!
//! What the loop serves: HTTP/1.1 requests without a body (no `Transfer-Encoding`, no
//! `Content-Length` other than one `0`), without `Upgrade` or `Expect`, and not `CONNECT`.
//! Anything else, including every malformed or oversized head, is handed to hyper with the bytes
//! read so far, and hyper serves the rest of the connection as it always has: its 400 and 431
//! answers, the request-smuggling guard, request bodies, `100-continue`, upgrades and HTTP/1.0.
//!
//! Both give the client the same behaviour: keep-alive and pipelining (answers in order), a
//! `headerTimeout` for each head (idle time between requests included), `maxHeaderBytes`, a
//! `Date` header when the app sent none, `Content-Length` when the body's length is known and
//! chunked otherwise, trailers only to a client that asked for them (`TE: trailers`), and at
//! drain: idle connections close, a request in flight finishes with `Connection: close`, and
//! the drain deadline cuts the rest. One difference: a client that goes away while its request
//! is in flight is noticed when its response is written (hyper notices at once when the request
//! has no body), so the request runs to its end or its route's timeout.

use std::future::poll_fn;
use std::io::{self, IoSlice, Write as _};
use std::mem::MaybeUninit;
use std::pin::pin;
use std::task::Poll;

use bytes::{BufMut, Bytes, BytesMut};
use herd_config::Downstream;
use http::{Method, Request, Response, StatusCode, Uri, Version, header};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::debug;

use super::{ConnService, forward};
use crate::body::{ClientBody, ResponseBody};
use crate::detect::Rewind;
use crate::drain::Drain;
use crate::wire::{self, DateCache, MAX_HEADERS, Span};

/// Room made for each read (hyper's first read buffer is the same).
const READ_SIZE: usize = 8 * 1024;
/// Body data up to this size is copied next to the head or chunk line, for one write.
const COALESCE: usize = 4 * 1024;

/// What the response's framing needs to know of its request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Asked {
    head: bool,
    /// `Connection: close`.
    close: bool,
    /// `TE: trailers`.
    trailers: bool,
}

/// What one header of a request head says about whether the loop may serve it.
#[derive(Default)]
struct Scan {
    asked: Asked,
    lengths: u32,
}

impl Scan {
    /// False when the request is not the loop's to serve.
    fn see(&mut self, name: &[u8], value: &[u8]) -> bool {
        if name.eq_ignore_ascii_case(b"content-length") {
            self.lengths += 1;
            return self.lengths == 1 && value.trim_ascii() == b"0";
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
            || name.eq_ignore_ascii_case(b"expect")
        {
            return false;
        }
        if name.eq_ignore_ascii_case(b"connection") {
            self.asked.close |= wire::lists(value, b"close");
        } else if name.eq_ignore_ascii_case(b"te") {
            self.asked.trailers |= wire::lists(value, b"trailers");
        }
        true
    }
}

enum Parsed {
    Serve(Request<ClientBody>, Asked),
    /// More bytes needed.
    Partial,
    /// Not the loop's to serve: hyper takes the connection, these bytes first.
    HandOff,
}

/// Parses the request head at the front of `buf`, taking it out of `buf` when the loop serves it.
fn parse(buf: &mut BytesMut, max_head: usize) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut spans: [Span; MAX_HEADERS] = [[0; 4]; MAX_HEADERS];
    let (len, method, target, count, asked) = {
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(buf, &mut slots) {
            Ok(httparse::Status::Complete(len)) if len <= max_head => len,
            Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
            _ => return Parsed::HandOff,
        };
        if req.version != Some(1) {
            return Parsed::HandOff;
        }
        let method = match req.method.map(|m| Method::from_bytes(m.as_bytes())) {
            Some(Ok(m)) if m != Method::CONNECT => m,
            _ => return Parsed::HandOff,
        };
        let mut scan = Scan::default();
        for h in req.headers.iter() {
            if !scan.see(h.name.as_bytes(), h.value) {
                return Parsed::HandOff;
            }
        }
        wire::record_spans(buf, req.headers, &mut spans);
        let path = req.path.unwrap_or_default();
        let start = path.as_ptr() as usize - buf.as_ptr() as usize;
        (
            len,
            method,
            start..start + path.len(),
            req.headers.len(),
            scan.asked,
        )
    };
    let head = buf.split_to(len).freeze();
    let parts = Uri::from_maybe_shared(head.slice(target))
        .ok()
        .zip(wire::header_map(&head, &spans[..count]));
    let Some((uri, headers)) = parts else {
        // Put the head back for hyper, which answers it.
        let mut all = BytesMut::with_capacity(head.len() + buf.len());
        all.extend_from_slice(&head);
        all.extend_from_slice(buf);
        *buf = all;
        return Parsed::HandOff;
    };
    let mut req = Request::new(ClientBody::Empty);
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = headers;
    let asked = Asked {
        head: req.method() == Method::HEAD,
        ..asked
    };
    Parsed::Serve(req, asked)
}

/// Serves one HTTP/1 connection until it ends, draining it when the drain starts.
pub async fn serve<I>(mut io: I, settings: &Downstream, service: ConnService, drain: &Drain)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(READ_SIZE);
    let mut out = BytesMut::new();
    let mut date = DateCache::default();
    let timeout = settings.header_timeout;
    // One timer for the connection's life: moving the deadline on each request only touches it
    // when it fires early, which costs one reset per `headerTimeout` rather than one per request.
    let mut timer = pin!(tokio::time::sleep(timeout));
    let mut started = pin!(drain.started());
    let mut cut = pin!(drain.deadline());
    loop {
        let deadline = Instant::now() + timeout;
        let (req, asked) = loop {
            if !buf.is_empty() {
                match parse(&mut buf, settings.max_header_bytes) {
                    Parsed::Serve(req, asked) => break (req, asked),
                    Parsed::Partial => {}
                    Parsed::HandOff => {
                        let io = Rewind::new(buf.freeze(), io);
                        // Rare: boxed, so this task does not carry hyper's connection.
                        Box::pin(super::serve_hyper_h1(io, settings, service, drain)).await;
                        return;
                    }
                }
            }
            let draining = drain.is_draining();
            if draining && buf.is_empty() {
                return;
            }
            buf.reserve(READ_SIZE);
            tokio::select! {
                biased;
                read = io.read_buf(&mut buf) => match read {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(error) => {
                        debug!(%error, "HTTP/1 connection ended");
                        return;
                    }
                },
                () = &mut timer => {
                    if Instant::now() >= deadline {
                        debug!("no request head within headerTimeout: closing");
                        return;
                    }
                    timer.as_mut().reset(deadline);
                }
                // Idle when the drain starts: close now. (A head begun is finished first.)
                () = &mut started, if !draining => {}
                () = &mut cut => return,
            }
        };
        let snapshot = service.snapshot();
        let ctx = &service.ctx;
        // Boxed, as hyper boxes it: an idle connection's task does not reserve room for a
        // request in flight.
        let exchange = Box::pin(async {
            let resp = forward::forward(req, &snapshot, ctx).await;
            respond(&mut io, resp, asked, &mut date, &mut out).await
        });
        let result = tokio::select! {
            biased;
            result = exchange => result,
            () = &mut cut => return,
        };
        match result {
            Ok(true) => {}
            Ok(false) => {
                let _ = io.shutdown().await;
                return;
            }
            Err(error) => {
                debug!(%error, "HTTP/1 connection ended");
                return;
            }
        }
    }
}

/// How a response's body is framed on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
}

/// Writes `resp`; says whether the connection may carry another request.
async fn respond<I>(
    io: &mut I,
    resp: Response<ResponseBody>,
    asked: Asked,
    date: &mut DateCache,
    out: &mut BytesMut,
) -> io::Result<bool>
where
    I: AsyncWrite + Unpin,
{
    let (parts, body) = resp.into_parts();
    let mut body = pin!(body);
    let status = parts.status;
    let bodiless = asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let framing = match body.size_hint().exact() {
        _ if bodiless => Framing::None,
        Some(n) => Framing::Length(n),
        None => Framing::Chunked,
    };

    out.clear();
    out.put_slice(b"HTTP/1.1 ");
    out.put_slice(status.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.put_slice(b"\r\n");
    let mut close = asked.close;
    let mut said_close = false;
    for (name, value) in &parts.headers {
        // A bodiless response's Content-Length (a HEAD's says what a GET would get) passes as
        // it is; any other is the body's own, written below.
        if name == header::CONTENT_LENGTH && framing != Framing::None {
            continue;
        }
        if name == header::CONNECTION && wire::lists(value.as_bytes(), b"close") {
            close = true;
            said_close = true;
        }
        wire::put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if !parts.headers.contains_key(header::DATE) {
        wire::put_header(out, b"date", date.now().as_bytes());
    }
    match framing {
        Framing::None => {}
        Framing::Length(n) => wire::put_content_length(out, n),
        Framing::Chunked => wire::put_header(out, b"transfer-encoding", b"chunked"),
    }
    if close && !said_close {
        wire::put_header(out, b"connection", b"close");
    }
    out.put_slice(b"\r\n");
    if framing == Framing::None || body.is_end_stream() {
        if framing == Framing::Chunked {
            out.put_slice(b"0\r\n\r\n");
        }
        write_all(io, out, &[]).await?;
        return Ok(!close);
    }

    // The head waits in `out` for the first body bytes if they are ready now, so a small
    // response is one write; otherwise it goes alone, and the body follows as it comes.
    let mut sent = 0u64;
    let mut first = true;
    let mut trailers = None;
    loop {
        let frame = if first {
            first = false;
            match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    write_all(io, out, &[]).await?;
                    out.clear();
                    poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                }
            }
        } else {
            poll_fn(|cx| body.as_mut().poll_frame(cx)).await
        };
        let last = frame.is_none();
        let data = match frame {
            None => Bytes::new(),
            Some(Err(error)) => return Err(io::Error::other(error)),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    Bytes::new()
                }
            },
        };
        let ended = last || trailers.is_some() || body.is_end_stream();
        sent += data.len() as u64;
        if let Framing::Length(n) = framing
            && sent > n
        {
            return Err(io::Error::other("response body longer than its length"));
        }
        if framing == Framing::Chunked && !data.is_empty() {
            let mut line = [0u8; 20];
            let room = line.len();
            let mut cursor = &mut line[..];
            write!(cursor, "{:x}\r\n", data.len()).expect("a chunk-size line fits");
            let used = room - cursor.len();
            out.put_slice(&line[..used]);
        }
        let tail: &[u8] = match framing {
            Framing::Chunked if !data.is_empty() => b"\r\n",
            _ => b"",
        };
        if data.len() <= COALESCE {
            out.put_slice(&data);
            out.put_slice(tail);
            if framing == Framing::Chunked && ended {
                put_last_chunk(out, trailers.take().filter(|_| asked.trailers));
            }
            write_all(io, out, &[]).await?;
        } else {
            write_all(io, out, &data).await?;
            out.clear();
            out.put_slice(tail);
            if framing == Framing::Chunked && ended {
                put_last_chunk(out, trailers.take().filter(|_| asked.trailers));
            }
            if !out.is_empty() {
                write_all(io, out, &[]).await?;
            }
        }
        out.clear();
        if ended {
            break;
        }
    }
    if let Framing::Length(n) = framing
        && sent != n
    {
        return Err(io::Error::other("response body shorter than its length"));
    }
    Ok(!close)
}

/// The last chunk, its trailers and the final CRLF.
fn put_last_chunk(out: &mut BytesMut, trailers: Option<http::HeaderMap>) {
    out.put_slice(b"0\r\n");
    for (name, value) in trailers.iter().flatten() {
        wire::put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.put_slice(b"\r\n");
}

/// Writes `a` then `b`, in as few writes as the socket takes.
async fn write_all<I: AsyncWrite + Unpin>(io: &mut I, a: &[u8], b: &[u8]) -> io::Result<()> {
    let mut slices = [IoSlice::new(a), IoSlice::new(b)];
    let mut bufs = &mut slices[..];
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        let n = io.write_vectored(bufs).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut bufs, n);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
