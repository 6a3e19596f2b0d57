//! Uploading a dataset version in the portal: a cataloguer picks a file (CSV, XLSX, JSONL or
//! Parquet for a table; any file for a 文件 resource), the node streams it into the person's
//! own directory of the exchange directory (bounded by `portal.max_upload_mib` and the disk's
//! free-space ledger), publishes it through the API's own function as that person, and removes
//! the upload. Refused cells come back as a table with the rule each breaks, and the whole
//! reject report can be downloaded.
//!
//! The body is `multipart/form-data`, streamed: the guard checks the site, and the first part
//! must be the session's CSRF token ([`UploadToken`]) before any file byte is read.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use askama::Template;
use axum::extract::{FromRequest, Multipart, Query, State};
use axum::http::StatusCode;
use axum::Extension;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use super::format;
use super::guard::{UploadToken, Viewer};
use super::page::{html_with, show, Chrome, Lang, PageError, PageResult};
use crate::catalogue::Record;
use crate::dataset::publish::{PublishError, PublishReport, PublishRequest, Reject, REPORT_DIR};
use crate::http::datasets;
use crate::http::Ctx;

/// The upload's room in the free-space ledger grows in steps of this size.
const ROOM_STEP: u64 = 16 << 20;
/// Largest text part of the upload form (the token, the code, a checkbox).
const MAX_TEXT_PART: usize = 1024;
/// Most parts an upload form has (it has four).
const MAX_PARTS: usize = 8;
/// How many refused cells a page shows (the report holds them all).
const SHOWN: usize = 20;
/// The table formats an upload may have, by extension.
const TABLE_EXTENSIONS: [&str; 6] = ["csv", "xlsx", "xlsm", "jsonl", "ndjson", "parquet"];

/// Which entry.
#[derive(Deserialize)]
pub(crate) struct Code {
    code: String,
}

/// A refused cell as a table row.
pub(crate) struct RejectRow {
    row: u64,
    item: String,
    value: String,
    rule: String,
}

impl From<Reject> for RejectRow {
    fn from(r: Reject) -> Self {
        Self {
            row: r.row,
            item: r.item,
            value: r.value,
            rule: r.rule,
        }
    }
}

/// What an upload did.
pub(crate) struct Outcome {
    /// Published (a new version) or refused.
    published: bool,
    headline: String,
    facts: Vec<(&'static str, String)>,
    rejects: Vec<RejectRow>,
    /// The reject report's file name, for the download link.
    report: Option<String>,
}

#[derive(Template)]
#[template(path = "upload.html")]
struct UploadPage {
    c: Chrome,
    title: String,
    code: String,
    entry_href: String,
    /// A table (信息项 checked) or a file.
    table: bool,
    accept: &'static str,
    max_mib: u64,
    outcome: Option<Outcome>,
    error: Option<String>,
}

fn page(
    ctx: &Ctx,
    viewer: &Viewer,
    r: &Record,
    outcome: Option<Outcome>,
    error: Option<String>,
) -> UploadPage {
    let lang = viewer.lang;
    let table = !r.entry.items.is_empty();
    UploadPage {
        c: Chrome::new(ctx, viewer, lang.t("上传数据版本", "Upload a data version")),
        title: r.entry.title.clone(),
        code: r.entry.code.to_string(),
        entry_href: super::catalogue::entry_href(r),
        table,
        accept: if table {
            ".csv,.xlsx,.xlsm,.jsonl,.ndjson,.parquet"
        } else {
            ""
        },
        max_mib: ctx.state.config.portal.max_upload_mib,
        outcome,
        error,
    }
}

/// Removes uploads a stopped node left in people's directories (at start no upload is under
/// way; an upload is otherwise removed once published or refused).
pub(crate) fn remove_leftovers(state: &crate::state::NodeState) {
    let root = crate::http::paths::exchange_dir(state);
    let Ok(people) = std::fs::read_dir(&root) else {
        return;
    };
    for dir in people.filter_map(Result::ok) {
        if !dir.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        for f in files.filter_map(Result::ok) {
            let leftover = f.file_type().is_ok_and(|t| t.is_file())
                && is_upload_name(&f.file_name().to_string_lossy());
            if leftover {
                match std::fs::remove_file(f.path()) {
                    Ok(()) => {
                        tracing::info!(path = %f.path().display(), "removed an upload left by a stopped node")
                    }
                    Err(e) => {
                        tracing::warn!(path = %f.path().display(), error = %e, "cannot remove a leftover upload")
                    }
                }
            }
        }
    }
}

/// Whether `name` is one this module gives an upload: `upload-` and 16 hex digits, then one of
/// the known extensions (a person's own file of another name is never removed).
fn is_upload_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("upload-") else {
        return false;
    };
    let Some((hex, ext)) = rest.split_once('.') else {
        return false;
    };
    hex.len() == 16
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
        && (ext == "bin" || TABLE_EXTENSIONS.contains(&ext))
}

/// `GET /upload?code=…`.
pub(crate) async fn form(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<Code>,
) -> PageResult {
    let r = super::cataloguing::own_live(&ctx, &q.code, viewer.lang)?;
    show(&page(&ctx, &viewer, &r, None, None))
}

/// The upload form's parts, read in order.
struct Parts {
    allow_rejects: bool,
    /// The stored upload (removed when dropped).
    file: Upload,
}

/// An uploaded file in the person's directory, removed when dropped (it has been published,
/// or it was refused: either way the node keeps no copy outside its store).
struct Upload {
    path: PathBuf,
    name: String,
    /// The file's name as the browser gave it (its last component, cleaned).
    given: String,
    bytes: u64,
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove an upload");
            }
        }
    }
}

/// An upload that could not be read (broken off, malformed, too large for the body limit).
fn unreadable(lang: Lang, e: impl std::fmt::Display) -> PageError {
    PageError::new(
        StatusCode::BAD_REQUEST,
        format!(
            "{} {e}",
            lang.t("上传表单无法读取：", "The upload could not be read:")
        ),
    )
}

/// A refusal of the upload itself (before anything was published).
fn bad(status: StatusCode, lang: Lang, zh: &str, en: &str) -> PageError {
    PageError::new(status, lang.t(zh, en))
}

/// The text of a small part, read in chunks and refused once longer than [`MAX_TEXT_PART`]
/// (never buffered whole: the CSRF part is read before the token is known to be good).
async fn text_part(
    mut field: axum::extract::multipart::Field<'_>,
    lang: Lang,
) -> Result<String, PageError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(|e| unreadable(lang, e))? {
        if bytes.len() + chunk.len() > MAX_TEXT_PART {
            return Err(bad(
                StatusCode::PAYLOAD_TOO_LARGE,
                lang,
                "表单字段过长。",
                "A form field is too long.",
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// The extension the upload is stored under: a table format the reader knows (by the name the
/// browser gave), or `bin` for a 文件 resource's file of another kind.
fn extension(file_name: &str, table: bool, lang: Lang) -> Result<&'static str, PageError> {
    let ext = Path::new(file_name)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match TABLE_EXTENSIONS.iter().find(|e| **e == ext) {
        Some(e) => Ok(e),
        None if !table => Ok("bin"),
        None => Err(PageError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "{file_name}: {}",
                lang.t(
                    "库表数据只接受 CSV、XLSX、JSONL 或 Parquet 文件（按扩展名识别）。",
                    "a table takes CSV, XLSX, JSONL or Parquet files (known by the extension)."
                )
            ),
        )),
    }
}

/// Streams the file part into `<exchange>/<account>/upload-….<ext>` within the size limit
/// and the free-space ledger.
async fn store_file(
    ctx: &Ctx,
    viewer: &Viewer,
    mut field: axum::extract::multipart::Field<'_>,
    table: bool,
) -> Result<Upload, PageError> {
    let lang = viewer.lang;
    let who = viewer.acting()?;
    let given = field.file_name().unwrap_or_default().to_string();
    if given.is_empty() {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            lang,
            "请选择要上传的文件。",
            "Choose a file to upload.",
        ));
    }
    let ext = extension(&given, table, lang)?;
    let name = format!("upload-{}.{ext}", hex::encode(rand::random::<[u8; 8]>()));
    let path = crate::http::paths::for_principal(ctx, &who, Path::new(&name))?;
    let limit = ctx
        .state
        .config
        .portal
        .max_upload_mib
        .saturating_mul(1 << 20);
    let mut room = ctx
        .state
        .space
        .reserve_one(&path, ROOM_STEP)
        .map_err(|e| PageError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
    // The ledger counts what is written as used already (statvfs sees it), not twice.
    let written = Arc::new(AtomicU64::new(0));
    let w = written.clone();
    room.track(move || w.load(Ordering::Relaxed));
    let file = crate::outfile::create_new(&path).map_err(PageError::internal)?;
    let mut upload = Upload {
        path,
        name,
        given: crate::dataset::publish::clean_file_name(&given),
        bytes: 0,
    };
    let mut out = tokio::fs::File::from_std(file);
    loop {
        let chunk = field.chunk().await.map_err(|e| {
            PageError::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{} {e}",
                    lang.t(
                        "上传中断或超过大小上限：",
                        "The upload broke off or is too large:"
                    )
                ),
            )
        })?;
        let Some(chunk) = chunk else { break };
        upload.bytes = upload.bytes.saturating_add(chunk.len() as u64);
        if upload.bytes > limit {
            return Err(PageError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} {} MiB{}",
                    lang.t("文件超过门户的上传上限", "The file is larger than the portal's limit of"),
                    limit >> 20,
                    lang.t(
                        "（portal.max_upload_mib）。更大的文件请在节点上用 huitong dataset publish 发布。",
                        " (portal.max_upload_mib). Publish larger files on the node with `huitong dataset publish`."
                    )
                ),
            ));
        }
        if upload.bytes > room.bytes() {
            room.grow_to(upload.bytes.saturating_add(ROOM_STEP))
                .map_err(|e| PageError::new(StatusCode::INSUFFICIENT_STORAGE, e.to_string()))?;
        }
        out.write_all(&chunk).await.map_err(PageError::internal)?;
        written.store(upload.bytes, Ordering::Relaxed);
    }
    out.flush().await.map_err(PageError::internal)?;
    Ok(upload)
}

/// Reads the form's parts: the CSRF token first, then the code and the checkbox, then the file.
async fn read_parts(
    ctx: &Ctx,
    viewer: &Viewer,
    token: &str,
    mut multipart: Multipart,
) -> Result<(Record, Parts), PageError> {
    let lang = viewer.lang;
    let broken = |e: axum::extract::multipart::MultipartError| unreadable(lang, e);
    let expired = || {
        bad(
            StatusCode::FORBIDDEN,
            lang,
            "表单已过期或来自其他网站，已拒绝。请刷新页面后重试。",
            "The form expired or came from another site, so it was refused. Reload the page and try again.",
        )
    };
    // The token comes first, so nothing is read from a forged upload.
    let first = multipart.next_field().await.map_err(broken)?;
    let Some(first) = first else {
        return Err(expired());
    };
    if first.name() != Some(super::guard::CSRF_FIELD) {
        return Err(expired());
    }
    if !super::guard::same_token(&text_part(first, lang).await?, token) {
        return Err(expired());
    }
    let mut code = String::new();
    let mut allow_rejects = false;
    let mut stored = None;
    let mut parts = 1;
    while let Some(field) = multipart.next_field().await.map_err(broken)? {
        parts += 1;
        if parts > MAX_PARTS {
            return Err(bad(
                StatusCode::PAYLOAD_TOO_LARGE,
                lang,
                "上传表单的字段过多。",
                "The upload form has too many fields.",
            ));
        }
        match field.name() {
            Some("code") => code = text_part(field, lang).await?,
            Some("allow_rejects") => allow_rejects = !text_part(field, lang).await?.is_empty(),
            Some("file") if stored.is_none() => {
                // The code names the entry, which says whether the file is a table.
                let r = super::cataloguing::own_live(ctx, &code, lang)?;
                let file = store_file(ctx, viewer, field, !r.entry.items.is_empty()).await?;
                stored = Some((r, file));
            }
            _ => {
                text_part(field, lang).await?;
            }
        }
    }
    let Some((r, file)) = stored else {
        return Err(bad(
            StatusCode::BAD_REQUEST,
            lang,
            "请选择要上传的文件。",
            "Choose a file to upload.",
        ));
    };
    Ok((
        r,
        Parts {
            allow_rejects,
            file,
        },
    ))
}

/// `POST /upload`: stores the file, publishes it, and shows what happened.
pub(crate) async fn receive(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    token: Option<Extension<UploadToken>>,
    req: axum::extract::Request,
) -> PageResult {
    let lang = viewer.lang;
    let Some(Extension(UploadToken(token))) = token else {
        return Err(bad(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            lang,
            "上传须以文件表单（multipart/form-data）提交。",
            "An upload is sent as a file form (multipart/form-data).",
        ));
    };
    let multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| unreadable(lang, e))?;
    let (r, parts) = read_parts(&ctx, &viewer, &token, multipart).await?;
    let who = viewer.acting()?;
    let req = PublishRequest {
        code: r.entry.code.to_string(),
        path: PathBuf::from(&parts.file.name),
        file: r.entry.items.is_empty(),
        allow_rejects: parts.allow_rejects,
        path_seen: None,
        file_name: Some(parts.file.given.clone()),
    };
    let size = parts.file.bytes;
    // Its own task: a browser that leaves mid-publish does not cancel the announcement.
    let published = {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let out = datasets::publish_version(&ctx, &who, req).await;
            drop(parts);
            out
        })
        .await
        .map_err(PageError::internal)??
    };
    match published {
        Ok(report) => show(&page(
            &ctx,
            &viewer,
            &r,
            Some(published_outcome(&ctx, lang, size, report)),
            None,
        )),
        Err(PublishError::Rejected {
            count,
            cells,
            first,
            report,
        }) => {
            let outcome = Outcome {
                published: false,
                headline: format!(
                    "{} {count} {} {cells} {}",
                    lang.t("未发布：", "Nothing was published:"),
                    lang.t("行、", "row(s) and"),
                    lang.t(
                        "个单元格不符合信息项规则。请修正后重新上传，或勾选“发布其余行”。",
                        "cell(s) break the 信息项 rules. Fix them and upload again, or tick \"publish the other rows\"."
                    )
                ),
                facts: Vec::new(),
                rejects: first.into_iter().map(RejectRow::from).collect(),
                report: report.as_deref().and_then(report_name),
            };
            Ok(html_with(
                &page(&ctx, &viewer, &r, Some(outcome), None),
                StatusCode::UNPROCESSABLE_ENTITY,
            ))
        }
        Err(e) => {
            let f = datasets::publish_error(e);
            if f.0.is_server_error() {
                return Err(PageError::from(f));
            }
            Ok(html_with(
                &page(&ctx, &viewer, &r, None, Some(f.1.error)),
                f.0,
            ))
        }
    }
}

/// The outcome of a published upload, with the first refused cells from its report.
fn published_outcome(ctx: &Ctx, lang: Lang, size: u64, report: PublishReport) -> Outcome {
    let mut facts = vec![
        (lang.t("版本", "Version"), format!("v{}", report.version)),
        (lang.t("上传大小", "Uploaded"), format::size(size)),
        (lang.t("数据大小", "Data"), format::size(report.bytes)),
        (
            lang.t("新增存储", "New in the store"),
            format::size(report.new_bytes),
        ),
        (lang.t("清单哈希", "Manifest hash"), report.manifest.clone()),
    ];
    if let Some(rows) = report.rows {
        facts.insert(
            1,
            (lang.t("发布行数", "Rows published"), format::number(rows)),
        );
    }
    if report.rejected_rows > 0 {
        facts.push((
            lang.t("拒收", "Refused"),
            format!(
                "{} {} · {} {}",
                format::number(report.rejected_rows),
                lang.t("行", "row(s)"),
                format::number(report.rejected_cells),
                lang.t("个单元格", "cell(s)")
            ),
        ));
    }
    let name = report.report.as_deref().and_then(report_name);
    let rejects = name
        .as_deref()
        .map(|n| first_rejects(&ctx.state.dir.join(REPORT_DIR).join(n)))
        .unwrap_or_default();
    Outcome {
        published: true,
        headline: format!(
            "{} v{}",
            lang.t("已发布数据版本", "Published data version"),
            report.version
        ),
        facts,
        rejects,
        report: name,
    }
}

/// The report's file name (reports live in `<node dir>/rejects/`).
fn report_name(path: &Path) -> Option<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_string)
}

/// The first [`SHOWN`] refused cells of a report (fewer when it cannot be read).
fn first_rejects(path: &Path) -> Vec<RejectRow> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    BufReader::new(std::io::Read::take(file, 1 << 20))
        .lines()
        .map_while(Result::ok)
        .take(SHOWN)
        .filter_map(|l| serde_json::from_str::<Reject>(&l).ok())
        .map(RejectRow::from)
        .collect()
}

/// Which report.
#[derive(Deserialize)]
pub(crate) struct Name {
    name: String,
}

/// Whether `name` is a report's file name as the publish makes it (no path, no link tricks).
fn is_report_name(name: &str) -> bool {
    name.ends_with(".jsonl")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

/// `GET /upload/report?name=…`: a reject report, as a download.
pub(crate) async fn report(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<Name>,
) -> PageResult {
    let lang = viewer.lang;
    let missing = || {
        bad(
            StatusCode::NOT_FOUND,
            lang,
            "没有这个拒收报告（报告只保留最近 32 份）。",
            "No such reject report (the newest 32 are kept).",
        )
    };
    if !is_report_name(&q.name) {
        return Err(missing());
    }
    let path = ctx.state.dir.join(REPORT_DIR).join(&q.name);
    let file = match tokio::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .await
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(missing()),
        Err(e) => return Err(PageError::internal(e)),
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(super::page::download(
        body,
        "application/x-ndjson; charset=utf-8",
        &q.name,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_report_names_are_served() {
        assert!(is_report_name("301001-000061-1764670000000.jsonl"));
        for bad in ["../x.jsonl", ".x.jsonl", "a/b.jsonl", "x.txt", "x.jsonl\0"] {
            assert!(!is_report_name(bad), "{bad}");
        }
    }

    #[test]
    fn only_generated_upload_names_are_leftovers() {
        assert!(is_upload_name("upload-0123456789abcdef.csv"));
        assert!(!is_upload_name("upload-report.csv"));
        assert!(!is_upload_name("upload-0123456789abcdef.exe"));
    }

    #[test]
    fn a_table_takes_known_formats_only() {
        assert_eq!(extension("人口.CSV", true, Lang::Zh).ok(), Some("csv"));
        assert_eq!(extension("a.parquet", true, Lang::Zh).ok(), Some("parquet"));
        assert!(extension("a.pdf", true, Lang::Zh).is_err());
        assert_eq!(extension("a.pdf", false, Lang::Zh).ok(), Some("bin"));
    }
}
