//! What the pool knows of one HTTP/2 connection to an endpoint: how many streams it carries, and
//! since when it has carried none, so that it is closed after `idleTimeout` like an idle HTTP/1
//! connection.
//!
//! The task that drives the connection also watches it: when the connection has carried no stream
//! for `idleTimeout` it claims it (no new stream can be opened on it from then on) and stops
//! driving it, which closes it. Claiming and opening a stream race on one atomic counter, so a
//! request never gets a connection that is being closed.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, trace};

/// The counter's value once the watcher has claimed an idle connection.
const CLOSING: u32 = u32::MAX;

/// The streams open on one HTTP/2 connection.
#[derive(Debug)]
pub struct Streams {
    open: AtomicU32,
    /// When a stream last ended (or the connection opened), in milliseconds since `opened`.
    last_ended: AtomicU64,
    opened: Instant,
}

impl Streams {
    /// A new connection's count, holding its first stream.
    pub fn with_first() -> (Arc<Streams>, Stream) {
        let streams = Arc::new(Streams {
            open: AtomicU32::new(1),
            last_ended: AtomicU64::new(0),
            opened: Instant::now(),
        });
        (streams.clone(), Stream(streams))
    }

    /// Another stream on this connection, unless it carries `max` already or is closing.
    pub fn open(self: &Arc<Self>, max: u32) -> Option<Stream> {
        // A closing count (`u32::MAX`) is never below a limit.
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then(|| n + 1)
            })
            .ok()?;
        Some(Stream(self.clone()))
    }

    pub fn is_closing(&self) -> bool {
        self.open.load(Ordering::Acquire) == CLOSING
    }

    /// Claims the connection if it has been idle for `idle_timeout` by `now`; otherwise says when
    /// to look again.
    fn claim_if_idle(&self, now: Instant, idle_timeout: Duration) -> Result<(), Instant> {
        if self.open.load(Ordering::Acquire) != 0 {
            return Err(now + idle_timeout);
        }
        let last_ended =
            self.opened + Duration::from_millis(self.last_ended.load(Ordering::Acquire));
        let expires = last_ended + idle_timeout;
        if now < expires {
            return Err(expires);
        }
        self.open
            .compare_exchange(0, CLOSING, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|_| now + idle_timeout)
    }
}

/// One open HTTP/2 stream, counted against its connection until dropped.
pub struct Stream(Arc<Streams>);

impl Drop for Stream {
    fn drop(&mut self) {
        let streams = &self.0;
        // Stamped before the count falls, so a watcher that sees no stream open also sees when
        // the last one ended.
        let since = Instant::now().saturating_duration_since(streams.opened);
        streams
            .last_ended
            .store(since.as_millis() as u64, Ordering::Release);
        streams.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Drives an HTTP/2 connection until it ends, or until it has carried no stream for
/// `idle_timeout`; dropping it then closes it.
pub async fn drive<C, E>(
    conn: C,
    streams: Arc<Streams>,
    idle_timeout: Duration,
    addr: impl std::fmt::Display,
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut look = Instant::now() + idle_timeout;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(error) = result {
                    debug!(%addr, %error, "upstream HTTP/2 connection ended");
                }
                return;
            }
            () = tokio::time::sleep_until(look) => {
                match streams.claim_if_idle(Instant::now(), idle_timeout) {
                    Ok(()) => {
                        trace!(%addr, "closed idle HTTP/2 connection");
                        return;
                    }
                    Err(next) => look = next,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_claimed_once_idle_for_the_timeout() {
        let idle = Duration::from_secs(10);
        let (streams, first) = Streams::with_first();
        // Busy: look again a whole timeout later.
        let now = Instant::now();
        assert_eq!(streams.claim_if_idle(now, idle), Err(now + idle));

        tokio::time::advance(Duration::from_secs(3)).await;
        drop(first);
        let ended = Instant::now();
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(
            streams.claim_if_idle(Instant::now(), idle),
            Err(ended + idle)
        );

        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(streams.claim_if_idle(Instant::now(), idle), Ok(()));
        assert!(streams.is_closing());
        // No stream opens on a connection being closed, whatever the limit.
        assert!(streams.open(u32::MAX).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn streams_are_capped_and_a_new_one_restarts_the_idle_clock() {
        let idle = Duration::from_secs(10);
        let (streams, first) = Streams::with_first();
        let second = streams.open(2).unwrap();
        assert!(
            streams.open(2).is_none(),
            "a third stream over a limit of 2"
        );
        drop((first, second));
        tokio::time::advance(Duration::from_secs(8)).await;
        let third = streams.open(2).unwrap();
        tokio::time::advance(Duration::from_secs(8)).await;
        // Idle for 16 s in all, but not since the last stream.
        drop(third);
        let now = Instant::now();
        assert_eq!(streams.claim_if_idle(now, idle), Err(now + idle));
        assert!(!streams.is_closing());
    }
}
