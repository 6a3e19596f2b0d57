//! Call quotas on the provider: per consumer node and resource (`[services]` in
//! `huitong.toml`), and per grant where its approval sets its own — each a token bucket of
//! calls a second (a burst of as many) and a count of calls per federation day. A call passes
//! only if every quota it falls under has room, and then counts against all of them. A call over
//! one is refused with the time until it would pass (`Retry-After`) and which quota it was. Kept
//! in memory; at start the day's counts are taken back from the call log ([`Quotas::seed`]), so
//! a restart does not give a consumer a new day. At most [`MAX_PAIRS`] counts are tracked; idle
//! ones are dropped first.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use huitong_protocol::NodeId;

/// Counts (consumer and quota) tracked at once.
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
    /// Not the consumer's quota but the provider's own bound: it tracks too many counts just
    /// now (a failure of the provider, not a refusal it signs).
    pub full: bool,
}

/// The limits in force.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Calls a second.
    pub per_second: u32,
    /// Calls a day.
    pub per_day: u64,
}

/// Which quota a count is: what it is kept under, and what a refusal says.
#[derive(Clone, Copy, Debug)]
pub enum Quota<'a> {
    /// Every call of one member, all services together (the wide bound checked first).
    Member,
    /// A consumer's calls on one resource, under the provider's `[services]` limits.
    Consumer(&'a str),
    /// The calls under one grant (resource, application id), under the grant's own limits.
    Grant(&'a str, &'a str),
}

impl Quota<'_> {
    /// The key its count is kept under (with the consumer).
    pub fn key(&self) -> String {
        match self {
            Quota::Member => "*".into(),
            Quota::Consumer(code) => (*code).into(),
            Quota::Grant(code, grant) => format!("{code} {grant}"),
        }
    }

    fn per_second(&self, n: u32) -> String {
        match self {
            Quota::Member => format!(
                "more than {n} calls a second from this member to this provider, all services together; slow down"
            ),
            Quota::Consumer(code) => format!(
                "{code}: more than {n} calls a second, the provider's quota for this consumer; slow down"
            ),
            Quota::Grant(code, grant) => format!(
                "{code}: more than {n} calls a second, the quota of grant {grant}; slow down"
            ),
        }
    }

    fn per_day(&self, n: u64) -> String {
        let whose = match self {
            Quota::Member => "this member's daily bound at this provider".to_string(),
            Quota::Consumer(code) => {
                format!("{code}: {n} calls today, the provider's daily quota for this consumer")
            }
            Quota::Grant(code, grant) => {
                format!("{code}: {n} calls today, the daily quota of grant {grant}")
            }
        };
        format!("{whose}; the count starts again at 24:00 (federation time)")
    }
}

/// The counts of every consumer under every quota.
#[derive(Default)]
pub struct Quotas {
    buckets: Mutex<HashMap<(NodeId, String), Bucket>>,
}

impl Quotas {
    /// Starts `consumer`'s count under `quota` for federation day `day` at `today` calls (read
    /// back from the call log at start), its per-second allowance full. Past [`MAX_PAIRS`]
    /// counts it keeps the busiest (the caller seeds the busiest first).
    pub fn seed(&self, consumer: &NodeId, quota: Quota<'_>, day: &str, today: u64, now: Instant) {
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= MAX_PAIRS {
            return;
        }
        all.insert(
            (*consumer, quota.key()),
            Bucket {
                tokens: f64::INFINITY,
                at: now,
                day: day.to_string(),
                today,
            },
        );
    }

    /// Takes one call for `consumer` at `now` under every one of `quotas` (each with its
    /// limits), on federation day `day` (which ends in `day_left`) — all or none — or says which
    /// one is over and when to try again.
    pub fn take(
        &self,
        consumer: &NodeId,
        quotas: &[(Quota<'_>, Limits)],
        now: Instant,
        (day, day_left): (&str, Duration),
    ) -> Result<(), Over> {
        let keys: Vec<(NodeId, String)> =
            quotas.iter().map(|(q, _)| (*consumer, q.key())).collect();
        let mut all = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let new = keys.iter().filter(|k| !all.contains_key(*k)).count();
        if new > 0 && all.len() + new > MAX_PAIRS {
            // Drop the counts idle long enough to have refilled (they hold nothing to forget
            // but the day's count, which is then forgiven).
            all.retain(|_, b| now.duration_since(b.at) < Duration::from_secs(60));
            if all.len() + new > MAX_PAIRS {
                return Err(Over {
                    retry_after: Duration::from_secs(1),
                    message:
                        "the provider is tracking too many callers just now; try again shortly"
                            .into(),
                    full: true,
                });
            }
        }
        for (key, (quota, limits)) in keys.iter().zip(quotas) {
            let rate = f64::from(limits.per_second.max(1));
            let b = all.entry(key.clone()).or_insert_with(|| Bucket {
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
                    message: quota.per_day(limits.per_day),
                    full: false,
                });
            }
            if b.tokens < 1.0 {
                let wait = Duration::from_secs_f64((1.0 - b.tokens) / rate);
                return Err(Over {
                    retry_after: wait.max(Duration::from_millis(1)),
                    message: quota.per_second(limits.per_second),
                    full: false,
                });
            }
        }
        // Every quota has room (each bucket was made above): the call counts under all.
        for key in &keys {
            if let Some(b) = all.get_mut(key) {
                b.tokens -= 1.0;
                b.today += 1;
            }
        }
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

    /// The provider's quota on resource `code`.
    fn on(code: &str) -> [(Quota<'_>, Limits); 1] {
        [(Quota::Consumer(code), LIMITS)]
    }

    #[test]
    fn a_burst_then_the_rate_then_the_day() {
        let (q, who, t0, day) = fixture();
        for _ in 0..5 {
            q.take(&who, &on("a"), t0, day).unwrap();
        }
        let over = q.take(&who, &on("a"), t0, day).unwrap_err();
        assert!(over.retry_after <= Duration::from_millis(200), "{over:?}");
        assert!(over.message.contains("a second"), "{over:?}");
        // Another resource, or another consumer, has its own quota.
        q.take(&who, &on("b"), t0, day).unwrap();
        q.take(&NodeId([2; 32]), &on("a"), t0, day).unwrap();
        // One second later, five more; then the day's 12 are used up.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..5 {
            q.take(&who, &on("a"), t1, day).unwrap();
        }
        let t2 = t1 + Duration::from_secs(1);
        q.take(&who, &on("a"), t2, day).unwrap();
        q.take(&who, &on("a"), t2, day).unwrap();
        let over = q.take(&who, &on("a"), t2, day).unwrap_err();
        assert_eq!(over.retry_after, Duration::from_secs(3600));
        assert!(over.message.contains("daily"), "{over:?}");
        // A new day starts the count again.
        let t3 = t2 + Duration::from_secs(1);
        let next = ("2026-12-03", Duration::from_secs(86_399));
        q.take(&who, &on("a"), t3, next).unwrap();
    }

    #[test]
    fn each_grant_has_its_own_count_within_the_consumers() {
        let (q, who, t0, day) = fixture();
        let grant = |g: &'static str, per_day: u64| {
            [
                (Quota::Consumer("a"), LIMITS),
                (
                    Quota::Grant("a", g),
                    Limits {
                        per_second: 5,
                        per_day,
                    },
                ),
            ]
        };
        // Grant g1 allows 2 a day: its third call is refused, naming it.
        q.take(&who, &grant("g1", 2), t0, day).unwrap();
        q.take(&who, &grant("g1", 2), t0, day).unwrap();
        let over = q.take(&who, &grant("g1", 2), t0, day).unwrap_err();
        assert!(over.message.contains("grant g1"), "{over:?}");
        // Another grant of the same consumer on the same resource counts apart, and the refused
        // call took nothing: of the consumer's 5 a second, 2 were used, so g2 gets 3…
        for _ in 0..3 {
            q.take(&who, &grant("g2", 3), t0, day).unwrap();
        }
        // …and then the provider's quota for the consumer, across its grants.
        let over = q.take(&who, &grant("g2", 3), t0, day).unwrap_err();
        assert!(
            over.message.contains("a second, the provider's quota"),
            "{over:?}"
        );
        // Later the same day g2 has used its 3.
        let t1 = t0 + Duration::from_secs(1);
        let over = q.take(&who, &grant("g2", 3), t1, day).unwrap_err();
        assert!(over.message.contains("daily quota of grant g2"), "{over:?}");
        // The consumer's own count (12 a day) holds across its grants: 5 taken so far.
        for _ in 0..4 {
            q.take(&who, &on("a"), t1, day).unwrap();
        }
        let t2 = t1 + Duration::from_secs(1);
        for _ in 0..3 {
            q.take(&who, &on("a"), t2, day).unwrap();
        }
        let over = q.take(&who, &on("a"), t2, day).unwrap_err();
        assert!(over.message.contains("provider's daily quota"), "{over:?}");
    }

    #[test]
    fn a_seeded_day_count_carries_on() {
        let (q, who, t0, day) = fixture();
        q.seed(&who, Quota::Consumer("a"), "2026-12-02", 11, t0);
        // The per-second allowance is full; the day has one call left.
        q.take(&who, &on("a"), t0, day).unwrap();
        let over = q.take(&who, &on("a"), t0, day).unwrap_err();
        assert!(over.message.contains("daily"), "{over:?}");
        // A count of an earlier day does not hold on the next.
        q.seed(&who, Quota::Consumer("b"), "2026-12-01", 12, t0);
        q.take(&who, &on("b"), t0, day).unwrap();
        // A grant's count is seeded apart.
        q.seed(&who, Quota::Grant("c", "g"), "2026-12-02", 1, t0);
        let limits = Limits {
            per_second: 5,
            per_day: 1,
        };
        let over = q
            .take(&who, &[(Quota::Grant("c", "g"), limits)], t0, day)
            .unwrap_err();
        assert!(over.message.contains("grant g"), "{over:?}");
    }
}
