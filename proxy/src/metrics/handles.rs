//! Label handles for one route, one service, one service's opaque connections.
//!
//! Each resolves its series once; dropping the last handle (its route or service is gone from
//! the configuration and done with its requests) removes its series from the exposition.

use std::sync::{Arc, OnceLock};

use prometheus::{Histogram, IntCounter, IntGauge};

use super::families::Families;
use super::peer::{self, ByIdentity, PLAINTEXT, Side, TlsPeer};
use crate::errors::{Origin, ProxyError};
use crate::listen::Direction;

/// Why the proxy answered a request itself: the `error` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NoRoute,
    BadRequest,
    Connect,
    Timeout,
    Overloaded,
    NoEndpoint,
    Upstream,
    Resolve,
    OwnListener,
    EgressRefused,
    /// Mutual TLS with a meshed endpoint failed, or this proxy had no certificate for it.
    Tls,
    /// The inbound port's policy does not allow the client.
    Unauthorized,
}

impl ErrorKind {
    const ALL: [ErrorKind; 12] = [
        ErrorKind::NoRoute,
        ErrorKind::BadRequest,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Overloaded,
        ErrorKind::NoEndpoint,
        ErrorKind::Upstream,
        ErrorKind::Resolve,
        ErrorKind::OwnListener,
        ErrorKind::EgressRefused,
        ErrorKind::Tls,
        ErrorKind::Unauthorized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NoRoute => "no-route",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::Connect => "connect",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::NoEndpoint => "no-endpoint",
            ErrorKind::Upstream => "upstream",
            ErrorKind::Resolve => "resolve",
            ErrorKind::OwnListener => "own-listener",
            ErrorKind::EgressRefused => "egress-refused",
            ErrorKind::Tls => "tls",
            ErrorKind::Unauthorized => "unauthorized",
        }
    }

    pub fn of(error: &ProxyError) -> ErrorKind {
        match error {
            ProxyError::NoService(_) => ErrorKind::NoRoute,
            ProxyError::NoAuthority
            | ProxyError::InvalidAuthority
            | ProxyError::MissingHost
            | ProxyError::DuplicateHost
            | ProxyError::InvalidHost
            | ProxyError::AuthorityMismatch
            | ProxyError::Smuggling
            | ProxyError::ClientBody(_) => ErrorKind::BadRequest,
            ProxyError::ConnectRefused(_)
            | ProxyError::ConnectTimeout { .. }
            | ProxyError::Connect { .. }
            | ProxyError::Handshake(_) => ErrorKind::Connect,
            ProxyError::ResponseTimeout(_) => ErrorKind::Timeout,
            ProxyError::Overloaded { .. } => ErrorKind::Overloaded,
            ProxyError::NoReadyEndpoint { .. } => ErrorKind::NoEndpoint,
            ProxyError::Upstream(_) | ProxyError::RefusedStream | ProxyError::UpgradeToHttp2 => {
                ErrorKind::Upstream
            }
            ProxyError::Resolve { .. } => ErrorKind::Resolve,
            ProxyError::OwnListener(_) => ErrorKind::OwnListener,
            ProxyError::EgressRefused(_) => ErrorKind::EgressRefused,
            ProxyError::MeshTls { .. } | ProxyError::NoIdentity { .. } => ErrorKind::Tls,
            ProxyError::Unauthorized { .. } => ErrorKind::Unauthorized,
        }
    }
}

/// Why a request was sent again: the `reason` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryReason {
    ConnectFailure,
    RefusedStream,
    Reset,
    Status,
    PerTryTimeout,
}

impl RetryReason {
    const ALL: [RetryReason; 5] = [
        RetryReason::ConnectFailure,
        RetryReason::RefusedStream,
        RetryReason::Reset,
        RetryReason::Status,
        RetryReason::PerTryTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RetryReason::ConnectFailure => "connect-failure",
            RetryReason::RefusedStream => "refused-stream",
            RetryReason::Reset => "reset",
            RetryReason::Status => "status",
            RetryReason::PerTryTimeout => "per-try-timeout",
        }
    }
}

/// Status codes a route can count: 100 to 599.
const STATUSES: usize = 500;

/// One series of responses that came over mutual TLS: its status code, classification and error
/// labels, and its counter.
type IdentifiedResponse = (u16, &'static str, &'static str, IntCounter);

pub struct RouteMetrics {
    families: Arc<Families>,
    labels: [Arc<str>; 3],
    pub requests: IntCounter,
    pub latency: Histogram,
    pub duration: Histogram,
    /// Plaintext responses by status, resolved the first time each is seen.
    statuses: Box<[OnceLock<IntCounter>]>,
    /// Each kind's plaintext series: the counter, its status and its classification.
    errors: [OnceLock<(IntCounter, u16, &'static str)>; ErrorKind::ALL.len()],
    /// Responses over mutual TLS, per side and identity.
    identified: ByIdentity<Vec<IdentifiedResponse>>,
    retries: [IntCounter; RetryReason::ALL.len()],
    pub retries_skipped: IntCounter,
    pub hedges: IntCounter,
    pub hedges_won: IntCounter,
}

impl RouteMetrics {
    pub(super) fn new(
        families: Arc<Families>,
        direction: Direction,
        service: &str,
        route: &str,
    ) -> Self {
        let labels = [direction.as_str(), service, route];
        let retries = RetryReason::ALL.map(|r| {
            families
                .retries
                .with_label_values(&[labels[0], labels[1], labels[2], r.as_str()])
        });
        RouteMetrics {
            requests: families.requests.with_label_values(&labels),
            latency: families.latency.with_label_values(&labels),
            duration: families.duration.with_label_values(&labels),
            statuses: (0..STATUSES).map(|_| OnceLock::new()).collect(),
            errors: Default::default(),
            identified: ByIdentity::default(),
            retries,
            retries_skipped: families.retries_skipped.with_label_values(&labels),
            hedges: families.hedges.with_label_values(&labels),
            hedges_won: families.hedges_won.with_label_values(&labels),
            labels: labels.map(Arc::from),
            families,
        }
    }

    fn response_labels<'a>(
        &'a self,
        [client, tls, server]: [&'a str; 3],
        code: &'a str,
        classification: &'a str,
        error: &'a str,
    ) -> [&'a str; 9] {
        [
            &self.labels[0],
            &self.labels[1],
            &self.labels[2],
            client,
            tls,
            server,
            code,
            classification,
            error,
        ]
    }

    /// Counts a response from the app, which came over `peer`.
    pub fn response(&self, status: u16, peer: TlsPeer<'_>) {
        let Some(slot) = usize::from(status)
            .checked_sub(100)
            .and_then(|i| self.statuses.get(i))
        else {
            return;
        };
        let classification = if status >= 500 { "failure" } else { "success" };
        match peer.identified() {
            None => slot
                .get_or_init(|| {
                    self.families
                        .responses
                        .with_label_values(&self.response_labels(
                            PLAINTEXT,
                            &status.to_string(),
                            classification,
                            "",
                        ))
                })
                .inc(),
            Some(identified) => self.identified_response(identified, status, classification, ""),
        }
    }

    /// Counts a response the proxy generated for `error`; `peer` is the client's connection
    /// (inbound) or the endpoint last tried (outbound; plaintext when none was). It is the
    /// service's failure unless the client caused it (a malformed request, a body the client
    /// broke): like the app's own 4xx, that one is classified `success`, so it does not lower the
    /// service's success rate.
    pub fn error(&self, error: &ProxyError, peer: TlsPeer<'_>) {
        let kind = ErrorKind::of(error);
        let status = error.status().as_u16();
        let classification = match error.origin() {
            Origin::Downstream => "success",
            Origin::Upstream | Origin::Proxy => "failure",
        };
        if let Some(identified) = peer.identified() {
            return self.identified_response(identified, status, classification, kind.as_str());
        }
        let index = ErrorKind::ALL
            .iter()
            .position(|k| *k == kind)
            .expect("every kind is listed");
        let (counter, first_status, first_classification) = self.errors[index].get_or_init(|| {
            let counter = self
                .families
                .responses
                .with_label_values(&self.response_labels(
                    PLAINTEXT,
                    &status.to_string(),
                    classification,
                    kind.as_str(),
                ));
            (counter, status, classification)
        });
        if (*first_status, *first_classification) == (status, classification) {
            counter.inc();
        } else {
            // One kind maps to one status and classification: resolve an odd one.
            self.families
                .responses
                .with_label_values(&self.response_labels(
                    PLAINTEXT,
                    &status.to_string(),
                    classification,
                    kind.as_str(),
                ))
                .inc();
        }
    }

    /// Counts a response over mutual TLS in the series of its identity, resolved the first time
    /// that identity, status, classification and error are seen together.
    fn identified_response(
        &self,
        (side, identity): (Side, &str),
        status: u16,
        classification: &'static str,
        error: &'static str,
    ) {
        self.identified.with((side, identity), Vec::new, |series| {
            if let Some((.., counter)) = series
                .iter()
                .find(|(s, c, e, _)| (*s, *c, *e) == (status, classification, error))
            {
                return counter.inc();
            }
            let counter = self
                .families
                .responses
                .with_label_values(&self.response_labels(
                    peer::labels(side, identity),
                    &status.to_string(),
                    classification,
                    error,
                ));
            counter.inc();
            series.push((status, classification, error, counter));
        });
    }

    pub fn retry(&self, reason: RetryReason) {
        let index = RetryReason::ALL
            .iter()
            .position(|r| *r == reason)
            .expect("every reason is listed");
        self.retries[index].inc();
    }

    /// How many identities have series on this route.
    #[cfg(test)]
    pub(super) fn identities(&self) -> usize {
        self.identified.len()
    }
}

impl Drop for RouteMetrics {
    fn drop(&mut self) {
        let f = &self.families;
        let labels = [&*self.labels[0], &*self.labels[1], &*self.labels[2]];
        let _ = f.requests.remove_label_values(&labels);
        let _ = f.latency.remove_label_values(&labels);
        let _ = f.duration.remove_label_values(&labels);
        let _ = f.retries_skipped.remove_label_values(&labels);
        let _ = f.hedges.remove_label_values(&labels);
        let _ = f.hedges_won.remove_label_values(&labels);
        for reason in RetryReason::ALL {
            let _ =
                f.retries
                    .remove_label_values(&[labels[0], labels[1], labels[2], reason.as_str()]);
        }
        for (i, slot) in self.statuses.iter().enumerate() {
            if slot.get().is_some() {
                let status = i + 100;
                let classification = if status >= 500 { "failure" } else { "success" };
                let _ = f.responses.remove_label_values(&self.response_labels(
                    PLAINTEXT,
                    &status.to_string(),
                    classification,
                    "",
                ));
            }
        }
        for (kind, slot) in ErrorKind::ALL.iter().zip(&self.errors) {
            if let Some((_, status, classification)) = slot.get() {
                let _ = f.responses.remove_label_values(&self.response_labels(
                    PLAINTEXT,
                    &status.to_string(),
                    classification,
                    kind.as_str(),
                ));
            }
        }
        for (side, identity, series) in self.identified.drain() {
            for (status, classification, error, _) in series {
                let _ = f.responses.remove_label_values(&self.response_labels(
                    peer::labels(side, &identity),
                    &status.to_string(),
                    classification,
                    error,
                ));
            }
        }
    }
}

/// A service's balancer counters.
pub struct ServiceMetrics {
    families: Option<Arc<Families>>,
    service: Arc<str>,
    pub ejections: IntCounter,
    pub overload_rejections: IntCounter,
}

impl ServiceMetrics {
    pub(super) fn new(families: Arc<Families>, service: &str) -> Self {
        ServiceMetrics {
            ejections: families.ejections.with_label_values(&[service]),
            overload_rejections: families.overload_rejections.with_label_values(&[service]),
            service: service.into(),
            families: Some(families),
        }
    }

    /// Counters registered nowhere, for balancers outside a running proxy (tests, benchmarks).
    pub fn detached() -> Self {
        ServiceMetrics {
            families: None,
            service: "".into(),
            ejections: IntCounter::new("detached", "detached").expect("valid metric"),
            overload_rejections: IntCounter::new("detached", "detached").expect("valid metric"),
        }
    }
}

impl Drop for ServiceMetrics {
    fn drop(&mut self) {
        if let Some(f) = &self.families {
            let _ = f.ejections.remove_label_values(&[&self.service]);
            let _ = f.overload_rejections.remove_label_values(&[&self.service]);
        }
    }
}

/// A service's opaque-connection series.
pub struct TcpMetrics {
    families: Arc<Families>,
    labels: [Arc<str>; 2],
    /// Opened and closed counts of plaintext connections, resolved up front.
    pub plaintext: Arc<TcpConnections>,
    /// Those of connections over mutual TLS, per side and identity.
    identified: ByIdentity<Arc<TcpConnections>>,
    pub open: IntGauge,
    pub sent: IntCounter,
    pub received: IntCounter,
}

/// Opened and closed counts of one service's opaque connections over one kind of peer
/// (plaintext, or mutual TLS with one identity).
pub struct TcpConnections {
    pub opened: IntCounter,
    pub closed_ok: IntCounter,
    pub closed_error: IntCounter,
    /// Closed after the tunnel idle timeout without traffic.
    pub closed_idle: IntCounter,
}

/// The `outcome` label of each closed counter.
const OUTCOMES: [&str; 3] = ["ok", "error", "idle"];

impl TcpConnections {
    fn new(
        f: &Families,
        [direction, service]: [&str; 2],
        [client, tls, server]: [&str; 3],
    ) -> Self {
        let closed = |outcome| {
            f.tcp_closed
                .with_label_values(&[direction, service, client, tls, server, outcome])
        };
        TcpConnections {
            opened: f
                .tcp_opened
                .with_label_values(&[direction, service, client, tls, server]),
            closed_ok: closed(OUTCOMES[0]),
            closed_error: closed(OUTCOMES[1]),
            closed_idle: closed(OUTCOMES[2]),
        }
    }

    fn remove(f: &Families, [direction, service]: [&str; 2], [client, tls, server]: [&str; 3]) {
        let _ = f
            .tcp_opened
            .remove_label_values(&[direction, service, client, tls, server]);
        for outcome in OUTCOMES {
            let _ = f
                .tcp_closed
                .remove_label_values(&[direction, service, client, tls, server, outcome]);
        }
    }
}

impl TcpMetrics {
    pub(super) fn new(families: Arc<Families>, direction: Direction, service: &str) -> Self {
        let labels = [direction.as_str(), service];
        TcpMetrics {
            plaintext: Arc::new(TcpConnections::new(&families, labels, PLAINTEXT)),
            identified: ByIdentity::default(),
            open: families.tcp_open.with_label_values(&labels),
            sent: families.tcp_sent.with_label_values(&labels),
            received: families.tcp_received.with_label_values(&labels),
            labels: labels.map(Arc::from),
            families,
        }
    }

    /// The opened and closed counters of a connection over `peer` (resolved the first time its
    /// identity is seen): looked up once per connection.
    pub fn connections(&self, peer: TlsPeer<'_>) -> Arc<TcpConnections> {
        let Some((side, identity)) = peer.identified() else {
            return self.plaintext.clone();
        };
        let labels = [&*self.labels[0], &*self.labels[1]];
        self.identified.with(
            (side, identity),
            || {
                Arc::new(TcpConnections::new(
                    &self.families,
                    labels,
                    peer::labels(side, identity),
                ))
            },
            |connections| connections.clone(),
        )
    }
}

impl Drop for TcpMetrics {
    fn drop(&mut self) {
        let f = &self.families;
        let labels = [&*self.labels[0], &*self.labels[1]];
        TcpConnections::remove(f, labels, PLAINTEXT);
        for (side, identity, _) in self.identified.drain() {
            TcpConnections::remove(f, labels, peer::labels(side, &identity));
        }
        let _ = f.tcp_open.remove_label_values(&labels);
        let _ = f.tcp_sent.remove_label_values(&labels);
        let _ = f.tcp_received.remove_label_values(&labels);
    }
}
