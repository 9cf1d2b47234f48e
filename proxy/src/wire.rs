//! HTTP/1 heads on the wire, where the proxy reads and writes them itself rather than through
//! hyper: the direct client ([`crate::endpoint::direct`]).
//!
//! httparse finds a head's parts; these helpers turn them into `http` types without copying:
//! each header value is a slice of the head's own bytes (as hyper does), so a head costs one
//! buffer however many headers it has.

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};

/// Headers a head may carry (hyper's default for both sides).
pub const MAX_HEADERS: usize = 100;

/// Where one header's name and value lie in a head: start and end of each. (`u32`s keep an
/// array of [`MAX_HEADERS`] small enough to be cleared cheaply; a head is far below 4 GiB.)
pub type Span = [u32; 4];

/// Where `h` lies in `base`, the buffer httparse parsed it from.
pub fn span(base: &[u8], h: &httparse::Header<'_>) -> Span {
    let start = base.as_ptr() as usize;
    let offset = |p: *const u8| (p as usize - start) as u32;
    let name = offset(h.name.as_ptr());
    let value = offset(h.value.as_ptr());
    [
        name,
        name + h.name.len() as u32,
        value,
        value + h.value.len() as u32,
    ]
}

/// The headers at `spans` of `head`, values sharing its bytes, with room for `room` more (those
/// the proxy adds: growing a map rehashes it). `None` when a name or value is not valid in
/// `http`'s terms.
pub fn header_map(head: &Bytes, spans: &[Span], room: usize) -> Option<HeaderMap> {
    let mut headers = HeaderMap::with_capacity(spans.len() + room);
    for &[n0, n1, v0, v1] in spans {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize)).ok()?;
        headers.append(name, value);
    }
    Some(headers)
}

/// Appends `name: value\r\n`.
pub fn put_header(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_slice(name);
    out.put_slice(b": ");
    out.put_slice(value);
    out.put_slice(b"\r\n");
}

/// Appends `content-length: n\r\n`.
pub fn put_content_length(out: &mut BytesMut, n: u64) {
    put_header(
        out,
        b"content-length",
        itoa::Buffer::new().format(n).as_bytes(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_come_out_of_the_heads_bytes() {
        let text = b"GET / HTTP/1.1\r\nHost: web\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let mut slots = [httparse::EMPTY_HEADER; 8];
        let mut req = httparse::Request::new(&mut slots);
        let len = req.parse(text).unwrap().unwrap();
        let spans: Vec<Span> = req.headers.iter().map(|h| span(text, h)).collect();
        let head = Bytes::from_static(&text[..len]);
        let map = header_map(&head, &spans, 0).unwrap();
        assert_eq!(map["host"], "web");
        let a: Vec<_> = map.get_all("x-a").iter().collect();
        assert_eq!(a, ["1", "2"]);
    }
}
