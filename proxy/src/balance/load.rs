//! An endpoint's load: requests in flight and a peak-sensitive moving average of its latency.
//!
//! Peak EWMA (Finagle's, and Linkerd's): each response's latency feeds an exponentially weighted
//! moving average whose weight decays with the time since the last sample (`decay`, 10 s by
//! default), except that a sample *above* the average replaces it outright. The average so reacts
//! at once when an endpoint slows down and forgets slowly when it recovers, which is what steers
//! traffic away from a busy Puma pod before its queue grows. Between samples the estimate also
//! decays toward zero, so an endpoint that was slow long ago gets traffic again and can prove
//! itself. An endpoint with no sample yet costs `defaultRtt`.
//!
//! The state is two atomics per endpoint (the estimate's bits and its timestamp), updated without
//! a lock: two responses racing to update may lose one sample, which an average forgives.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since the first use, on tokio's clock (so paused-time tests control it).
pub fn now_nanos() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(Instant::now().saturating_duration_since(epoch).as_nanos())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[derive(Debug, Default)]
pub struct Load {
    in_flight: AtomicU32,
    /// f64 nanoseconds; 0.0 means no sample yet.
    rtt_ns: AtomicU64,
    stamp: AtomicU64,
}

impl Load {
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request (or a tunnel) until the guard drops.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// The latency estimate at `now`, decayed since the last sample; `None` before any sample.
    pub fn rtt_ns(&self, now: u64, decay: Duration) -> Option<f64> {
        let rtt = f64::from_bits(self.rtt_ns.load(Ordering::Relaxed));
        if rtt == 0.0 {
            return None;
        }
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        Some(rtt * (-elapsed / decay.as_nanos() as f64).exp())
    }

    /// Peak-EWMA cost: the latency estimate (or `default_rtt`) times the requests in flight plus
    /// the one being placed.
    pub fn cost(&self, now: u64, decay: Duration, default_rtt: Duration) -> f64 {
        let rtt = self
            .rtt_ns(now, decay)
            .unwrap_or(default_rtt.as_nanos() as f64);
        rtt * f64::from(self.in_flight() + 1)
    }

    /// Feeds one response's latency into the average.
    pub fn observe(&self, rtt: Duration, now: u64, decay: Duration) {
        let sample = rtt.as_nanos() as f64;
        let next = match self.rtt_ns(now, decay) {
            None => sample,
            Some(current) if sample > current => sample,
            Some(current) => {
                let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
                let w = (-elapsed / decay.as_nanos() as f64).exp();
                current * w + sample * (1.0 - w)
            }
        };
        // A sample of 0 ns would read as "no sample"; the clock's resolution is coarser anyway.
        self.rtt_ns
            .store(next.max(1.0).to_bits(), Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }
}

/// One request in flight on an endpoint.
#[derive(Debug)]
pub struct InFlight(Arc<Load>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECAY: Duration = Duration::from_secs(10);
    const MS: u64 = 1_000_000;

    #[test]
    fn peaks_are_taken_at_once_and_forgotten_slowly() {
        let load = Load::default();
        assert_eq!(load.rtt_ns(0, DECAY), None);
        load.observe(Duration::from_millis(10), 1, DECAY);
        load.observe(Duration::from_millis(100), 2, DECAY);
        assert!((load.rtt_ns(2, DECAY).unwrap() - 100.0 * MS as f64).abs() < 1.0);
        // A fast sample right after barely moves the average...
        load.observe(Duration::from_millis(10), 3, DECAY);
        assert!(load.rtt_ns(3, DECAY).unwrap() > 99.0 * MS as f64);
        // ...one a decay period later moves it most of the way.
        load.observe(Duration::from_millis(10), 3 + 10_000 * MS, DECAY);
        let rtt = load.rtt_ns(3 + 10_000 * MS, DECAY).unwrap();
        assert!(rtt < 50.0 * MS as f64 && rtt > 10.0 * MS as f64, "{rtt}");
    }

    #[test]
    fn cost_grows_with_requests_in_flight() {
        let load = Arc::new(Load::default());
        let default = Duration::from_millis(30);
        let idle = load.cost(0, DECAY, default);
        assert_eq!(idle, 30.0 * MS as f64);
        let a = load.start();
        let _b = load.start();
        assert_eq!(load.cost(0, DECAY, default), 3.0 * idle);
        drop(a);
        assert_eq!(load.in_flight(), 1);
    }
}
