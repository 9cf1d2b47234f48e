//! Retries and hedging: send a request again, to another endpoint, when that is safe and cheap.
//!
//! A retry hides a sick pod from users; a careless one turns a slow database into a retry storm
//! or posts a status twice. So, per route:
//!
//! - **What is retried** (`retry.conditions`): a failed connect, an HTTP/2 `REFUSED_STREAM`, and a
//!   connection that failed before a byte of the request was written all prove the app never saw
//!   the request: any method is retried. A reset after the request was written, a response
//!   condition (`gateway-error`, `5xx`, a status), and a `perTryTimeout` are retried only for
//!   idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE, TRACE), unless `nonIdempotent`.
//! - **What can be retried**: a body is kept for replay only up to `bufferLimit` (64 KiB); a
//!   larger one streams and its request is not retried, unless none of it was sent. Upgrades are
//!   never retried, and nothing is once response headers have gone to the client (a retry only
//!   ever replaces a response the client has not seen).
//! - **How often**: at most `attempts` retries, each after a full-jitter backoff
//!   (`random(0, min(max, base × 2^n))`), each to another endpoint when there is one, all within
//!   the route's `timeout`. And within the service's retry budget ([`budget`]): every request
//!   deposits, every retry or hedge withdraws, so over any stretch of T seconds retries add at
//!   most `ratio` × its requests + `minPerSecond` × max(T, `window`). With the budget spent, the
//!   failure goes back to the client as it is.
//!
//! **Hedging** (`hedge.delay`): for an idempotent, replayable request, if the first attempt has not
//! answered within the delay (fixed, or a percentile of the route's recent latency), a second one
//! goes to another endpoint; the first response wins and the other attempt is dropped, which
//! closes its HTTP/1 connection or resets its HTTP/2 stream, cancelling it at the app.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hdrhistogram::Histogram;
use herd_config::{Backoff, Hedge, HedgeDelay, RetryCondition, RetryPolicy};
use herd_identity::SpiffeId;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use tokio::time::Instant;
use tracing::debug;

use crate::balance::{Balancer, Dispatch, Member, ResponseLease};
use crate::body::{BodyProgress, RequestBody};
use crate::endpoint::{SendError, UpstreamBody, is_idempotent};
use crate::errors::ProxyError;
use crate::metrics::{RetryReason, RouteMetrics};
use crate::outcome::Outcome;

/// How one request's attempts are made: what the retry stage needs of the request's service and
/// route, which the route stage hands down (`RouteTarget::plan`). The retry stage sits below the
/// route stage, so it takes this plain view rather than the route's own types.
pub struct Plan<'a> {
    /// The service's name, for logs.
    pub service: &'a str,
    pub balancer: &'a Balancer,
    /// The service's retry budget, when a route of the service retries or hedges.
    pub budget: Option<&'a RetryBudget>,
    /// The route's response timeout across all attempts; `None` for none.
    pub timeout: Option<Duration>,
    pub retry: Option<&'a RetryPolicy>,
    pub hedge: Option<&'a Hedge>,
    /// The route's recent latency, kept only for a percentile hedge delay.
    pub latency: Option<&'a LatencyWindow>,
    pub metrics: &'a RouteMetrics,
}

mod budget;

pub use budget::RetryBudget;

/// A route's recent latency, for percentile hedge delays: two histograms of one window each,
/// the older answering until the newer has enough samples.
pub struct LatencyWindow {
    window: Duration,
    state: Mutex<(Histogram<u64>, Histogram<u64>, Instant)>,
}

/// Samples a window needs before its percentiles are trusted.
const MIN_SAMPLES: u64 = 20;

impl LatencyWindow {
    pub fn new(window: Duration) -> Self {
        let h = || Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid histogram bounds");
        LatencyWindow {
            window,
            state: Mutex::new((h(), h(), Instant::now())),
        }
    }

    fn rotate(state: &mut (Histogram<u64>, Histogram<u64>, Instant), window: Duration) {
        if state.2.elapsed() >= window {
            std::mem::swap(&mut state.0, &mut state.1);
            state.0.reset();
            state.2 = Instant::now();
        }
    }

    pub fn record(&self, latency: Duration) {
        let mut state = self.state.lock().expect("latency lock poisoned");
        Self::rotate(&mut state, self.window);
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, 60_000_000);
        let _ = state.0.record(micros);
    }

    /// The `p`th percentile, once enough samples are in.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut state = self.state.lock().expect("latency lock poisoned");
        Self::rotate(&mut state, self.window);
        let h = if state.0.len() >= MIN_SAMPLES {
            &state.0
        } else {
            &state.1
        };
        (h.len() >= MIN_SAMPLES).then(|| Duration::from_micros(h.value_at_percentile(p)))
    }
}

/// What a request's later attempts are made of: its head, and its body when held whole.
struct Template {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    body: RequestBody,
}

impl Template {
    fn of(req: &Request<RequestBody>) -> Option<Template> {
        Some(Template {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            body: req.body().replay()?,
        })
    }

    fn build(&self) -> Option<Request<RequestBody>> {
        let mut req = Request::new(self.body.replay()?);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        Some(req)
    }
}

/// Why an attempt failed, as far as retrying is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    NoConnection,
    RefusedStream,
    /// The connection failed; `written` says whether any of the request went out.
    Reset {
        written: bool,
    },
    PerTryTimeout,
    Status(u16),
    /// Not retryable at all (e.g. the service is overloaded).
    Other,
}

impl Failure {
    fn never_reached_app(self) -> bool {
        matches!(
            self,
            Failure::NoConnection | Failure::RefusedStream | Failure::Reset { written: false }
        )
    }

    fn allowed_by(self, policy: &RetryPolicy) -> bool {
        policy.conditions.iter().any(|c| match (c, self) {
            (RetryCondition::ConnectFailure, Failure::NoConnection) => true,
            (RetryCondition::RefusedStream, Failure::RefusedStream) => true,
            (RetryCondition::Reset, Failure::Reset { .. }) => true,
            (RetryCondition::GatewayError, Failure::Status(s)) => matches!(s, 502..=504),
            (RetryCondition::Status5xx, Failure::Status(s)) => (500..600).contains(&s),
            (RetryCondition::Status(code), Failure::Status(s)) => *code == s,
            _ => false,
        }) || self == Failure::PerTryTimeout
    }
}

/// One attempt's result.
type Attempt = Result<(Response<UpstreamBody>, ResponseLease), Failed>;

struct Failed {
    error: ProxyError,
    failure: Failure,
    /// The request, when none of it was sent.
    unsent: Option<Request<RequestBody>>,
}

/// The route's deadline: `timeout` after the request body has been forwarded in full (at once
/// for a body held whole), across every attempt.
struct Deadline {
    timeout: Option<Duration>,
    body_ended: Option<BodyProgress>,
    at: Option<Instant>,
}

impl Deadline {
    /// Resolves when the deadline passes; never without a timeout. Cancel-safe.
    async fn passed(&mut self) {
        let Some(timeout) = self.timeout else {
            return std::future::pending().await;
        };
        if self.at.is_none() {
            if let Some(body) = &self.body_ended {
                body.ended().await;
            }
            self.body_ended = None;
            self.at = Some(Instant::now() + timeout);
        }
        tokio::time::sleep_until(self.at.expect("set above")).await;
    }

    fn error(&self) -> ProxyError {
        ProxyError::ResponseTimeout(self.timeout.unwrap_or_default())
    }
}

/// What the attempts of one request came to, for the access log and the response's metrics.
#[derive(Debug, Default)]
pub struct Trace {
    /// Tries sent (a hedged pair counts once).
    pub attempts: u32,
    /// The endpoint of the last try.
    pub endpoint: Option<std::net::SocketAddr>,
    /// The SPIFFE ID the last try's endpoint had to present: it is meshed, reached over mutual
    /// TLS (a response from it came from that identity, the match is exact). Also set when the
    /// route's timeout cut that try short. `None`: plaintext, or no endpoint was tried.
    pub server_identity: Option<Arc<SpiffeId>>,
}

/// The SPIFFE ID of the meshed endpoint the try in flight went to, set as it is dispatched: what
/// [`Trace::server_identity`] keeps when the route's timeout drops the try before it returns.
/// Plaintext endpoints leave it alone, so their tries take no lock.
type InFlightPeer = Mutex<Option<Arc<SpiffeId>>>;

/// Sends `req` to an endpoint of the plan's service under its route's timeout, retry and hedge
/// policies. `replayable` is false for requests that must never be sent twice (upgrades).
pub async fn send(
    plan: Plan<'_>,
    req: Request<RequestBody>,
    body_ended: Option<BodyProgress>,
    hash: Option<u64>,
    replayable: bool,
    trace: &mut Trace,
) -> Result<(Response<UpstreamBody>, ResponseLease), ProxyError> {
    let plan = &plan;
    let policy = plan.retry.filter(|_| replayable);
    let idempotent = is_idempotent(req.method()) || policy.is_some_and(|p| p.non_idempotent);
    let hedge = plan
        .hedge
        .filter(|_| replayable && is_idempotent(req.method()));
    let template = if policy.is_some() || hedge.is_some() {
        Template::of(&req)
    } else {
        None
    };
    let budget = plan.budget;
    if let Some(budget) = budget {
        budget.deposit();
    }
    let withdraw = || budget.is_some_and(|b| b.withdraw());

    let mut deadline = Deadline {
        timeout: plan.timeout,
        body_ended,
        at: None,
    };
    let mut next = Some(req);
    let mut last: Option<Arc<Member>> = None;
    let mut retries = 0;
    let mut in_flight = InFlightPeer::default();
    loop {
        let Some(req) = next.take() else {
            unreachable!("every iteration sets the next request")
        };
        let per_try = policy.and_then(|p| p.per_try_timeout);
        let peer = &in_flight;
        let attempt = async {
            match (hedge, &template) {
                // Hedging holds two attempts and a timer: boxed, so routes without it (and the
                // future of every request) do not carry them.
                (Some(hedge), Some(template)) => {
                    Box::pin(hedged(
                        plan,
                        req,
                        template,
                        hedge.delay,
                        last.clone(),
                        hash,
                        per_try,
                        &withdraw,
                        peer,
                    ))
                    .await
                }
                _ => attempt(plan, req, hash, last.as_ref(), per_try, peer).await,
            }
        };
        let (result, endpoint) = tokio::select! {
            result = attempt => result,
            _ = deadline.passed() => {
                trace.server_identity = in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                return Err(deadline.error());
            }
        };
        trace.attempts += u32::from(endpoint.is_some());
        trace.endpoint = endpoint.as_ref().map(|e| e.addr());
        trace.server_identity = endpoint
            .as_ref()
            .and_then(|e| e.endpoint.key().peer.clone());
        // The next try starts with no endpoint.
        *in_flight.get_mut().unwrap_or_else(PoisonError::into_inner) = None;
        last = endpoint;
        let failure = match &result {
            Ok((resp, _)) => Failure::Status(resp.status().as_u16()),
            Err(failed) => failed.failure,
        };
        let retry = policy.filter(|p| {
            retries < p.attempts
                && failure.allowed_by(p)
                && (idempotent || failure.never_reached_app())
        });
        let Some(policy) = retry else {
            return result.map_err(|f| f.error);
        };
        // The request to send again: the one handed back unsent, or a replay of the original.
        let (again, result) = match result {
            Err(Failed {
                error,
                failure,
                unsent: Some(unsent),
            }) => (
                Some(unsent),
                Err(Failed {
                    error,
                    failure,
                    unsent: None,
                }),
            ),
            other => (template.as_ref().and_then(Template::build), other),
        };
        let Some(again) = again else {
            return result.map_err(|f| f.error);
        };
        if !withdraw() {
            debug!(service = %plan.service, "retry budget spent");
            plan.metrics.retries_skipped.inc();
            return result.map_err(|f| f.error);
        }
        drop(result);
        retries += 1;
        debug!(service = %plan.service, ?failure, retry = retries, "retrying");
        plan.metrics.retry(match failure {
            Failure::NoConnection => RetryReason::ConnectFailure,
            Failure::RefusedStream => RetryReason::RefusedStream,
            Failure::Reset { .. } | Failure::Other => RetryReason::Reset,
            Failure::PerTryTimeout => RetryReason::PerTryTimeout,
            Failure::Status(_) => RetryReason::Status,
        });
        let backoff = backoff(&policy.backoff, retries);
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = deadline.passed() => return Err(deadline.error()),
        }
        next = Some(again);
    }
}

/// Full jitter (AWS's "exponential backoff and jitter"): a random wait between zero and
/// `min(max, base × 2^(retry - 1))`, so retries from many proxies spread out instead of
/// arriving together.
fn backoff(config: &Backoff, retry: u32) -> Duration {
    let cap = config
        .base
        .saturating_mul(1 << retry.saturating_sub(1).min(16))
        .min(config.max);
    cap.mul_f64(fastrand::f64())
}

/// One attempt: an endpoint (not `avoid` when another is available), then the exchange.
async fn attempt(
    plan: &Plan<'_>,
    req: Request<RequestBody>,
    hash: Option<u64>,
    avoid: Option<&Arc<Member>>,
    per_try: Option<Duration>,
    peer: &InFlightPeer,
) -> (Attempt, Option<Arc<Member>>) {
    match plan.balancer.dispatch_avoiding(hash, true, avoid).await {
        Ok(dispatch) => exchange(plan, dispatch, req, per_try, peer).await,
        Err(error) => (
            Err(Failed {
                error,
                failure: Failure::Other,
                unsent: None,
            }),
            None,
        ),
    }
}

/// Sends `req` on the endpoint `dispatch` holds, within `per_try`, and tells the balancer how it
/// went. A meshed endpoint's identity goes into `peer` first.
async fn exchange(
    plan: &Plan<'_>,
    mut dispatch: Dispatch,
    req: Request<RequestBody>,
    per_try: Option<Duration>,
    peer: &InFlightPeer,
) -> (Attempt, Option<Arc<Member>>) {
    let member = dispatch.member.clone();
    if let Some(identity) = &member.endpoint.key().peer {
        *peer.lock().unwrap_or_else(PoisonError::into_inner) = Some(identity.clone());
    }
    let started = Instant::now();
    let send = member.endpoint.send(req, dispatch.take_slot());
    let sent = match per_try {
        Some(limit) => match tokio::time::timeout(limit, send).await {
            Ok(sent) => sent,
            Err(_) => Err(SendError {
                error: ProxyError::ResponseTimeout(limit),
                unsent: None,
            }),
        },
        None => send.await,
    };
    let result = match sent {
        Ok((resp, lease)) => {
            plan.balancer
                .record(&mut dispatch, Outcome::Status(resp.status().as_u16()));
            if let Some(latency) = plan.latency {
                latency.record(started.elapsed());
            }
            Ok((resp, dispatch.hold(lease)))
        }
        Err(SendError { error, unsent }) => {
            if let Some(outcome) = error.outcome() {
                plan.balancer.record(&mut dispatch, outcome);
            }
            let failure = match &error {
                ProxyError::ConnectRefused(_)
                | ProxyError::ConnectTimeout { .. }
                | ProxyError::Connect { .. }
                | ProxyError::Handshake(_) => Failure::NoConnection,
                ProxyError::RefusedStream => Failure::RefusedStream,
                ProxyError::ResponseTimeout(_) => Failure::PerTryTimeout,
                ProxyError::Upstream(_) => Failure::Reset {
                    written: unsent.is_none(),
                },
                _ => Failure::Other,
            };
            Err(Failed {
                error,
                failure,
                unsent,
            })
        }
    };
    (result, Some(member))
}

/// An attempt with a hedge: if it has not answered within `delay`, a second one goes to another
/// endpoint, and the first response wins.
#[allow(clippy::too_many_arguments)]
async fn hedged(
    plan: &Plan<'_>,
    req: Request<RequestBody>,
    template: &Template,
    delay: HedgeDelay,
    avoid: Option<Arc<Member>>,
    hash: Option<u64>,
    per_try: Option<Duration>,
    withdraw: &impl Fn() -> bool,
    peer: &InFlightPeer,
) -> (Attempt, Option<Arc<Member>>) {
    let balancer = plan.balancer;
    let delay = match delay {
        HedgeDelay::After(d) => Some(d),
        HedgeDelay::Percentile(p) => plan.latency.and_then(|l| l.percentile(p)),
    };
    let dispatch = match balancer.dispatch_avoiding(hash, true, avoid.as_ref()).await {
        Ok(dispatch) => dispatch,
        Err(error) => {
            return (
                Err(Failed {
                    error,
                    failure: Failure::Other,
                    unsent: None,
                }),
                None,
            );
        }
    };
    let first_endpoint = dispatch.member.clone();
    let first = exchange(plan, dispatch, req, per_try, peer);
    tokio::pin!(first);
    let Some(delay) = delay else {
        return first.await;
    };
    tokio::select! {
        done = &mut first => return done,
        _ = tokio::time::sleep(delay) => {}
    }
    let Some(second_req) = template.build() else {
        return first.await;
    };
    if !withdraw() {
        return first.await;
    }
    debug!(service = %plan.service, ?delay, "hedging");
    plan.metrics.hedges.inc();
    let second = attempt(plan, second_req, hash, Some(&first_endpoint), per_try, peer);
    tokio::pin!(second);
    tokio::select! {
        done = &mut first => match done {
            (Ok(ok), endpoint) => (Ok(ok), endpoint),
            (Err(_), _) => second.await,
        },
        done = &mut second => match done {
            (Ok(ok), endpoint) => {
                plan.metrics.hedges_won.inc();
                (Ok(ok), endpoint)
            }
            (Err(_), _) => first.await,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(conditions: Vec<RetryCondition>) -> RetryPolicy {
        RetryPolicy {
            conditions,
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn conditions_select_what_is_retried() {
        let default = RetryPolicy::default();
        assert!(Failure::NoConnection.allowed_by(&default));
        assert!(Failure::RefusedStream.allowed_by(&default));
        assert!(Failure::Reset { written: true }.allowed_by(&default));
        assert!(Failure::Status(503).allowed_by(&default));
        assert!(!Failure::Status(500).allowed_by(&default));
        assert!(!Failure::Status(200).allowed_by(&default));
        assert!(!Failure::Other.allowed_by(&default));
        // A per-try timeout is what perTryTimeout is for: always retryable.
        assert!(Failure::PerTryTimeout.allowed_by(&policy(vec![RetryCondition::ConnectFailure])));
        let codes = policy(vec![RetryCondition::Status(429), RetryCondition::Status5xx]);
        assert!(Failure::Status(429).allowed_by(&codes));
        assert!(Failure::Status(500).allowed_by(&codes));
        assert!(!Failure::NoConnection.allowed_by(&codes));
    }

    #[test]
    fn only_unsent_requests_count_as_never_reaching_the_app() {
        assert!(Failure::NoConnection.never_reached_app());
        assert!(Failure::RefusedStream.never_reached_app());
        assert!(Failure::Reset { written: false }.never_reached_app());
        assert!(!Failure::Reset { written: true }.never_reached_app());
        assert!(!Failure::PerTryTimeout.never_reached_app());
        assert!(!Failure::Status(502).never_reached_app());
    }

    #[test]
    fn idempotent_methods() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::OPTIONS,
            Method::PUT,
            Method::DELETE,
            Method::TRACE,
        ] {
            assert!(is_idempotent(&m), "{m}");
        }
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }

    #[tokio::test(start_paused = true)]
    async fn percentiles_need_samples_and_follow_the_window() {
        let w = LatencyWindow::new(Duration::from_secs(10));
        for _ in 0..10 {
            w.record(Duration::from_millis(10));
        }
        assert_eq!(w.percentile(95.0), None, "too few samples");
        for i in 0..100 {
            w.record(Duration::from_millis(if i < 90 { 10 } else { 100 }));
        }
        let p95 = w.percentile(95.0).unwrap();
        assert!(
            p95 >= Duration::from_millis(99) && p95 <= Duration::from_millis(101),
            "{p95:?}"
        );
        // A window later the old samples still answer until new ones arrive...
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(w.percentile(95.0).is_some());
        for _ in 0..30 {
            w.record(Duration::from_millis(20));
        }
        let p95 = w.percentile(95.0).unwrap();
        assert!(
            p95 >= Duration::from_millis(19) && p95 <= Duration::from_millis(21),
            "{p95:?}"
        );
        // ...and two windows later, with nothing new, nothing answers.
        tokio::time::advance(Duration::from_secs(20)).await;
        w.record(Duration::from_millis(1));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(w.percentile(95.0), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_starts_when_the_body_has_been_forwarded() {
        let body = BodyProgress::default();
        let mut deadline = Deadline {
            timeout: Some(Duration::from_secs(2)),
            body_ended: Some(body.clone()),
            at: None,
        };
        let started = Instant::now();
        let forwarding = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            body.end(Ok(()));
        });
        // Polled and dropped before the body ends: nothing is lost.
        assert!(
            tokio::time::timeout(Duration::from_secs(1), deadline.passed())
                .await
                .is_err()
        );
        deadline.passed().await;
        assert_eq!(started.elapsed(), Duration::from_secs(7));
        forwarding.await.unwrap();
        let mut none = Deadline {
            timeout: None,
            body_ended: None,
            at: None,
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), none.passed())
                .await
                .is_err()
        );
    }

    #[test]
    fn backoff_defaults() {
        let b = Backoff::default();
        assert_eq!(
            (b.base, b.max),
            (Duration::from_millis(25), Duration::from_millis(250))
        );
    }
}
