//! Consistent hashing (ring hash) with bounded load.
//!
//! Each endpoint owns `POINTS_PER_WEIGHT × weight` points (fewer in very large sets) on a 64-bit ring, placed by hashing its
//! address; a key goes to the owner of the first point at or after the key's hash. Removing one
//! of N endpoints removes only its points, so only the keys that landed on it (about 1/N) move,
//! and every proxy computes the same ring from the same endpoints (xxh3 is stable across
//! processes and platforms).
//!
//! Bounded load (Mirrokni et al., "Consistent Hashing with Bounded Loads"): an endpoint already
//! serving more than `boundedLoad` × the average requests in flight is passed over for the next
//! owner on the ring, so one hot key cannot overload one endpoint.

use std::net::SocketAddr;

use xxhash_rust::xxh3::xxh3_64;

/// Points per unit of weight: enough that 5 equal endpoints get shares within a few percent.
const POINTS_PER_WEIGHT: u32 = 160;
/// Most points on one ring (1 MiB of them): a service of a thousand endpoints gets fewer points
/// each rather than a ring that dwarfs the rest of the sidecar's memory.
const MAX_POINTS: u64 = 65_536;

#[derive(Debug, Default)]
pub struct Ring {
    /// (point, endpoint index), sorted by point.
    points: Vec<(u64, u32)>,
}

/// Hashes a key (a header value, a cookie, an address) onto the ring.
pub fn hash_key(key: &[u8]) -> u64 {
    xxh3_64(key)
}

impl Ring {
    pub fn new(endpoints: &[(SocketAddr, u32)]) -> Self {
        let total_weight: u64 = endpoints.iter().map(|&(_, w)| u64::from(w)).sum();
        let per_weight = u32::try_from(MAX_POINTS / total_weight.max(1))
            .unwrap_or(u32::MAX)
            .clamp(1, POINTS_PER_WEIGHT);
        let mut points = Vec::with_capacity((total_weight * u64::from(per_weight)) as usize);
        let mut buf = [0u8; 64];
        for (i, &(addr, weight)) in endpoints.iter().enumerate() {
            for replica in 0..weight * per_weight {
                let len = {
                    use std::io::Write;
                    let mut cursor = std::io::Cursor::new(&mut buf[..]);
                    let _ = write!(cursor, "{addr}-{replica}");
                    cursor.position() as usize
                };
                points.push((xxh3_64(&buf[..len]), i as u32));
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// Endpoint indices in ring order starting at `hash`'s owner: the first is the key's endpoint,
    /// the rest are where it overflows to. Each index may repeat.
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.points.partition_point(|&(p, _)| p < hash);
        let (before, after) = self.points.split_at(start);
        after.iter().chain(before).map(|&(_, i)| i as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(ports: &[u16]) -> Vec<(SocketAddr, u32)> {
        ports
            .iter()
            .map(|&p| (SocketAddr::from(([127, 0, 0, 1], p)), 1))
            .collect()
    }

    fn owner(ring: &Ring, eps: &[(SocketAddr, u32)], key: u32) -> SocketAddr {
        eps[ring.walk(hash_key(&key.to_be_bytes())).next().unwrap()].0
    }

    #[test]
    fn removing_one_of_five_moves_only_its_keys() {
        let five = addrs(&[1, 2, 3, 4, 5]);
        let four = addrs(&[1, 2, 4, 5]);
        let (r5, r4) = (Ring::new(&five), Ring::new(&four));
        let mut moved = 0;
        let mut counts = [0u32; 6];
        for key in 0..10_000 {
            let before = owner(&r5, &five, key);
            let after = owner(&r4, &four, key);
            counts[before.port() as usize] += 1;
            if before.port() == 3 {
                moved += 1;
            } else {
                assert_eq!(before, after, "key {key} moved off a surviving endpoint");
            }
        }
        // Each endpoint holds about a fifth of the keys.
        for &c in &counts[1..] {
            assert!((1_500..2_500).contains(&c), "{counts:?}");
        }
        assert_eq!(moved, counts[3]);
    }

    #[test]
    fn weights_scale_shares() {
        let eps = vec![
            (SocketAddr::from(([127, 0, 0, 1], 1)), 1),
            (SocketAddr::from(([127, 0, 0, 1], 2)), 3),
        ];
        let ring = Ring::new(&eps);
        let heavy = (0..10_000)
            .filter(|&k| owner(&ring, &eps, k).port() == 2)
            .count();
        assert!((7_000..8_000).contains(&heavy), "{heavy}");
    }

    #[test]
    fn large_sets_get_a_bounded_ring() {
        let eps: Vec<_> = (0..1000u16)
            .map(|p| (SocketAddr::from(([127, 0, 0, 1], p + 1)), 3))
            .collect();
        let ring = Ring::new(&eps);
        assert!(ring.points.len() as u64 <= MAX_POINTS);
        assert!(ring.points.len() >= 1000 * 3 * 20);
    }

    #[test]
    fn the_walk_covers_the_ring_from_the_owner() {
        let eps = addrs(&[1, 2, 3]);
        let ring = Ring::new(&eps);
        let walk: Vec<usize> = ring.walk(u64::MAX).collect();
        assert_eq!(walk.len(), 3 * POINTS_PER_WEIGHT as usize);
        assert!(walk.contains(&0) && walk.contains(&1) && walk.contains(&2));
    }
}
