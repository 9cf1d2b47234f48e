//! herd-control's admin port: `/live`, `/ready` (every source has produced a first state) and
//! `/metrics`, for kubelets and Prometheus.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::warn;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Admin {
    pub ready: Arc<AtomicBool>,
    pub metrics: Metrics,
}

impl Admin {
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.handle(&req)) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    }

    fn handle(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        let text = |status: StatusCode, body: String| {
            Response::builder()
                .status(status)
                .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(body)))
                .expect("valid response")
        };
        if req.method() != Method::GET {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/live" => text(StatusCode::OK, "live\n".into()),
            "/ready" if self.ready.load(Ordering::Acquire) => {
                text(StatusCode::OK, "ready\n".into())
            }
            "/ready" => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: sources not synced\n".into(),
            ),
            "/metrics" => {
                let mut response = text(StatusCode::OK, self.metrics.render());
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }
}
