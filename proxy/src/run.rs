//! Wiring: bind the listeners, connect the stages, run until told to stop, drain, exit.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use herd_config::{Config, Downstream, Mtls};
use herd_identity::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::detect::{Detected, Rewind, detect};
use crate::drain::Drain;
use crate::http::{ConnCtx, ConnService};
use crate::identity::{self, Identity};
use crate::listen::{self, Accepted, Direction};
use crate::metrics::{ListenerMetrics, Metrics, TlsPeer};
use crate::route::ServiceTarget;
use crate::snapshot::{Registry, Snapshot};
use crate::{control, opaque, reload};

mod transparent;

/// Where the configuration came from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A file, watched and reloaded as it changes (unless `proxy.control` takes over).
    File(PathBuf),
    /// An environment variable (its name, e.g. `HERD_PROXY_CONFIG_YAML`): read once at start,
    /// never reloaded, since a process's environment does not change.
    Environment(&'static str),
}

impl Origin {
    /// How messages and `/config` name it: the path, or `$NAME`.
    pub fn name(&self) -> PathBuf {
        match self {
            Origin::File(path) => path.clone(),
            Origin::Environment(var) => PathBuf::from(format!("${var}")),
        }
    }
}

/// Runs the proxy with `config` (loaded from `origin`) until SIGTERM, SIGINT or `/shutdown`,
/// then drains and returns.
pub async fn run(origin: Origin, config: Config) -> anyhow::Result<()> {
    let file = origin.name();
    let metrics = Metrics::new();
    // The certificate is asked for at once; `/ready` waits for the first one (a pod that cannot
    // speak mutual TLS yet should not be sent traffic), and never turns back because a renewal
    // failed: the mesh must not go unready together when the identity service is down.
    let identity = config
        .proxy
        .identity
        .clone()
        .map(|settings| identity::start(settings, &metrics));
    let mut registry = Registry::new(&config, metrics.clone()).with_identity(identity.clone());
    let control_settings = config.proxy.control.clone();
    let bootstrap = control_settings.as_ref().map(|_| config.clone());
    let control_endpoints = control_settings.as_ref().map(|_| control::endpoints());
    if let Some((endpoints, _)) = &control_endpoints {
        registry = registry.with_control(endpoints.clone());
    }
    let snapshot = Arc::new(Snapshot::build(1, file.clone(), config, &mut registry));
    metrics.config_version.set(1);
    let (tx, rx) = watch::channel(snapshot.clone());
    let drain = Drain::new();
    // One writer for every listener's access log; idle unless a listener logs.
    let access_log = AccessLog::start(metrics.access_log_dropped.clone());
    let ready = Arc::new(AtomicBool::new(false));
    let proxy = &snapshot.config.proxy;
    let certified = Arc::new(AtomicBool::new(identity.is_none()));
    if let Some(identity) = identity.clone() {
        let certified = certified.clone();
        tokio::spawn(async move {
            identity.ready().await;
            certified.store(true, Ordering::Release);
        });
    }

    let admin_listener = bind(proxy.admin.listen, "admin").await?;
    let inbound_listener = match &proxy.inbound {
        Some(inbound) => Some(bind(inbound.listen, "inbound").await?),
        None => None,
    };
    let outbound_listener = match &proxy.outbound {
        Some(outbound) => Some(bind(outbound.listen, "outbound").await?),
        None => None,
    };
    // As bound (a port 0 in the file is the port the kernel gave): what requests may not name.
    let own_listeners: Arc<[SocketAddr]> = [
        Some(&admin_listener),
        inbound_listener.as_ref(),
        outbound_listener.as_ref(),
    ]
    .into_iter()
    .flatten()
    .filter_map(|l| l.local_addr().ok())
    .collect();
    let admin = Admin {
        ready: ready.clone(),
        certified,
        snapshot: rx.clone(),
        drain: drain.clone(),
        metrics: metrics.clone(),
    };
    tokio::spawn(admin.serve(admin_listener));

    if let (Some(inbound), Some(listener)) = (&proxy.inbound, inbound_listener) {
        let ctx = Listening {
            rx: rx.clone(),
            drain: drain.clone(),
            access_log: access_log.clone(),
            metrics: metrics.listener(Direction::Inbound, "inbound"),
            own_listeners: own_listeners.clone(),
            identity: identity.clone(),
            all_metrics: metrics.clone(),
        };
        tokio::spawn(listen::serve(
            "inbound",
            listener,
            inbound.transparent,
            inbound.downstream.max_connections,
            drain.clone(),
            CancellationToken::new(),
            move |conn| ctx.clone().inbound(conn),
        ));
    }
    if let (Some(outbound), Some(listener)) = (&proxy.outbound, outbound_listener) {
        if outbound.transparent {
            // The redirects exempt one uid: a proxy running as another loops its own
            // connections back into itself, so say which uid this is.
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
            info!(
                uid,
                "transparent outbound: herd-proxy init's --proxy-uid must be this uid"
            );
        }
        let ctx = Listening {
            rx: rx.clone(),
            drain: drain.clone(),
            access_log: access_log.clone(),
            metrics: metrics.listener(Direction::Outbound, "outbound"),
            own_listeners: own_listeners.clone(),
            identity: identity.clone(),
            all_metrics: metrics.clone(),
        };
        tokio::spawn(listen::serve(
            "outbound",
            listener,
            outbound.transparent,
            outbound.downstream.max_connections,
            drain.clone(),
            CancellationToken::new(),
            move |conn| ctx.clone().outbound(conn),
        ));
    }

    let mut opaque = OpaqueListeners {
        access_log: access_log.clone(),
        own_listeners,
        running: HashMap::new(),
        rx: rx.clone(),
        drain: drain.clone(),
        metrics: metrics.clone(),
    };
    if let Some((addr, error)) = opaque.apply(&snapshot).await.into_iter().next() {
        return Err(error).with_context(|| format!("cannot bind opaque listener {addr}"));
    }
    tokio::spawn(opaque.follow());

    // Services come from the file, reloaded as it changes, or from the control plane (the
    // file's `proxy:` section then holds until a restart).
    let mut _watcher = None;
    let mut _unchanging = None;
    let mut wait_for_control = false;
    match (control_settings, bootstrap, control_endpoints) {
        (Some(settings), Some(bootstrap), Some((endpoints, commands))) => {
            wait_for_control = settings.wait_for_state;
            control::start(
                control::Control {
                    settings,
                    file: file.clone(),
                    bootstrap,
                    tx,
                    registry,
                    endpoints,
                    metrics: metrics.clone(),
                    ready: ready.clone(),
                    identity: identity.clone(),
                },
                commands,
            );
        }
        _ => match &origin {
            Origin::File(path) => {
                _watcher = Some(
                    reload::watch(path.clone(), tx, registry, metrics.clone())
                        .with_context(|| format!("cannot watch {}", path.display()))?,
                );
            }
            // Nothing replaces the snapshot; the sender is kept so that readers see an open
            // channel, as with a file that never changes.
            Origin::Environment(_) => _unchanging = Some(tx),
        },
    }

    if !wait_for_control {
        ready.store(true, Ordering::Release);
    }
    info!(version = snapshot.version, file = %file.display(), "herd-proxy ready");
    // From here the watch channel holds the snapshot in force; holding the first one too would
    // keep its services' pools and metric series alive after a reload removes them.
    drop(snapshot);

    wait_for_stop(&drain).await;
    drain.start();
    let timeout = rx.borrow().config.proxy.drain_timeout;
    info!(?timeout, "draining");
    let cut = drain.run(timeout).await;
    info!(cut, "stopped");
    Ok(())
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot bind {what} listener {addr}"))?;
    info!(listener = what, %addr, "listening");
    Ok(listener)
}

/// SIGTERM, SIGINT, or a drain started by `/shutdown`.
async fn wait_for_stop(drain: &Drain) {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(term) => {
                term.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sigterm => info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = drain.started() => {}
    }
}

/// What a data listener's connections share.
#[derive(Clone)]
struct Listening {
    rx: watch::Receiver<Arc<Snapshot>>,
    drain: Drain,
    access_log: AccessLog,
    metrics: ListenerMetrics,
    /// The inbound, outbound and admin listeners as bound.
    own_listeners: Arc<[SocketAddr]>,
    /// This proxy's certificate, when it has `proxy.identity`.
    identity: Option<Identity>,
    /// Every series, for those resolved per connection (authorization decisions).
    all_metrics: Metrics,
}

/// Who is on the other end of a client connection.
#[derive(Clone)]
struct Peer {
    addr: SocketAddr,
    /// Its SPIFFE ID, verified by mutual TLS.
    identity: Option<Arc<SpiffeId>>,
    /// When the certificate that proved it expires.
    expires: Option<tokio::time::Instant>,
    /// The port it connected to, as policies name it.
    port: u16,
    /// Where a redirected connection was going (see [`ConnCtx::original_dst`]).
    original_dst: Option<SocketAddr>,
}

impl Listening {
    fn opened(&self) -> OpenGuard {
        self.metrics.accepted.inc();
        self.metrics.open.inc();
        OpenGuard(self.metrics.open.clone())
    }

    /// Traffic for this pod: detect, then HTTP or bytes to the app; with an identity, mutual
    /// TLS from other proxies first (see [`Listening::inbound_tls`]).
    async fn inbound(self, conn: Accepted) {
        let _open = self.opened();
        // Policies (and opaquePorts) name the port the client meant: the original
        // destination's when the connection was redirected to this listener, else the
        // listener's own.
        let port = conn.orig_dst.map_or(conn.local.port(), |d| d.port());
        // Copy what the connection needs rather than hold the snapshot for its whole life: a
        // WebSocket may outlive many reloads.
        let (settings, app, mtls, original_dst, opaque) = {
            let snapshot = self.rx.borrow();
            let Some(inbound) = &snapshot.config.proxy.inbound else {
                return;
            };
            match self.inbound_app(&conn, &snapshot) {
                Ok((app, original)) => (
                    inbound.downstream.clone(),
                    app,
                    inbound.mtls,
                    original,
                    inbound.is_opaque(port),
                ),
                Err(reason) => return self.refuse(Direction::Inbound, reason, &conn),
            }
        };
        let peer = Peer {
            addr: conn.client,
            identity: None,
            expires: None,
            port,
            original_dst,
        };
        let Some(identity) = self.identity.clone() else {
            if opaque {
                if self.admit_opaque(&peer) {
                    forward_opaque(conn.stream, &peer, &app, &self.drain).await;
                }
                return;
            }
            let client = peer.clone();
            if let Some(io) = self
                .serve_http(Direction::Inbound, conn.stream, client, &settings)
                .await
                && self.admit_opaque(&peer)
            {
                // Rare on an HTTP port: boxed, so HTTP connections' tasks do not carry a tunnel.
                Box::pin(forward_opaque(io, &peer, &app, &self.drain)).await;
            }
            return;
        };
        let (detected, io) = match detect(conn.stream, settings.detect_timeout).await {
            Ok(detected) => detected,
            Err(error) => return debug!(%error, "detection failed"),
        };
        match (detected, mtls) {
            (Detected::Tls, _) => {
                Box::pin(self.inbound_tls(io, peer, &identity, &settings, &app, opaque)).await
            }
            (Detected::Closed, _) => {}
            (_, Mtls::Strict) => {
                self.metrics.plaintext_refused.inc();
                refuse_plaintext(io, detected, peer.port, peer.addr).await;
            }
            (_, Mtls::Permissive) if opaque => {
                if self.admit_opaque(&peer) {
                    forward_opaque(io, &peer, &app, &self.drain).await
                }
            }
            (_, Mtls::Permissive) => {
                let client = peer.clone();
                if let Some(io) = self
                    .serve_detected(Direction::Inbound, detected, io, client, &settings)
                    .await
                    && self.admit_opaque(&peer)
                {
                    Box::pin(forward_opaque(io, &peer, &app, &self.drain)).await;
                }
            }
        }
    }

    /// Whether an inbound connection that is not HTTP may reach the app: checked once, before
    /// a byte is forwarded; a refused one is closed.
    fn admit_opaque(&self, peer: &Peer) -> bool {
        let authorizer = self.rx.borrow().authorizer.clone();
        let identity = peer.identity.as_deref();
        let counters = std::cell::OnceCell::new();
        match authorizer.check(peer.port, peer.addr.ip(), identity, || {
            counters.get_or_init(|| {
                self.all_metrics
                    .authorizations(peer.port, crate::authorize::client_label(identity))
            })
        }) {
            Ok(()) => true,
            Err(error) => {
                info!(client = %peer.addr, %error, "connection refused by policy");
                false
            }
        }
    }

    /// Mutual TLS from another proxy: the handshake (a client certificate from the trust
    /// bundle required), then what the proxy negotiated (ALPN `h2`: HTTP/2 at once) or what
    /// detection finds inside, served as plaintext would be, with the client's SPIFFE ID.
    async fn inbound_tls(
        &self,
        io: Rewind<TcpStream>,
        mut peer: Peer,
        identity: &Identity,
        settings: &Downstream,
        app: &Arc<ServiceTarget>,
        opaque: bool,
    ) {
        let client = peer.addr;
        let Some(credentials) = identity.current() else {
            self.metrics.handshake_failure("no-certificate");
            warn!(%client, port = peer.port, "mutual TLS refused: this proxy {}", identity.missing_reason());
            return;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(credentials.server.clone());
        let tls = match tokio::time::timeout(settings.detect_timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                self.metrics.handshake_failure(handshake_reason(&error));
                return debug!(%client, %error, "TLS handshake failed");
            }
            Err(_) => {
                self.metrics.handshake_failure("timeout");
                return debug!(%client, "TLS handshake timed out");
            }
        };
        let session = tls.get_ref().1;
        let Some(verified) = herd_identity::peer_identity(session) else {
            self.metrics.handshake_failure("no-identity");
            return debug!(%client, "mutual TLS client without a SPIFFE ID");
        };
        self.metrics.tls_accepted.inc();
        let h2 = session.alpn_protocol() == Some(b"h2");
        debug!(%client, identity = %verified, h2, "mutual TLS accepted");
        peer.identity = Some(Arc::new(verified));
        // TLS checks a certificate only at the handshake: a connection must not outlive it.
        peer.expires = herd_identity::peer_not_after(session).map(|at| {
            let left = at
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_default();
            tokio::time::Instant::now() + left
        });
        if opaque {
            if self.admit_opaque(&peer) {
                forward_opaque_while_valid(tls, &peer, app, &self.drain).await;
            }
            return;
        }
        let served = if h2 {
            self.serve_detected(
                Direction::Inbound,
                Detected::Http2,
                Rewind::new(Bytes::new(), tls),
                peer.clone(),
                settings,
            )
            .await
        } else {
            self.serve_http(Direction::Inbound, tls, peer.clone(), settings)
                .await
        };
        if let Some(io) = served
            && self.admit_opaque(&peer)
        {
            forward_opaque_while_valid(io, &peer, app, &self.drain).await;
        }
    }

    /// The app's own calls: detect, then route HTTP by authority; other bytes go to their
    /// original destination when there is one.
    async fn outbound(self, conn: Accepted) {
        let _open = self.opened();
        let Some(settings) = self
            .rx
            .borrow()
            .config
            .proxy
            .outbound
            .as_ref()
            .map(|o| o.downstream.clone())
        else {
            return;
        };
        if let Some(dst) = conn.orig_dst {
            // Boxed: most outbound connections are an app's own HTTP to the listener.
            return Box::pin(self.outbound_redirected(conn, dst, &settings)).await;
        }
        let client = Peer {
            addr: conn.client,
            identity: None,
            expires: None,
            port: conn.local.port(),
            original_dst: None,
        };
        if self
            .serve_http(Direction::Outbound, conn.stream, client, &settings)
            .await
            .is_some()
        {
            debug!("not HTTP and no original destination: closing");
        }
    }

    /// Detects the protocol and serves HTTP to the end of the connection; hands back a connection
    /// that turned out not to be HTTP, with the bytes read so far put back in front.
    async fn serve_http<I>(
        &self,
        direction: Direction,
        io: I,
        client: Peer,
        settings: &Downstream,
    ) -> Option<Rewind<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (detected, io) = match detect(io, settings.detect_timeout).await {
            Ok(detected) => detected,
            Err(error) => {
                debug!(%error, "detection failed");
                return None;
            }
        };
        self.serve_detected(direction, detected, io, client, settings)
            .await
    }

    /// Serves HTTP on a connection whose protocol is known; hands back one that is not HTTP.
    async fn serve_detected<I>(
        &self,
        direction: Direction,
        detected: Detected,
        io: Rewind<I>,
        client: Peer,
        settings: &Downstream,
    ) -> Option<Rewind<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let http2 = match detected {
            Detected::Http1 => false,
            Detected::Http2 => true,
            Detected::Opaque | Detected::Tls => return Some(io),
            Detected::Closed => return None,
        };
        let ctx = ConnCtx {
            direction,
            client: client.addr,
            client_identity_value: client
                .identity
                .as_ref()
                .and_then(|id| http::HeaderValue::from_str(id.as_str()).ok()),
            client_identity: client.identity,
            expires: client.expires,
            port: client.port,
            authorizations: std::sync::OnceLock::new(),
            metrics: self.all_metrics.clone(),
            forwarded_for: crate::http::headers::forwarded_for(client.addr.ip()),
            drain: self.drain.clone(),
            http2,
            request_id: settings.request_id,
            access_log: settings
                .access_log
                .map(|a| (self.access_log.clone(), a.format)),
            own_listeners: self.own_listeners.clone(),
            original_dst: client.original_dst,
        };
        let service = ConnService::new(ctx, self.rx.clone());
        crate::http::serve(io, http2, settings, service, &self.drain).await;
        None
    }

    /// An opaque service's own listener: bytes to one of its endpoints, never sniffed.
    async fn opaque_service(self, conn: Accepted) {
        let _open = self.opened();
        let service = self.rx.borrow().by_listener.get(&conn.local).cloned();
        match service {
            Some(service) => {
                let client = Peer {
                    addr: conn.client,
                    identity: None,
                    expires: None,
                    port: conn.local.port(),
                    original_dst: None,
                };
                forward_opaque(conn.stream, &client, &service, &self.drain).await
            }
            None => debug!("no opaque service listens here any more"),
        }
    }
}

struct OpenGuard(prometheus::IntGauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A plaintext client on a `strict` port: an HTTP/1 client is told why in a 403, any other is
/// closed before a byte reaches the app.
async fn refuse_plaintext(
    mut io: Rewind<TcpStream>,
    detected: Detected,
    port: u16,
    client: SocketAddr,
) {
    debug!(%client, port, "plaintext refused: mutual TLS is required");
    if detected == Detected::Http1 {
        let message = format!("plaintext refused: port {port} requires mutual TLS");
        let response = format!(
            "HTTP/1.1 403 Forbidden\r\nherd-proxy-error: {message}\r\ncontent-type: text/plain\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{message}\n",
            message.len() + 1
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            io.write_all(response.as_bytes()).await?;
            io.shutdown().await
        })
        .await;
    }
}

/// A bounded label for why a TLS handshake failed.
fn handshake_reason(error: &std::io::Error) -> &'static str {
    use rustls::{AlertDescription, CertificateError, Error};
    let Some(error) = error.get_ref().and_then(|e| e.downcast_ref::<Error>()) else {
        return "io";
    };
    match error {
        Error::NoCertificatesPresented => "no-client-certificate",
        Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        ) => "expired-certificate",
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => "unknown-issuer",
        Error::InvalidCertificate(_) => "bad-certificate",
        Error::PeerIncompatible(_) => "incompatible",
        Error::AlertReceived(AlertDescription::ProtocolVersion) | Error::PeerMisbehaved(_) => {
            "protocol"
        }
        _ => "other",
    }
}

/// [`forward_opaque`] for a client verified by mutual TLS: closed when its certificate expires
/// (TLS checks a certificate only at the handshake).
async fn forward_opaque_while_valid<I>(
    client: I,
    peer: &Peer,
    service: &ServiceTarget,
    drain: &Drain,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::select! {
        () = forward_opaque(client, peer, service, drain) => {}
        () = crate::http::expiry(peer.expires) => {
            debug!(client = %peer.addr, "the client's certificate expired: closing its connection");
        }
    }
}

/// Bytes between `client` and an endpoint of `service`, counted with the client's identity
/// (inbound over mutual TLS) or the endpoint's (a meshed one).
async fn forward_opaque<I>(client: I, peer: &Peer, service: &ServiceTarget, drain: &Drain)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Some(subscription) = &service.subscription {
        subscription.touch();
    }
    match opaque::connect(service, peer.addr.ip()).await {
        Ok(upstream) => {
            let _lease = upstream.lease;
            // Inbound, the client's identity; outbound (an opaque service's listener), the
            // endpoint's. Never both: the inbound app is not meshed, the local app has none.
            let tls = match (&peer.identity, &upstream.identity) {
                (Some(client), _) => TlsPeer::Client(client),
                (None, server) => TlsPeer::server(server.as_deref()),
            };
            let idle = service.tunnel_idle;
            opaque::tunnel(client, upstream.io, idle, drain, &service.tcp, tls).await
        }
        Err(error) => debug!(%error, service = %service.name, "closing"),
    }
}

/// Connections one opaque service listener holds at once (pooled database and Redis clients
/// keep few, long-lived ones).
const OPAQUE_MAX_CONNECTIONS: usize = 10_000;

/// The opaque services' own listeners, started and stopped as reloads add and remove them.
struct OpaqueListeners {
    access_log: AccessLog,
    own_listeners: Arc<[SocketAddr]>,
    running: HashMap<SocketAddr, (Arc<str>, CancellationToken)>,
    rx: watch::Receiver<Arc<Snapshot>>,
    drain: Drain,
    metrics: Metrics,
}

impl OpaqueListeners {
    /// Makes the running listeners those `snapshot` declares; returns the ones that failed to bind.
    async fn apply(&mut self, snapshot: &Snapshot) -> Vec<(SocketAddr, std::io::Error)> {
        self.running.retain(|addr, (name, stop)| {
            let keep = snapshot
                .by_listener
                .get(addr)
                .is_some_and(|s| s.name == *name);
            if !keep {
                stop.cancel();
                self.metrics.forget_listener(Direction::Outbound, name);
                info!(%addr, service = %name, "opaque listener stopped");
            }
            keep
        });
        let mut failed = Vec::new();
        for (&addr, service) in &snapshot.by_listener {
            if self.running.contains_key(&addr) {
                continue;
            }
            let listener = match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(error) => {
                    error!(%addr, service = %service.name, %error, "cannot bind opaque listener");
                    failed.push((addr, error));
                    continue;
                }
            };
            info!(listener = "opaque", %addr, service = %service.name, "listening");
            let stop = CancellationToken::new();
            let ctx = Listening {
                rx: self.rx.clone(),
                drain: self.drain.clone(),
                access_log: self.access_log.clone(),
                metrics: self.metrics.listener(Direction::Outbound, &service.name),
                own_listeners: self.own_listeners.clone(),
                identity: None,
                all_metrics: self.metrics.clone(),
            };
            tokio::spawn(listen::serve(
                "opaque",
                listener,
                false,
                OPAQUE_MAX_CONNECTIONS,
                self.drain.clone(),
                stop.clone(),
                move |conn| ctx.clone().opaque_service(conn),
            ));
            self.running.insert(addr, (service.name.clone(), stop));
        }
        failed
    }

    /// Follows reloads until the drain starts.
    async fn follow(mut self) {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        loop {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = self.drain.started() => return,
            }
            let snapshot = rx.borrow_and_update().clone();
            self.apply(&snapshot).await;
        }
    }
}
