//! Per-peer rate limits on sync requests: a token bucket per peer, so a member that floods
//! summary and range requests is refused (and counted) while every other member is answered.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;

/// Requests a peer may send in a burst.
const BURST: f64 = 64.0;
/// Requests per second a peer may keep sending (anti-entropy sends a summary every 10 s and
/// a range request per feed it lacks; a fresh node syncing 100 feeds stays well below this).
const RATE: f64 = 32.0;
/// Peers remembered at most; idle ones (full buckets) are forgotten first.
const MAX_PEERS: usize = 4096;

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets by peer.
#[derive(Default)]
pub(super) struct Limiter {
    buckets: HashMap<PeerId, Bucket>,
}

impl Limiter {
    /// Takes one request of `peer` from its bucket; `Err(wait)` when it is empty.
    pub(super) fn check(&mut self, peer: PeerId) -> Result<(), Duration> {
        self.check_at(peer, Instant::now())
    }

    fn check_at(&mut self, peer: PeerId, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= MAX_PEERS && !self.buckets.contains_key(&peer) {
            self.buckets
                .retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * RATE < BURST);
        }
        let b = self.buckets.entry(peer).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * RATE).min(BURST);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / RATE))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flooding_peer_is_limited_and_the_others_are_not() {
        let mut l = Limiter::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        let t0 = Instant::now();
        let allowed = (0..1000).filter(|_| l.check_at(a, t0).is_ok()).count();
        assert_eq!(allowed, BURST as usize);
        let wait = l.check_at(a, t0).unwrap_err();
        assert!(wait <= Duration::from_millis(50), "{wait:?}");
        assert!(
            l.check_at(b, t0).is_ok(),
            "another peer keeps its own bucket"
        );
        // One second later the flooding peer may send RATE more.
        let t1 = t0 + Duration::from_secs(1);
        let again = (0..1000).filter(|_| l.check_at(a, t1).is_ok()).count();
        assert_eq!(again, RATE as usize);
    }
}
