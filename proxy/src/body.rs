//! The client's request body on its way to an endpoint: streamed frame by frame, or, when a
//! retry may need to send it again, kept whole up to a small limit.
//!
//! Streamed, a [`RequestBody`] reports when its last frame has been forwarded, which is when a
//! route's response timeout starts, and whether the client broke it (see [`BodyProgress`]).
//! Buffered (at most a route's `retry.bufferLimit`, 64 KiB by default), it can be
//! [replayed](RequestBody::replay) byte for byte to another endpoint; a larger body is never
//! held, it streams and its request is simply not retried.
//!
//! The endpoint stage sends these bodies and the stages above it make them, so this module sits
//! below the endpoint and knows nothing of it: the way back to the client is
//! [`crate::response`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::errors::ClientBodyError;

/// How a streamed request body is getting on, shared between the body (which the endpoint's
/// connection polls) and the request's other stages: the route's timeout starts when it has
/// ended, and an exchange that failed because the client broke its body (a malformed chunk, a
/// reset half-way, HTTP/2 DATA beyond its `content-length`) is the client's failure, not the
/// endpoint's. The endpoint's own error cannot say so: over HTTP/2 the app's stream is merely
/// reset, and over HTTP/1 the connection just fails.
#[derive(Clone, Debug, Default)]
pub struct BodyProgress(Arc<Progress>);

#[derive(Debug, Default)]
struct Progress {
    ended: AtomicBool,
    /// Why the client's body failed, once it has.
    broken: OnceLock<ClientBodyError>,
    /// The task waiting for the end.
    waiter: AtomicWaker,
}

impl BodyProgress {
    /// Resolves once the body has ended, cleanly or broken. Cancel-safe.
    pub async fn ended(&self) {
        std::future::poll_fn(|cx| {
            if self.0.ended.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.0.waiter.register(cx.waker());
            if self.0.ended.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// How the client broke the body, if it did.
    pub fn broken(&self) -> Option<&ClientBodyError> {
        self.0.broken.get()
    }

    /// Records the end of the body: cleanly, or broken by the client.
    pub(crate) fn end(&self, result: Result<(), &ClientBodyError>) {
        if let Err(broken) = result {
            let _ = self.0.broken.set(broken.clone());
        }
        self.0.ended.store(true, Ordering::Release);
        self.0.waiter.wake();
    }
}

/// The body's side of its [`BodyProgress`]: a body dropped before its end (the endpoint's
/// connection stopped reading it, or the request was cancelled) has ended as far as anyone
/// waiting is concerned.
pub struct Reporter(BodyProgress);

impl Drop for Reporter {
    fn drop(&mut self) {
        if !self.0.0.ended.load(Ordering::Acquire) {
            self.0.end(Ok(()));
        }
    }
}

/// A client's request body.
pub enum RequestBody {
    /// Forwarded as it arrives, after `prefix` (what buffering read before giving up); `counted`
    /// adds up the bytes forwarded, for the access log.
    Stream {
        prefix: Option<Bytes>,
        inner: Incoming,
        progress: Reporter,
        counted: Option<Arc<AtomicU64>>,
    },
    /// Held whole: replayable.
    Buffered {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

impl RequestBody {
    /// Streams `inner`; when it has a body, also returns its [`BodyProgress`], which says when
    /// the last frame has been handed to the endpoint (or the body failed) and whether the client
    /// broke it.
    pub fn stream(inner: Incoming) -> (Self, Option<BodyProgress>) {
        if inner.is_end_stream() {
            return (
                RequestBody::Buffered {
                    data: None,
                    trailers: None,
                },
                None,
            );
        }
        let progress = BodyProgress::default();
        (
            RequestBody::Stream {
                prefix: None,
                inner,
                progress: Reporter(progress.clone()),
                counted: None,
            },
            Some(progress),
        )
    }

    /// Reads `inner` whole if it is at most `limit` bytes, so it can be replayed; a larger body
    /// (by its Content-Length, or once `limit` bytes have been read) streams instead, with what
    /// was read put back in front. A body the client breaks while it is read fails here.
    pub async fn buffer(
        mut inner: Incoming,
        limit: usize,
    ) -> Result<(Self, Option<BodyProgress>), ClientBodyError> {
        if inner.is_end_stream() {
            return Ok((
                RequestBody::Buffered {
                    data: None,
                    trailers: None,
                },
                None,
            ));
        }
        if inner.size_hint().lower() > limit as u64 {
            return Ok(Self::stream(inner));
        }
        let mut data = BytesMut::new();
        loop {
            match inner
                .frame()
                .await
                .transpose()
                .map_err(ClientBodyError::new)?
            {
                None => {
                    let data = (!data.is_empty()).then(|| data.freeze());
                    return Ok((
                        RequestBody::Buffered {
                            data,
                            trailers: None,
                        },
                        None,
                    ));
                }
                Some(frame) => match frame.into_data() {
                    Ok(chunk) => {
                        data.extend_from_slice(&chunk);
                        if data.len() > limit {
                            let progress = BodyProgress::default();
                            let prefix = Some(data.freeze());
                            return Ok((
                                RequestBody::Stream {
                                    prefix,
                                    inner,
                                    progress: Reporter(progress.clone()),
                                    counted: None,
                                },
                                Some(progress),
                            ));
                        }
                    }
                    Err(frame) => {
                        // Trailers end the body.
                        let trailers = frame.into_trailers().ok();
                        let data = (!data.is_empty()).then(|| data.freeze());
                        return Ok((RequestBody::Buffered { data, trailers }, None));
                    }
                },
            }
        }
    }

    /// Counts the bytes this body forwards into `counter` (a held body's size is known now).
    pub fn count_into(&mut self, counter: Arc<AtomicU64>) {
        match self {
            RequestBody::Stream {
                prefix, counted, ..
            } => {
                counter.fetch_add(
                    prefix.as_ref().map_or(0, |p| p.len() as u64),
                    Ordering::Relaxed,
                );
                *counted = Some(counter);
            }
            RequestBody::Buffered { data, .. } => {
                counter.fetch_add(
                    data.as_ref().map_or(0, |d| d.len() as u64),
                    Ordering::Relaxed,
                );
            }
        }
    }

    /// The progress of a streamed body (`None` for one held whole, which cannot break).
    pub fn progress(&self) -> Option<&BodyProgress> {
        match self {
            RequestBody::Stream { progress, .. } => Some(&progress.0),
            RequestBody::Buffered { .. } => None,
        }
    }

    /// A copy to send again, if this body is held whole.
    pub fn replay(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Buffered { data, trailers } => Some(RequestBody::Buffered {
                data: data.clone(),
                trailers: trailers.clone(),
            }),
            RequestBody::Stream { .. } => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    /// Any error is the client's: the body is read from the client's connection.
    type Error = ClientBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ClientBodyError>>> {
        match self.get_mut() {
            RequestBody::Stream {
                prefix,
                inner,
                progress,
                counted,
            } => {
                if let Some(prefix) = prefix.take() {
                    return Poll::Ready(Some(Ok(Frame::data(prefix))));
                }
                let polled = Pin::new(inner).poll_frame(cx).map_err(ClientBodyError::new);
                match &polled {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(counted), Some(data)) = (counted.as_ref(), frame.data_ref()) {
                            counted.fetch_add(data.len() as u64, Ordering::Relaxed);
                        }
                    }
                    Poll::Ready(None) => progress.0.end(Ok(())),
                    Poll::Ready(Some(Err(broken))) => progress.0.end(Err(broken)),
                    Poll::Pending => {}
                }
                polled
            }
            RequestBody::Buffered { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Stream { prefix, inner, .. } => prefix.is_none() && inner.is_end_stream(),
            RequestBody::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Stream { prefix, inner, .. } => {
                let extra = prefix.as_ref().map_or(0, |p| p.len() as u64);
                let hint = inner.size_hint();
                let mut out = SizeHint::new();
                out.set_lower(hint.lower() + extra);
                if let Some(upper) = hint.upper() {
                    out.set_upper(upper + extra);
                }
                out
            }
            RequestBody::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
