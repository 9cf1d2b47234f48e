//! The request-framing guard (`proxy/src/http/framing.rs`) on arbitrary client bytes.
//!
//! The guard follows an HTTP/1 connection's requests in front of hyper and names the first one
//! framed two ways (`Content-Length` and `Transfer-Encoding`: request smuggling), which the
//! proxy then refuses. Three properties, on any bytes:
//! - it never panics, however the bytes are framed or broken;
//! - its verdict does not depend on how the bytes were split into reads;
//! - when hyper would accept the first request head (checked with httparse, hyper's parser, and
//!   hyper's own rules for these two headers) and that head carries both headers, the guard
//!   names request 1: a conflict hyper would resolve silently is never forwarded. (Upgrades and
//!   `CONNECT`, which the guard documents it leaves alone, are excluded.)
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use herd_fuzz::{Pieces, pieces, seed_and_data};
use herd_proxy::http::framing::FramingGuard;
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};

/// Larger than any input, so the guard's head limit (which hyper enforces first, with 431)
/// never applies and the verdict can be compared across splits.
const MAX_HEAD: usize = 1 << 20;

/// hyper's limit on header fields in a request head.
const MAX_HEADERS: usize = 100;

fuzz_target!(|input: &[u8]| {
    let Some((seed, data)) = seed_and_data(input) else {
        return;
    };
    let whole = verdict(
        data,
        vec![data.len()].into_iter().filter(|&n| n > 0).collect(),
    );
    let split = verdict(data, pieces(seed, data.len()));
    assert_eq!(
        whole, split,
        "the verdict depends on how the bytes were read"
    );
    if hyper_accepts_a_head_with_both(data) {
        assert_eq!(
            whole,
            Some(1),
            "request 1 has both headers and was not refused"
        );
    }
});

/// Reads `data` through a guard, in pieces of `lengths`, to the end; returns the request the
/// guard found framed two ways, if any.
fn verdict(data: &[u8], lengths: Vec<usize>) -> Option<u64> {
    let (mut guard, conflict) = FramingGuard::new(Pieces::new(data, lengths), MAX_HEAD);
    let mut cx = Context::from_waker(Waker::noop());
    let mut storage = vec![0u8; data.len().max(1)];
    loop {
        let mut buf = ReadBuf::new(&mut storage);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
            Poll::Ready(Ok(())) => {}
            other => panic!("an in-memory read ended with {other:?}"),
        }
    }
    // A request takes at least two bytes (a line and its blank line), so no later number exists.
    (1..=data.len() as u64).find(|&n| conflict.is(n))
}

/// Whether hyper would accept the first request head in `data` as it is, and it carries both
/// `Content-Length` and `Transfer-Encoding`: hyper then frames the body as chunked and drops
/// the length. hyper's rules (its `role.rs`): `Transfer-Encoding` only in HTTP/1.1 and with
/// `chunked` last; a `Content-Length` before the first `Transfer-Encoding` must be digits, and
/// all such equal; one after it is ignored.
fn hyper_accepts_a_head_with_both(data: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(data), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    if request.version != Some(1) || request.method == Some("CONNECT") {
        return false;
    }
    let mut length: Option<u64> = None;
    let mut te = false;
    let mut chunked = false;
    let mut has_length = false;
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("upgrade") {
            return false;
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            te = true;
            // hyper reads the value as visible ASCII (`HeaderValue::to_str`), or not chunked.
            let visible = header
                .value
                .iter()
                .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b));
            chunked = visible
                && header
                    .value
                    .rsplit(|&b| b == b',')
                    .next()
                    .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            has_length = true;
            if te {
                continue;
            }
            let value = header.value;
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                return false;
            }
            let Some(n) = std::str::from_utf8(value)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
            else {
                return false;
            };
            if length.is_some_and(|previous| previous != n) {
                return false;
            }
            length = Some(n);
        }
    }
    te && chunked && has_length
}
