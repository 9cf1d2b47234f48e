//! Bodies as they cross the proxy: streamed frame by frame, never collected.
//!
//! [`RequestBody`] is the client's body on its way to an endpoint; it reports when its last
//! frame has been forwarded, which is when a route's response timeout starts. [`ResponseBody`]
//! is what the client receives: either an endpoint's body, which hands its pooled connection back
//! once it ends cleanly, or a short body the proxy wrote itself.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::oneshot;

use crate::endpoint::Lease;

pin_project_lite::pin_project! {
    /// A client's request body, forwarded as it arrives.
    pub struct RequestBody {
        #[pin]
        inner: Incoming,
        ended: Option<oneshot::Sender<()>>,
    }
}

impl RequestBody {
    /// Wraps `inner`; when it has a body, also returns a receiver that completes once the
    /// last frame has been handed to the endpoint (or the body failed).
    pub fn new(inner: Incoming) -> (Self, Option<oneshot::Receiver<()>>) {
        if inner.is_end_stream() {
            return (RequestBody { inner, ended: None }, None);
        }
        let (tx, rx) = oneshot::channel();
        (
            RequestBody {
                inner,
                ended: Some(tx),
            },
            Some(rx),
        )
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            && let Some(tx) = this.ended.take()
        {
            let _ = tx.send(());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// What a client receives.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        /// An endpoint's body; `lease` returns its HTTP/1 connection to the pool once the body
        /// has ended cleanly (a body abandoned half-way leaves the connection unusable, and
        /// dropping it closes it).
        Upstream { #[pin] inner: Incoming, lease: Option<Lease> },
        /// A body the proxy wrote.
        Local { data: Option<Bytes> },
    }

    impl PinnedDrop for ResponseBody {
        fn drop(this: Pin<&mut Self>) {
            if let ResponseBodyProj::Upstream { inner, lease } = this.project()
                && inner.is_end_stream()
                && let Some(c) = lease.take()
            {
                c.finish();
            }
        }
    }
}

impl ResponseBody {
    pub fn upstream(inner: Incoming, lease: Option<Lease>) -> Self {
        ResponseBody::Upstream { inner, lease }
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
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ResponseBodyProj::Upstream { inner, lease } => {
                let polled = inner.poll_frame(cx);
                if let Poll::Ready(None) = polled
                    && let Some(c) = lease.take()
                {
                    c.finish();
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
