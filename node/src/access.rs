//! Who may receive what: the one access-policy decision that every data path asks — manifest,
//! chunk and receipt requests on the provider (and the API calls and portals that come), the
//! consumer's choice of columns, the hub's triage of applications and the apply route.
//!
//! Two layers:
//! - [`need`]: what the catalogue entry's share types say about a scope, before any grant
//!   (withdrawn, 不予共享 resource or 信息项, 无条件共享, 有条件共享). A 不予共享 信息项 is never
//!   sent, whatever a grant lists.
//! - [`authorize`]: the whole decision on the provider for one request by the member that
//!   actually connected: [`need`], then for 有条件共享 the biscuit grant (platform key, this node
//!   as provider and approver, consumer, resource, column, expiry) and this node's own record of
//!   the application: it must exist, be this node's, be granted (not revoked), be for this
//!   consumer and resource, and the column and date must be within what this node approved.
//!
//! Layering: above the views it reads (the catalogue record, the applications view) and the
//! state; below every data path that asks it (the transfers, the agent, the admin API).

use huitong_protocol::catalogue::{Entry, ShareType};
use huitong_protocol::grant as grants;
use huitong_protocol::wire::RefusalKind;
use huitong_protocol::{charter, NodeId};

use crate::applications::{self, AppState};
use crate::catalogue::Record;
use crate::state::NodeState;

/// Why a request is refused: the kind (for the wire) and the message (for people).
pub type Refusal = (RefusalKind, String);

/// What a request asks for.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// The resource as a whole: its manifest, a file's chunks.
    Resource,
    /// One 信息项 (a table column).
    Column(&'a str),
}

/// What the share types say about a scope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// 无条件共享: any active member may receive it.
    Open,
    /// 有条件共享: only under a grant.
    Grant,
}

/// What the entry's share types say about `scope`, before any grant: open, a grant needed, or
/// refused (withdrawn, 不予共享, no such 信息项).
pub fn need(record: &Record, scope: Scope<'_>) -> Result<Need, Refusal> {
    let e = &record.entry;
    if let Some(reason) = &record.withdrawn {
        return Err((
            RefusalKind::Withdrawn,
            format!("{} was withdrawn (已下架): {reason}", e.code),
        ));
    }
    let share = match scope {
        Scope::Resource => e.share_type,
        Scope::Column(c) => {
            let item = e.items.iter().find(|i| i.name == c).ok_or_else(|| {
                (
                    RefusalKind::NotFound,
                    format!("{} has no 信息项 {c:?}", e.code),
                )
            })?;
            // A narrower item never widens the resource: the stricter of the two applies.
            match (e.share_type, e.effective_share_type(item)) {
                (ShareType::None, _) | (_, ShareType::None) => ShareType::None,
                (ShareType::Conditional, _) | (_, ShareType::Conditional) => ShareType::Conditional,
                _ => ShareType::Unconditional,
            }
        }
    };
    match share {
        ShareType::Unconditional => Ok(Need::Open),
        ShareType::Conditional => Ok(Need::Grant),
        ShareType::None => Err((RefusalKind::NotShared, not_shared(e, scope))),
    }
}

fn not_shared(e: &Entry, scope: Scope<'_>) -> String {
    let basis = e
        .share_condition
        .as_deref()
        .unwrap_or("not given in the entry");
    match scope {
        Scope::Resource => format!(
            "{} 「{}」 is 不予共享 (not shared); legal basis: {basis}",
            e.code, e.title
        ),
        Scope::Column(c) => format!(
            "信息项 {c:?} of {} is 不予共享 (not shared) and is never sent, whatever a grant lists; legal basis: {basis}",
            e.code
        ),
    }
}

/// The 信息项 any active member may receive without a grant (empty when the resource needs a
/// grant or is refused).
pub fn open_columns(record: &Record) -> Vec<String> {
    record
        .entry
        .items
        .iter()
        .filter(|i| need(record, Scope::Column(&i.name)) == Ok(Need::Open))
        .map(|i| i.name.clone())
        .collect()
}

/// Why an application for `fields` of `record` is refused at once, if it is: withdrawn, 不予共享
/// (the resource or one of the 信息项), unknown 信息项, or nothing that needs a grant.
pub fn application_refusal(record: &Record, fields: &[String]) -> Option<String> {
    let e = &record.entry;
    if let Err((_, why)) = need(record, Scope::Resource) {
        return Some(why);
    }
    let unknown: Vec<&str> = fields
        .iter()
        .filter(|f| !e.items.iter().any(|i| &i.name == *f))
        .map(String::as_str)
        .collect();
    if !unknown.is_empty() {
        let names: Vec<&str> = e.items.iter().map(|i| i.name.as_str()).collect();
        return Some(format!(
            "{} has no 信息项 {unknown:?}; items: {}",
            e.code,
            names.join(", ")
        ));
    }
    let mut needs_grant = false;
    for f in fields {
        match need(record, Scope::Column(f)) {
            Err((_, why)) => return Some(why),
            Ok(Need::Grant) => needs_grant = true,
            Ok(Need::Open) => {}
        }
    }
    (!needs_grant).then(|| {
        format!(
            "{} is 无条件共享 for these 信息项: no application is needed, pull it directly",
            e.code
        )
    })
}

/// Decides one request by `requester` (the member that connected) for `scope` of this node's
/// `record`, presenting `grant`. `Ok(Some(id))`: allowed under grant `id`; `Ok(None)`: open.
pub fn authorize(
    state: &NodeState,
    record: &Record,
    requester: &NodeId,
    grant: Option<&[u8]>,
    scope: Scope<'_>,
) -> Result<Option<String>, Refusal> {
    Decider::new(state, record, requester, grant).decide(scope)
}

/// One request's decisions for several scopes (the resource, then each 信息项 it reads), each
/// exactly as [`authorize`] decides it; this node's record of the application is read once per
/// request (not once per scope), so a revocation still stops the next request.
pub struct Decider<'a> {
    state: &'a NodeState,
    record: &'a Record,
    requester: &'a NodeId,
    grant: Option<&'a [u8]>,
    /// The application record read for this request (its id, and what was found).
    app: Option<(String, Option<applications::AppRecord>)>,
    /// The grant as presented under the platform key, hashed once for all scopes.
    presented: Option<grants::Presented<'a>>,
}

impl<'a> Decider<'a> {
    /// Decisions for `requester` on `record`, presenting `grant`.
    pub fn new(
        state: &'a NodeState,
        record: &'a Record,
        requester: &'a NodeId,
        grant: Option<&'a [u8]>,
    ) -> Self {
        Self {
            state,
            record,
            requester,
            grant,
            app: None,
            presented: None,
        }
    }

    /// This node's record of the application a decision named, as read for this request.
    pub fn application(&self) -> Option<&applications::AppRecord> {
        self.app.as_ref().and_then(|(_, r)| r.as_ref())
    }

    /// This node's record of application `id`, read once per request.
    fn read_application(&mut self, id: &str) -> Result<Option<&applications::AppRecord>, Refusal> {
        if self.app.as_ref().is_none_or(|(read, _)| read != id) {
            let r = applications::get(self.state, id)
                .map_err(|e| (RefusalKind::Unavailable, e.to_string()))?;
            self.app = Some((id.to_owned(), r));
        }
        Ok(self.app.as_ref().and_then(|(_, r)| r.as_ref()))
    }

    /// The decision for `scope`. `Ok(Some(id))`: allowed under grant `id`; `Ok(None)`: open.
    pub fn decide(&mut self, scope: Scope<'_>) -> Result<Option<String>, Refusal> {
        let (state, record, requester, grant) =
            (self.state, self.record, self.requester, self.grant);
        if need(record, scope)? == Need::Open {
            return Ok(None);
        }
        let code = &record.entry.code;
        let refused = |m: String| (RefusalKind::NeedsGrant, m);
        let Some(token) = grant else {
            let what = match scope {
                Scope::Column(c) => format!("信息项 {c:?} of {code} is not 无条件共享"),
                Scope::Resource => format!("{code} is 有条件共享"),
            };
            // A service (接口) is called, anything else pulled.
            let then = if record.entry.share_mode == huitong_protocol::catalogue::ShareMode::Api {
                "call it"
            } else {
                "pull"
            };
            return Err(refused(format!(
                "{what}: apply for it (`huitong apply`) and {then} once the grant is issued"
            )));
        };
        let me = state.id();
        let platform = state.hub_key().ok_or_else(|| {
            (
                RefusalKind::Unavailable,
                "the charter names no hub (platform key)".to_string(),
            )
        })?;
        let tz = state.timezone();
        let now_ms = crate::state::now_ms();
        let column = match scope {
            Scope::Column(c) => Some(c),
            Scope::Resource => None,
        };
        let req = grants::Request {
            requester,
            provider: &me,
            code: code.as_str(),
            column,
            now: now_ms / 1000,
        };
        // Hashed once per request, again only if the charter changed the hub meanwhile.
        let presented = match self.presented {
            Some(p) if *p.platform() == platform => p,
            _ => *self
                .presented
                .insert(grants::Presented::new(token, &platform)),
        };
        let id = state
            .grants
            .authorize(&presented, &req)
            .map_err(|e| refused(e.to_string()))?;
        // The token is the hub's and the approval block is ours; the application record is what
        // this node approved, and it is checked on every request.
        let r = self.read_application(&id)?.ok_or_else(|| {
            refused(format!(
                "grant {id}: this node has no record of that application; it cannot be honoured"
            ))
        })?;
        if r.app.provider != me || r.app.code != *code || r.applicant != *requester {
            return Err(refused(format!(
                "grant {id} is for {} of another provider or consumer, not for this request",
                r.app.code
            )));
        }
        match r.state {
            AppState::Granted => {}
            AppState::Revoked => {
                return Err(refused(format!(
                    "grant {id} was revoked: {}",
                    r.reason.as_deref().unwrap_or_default()
                )))
            }
            s => return Err(refused(format!("application {id} is {s:?}, not granted"))),
        }
        if let Some(c) = column {
            if !r.granted_fields().iter().any(|f| f == c) {
                return Err(refused(format!(
                    "信息项 {c:?} is outside what this provider approved for grant {id}"
                )));
            }
        }
        let last = r.granted_until();
        if charter::end_of_day_in(tz, last).is_none_or(|end| req.now > end) {
            return Err(refused(format!(
                "grant {id} expired at the end of {last} (federation time)"
            )));
        }
        Ok(Some(id))
    }
}
