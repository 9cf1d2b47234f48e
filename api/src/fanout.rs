//! The Discovery server, written for fan-out: one update's bytes shared by every stream.
//!
//! A routing or endpoints update goes to every proxy that needs it: thousands of streams. The
//! control plane encodes it once ([`Encoded`], shared [`Bytes`]), and this server hands those
//! same bytes to each stream's HTTP/2 body as they are. tonic's generated server cannot: its
//! encoder copies every message into a per-stream buffer, and that buffer keeps the capacity of
//! the largest message the stream ever sent for as long as the stream lives (measured with the
//! fleet benchmark: ~64 KiB of retained buffer per routing stream, 640 MiB for 10,000 proxies, for
//! a 48 KiB routing document that exists once). Here each message goes out as two body frames,
//! the 5-byte gRPC header and the shared bytes (small messages as one copied frame, cheaper than
//! a second DATA frame), so a stream holds nothing between updates.
//!
//! Requests decode with tonic's [`Streaming`] and prost, with a small initial buffer: proxies
//! send only hellos, watches and verdicts.
//!
//! The wire format is plain gRPC (the generated [`crate::discovery::discovery_client`] talks to
//! it): `content-type: application/grpc`, length-prefixed uncompressed messages, `grpc-status`
//! in the trailers, or trailers-only when a call is refused before its first message.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http_body::Frame;
use prost::Message;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder, Streaming};
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::{Request, Response, Status};

use crate::discovery::{EndpointsRequest, RoutingRequest};
use crate::encoded::Encoded;

/// What a Discovery call answers with: updates already encoded, or the status that ends it.
pub type Updates = Pin<Box<dyn Stream<Item = Result<Encoded, Status>> + Send>>;

/// The largest request message accepted (a watch or a verdict is a few hundred bytes).
pub const MAX_REQUEST: usize = 64 * 1024;

/// Messages up to this size are copied behind their header into one frame; larger ones are sent
/// as they are, after a frame of their own header.
const INLINE: usize = 1024;

/// gRPC's message header: a compression flag and a big-endian length.
const HEADER: usize = 5;

/// The Discovery service (`herd.discovery.v1.Discovery`, documented in its `.proto`), implemented
/// by the control plane.
#[tonic::async_trait]
pub trait Discovery: Send + Sync + 'static {
    async fn routing(
        &self,
        request: Request<Streaming<RoutingRequest>>,
    ) -> Result<Response<Updates>, Status>;

    async fn endpoints(
        &self,
        request: Request<Streaming<EndpointsRequest>>,
    ) -> Result<Response<Updates>, Status>;
}

/// Serves a [`Discovery`] implementation; add it to a `tonic::transport::Server`.
pub struct DiscoveryServer<T>(Arc<T>);

impl<T> DiscoveryServer<T> {
    pub fn new(inner: T) -> Self {
        DiscoveryServer(Arc::new(inner))
    }
}

impl<T> Clone for DiscoveryServer<T> {
    fn clone(&self) -> Self {
        DiscoveryServer(self.0.clone())
    }
}

impl<T> NamedService for DiscoveryServer<T> {
    const NAME: &'static str = "herd.discovery.v1.Discovery";
}

type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<http::Response<tonic::body::Body>, Infallible>> + Send>>;

impl<T, B> tonic::codegen::Service<http::Request<B>> for DiscoveryServer<T>
where
    T: Discovery,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> ResponseFuture {
        let inner = self.0.clone();
        Box::pin(async move {
            let answer = match request.uri().path() {
                "/herd.discovery.v1.Discovery/Routing" => inner.routing(streaming(request)).await,
                "/herd.discovery.v1.Discovery/Endpoints" => {
                    inner.endpoints(streaming(request)).await
                }
                path => Err(Status::unimplemented(format!("no method {path}"))),
            };
            Ok(match answer {
                Ok(updates) => http::Response::builder()
                    .header(http::header::CONTENT_TYPE, "application/grpc")
                    .body(tonic::body::Body::new(Framed::new(updates.into_inner())))
                    .expect("static headers are valid"),
                Err(status) => status.into_http(),
            })
        })
    }
}

/// The request as tonic hands it to a service: metadata, extensions (the peer's address among
/// them) and the decoded stream of messages.
fn streaming<B, M>(request: http::Request<B>) -> Request<Streaming<M>>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    M: Message + Default + Send + 'static,
{
    let (parts, body) = request.into_parts();
    let messages = Streaming::new_request(
        SmallDecoder::<M>(PhantomData),
        body,
        None,
        Some(MAX_REQUEST),
    );
    Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        messages,
    )
}

/// prost decoding with a buffer sized for small requests (tonic's default starts at 8 KiB per
/// stream, and there are two streams per proxy).
struct SmallDecoder<M>(PhantomData<fn() -> M>);

impl<M: Message + Default> Decoder for SmallDecoder<M> {
    type Item = M;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<M>, Status> {
        M::decode(buf)
            .map(Some)
            .map_err(|e| Status::invalid_argument(format!("malformed message: {e}")))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::new(512, 32 * 1024)
    }
}

/// A stream of [`Encoded`] updates as a gRPC response body.
pub struct Framed {
    updates: Updates,
    /// A large message's bytes, to go out after the frame holding its header.
    pending: Option<Bytes>,
    done: bool,
}

impl Framed {
    pub fn new(updates: Updates) -> Self {
        Framed {
            updates,
            pending: None,
            done: false,
        }
    }
}

fn header(len: usize, capacity: usize) -> BytesMut {
    let mut frame = BytesMut::with_capacity(capacity);
    frame.put_u8(0);
    frame.put_u32(u32::try_from(len).expect("an update is under 4 GiB"));
    frame
}

fn trailers(status: &Status) -> http::HeaderMap {
    let mut trailers = http::HeaderMap::new();
    if status.add_header(&mut trailers).is_err() {
        trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
    }
    trailers
}

impl http_body::Body for Framed {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(bytes) = self.pending.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if self.done {
            return Poll::Ready(None);
        }
        let frame = match ready!(self.updates.as_mut().poll_next(cx)) {
            Some(Ok(Encoded(bytes))) if bytes.len() <= INLINE => {
                let mut frame = header(bytes.len(), HEADER + bytes.len());
                frame.put_slice(&bytes);
                Frame::data(frame.freeze())
            }
            Some(Ok(Encoded(bytes))) => {
                let frame = header(bytes.len(), HEADER);
                self.pending = Some(bytes);
                Frame::data(frame.freeze())
            }
            Some(Err(status)) => {
                self.done = true;
                Frame::trailers(trailers(&status))
            }
            None => {
                self.done = true;
                Frame::trailers(trailers(&Status::ok("")))
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.pending.is_none()
    }
}

#[cfg(test)]
mod tests;
