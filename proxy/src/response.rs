//! What a client receives: an endpoint's response body on its way back, or a short body the
//! proxy wrote itself (an error's).
//!
//! An endpoint's body holds what the request took from its endpoint until it ends (its
//! connection, handed back to the pool once the body ended cleanly, and its count in the
//! endpoint's load), and its route's timing, observed and access-logged when it ends. So this is
//! the top of the request path, above the stages whose leases it carries; [`crate::errors`],
//! below every stage, builds an error's response through [`ProxyError::to_response`], defined
//! here.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame, SizeHint};

use crate::access_log::{AccessLog, Entry};
use crate::balance::ResponseLease;
use crate::endpoint::UpstreamBody;
use crate::errors::{BoxError, ProxyError};
use crate::metrics::RouteMetrics;

/// Observes a response's total duration on its route when the body ends (or is dropped), and
/// writes its access-log entry then, with the bytes the body carried.
pub struct Timing {
    metrics: Arc<RouteMetrics>,
    started: Instant,
    /// Boxed: an entry is ~400 bytes, which every move of a response would copy.
    log: Option<(AccessLog, Box<Entry>)>,
}

impl Timing {
    pub fn new(
        metrics: Arc<RouteMetrics>,
        started: Instant,
        log: Option<(AccessLog, Box<Entry>)>,
    ) -> Self {
        Timing {
            metrics,
            started,
            log,
        }
    }

    fn sent(&mut self, bytes: usize) {
        if let Some((_, entry)) = &mut self.log {
            entry.bytes_out += bytes as u64;
        }
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        self.metrics.duration.observe(elapsed.as_secs_f64());
        if let Some((log, mut entry)) = self.log.take() {
            entry.duration = elapsed;
            log.log(*entry);
        }
    }
}

pin_project_lite::pin_project! {
    /// What a client receives.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        /// An endpoint's body; `lease` returns its HTTP/1 connection to the pool once the body
        /// has ended cleanly (a body abandoned half-way leaves the connection unusable, and
        /// dropping it closes it).
        Upstream { #[pin] inner: UpstreamBody, lease: Option<ResponseLease>, timing: Option<Timing> },
        /// A body the proxy wrote.
        Local { data: Option<Bytes> },
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            if let ResponseBodyProj::Upstream { inner, lease, .. } = this.project()
                && inner.is_end_stream()
                && let Some(c) = lease.take()
            {
                c.finish();
            }
        }
    }
}

impl ResponseBody {
    pub fn upstream(
        inner: UpstreamBody,
        lease: Option<ResponseLease>,
        timing: Option<Timing>,
    ) -> Self {
        ResponseBody::Upstream {
            inner,
            lease,
            timing,
        }
    }

    pub fn empty() -> Self {
        ResponseBody::Local { data: None }
    }

    pub fn text(text: impl Into<Bytes>) -> Self {
        let data: Bytes = text.into();
        ResponseBody::Local {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            ResponseBodyProj::Upstream {
                inner,
                lease,
                timing,
            } => {
                let polled = inner.poll_frame(cx);
                if let (Poll::Ready(Some(Ok(frame))), Some(timing)) = (&polled, timing.as_mut())
                    && let Some(data) = frame.data_ref()
                {
                    timing.sent(data.len());
                }
                if let Poll::Ready(None) = polled {
                    if let Some(c) = lease.take() {
                        c.finish();
                    }
                    timing.take();
                }
                polled
            }
            ResponseBodyProj::Local { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
            ResponseBody::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            ResponseBody::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl ProxyError {
    /// The response the client sees for this error: [`ProxyError::respond`] with a body the
    /// proxy wrote.
    pub fn to_response(&self) -> Response<ResponseBody> {
        self.respond(ResponseBody::text)
    }
}
