//! Small in-test servers for what Puma cannot do: h2c with trailers, Server-Sent Events on a
//! clock, WebSocket echo, an app that never answers or reads slowly, server-speaks-first TCP.
//!
//! Every server binds `127.0.0.1:0` itself (no port race), runs on the test's runtime, stops
//! when its [`Server`] handle drops, and counts what it saw ([`Server::connections`],
//! [`Server::requests`], when each connection closed), so a test can assert on the upstream
//! side of the proxy as well as the client side:
//!
//! ```
//! use herd_tests::server::{self, reply};
//!
//! # async fn demo() {
//! let app = server::http1(|_req| async { reply::text("ok") }).await;
//! # }
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::{Digest, TIMEOUT, eventually};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body every in-test server sends.
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// What a server has seen so far.
#[derive(Default)]
struct Stats {
    accepted: AtomicUsize,
    requests: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    closed: Mutex<Vec<Instant>>,
    uploads: Mutex<Vec<Upload>>,
}

/// A request body as a [`slow_reader`] received it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Upload {
    pub bytes: u64,
    pub digest: u64,
}

/// A running in-test server.
pub struct Server {
    addr: SocketAddr,
    stats: Arc<Stats>,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.accepted.load(Ordering::SeqCst)
    }

    /// HTTP requests received so far (HTTP servers only).
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::SeqCst)
    }

    /// Requests being handled right now (HTTP servers only).
    pub fn in_flight(&self) -> usize {
        self.stats.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests that were being handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.stats.max_in_flight.load(Ordering::SeqCst)
    }

    /// When each connection that has ended so far ended (the client closed it, or it failed).
    pub fn closed_at(&self) -> Vec<Instant> {
        self.stats.closed.lock().unwrap().clone()
    }

    /// Request bodies a [`slow_reader`] has received in full.
    pub fn uploads(&self) -> Vec<Upload> {
        self.stats.uploads.lock().unwrap().clone()
    }

    /// Waits until the server has received `n` requests.
    pub async fn wait_for_requests(&self, n: usize) {
        eventually(&format!("{n} requests at the app"), TIMEOUT, || async {
            (self.requests() >= n).then_some(())
        })
        .await;
    }

    /// Waits until `n` connections have been accepted.
    pub async fn wait_for_connections(&self, n: usize) {
        eventually(&format!("{n} connections at the app"), TIMEOUT, || async {
            (self.connections() >= n).then_some(())
        })
        .await;
    }
}

/// Accepts connections and hands each to `serve`, counting them and timing their end.
async fn listen<F, Fut>(stats: Arc<Stats>, serve: F) -> Server
where
    F: Fn(TcpStream, Arc<Stats>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind in-test server");
    serve_listener(listener, stats, serve)
}

/// [`listen`] on an address of the test's choosing (another loopback address such as
/// `127.0.0.2`, `[::1]`, or the port of a server that was stopped). The port may still be held
/// for a moment by a server just dropped, so binding is retried for up to [`TIMEOUT`].
async fn listen_on<F, Fut>(addr: SocketAddr, stats: Arc<Stats>, serve: F) -> Server
where
    F: Fn(TcpStream, Arc<Stats>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = eventually(&format!("{addr} to be free to bind"), TIMEOUT, || async {
        TcpListener::bind(addr).await.ok()
    })
    .await;
    serve_listener(listener, stats, serve)
}

fn serve_listener<F, Fut>(listener: TcpListener, stats: Arc<Stats>, serve: F) -> Server
where
    F: Fn(TcpStream, Arc<Stats>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().expect("local addr");
    let task = tokio::spawn({
        let stats = stats.clone();
        async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                stats.accepted.fetch_add(1, Ordering::SeqCst);
                let _ = stream.set_nodelay(true);
                let done = serve(stream, stats.clone());
                let stats = stats.clone();
                connections.spawn(async move {
                    done.await;
                    stats.closed.lock().unwrap().push(Instant::now());
                });
                // Dropping the JoinSet with the server aborts its connections too.
                while connections.try_join_next().is_some() {}
            }
        }
    });
    Server { addr, stats, task }
}

/// An HTTP/1.1 server answering every request with `handler` (keep-alive on).
pub async fn http1<F, Fut>(handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    http1_with(Arc::default(), handler).await
}

async fn http1_with<F, Fut>(stats: Arc<Stats>, handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    listen(stats, http1_serve(handler)).await
}

/// [`http1`] bound to `addr` instead of a fresh `127.0.0.1` port: a server on `127.0.0.2`, on
/// `[::1]`, or back on the port of one the test stopped.
pub async fn http1_on<F, Fut>(addr: SocketAddr, handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    listen_on(addr, Arc::default(), http1_serve(handler)).await
}

/// Serves one connection as HTTP/1.1 with `handler`, counting requests.
fn http1_serve<F, Fut>(
    handler: F,
) -> impl Fn(TcpStream, Arc<Stats>) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>>
+ Send
+ Sync
+ 'static
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    move |stream, stats| {
        let service = counted(handler.clone(), stats);
        Box::pin(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        })
    }
}

/// An HTTP/2 server (h2c, prior knowledge) answering every request with `handler`.
pub async fn http2<F, Fut>(handler: F) -> Server
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let handler = Arc::new(handler);
    listen(Arc::default(), move |stream, stats| {
        let service = counted(handler.clone(), stats);
        async move {
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
    })
    .await
}

fn counted<F, Fut>(
    handler: Arc<F>,
    stats: Arc<Stats>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
where
    F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    service_fn(move |req| {
        stats.requests.fetch_add(1, Ordering::SeqCst);
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let response = handler(req);
        let stats = stats.clone();
        async move {
            let response = response.await;
            stats.in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok(response)
        }
    })
}

/// A server that answers every request with `body` (HTTP/1.1).
pub async fn text(body: &'static str) -> Server {
    http1(move |_req| async move { reply::text(body) }).await
}

/// A raw TCP server running `handler` on each accepted connection.
pub async fn tcp<F, Fut>(handler: F) -> Server
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    listen(Arc::default(), move |stream, _stats| handler(stream)).await
}

/// Accepts, reads whatever arrives, never answers; the connection stays open.
pub async fn never_answers() -> Server {
    tcp(|mut stream| async move {
        let mut buf = [0u8; 4096];
        // Read until the client gives up; answer nothing.
        while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
    })
    .await
}

/// Reads one HTTP/1 request (its head and a `Content-Length` body), counts it in
/// [`Server::requests`], then resets the connection without answering: an app that crashed
/// with the request in hand, which may or may not have acted on it.
pub async fn resets_after_request() -> Server {
    listen(Arc::default(), |mut stream, stats| async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            match stream.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
        stats.requests.fetch_add(1, Ordering::SeqCst);
        // SO_LINGER 0: close() sends RST instead of FIN.
        let _ = stream.set_zero_linger();
    })
    .await
}

/// An HTTP/2 server (h2c, prior knowledge) that refuses every stream with `REFUSED_STREAM`,
/// counting each in [`Server::requests`]: a server telling the client it did not process the
/// request, so it may safely go elsewhere.
pub async fn refuses_streams() -> Server {
    listen(Arc::default(), |stream, stats| async move {
        let Ok(mut connection) = h2::server::handshake(stream).await else {
            return;
        };
        while let Some(Ok((_request, mut respond))) = connection.accept().await {
            stats.requests.fetch_add(1, Ordering::SeqCst);
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    })
    .await
}

/// Server-speaks-first: writes `banner` on accept, then echoes whatever it reads.
pub async fn banner(banner: &'static [u8]) -> Server {
    tcp(move |mut stream| async move {
        if stream.write_all(banner).await.is_ok() {
            echo_bytes(stream).await;
        }
    })
    .await
}

/// Echoes every byte back until the client closes.
pub async fn tcp_echo() -> Server {
    tcp(echo_bytes).await
}

async fn echo_bytes(stream: TcpStream) {
    let (mut read, mut write) = stream.into_split();
    let _ = tokio::io::copy(&mut read, &mut write).await;
}

/// Reads until the client half-closes, then answers `got N bytes` and closes: works only if
/// the client's FIN reaches it while the way back stays open.
pub async fn replies_after_eof() -> Server {
    tcp(|mut stream| async move {
        let mut received = Vec::new();
        if stream.read_to_end(&mut received).await.is_ok() {
            let reply = format!("got {} bytes", received.len());
            let _ = stream.write_all(reply.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    })
    .await
}

/// A WebSocket server: sends `welcome` on connect (the server speaks on its own), then echoes
/// every text and binary message until the client closes.
pub async fn websocket_echo() -> Server {
    tcp(|stream| async move {
        let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
            return;
        };
        if ws.send(Message::text("welcome")).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = ws.next().await {
            let reply = match message {
                Message::Text(_) | Message::Binary(_) => message,
                Message::Close(_) => break,
                _ => continue,
            };
            if ws.send(reply).await.is_err() {
                break;
            }
        }
    })
    .await
}

/// An HTTP/1.1 app that reads request bodies at no more than `bytes_per_second`, then answers
/// `received N bytes`; each body's size and [`Digest`] are kept in [`Server::uploads`].
pub async fn slow_reader(bytes_per_second: u64) -> Server {
    let stats = Arc::new(Stats::default());
    let handler = {
        let stats = stats.clone();
        move |req: Request<Incoming>| {
            let stats = stats.clone();
            async move {
                let start = Instant::now();
                let mut body = req.into_body();
                let mut bytes = 0u64;
                let mut digest = Digest::default();
                while let Some(frame) = body.frame().await {
                    let Ok(frame) = frame else {
                        return reply::status(400);
                    };
                    if let Some(data) = frame.data_ref() {
                        digest.update(data);
                        bytes += data.len() as u64;
                        let due = Duration::from_secs_f64(bytes as f64 / bytes_per_second as f64);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            tokio::time::sleep(wait).await;
                        }
                    }
                }
                stats.uploads.lock().unwrap().push(Upload {
                    bytes,
                    digest: digest.value(),
                });
                reply::text_owned(format!("received {bytes} bytes"))
            }
        }
    };
    http1_with(stats, handler).await
}

/// Responses the handlers above (and tests' own handlers) build.
pub mod reply {
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{HeaderMap, HeaderValue, Response};
    use http_body_util::{BodyExt, Full, StreamBody};
    use hyper::body::Frame;

    use super::{Body, BoxError};

    fn full(bytes: impl Into<Bytes>) -> Body {
        Full::new(bytes.into())
            .map_err(|never| match never {})
            .boxed()
    }

    /// `200` with a text body.
    pub fn text(body: &'static str) -> Response<Body> {
        text_owned(body.to_owned())
    }

    /// `200` with a text body.
    pub fn text_owned(body: String) -> Response<Body> {
        Response::builder()
            .header("content-type", "text/plain")
            .body(full(body))
            .expect("response")
    }

    /// `200` with a body of arbitrary bytes.
    pub fn bytes(body: impl Into<Bytes>) -> Response<Body> {
        Response::builder()
            .header("content-type", "application/octet-stream")
            .body(full(body))
            .expect("response")
    }

    /// An empty response with `status`.
    pub fn status(status: u16) -> Response<Body> {
        Response::builder()
            .status(status)
            .body(full(Bytes::new()))
            .expect("response")
    }

    /// `200 text/event-stream`: `count` events, event `k` sent `k * interval` after the head,
    /// each as its own frame (`id: k`, `data: event k`).
    pub fn sse(interval: Duration, count: usize) -> Response<Body> {
        sse_timed(interval, count, Arc::default())
    }

    /// [`sse`], noting in `sent` the moment each event is handed to the connection, so a test
    /// can tell how long each took to reach the client.
    pub fn sse_timed(
        interval: Duration,
        count: usize,
        sent: Arc<Mutex<Vec<Instant>>>,
    ) -> Response<Body> {
        let events = futures_util::stream::unfold(0, move |k| {
            let sent = sent.clone();
            async move {
                if k == count {
                    return None;
                }
                if k > 0 {
                    tokio::time::sleep(interval).await;
                }
                sent.lock().unwrap().push(Instant::now());
                let event = Bytes::from(format!("id: {k}\ndata: event {k}\n\n"));
                Some((Ok::<_, BoxError>(Frame::data(event)), k + 1))
            }
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(StreamBody::new(events).boxed())
            .expect("response")
    }

    /// `200 text/event-stream`: `count` events at once, then, `pause` later, the body fails and
    /// the server breaks the response off mid-stream (no final chunk), as a crashing app does.
    pub fn sse_then_break(count: usize, pause: Duration) -> Response<Body> {
        let events = futures_util::stream::iter((0..count).map(|k| {
            Ok::<_, BoxError>(Frame::data(Bytes::from(format!(
                "id: {k}\ndata: event {k}\n\n"
            ))))
        }));
        let failure = futures_util::stream::once(async move {
            tokio::time::sleep(pause).await;
            Err::<Frame<Bytes>, BoxError>("the app broke off its event stream".into())
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(StreamBody::new(futures_util::StreamExt::chain(events, failure)).boxed())
            .expect("response")
    }

    /// `200` with `body`, then trailers `grpc-status: 0` and `grpc-message: ok`, the way a
    /// gRPC server ends a call.
    pub fn with_grpc_trailers(body: &'static str) -> Response<Body> {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        let frames = futures_util::stream::iter([
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(body.as_bytes()))),
            Ok(Frame::trailers(trailers)),
        ]);
        Response::builder()
            .header("content-type", "application/grpc")
            .body(StreamBody::new(frames).boxed())
            .expect("response")
    }
}
