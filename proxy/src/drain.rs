//! Graceful shutdown: stop accepting, let work finish, and cut what won't by a deadline.
//!
//! Two signals, both [`CancellationToken`]s: `started` (SIGTERM or `/shutdown`) tells listeners
//! to stop accepting and HTTP connections to finish their requests and close (HTTP/1 sends
//! `Connection: close`, HTTP/2 a GOAWAY); `deadline` fires `drainTimeout` later and cuts
//! everything still open (upgraded and opaque connections never end on their own). Every
//! connection task is spawned on the shared [`TaskTracker`], so the proxy knows when the last one
//! is gone and can exit early.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Drain {
    started: CancellationToken,
    deadline: CancellationToken,
    tracker: TaskTracker,
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Begins draining; idempotent.
    pub fn start(&self) {
        self.started.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.started.is_cancelled()
    }

    /// Resolves once draining has begun.
    pub async fn started(&self) {
        self.started.cancelled().await
    }

    /// Resolves once the drain deadline has passed: whatever is still running must stop.
    pub async fn deadline(&self) {
        self.deadline.cancelled().await
    }

    /// Spawns a task the drain waits for.
    pub fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// Waits for draining to begin, then for every tracked task to finish or `timeout` to pass,
    /// whichever is first. Returns the number of tasks that were cut off.
    pub async fn run(&self, timeout: Duration) -> usize {
        self.started().await;
        self.tracker.close();
        if tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let cut = self.tracker.len();
        self.deadline.cancel();
        // Tasks observe the deadline promptly; don't hang if one does not.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tracker.wait()).await;
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn finishes_early_when_tasks_end() {
        let drain = Drain::new();
        drain.spawn(async { tokio::time::sleep(Duration::from_secs(2)).await });
        drain.start();
        let started = tokio::time::Instant::now();
        assert_eq!(drain.run(Duration::from_secs(30)).await, 0);
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn cuts_tasks_at_the_deadline() {
        let drain = Drain::new();
        let d = drain.clone();
        drain.spawn(async move { d.deadline().await });
        drain.start();
        let started = tokio::time::Instant::now();
        assert_eq!(drain.run(Duration::from_secs(5)).await, 1);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }
}
