//! The balance stage: which endpoint of a service gets the next request or connection.
//!
//! Round robin over the service's endpoints: with identical endpoints it spreads load evenly and
//! costs one atomic increment per pick. Latency-aware strategies slot in here behind the same
//! `pick`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::endpoint::Endpoint;

pub struct Balancer {
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        Balancer {
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// The next endpoint, or `None` when the service has none.
    pub fn pick(&self) -> Option<&Arc<Endpoint>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
        Some(&self.endpoints[i])
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoint::{PoolKey, Wire};
    use std::time::Duration;

    #[test]
    fn picks_in_turn() {
        let eps: Vec<_> = (1..=3)
            .map(|p| {
                Endpoint::new(PoolKey {
                    addr: ([127, 0, 0, 1], p).into(),
                    wire: Wire::Http1,
                    connect_timeout: Duration::from_secs(1),
                    idle_timeout: Duration::from_secs(1),
                })
            })
            .collect();
        let b = Balancer::new(eps);
        let ports: Vec<u16> = (0..6).map(|_| b.pick().unwrap().addr().port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
        assert!(Balancer::new(Vec::new()).pick().is_none());
    }
}
