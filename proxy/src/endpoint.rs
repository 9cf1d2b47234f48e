//! The endpoint stage: a pool of connections to one address.
//!
//! HTTP/1 connections carry one request at a time, so the pool keeps the idle ones and hands the
//! most recently used out first (it is the one least likely to have been closed by the app). An
//! idle connection is closed after `idleTimeout` (10 s by default, below Puma's 20 s keep-alive:
//! the proxy must never write a request onto a socket the app is in the middle of closing). One
//! reaper task per pool runs only while the pool holds idle connections, so a quiet endpoint costs
//! no timer. HTTP/2 multiplexes: one connection, shared by every request.
//!
//! A connection is handed back ([`Checkin`]) only when its response body has ended cleanly; a
//! response abandoned half-way, or cancelled by a timeout, drops the connection, which closes it,
//! and so also cancels the request on the app's side.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, trace};

use crate::body::RequestBody;
use crate::errors::ProxyError;

/// How the proxy speaks to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wire {
    Http1,
    Http2,
}

/// Settings that identify a pool: two services naming the same address with the same settings
/// share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    pub wire: Wire,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

pub struct Endpoint {
    key: PoolKey,
    state: Mutex<State>,
    /// Serializes HTTP/2 connection attempts so a burst of requests opens one connection.
    h2_connect: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    /// Oldest at the front; reuse takes from the back.
    idle: VecDeque<Idle>,
    reaper: bool,
    h2: Option<http2::SendRequest<RequestBody>>,
}

struct Idle {
    tx: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// A pooled HTTP/1 connection on loan to one response.
pub struct Checkin {
    endpoint: Arc<Endpoint>,
    tx: http1::SendRequest<RequestBody>,
}

impl Checkin {
    /// Returns the connection to its pool.
    pub fn checkin(self) {
        let Checkin { endpoint, tx } = self;
        if tx.is_closed() {
            return;
        }
        let spawn_reaper = {
            let mut state = endpoint.state.lock().expect("pool lock poisoned");
            state.idle.push_back(Idle {
                tx,
                since: Instant::now(),
            });
            !std::mem::replace(&mut state.reaper, true)
        };
        if spawn_reaper {
            tokio::spawn(reap(Arc::downgrade(&endpoint), endpoint.key.idle_timeout));
        }
    }
}

/// Closes idle connections as they pass `idle_timeout`; ends when none are left.
async fn reap(endpoint: Weak<Endpoint>, idle_timeout: Duration) {
    loop {
        let next = {
            let Some(endpoint) = endpoint.upgrade() else {
                return;
            };
            let mut state = endpoint.state.lock().expect("pool lock poisoned");
            let now = Instant::now();
            while let Some(first) = state.idle.front() {
                if now.duration_since(first.since) >= idle_timeout || first.tx.is_closed() {
                    state.idle.pop_front();
                    trace!(addr = %endpoint.key.addr, "closed idle connection");
                } else {
                    break;
                }
            }
            match state.idle.front() {
                Some(first) => first.since + idle_timeout,
                None => {
                    state.reaper = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(next).await;
    }
}

impl Endpoint {
    pub fn new(key: PoolKey) -> Arc<Self> {
        Arc::new(Endpoint {
            key,
            state: Mutex::default(),
            h2_connect: tokio::sync::Mutex::new(()),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.key.addr
    }

    pub fn key(&self) -> &PoolKey {
        &self.key
    }

    /// Idle HTTP/1 connections held right now.
    pub fn idle_connections(&self) -> usize {
        self.state.lock().expect("pool lock poisoned").idle.len()
    }

    /// Opens a TCP connection, bounded by `connectTimeout`.
    pub async fn connect(&self) -> Result<TcpStream, ProxyError> {
        connect(self.key.addr, self.key.connect_timeout).await
    }

    /// Sends `req` on a pooled or new connection. For HTTP/1 the returned [`Checkin`] must travel
    /// with the response body and be checked in when it ends.
    pub async fn send(
        self: &Arc<Self>,
        req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Option<Checkin>), ProxyError> {
        match self.key.wire {
            Wire::Http1 => {
                let mut tx = self.checkout_h1().await?;
                let resp = tx.send_request(req).await.map_err(ProxyError::Upstream)?;
                Ok((
                    resp,
                    Some(Checkin {
                        endpoint: self.clone(),
                        tx,
                    }),
                ))
            }
            Wire::Http2 => {
                let mut tx = self.checkout_h2().await?;
                let resp = tx.send_request(req).await.map_err(ProxyError::Upstream)?;
                Ok((resp, None))
            }
        }
    }

    async fn checkout_h1(&self) -> Result<http1::SendRequest<RequestBody>, ProxyError> {
        loop {
            let idle = self
                .state
                .lock()
                .expect("pool lock poisoned")
                .idle
                .pop_back();
            let Some(Idle { mut tx, .. }) = idle else {
                break;
            };
            // A connection whose response just ended may need a moment to become ready; one the
            // app closed reports an error here and is dropped.
            if tx.ready().await.is_ok() {
                return Ok(tx);
            }
        }
        let io = TokioIo::new(self.connect().await?);
        let (tx, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(ProxyError::Handshake)?;
        let addr = self.key.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.with_upgrades().await {
                debug!(%addr, %error, "upstream connection ended");
            }
        });
        Ok(tx)
    }

    async fn checkout_h2(&self) -> Result<http2::SendRequest<RequestBody>, ProxyError> {
        if let Some(tx) = self.shared_h2() {
            return Ok(tx);
        }
        let _connecting = self.h2_connect.lock().await;
        if let Some(tx) = self.shared_h2() {
            return Ok(tx);
        }
        let io = TokioIo::new(self.connect().await?);
        let (tx, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(ProxyError::Handshake)?;
        let addr = self.key.addr;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                debug!(%addr, %error, "upstream HTTP/2 connection ended");
            }
        });
        self.state.lock().expect("pool lock poisoned").h2 = Some(tx.clone());
        Ok(tx)
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let mut state = self.state.lock().expect("pool lock poisoned");
        match &state.h2 {
            Some(tx) if !tx.is_closed() => Some(tx.clone()),
            Some(_) => {
                state.h2 = None;
                None
            }
            None => None,
        }
    }
}

/// Opens a TCP connection to `addr` within `timeout`, with Nagle off (the proxy writes whole
/// messages; delaying small ones only adds latency).
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ProxyError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(ProxyError::connect(addr, e)),
        Err(_) => return Err(ProxyError::ConnectTimeout { addr, timeout }),
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
