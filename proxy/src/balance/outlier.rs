//! Outlier detection: take an endpoint that keeps failing out of rotation, and let one request
//! decide when it comes back.
//!
//! After `consecutiveFailures` failures in a row (what counts is `failureOn`: connect failures and
//! 5xx by default) an endpoint is ejected for `minEjection` × 2^(ejections so far), capped at
//! `maxEjection`, with ±10 % jitter so a fleet of proxies does not probe in lockstep. When the time
//! is up, exactly one request (the probe) is let through: success returns the endpoint to
//! rotation, failure ejects it again for twice as long. The ejection count resets once the
//! endpoint has served successfully for `maxEjection` after its return.
//!
//! Never more than `maxEjectedPercent` of a service's endpoints are ejected at once: when most of
//! them fail, the cause is usually shared (a database down), and spreading traffic over all of
//! them beats piling it onto the few that are left.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use herd_config::OutlierDetection;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Ready,
    Ejected,
    /// The ejection is over and a probe may be (or is being) sent.
    Probing,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Ready => "ready",
            State::Ejected => "ejected",
            State::Probing => "probing",
        }
    }
}

#[derive(Debug, Default)]
pub struct Health {
    consecutive_failures: AtomicU32,
    ejections: AtomicU32,
    /// `now_nanos` when the current ejection ends; 0 when not ejected.
    ejected_until: AtomicU64,
    /// When the endpoint last returned from an ejection.
    returned_at: AtomicU64,
    probe_in_flight: AtomicBool,
}

impl Health {
    pub fn state(&self, now: u64) -> State {
        match self.ejected_until.load(Ordering::Acquire) {
            0 => State::Ready,
            until if now < until => State::Ejected,
            _ => State::Probing,
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Whether a request may go to this endpoint now; `Some(true)` when it is the probe.
    pub fn admit(&self, now: u64) -> Option<bool> {
        match self.state(now) {
            State::Ready => Some(false),
            State::Ejected => None,
            State::Probing => self
                .probe_in_flight
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                .then_some(true),
        }
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.state(now) != State::Ready
    }

    /// Records a success; `probe` when this request was the probe.
    pub fn success(&self, probe: bool, now: u64, config: &OutlierDetection) {
        self.consecutive_failures.store(0, Ordering::Relaxed);
        if probe {
            self.returned_at.store(now, Ordering::Relaxed);
            self.ejected_until.store(0, Ordering::Release);
            self.probe_in_flight.store(false, Ordering::Release);
        } else if self.ejections.load(Ordering::Relaxed) > 0 {
            let returned = self.returned_at.load(Ordering::Relaxed);
            if now.saturating_sub(returned) >= nanos(config.max_ejection) {
                self.ejections.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Records a failure; `probe` when this request was the probe (which is then ejected again,
    /// for longer). Returns whether the endpoint has now failed often enough to be ejected: the
    /// caller decides, under the service's cap, and calls [`Health::eject_if_ready`].
    pub fn failure(&self, probe: bool, now: u64, config: &OutlierDetection) -> bool {
        if config.consecutive_failures == 0 {
            return false;
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if probe {
            self.eject(now, config);
            self.probe_in_flight.store(false, Ordering::Release);
            return false;
        }
        failures >= config.consecutive_failures && self.state(now) == State::Ready
    }

    /// Ejects the endpoint unless it already is; returns whether it did.
    pub fn eject_if_ready(&self, now: u64, config: &OutlierDetection) -> bool {
        if self.state(now) != State::Ready {
            return false;
        }
        self.eject(now, config);
        true
    }

    /// Releases a probe that ended without a verdict (cancelled), so another can be sent.
    pub fn abandon_probe(&self) {
        self.probe_in_flight.store(false, Ordering::Release);
    }

    fn eject(&self, now: u64, config: &OutlierDetection) {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed);
        let base = config
            .min_ejection
            .saturating_mul(1u32 << n.min(16))
            .min(config.max_ejection);
        let jittered = base.mul_f64(0.9 + 0.2 * fastrand::f64());
        self.ejected_until.store(
            now.saturating_add(nanos(jittered)).max(1),
            Ordering::Release,
        );
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn config() -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: 3,
            ..OutlierDetection::default()
        }
    }

    #[test]
    fn ejects_after_consecutive_failures_and_a_probe_decides() {
        let h = Health::default();
        let c = config();
        assert!(!h.failure(false, 1, &c));
        assert!(!h.failure(false, 2, &c));
        h.success(false, 3, &c);
        assert!(!h.failure(false, 4, &c));
        assert!(!h.failure(false, 5, &c));
        assert!(h.failure(false, 6, &c));
        assert!(h.eject_if_ready(6, &c));
        assert!(!h.eject_if_ready(6, &c), "ejected twice");
        assert_eq!(h.state(7), State::Ejected);
        assert_eq!(h.admit(7), None);
        // 1 s ± 10 %: over after 1.1 s, then exactly one probe.
        let later = 6 + S * 11 / 10;
        assert_eq!(h.state(later), State::Probing);
        assert_eq!(h.admit(later), Some(true));
        assert_eq!(h.admit(later), None);
        // A failed probe doubles the ejection.
        assert!(!h.failure(true, later, &c));
        assert_eq!(h.state(later + S * 17 / 10), State::Ejected);
        let again = later + S * 23 / 10;
        assert_eq!(h.admit(again), Some(true));
        h.success(true, again, &c);
        assert_eq!(h.state(again), State::Ready);
        assert_eq!(h.admit(again), Some(false));
        assert_eq!(h.ejections(), 2);
    }

    #[test]
    fn ejection_time_is_capped() {
        let h = Health::default();
        let c = OutlierDetection {
            consecutive_failures: 1,
            max_ejection: Duration::from_secs(4),
            ..OutlierDetection::default()
        };
        let mut now = 0;
        for _ in 0..8 {
            let probe = h.state(now) == State::Probing;
            if h.failure(probe, now, &c) {
                assert!(h.eject_if_ready(now, &c));
            }
            let until = h.ejected_until.load(Ordering::Relaxed);
            assert!(until - now <= S * 44 / 10, "{}", until - now);
            now = until;
            assert_eq!(h.admit(now), Some(true));
        }
    }

    #[test]
    fn zero_disables() {
        let h = Health::default();
        let c = OutlierDetection {
            consecutive_failures: 0,
            ..OutlierDetection::default()
        };
        for t in 0..100 {
            assert!(!h.failure(false, t, &c));
        }
    }
}
