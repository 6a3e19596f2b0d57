//! Dataset routes: publish a version, list versions, start a pull and follow its progress.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::{fail, internal, Ctx, Fail, Res};
use crate::api::{self, ApiError};
use crate::catalogue;
use crate::dataset::publish::{self, PublishError, PublishReport, PublishRequest};
use crate::dataset::records;
use crate::transfer::pull::{self, JobView, PullRequest};

fn publish_error(e: PublishError) -> Fail {
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
        PublishError::NoItems(_) | PublishError::Input(_) | PublishError::File { .. } => {
            fail(StatusCode::UNPROCESSABLE_ENTITY, e)
        }
        PublishError::Append(a) => super::append_error(a),
        other => internal(other),
    }
}

pub(super) async fn publish(
    State(ctx): State<Ctx>,
    Json(req): Json<PublishRequest>,
) -> Res<PublishReport> {
    if !req.path.is_absolute() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "path must be absolute (the CLI makes it so)",
        ));
    }
    let feeds = ctx.feeds.clone();
    let (report, entry) = tokio::task::spawn_blocking(move || publish::publish(&feeds, &req))
        .await
        .map_err(internal)?
        .map_err(publish_error)?;
    ctx.net.publish(&entry).await;
    Ok(Json(report))
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
    Json(req): Json<PullRequest>,
) -> Res<api::PullStarted> {
    let id = pull::start(ctx.feeds.clone(), ctx.transport.clone(), &ctx.pulls, req);
    Ok(Json(api::PullStarted { id }))
}

pub(super) async fn pull_progress(State(ctx): State<Ctx>, Path(id): Path<u64>) -> Res<JobView> {
    ctx.pulls.view(id).map(Json).ok_or_else(|| {
        fail(
            StatusCode::NOT_FOUND,
            format!("no pull {id} on this node (pulls are forgotten at restart)"),
        )
    })
}
