//! The provider side of a call: decide it for the member that connected, answer it from the
//! latest version of the resource, sign the answer, and log the call — answered or refused.
//!
//! The decision is [`crate::access::authorize`] — the same as for a pull — for the resource and
//! for every 信息项 the query reads (the key, the fields returned, a 核验's items): a 不予共享
//! 信息项 is never read, a 有条件共享 one only under a grant that names it, checked against this
//! node's own record of the application on every call, so a revocation stops the next call.
//! Only an entry with share mode 接口 is served as a service.

use std::time::Instant;

use huitong_protocol::call::{Answer, Query, ANSWER_VERSION, MAX_ANSWER_BYTES};
use huitong_protocol::catalogue::ShareMode;
use huitong_protocol::wire::RefusalKind;
use huitong_protocol::NodeId;

use super::table::{TableError, Tables};
use crate::access::{self, Refusal, Scope};
use crate::call_log::{NewCall, Side, Status};
use crate::catalogue::Record;
use crate::dataset::records;
use crate::state::NodeState;

/// Answers `query` from `requester` on this node's resource `record`, presenting `grant`: the
/// signed answer envelope, or why not. Every call is logged. Blocking (run it off the async
/// workers).
pub fn answer(
    state: &NodeState,
    tables: &Tables,
    record: &Record,
    requester: &NodeId,
    grant: Option<&[u8]>,
    query: &Query,
) -> Result<Vec<u8>, Refusal> {
    let started = Instant::now();
    let mut used_grant = None;
    let result = decide_and_answer(
        state,
        tables,
        record,
        requester,
        grant,
        query,
        &mut used_grant,
    );
    let (status, detail, answer, id) = match &result {
        Ok((bytes, id)) => (
            Status::Ok,
            None,
            Some(*blake3::hash(bytes).as_bytes()),
            Some(id.clone()),
        ),
        Err((RefusalKind::Unavailable, why)) => (Status::Failed, Some(why.clone()), None, None),
        Err((_, why)) => (Status::Refused, Some(why.clone()), None, None),
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
            answer,
            status,
            detail,
            duration: started.elapsed(),
            client: None,
            envelope: None,
        },
    );
    // An answer this node cannot log is not given (the log is the provider's record of it).
    if let Err(e) = logged {
        tracing::error!(error = %e, code = %record.entry.code, "cannot log an API call; refusing it");
        return Err((
            RefusalKind::Unavailable,
            format!("the provider cannot log the call just now: {e}"),
        ));
    }
    result.map(|(bytes, _)| bytes)
}

fn decide_and_answer(
    state: &NodeState,
    tables: &Tables,
    record: &Record,
    requester: &NodeId,
    grant: Option<&[u8]>,
    query: &Query,
    used_grant: &mut Option<String>,
) -> Result<(Vec<u8>, String), Refusal> {
    let code = &record.entry.code;
    query
        .check()
        .map_err(|e| (RefusalKind::Invalid, format!("{code}: {e}")))?;
    if record.entry.share_mode != ShareMode::Api {
        return Err((
            RefusalKind::NotFound,
            format!(
                "{code} is shared as {}, not as a service (接口): pull it instead",
                record.entry.share_mode.label()
            ),
        ));
    }
    *used_grant = access::authorize(state, record, requester, grant, Scope::Resource)?;
    for item in query.items() {
        let decided = access::authorize(state, record, requester, grant, Scope::Column(item))
            .map_err(|(kind, why)| (kind, format!("信息项 {item:?}: {why}")))?;
        if let Some(g) = decided {
            *used_grant = Some(g);
        }
    }
    let me = state.id();
    let dv = records::version(&state.store, &me, code.as_str(), None)
        .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?
        .ok_or_else(|| {
            (
                RefusalKind::NotFound,
                format!(
                    "{code} has no dataset version yet: the service has nothing to answer from"
                ),
            )
        })?;
    let table = tables.get(state, &me, &dv).map_err(|e| match e {
        TableError::Unservable(why) => (RefusalKind::NotFound, format!("{code}: {why}")),
        TableError::Read(why) => (RefusalKind::Unavailable, format!("{code}: {why}")),
    })?;
    let outcome = table
        .answer(query)
        .map_err(|why| (RefusalKind::NotFound, format!("{code}: {why}")))?;
    let id = hex::encode(rand::random::<[u8; 16]>());
    let answer = Answer {
        layout: ANSWER_VERSION,
        id: id.clone(),
        provider: me,
        consumer: *requester,
        code: code.clone(),
        version: table.version,
        query: query.hash(),
        grant: used_grant.clone(),
        outcome,
        signed_at_ms: crate::state::now_ms(),
    };
    let sealed = answer.seal(&state.key);
    if sealed.len() > MAX_ANSWER_BYTES {
        return Err((
            RefusalKind::Invalid,
            format!(
                "{code}: the answer would be {} bytes, more than {MAX_ANSWER_BYTES}; ask for fewer rows (limit) or 信息项",
                sealed.len()
            ),
        ));
    }
    Ok((sealed, id))
}
