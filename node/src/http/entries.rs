//! Catalogue routes: list and search the catalogue, publish or update one entry (every field
//! checked by the validator the CLI uses, all problems reported at once), publish a batch, and
//! withdraw an entry with its reason. The portal's cataloguing pages call [`publish_entry`] and
//! [`withdraw_entry`], so a page does exactly what the API does for the same person.

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use huitong_protocol::catalogue::{OpenType, RawEntry, ShareType};
use huitong_protocol::ValidationErrors;
use huitong_protocol::{Event, ResourceCode};

use super::authz::Principal;
use super::{append_error, fail, internal, Ctx, Fail, Res};
use crate::api::{self, ApiError};
use crate::catalogue::{self, Filter};

pub(super) fn filter(q: &api::Query) -> Result<Filter, Fail> {
    let bad = |what: &str, v: &str, expected: String| {
        fail(
            StatusCode::BAD_REQUEST,
            format!("unknown {what} {v:?}; expected one of {expected}"),
        )
    };
    Ok(Filter {
        provider: q.provider.clone().filter(|s| !s.is_empty()),
        classification: q.classification.clone().filter(|s| !s.is_empty()),
        share_type: q
            .share_type
            .as_deref()
            .map(|s| ShareType::parse(s).ok_or_else(|| bad("share type", s, ShareType::expected())))
            .transpose()?,
        open_type: q
            .open_type
            .as_deref()
            .map(|s| OpenType::parse(s).ok_or_else(|| bad("open type", s, OpenType::expected())))
            .transpose()?,
        include_withdrawn: q.code.is_some(),
    })
}

pub(super) async fn list(State(ctx): State<Ctx>, Query(q): Query<api::Query>) -> Res<api::Records> {
    let f = filter(&q)?;
    let store = &ctx.state.store;
    let records = match (&q.code, &q.q) {
        (Some(code), _) => catalogue::get(store, code).map_err(internal)?,
        (None, Some(text)) => {
            let (ctx, text) = (ctx.clone(), text.clone());
            tokio::task::spawn_blocking(move || {
                catalogue::ranked(&ctx.state.store, &ctx.search, &text, &f)
            })
            .await
            .map_err(internal)?
            .map_err(internal)?
        }
        (None, None) => catalogue::list(store, &f).map_err(internal)?,
    };
    Ok(Json(api::Records { records }))
}

pub(super) async fn publish(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Json(raw): Json<RawEntry>,
) -> Res<api::Published> {
    publish_entry(&ctx, &who, &raw).await.map(Json)
}

/// Validates `raw` and appends it to this node's feed as `who` (published, or updated when the
/// code is already this node's); every problem comes back in the error's details, each with
/// its field's path (`title`, `items[2].length`).
pub(crate) async fn publish_entry(
    ctx: &Ctx,
    who: &Principal,
    raw: &RawEntry,
) -> Result<api::Published, Fail> {
    let entry = raw.validate().map_err(|errors| {
        Fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiError {
                error: format!("the entry has {}; nothing was stored", errors.summary()),
                details: errors.0,
            },
        )
    })?;
    let code = entry.code.to_string();
    let sealed = ctx
        .feeds
        .append_as(
            who.actor().as_ref(),
            huitong_protocol::Event::CataloguePublished(entry),
        )
        .map_err(append_error)?;
    let event = match sealed.entry.event {
        Event::CatalogueUpdated(_) => "updated",
        _ => "published",
    };
    let seq = sealed.entry.seq;
    ctx.net.publish(&sealed).await;
    Ok(api::Published {
        code,
        event: event.into(),
        seq,
    })
}

pub(super) async fn publish_batch(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Json(b): Json<api::Batch>,
) -> Res<api::BatchPublished> {
    if b.entries.len() > api::MAX_BATCH {
        return Err(fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} entries in one batch; send at most {}",
                b.entries.len(),
                api::MAX_BATCH
            ),
        ));
    }
    let mut events = Vec::with_capacity(b.entries.len());
    let mut problems = ValidationErrors::default();
    for (i, raw) in b.entries.iter().enumerate() {
        match raw.validate() {
            Ok(e) => events.push(Event::CataloguePublished(e)),
            Err(errors) => problems.0.extend(errors.0.into_iter().map(|mut e| {
                e.path = format!("[{i}].{}", e.path);
                e
            })),
        }
    }
    if !problems.0.is_empty() {
        return Err(Fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            ApiError {
                error: format!("{} in the batch; nothing was stored", problems.summary()),
                details: problems.0,
            },
        ));
    }
    let feeds = ctx.feeds.clone();
    let by = who.actor();
    let sealed = tokio::task::spawn_blocking(move || feeds.append_many_as(by.as_ref(), events))
        .await
        .map_err(internal)?
        .map_err(append_error)?;
    let updated = sealed
        .iter()
        .filter(|v| matches!(v.entry.event, Event::CatalogueUpdated(_)))
        .count();
    let last_seq = sealed.last().map_or(0, |v| v.entry.seq);
    let published = sealed.len() - updated;
    for v in sealed {
        ctx.net.publish(&v).await;
    }
    Ok(Json(api::BatchPublished {
        published,
        updated,
        last_seq,
    }))
}

pub(super) async fn withdraw(
    State(ctx): State<Ctx>,
    Extension(who): Extension<Principal>,
    Json(w): Json<api::Withdraw>,
) -> Res<api::Published> {
    withdraw_entry(&ctx, &who, w).await.map(Json)
}

/// Withdraws this node's entry `w.code` as `who`, with its reason (下架原因).
pub(crate) async fn withdraw_entry(
    ctx: &Ctx,
    who: &Principal,
    w: api::Withdraw,
) -> Result<api::Published, Fail> {
    let code = ResourceCode::parse(&w.code)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("code: {e}")))?;
    if w.reason.trim().is_empty() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "reason: give the reason for withdrawing (下架原因)",
        ));
    }
    let sealed = ctx
        .feeds
        .append_as(
            who.actor().as_ref(),
            Event::CatalogueWithdrawn {
                code,
                reason: w.reason.trim().to_owned(),
            },
        )
        .map_err(append_error)?;
    let seq = sealed.entry.seq;
    ctx.net.publish(&sealed).await;
    Ok(api::Published {
        code: w.code,
        event: "withdrawn".into(),
        seq,
    })
}
