//! Subscriptions in the portal (订阅): a data user subscribes to a resource from its entry page
//! (each new version delivered into their own directory of the exchange directory, under their
//! own grant), sees each subscription's delivered version, lag and last error, and ends their
//! own; the administrator and the auditor see every subscription of the node. Calls the same
//! functions as the JSON API, so the page can do exactly what the API allows the same person.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::{Extension, Json};

use super::form::Form;
use super::format;
use super::guard::Viewer;
use super::page::{show, Chrome, PageError, PageResult};
use crate::http::subscriptions as api;
use crate::http::Ctx;
use crate::subscribe::request::SubscribeRequest;
use crate::subscribe::Target;

/// A subscription as the page shows it.
struct SubRow {
    name: String,
    code: String,
    provider: String,
    target: String,
    fields: String,
    delivered: String,
    latest: String,
    lag: u64,
    at: String,
    error: String,
    failures: u32,
    mine: bool,
}

#[derive(Template)]
#[template(path = "subscriptions.html")]
struct ListPage {
    c: Chrome,
    subs: Vec<SubRow>,
}

/// `GET /subscriptions`.
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let lang = viewer.lang;
    let Json(all) = api::list(State(ctx.clone()), Extension(viewer.acting()?)).await?;
    let me = viewer.account().map(|a| a.name.clone());
    let tz = ctx.state.timezone();
    let subs = all
        .into_iter()
        .map(|v| {
            let s = v.subscription;
            SubRow {
                mine: s.created_by.is_some() && s.created_by == me,
                provider: crate::catalogue::get_by_provider(&ctx.state.store, &s.provider, &s.code)
                    .ok()
                    .flatten()
                    .map_or_else(|| s.provider.clone(), |r| r.entry.provider_name),
                target: s.target.describe(),
                fields: s
                    .fields
                    .as_ref()
                    .map_or_else(|| lang.t("全部", "all").into(), |f| f.join("、")),
                delivered: s
                    .delivery
                    .version
                    .map_or_else(|| "—".into(), |v| format!("v{v}")),
                latest: v.latest.map_or_else(|| "—".into(), |v| format!("v{v}")),
                lag: v.lag,
                at: s
                    .delivery
                    .at_ms
                    .map_or_else(|| "—".into(), |t| format::time(tz, t)),
                error: s.delivery.error.clone().unwrap_or_default(),
                failures: s.delivery.failures,
                name: s.name,
                code: s.code,
            }
        })
        .collect();
    show(&ListPage {
        c: Chrome::new(&ctx, &viewer, lang.t("订阅", "Subscriptions")),
        subs,
    })
}

/// `POST /subscriptions`: code, provider, format, current, grant from the entry page; delivered
/// into the person's own directory (the API puts it there).
pub(crate) async fn create(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let lang = viewer.lang;
    let format = super::pulls::out_format(&form, lang)?;
    let code = form.get("code").to_owned();
    if code.is_empty() {
        return Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang.t(
                "没有指定资源代码：请从资源页订阅。",
                "No resource code: subscribe from an entry page.",
            ),
        ));
    }
    let req = SubscribeRequest {
        name: None,
        code,
        provider: Some(form.get("provider").to_owned()).filter(|p| !p.is_empty()),
        fields: None,
        grant: Some(form.get("grant").to_owned()).filter(|g| !g.is_empty()),
        key: Vec::new(),
        target: Target::Dir {
            // Replaced by the person's own directory.
            path: std::path::PathBuf::new(),
            format,
            current: form.get("current") == "on",
        },
    };
    let Json(_made) = api::create(State(ctx), Extension(viewer.acting()?), Json(req)).await?;
    Ok(Redirect::to("/subscriptions").into_response())
}

/// `POST /subscriptions/{name}/remove`: ends the person's own subscription.
pub(crate) async fn remove(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Path(name): Path<String>,
) -> PageResult {
    let Json(_ended) = api::remove(State(ctx), Extension(viewer.acting()?), Path(name)).await?;
    Ok(Redirect::to("/subscriptions").into_response())
}
