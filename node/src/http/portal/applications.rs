//! Applications in the portal: the apply form (信息项 picked by checkbox, 不予共享 items shown but
//! disabled with their basis), "my applications" with each one's timeline, the approver's inbox
//! sorted by 办理时限 (approve with fewer 信息项 or a shorter period, reject with a reason), and
//! revoking a grant. Every action goes through the API's own functions as the signed-in person.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};
use huitong_protocol::catalogue::ShareType;
use serde::Deserialize;

use super::catalogue::entry_href;
use super::form::Form;
use super::format;
use super::guard::{encode, Viewer};
use super::page::{html, show, Chrome, Lang, PageError, PageResult};
use crate::accounts::Role;
use crate::api::{AppView, ApplyRequest, Approve, Reason};
use crate::catalogue::{self, Record};
use crate::http::applications as api;
use crate::http::Ctx;

/// A row of an application table.
pub(crate) struct Row {
    pub(crate) id: String,
    pub(crate) href: String,
    pub(crate) code: String,
    pub(crate) applicant: String,
    pub(crate) provider: String,
    pub(crate) fields: String,
    pub(crate) state: String,
    pub(crate) state_class: &'static str,
    pub(crate) deadline: String,
    pub(crate) overdue: bool,
}

/// The applications awaiting this node's decision, nearest deadline first (none on a fault,
/// which the inbox page itself reports).
pub(crate) fn awaiting(ctx: &Ctx) -> Vec<AppView> {
    api::awaiting(ctx).unwrap_or_default()
}

/// A table row for `v`.
pub(crate) fn row(v: AppView, lang: Lang) -> Row {
    let (deadline, overdue) = match &v.deadline {
        Some(d) if d.working_days_left < 0 => {
            (format!("{} ({})", d.due, lang.t("已超期", "overdue")), true)
        }
        Some(d) => (
            format!(
                "{} ({} {})",
                d.due,
                d.working_days_left,
                lang.t("个工作日", "working days left")
            ),
            false,
        ),
        None => ("—".into(), false),
    };
    Row {
        href: format!("/applications/{}", v.id),
        code: v.code,
        applicant: v.applicant,
        provider: v.provider,
        fields: v.fields.join("、"),
        state: state_text(&v.state, lang),
        state_class: format::state_class(&v.state),
        deadline,
        overdue,
        id: v.id,
    }
}

fn state_text(state: &str, lang: Lang) -> String {
    if lang.en() {
        state.to_string()
    } else {
        format::state_label(state).to_string()
    }
}

/// This person's grants usable for `r` (granted, of this node): (application id, label).
pub(crate) fn usable_grants(ctx: &Ctx, viewer: &Viewer, r: &Record) -> Vec<(String, String)> {
    let Some(p) = viewer.principal.as_ref() else {
        return Vec::new();
    };
    let Some(account) = viewer.account() else {
        return Vec::new();
    };
    let provider = ctx
        .state
        .with_charter(|c| c.and_then(|c| c.member(&r.feed)).map(|m| m.name.clone()));
    // Only the person's own applications (an approver also sees colleagues'), of this provider.
    api::views(ctx, p, Some("outgoing"))
        .unwrap_or_default()
        .into_iter()
        .filter(|v| {
            v.state == "granted"
                && v.code == r.entry.code.as_str()
                && provider.as_ref().is_none_or(|n| *n == v.provider)
                && v.timeline
                    .first()
                    .and_then(|s| s.by.as_ref())
                    .is_some_and(|by| by.account == account.name)
        })
        .map(|v| {
            let fields = v.approved_fields.clone().unwrap_or(v.fields.clone());
            let until = v.approved_until.clone().unwrap_or(v.until.clone());
            let label = format!(
                "{} · {} · {}",
                v.id.get(..8).unwrap_or(&v.id),
                fields.join("、"),
                until
            );
            (v.id, label)
        })
        .collect()
}

/// Which entry to apply for.
#[derive(Deserialize)]
pub(crate) struct Which {
    code: String,
    #[serde(default)]
    provider: String,
}

/// A 信息项 in the apply form.
pub(crate) struct Pick {
    name: String,
    checked: bool,
    /// Why it cannot be picked (不予共享 and its basis).
    refused: Option<String>,
}

#[derive(Template)]
#[template(path = "apply.html")]
struct ApplyPage {
    c: Chrome,
    title: String,
    code: String,
    provider: String,
    back: String,
    items: Vec<Pick>,
    purpose: String,
    basis: String,
    until: String,
    error: Option<String>,
}

fn record(ctx: &Ctx, code: &str, provider: &str, lang: Lang) -> Result<Record, PageError> {
    catalogue::pick(
        &ctx.state.store,
        code,
        (!provider.is_empty()).then_some(provider),
        false,
    )
    .map_err(|e| match e {
        catalogue::PickError::Store(e) => PageError::internal(e),
        e => PageError::new(
            StatusCode::NOT_FOUND,
            format!("{} {e}", lang.t("找不到该资源：", "No such entry:")),
        ),
    })
}

/// The apply form for `r`, with what was typed and an error, if any.
fn apply_page(
    ctx: &Ctx,
    viewer: &Viewer,
    r: &Record,
    picked: &[String],
    form: Option<&Form>,
    error: Option<String>,
) -> ApplyPage {
    let lang = viewer.lang;
    let e = &r.entry;
    let items = e
        .items
        .iter()
        .map(|i| {
            let refused = (e.effective_share_type(i) == ShareType::None).then(|| {
                e.share_condition
                    .clone()
                    .unwrap_or_else(|| lang.t("不予共享", "not shared").to_string())
            });
            Pick {
                checked: refused.is_none() && picked.contains(&i.name),
                name: i.name.clone(),
                refused,
            }
        })
        .collect();
    let get = |k: &str| form.map(|f| f.get(k).to_string()).unwrap_or_default();
    let until = form
        .map(|f| f.get("until").to_string())
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| one_year_from(&ctx.state.today()));
    ApplyPage {
        c: Chrome::new(ctx, viewer, lang.t("申请使用", "Apply")),
        title: e.title.clone(),
        code: e.code.to_string(),
        provider: e.provider_code.to_string(),
        back: entry_href(r),
        items,
        purpose: get("purpose"),
        basis: get("basis"),
        until,
        error,
    }
}

/// `YYYY-MM-DD` a year after `today` (the form's suggested last day).
fn one_year_from(today: &str) -> String {
    match today.split_once('-') {
        Some((y, rest)) => match y.parse::<u32>() {
            // 29 February has no match a year later.
            Ok(y) if rest == "02-29" => format!("{}-02-28", y + 1),
            Ok(y) => format!("{}-{rest}", y + 1),
            Err(_) => today.to_string(),
        },
        None => today.to_string(),
    }
}

/// `GET /apply?code=…&provider=…`.
pub(crate) async fn apply_form(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(w): Query<Which>,
) -> PageResult {
    let r = record(&ctx, &w.code, &w.provider, viewer.lang)?;
    show(&apply_page(&ctx, &viewer, &r, &[], None, None))
}

/// `POST /apply`.
pub(crate) async fn apply(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let lang = viewer.lang;
    let r = record(&ctx, form.get("code"), form.get("provider"), lang)?;
    let fields = form.all("fields");
    let req = ApplyRequest {
        code: form.get("code").to_string(),
        provider: Some(form.get("provider").to_string()).filter(|p| !p.is_empty()),
        fields: fields.clone(),
        purpose: form.get("purpose").to_string(),
        basis: form.get("basis").to_string(),
        until: form.get("until").to_string(),
    };
    let missing: Vec<&str> = [
        (
            fields.is_empty(),
            lang.t("请至少选择一个信息项", "pick at least one item"),
        ),
        (
            req.purpose.is_empty(),
            lang.t("请填写用途", "give the purpose"),
        ),
        (
            req.basis.is_empty(),
            lang.t("请填写依据", "give the legal basis"),
        ),
    ]
    .iter()
    .filter(|(bad, _)| *bad)
    .map(|(_, m)| *m)
    .collect();
    if !missing.is_empty() {
        let mut r = html(&apply_page(
            &ctx,
            &viewer,
            &r,
            &fields,
            Some(&form),
            Some(missing.join("；")),
        ));
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(r);
    }
    match api::apply(State(ctx.clone()), Extension(viewer.acting()?), Json(req)).await {
        Ok(Json(v)) => Ok(Redirect::to(&format!("/applications/{}", v.id)).into_response()),
        Err(f) if f.0.is_client_error() => {
            let mut resp = html(&apply_page(
                &ctx,
                &viewer,
                &r,
                &fields,
                Some(&form),
                Some(f.1.error),
            ));
            *resp.status_mut() = f.0;
            Ok(resp)
        }
        Err(f) => Err(f.into()),
    }
}

#[derive(Template)]
#[template(path = "applications.html")]
struct ListPage {
    c: Chrome,
    todos: Vec<Row>,
    incoming: bool,
}

/// `GET /applications`: the node's applications a person may see (their own, for a data user).
pub(crate) async fn mine(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let lang = viewer.lang;
    let mut all = api::views(&ctx, &viewer.acting()?, None)?;
    all.sort_by(|a, b| {
        let at = |v: &AppView| v.timeline.first().map_or(0, |s| s.at_ms);
        at(b).cmp(&at(a))
    });
    show(&ListPage {
        c: Chrome::new(&ctx, &viewer, lang.t("申请", "Applications")),
        todos: all.into_iter().map(|v| row(v, lang)).collect(),
        incoming: false,
    })
}

/// `GET /inbox`: applications awaiting this node's decision.
pub(crate) async fn inbox(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let lang = viewer.lang;
    let todos = api::awaiting(&ctx)?;
    show(&ListPage {
        c: Chrome::new(&ctx, &viewer, lang.t("待我审批", "To approve")),
        todos: todos.into_iter().map(|v| row(v, lang)).collect(),
        incoming: true,
    })
}

/// A step of the timeline.
pub(crate) struct Step {
    state: String,
    state_class: &'static str,
    at: String,
    node: String,
    by: String,
}

#[derive(Template)]
#[template(path = "application.html")]
struct DetailPage {
    c: Chrome,
    v: AppView,
    row: Row,
    steps: Vec<Step>,
    approved: String,
    can_decide: bool,
    can_revoke: bool,
    applied: Vec<String>,
    notice: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct Notice {
    #[serde(default)]
    done: String,
}

/// `GET /applications/{id}`.
pub(crate) async fn detail(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<String>,
    Query(n): Query<Notice>,
) -> PageResult {
    let lang = viewer.lang;
    let v = api::views(&ctx, &viewer.acting()?, None)?
        .into_iter()
        .find(|v| v.id == id)
        .ok_or_else(|| {
            PageError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "{} {id}",
                    lang.t("没有这个申请，或无权查看：", "No application you may see:")
                ),
            )
        })?;
    let tz = ctx.state.timezone();
    let steps = v
        .timeline
        .iter()
        .map(|s| Step {
            state: state_text(&s.state, lang),
            state_class: format::state_class(&s.state),
            at: format::time(tz, s.at_ms),
            node: s.node.clone(),
            by: s
                .by
                .as_ref()
                .map_or_else(String::new, |a| format!("{} ({})", a.name, a.account)),
        })
        .collect();
    // One read of the record says both whether this node decides it (the provider, once the
    // hub accepted it) and whether it may revoke it (the provider or the hub).
    let record = crate::applications::get(&ctx.state, &v.id).map_err(PageError::internal)?;
    let provider = record
        .as_ref()
        .is_some_and(|r| r.app.provider == ctx.state.id());
    let is_provider = provider
        && record
            .as_ref()
            .is_some_and(|r| r.state == crate::applications::AppState::Accepted);
    let mut approved = match (&v.approved_fields, &v.approved_until) {
        (Some(f), Some(u)) => format!("{} · {} {u}", f.join("、"), lang.t("至", "until")),
        (Some(f), None) => f.join("、"),
        _ => String::new(),
    };
    // The terms of calls, when the approval set any.
    for term in v.call_terms(lang.en()) {
        approved += " · ";
        approved += &term;
    }
    let provider_or_hub = ctx.state.is_hub() || provider;
    let mine_to_revoke = matches!(v.state.as_str(), "approved" | "granted")
        && viewer.has(Role::Approver)
        && provider_or_hub;
    let notice = match n.done.as_str() {
        "approved" => Some(lang.t("已批准。", "Approved.").to_string()),
        "rejected" => Some(lang.t("已驳回。", "Rejected.").to_string()),
        "revoked" => Some(lang.t("已撤销授权。", "The grant is revoked.").to_string()),
        _ => None,
    };
    show(&DetailPage {
        c: Chrome::new(&ctx, &viewer, lang.t("申请详情", "Application")),
        row: row(v.clone(), lang),
        applied: v.fields.clone(),
        steps,
        approved,
        can_decide: is_provider && viewer.has(Role::Approver),
        can_revoke: mine_to_revoke,
        v,
        notice,
    })
}

fn done(id: &str, what: &str) -> Response {
    Redirect::to(&format!("/applications/{}?done={what}", encode(id))).into_response()
}

/// `POST /applications/{id}/approve`: the 信息项 ticked (fewer than applied for narrows the
/// grant) and the last day (earlier than applied for shortens it).
pub(crate) async fn approve(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
    Path(id): Path<String>,
) -> PageResult {
    let lang = viewer.lang;
    let fields = form.all("fields");
    if fields.is_empty() {
        return Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang.t(
                "请至少勾选一个信息项；若不同意共享，请驳回并写明理由。",
                "Tick at least one item; to refuse, reject with a reason instead.",
            ),
        ));
    }
    let until = Some(form.get("until").to_string()).filter(|u| !u.is_empty());
    let body = Approve {
        fields: Some(fields),
        until,
        masked: form.all("masked"),
        verify_only: form.get("verify_only") == "1",
        calls_per_second: quota(&form, "calls_per_second", lang)?,
        calls_per_day: quota(&form, "calls_per_day", lang)?,
    };
    let _decided = api::approve(
        State(ctx),
        Extension(viewer.acting()?),
        Path(id.clone()),
        Some(Json(body)),
    )
    .await?;
    Ok(done(&id, "approved"))
}

/// An optional call quota of the approval form: empty is none, else a whole number ≥ 1.
fn quota<T: std::str::FromStr + PartialEq + From<u8>>(
    form: &Form,
    key: &str,
    lang: Lang,
) -> Result<Option<T>, PageError> {
    let raw = form.get(key);
    if raw.is_empty() {
        return Ok(None);
    }
    match raw.parse::<T>() {
        Ok(n) if n != T::from(0) => Ok(Some(n)),
        _ => Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang.t(
                &format!("调用上限须为不小于 1 的整数（收到 {raw:?}）；不限则留空。"),
                &format!("A call quota is a whole number of at least 1 (got {raw:?}); leave it empty for the provider's default."),
            ),
        )),
    }
}

async fn with_reason(ctx: Ctx, viewer: Viewer, form: Form, id: String, revoke: bool) -> PageResult {
    let lang = viewer.lang;
    let reason = form.get("reason").to_string();
    if reason.is_empty() {
        return Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang.t("请填写理由（必填）。", "Give the reason (required)."),
        ));
    }
    let who = viewer.acting()?;
    let body = Json(Reason { reason });
    if revoke {
        let _decided = api::revoke(State(ctx), Extension(who), Path(id.clone()), body).await?;
        Ok(done(&id, "revoked"))
    } else {
        let _decided = api::reject(State(ctx), Extension(who), Path(id.clone()), body).await?;
        Ok(done(&id, "rejected"))
    }
}

/// `POST /applications/{id}/reject` (a reason is required).
pub(crate) async fn reject(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
    Path(id): Path<String>,
) -> PageResult {
    with_reason(ctx, viewer, form, id, false).await
}

/// `POST /applications/{id}/revoke` (a reason is required).
pub(crate) async fn revoke(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
    Path(id): Path<String>,
) -> PageResult {
    with_reason(ctx, viewer, form, id, true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suggested_last_day_is_a_year_on() {
        assert_eq!(one_year_from("2026-12-02"), "2027-12-02");
        assert_eq!(one_year_from("2028-02-29"), "2029-02-28");
    }

    #[test]
    fn a_call_quota_field_is_empty_or_a_whole_number_of_at_least_one() {
        let f = Form::parse("a=&b=12&c=0&d=abc&e=-3&f=99999999999".as_bytes());
        assert_eq!(quota::<u32>(&f, "a", Lang::Zh).ok(), Some(None));
        assert_eq!(quota::<u32>(&f, "b", Lang::Zh).ok(), Some(Some(12)));
        for bad in ["c", "d", "e", "f"] {
            let e = quota::<u32>(&f, bad, Lang::En).err();
            let e = e.map(|e| (e.status, e.message));
            assert!(
                e.as_ref().is_some_and(
                    |(s, m)| *s == StatusCode::UNPROCESSABLE_ENTITY && m.contains("at least 1")
                ),
                "{bad}: {e:?}"
            );
        }
    }
}
