//! Raw sockets: send exact bytes, read exactly what comes back.
//!
//! curl and hyper are polite clients; the cases that matter most at a proxy's edge (pipelining,
//! smuggling, malformed heads, trickled headers, half-closes) need a rude one. [`Conn`] writes
//! whatever a test gives it and parses HTTP/1 responses itself, strictly enough to notice a
//! proxy that gets framing wrong: a HEAD response with a body, a chunk that never ends.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::TIMEOUT;

/// One HTTP/1 response as it came off the wire.
#[derive(Clone, Debug)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    /// The body after de-chunking.
    pub body: Vec<u8>,
    /// Whether the body was chunked on the wire.
    pub chunked: bool,
}

impl Response {
    /// The first header named `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {:?}", self.text()))
    }
}

/// A client connection that sends raw bytes and reads raw or parsed replies.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> Conn {
        let stream = crate::within(
            &format!("connect to {addr}"),
            TIMEOUT,
            TcpStream::connect(addr),
        )
        .await
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Connects, returning the error instead of panicking (to observe a refused connection).
    pub async fn try_connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(Conn {
            stream,
            buf: Vec::new(),
        })
    }

    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.try_send(bytes).await.expect("write to socket");
    }

    pub async fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.stream.write_all(bytes.as_ref()).await
    }

    /// Closes the sending half: the peer reads EOF, and may still reply.
    pub async fn shutdown_write(&mut self) {
        self.stream.shutdown().await.expect("shutdown(SHUT_WR)");
    }

    /// Reads whatever arrives within `wait`; `None` if nothing did, `Some(empty)` on EOF.
    pub async fn read_some(&mut self, wait: Duration) -> Option<Vec<u8>> {
        if !self.buf.is_empty() {
            return Some(std::mem::take(&mut self.buf));
        }
        let mut chunk = vec![0; 64 * 1024];
        match tokio::time::timeout(wait, self.stream.read(&mut chunk)).await {
            Err(_) => None,
            Ok(Ok(n)) => {
                chunk.truncate(n);
                Some(chunk)
            }
            Ok(Err(e)) if is_disconnect(&e) => Some(Vec::new()),
            Ok(Err(e)) => panic!("read from socket: {e}"),
        }
    }

    /// Reads until the peer closes (or resets) the connection; panics after `wait`.
    pub async fn read_to_end(&mut self, wait: Duration) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        let read = async {
            let mut chunk = vec![0; 64 * 1024];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) => return,
                    Ok(n) => out.extend_from_slice(&chunk[..n]),
                    Err(e) if is_disconnect(&e) => return,
                    Err(e) => panic!("read from socket: {e}"),
                }
            }
        };
        crate::within("the peer to close the connection", wait, read).await;
        out
    }

    /// Reads exactly `n` bytes.
    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        let take = self.take(n);
        crate::within("bytes from the peer", TIMEOUT, take)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Whether the peer has closed the connection, judged by reading for at most `wait`
    /// (bytes read meanwhile are discarded).
    pub async fn is_closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.read_some(wait)).await {
                Ok(Some(bytes)) if bytes.is_empty() => return true,
                Ok(Some(_)) => continue,
                Ok(None) | Err(_) => return false,
            }
        }
    }

    /// Reads one response to a request with `method` (which decides whether a body follows).
    /// Interim `1xx` responses other than `101` are skipped.
    pub async fn read_response_to(&mut self, method: &str) -> Response {
        crate::within("an HTTP/1 response", TIMEOUT, self.parse_response(method))
            .await
            .unwrap_or_else(|e| panic!("reading a response: {e}"))
    }

    /// [`Conn::read_response_to`] a `GET`.
    pub async fn read_response(&mut self) -> Response {
        self.read_response_to("GET").await
    }

    /// Reads one response, or says why there is none (closed, malformed).
    pub async fn try_read_response(&mut self, method: &str) -> Result<Response, String> {
        tokio::time::timeout(TIMEOUT, self.parse_response(method))
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    async fn parse_response(&mut self, method: &str) -> Result<Response, String> {
        loop {
            let head = self.read_head().await?;
            let text = String::from_utf8(head).map_err(|_| "response head is not UTF-8")?;
            let mut lines = text.split("\r\n");
            let status_line = lines.next().unwrap_or_default().to_owned();
            let mut parts = status_line.splitn(3, ' ');
            let version = parts.next().unwrap_or_default().to_owned();
            let status: u16 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .filter(|_| version.starts_with("HTTP/1."))
                .ok_or_else(|| format!("bad status line {status_line:?}"))?;
            let mut headers = Vec::new();
            for line in lines.filter(|l| !l.is_empty()) {
                let (n, v) = line
                    .split_once(':')
                    .ok_or_else(|| format!("bad header {line:?}"))?;
                headers.push((n.trim().to_owned(), v.trim().to_owned()));
            }
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let mut response = Response {
                version,
                status,
                headers,
                body: Vec::new(),
                chunked: false,
            };
            let no_body = method.eq_ignore_ascii_case("HEAD")
                || (method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&status))
                || (100..200).contains(&status)
                || status == 204
                || status == 304;
            if no_body {
                return Ok(response);
            }
            let chunked = response
                .header("transfer-encoding")
                .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
            if chunked {
                response.chunked = true;
                response.body = self.read_chunked().await?;
            } else if let Some(len) = response.header("content-length") {
                let len: usize = len
                    .parse()
                    .map_err(|_| format!("bad content-length {len:?}"))?;
                response.body = self.take(len).await?;
            } else {
                response.body = self.read_to_end(TIMEOUT).await;
            }
            return Ok(response);
        }
    }

    async fn read_head(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(head[..end].to_vec());
            }
            self.fill().await?;
        }
    }

    async fn read_line(&mut self) -> Result<Vec<u8>, String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Ok(line[..end].to_vec());
            }
            self.fill().await?;
        }
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, String> {
        let mut body = Vec::new();
        loop {
            let line = String::from_utf8_lossy(&self.read_line().await?).into_owned();
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| format!("bad chunk size line {line:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.read_line().await?.is_empty() {}
                return Ok(body);
            }
            body.extend(self.take(size).await?);
            if !self.read_line().await?.is_empty() {
                return Err("chunk not followed by CRLF".to_owned());
            }
        }
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        while self.buf.len() < n {
            self.fill().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn fill(&mut self) -> Result<(), String> {
        let mut chunk = [0u8; 16 * 1024];
        let have = |buf: &[u8]| String::from_utf8_lossy(buf).into_owned();
        match self.stream.read(&mut chunk).await {
            Ok(0) => Err(format!("connection closed; have {:?}", have(&self.buf))),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) => Err(format!("read: {e}; have {:?}", have(&self.buf))),
        }
    }

    /// The connection's own (client-side) address, as the proxy sees it.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local addr")
    }

    pub fn into_inner(self) -> TcpStream {
        assert!(self.buf.is_empty(), "unread bytes left in the buffer");
        self.stream
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// Sends one `Connection: close` request with `method`, `path` and optional body, and reads the
/// response.
pub async fn request(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> Response {
    let mut conn = Conn::connect(addr).await;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.send([head.as_bytes(), body].concat()).await;
    conn.read_response_to(method).await
}

/// `GET path` on `addr`.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    request(addr, "GET", path, b"").await
}

/// `GET path` on `addr`, `None` if the connection fails or closes early (used while polling a
/// process that may not be listening yet).
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<Response> {
    let mut conn = Conn::try_connect(addr).await.ok()?;
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.try_send(head).await.ok()?;
    tokio::time::timeout(Duration::from_secs(2), conn.parse_response("GET"))
        .await
        .ok()?
        .ok()
}
