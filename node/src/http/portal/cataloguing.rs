//! Cataloguing in the portal (目录编制): this node's entries with their latest versions, the
//! entry form (new, or editing one of this node's entries) checked by the CLI's validator with
//! every problem shown beside its field, and withdrawing an entry with its reason. Saving and
//! withdrawing go through the API's own functions as the signed-in cataloguer, so the signed
//! entry names the person.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Extension;
use serde::Deserialize;

use super::entry_form::{choices, Choice, EntryInput, ItemInput, BLANK_ROWS, FIELDS};
use super::form::Form;
use super::format;
use super::guard::{encode, Viewer};
use super::page::{html_with, show, Chrome, Lang, PageError, PageResult};
use crate::catalogue::{self, Filter, Record};
use crate::http::entries as api;
use crate::http::Ctx;

/// A row of the list of this node's entries.
pub(crate) struct OwnRow {
    title: String,
    code: String,
    href: String,
    share: &'static str,
    version: String,
    withdrawn: bool,
}

#[derive(Template)]
#[template(path = "cataloguing.html")]
struct ListPage {
    c: Chrome,
    rows: Vec<OwnRow>,
}

/// This node's entries (withdrawn ones too), newest first.
fn own_records(ctx: &Ctx) -> Result<Vec<Record>, PageError> {
    let me = ctx.state.id();
    let mut rows: Vec<Record> = catalogue::list(
        &ctx.state.store,
        &Filter {
            provider: Some(ctx.state.config.node.org_code.clone()),
            include_withdrawn: true,
            ..Filter::default()
        },
    )
    .map_err(PageError::internal)?
    .into_iter()
    .filter(|r| r.feed == me)
    .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.updated_ms));
    Ok(rows)
}

/// `GET /cataloguing`.
pub(crate) async fn list(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let lang = viewer.lang;
    let tz = ctx.state.timezone();
    let rows = own_records(&ctx)?
        .into_iter()
        .map(|r| OwnRow {
            href: super::catalogue::entry_href(&r),
            title: r.entry.title.clone(),
            code: r.entry.code.to_string(),
            share: if lang.en() {
                r.entry.share_type.key()
            } else {
                r.entry.share_type.label()
            },
            version: r.dataset.as_ref().map_or_else(
                || "—".into(),
                |d| format!("v{} · {}", d.version, format::time(tz, d.created_at_ms)),
            ),
            withdrawn: r.withdrawn.is_some(),
        })
        .collect();
    show(&ListPage {
        c: Chrome::new(&ctx, &viewer, lang.t("目录编制", "Cataloguing")),
        rows,
    })
}

/// A field of the entry form.
pub(crate) struct FieldView {
    /// The form name (the validator's path).
    name: &'static str,
    /// The element id.
    id: String,
    label: &'static str,
    hint: &'static str,
    /// `text`, `area`, `select`, `date` or `fixed` (shown, not editable).
    kind: &'static str,
    value: String,
    choices: Vec<Choice>,
    error: Option<String>,
}

/// A 信息项 row of the entry form.
pub(crate) struct RowView {
    n: usize,
    name: String,
    data_type: Vec<Choice>,
    length: String,
    share_type: Vec<Choice>,
    open_type: Vec<Choice>,
    /// The problems of this row, each naming its column.
    errors: Vec<String>,
    /// The columns with a problem.
    bad: Vec<&'static str>,
}

impl RowView {
    /// Whether `column` has a problem (askama calls it).
    fn is_bad(&self, column: &str) -> bool {
        self.bad.contains(&column)
    }
}

#[derive(Template)]
#[template(path = "entry_form.html")]
struct FormPage {
    c: Chrome,
    /// Editing an existing entry (its code is fixed).
    editing: bool,
    fields: Vec<FieldView>,
    rows: Vec<RowView>,
    /// Problems not of one field, and the count line.
    summary: Vec<(String, String)>,
    general: Vec<String>,
    /// The feed position of the entry being edited ("" for a new one).
    seen: String,
}

/// The label and hint of a field.
fn label(field: &str, lang: Lang) -> (&'static str, &'static str) {
    let (zh, en, hzh, hen) = match field {
        "classification" => (
            "信息资源分类",
            "Classification",
            "6 位以上数字，首位 1 基础、2 主题、3 部门，如 301001",
            "6 or more digits, first 1 base, 2 thematic, 3 departmental, e.g. 301001",
        ),
        "code" => (
            "信息资源代码",
            "Code",
            "分类代码/6 位顺序号，如 301001/000001",
            "classification/6-digit number, e.g. 301001/000001",
        ),
        "title" => ("信息资源名称", "Title", "", ""),
        "provider_name" => ("信息资源提供方", "Provider", "", ""),
        "provider_code" => ("提供方代码", "Provider code", "", ""),
        "abstract" => ("信息资源摘要", "Summary", "", ""),
        "format.category" => ("信息资源格式分类", "Format category", "", ""),
        "format.type" => (
            "信息资源格式类型",
            "Format type",
            "如 mysql、xlsx、pdf",
            "e.g. mysql, xlsx, pdf",
        ),
        "share_type" => ("共享类型", "Share type", "", ""),
        "share_condition" => (
            "共享条件",
            "Share condition",
            "有条件共享、不予共享时必填（不予共享须写明依据）",
            "required for conditional and not shared (the basis)",
        ),
        "share_mode" => ("共享方式", "Share mode", "", ""),
        "open_type" => ("开放属性", "Open type", "", ""),
        "open_condition" => (
            "开放条件",
            "Open condition",
            "有条件开放时必填",
            "required for conditional opening",
        ),
        "update_cycle" => ("更新周期", "Update cycle", "", ""),
        "publish_date" => ("发布日期", "Published", "", ""),
        "related_codes" => (
            "关联资源代码",
            "Related codes",
            "多个以逗号分隔",
            "separate several with commas",
        ),
        _ => ("", "", "", ""),
    };
    (lang.t(zh, en), lang.t(hzh, hen))
}

/// The form page for `input`, with the problems placed by field.
fn form_page(
    ctx: &Ctx,
    viewer: &Viewer,
    input: &EntryInput,
    editing: bool,
    placed: &std::collections::BTreeMap<String, Vec<String>>,
) -> FormPage {
    let lang = viewer.lang;
    let fields = FIELDS
        .iter()
        .map(|&name| {
            let (l, hint) = label(name, lang);
            let value = input.get(name).to_string();
            let choices = choices(name, &value, lang, false);
            let kind = match name {
                "provider_name" | "provider_code" => "fixed",
                "code" if editing => "fixed",
                "abstract" | "share_condition" | "open_condition" => "area",
                "publish_date" => "date",
                _ if choices.is_some() => "select",
                _ => "text",
            };
            FieldView {
                name,
                id: format!("f-{}", name.replace('.', "-")),
                label: l,
                hint,
                kind,
                value,
                choices: choices.unwrap_or_default(),
                error: placed.get(name).map(|m| m.join("；")),
            }
        })
        .collect::<Vec<_>>();
    let rows = input
        .items
        .iter()
        .enumerate()
        .map(|(n, i)| {
            let mut errors = Vec::new();
            let mut bad = Vec::new();
            for (col, zh, en) in [
                ("name", "名称", "name"),
                ("data_type", "数据类型", "type"),
                ("length", "长度", "length"),
                ("share_type", "共享类型", "share type"),
                ("open_type", "开放属性", "open type"),
            ] {
                if let Some(m) = placed.get(&format!("items[{n}].{col}")) {
                    bad.push(col);
                    errors.push(format!("{}：{}", lang.t(zh, en), m.join("；")));
                }
            }
            if let Some(m) = placed.get(&format!("items[{n}]")) {
                errors.extend(m.iter().cloned());
            }
            RowView {
                n,
                name: i.name.clone(),
                data_type: choices("data_type", &i.data_type, lang, false).unwrap_or_default(),
                length: i.length.clone(),
                share_type: choices("share_type", &i.share_type, lang, true).unwrap_or_default(),
                open_type: choices("open_type", &i.open_type, lang, true).unwrap_or_default(),
                errors,
                bad,
            }
        })
        .collect();
    // The summary links each problem to its field, in the form's order.
    let mut summary = Vec::new();
    for f in &fields {
        if let Some(e) = &f.error {
            summary.push((format!("#{}", f.id), format!("{}：{e}", f.label)));
        }
    }
    for (n, _) in input.items.iter().enumerate() {
        for (k, m) in placed.range(format!("items[{n}]")..format!("items[{n}]~")) {
            if k.starts_with(&format!("items[{n}]")) {
                summary.push((
                    format!("#row-{n}"),
                    format!(
                        "{} {}{}：{}",
                        lang.t("信息项第", "Item row"),
                        n + 1,
                        lang.t(" 行", ""),
                        m.join("；")
                    ),
                ));
            }
        }
    }
    let general: Vec<String> = ["entry", "items"]
        .iter()
        .filter_map(|k| placed.get(*k))
        .flatten()
        .cloned()
        .collect();
    let title = if editing {
        lang.t("编辑目录", "Edit the entry")
    } else {
        lang.t("新建目录", "New entry")
    };
    FormPage {
        c: Chrome::new(ctx, viewer, title),
        editing,
        fields,
        rows,
        summary,
        general,
        seen: input.seen.map(|s| s.to_string()).unwrap_or_default(),
    }
}

/// A blank form: this node as provider, today's date, blank 信息项 rows.
fn blank(ctx: &Ctx) -> EntryInput {
    let mut input = EntryInput::default();
    let node = &ctx.state.config.node;
    input.fields.insert("provider_name", node.name.clone());
    input.fields.insert("provider_code", node.org_code.clone());
    input.fields.insert("publish_date", ctx.state.today());
    input
}

/// Adds [`BLANK_ROWS`] blank 信息项 rows.
fn with_blank_rows(mut input: EntryInput) -> EntryInput {
    input
        .items
        .extend(std::iter::repeat_n(ItemInput::default(), BLANK_ROWS));
    input
}

/// `GET /catalogue/new`.
pub(crate) async fn new_entry(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let input = with_blank_rows(with_blank_rows(blank(&ctx)));
    show(&form_page(
        &ctx,
        &viewer,
        &input,
        false,
        &Default::default(),
    ))
}

/// Which of this node's entries.
#[derive(Deserialize)]
pub(crate) struct Code {
    code: String,
}

/// This node's entry `code`, or a 404 that says so.
pub(crate) fn own(ctx: &Ctx, code: &str, lang: Lang) -> Result<Record, PageError> {
    let me = ctx.state.id();
    catalogue::get(&ctx.state.store, code)
        .map_err(PageError::internal)?
        .into_iter()
        .find(|r| r.feed == me)
        .ok_or_else(|| {
            PageError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "{} {code}",
                    lang.t(
                        "本节点没有这个目录（只能编辑本部门的目录）：",
                        "This node has no entry (only this department's entries can be edited):"
                    )
                ),
            )
        })
}

/// This node's live (not withdrawn) entry `code`.
pub(crate) fn own_live(ctx: &Ctx, code: &str, lang: Lang) -> Result<Record, PageError> {
    let r = own(ctx, code, lang)?;
    if r.withdrawn.is_some() {
        return Err(PageError::new(
            StatusCode::CONFLICT,
            format!(
                "{} {code}",
                lang.t(
                    "该目录已下架，不能再编辑或上传数据：",
                    "The entry is withdrawn; it can no longer be edited or given data:"
                )
            ),
        ));
    }
    Ok(r)
}

/// `GET /catalogue/edit?code=…`.
pub(crate) async fn edit_entry(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<Code>,
) -> PageResult {
    let r = own_live(&ctx, &q.code, viewer.lang)?;
    let mut input = with_blank_rows(EntryInput::from_entry(&r.entry));
    input.seen = Some(r.seq);
    show(&form_page(&ctx, &viewer, &input, true, &Default::default()))
}

/// Held by a portal save from its checks to its publish.
static SAVING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// `POST /catalogue/save`: "more rows" shows the form again with blank rows; otherwise the entry
/// is checked and published (or updated), and a refused one comes back with its problems.
pub(crate) async fn save(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let lang = viewer.lang;
    let editing = form.get("editing") == "1";
    let mut input = EntryInput::from_form(&form);
    // The provider is always this node; an edited entry keeps its code.
    let node = &ctx.state.config.node;
    input.fields.insert("provider_name", node.name.clone());
    input.fields.insert("provider_code", node.org_code.clone());
    // The portal's saves one at a time, from the checks below to the publish, so two people
    // saving the same entry at once cannot both pass the check.
    let _saving = SAVING.lock().await;
    if editing {
        // Saved over the version the person opened only: another save since then is not
        // overwritten unseen.
        let r = own_live(&ctx, input.get("code"), lang)?;
        if input.seen != Some(r.seq) {
            return Err(PageError::new(
                StatusCode::CONFLICT,
                lang.t(
                    "该目录在您打开编辑后已被修改（其他人或其他窗口保存过）。请重新打开编辑页，核对后再保存。",
                    "The entry changed after you opened it (someone, or another window, saved it). Open the edit page again and check before saving.",
                ),
            ));
        }
    } else if let Ok(r) = own(&ctx, input.get("code"), lang) {
        // A new entry never replaces one of this node's entries (live or withdrawn).
        let mut placed = std::collections::BTreeMap::new();
        placed.insert(
            "code".to_string(),
            vec![format!(
                "{} {}",
                lang.t(
                    "本部门已有使用此代码的目录，请换一个顺序号，或在目录编制页编辑它：",
                    "This department already has an entry with this code; choose another number, or edit it from the Cataloguing page:"
                ),
                r.entry.title
            )],
        );
        return Ok(html_with(
            &form_page(&ctx, &viewer, &input, false, &placed),
            StatusCode::CONFLICT,
        ));
    }
    if !form.get("more").is_empty() {
        let input = with_blank_rows(input);
        return show(&form_page(
            &ctx,
            &viewer,
            &input,
            editing,
            &Default::default(),
        ));
    }
    let refused = |problems: Vec<huitong_protocol::FieldError>| {
        let placed = input.place(&problems);
        Ok(html_with(
            &form_page(&ctx, &viewer, &input, editing, &placed),
            StatusCode::UNPROCESSABLE_ENTITY,
        ))
    };
    let (raw, problems) = input.to_raw();
    if !problems.is_empty() {
        // The form's own problems first, then the validator's over the rest.
        let mut all = problems;
        if let Err(e) = raw.validate() {
            all.extend(e.0);
        }
        return refused(all);
    }
    let who = viewer.acting()?;
    match api::publish_entry(&ctx, &who, &raw).await {
        Ok(p) => {
            let to = format!(
                "/entry?code={}&provider={}&done={}",
                encode(&p.code),
                encode(&node.org_code),
                p.event
            );
            Ok(Redirect::to(&to).into_response())
        }
        Err(f) if !f.1.details.is_empty() => refused(f.1.details),
        Err(f) => Err(f.into()),
    }
}

/// `POST /catalogue/withdraw`: withdraws one of this node's entries with the reason given.
pub(crate) async fn withdraw(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
) -> PageResult {
    let lang = viewer.lang;
    let code = form.get("code").to_string();
    own(&ctx, &code, lang)?;
    let reason = form.get("reason").to_string();
    if reason.is_empty() {
        return Err(PageError::new(
            StatusCode::BAD_REQUEST,
            lang.t(
                "请填写下架原因后再提交。",
                "Give the reason for withdrawing, then submit again.",
            ),
        ));
    }
    let who = viewer.acting()?;
    api::withdraw_entry(&ctx, &who, crate::api::Withdraw { code, reason })
        .await
        .map_err(PageError::from)?;
    let to = format!(
        "/entry?code={}&provider={}&done=withdrawn",
        encode(form.get("code")),
        encode(&ctx.state.config.node.org_code)
    );
    Ok(Redirect::to(&to).into_response())
}
