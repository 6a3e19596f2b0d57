//! Pulls in the portal: start one from an entry page (into the person's own directory of the
//! exchange directory), watch its progress live (server-sent events, a page that refreshes
//! without script), see the receipt, and download the result. A person sees and downloads only
//! the pulls they started.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Json};

use super::form::Form;
use super::format;
use super::guard::Viewer;
use super::page::{show, Chrome, Lang, PageError, PageResult};
use crate::dataset::export::OutFormat;
use crate::http::datasets as api;
use crate::http::Ctx;
use crate::transfer::pull::{JobView, Phase, PullRequest};

/// How often a live page hears of a pull's progress.
const TICK: Duration = Duration::from_millis(500);
/// Longest a progress stream stays open (the browser reconnects if the pull goes on).
const MAX_STREAM: Duration = Duration::from_secs(10 * 60);

/// The form's `format` (CSV when empty) for a pull or a subscription.
pub(super) fn out_format(form: &Form, lang: Lang) -> Result<OutFormat, PageError> {
    Ok(match form.get("format") {
        "" | "csv" => OutFormat::Csv,
        "jsonl" => OutFormat::Jsonl,
        "parquet" => OutFormat::Parquet,
        other => {
            return Err(PageError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("{} {other:?}", lang.t("不支持的格式：", "Unknown format:")),
            ))
        }
    })
}

/// `POST /pulls`: code, provider, format, grant (application id) from the entry page.
pub(crate) async fn start(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let lang = viewer.lang;
    let format = out_format(&form, lang)?;
    let code = form.get("code").to_string();
    if code.is_empty() {
        return Err(PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            lang.t(
                "没有指定资源代码：请从资源页开始拉取。",
                "No resource code: start a pull from an entry page.",
            ),
        ));
    }
    let name = format!(
        "{}-{}.{}",
        code.replace('/', "-"),
        crate::state::now_ms(),
        format.as_str()
    );
    let req = PullRequest {
        code,
        provider: Some(form.get("provider").to_string()).filter(|p| !p.is_empty()),
        version: None,
        fields: None,
        out: name.into(),
        format,
        grant: Some(form.get("grant").to_string()).filter(|g| !g.is_empty()),
        token: None,
        part: Default::default(),
        changes_from: None,
        out_dir_seen: None,
        started_by: None,
        own_grant_only: false,
    };
    let Json(started) = api::start_pull(State(ctx), Extension(viewer.acting()?), Json(req)).await?;
    Ok(Redirect::to(&format!("/pulls/{}", started.id)).into_response())
}

/// A pull as a page shows it.
pub(crate) struct PullRow {
    id: u64,
    code: String,
    phase: String,
    phase_class: &'static str,
    done: u64,
    total: u64,
    text: String,
    started: String,
    finished: bool,
    ok: bool,
}

fn phase_text(p: Phase, lang: Lang) -> String {
    let zh = match p {
        Phase::Connecting => "连接中",
        Phase::Verifying => "校验已有数据",
        Phase::Fetching => "拉取中",
        Phase::Writing => "写出文件",
        Phase::Done => "已完成",
        Phase::Failed => "失败",
        Phase::Cancelled => "已取消",
    };
    lang.t(zh, p.as_str()).to_string()
}

fn progress_text(v: &JobView, lang: Lang) -> String {
    format!(
        "{} · {} / {} · {} {}",
        phase_text(v.phase, lang),
        format::size(v.bytes_done),
        format::size(v.bytes_total),
        format::number(v.elapsed_ms / 1000),
        lang.t("秒", "s")
    )
}

fn pull_row(ctx: &Ctx, v: &JobView, lang: Lang) -> PullRow {
    PullRow {
        id: v.id,
        code: v.code.clone(),
        phase: phase_text(v.phase, lang),
        phase_class: match v.phase {
            Phase::Done => "ok",
            Phase::Failed | Phase::Cancelled => "off",
            _ => "warn",
        },
        done: v.bytes_done,
        total: v.bytes_total.max(1),
        text: progress_text(v, lang),
        started: format::time(ctx.state.timezone(), v.started_at_ms),
        finished: v.phase.finished(),
        ok: v.phase == Phase::Done,
    }
}

#[derive(Template)]
#[template(path = "pulls.html")]
struct ListPage {
    c: Chrome,
    pulls: Vec<PullRow>,
}

/// `GET /pulls`: this person's pulls.
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let lang = viewer.lang;
    let Json(mut all) = api::list_pulls(State(ctx.clone()), Extension(viewer.acting()?)).await?;
    all.sort_by_key(|v| std::cmp::Reverse(v.id));
    show(&ListPage {
        c: Chrome::new(&ctx, &viewer, lang.t("数据拉取", "Pulls")),
        pulls: all.iter().map(|v| pull_row(&ctx, v, lang)).collect(),
    })
}

#[derive(Template)]
#[template(path = "pull.html")]
struct PullPage {
    c: Chrome,
    p: PullRow,
    file: String,
    summary: Vec<(&'static str, String)>,
    receipt: Option<String>,
    error: Option<String>,
}

async fn owned(ctx: &Ctx, viewer: &Viewer, id: u64) -> Result<JobView, PageError> {
    let Json(v) =
        api::pull_progress(State(ctx.clone()), Extension(viewer.acting()?), Path(id)).await?;
    Ok(v)
}

/// `GET /pulls/{id}`.
pub(crate) async fn show_pull(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<u64>,
) -> PageResult {
    let lang = viewer.lang;
    let v = owned(&ctx, &viewer, id).await?;
    let summary = v
        .summary
        .as_ref()
        .map(|s| {
            vec![
                (lang.t("资源代码", "Code"), s.code.clone()),
                (lang.t("提供方", "Provider"), s.provider.clone()),
                (lang.t("版本", "Version"), format!("v{}", s.version)),
                (
                    lang.t("行数", "Rows"),
                    s.rows.map_or_else(|| "—".into(), format::number),
                ),
                (lang.t("信息项", "Items"), s.fields.join("、")),
                (
                    lang.t("未提供的信息项", "Items withheld"),
                    if s.withheld.is_empty() {
                        "—".into()
                    } else {
                        s.withheld.join("、")
                    },
                ),
                (
                    lang.t("文件大小", "File size"),
                    format::size(s.bytes_written),
                ),
                (lang.t("网络传输", "Fetched"), format::size(s.bytes_fetched)),
                (lang.t("路径", "Route"), s.route.clone()),
            ]
        })
        .unwrap_or_default();
    let receipt = v.summary.as_ref().and_then(|s| {
        s.receipt
            .clone()
            .or_else(|| s.receipt_error.as_ref().map(|e| format!("✗ {e}")))
    });
    show(&PullPage {
        c: Chrome::new(&ctx, &viewer, lang.t("拉取", "Pull")),
        file: v
            .out
            .file_name()
            .map(|f| f.to_string_lossy().to_string())
            .unwrap_or_default(),
        p: pull_row(&ctx, &v, lang),
        summary,
        receipt,
        error: v.error.clone(),
    })
}

/// `GET /pulls/{id}/events`: `progress` events while the pull runs, then `end`.
pub(crate) async fn events(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<u64>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    owned(&ctx, &viewer, id).await?;
    let token = match viewer.acting()? {
        crate::http::authz::Principal::Person { token, .. } => token,
        crate::http::authz::Principal::Node => String::new(),
    };
    let started = tokio::time::Instant::now();
    let stream = futures::stream::unfold(false, move |ended| {
        let ctx = ctx.clone();
        let token = token.clone();
        async move {
            if ended || started.elapsed() > MAX_STREAM {
                return None;
            }
            tokio::time::sleep(TICK).await;
            // The session is checked on every tick: the stream ends with it (sign-out, a
            // disabled account, a changed password).
            let who = crate::http::authz::person(&ctx, &token)
                .await
                .ok()
                .flatten()?;
            let view = api::pull_progress(State(ctx), Extension(who), Path(id))
                .await
                .ok()
                .map(|Json(v)| v);
            let Some(v) = view else {
                return Some((
                    Ok::<_, Infallible>(Event::default().event("end").data("gone")),
                    true,
                ));
            };
            if v.phase.finished() {
                return Some((
                    Ok(Event::default().event("end").data(v.phase.as_str())),
                    true,
                ));
            }
            let data = serde_json::json!({
                "done": v.bytes_done,
                "total": v.bytes_total,
                "text": progress_text(&v, lang),
            });
            Some((
                Ok(Event::default().event("progress").data(data.to_string())),
                false,
            ))
        }
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /pulls/{id}/download`: the finished pull's file, as an attachment.
pub(crate) async fn download(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Path(id): Path<u64>,
) -> PageResult {
    let lang = viewer.lang;
    let v = owned(&ctx, &viewer, id).await?;
    let Some(account) = viewer.account() else {
        return Err(PageError::new(
            StatusCode::UNAUTHORIZED,
            lang.t("请先登录。", "Sign in first."),
        ));
    };
    if v.phase != Phase::Done {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            lang.t(
                "拉取尚未完成，完成后才能下载。",
                "The pull has not finished; download it once it has.",
            ),
        ));
    }
    // Only files in the person's own directory (where their pulls are written).
    let own = crate::http::paths::exchange_dir(&ctx.state).join(&account.name);
    if v.out.parent() != Some(own.as_path()) {
        return Err(PageError::new(
            StatusCode::FORBIDDEN,
            lang.t(
                "该文件不在您的交换目录中。",
                "That file is not in your exchange directory.",
            ),
        ));
    }
    let file = tokio::fs::File::open(&v.out).await.map_err(|e| {
        PageError::new(
            StatusCode::GONE,
            format!(
                "{} {}: {e}",
                lang.t("文件已不在：", "The file is gone:"),
                v.out.display()
            ),
        )
    })?;
    let len = file.metadata().await.map_err(PageError::internal)?.len();
    let name = v
        .out
        .file_name()
        .map(|f| f.to_string_lossy().to_string())
        .unwrap_or_else(|| "pull".into());
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    // The name is the node's own (code, time, extension): ASCII.
    let mut r = super::page::download(body, "application/octet-stream", &name);
    let h = r.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
