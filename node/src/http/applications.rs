//! Application routes: apply, list, approve, reject, revoke.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Extension;
use axum::Json;
use huitong_protocol::application::{Application, GrantEvent};
use huitong_protocol::{Event, ResourceCode};
use serde::Deserialize;

use super::authz::Principal;
use super::{fail, internal, Ctx, Fail, Res};
use crate::accounts::Role;
use crate::api::{AppStep, AppView, ApplyRequest, Approve, Deadline, Reason};
use crate::applications::{self, AppRecord, AppState};
use crate::catalogue;

/// Which applications to list.
#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    /// `incoming` (to this node as provider; all of them on the hub) or `outgoing`.
    dir: Option<String>,
}

fn name_of(ctx: &Ctx, key: &huitong_protocol::NodeId) -> String {
    ctx.state
        .with_charter(|c| c.and_then(|c| c.member(key)).map(|m| m.name.clone()))
        .unwrap_or_else(|| key.to_hex())
}

fn view(ctx: &Ctx, r: AppRecord) -> AppView {
    let grant_expires = ctx
        .state
        .hub_key()
        .filter(|_| !r.token.is_empty())
        .and_then(|hub| huitong_protocol::grant::inspect(&r.token, &hub).ok())
        .map(|g| g.expires);
    let timeline = r
        .history
        .iter()
        .enumerate()
        .map(|(i, (state, at_ms, signer))| AppStep {
            state: state.as_str().to_string(),
            at_ms: *at_ms,
            node: name_of(ctx, signer),
            by: r.step_by(i).cloned(),
        })
        .collect();
    let deadline = (r.state == AppState::Accepted)
        .then(|| r.history.iter().rev().find(|h| h.0 == AppState::Accepted))
        .flatten()
        .and_then(|(_, at_ms, _)| {
            let s = &ctx.state;
            let accepted = huitong_protocol::charter::today_in(s.timezone(), *at_ms);
            let days = s.config.applications.deadline_working_days();
            let due = applications::deadline::due(&accepted, days)?;
            let left = applications::deadline::working_days_left(&s.today(), &due)?;
            Some(Deadline {
                due,
                working_days_left: left,
            })
        });
    AppView {
        deadline,
        timeline,
        grant_expires,
        id: r.app.id.clone(),
        code: r.app.code.to_string(),
        provider: name_of(ctx, &r.app.provider),
        applicant: name_of(ctx, &r.applicant),
        state: r.shown_state(&ctx.state.today()),
        fields: r.app.fields,
        purpose: r.app.purpose,
        basis: r.app.basis,
        until: r.app.until,
        reason: r.reason,
        approved_fields: r.approval.as_ref().map(|a| a.fields.clone()),
        masked: r
            .approval
            .as_ref()
            .map(|a| a.terms.masked.clone())
            .unwrap_or_default(),
        verify_only: r.approval.as_ref().is_some_and(|a| a.terms.verify_only),
        calls_per_second: r.approval.as_ref().and_then(|a| a.terms.calls_per_second),
        calls_per_day: r.approval.as_ref().and_then(|a| a.terms.calls_per_day),
        approved_until: r.approval.map(|a| a.until),
    }
}

async fn record(ctx: &Ctx, who: &Principal, event: GrantEvent) -> Result<(), Fail> {
    let sealed = ctx
        .feeds
        .append_as(who.actor().as_ref(), Event::Grant(event))
        .map_err(super::append_error)?;
    ctx.net.publish(&sealed).await;
    Ok(())
}

pub(super) async fn apply(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Json(req): Json<ApplyRequest>,
) -> Res<AppView> {
    let bad = |m: String| fail(StatusCode::UNPROCESSABLE_ENTITY, m);
    let code = ResourceCode::parse(&req.code)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("code: {e}")))?;
    let rec = catalogue::pick(
        &ctx.state.store,
        code.as_str(),
        req.provider.as_deref(),
        true,
    )
    .map_err(|e| match e {
        catalogue::PickError::Store(e) => internal(e),
        e @ catalogue::PickError::None(_) => fail(StatusCode::NOT_FOUND, e.to_string()),
        e => bad(e.to_string()),
    })?;
    if let Some(why) = crate::access::application_refusal(&rec, &req.fields) {
        return Err(bad(why));
    }
    if req.until < ctx.state.today() {
        return Err(bad(format!("until {} is in the past", req.until)));
    }
    let app = Application {
        id: hex::encode(rand::random::<[u8; 16]>()),
        code,
        provider: rec.feed,
        fields: req.fields,
        purpose: req.purpose.trim().to_owned(),
        basis: req.basis.trim().to_owned(),
        until: req.until,
    };
    app.check().map_err(bad)?;
    let id = app.id.clone();
    record(&ctx, &who, GrantEvent::Submitted(app)).await?;
    let r = applications::get(&ctx.state, &id)
        .map_err(internal)?
        .ok_or_else(|| internal("application not stored"))?;
    Ok(Json(view(&ctx, r)))
}

pub(super) async fn list(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Res<Vec<AppView>> {
    views(&ctx, &who, q.dir.as_deref()).map(Json)
}

/// The applications `who` may see: `dir` is `incoming` (to this node as provider; all of them
/// on the hub), `outgoing`, or both when `None`.
pub(super) fn views(ctx: &Ctx, who: &Principal, dir: Option<&str>) -> Result<Vec<AppView>, Fail> {
    let me = ctx.state.id();
    let is_hub = ctx.state.is_hub();
    let records = applications::all(&ctx.state).map_err(internal)?;
    // A person who is only a data user sees the applications they submitted themselves (their
    // purposes and bases are not every colleague's business); approvers and auditors see the
    // node's.
    let only_own = match who {
        Principal::Person { account, .. }
            if !account.has(Role::Approver) && !account.has(Role::Auditor) =>
        {
            Some(account.name.clone())
        }
        _ => None,
    };
    let keep = |r: &AppRecord| {
        let mine = only_own.as_ref().is_none_or(|name| {
            r.applicant == me && r.step_by(0).is_some_and(|by| by.account == *name)
        });
        mine && match dir {
            Some("incoming") => is_hub || r.app.provider == me,
            Some("outgoing") => r.applicant == me,
            _ => is_hub || r.app.provider == me || r.applicant == me,
        }
    };
    Ok(records
        .into_iter()
        .filter(keep)
        .map(|r| view(ctx, r))
        .collect())
}

/// The applications awaiting this node's decision as provider (accepted by the hub), nearest
/// 办理时限 first.
pub(super) fn awaiting(ctx: &Ctx) -> Result<Vec<AppView>, Fail> {
    let me = ctx.state.id();
    let mut v: Vec<AppView> = applications::all(&ctx.state)
        .map_err(internal)?
        .into_iter()
        .filter(|r| r.app.provider == me && r.state == AppState::Accepted)
        .map(|r| view(ctx, r))
        .collect();
    v.sort_by(|a, b| {
        let due = |x: &AppView| x.deadline.as_ref().map(|d| d.due.clone());
        due(a).cmp(&due(b))
    });
    Ok(v)
}

async fn decide(
    ctx: Ctx,
    who: Principal,
    id: String,
    make: impl FnOnce(&AppRecord, bool, bool) -> Result<GrantEvent, String>,
) -> Res<AppView> {
    let r = applications::get(&ctx.state, &id)
        .map_err(internal)?
        .ok_or_else(|| {
            fail(
                StatusCode::NOT_FOUND,
                format!("no application {id}; see `huitong applications`"),
            )
        })?;
    let me = ctx.state.id();
    let is_hub = ctx.state.is_hub();
    let event =
        make(&r, r.app.provider == me, is_hub).map_err(|m| fail(StatusCode::CONFLICT, m))?;
    record(&ctx, &who, event).await?;
    let r = applications::get(&ctx.state, &id)
        .map_err(internal)?
        .ok_or_else(|| internal("application vanished"))?;
    Ok(Json(view(&ctx, r)))
}

/// Refuses a grant's quota `name` = `n` above the node's own `limit`.
fn within(name: &str, n: Option<u64>, limit: u64) -> Result<(), Fail> {
    match n {
        Some(n) if n > limit => Err(fail(
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            format!("{name} {n} is above this node's [services] {name} {limit}: a grant's quota can only be lower (or leave it unset)"),
        )),
        _ => Ok(()),
    }
}

pub(super) async fn approve(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    body: Option<Json<Approve>>,
) -> Res<AppView> {
    let Approve {
        fields,
        until,
        masked,
        verify_only,
        calls_per_second,
        calls_per_day,
    } = body.map(|Json(b)| b).unwrap_or_default();
    let terms = huitong_protocol::application::CallTerms {
        masked,
        verify_only,
        calls_per_second,
        calls_per_day,
    };
    // A grant's quota can only be lower than the node's own.
    let node = &ctx.state.config.services;
    within(
        "calls_per_second",
        terms.calls_per_second.map(u64::from),
        u64::from(node.calls_per_second()),
    )?;
    within("calls_per_day", terms.calls_per_day, node.calls_per_day())?;
    let today = ctx.state.today();
    let proxied: Vec<String> = ctx
        .state
        .config
        .services
        .backends
        .iter()
        .map(|b| b.code.clone())
        .collect();
    decide(ctx, who, id, move |r, provider, _| {
        match (provider, r.state) {
            (false, _) => Err("only the provider of the resource can approve".into()),
            (true, AppState::Accepted) => {
                let code = r.app.code.to_string();
                if terms.verify_only && proxied.contains(&code) {
                    return Err(format!(
                        "{code} is a proxied service (its backend answers the operations of its OpenAPI description); 核验-only applies to query services over a dataset: approve without --verify-only"
                    ));
                }
                applications::approval(&r.app, fields.as_deref(), until.as_deref(), &terms)
                    .map_err(|why| {
                        format!(
                            "{why}: applied for {} until {}",
                            r.app.fields.join(","),
                            r.app.until
                        )
                    })?;
                if let Some(u) = until.as_ref().filter(|u| **u < today) {
                    return Err(format!("until {u} is in the past (today is {today})"));
                }
                Ok(GrantEvent::Approved {
                    id: r.app.id.clone(),
                    fields,
                    until,
                    terms,
                })
            }
            (true, s) => Err(format!(
                "the application is {s:?}; only an accepted application can be approved"
            )),
        }
    })
    .await
}

fn need_reason(reason: &str) -> Result<String, String> {
    let r = reason.trim();
    if r.is_empty() {
        Err("give the reason (--reason TEXT)".into())
    } else {
        Ok(r.to_owned())
    }
}

/// A decision that needs a reason and is allowed to the provider or the hub in `from` states.
async fn with_reason(
    ctx: Ctx,
    who: Principal,
    id: String,
    reason: String,
    verb: &'static str,
    from: &'static [AppState],
    make: fn(String, String) -> GrantEvent,
) -> Res<AppView> {
    decide(ctx, who, id, move |r, provider, hub| {
        if !(provider || hub) {
            return Err(format!("only the provider or the hub can {verb}"));
        }
        if !from.contains(&r.state) {
            return Err(format!(
                "the application is {:?}; {verb} applies to {from:?} applications only",
                r.state
            ));
        }
        Ok(make(r.app.id.clone(), need_reason(&reason)?))
    })
    .await
}

pub(super) async fn reject(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Json(b): Json<Reason>,
) -> Res<AppView> {
    with_reason(
        ctx,
        who,
        id,
        b.reason,
        "reject",
        &[AppState::Submitted, AppState::Accepted],
        |id, reason| GrantEvent::Rejected { id, reason },
    )
    .await
}

pub(super) async fn revoke(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Path(id): Path<String>,
    Json(b): Json<Reason>,
) -> Res<AppView> {
    with_reason(
        ctx,
        who,
        id,
        b.reason,
        "revoke",
        &[AppState::Approved, AppState::Granted],
        |id, reason| GrantEvent::Revoked { id, reason },
    )
    .await
}
