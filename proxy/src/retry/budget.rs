//! A service's retry budget: the bound on what its retries and hedges add, over any stretch of
//! time, that an operator can work out from the three numbers of `retryBudget`.
//!
//! **The rule.** A retry (or hedge) is let through at time t only if, counting it:
//!
//! 1. the retries of the last `window` are at most `ratio` × the requests of the last `window`
//!    \+ `minPerSecond` × `window` (the reserve), and
//! 2. over every longer stretch ending at t, the retries are at most `ratio` × the stretch's
//!    requests + `minPerSecond` × its length.
//!
//! The first is the classic budget. The second is what keeps a spent reserve from coming back
//! whole the moment its retries leave the window: it comes back at `minPerSecond` a second.
//! Together, the retries of any stretch of T seconds are at most `ratio` × its requests +
//! `minPerSecond` × max(T, `window`) (for T under a window, the requests counted are those of
//! the window that ends with its last retry): check rule 1 or 2 at the stretch's last retry.
//! So 300 requests at 30 a second against `{ ratio: 0.2, minPerSecond: 10, window: 10s }` get
//! at most 0.2 × 300 + 10 × 10 = 160 retries if they are over within 10 s. tower's
//! `TpsBudget`, which this replaces, added its reserve to the sum of the window at every
//! withdrawal, so the reserve spent in the first second was there again ten seconds later
//! (and its ring of slots skipped one at each turn, forgetting withdrawals after half the
//! window): 259 retries in that case.
//!
//! **How it is counted.** Time is cut into slots of `window`/20, anchored at the first request
//! after a quiet spell. A ring holds the counts of the current slot and the 20 before it (a
//! whole window back from any moment in the current slot); one number, `pressure`, stands for
//! everything older. Rounding goes against retries: a slot's retries count until the slot has
//! wholly left the window, its requests only while it is wholly inside, so the budget may allow
//! a little less than the rule (about `ratio` × one slot's requests), never more.
//!
//! Rule 2 for stretches that start before the ring: for an old slot j, the stretch from j's
//! start is within bounds if retries(j..now) + 1 − `ratio` × requests(j+1..now) ≤
//! `minPerSecond` × (now − end of j). Splitting each side at the ring's start s leaves one
//! condition on the ring, retries(ring) + 1 − `ratio` × requests(ring) − `minPerSecond` ×
//! (now − s) ≤ −pressure, where pressure is the largest, over old slots j, of retries(j..s) −
//! `ratio` × requests(j+1..s) − `minPerSecond` × (s − end of j). When slot s leaves the ring
//! that becomes max(pressure + its retries − `ratio` × its requests − `minPerSecond` × slot,
//! its retries): one step per slot, and quiet slots wear pressure down to zero, below which
//! rule 1 implies rule 2 (so zero is where it stops).
//!
//! Integers throughout, in billionths of a retry: `minPerSecond` × nanoseconds is whole, and
//! `ratio` is exact to nine decimals, so no float rounding lets a retry through at the edge.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// Slots a window is counted in.
const SLOTS: i64 = 20;
/// The ring: the current slot and a whole window before it.
const RING: usize = SLOTS as usize + 1;
/// One retry, in the budget's unit.
const RETRY: i128 = 1_000_000_000;

/// A service's retry budget: every request [`deposit`](RetryBudget::deposit)s, every retry or
/// hedge must [`withdraw`](RetryBudget::withdraw).
pub struct RetryBudget {
    config: herd_config::RetryBudget,
    /// Credit per request, billionths of a retry.
    ratio: i128,
    /// Credit per nanosecond, billionths of a retry: `minPerSecond` itself.
    min_per_second: i128,
    slot: Duration,
    counts: Mutex<Counts>,
}

struct Counts {
    /// Where slot 0 starts; set by the first request or retry.
    anchor: Option<Instant>,
    /// The number of the current slot.
    current: i64,
    /// Requests per slot of the ring, at `slot mod RING`.
    requests: [u64; RING],
    /// Retries per slot of the ring, at `slot mod RING`.
    retries: [u64; RING],
    /// Stretches older than the ring (see the module doc); never negative.
    pressure: i128,
}

fn at(slot: i64) -> usize {
    // RING is 21: the cast and the remainder are exact.
    slot.rem_euclid(RING as i64) as usize
}

impl RetryBudget {
    pub fn new(config: &herd_config::RetryBudget) -> Self {
        let ratio = (config.ratio.clamp(0.0, 1e6) * RETRY as f64).round() as i128;
        RetryBudget {
            config: *config,
            ratio,
            min_per_second: i128::from(config.min_per_second),
            slot: (config.window / SLOTS as u32).max(Duration::from_nanos(1)),
            counts: Mutex::new(Counts {
                anchor: None,
                current: 0,
                requests: [0; RING],
                retries: [0; RING],
                pressure: 0,
            }),
        }
    }

    /// The settings it was made from.
    pub fn config(&self) -> &herd_config::RetryBudget {
        &self.config
    }

    /// A request arrived.
    pub fn deposit(&self) {
        let mut counts = self.counts.lock().expect("retry budget lock poisoned");
        self.advance(&mut counts, Instant::now());
        let current = at(counts.current);
        counts.requests[current] = counts.requests[current].saturating_add(1);
    }

    /// Asks for one retry or hedge; true (and counted) when the budget allows it.
    pub fn withdraw(&self) -> bool {
        let mut counts = self.counts.lock().expect("retry budget lock poisoned");
        let into_slot = self.advance(&mut counts, Instant::now());
        let oldest = counts.current - SLOTS;
        let (mut retries, mut requests) = (0i128, 0i128);
        for slot in oldest..=counts.current {
            retries += i128::from(counts.retries[at(slot)]);
            requests += i128::from(counts.requests[at(slot)]);
        }
        let spent = (retries + 1) * RETRY;
        let window = self.slot * SLOTS as u32;
        // Rule 1: the oldest slot's retries count, its requests do not (it is partly outside).
        let window_requests = requests - i128::from(counts.requests[at(oldest)]);
        let reserve = self.min_per_second * window.as_nanos() as i128;
        let within_window = spent - self.ratio * window_requests <= reserve;
        // Rule 2: the stretches starting in or before the ring's oldest slot.
        let since_ring = (window + into_slot).as_nanos() as i128;
        let within_longer =
            spent - self.ratio * requests - self.min_per_second * since_ring <= -counts.pressure;
        if !(within_window && within_longer) {
            return false;
        }
        let current = at(counts.current);
        counts.retries[current] += 1;
        true
    }

    /// Moves the ring to `now`'s slot, folding the slots that leave it into `pressure`; returns
    /// how far into its slot `now` is.
    fn advance(&self, counts: &mut Counts, now: Instant) -> Duration {
        let anchor = *counts.anchor.get_or_insert(now);
        let since = now.saturating_duration_since(anchor);
        let slot = i64::try_from(since.as_nanos() / self.slot.as_nanos())
            .unwrap_or(i64::MAX)
            .max(counts.current);
        let leaving = slot - counts.current;
        let per_slot = self.min_per_second * self.slot.as_nanos() as i128;
        let oldest = counts.current - SLOTS;
        for gone in oldest..oldest + leaving.min(RING as i64) {
            let i = at(gone);
            let retries = i128::from(counts.retries[i]) * RETRY;
            let requests = i128::from(counts.requests[i]);
            counts.pressure =
                (counts.pressure + retries - self.ratio * requests - per_slot).max(retries);
            counts.retries[i] = 0;
            counts.requests[i] = 0;
        }
        if leaving > RING as i64 {
            let quiet = i128::from(leaving - RING as i64);
            counts.pressure = (counts.pressure - per_slot.saturating_mul(quiet)).max(0);
        }
        counts.current = slot;
        let slot_starts = self.slot.as_nanos().saturating_mul(slot as u128);
        let into_slot = Duration::from_nanos(
            u64::try_from(since.as_nanos().saturating_sub(slot_starts)).unwrap_or(u64::MAX),
        );
        // A quiet spell (nothing in the last window, nothing owed from before it): the slots
        // start afresh at `now`, so a burst is counted from its first request.
        let quiet = counts.pressure == 0
            && counts.requests.iter().all(|&n| n == 0)
            && counts.retries.iter().all(|&n| n == 0);
        if quiet && !into_slot.is_zero() {
            counts.anchor = Some(now);
            counts.current = 0;
            return Duration::ZERO;
        }
        into_slot
    }
}
