//! API call statistics from the call log: calls, refusals, failures and latency (median, 99th
//! percentile, slowest) per service and per service and peer, over a recent window. Read from the
//! newest record back, at most [`MAX_SCANNED`] records, so a busy node answers in bounded time
//! and says when the window was cut short.
//!
//! Layering: a leaf above [`crate::call_log`]; the admin API serves it (and so `huitong audit
//! call-stats` and the portal).

use std::collections::BTreeMap;

use huitong_protocol::NodeId;
use rocksdb::IteratorMode;

use crate::call_log::{Side, Status};
use crate::store::{Store, StoreError, CF_CALLS};

/// Most records one statistics read goes through.
pub const MAX_SCANNED: usize = 1_000_000;

/// The fields of a call record the statistics read (the kept answer envelope is skipped, not
/// copied).
#[derive(serde::Deserialize)]
struct Counted {
    at_ms: u64,
    side: Side,
    peer: NodeId,
    code: String,
    #[serde(default)]
    grant: Option<String>,
    status: Status,
    duration_us: u64,
}

/// The counts and latencies of one group of calls.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Calls.
    pub calls: u64,
    /// Answered.
    pub ok: u64,
    /// Refused by the provider.
    pub refused: u64,
    /// Failed.
    pub failed: u64,
    /// Median time taken (µs).
    pub p50_us: u64,
    /// 99th percentile (µs).
    pub p99_us: u64,
    /// Slowest (µs).
    pub max_us: u64,
}

/// The statistics of a window.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Per (side, resource).
    pub services: Vec<((Side, String), Tally)>,
    /// Per (side, resource, other node).
    pub peers: Vec<((Side, String, NodeId), Tally)>,
    /// The provider side's calls that passed the quotas (answered, or failed after them) per
    /// (resource, consumer, grant): what the grants' quotas are read back from at start.
    pub passed_per_grant: Vec<((String, NodeId, String), u64)>,
    /// Records read.
    pub scanned: u64,
    /// Whether the read stopped at [`MAX_SCANNED`] before the window's start.
    pub cut: bool,
}

#[derive(Default)]
struct Acc {
    tally: Tally,
    durations: Vec<u64>,
}

impl Acc {
    fn add(&mut self, r: &Counted) {
        let t = &mut self.tally;
        t.calls += 1;
        match r.status {
            Status::Ok => t.ok += 1,
            Status::Refused => t.refused += 1,
            Status::Failed => t.failed += 1,
        }
        self.durations.push(r.duration_us);
    }

    fn finish(mut self) -> Tally {
        self.durations.sort_unstable();
        let at = |q: f64| -> u64 {
            let n = self.durations.len();
            if n == 0 {
                return 0;
            }
            // Nearest rank.
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            self.durations[rank - 1]
        };
        let mut t = self.tally;
        t.p50_us = at(0.50);
        t.p99_us = at(0.99);
        t.max_us = self.durations.last().copied().unwrap_or(0);
        t
    }
}

/// The statistics of the calls that ended at `since_ms` or later.
pub fn since(s: &Store, since_ms: u64) -> Result<Stats, StoreError> {
    let mut services: BTreeMap<(Side, String), Acc> = BTreeMap::new();
    let mut peers: BTreeMap<(Side, String, NodeId), Acc> = BTreeMap::new();
    let mut grants: BTreeMap<(String, NodeId, String), u64> = BTreeMap::new();
    let mut out = Stats::default();
    for kv in s.db().iterator_cf(s.cf(CF_CALLS), IteratorMode::End) {
        let (k, v) = kv?;
        if k.len() != 8 {
            continue;
        }
        if out.scanned as usize >= MAX_SCANNED {
            out.cut = true;
            break;
        }
        let r: Counted = huitong_protocol::codec::decode(&v, crate::call_log::MAX_RECORD_BYTES)
            .map_err(|e| StoreError::Corrupt {
                cf: CF_CALLS,
                detail: e.to_string(),
            })?;
        if r.at_ms < since_ms {
            break;
        }
        out.scanned += 1;
        services
            .entry((r.side, r.code.clone()))
            .or_default()
            .add(&r);
        peers
            .entry((r.side, r.code.clone(), r.peer))
            .or_default()
            .add(&r);
        if let (Side::Provider, Status::Ok | Status::Failed, Some(g)) = (r.side, r.status, &r.grant)
        {
            *grants
                .entry((r.code.clone(), r.peer, g.clone()))
                .or_default() += 1;
        }
    }
    out.passed_per_grant = grants.into_iter().collect();
    out.services = services.into_iter().map(|(k, a)| (k, a.finish())).collect();
    out.peers = peers.into_iter().map(|(k, a)| (k, a.finish())).collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call_log::{CallLog, NewCall};

    fn call(peer: u8, status: Status, us: u64) -> NewCall {
        NewCall {
            side: Side::Provider,
            peer: NodeId([peer; 32]),
            code: "301001/000001".into(),
            kind: "lookup",
            grant: None,
            id: None,
            query: [0; 32],
            answer: None,
            status,
            detail: None,
            duration: std::time::Duration::from_micros(us),
            client: None,
            envelope: None,
        }
    }

    #[test]
    fn counts_and_percentiles_per_service_and_peer() {
        let (_dir, state) = crate::state::testing::department(&NodeId([9; 32]));
        let log = CallLog::default();
        for us in 1..=100 {
            log.append(&state.store, call(1, Status::Ok, us)).unwrap();
        }
        log.append(&state.store, call(2, Status::Refused, 5000))
            .unwrap();
        let st = since(&state.store, 0).unwrap();
        assert_eq!(st.scanned, 101);
        assert!(!st.cut);
        let (_, all) = &st.services[0];
        assert_eq!(
            (all.calls, all.ok, all.refused, all.failed),
            (101, 100, 1, 0)
        );
        assert_eq!((all.p50_us, all.p99_us, all.max_us), (51, 100, 5000));
        assert_eq!(st.peers.len(), 2);
        let (_, one) = &st.peers[0];
        assert_eq!((one.calls, one.p50_us, one.p99_us), (100, 50, 99));
        assert!(st.passed_per_grant.is_empty(), "no call had a grant");
        let granted = |status| NewCall {
            grant: Some("g".into()),
            ..call(3, status, 1)
        };
        for status in [Status::Ok, Status::Failed, Status::Refused] {
            log.append(&state.store, granted(status)).unwrap();
        }
        let st = since(&state.store, 0).unwrap();
        assert_eq!(
            st.passed_per_grant,
            [(("301001/000001".into(), NodeId([3; 32]), "g".into()), 2)]
        );
        // A window that starts after every call holds none.
        assert_eq!(since(&state.store, u64::MAX).unwrap().scanned, 0);
    }
}
