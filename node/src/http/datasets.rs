//! Dataset routes: publish a version, list versions, start a pull (or attach to the same one
//! running), follow its progress, list and cancel pulls, collect the chunk store.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Deserialize;

use super::authz::Principal;
use super::{fail, internal, Ctx, Fail, Res};
use crate::api::{self, ApiError};
use crate::catalogue;
use crate::dataset::gc::{self, GcError, GcReport};
use crate::dataset::publish::{self, PublishError, PublishReport, PublishRequest};
use crate::dataset::records;
use crate::transfer::pull::{self, JobView, PullRequest, StartError};

/// The API's answer to a failed publish.
pub(crate) fn publish_error(e: PublishError) -> Fail {
    match e {
        PublishError::UnknownCode(_) => fail(StatusCode::NOT_FOUND, e),
        PublishError::Rejected { ref first, .. } => Fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiError {
                error: e.to_string(),
                details: first
                    .iter()
                    .map(|r| huitong_protocol::FieldError {
                        path: format!("row {}: {}", r.row, r.item),
                        message: format!("{:?} breaks the rule {}", r.value, r.rule),
                    })
                    .collect(),
            },
        ),
        PublishError::NoItems(_)
        | PublishError::Input(_)
        | PublishError::File { .. }
        | PublishError::Changed(_)
        | PublishError::NotShared(_)
        | PublishError::Out(_) => fail(StatusCode::UNPROCESSABLE_ENTITY, e),
        PublishError::Append(a) => super::append_error(a),
        other => internal(other),
    }
}

pub(super) async fn publish(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Json(req): Json<PublishRequest>,
) -> Res<PublishReport> {
    publish_version(&ctx, &who, req)
        .await?
        .map(Json)
        .map_err(publish_error)
}

/// Publishes a dataset version as `who` (a person names a file of their own directory of the
/// exchange directory) and announces it. The outer error is the request's (a path the person
/// may not name); the inner one the publish's own, for the caller to present (the portal shows
/// the refused cells as a table).
pub(crate) async fn publish_version(
    ctx: &Ctx,
    who: &Principal,
    mut req: PublishRequest,
) -> Result<Result<PublishReport, PublishError>, Fail> {
    req.path = super::paths::for_principal(ctx, who, &req.path)?;
    if !req.path.is_absolute() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "path must be absolute (the CLI makes it so)",
        ));
    }
    let feeds = ctx.feeds.clone();
    let by = who.actor();
    let published =
        tokio::task::spawn_blocking(move || publish::publish(&feeds, &req, by.as_ref()))
            .await
            .map_err(internal)?;
    Ok(match published {
        Ok((report, entry)) => {
            ctx.net.publish(&entry).await;
            Ok(report)
        }
        Err(e) => Err(e),
    })
}

#[derive(Deserialize)]
pub(super) struct CodeQuery {
    code: String,
    provider: Option<String>,
}

pub(super) async fn versions(
    State(ctx): State<Ctx>,
    Query(q): Query<CodeQuery>,
) -> Res<Vec<api::Versions>> {
    let store = &ctx.state.store;
    let records = catalogue::get(store, &q.code).map_err(internal)?;
    if records.is_empty() {
        return Err(fail(
            StatusCode::NOT_FOUND,
            format!("no catalogue entry {} here", q.code),
        ));
    }
    records
        .into_iter()
        .filter(|r| {
            q.provider
                .as_deref()
                .is_none_or(|p| r.entry.provider_code.as_str() == p)
        })
        .map(|r| {
            Ok(api::Versions {
                code: q.code.clone(),
                provider: r.entry.provider_name.clone(),
                versions: records::versions(store, &r.feed, &q.code).map_err(internal)?,
            })
        })
        .collect::<Result<Vec<_>, Fail>>()
        .map(Json)
}

pub(super) async fn start_pull(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Json(mut req): Json<PullRequest>,
) -> Res<api::PullStarted> {
    req.out = super::paths::for_principal(&ctx, &who, &req.out)?;
    req.started_by = who.actor();
    if let Principal::Person { account, .. } = &who {
        own_grant(&ctx, &account.name, &mut req)?;
    }
    let started = pull::start(ctx.feeds.clone(), ctx.transport.clone(), &ctx.pulls, req).map_err(
        |e| match e {
            StartError::Busy { .. } => fail(StatusCode::CONFLICT, e),
            StartError::TooMany => fail(StatusCode::TOO_MANY_REQUESTS, e),
            other => fail(StatusCode::BAD_REQUEST, other),
        },
    )?;
    Ok(Json(api::PullStarted {
        id: started.id,
        attached: started.attached,
    }))
}

/// A person pulls under their own grant only (an application they submitted), never under a
/// colleague's or the node's: the grant named is checked, or theirs for the resource is found.
pub(super) fn own_grant(ctx: &Ctx, account: &str, req: &mut PullRequest) -> Result<(), Fail> {
    req.own_grant_only = true;
    if req.token.is_some() {
        // A token in hand may be anyone's (a colleague's, the department's): a person pulls
        // under their own application, named or found here.
        return Err(fail(
            StatusCode::FORBIDDEN,
            "a person cannot present a grant token; pull under your own application (omit token, or name it with grant)",
        ));
    }
    let me = ctx.state.id();
    let theirs = |r: &crate::applications::AppRecord| {
        r.applicant == me && r.step_by(0).is_some_and(|by| by.account == account)
    };
    match &req.grant {
        Some(id) => {
            let r = crate::applications::get(&ctx.state, id).map_err(internal)?;
            if !r.as_ref().is_some_and(theirs) {
                return Err(fail(
                    StatusCode::FORBIDDEN,
                    format!("application {id} is not one of yours; pull under a grant you applied for (`huitong applications --outgoing` lists them)"),
                ));
            }
        }
        None => {
            req.grant = crate::applications::all(&ctx.state)
                .map_err(internal)?
                .into_iter()
                .filter(|r| {
                    theirs(r)
                        && r.app.code.as_str() == req.code
                        && r.state == crate::applications::AppState::Granted
                })
                .max_by_key(|r| r.history.last().map_or(0, |h| h.1))
                .map(|r| r.app.id);
        }
    }
    Ok(())
}

fn no_such_pull(id: u64) -> Fail {
    fail(
        StatusCode::NOT_FOUND,
        format!(
            "no pull {id} on this node (the last {} finished pulls are kept, none across a restart); `huitong pulls` lists them",
            pull::MAX_FINISHED
        ),
    )
}

/// Whether `who` may see and cancel pull `v`: the node token every pull, a person their own.
fn owns(who: &Principal, v: &JobView) -> bool {
    match who {
        Principal::Node => true,
        Principal::Person { account, .. } => v.started_by.as_deref() == Some(&account.name),
    }
}

pub(super) async fn pull_progress(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Path(id): Path<u64>,
) -> Res<JobView> {
    ctx.pulls
        .view(id)
        .filter(|v| owns(&who, v))
        .map(Json)
        .ok_or_else(|| no_such_pull(id))
}

pub(super) async fn list_pulls(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
) -> Res<Vec<JobView>> {
    Ok(Json(
        ctx.pulls
            .list()
            .into_iter()
            .filter(|v| owns(&who, v))
            .collect(),
    ))
}

pub(super) async fn cancel_pull(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Path(id): Path<u64>,
) -> Res<JobView> {
    if !ctx.pulls.view(id).is_some_and(|v| owns(&who, &v)) {
        return Err(no_such_pull(id));
    }
    match ctx.pulls.cancel(id) {
        None => Err(no_such_pull(id)),
        Some(pull::Cancel::Stopping(v)) => Ok(Json(v)),
        Some(pull::Cancel::Ended(v)) => Err(fail(
            StatusCode::CONFLICT,
            format!(
                "pull {id} already ended ({}); nothing to cancel",
                v.phase.as_str()
            ),
        )),
    }
}

pub(super) async fn gc(State(ctx): State<Ctx>) -> Res<GcReport> {
    let grace = crate::housekeeping::Settings::from_env()
        .map_err(internal)?
        .gc_grace;
    let state = ctx.state.clone();
    tokio::task::spawn_blocking(move || gc::collect(&state, grace))
        .await
        .map_err(internal)?
        .map(Json)
        .map_err(|e| match e {
            GcError::Busy => fail(StatusCode::CONFLICT, e),
            other => internal(other),
        })
}
