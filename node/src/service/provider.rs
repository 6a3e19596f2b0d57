//! The provider side of a call: decide it for the member that connected, answer it from the
//! latest version of the resource, sign the answer — or the refusal, so a consumer can prove it
//! was refused and why — and log the call, answered, refused or failed.
//!
//! The decision is [`crate::access::authorize`] — the same as for a pull — for the resource and
//! for every 信息项 the query reads (the key, the fields returned, a 核验's items): a 不予共享
//! 信息项 is never read, a 有条件共享 one only under a grant that names it, checked against this
//! node's own record of the application on every call, so a revocation stops the next call.
//! Only an entry with share mode 接口 is served as a service. An authorized call then follows
//! the grant's terms (核验 only; masked 信息项, [`super::mask`]) and counts against the
//! consumer's quota for the resource ([`super::quota`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use huitong_protocol::application::CallTerms;
use huitong_protocol::call::{
    Answer, Outcome, Query, ANSWER_VERSION, MAX_ANSWER_BYTES, MAX_REFUSAL_CHARS,
};
use huitong_protocol::catalogue::ShareMode;
use huitong_protocol::dataset::DatasetVersion;
use huitong_protocol::grant::Presented;
use huitong_protocol::wire::RefusalKind;
use huitong_protocol::NodeId;

use super::quota::{Limits, Over, Quota, Quotas};
use super::table::{Loaded, TableError, Tables};
use crate::access::{self, Refusal, Scope};
use crate::call_log::{NewCall, Side, Status};
use crate::catalogue::Record;
use crate::dataset::records;
use crate::state::NodeState;

/// The per-member bound on calls, as a multiple of the per-resource rate.
const MEMBER_FACTOR: u32 = 4;
/// Longest reason kept in a call-log record (characters).
const MAX_DETAIL: usize = 200;

/// A refusal for a failure of this node: details go to the log, not to the caller.
fn unavailable(
    code: &huitong_protocol::ResourceCode,
    what: &str,
    e: &dyn std::fmt::Display,
) -> Refusal {
    tracing::warn!(%code, error = %e, "API call: {what}");
    (
        RefusalKind::Unavailable,
        format!("the provider cannot answer calls on {code} just now ({what}); try again later"),
    )
}

/// What the provider keeps for its services: the loaded tables and the quotas.
#[derive(Default)]
pub struct Services {
    tables: Tables,
    quotas: Quotas,
    proxy: super::proxy::Proxy,
}

impl Services {
    /// The services of a starting node: the day's call counts per consumer and resource, and
    /// per grant, are read back from the provider side of its call log (at most
    /// [`crate::call_stats::MAX_SCANNED`] records), so a restart does not start a new day.
    pub fn restored(state: &NodeState) -> Result<Self, crate::store::StoreError> {
        let services = Self::default();
        let today = state.today();
        let Some(start) = state.start_of_day(&today) else {
            return Ok(services);
        };
        let since_ms = start.saturating_mul(1000);
        let st = crate::call_stats::since(&state.store, since_ms)?;
        if st.cut {
            tracing::warn!(
                scanned = st.scanned,
                "call quotas: more calls today than are read back at start; the oldest of them are not counted"
            );
        }
        // What passed the quotas, as near as the log says: answered, or failed. (A call
        // refused after them, e.g. an answer too large, is not counted again.)
        let mut seen: Vec<_> = st
            .peers
            .into_iter()
            .filter(|((side, _, peer), _)| {
                *side == crate::call_log::Side::Provider && *peer != state.id()
            })
            .map(|((_, code, peer), t)| (peer, code, None, t.ok + t.failed))
            .collect();
        // A grant's own count only where its approval sets a quota (no other is ever taken).
        for ((code, peer, grant), n) in st.passed_per_grant {
            let own_quota = crate::applications::get(state, &grant)?
                .and_then(|r| r.approval)
                .is_some_and(|a| {
                    a.terms.calls_per_second.is_some() || a.terms.calls_per_day.is_some()
                });
            if own_quota {
                seen.push((peer, code, Some(grant), n));
            }
        }
        seen.sort_by_key(|s| std::cmp::Reverse(s.3));
        let now = Instant::now();
        for (peer, code, grant, n) in &seen {
            let quota = match grant {
                Some(g) => Quota::Grant(code, g),
                None => Quota::Consumer(code),
            };
            services.quotas.seed(peer, quota, &today, *n, now);
        }
        if !seen.is_empty() {
            tracing::info!(
                counts = seen.len(),
                cut = st.cut,
                "call quotas: today's counts taken back from the call log"
            );
        }
        Ok(services)
    }

    /// The version a call on `code` presenting `grant` is answered from without blocking, if it
    /// can be: a query service (not proxied) whose latest version is loaded, with the indexes
    /// the query reads built and few rows to read ([`Loaded::quick`]), and no grant or one whose
    /// signatures verified here before (a new token costs three verifications).
    fn ready(
        &self,
        state: &NodeState,
        code: &str,
        grant: Option<&[u8]>,
        query: &Query,
    ) -> Option<Ready> {
        let known = |t: &[u8]| {
            state
                .hub_key()
                .is_some_and(|p| state.grants.holds(&Presented::new(t, &p)))
        };
        // A malformed query (too many items, say) is refused where the slow path runs.
        if query.check().is_err()
            || state.config.services.backend(code).is_some()
            || !grant.is_none_or(known)
        {
            return None;
        }
        let dv = records::version(&state.store, &state.id(), code, None).ok()??;
        let table = self.tables.loaded(&dv.manifest)?;
        table.quick(query).then_some((dv, table))
    }
}

/// The latest version of a query service, loaded, for a call answered on an async worker.
pub(crate) type Ready = (DatasetVersion, Arc<Loaded>);

/// [`answer`] from async code. A call that needs no more than memory, the store and a
/// signature ([`Services::ready`]: decisions whose token verified before — a datalog run for
/// a decision not cached —, a small lookup in a loaded version, the signature, a call-log
/// record written without sync; a member's call took 54 µs at the median in the provider's
/// call log, `docs/benchmarks.md`, less than handing it to another thread costs) is answered
/// on the calling task, from the version found ready; any other (a version to load, an index
/// to build, many rows to read or return, a proxied backend, a token not seen yet) off the
/// async workers. The call-log write can wait on the store (a write stall) as the consumer's
/// does.
pub async fn answer_async(
    state: &Arc<NodeState>,
    services: &Arc<Services>,
    record: Record,
    requester: NodeId,
    grant: Option<Vec<u8>>,
    query: Query,
) -> Result<Vec<u8>, Declined> {
    let code = record.entry.code.clone();
    let failed = |e: &dyn std::fmt::Display| -> Result<Vec<u8>, Declined> {
        tracing::warn!(%code, error = %e, "an API call's task failed");
        Err(NoAnswer::Refused((
            RefusalKind::Unavailable,
            format!("the provider cannot answer calls on {code} just now; try again later"),
        ))
        .into())
    };
    if let Some(ready) = services.ready(state, code.as_str(), grant.as_deref(), &query) {
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let grant = grant.as_deref();
            answer(
                state,
                services,
                &record,
                &requester,
                grant,
                &query,
                Some(ready),
            )
        }));
        return answered.unwrap_or_else(|_| failed(&"it panicked"));
    }
    let (state, services) = (state.clone(), services.clone());
    tokio::task::spawn_blocking(move || {
        let grant = grant.as_deref();
        answer(&state, &services, &record, &requester, grant, &query, None)
    })
    .await
    .unwrap_or_else(|e| failed(&e))
}

/// Why a call got no answer.
#[derive(Debug)]
pub enum NoAnswer {
    /// Refused (or failed), with the kind for the wire.
    Refused(Refusal),
    /// Over the consumer's quota.
    Over(Over),
}

impl From<Refusal> for NoAnswer {
    fn from(r: Refusal) -> Self {
        NoAnswer::Refused(r)
    }
}

/// A call over a quota, or the provider's own bound on the counts it tracks (a failure of the
/// provider: unsigned, logged as failed).
fn over(o: Over) -> NoAnswer {
    if o.full {
        NoAnswer::Refused((RefusalKind::Unavailable, o.message))
    } else {
        NoAnswer::Over(o)
    }
}

/// A call not answered: why, and the provider's signed word for it when it gives one (a refusal
/// or a quota of the resource, sealed as an [`Answer`] whose outcome says so). A failure of this
/// node, and the wide per-member bound, are not signed: the bound keeps what a member can make
/// this node sign at the rate it may call.
#[derive(Debug)]
pub struct Declined {
    /// Why.
    pub why: NoAnswer,
    /// The signed refusal (an answer envelope), if any.
    pub signed: Option<Vec<u8>>,
}

impl From<NoAnswer> for Declined {
    fn from(why: NoAnswer) -> Self {
        Declined { why, signed: None }
    }
}

/// A new call id: 32 hex digits.
fn new_id() -> String {
    hex::encode(rand::random::<[u8; 16]>())
}

/// Answers `query` from `requester` on this node's resource `record`, presenting `grant`: the
/// signed answer envelope, or why not (with the signed refusal). Every call is logged.
/// Blocking, unless `ready` holds the version to answer from ([`answer_async`]).
fn answer(
    state: &NodeState,
    services: &Services,
    record: &Record,
    requester: &NodeId,
    grant: Option<&[u8]>,
    query: &Query,
    ready: Option<Ready>,
) -> Result<Vec<u8>, Declined> {
    let started = Instant::now();
    // Nothing is answered (or logged) before the call log may take records.
    crate::call_anchors::ready(state)
        .map_err(|why| NoAnswer::Refused((RefusalKind::Unavailable, why)))?;
    // This node calling its own service (its own systems, through its own gateway): the owner
    // of the data, answered without a grant, terms or quotas. No other member can be this node:
    // a member is the key its connection proved.
    let owner = *requester == state.id();
    // Every call of a member counts first against a wide per-member bound, refused or not and
    // before anything is read (beyond choosing where the call runs, [`Services::ready`]),
    // logged or signed, so no member can flood the call log, the decisions or the signing.
    let member = Limits {
        per_second: state
            .config
            .services
            .calls_per_second()
            .saturating_mul(MEMBER_FACTOR),
        per_day: u64::MAX,
    };
    if !owner {
        services
            .quotas
            .take(
                requester,
                &[(Quota::Member, member)],
                Instant::now(),
                ("", Duration::ZERO),
            )
            .map_err(over)?;
    }
    let mut used_grant = None;
    let caller = Caller {
        requester,
        grant,
        owner,
    };
    let result = decide_and_answer(
        state,
        services,
        record,
        caller,
        (query, ready),
        &mut used_grant,
    );
    // A refusal of the call (not a failure of this node) is signed like an answer.
    let signed_message = |why: &str| crate::dataset::preview::cut_to(why, MAX_REFUSAL_CHARS - 1);
    let refusal = match &result {
        Ok(_) | Err(NoAnswer::Refused((RefusalKind::Unavailable, _))) => None,
        Err(NoAnswer::Refused((kind, why))) => Some(Outcome::Refused {
            kind: *kind,
            message: signed_message(why),
        }),
        Err(NoAnswer::Over(over)) => Some(Outcome::Throttled {
            retry_after_ms: u64::try_from(over.retry_after.as_millis()).unwrap_or(u64::MAX),
            message: signed_message(&over.message),
        }),
    }
    .map(|outcome| {
        let to = (requester, query, used_grant.clone());
        seal(state, &record.entry.code, to, 0, outcome)
    });
    let cut = |why: &str| crate::dataset::preview::cut_to(why, MAX_DETAIL);
    let (status, detail) = match &result {
        Ok(_) => (Status::Ok, None),
        Err(NoAnswer::Refused((RefusalKind::Unavailable, why))) => (Status::Failed, Some(cut(why))),
        Err(NoAnswer::Refused((_, why))) | Err(NoAnswer::Over(Over { message: why, .. })) => {
            (Status::Refused, Some(cut(why)))
        }
    };
    let (id, envelope) = match (&result, &refusal) {
        (Ok((bytes, id)), _) | (Err(_), Some((id, bytes))) => (Some(id.clone()), Some(bytes)),
        (Err(_), None) => (None, None),
    };
    let logged = state.calls.append(
        &state.store,
        NewCall {
            side: Side::Provider,
            peer: *requester,
            code: record.entry.code.to_string(),
            kind: query.kind(),
            grant: used_grant,
            id,
            query: query.hash(),
            answer: envelope.map(|b| *blake3::hash(b).as_bytes()),
            status,
            detail,
            duration: started.elapsed(),
            client: None,
            envelope: None,
        },
    );
    // An answer (or refusal) this node cannot log is not given: the log is the provider's
    // record of it.
    if let Err(e) = logged {
        return Err(
            NoAnswer::Refused(unavailable(&record.entry.code, "logging the call", &e)).into(),
        );
    }
    match result {
        Ok((bytes, _)) => Ok(bytes),
        Err(why) => Err(Declined {
            why,
            signed: refusal.map(|(_, bytes)| bytes),
        }),
    }
}

/// Seals `outcome` as this node's answer to `requester`'s `query` on `code` (under `grant`,
/// from dataset `version`): a new call id and the envelope.
fn seal(
    state: &NodeState,
    code: &huitong_protocol::ResourceCode,
    (requester, query, grant): (&NodeId, &Query, Option<String>),
    version: u64,
    outcome: Outcome,
) -> (String, Vec<u8>) {
    let id = new_id();
    let sealed = Answer {
        layout: ANSWER_VERSION,
        id: id.clone(),
        provider: state.id(),
        consumer: *requester,
        code: code.clone(),
        version,
        query: query.hash(),
        grant,
        outcome,
        signed_at_ms: crate::state::now_ms(),
    }
    .seal(&state.key);
    (id, sealed)
}

/// A member's call decided: the resource and every 信息项 the query reads authorized (the grant
/// used, if any, in `used_grant`), the grant's terms (核验 only refuses a lookup), and the
/// consumer's quota for the resource. The terms to answer by.
fn admit(
    state: &NodeState,
    services: &Services,
    record: &Record,
    requester: &NodeId,
    grant: Option<&[u8]>,
    query: &Query,
    used_grant: &mut Option<String>,
) -> Result<CallTerms, NoAnswer> {
    let code = &record.entry.code;
    let mut decider = access::Decider::new(state, record, requester, grant);
    *used_grant = decider.decide(Scope::Resource)?;
    // A proxied call may answer with any 信息项 of the entry: every one is checked.
    let items: Vec<&str> = match query {
        Query::Http { .. } => record.entry.items.iter().map(|i| i.name.as_str()).collect(),
        _ => query.items(),
    };
    for item in items {
        let decided = decider
            .decide(Scope::Column(item))
            .map_err(|(kind, why)| (kind, format!("信息项 {item:?}: {why}")))?;
        if let Some(g) = decided {
            *used_grant = Some(g);
        }
    }
    // The terms of the grant used, from the record the decisions read for this call.
    let terms = match used_grant.as_deref() {
        Some(id) => match decider.application().filter(|r| r.app.id == id) {
            Some(r) => r.approval.as_ref().map(|a| a.terms.clone()),
            None => crate::applications::get(state, id)
                .map_err(|e| unavailable(code, "reading the grant", &e))?
                .and_then(|r| r.approval)
                .map(|a| a.terms),
        }
        .unwrap_or_default(),
        None => CallTerms::default(),
    };
    // A masked 信息项 can be matched, never probed: a range or prefix filter on it would read
    // it out a digit at a time.
    if let Query::Lookup { filters, .. } = query {
        if let Some(f) = filters
            .iter()
            .find(|f| f.op.probes() && terms.masked.contains(&f.item))
        {
            return Err(NoAnswer::Refused((
                RefusalKind::NotShared,
                format!(
                    "信息项 {:?} is masked under grant {}: it may be filtered by = or != only",
                    f.item,
                    used_grant.as_deref().unwrap_or_default()
                ),
            )));
        }
    }
    if terms.verify_only && !matches!(query, Query::Verify { .. }) {
        return Err(NoAnswer::Refused((
            RefusalKind::NeedsGrant,
            format!(
                "grant {} allows 核验 only (match / no match): call …/verify with the values to check",
                used_grant.as_deref().unwrap_or_default()
            ),
        )));
    }
    let today = state.today();
    let day_left = state
        .end_of_day(&today)
        .map(|end| Duration::from_secs(end.saturating_sub(crate::state::now_ms() / 1000)))
        .unwrap_or_default();
    // The provider's quota for the consumer on the resource (all its grants together), and the
    // grant's own where its approval sets one.
    let node = &state.config.services;
    let mut quotas = vec![(
        Quota::Consumer(code.as_str()),
        Limits {
            per_second: node.calls_per_second(),
            per_day: node.calls_per_day(),
        },
    )];
    if let (Some(g), true) = (
        used_grant.as_deref(),
        terms.calls_per_second.is_some() || terms.calls_per_day.is_some(),
    ) {
        quotas.push((
            Quota::Grant(code.as_str(), g),
            Limits {
                per_second: terms.calls_per_second.unwrap_or(node.calls_per_second()),
                per_day: terms.calls_per_day.unwrap_or(u64::MAX),
            },
        ));
    }
    services
        .quotas
        .take(requester, &quotas, Instant::now(), (&today, day_left))
        .map_err(over)?;
    Ok(terms)
}

/// Who calls: the member that connected, the grant it presents, and whether it is this node.
#[derive(Clone, Copy)]
struct Caller<'a> {
    requester: &'a NodeId,
    grant: Option<&'a [u8]>,
    owner: bool,
}

fn decide_and_answer(
    state: &NodeState,
    services: &Services,
    record: &Record,
    Caller {
        requester,
        grant,
        owner,
    }: Caller<'_>,
    (query, ready): (&Query, Option<Ready>),
    used_grant: &mut Option<String>,
) -> Result<(Vec<u8>, String), NoAnswer> {
    let code = &record.entry.code;
    // A ready version was found for a query already checked (`Services::ready`).
    if ready.is_none() {
        query
            .check()
            .map_err(|e| (RefusalKind::Invalid, format!("{code}: {e}")))?;
    }
    if record.entry.share_mode != ShareMode::Api {
        return Err(NoAnswer::Refused((
            RefusalKind::NotFound,
            format!(
                "{code} is shared as {}, not as a service (接口): pull it instead",
                record.entry.share_mode.label()
            ),
        )));
    }
    let terms = if owner {
        CallTerms::default()
    } else {
        admit(state, services, record, requester, grant, query, used_grant)?
    };
    let me = state.id();
    let (dv, loaded) = match ready {
        Some((dv, table)) => (dv, Some(table)),
        None => (
            records::version(&state.store, &me, code.as_str(), None)
                .map_err(|e| unavailable(code, "reading its versions", &e))?
                .ok_or_else(|| {
                    (
                        RefusalKind::NotFound,
                        format!(
                            "{code} has no dataset version yet: the service has nothing to answer from (a proxied service's version is its OpenAPI description)"
                        ),
                    )
                })?,
            None,
        ),
    };
    let (mut outcome, version) = match state.config.services.backend(code.as_str()) {
        // A proxied service: the version is its OpenAPI description.
        Some(backend) => (
            services
                .proxy
                .forward(state, backend, &dv, query, &terms.masked)?,
            dv.version,
        ),
        None => {
            if matches!(query, Query::Http { .. }) {
                return Err(NoAnswer::Refused((
                    RefusalKind::Invalid,
                    format!("{code} is a query service over a dataset: call …/lookup or …/verify"),
                )));
            }
            let table = match loaded {
                Some(table) => table,
                None => services.tables.get(state, &me, &dv).map_err(|e| match e {
                    TableError::Unservable(why) => {
                        (RefusalKind::NotFound, format!("{code}: {why}"))
                    }
                    TableError::Read(why) => unavailable(code, "reading the version", &why),
                })?,
            };
            let outcome = table
                .answer(query)
                .map_err(|why| (RefusalKind::NotFound, format!("{code}: {why}")))?;
            (outcome, table.version)
        }
    };
    if let Outcome::Rows { fields, rows, .. } = &mut outcome {
        for (c, field) in fields.iter().enumerate() {
            if terms.masked.contains(field) {
                for cell in rows.iter_mut().filter_map(|r| r.get_mut(c)).flatten() {
                    *cell = super::mask::mask(field, cell);
                }
            }
        }
    }
    let to = (requester, query, used_grant.clone());
    let (id, sealed) = seal(state, code, to, version, outcome);
    if sealed.len() > MAX_ANSWER_BYTES {
        return Err(NoAnswer::Refused((
            RefusalKind::Invalid,
            format!(
                "{code}: the answer would be {} bytes, more than {MAX_ANSWER_BYTES}; ask for less (fewer rows or 信息项)",
                sealed.len()
            ),
        )));
    }
    Ok((sealed, id))
}
