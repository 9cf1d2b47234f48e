use std::time::Duration;

use tokio::time::{Instant, advance};

use super::RetryBudget;

fn budget(ratio: f64, min_per_second: u32, window: Duration) -> RetryBudget {
    RetryBudget::new(&herd_config::RetryBudget {
        ratio,
        min_per_second,
        window,
    })
}

const TEN_SECONDS: Duration = Duration::from_secs(10);

/// Withdraws until the budget says no; how many it allowed.
fn drain(budget: &RetryBudget) -> usize {
    let mut n = 0;
    while budget.withdraw() {
        n += 1;
        assert!(n <= 1_000_000, "the budget never ran out");
    }
    n
}

#[tokio::test(start_paused = true)]
async fn requests_buy_their_ratio_of_retries_at_once() {
    let fifth = budget(0.2, 0, TEN_SECONDS);
    assert!(!fifth.withdraw(), "no request yet, no reserve");
    for _ in 0..5 {
        fifth.deposit();
    }
    assert_eq!(drain(&fifth), 1, "five requests at 0.2");
    for _ in 0..4 {
        fifth.deposit();
    }
    assert_eq!(drain(&fifth), 0, "four more are 0.8 of a retry");
    fifth.deposit();
    assert_eq!(drain(&fifth), 1);

    let more = budget(2.5, 0, TEN_SECONDS);
    more.deposit();
    more.deposit();
    assert_eq!(drain(&more), 5, "two requests at 2.5");

    let none = budget(0.0, 0, TEN_SECONDS);
    for _ in 0..100 {
        none.deposit();
    }
    assert_eq!(drain(&none), 0);
}

#[tokio::test(start_paused = true)]
async fn the_reserve_is_spent_once_then_comes_back_at_min_per_second() {
    let b = budget(0.0, 10, TEN_SECONDS);
    let start = Instant::now();
    assert_eq!(drain(&b), 100, "minPerSecond x window");
    // Ask every 10 ms for 30 s.
    let mut granted = 100;
    let mut first_after = None;
    for _ in 0..3000 {
        advance(Duration::from_millis(10)).await;
        if b.withdraw() {
            granted += 1;
            let at = start.elapsed();
            first_after.get_or_insert(at);
            assert!(
                granted as f64 <= 10.0 * at.as_secs_f64().max(10.0),
                "{granted} retries by {at:?}"
            );
        }
    }
    let first_after = first_after.expect("the reserve never came back");
    assert!(
        first_after > TEN_SECONDS,
        "a retry {first_after:?} after spending the whole reserve"
    );
    // 10 a second from the tenth second on (300 by 30 s), less the rounding against retries:
    // a slot's retries are charged before its time is credited, about a slot's worth (5).
    assert!((285..=300).contains(&granted), "{granted} retries in 30 s");
}

/// tower's `TpsBudget` had the whole reserve back as soon as the withdrawals that spent it left
/// the window (and its ring forgot them after half the window).
#[tokio::test(start_paused = true)]
async fn a_burst_a_window_later_gets_only_what_min_per_second_refilled() {
    let b = budget(0.0, 10, TEN_SECONDS);
    assert_eq!(drain(&b), 100);
    advance(Duration::from_millis(5_000)).await;
    assert_eq!(drain(&b), 0, "half a window later");
    advance(Duration::from_millis(5_600)).await;
    let second = drain(&b);
    assert!(
        (1..=6).contains(&second),
        "10.6 s after a burst of 100: {second} (10 x 10.6 - 100 = 6 at most)"
    );
    advance(Duration::from_millis(9_400)).await;
    let third = drain(&b);
    assert!(
        100 + second + third <= 200 && second + third <= 100,
        "20 s in: {second} + {third} after the first 100"
    );
    assert!(third >= 90, "20 s in, only {third}");
    // Two quiet windows and a slot: the whole reserve.
    advance(Duration::from_millis(20_500)).await;
    assert_eq!(drain(&b), 100);
}

/// Issue 16's case: 300 requests at 30 a second, each failing and asking for three retries,
/// under `{ ratio: 0.2, minPerSecond: 10, window: 10s }`.
#[tokio::test(start_paused = true)]
async fn thirty_requests_a_second_get_at_most_the_documented_retries() {
    let b = budget(0.2, 10, TEN_SECONDS);
    let start = Instant::now();
    let mut retries = 0;
    for _ in 0..300 {
        b.deposit();
        retries += (0..3).filter(|_| b.withdraw()).count();
        advance(Duration::from_nanos(1_000_000_000 / 30)).await;
    }
    let elapsed = start.elapsed();
    assert!(elapsed <= TEN_SECONDS, "{elapsed:?}");
    assert!(
        (155..=160).contains(&retries),
        "{retries} retries for 300 requests in {elapsed:?}: 0.2 x 300 + 10 x 10 = 160"
    );
    // Ten seconds more of it: 0.2 x 600 + 10 x 20 = 320 in all.
    for _ in 0..300 {
        b.deposit();
        retries += (0..3).filter(|_| b.withdraw()).count();
        advance(Duration::from_nanos(1_000_000_000 / 30)).await;
    }
    assert!(
        (300..=320).contains(&retries),
        "{retries} retries for 600 requests in {:?}",
        start.elapsed()
    );
}

/// What happened, in order: a request, or a retry the budget allowed, and when.
#[derive(Clone, Copy)]
struct Event {
    at: u128,
    retry: bool,
}

/// Checks the rule against a log of events: at each retry, (1) the last window's retries are
/// within `ratio` x its requests + `minPerSecond` x `window`, and (2) so is every longer stretch
/// ending there, with `minPerSecond` x its length. Exact integers: nanoseconds, billionths.
fn check_rule(log: &[Event], ratio: f64, min_per_second: u32, window: Duration) {
    let ratio = (ratio * 1e9).round() as i128;
    let min = i128::from(min_per_second);
    let window = window.as_nanos();
    // Prefix sums: retries and requests in log[..i].
    let mut retries = vec![0i128];
    let mut requests = vec![0i128];
    for e in log {
        retries.push(retries.last().unwrap() + i128::from(e.retry));
        requests.push(requests.last().unwrap() + i128::from(!e.retry));
    }
    let within = |from: usize, to: usize, allowance_ns: u128| {
        let r = retries[to + 1] - retries[from];
        let q = requests[to + 1] - requests[from];
        r * 1_000_000_000 <= ratio * q + min * allowance_ns as i128
    };
    for (k, retry) in log.iter().enumerate().filter(|(_, e)| e.retry) {
        // (1) The window (t - window, t].
        let first = log.partition_point(|e| e.at + window <= retry.at);
        assert!(
            within(first, k, window),
            "the window ending at retry {k} ({} ns) is over",
            retry.at
        );
        // (2) Stretches [a, t] of a window or more, from each event time a.
        for (j, start) in log[..=k].iter().enumerate() {
            if retry.at - start.at < window {
                break;
            }
            if j > 0 && log[j - 1].at == start.at {
                continue;
            }
            assert!(
                within(j, k, retry.at - start.at),
                "the stretch from event {j} ({} ns) to retry {k} ({} ns) is over",
                start.at,
                retry.at
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn no_stretch_of_a_random_run_gets_more_than_the_rule() {
    let configs = [
        (0.2, 10, TEN_SECONDS),
        (0.0, 3, Duration::from_secs(1)),
        (2.5, 0, Duration::from_secs(2)),
        (0.5, 1, Duration::from_millis(7_300)),
        (1.0, 40, Duration::from_secs(60)),
    ];
    for (seed, (ratio, min, window)) in configs.into_iter().enumerate() {
        let mut rng = fastrand::Rng::with_seed(seed as u64 + 16);
        let b = budget(ratio, min, window);
        let start = Instant::now();
        let mut log = Vec::new();
        for _ in 0..2_000 {
            let gap = match rng.u8(0..100) {
                0..70 => rng.u64(0..100_000_000),
                70..95 => rng.u64(100_000_000..2_000_000_000),
                _ => rng.u64(0..2 * window.as_nanos() as u64),
            };
            advance(Duration::from_nanos(gap)).await;
            let at = start.elapsed().as_nanos();
            for _ in 0..rng.usize(0..6) {
                if rng.bool() {
                    b.deposit();
                    log.push(Event { at, retry: false });
                } else if b.withdraw() {
                    log.push(Event { at, retry: true });
                }
            }
        }
        let granted = log.iter().filter(|e| e.retry).count();
        assert!(granted > 0, "seed {seed}: no retry at all");
        check_rule(&log, ratio, min, window);
    }
}

#[test]
fn check_rule_catches_a_second_reserve() {
    // What tower's budget did: 100 retries at 0 and 100 more as soon as a window has passed.
    let second = 10_000_000_001u128;
    let log: Vec<Event> = (0..200)
        .map(|i| Event {
            at: if i < 100 { 0 } else { second },
            retry: true,
        })
        .collect();
    let over = std::panic::catch_unwind(|| check_rule(&log, 0.2, 10, TEN_SECONDS));
    assert!(over.is_err());
    check_rule(&log[..100], 0.2, 10, TEN_SECONDS);
}
