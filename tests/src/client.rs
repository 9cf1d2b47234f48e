//! hyper clients, for what curl cannot show a test: HTTP/2 trailers, the moment each
//! Server-Sent Event arrives, whether an HTTP/2 connection got a GOAWAY.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

use crate::TIMEOUT;

/// An HTTP/2 (prior knowledge) connection: the sender, and the task driving the connection,
/// which finishes when the connection ends (after a GOAWAY, for instance).
pub struct H2 {
    pub sender: http2::SendRequest<Empty<Bytes>>,
    pub connection: JoinHandle<Result<(), hyper::Error>>,
}

/// Opens an HTTP/2 connection to `addr` without an upgrade (h2c prior knowledge).
pub async fn http2(addr: SocketAddr) -> H2 {
    let stream = crate::tcp::Conn::connect(addr).await.into_inner();
    let (sender, connection) = crate::within(
        "an HTTP/2 handshake",
        TIMEOUT,
        http2::handshake(TokioExecutor::new(), TokioIo::new(stream)),
    )
    .await
    .expect("HTTP/2 handshake");
    H2 {
        sender,
        connection: tokio::spawn(connection),
    }
}

/// Opens an HTTP/1.1 connection to `addr`.
pub async fn http1(addr: SocketAddr) -> http1::SendRequest<Empty<Bytes>> {
    let stream = crate::tcp::Conn::connect(addr).await.into_inner();
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP/1 handshake");
    tokio::spawn(connection);
    sender
}

/// `GET` for `http://authority{path}` with no body (`Host` / `:authority` = `authority`).
pub fn get(authority: &str, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("http://{authority}{path}"))
        .header("host", authority)
        .body(Empty::new())
        .expect("request")
}

/// A whole response: head, body, trailers.
#[derive(Debug)]
pub struct Reply {
    pub head: http::response::Parts,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

/// Reads a response to the end, trailers included.
pub async fn collect(response: Response<Incoming>) -> Reply {
    let (head, body) = response.into_parts();
    let collected = crate::within("a response body", TIMEOUT, body.collect())
        .await
        .expect("read response body");
    let trailers = collected.trailers().cloned();
    Reply {
        head,
        body: collected.to_bytes(),
        trailers,
    }
}

/// Server-Sent Events as a client saw them: the status, and each event with the moment it
/// arrived.
#[derive(Debug)]
pub struct Events {
    pub status: u16,
    pub events: Vec<(Instant, String)>,
}

/// `GET http://authority{path}` through `addr` over HTTP/1.1, reading the response as an event
/// stream until it ends (at most `within`), timing each event (`\n\n`-terminated) on arrival.
pub async fn events(addr: SocketAddr, authority: &str, path: &str, within: Duration) -> Events {
    let mut sender = http1(addr).await;
    let response = crate::within(
        "the event stream's head",
        within,
        sender.send_request(get(authority, path)),
    )
    .await
    .expect("send request");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut pending = Vec::new();
    let mut events = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.expect("event stream broke");
            let Some(data) = frame.data_ref() else {
                continue;
            };
            pending.extend_from_slice(data);
            while let Some(end) = pending.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = pending.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event).trim().to_owned();
                events.push((Instant::now(), text));
            }
        }
    };
    crate::within("the event stream to end", within, read).await;
    Events { status, events }
}
