//! The detect stage: is a new connection HTTP/1, HTTP/2, or something else?
//!
//! Detection reads the client's first bytes, at most [`MAX_PEEK`] of them and for at most the
//! listener's `detectTimeout`, then replays them ([`Rewind`]) to whatever serves the connection.
//! An HTTP/2 client opens with a fixed 24-byte preface; an HTTP/1 client with a method token and
//! a space. Anything else, or silence until the timeout, is opaque: a protocol in which the
//! server speaks first never sends the client bytes detection waits for, which is why such ports
//! must be declared `protocol: opaque` (then this stage is skipped entirely and costs nothing).
//!
//! A TLS client opens with a handshake record: content type 22 and a 3.x record version. Only a
//! proxy with an identity terminates it (mutual TLS from another proxy); elsewhere it is opaque
//! bytes like any other protocol the proxy does not speak.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The record type a TLS client's first bytes carry (RFC 8446 §5.1), followed by version 3.x.
const TLS_HANDSHAKE: u8 = 0x16;
/// Longest method token accepted before the connection is judged not HTTP/1.
const MAX_METHOD: usize = 24;
/// Most bytes read before deciding.
pub const MAX_PEEK: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    /// A TLS handshake record.
    Tls,
    Opaque,
    /// The client closed without sending anything.
    Closed,
}

/// What the bytes so far say; `None` means read more.
fn classify(buf: &[u8]) -> Option<Detected> {
    match buf {
        [TLS_HANDSHAKE] => return None,
        [TLS_HANDSHAKE, 3, ..] => return Some(Detected::Tls),
        _ => {}
    }
    if buf.len() >= H2_PREFACE.len() && buf.starts_with(H2_PREFACE) {
        return Some(Detected::Http2);
    }
    if H2_PREFACE.starts_with(buf) {
        return None;
    }
    for (i, &b) in buf.iter().enumerate() {
        if b == b' ' {
            return Some(if i > 0 {
                Detected::Http1
            } else {
                Detected::Opaque
            });
        }
        if !b.is_ascii_uppercase() || i >= MAX_METHOD {
            return Some(Detected::Opaque);
        }
    }
    None
}

/// Reads from `io` until the protocol is known, `MAX_PEEK` bytes have arrived, or `timeout`
/// passes. Returns the protocol and the stream with the bytes read put back in front.
pub async fn detect<T>(mut io: T, timeout: Duration) -> io::Result<(Detected, Rewind<T>)>
where
    T: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(MAX_PEEK);
    let read = async {
        loop {
            if let Some(d) = classify(&buf) {
                return Ok::<_, io::Error>(d);
            }
            if buf.len() >= MAX_PEEK {
                return Ok(Detected::Opaque);
            }
            if io.read_buf(&mut buf).await? == 0 {
                return Ok(if buf.is_empty() {
                    Detected::Closed
                } else {
                    Detected::Opaque
                });
            }
        }
    };
    let detected = match tokio::time::timeout(timeout, read).await {
        Ok(result) => result?,
        Err(_) => Detected::Opaque,
    };
    Ok((detected, Rewind::new(buf.freeze(), io)))
}

pin_project_lite::pin_project! {
    /// A stream with some already-read bytes put back in front of it.
    pub struct Rewind<T> {
        prefix: Bytes,
        #[pin]
        inner: T,
    }
}

impl<T> Rewind<T> {
    pub fn new(prefix: Bytes, inner: T) -> Self {
        Rewind { prefix, inner }
    }
}

impl<T: AsyncRead> AsyncRead for Rewind<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(out.remaining());
            out.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, out)
    }
}

impl<T: AsyncWrite> AsyncWrite for Rewind<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classifies_first_bytes() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"OPTIONS "), Some(Detected::Http1));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"PRI * HTTP/2"), None);
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http2));
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Detected::Http1));
        assert_eq!(classify(b"\x16\x03\x01\x02"), Some(Detected::Tls));
        assert_eq!(classify(b"\x16"), None);
        assert_eq!(classify(b"\x16\x02"), Some(Detected::Opaque));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b" GET"), Some(Detected::Opaque));
        assert_eq!(classify(&[b'A'; 30]), Some(Detected::Opaque));
    }

    #[tokio::test(start_paused = true)]
    async fn silence_is_opaque_after_the_timeout() {
        let (client, server) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        let (d, _) = detect(server, Duration::from_secs(3)).await.unwrap();
        assert_eq!(d, Detected::Opaque);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_read_are_replayed() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET /x HTTP/1.1\r\n").await.unwrap();
        let (d, mut io) = detect(server, Duration::from_secs(3)).await.unwrap();
        assert_eq!(d, Detected::Http1);
        drop(client);
        let mut all = Vec::new();
        io.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GET /x HTTP/1.1\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_split_preface_is_awaited() {
        let (mut client, server) = tokio::io::duplex(64);
        let task = tokio::spawn(detect(server, Duration::from_secs(3)));
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        let (d, _) = task.await.unwrap().unwrap();
        assert_eq!(d, Detected::Http2);
    }
}
