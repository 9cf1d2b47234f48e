use bytes::Bytes;
use http::HeaderValue;
use tokio::io::AsyncReadExt;

use super::*;

fn parsed(text: &str) -> (Parsed, BytesMut) {
    let mut buf = BytesMut::from(text.as_bytes());
    (parse(&mut buf, 64 * 1024), buf)
}

fn served(text: &str) -> (Request<ClientBody>, Asked, BytesMut) {
    match parsed(text) {
        (Parsed::Serve(req, asked), rest) => (req, asked, rest),
        _ => panic!("not served: {text:?}"),
    }
}

#[test]
fn plain_requests_are_served_and_leave_what_follows() {
    let (req, asked, rest) = served(
        "GET /api/v1/timelines/home?limit=20 HTTP/1.1\r\nHost: web\r\nAccept: */*\r\n\r\nGET /next",
    );
    assert_eq!(req.method(), Method::GET);
    assert_eq!(req.uri(), "/api/v1/timelines/home?limit=20");
    assert_eq!(req.version(), Version::HTTP_11);
    assert_eq!(req.headers()["host"], "web");
    assert_eq!(asked, Asked::default());
    assert_eq!(&rest[..], b"GET /next");

    let (req, _, _) = served("GET http://web.local/x HTTP/1.1\r\n\r\n");
    assert_eq!(req.uri().authority().unwrap(), "web.local");

    let (_, asked, _) = served("HEAD / HTTP/1.1\r\nConnection: Close\r\nTE: trailers\r\n\r\n");
    assert_eq!(
        asked,
        Asked {
            head: true,
            close: true,
            trailers: true
        }
    );
    let (req, _, _) = served("DELETE /x HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(req.headers()["content-length"], "0");
}

#[test]
fn everything_else_goes_to_hyper_untouched() {
    for text in [
        "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET /ws HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        "PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
        "CONNECT web:443 HTTP/1.1\r\nHost: web:443\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "GET /\x7f HTTP/1.1\r\n\r\n",
        "G@T / HTTP/1.1\r\n\r\n",
    ] {
        match parsed(text) {
            (Parsed::HandOff, rest) => assert_eq!(&rest[..], text.as_bytes(), "{text:?}"),
            _ => panic!("served: {text:?}"),
        }
    }
}

#[test]
fn heads_are_awaited_up_to_the_size_limit() {
    let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: we"[..]);
    assert!(matches!(parse(&mut buf, 64), Parsed::Partial));
    assert_eq!(buf.len(), 24);
    // Past the limit, whole or not, hyper answers (431).
    let long = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n", "a".repeat(100));
    let mut buf = BytesMut::from(long.as_bytes());
    assert!(matches!(parse(&mut buf, 64), Parsed::HandOff));
    let whole = format!("{long}\r\n");
    let mut buf = BytesMut::from(whole.as_bytes());
    assert!(matches!(parse(&mut buf, 64), Parsed::HandOff));
    assert_eq!(buf.len(), whole.len());
}

/// What `respond` writes for `resp`, and whether it keeps the connection.
async fn written(resp: Response<ResponseBody>, asked: Asked) -> (String, bool) {
    let (mut client, mut server) = tokio::io::duplex(1 << 12);
    let reader = tokio::spawn(async move {
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        text
    });
    let mut out = BytesMut::new();
    let keep = respond(&mut server, resp, asked, &mut DateCache::default(), &mut out)
        .await
        .unwrap();
    drop(server);
    (reader.await.unwrap(), keep)
}

fn date_free(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("date: "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn a_response_gets_its_length_and_a_date() {
    let mut resp = Response::new(ResponseBody::text("hello"));
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    let (text, keep) = written(resp, Asked::default()).await;
    assert!(keep);
    assert!(text.contains("\r\ndate: "), "{text}");
    assert_eq!(
        date_free(&text),
        "HTTP/1.1 200 OK\ncontent-type: text/plain\ncontent-length: 5\n\nhello"
    );
}

#[tokio::test]
async fn close_is_said_and_kept() {
    let (text, keep) = written(
        Response::new(ResponseBody::empty()),
        Asked {
            close: true,
            ..Asked::default()
        },
    )
    .await;
    assert!(!keep);
    assert!(text.contains("connection: close\r\n"), "{text}");
    let mut resp = Response::new(ResponseBody::text("bye"));
    resp.headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    let (text, keep) = written(resp, Asked::default()).await;
    assert!(!keep);
    assert_eq!(text.matches("connection: close").count(), 1, "{text}");
}

#[tokio::test]
async fn a_head_or_304_answer_keeps_its_length_and_has_no_body() {
    let mut resp = Response::new(ResponseBody::empty());
    resp.headers_mut()
        .insert("content-length", HeaderValue::from_static("1234"));
    let (text, keep) = written(
        resp,
        Asked {
            head: true,
            ..Asked::default()
        },
    )
    .await;
    assert!(keep);
    assert!(text.contains("\r\ncontent-length: 1234\r\n"), "{text}");
    assert!(text.ends_with(" GMT\r\n\r\n"), "a body followed: {text}");
    let mut resp = Response::new(ResponseBody::empty());
    *resp.status_mut() = StatusCode::NOT_MODIFIED;
    let (text, _) = written(resp, Asked::default()).await;
    assert!(text.starts_with("HTTP/1.1 304 Not Modified\r\n"), "{text}");
    assert!(!text.contains("content-length"), "{text}");
}

#[tokio::test]
async fn a_large_body_follows_its_head() {
    let body = Bytes::from(vec![b'x'; 100_000]);
    let (text, _) = written(
        Response::new(ResponseBody::text(body.clone())),
        Asked::default(),
    )
    .await;
    assert!(text.contains("content-length: 100000\r\n"));
    assert!(text.ends_with(std::str::from_utf8(&body).unwrap()));
}
