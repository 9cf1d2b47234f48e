//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream`: enough for readiness probes
//! and the idle-connections scenario (one request per connection, then the socket stays open).

use std::collections::BTreeSet;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Ports this run handed out already: never handed out twice, so two listeners of one run
/// cannot collide even when the kernel offers a port again.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A loopback port nobody listens on right now (bind port 0, read it, close) and that this run
/// has not used before.
pub fn free_port() -> Result<u16> {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    // Hold the rejected ones open so the kernel offers others.
    let mut held = Vec::new();
    for _ in 0..100 {
        let listener = TcpListener::bind(addr(0))?;
        let port = listener.local_addr()?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
        held.push(listener);
    }
    bail!("no free loopback port found")
}

/// Connects and sends `GET path` with `Host: host`, keeping the connection alive; returns the
/// open stream and the response's status once the whole response has been read.
pub fn get(port: u16, host: &str, path: &str, timeout: Duration) -> Result<(TcpStream, u16)> {
    let mut stream = TcpStream::connect_timeout(&addr(port), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_nodelay(true)?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let status = read_response(&mut stream)?;
    Ok((stream, status))
}

/// Where a response's body ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
}

/// Parses a response head (up to and including the blank line): status and framing.
fn parse_head(head: &str) -> Result<(u16, Framing)> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line {status_line:?}"))?;
    let mut framing = Framing::Length(0);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            framing = Framing::Length(value.parse()?);
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            && value.eq_ignore_ascii_case("chunked")
        {
            framing = Framing::Chunked;
        }
    }
    Ok((status, framing))
}

/// Reads one whole response (Content-Length or chunked body) and returns its status.
pub fn read_response(stream: &mut TcpStream) -> Result<u16> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed before the response head ended");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (status, framing) = parse_head(&String::from_utf8_lossy(&buf[..head_end]))?;
    let mut body = buf.split_off(head_end);
    let complete = |body: &[u8]| match framing {
        Framing::Length(n) => body.len() >= n,
        Framing::Chunked => body.ends_with(b"0\r\n\r\n"),
    };
    while !complete(&body) {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(status)
}

/// Whether the peer still holds the connection open (no EOF, no error, nothing unexpected to
/// read).
pub fn still_open(stream: &TcpStream) -> bool {
    if stream.set_nonblocking(true).is_err() {
        return false;
    }
    let mut byte = [0u8; 1];
    let open = matches!(stream.peek(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock);
    let _ = stream.set_nonblocking(false);
    open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_heads() {
        let head = "HTTP/1.1 200 OK\r\nServer: nginx\r\ncontent-length: 2\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (200, Framing::Length(2)));
        let head = "HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_head(head).unwrap(), (502, Framing::Chunked));
        assert!(parse_head("SSH-2.0\r\n\r\n").is_err());
    }
}
