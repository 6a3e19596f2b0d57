//! Call quotas on the provider (`[services]` in `huitong.toml`, or a grant's own where its
//! approval sets a lower one): per consumer node and resource
//! — per grant, for conditional data, since a grant is one consumer's for one resource — a
//! token bucket of `calls_per_second` calls a second (a burst of as many) and a count of calls
//! per federation day. A call over either is refused with the time until it would pass
//! (`Retry-After`). Kept in memory; at start the day's counts are taken back from the call log
//! ([`Quotas::seed`]), so a restart does not give a consumer a new day. At most [`MAX_PAIRS`]
//! pairs are tracked; idle ones are dropped first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use huitong_protocol::NodeId;

/// Consumer–resource pairs tracked at once.
pub const MAX_PAIRS: usize = 100_000;

/// One pair's counts.
struct Bucket {
    /// Calls available now (at most the per-second rate).
    tokens: f64,
    /// When `tokens` was last brought up to date.
    at: Instant,
    /// The federation day `today` counts.
    day: String,
    /// Calls answered that day.
    today: u64,
}

/// Why a call is over its quota, and when to try again.
#[derive(Debug, PartialEq, Eq)]
pub struct Over {
    /// When a call would pass.
    pub retry_after: Duration,
    /// For people.
    pub message: String,
}

/// The limits in force.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Calls a second.
    pub per_second: u32,
    /// Calls a day.
    pub per_day: u64,
}

/// The quotas of every consumer–resource pair.
#[derive(Default)]
pub struct Quotas {
    buckets: Mutex<HashMap<(NodeId, String), Bucket>>,
}

impl Quotas {
    /// Starts `consumer`'s count on `code` for federation day `day` at `today` calls (read back
    /// from the call log at start), its per-second allowance full. Past [`MAX_PAIRS`] pairs it
    /// keeps the busiest (the caller seeds the busiest first).
    pub fn seed(&self, consumer: &NodeId, code: &str, day: &str, today: u64, now: Instant) {
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= MAX_PAIRS {
            return;
        }
        all.insert(
            (*consumer, code.to_string()),
            Bucket {
                tokens: f64::INFINITY,
                at: now,
                day: day.to_string(),
                today,
            },
        );
    }

    /// Takes one call for `consumer` on `code` at `now`, on federation day `day` (which ends in
    /// `day_left`), or says why not.
    pub fn take(
        &self,
        consumer: &NodeId,
        code: &str,
        limits: Limits,
        now: Instant,
        (day, day_left): (&str, Duration),
    ) -> Result<(), Over> {
        let rate = f64::from(limits.per_second.max(1));
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= MAX_PAIRS && !all.contains_key(&(*consumer, code.to_string())) {
            // Drop the pairs idle long enough to have refilled (they hold nothing to forget
            // but the day's count, which is then forgiven).
            all.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
            if all.len() >= MAX_PAIRS {
                return Err(Over {
                    retry_after: Duration::from_secs(1),
                    message:
                        "the provider is tracking too many callers just now; try again shortly"
                            .into(),
                });
            }
        }
        let b = all
            .entry((*consumer, code.to_string()))
            .or_insert_with(|| Bucket {
                tokens: rate,
                at: now,
                day: day.to_string(),
                today: 0,
            });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.day != day {
            b.day = day.to_string();
            b.today = 0;
        }
        if b.today >= limits.per_day {
            return Err(Over {
                retry_after: day_left.max(Duration::from_secs(1)),
                message: format!(
                    "{code}: {} calls today, this consumer's daily quota (the provider's, or its grant's); the count starts again at 24:00 (federation time)",
                    limits.per_day
                ),
            });
        }
        if b.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate);
            return Err(Over {
                retry_after: wait.max(Duration::from_millis(1)),
                message: format!(
                    "{code}: more than {} calls a second, this consumer's quota (the provider's, or its grant's); slow down",
                    limits.per_second
                ),
            });
        }
        b.tokens -= 1.0;
        b.today += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        per_second: 5,
        per_day: 12,
    };

    /// Empty quotas, a consumer, now, and a day with an hour left.
    fn fixture() -> (Quotas, NodeId, Instant, (&'static str, Duration)) {
        (
            Quotas::default(),
            NodeId([1; 32]),
            Instant::now(),
            ("2026-12-02", Duration::from_secs(3600)),
        )
    }

    #[test]
    fn a_burst_then_the_rate_then_the_day() {
        let (q, who, t0, day) = fixture();
        for _ in 0..5 {
            q.take(&who, "a", LIMITS, t0, day).unwrap();
        }
        let over = q.take(&who, "a", LIMITS, t0, day).unwrap_err();
        assert!(over.retry_after <= Duration::from_millis(200), "{over:?}");
        assert!(over.message.contains("a second"), "{over:?}");
        // Another resource, or another consumer, has its own quota.
        q.take(&who, "b", LIMITS, t0, day).unwrap();
        q.take(&NodeId([2; 32]), "a", LIMITS, t0, day).unwrap();
        // One second later, five more; then the day's 12 are used up.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            q.take(&who, "a", LIMITS, t1, day).unwrap();
        }
        let t2 = t1 + Duration::from_secs(1);
        q.take(&who, "a", LIMITS, t2, day).unwrap();
        q.take(&who, "a", LIMITS, t2, day).unwrap();
        let over = q.take(&who, "a", LIMITS, t2, day).unwrap_err();
        assert_eq!(over.retry_after, Duration::from_secs(3600));
        assert!(over.message.contains("daily"), "{over:?}");
        // A new day starts the count again.
        let t3 = t2 + Duration::from_secs(1);
        q.take(
            &who,
            "a",
            LIMITS,
            t3,
            ("2026-12-03", Duration::from_secs(86_399)),
        )
        .unwrap();
    }

    #[test]
    fn a_seeded_day_count_carries_on() {
        let (q, who, t0, day) = fixture();
        q.seed(&who, "a", "2026-12-02", 11, t0);
        // The per-second allowance is full; the day has one call left.
        q.take(&who, "a", LIMITS, t0, day).unwrap();
        let over = q.take(&who, "a", LIMITS, t0, day).unwrap_err();
        assert!(over.message.contains("daily"), "{over:?}");
        // A count of an earlier day does not hold on the next.
        q.seed(&who, "b", "2026-12-01", 12, t0);
        q.take(&who, "b", LIMITS, t0, day).unwrap();
    }
}
