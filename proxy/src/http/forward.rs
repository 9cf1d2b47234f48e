//! One request through the stages, in the order it meets them: route (the request's one
//! authority, checked by [`authority`]; which service and route), header rewriting, retry
//! (attempts under the route's policy), balance (which endpoint, per attempt), endpoint (a pooled
//! connection), then the response's way back. `CONNECT` on the outbound side leaves HTTP here and
//! becomes a tunnel ([`connect`]).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use herd_config::AccessLogFormat;
use herd_config::Protocol;
use herd_identity::SpiffeId;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tracing::debug;

use super::ConnCtx;
use super::headers::{append_forwarded_for, is_upgrade, strip_hop_by_hop};
use super::own::Listeners;
use super::{authority, connect};
use crate::access_log::{AccessLog, Entry};
use crate::body::RequestBody;
use crate::endpoint::{Wire, for_wire};
use crate::errors::ProxyError;
use crate::listen::Direction;
use crate::metrics::{RouteMetrics, TlsPeer};
use crate::response::{ResponseBody, Timing};
use crate::retry::Trace;
use crate::route::ServiceTarget;
use crate::snapshot::Snapshot;
use crate::{opaque, retry};

/// Proxies one request. Every outcome is counted on its route's metrics (or, for a request the
/// proxy could not route, on the `unknown` route), and every failure becomes its response here.
pub async fn forward(
    mut req: Request<Incoming>,
    snapshot: &Snapshot,
    ctx: &ConnCtx,
) -> Response<ResponseBody> {
    let started = Instant::now();
    // A request id before anything else, so every log line of the request can carry it and
    // Rails' request ids line up with the proxy's. Tracing headers (W3C, B3) pass untouched.
    if ctx.request_id && !req.headers().contains_key(X_REQUEST_ID) {
        req.headers_mut().insert(X_REQUEST_ID, new_request_id());
    }
    let mut log = ctx
        .access_log
        .as_ref()
        .map(|(log, format)| (log.clone(), Box::new(entry(&req, *format, ctx))));
    let mut counted = None;
    let mut trace = Trace::default();
    // A transparent inbound connection's app: the one at the address it was going to.
    let app = match (ctx.direction, ctx.original_dst, &snapshot.inbound_apps) {
        (Direction::Inbound, Some(dst), Some(apps)) => Some(apps.get(dst)),
        _ => None,
    };
    match proxy(
        req,
        snapshot,
        app.as_ref(),
        ctx,
        started,
        &mut counted,
        &mut trace,
        &mut log,
    )
    .await
    {
        Ok(resp) => resp,
        Err(error) => {
            debug!(%error, "request failed");
            let metrics = counted.unwrap_or_else(|| {
                snapshot.unknown_route.requests.inc();
                &snapshot.unknown_route
            });
            metrics.error(
                &error,
                tls_peer(
                    ctx.direction,
                    ctx.client_identity.as_deref(),
                    trace.server_identity.as_deref(),
                ),
            );
            let elapsed = started.elapsed();
            metrics.latency.observe(elapsed.as_secs_f64());
            metrics.duration.observe(elapsed.as_secs_f64());
            let resp = error.to_response();
            if let Some((log, mut entry)) = log {
                entry.status = resp.status().as_u16();
                entry.duration = elapsed;
                entry.bytes_out = resp.body().size_hint().exact().unwrap_or(0);
                entry.endpoint = trace.endpoint;
                entry.attempts = trace.attempts;
                entry.error = Some(error.to_string());
                log.log(*entry);
            }
            resp
        }
    }
}

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// 128 random bits as 32 lowercase hex digits.
fn new_request_id() -> HeaderValue {
    let mut id = [0u8; 32];
    let bits = fastrand::u128(..);
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = b"0123456789abcdef"[((bits >> (4 * (31 - i))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

/// The access-log entry of `req`, to be completed as it is proxied.
fn entry(req: &Request<Incoming>, format: AccessLogFormat, ctx: &ConnCtx) -> Entry {
    let headers = req.headers();
    Entry {
        format,
        time: SystemTime::now(),
        direction: ctx.direction,
        method: req.method().clone(),
        authority: authority_of(req).map(str::to_owned),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned()),
        version: req.version(),
        user_agent: headers.get(header::USER_AGENT).cloned(),
        referer: headers.get(header::REFERER).cloned(),
        client: ctx.client,
        client_identity: ctx.client_identity.clone(),
        request_id: headers.get(X_REQUEST_ID).cloned(),
        service: "unknown".into(),
        route: "unknown".into(),
        status: 0,
        duration: Duration::ZERO,
        bytes_in: Arc::default(),
        bytes_out: 0,
        endpoint: None,
        attempts: 0,
        error: None,
    }
}

#[allow(clippy::too_many_arguments)]
async fn proxy<'s>(
    mut req: Request<Incoming>,
    snapshot: &'s Snapshot,
    app: Option<&'s Arc<ServiceTarget>>,
    ctx: &ConnCtx,
    started: Instant,
    counted: &mut Option<&'s Arc<RouteMetrics>>,
    trace: &mut Trace,
    log: &mut Option<(AccessLog, Box<Entry>)>,
) -> Result<Response<ResponseBody>, ProxyError> {
    // route: the request's one authority, by the same rule on both listeners, and never the
    // proxy's own listener; then which service, then which of its routes. An inbound request the
    // rule refuses is counted on the app's route; an outbound one on the `unknown` route.
    let listeners = Listeners {
        fixed: &ctx.own_listeners,
        opaque: &snapshot.by_listener,
    };
    let checked = authority::of(&req)
        .and_then(|authority| listeners.check_absolute_form(&req).map(|()| authority));
    let (service, refused): (&Arc<ServiceTarget>, _) = match ctx.direction {
        Direction::Inbound => (
            app.or(snapshot.inbound.as_ref())
                .ok_or(ProxyError::NoService("inbound".into()))?,
            // Who may call this pod's port, before anything about the request itself.
            ctx.authorize(snapshot).err().or(checked.err()),
        ),
        Direction::Outbound => {
            let authority = checked?;
            if req.method() == Method::CONNECT {
                return Box::pin(connect::tunnel(req, snapshot, ctx)).await;
            }
            let authority = authority.ok_or(ProxyError::NoAuthority)?;
            // A redirected connection to a service's cluster address is that service's, whatever
            // authority its requests name: the client chose the service by its address.
            let pinned = ctx.original_dst.and_then(|dst| snapshot.by_cluster_ip(dst));
            match pinned {
                Some(service) => (service, None),
                None => (snapshot.routes.lookup(authority)?, None),
            }
        }
    };
    let route = service.route(req.method(), req.uri().path());
    debug!(service = %service.name, route = %route.name, method = %req.method(), "routing");
    route.metrics.requests.inc();
    *counted = Some(&route.metrics);
    if let Some((_, entry)) = log.as_mut() {
        entry.service = service.name.clone();
        entry.route = route.name.clone();
    }
    if let Some(error) = refused {
        return Err(error);
    }

    // Headers: hop-by-hop out, X-Forwarded-For in. `Expect` is answered by this proxy (hyper
    // sends `100 Continue` when the body is first read), so the app need not see it.
    let upgrade = !ctx.http2 && is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let headers = req.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    headers.remove(header::EXPECT);
    append_forwarded_for(headers, &ctx.forwarded_for);
    if ctx.direction == Direction::Inbound
        && let Some(name) = snapshot.client_identity_header.as_ref()
    {
        // Only what mutual TLS proved reaches the app: a client's own value is never passed on.
        headers.remove(name);
        if let Some(value) = &ctx.client_identity_value {
            headers.insert(name.clone(), value.clone());
        }
    }

    // The endpoints' protocol decides the request's form.
    let wire = match service.protocol {
        Protocol::Http2 => Wire::Http2,
        Protocol::Http | Protocol::Opaque => Wire::Http1,
    };
    if upgrade && wire == Wire::Http2 {
        return Err(ProxyError::UpgradeToHttp2);
    }
    let hash = service.balancer.hash_of(req.headers(), ctx.client.ip());

    // A body a retry or hedge may need again is held, up to the route's limit; any other streams.
    let (parts, body) = req.into_parts();
    let replayable = !upgrade;
    let buffer_limit = match (&route.retry, &route.hedge) {
        (Some(retry), _) => Some(retry.buffer_limit),
        (None, Some(_)) => Some(herd_config::RetryPolicy::default().buffer_limit),
        (None, None) => None,
    };
    let (mut body, body_ended) = match buffer_limit.filter(|_| replayable) {
        // Buffering is the rarer path: boxed, so every request's future does not carry it.
        Some(limit) => Box::pin(RequestBody::buffer(body, limit))
            .await
            .map_err(ProxyError::ClientBody)?,
        None => RequestBody::stream(body),
    };
    if let Some((_, entry)) = log.as_ref() {
        body.count_into(entry.bytes_in.clone());
    }
    let req = for_wire(Request::from_parts(parts, body), wire)?;

    // retry, balance, endpoint: attempts (each to an endpoint the balancer picks) until one
    // answers or the route's policy says stop.
    let (mut resp, lease) = retry::send(
        route.plan(service),
        req,
        body_ended,
        hash,
        replayable,
        trace,
    )
    .await?;
    let peer = tls_peer(
        ctx.direction,
        ctx.client_identity.as_deref(),
        trace.server_identity.as_deref(),
    );
    route.metrics.response(resp.status().as_u16(), peer);
    route
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    let log = log.take().map(|(log, mut entry)| {
        entry.status = resp.status().as_u16();
        entry.endpoint = trace.endpoint;
        entry.attempts = trace.attempts;
        (log, entry)
    });
    let timing = Some(Timing::new(route.metrics.clone(), started, log));

    // The response's way back.
    if let Some(client_upgrade) =
        client_upgrade.filter(|_| resp.status() == StatusCode::SWITCHING_PROTOCOLS)
    {
        let upstream_upgrade = hyper::upgrade::on(&mut resp);
        let drain = ctx.drain.clone();
        let (tcp, idle) = (service.tcp.clone(), service.tunnel_idle);
        let direction = ctx.direction;
        let identities = (ctx.client_identity.clone(), trace.server_identity.clone());
        ctx.drain.spawn(async move {
            // The lease counts the tunnel as the endpoint's load until it closes.
            let _lease = lease;
            match tokio::try_join!(client_upgrade, upstream_upgrade) {
                Ok((client, upstream)) => {
                    let (client, upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    let (client_identity, server_identity) = &identities;
                    let peer = tls_peer(
                        direction,
                        client_identity.as_deref(),
                        server_identity.as_deref(),
                    );
                    opaque::tunnel(client, upstream, idle, &drain, &tcp, peer).await
                }
                Err(error) => debug!(%error, "upgrade failed"),
            }
        });
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers, true);
        parts.version = Version::HTTP_11;
        return Ok(Response::from_parts(
            parts,
            ResponseBody::upstream(body, None, timing),
        ));
    }
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    if ctx.http2 {
        parts.version = Version::HTTP_2;
    } else {
        parts.version = Version::HTTP_11;
        if ctx.drain.is_draining() {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
    }
    Ok(Response::from_parts(
        parts,
        ResponseBody::upstream(body, Some(lease), timing),
    ))
}

/// What mutual TLS proved about the other end of a request's exchange, as its response (or
/// upgraded tunnel) is counted: inbound, the client's connection (`client`); outbound, the
/// endpoint of the last try (`server`: plaintext when none was tried).
fn tls_peer<'a>(
    direction: Direction,
    client: Option<&'a SpiffeId>,
    server: Option<&'a SpiffeId>,
) -> TlsPeer<'a> {
    match direction {
        Direction::Inbound => TlsPeer::client(client),
        Direction::Outbound => TlsPeer::server(server),
    }
}

/// The authority a request is for: its absolute-form or `:authority`, else `Host`.
fn authority_of<B>(req: &Request<B>) -> Option<&str> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
}
