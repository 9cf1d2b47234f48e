use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::endpoint::{Checkin, Endpoint, PoolKey, Wire};

fn head_of(bytes: &[u8], head_request: bool) -> Result<Head, Error> {
    let mut buf = BytesMut::from(bytes);
    loop {
        match parse_head(&mut buf, head_request)? {
            Parsed::Final(head) => return Ok(head),
            Parsed::Interim => continue,
            Parsed::Partial => panic!("partial head"),
        }
    }
}

#[test]
fn framing_follows_rfc_9112() {
    let h = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false).unwrap();
    assert_eq!((h.framing, h.keep_alive), (Framing::Length(12), true));
    assert_eq!(h.parts.headers["content-length"], "12");
    // HEAD, 204 and 304 have no body whatever they say.
    let h = head_of(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", true).unwrap();
    assert_eq!(h.framing, Framing::Length(0));
    for status in ["204 No Content", "304 Not Modified"] {
        let text = format!("HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(
            head_of(text.as_bytes(), false).unwrap().framing,
            Framing::Length(0)
        );
    }
    let h = head_of(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(
        (h.framing, h.keep_alive),
        (Framing::Chunked(Chunk::Size), true)
    );
    // A coding other than chunked last, or no framing header at all: the body runs to the close.
    let h = head_of(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).unwrap();
    assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
    let h = head_of(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap();
    assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
    // Both headers: chunked wins, and the connection is not reused.
    let h = head_of(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(
        (h.framing, h.keep_alive),
        (Framing::Chunked(Chunk::Size), false)
    );
    // Repeated lengths must agree.
    let h = head_of(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.framing, Framing::Length(5));
    for bad in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1e3\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        assert!(
            matches!(head_of(bad, false), Err(Error::Invalid(_))),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn reuse_follows_the_version_and_connection_header() {
    let h = head_of(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(!h.keep_alive);
    let h = head_of(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", false).unwrap();
    assert!(!h.keep_alive);
    assert_eq!(h.parts.version, Version::HTTP_10);
    let h = head_of(
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: Keep-Alive\r\n\r\n",
        false,
    )
    .unwrap();
    assert!(h.keep_alive);
}

#[test]
fn interim_responses_are_dropped_and_101_is_refused() {
    let mut buf = BytesMut::from(
        &b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"[..],
    );
    assert!(matches!(parse_head(&mut buf, false), Ok(Parsed::Interim)));
    let Ok(Parsed::Final(head)) = parse_head(&mut buf, false) else {
        panic!("no final head");
    };
    assert_eq!(head.parts.status, StatusCode::OK);
    assert!(!head.parts.headers.contains_key("link"));
    assert_eq!(&buf[..], b"ok", "the body stays in the buffer");
    assert!(matches!(
        head_of(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            false
        ),
        Err(Error::Invalid(_))
    ));
    let mut partial = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
    assert!(matches!(
        parse_head(&mut partial, false),
        Ok(Parsed::Partial)
    ));
    assert_eq!(
        partial.len(),
        27,
        "nothing is consumed until the head is whole"
    );
    assert!(matches!(
        head_of(b"HTTP/1.1 200 OK\r\nBad Header: x\r\n\r\n", false),
        Err(Error::Parse(_))
    ));
}

#[test]
fn header_values_keep_their_bytes_and_order() {
    let h = head_of(
        b"HTTP/1.1 404 Not Found\r\nSet-Cookie: a=1\r\nX-Thing: \xe2\x9c\x93\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.parts.status, StatusCode::NOT_FOUND);
    let cookies: Vec<_> = h.parts.headers.get_all("set-cookie").iter().collect();
    assert_eq!(cookies, ["a=1", "b=2"]);
    assert_eq!(h.parts.headers["x-thing"].as_bytes(), "✓".as_bytes());
}

fn request(
    method: Method,
    body: Option<&'static str>,
    length: Option<&str>,
) -> Request<RequestBody> {
    let mut req = Request::new(RequestBody::Buffered {
        data: body.map(|b| Bytes::from_static(b.as_bytes())),
        trailers: None,
    });
    *req.method_mut() = method;
    *req.uri_mut() = "/api/v1/timelines/home?limit=20".parse().unwrap();
    req.headers_mut()
        .insert("host", HeaderValue::from_static("web"));
    if let Some(length) = length {
        req.headers_mut()
            .insert("content-length", HeaderValue::from_str(length).unwrap());
    }
    req
}

fn encoded(req: &Request<RequestBody>) -> String {
    let len = match req.body() {
        RequestBody::Buffered { data, .. } => data.as_ref().map_or(0, Bytes::len),
        RequestBody::Stream { .. } => unreachable!(),
    };
    let mut out = BytesMut::new();
    encode_head(req, len, &mut out);
    String::from_utf8(out.to_vec()).unwrap()
}

#[test]
fn request_heads_carry_the_held_body_length() {
    assert_eq!(
        encoded(&request(Method::GET, None, None)),
        "GET /api/v1/timelines/home?limit=20 HTTP/1.1\r\nhost: web\r\n\r\n"
    );
    assert_eq!(
        encoded(&request(Method::POST, None, None)),
        "POST /api/v1/timelines/home?limit=20 HTTP/1.1\r\nhost: web\r\ncontent-length: 0\r\n\r\n"
    );
    // The length is the body's, whatever the client claimed (hyper checked the two agreed).
    assert_eq!(
        encoded(&request(Method::PUT, Some("hello"), Some("5"))),
        "PUT /api/v1/timelines/home?limit=20 HTTP/1.1\r\nhost: web\r\ncontent-length: 5\r\n\r\n"
    );
    assert!(eligible(&request(Method::POST, Some("x"), None)));
    let mut upgrade = request(Method::GET, None, None);
    upgrade
        .headers_mut()
        .insert("upgrade", HeaderValue::from_static("websocket"));
    assert!(!eligible(&upgrade));
}

fn endpoint(addr: SocketAddr) -> Arc<Endpoint> {
    Endpoint::new(PoolKey {
        addr,
        wire: Wire::Http1,
        connect_timeout: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        max_connections: 10,
        max_concurrent_streams: 100,
        peer: None,
    })
}

/// Sends a GET over loopback to a server that answers with `parts`, written one at a time, and
/// returns the request the server read, the response's head and its body collected (or the
/// error), and the endpoint, to see whether the connection went back to its pool.
async fn exchange_with(
    parts: Vec<&'static [u8]>,
) -> (
    String,
    Head,
    Result<(Bytes, Option<HeaderMap>), Error>,
    Arc<Endpoint>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = vec![0u8; 4096];
        let n = socket.read(&mut seen).await.unwrap();
        for part in parts {
            socket.write_all(part).await.unwrap();
            socket.flush().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Hold the connection open a little, as a keep-alive server would.
        tokio::time::sleep(Duration::from_millis(50)).await;
        String::from_utf8_lossy(&seen[..n]).into_owned()
    });
    let endpoint = endpoint(addr);
    let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let head = exchange(&mut conn, &request(Method::GET, None, None))
        .await
        .unwrap();
    let checkin = Checkin {
        endpoint: endpoint.clone(),
        _slot: None,
    };
    let body = Body::new(conn, &head, checkin);
    let collected = body.collect().await.map(|c| {
        let trailers = c.trailers().cloned();
        (c.to_bytes(), trailers)
    });
    let seen = server.await.unwrap();
    (seen, head, collected, endpoint)
}

#[tokio::test]
async fn a_length_framed_body_ends_and_its_connection_is_pooled() {
    let (seen, head, body, endpoint) = exchange_with(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhel",
        b"lo ",
        b"world",
    ])
    .await;
    assert_eq!(
        seen,
        "GET /api/v1/timelines/home?limit=20 HTTP/1.1\r\nhost: web\r\n\r\n"
    );
    assert_eq!(head.parts.status, StatusCode::OK);
    assert_eq!(body.unwrap().0, "hello world");
    assert_eq!(endpoint.idle_connections(), 1);
}

#[tokio::test]
async fn a_chunked_body_is_decoded_across_reads_with_its_trailers() {
    let (_, _, body, endpoint) = exchange_with(vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhel",
        b"lo\r\n6\r",
        b"\n world\r\n0\r\nx-checksum: abc\r\n",
        b"\r\n",
    ])
    .await;
    let (data, trailers) = body.unwrap();
    assert_eq!(data, "hello world");
    assert_eq!(trailers.unwrap()["x-checksum"], "abc");
    assert_eq!(endpoint.idle_connections(), 1);
}

#[tokio::test]
async fn a_chunked_body_without_trailers_is_pooled_too() {
    let (_, _, body, endpoint) = exchange_with(vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ])
    .await;
    assert_eq!(body.unwrap(), (Bytes::from_static(b"ok"), None));
    assert_eq!(endpoint.idle_connections(), 1);
}

#[tokio::test]
async fn a_body_cut_short_is_an_error_and_its_connection_is_dropped() {
    let (_, _, body, endpoint) =
        exchange_with(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"]).await;
    assert!(matches!(body, Err(Error::Closed)), "{body:?}");
    assert_eq!(endpoint.idle_connections(), 0);
    let (_, _, body, _) = exchange_with(vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ])
    .await;
    assert!(matches!(body, Err(Error::Invalid(_))), "{body:?}");
}

#[tokio::test]
async fn a_body_framed_by_the_close_runs_to_it() {
    let (_, head, body, endpoint) =
        exchange_with(vec![b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"]).await;
    assert_eq!(head.framing, Framing::Close);
    assert_eq!(body.unwrap().0, "all of it");
    assert_eq!(endpoint.idle_connections(), 0);
}

#[tokio::test]
async fn bytes_beyond_the_body_keep_the_connection_out_of_the_pool() {
    let (_, _, body, endpoint) = exchange_with(vec![
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
    ])
    .await;
    assert_eq!(body.unwrap().0, "ok");
    assert_eq!(endpoint.idle_connections(), 0);
}

#[tokio::test]
async fn an_idle_connection_the_peer_closed_is_not_usable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let (socket, _) = listener.accept().await.unwrap();
    // Let the runtime register the socket, as a pooled connection's would be.
    tokio::task::yield_now().await;
    assert!(conn.is_usable());
    drop(socket);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while conn.is_usable() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(!conn.is_usable());
}

#[tokio::test]
async fn a_connection_closed_before_any_response_says_so() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut seen = [0u8; 1024];
        let _ = socket.read(&mut seen).await;
    });
    let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
    let failed = exchange(&mut conn, &request(Method::GET, None, None))
        .await
        .err()
        .unwrap();
    server.await.unwrap();
    assert!(matches!(failed.error, Error::Closed));
    assert!(failed.written && !failed.received);
}

#[tokio::test]
async fn response_heads_may_be_as_large_as_hyper_allows() {
    // Each server answers one GET with a head carrying a `size`-byte header value.
    async fn exchange_head(size: usize) -> Result<Head, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = [0u8; 4096];
            let _ = socket.read(&mut seen).await.unwrap();
            let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nx-big: ".to_vec();
            response.resize(response.len() + size, b'a');
            response.extend_from_slice(b"\r\n\r\n");
            // The proxy stops reading at its limit and drops the connection.
            let _ = socket.write_all(&response).await;
        });
        let mut conn = Conn::new(TcpStream::connect(addr).await.unwrap());
        exchange(&mut conn, &request(Method::GET, None, None))
            .await
            .map_err(|failed| failed.error)
    }
    let big = exchange_head(300 * 1024).await.unwrap();
    assert_eq!(big.parts.headers["x-big"].len(), 300 * 1024);
    // The limit is checked between reads, so a head is refused somewhere past it.
    let too_big = exchange_head(2 * MAX_HEAD).await;
    assert!(
        matches!(too_big, Err(Error::HeadTooLarge)),
        "{:?}",
        too_big.as_ref().err()
    );
}

#[test]
fn hop_by_hop_headers_are_left_out_of_the_map() {
    let h = head_of(
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nTransfer-Encoding: chunked\r\nX-App: 1\r\n\r\n",
        false,
    )
    .unwrap();
    let names: Vec<_> = h.parts.headers.keys().map(|n| n.as_str()).collect();
    assert_eq!(names, ["x-app"]);
    assert!(h.keep_alive);
    // A Connection header naming another header stays, so the forward stage strips that one.
    let h = head_of(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
        false,
    )
    .unwrap();
    assert_eq!(h.parts.headers["connection"], "close, X-Secret");
    assert!(!h.keep_alive);
}
