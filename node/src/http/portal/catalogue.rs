//! The home page, the catalogue with facets (部门, 资源分类, 共享类型, 开放属性, 更新周期, 资源格式)
//! and paging, and the entry page (the 16 core fields, 信息项, versions, provenance).

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::Extension;
use huitong_protocol::catalogue::{ShareMode, ShareType};
use serde::Deserialize;

use super::format;
use super::guard::{encode, Viewer};
use super::page::{show, Chrome, PageError, PageResult};
use crate::catalogue::search::{facet_value, SearchQuery, FACETS};
use crate::catalogue::{self, Filter, Record};
use crate::http::Ctx;

/// Results on one page of the catalogue.
const PER_PAGE: usize = 20;

/// The three top classes of GB/T 21063.4 (the first digit of the classification).
const CLASSES: [(&str, &str, &str); 3] = [
    ("1", "基础信息资源（基础库）", "Base resources"),
    ("2", "主题信息资源（主题库）", "Thematic resources"),
    ("3", "部门信息资源", "Departmental resources"),
];

/// A catalogue query: text and the facets picked.
#[derive(Clone, Debug, Default, Deserialize)]
pub(crate) struct CatalogueQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    dept: String,
    #[serde(default)]
    class: String,
    #[serde(default)]
    share: String,
    #[serde(default)]
    open: String,
    #[serde(default)]
    cycle: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    page: usize,
}

impl CatalogueQuery {
    fn picked(&self, facet: &str) -> &str {
        match facet {
            "dept" => &self.dept,
            "class" => &self.class,
            "share" => &self.share,
            "open" => &self.open,
            "cycle" => &self.cycle,
            "format" => &self.format,
            _ => "",
        }
    }

    /// The link to this query with `facet` set to `value` ("" clears it), back on page 1.
    fn with(&self, facet: &str, value: &str) -> String {
        let mut parts = Vec::new();
        if !self.q.is_empty() {
            parts.push(format!("q={}", encode(&self.q)));
        }
        for f in FACETS {
            let v = if f == facet { value } else { self.picked(f) };
            if !v.is_empty() {
                parts.push(format!("{f}={}", encode(v)));
            }
        }
        if !self.sort.is_empty() {
            parts.push(format!("sort={}", encode(&self.sort)));
        }
        format!("/catalogue?{}", parts.join("&"))
    }
}

/// The label of a facet value.
fn label_of(ctx: &Ctx, facet: &str, value: &str, en: bool) -> String {
    use huitong_protocol::catalogue::{FormatCategory, OpenType, UpdateCycle};
    let pick = |zh: &str, key: &str| if en { key.to_string() } else { zh.to_string() };
    match facet {
        // The charter's name of the member with that USCC.
        "dept" => ctx.state.with_charter(|c| {
            c.and_then(|c| c.members.iter().find(|m| m.uscc.as_str() == value))
                .map_or_else(|| value.to_string(), |m| m.name.clone())
        }),
        "class" => CLASSES
            .iter()
            .find(|(k, _, _)| *k == value)
            .map_or_else(|| value.to_string(), |(_, zh, e)| pick(zh, e)),
        "share" => ShareType::parse(value).map_or_else(String::new, |v| pick(v.label(), v.key())),
        "open" => OpenType::parse(value).map_or_else(String::new, |v| pick(v.label(), v.key())),
        "cycle" => UpdateCycle::parse(value).map_or_else(String::new, |v| pick(v.label(), v.key())),
        "format" => {
            FormatCategory::parse(value).map_or_else(String::new, |v| pick(v.label(), v.key()))
        }
        _ => value.to_string(),
    }
}

/// One value of a facet with its count.
pub(crate) struct FacetValue {
    label: String,
    count: String,
    href: String,
    picked: bool,
}

/// One facet.
pub(crate) struct Facet {
    title: &'static str,
    values: Vec<FacetValue>,
}

/// A result card.
pub(crate) struct Card {
    title_html: String,
    summary_html: String,
    code: String,
    href: String,
    provider: String,
    share: &'static str,
    share_class: &'static str,
    open: &'static str,
    open_class: &'static str,
    cycle: &'static str,
    version: Option<String>,
    updated: String,
}

/// Escapes `text` for HTML and marks every occurrence of the query's words.
fn highlight(text: &str, words: &[String]) -> String {
    let mut marks = vec![false; text.len()];
    for w in words.iter().filter(|w| !w.is_empty()) {
        let mut from = 0;
        while let Some(at) = text[from..].find(w.as_str()) {
            let start = from + at;
            for m in &mut marks[start..start + w.len()] {
                *m = true;
            }
            from = start + w.len();
        }
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut open = false;
    for (i, ch) in text.char_indices() {
        if marks[i] != open {
            out.push_str(if marks[i] { "<mark>" } else { "</mark>" });
            open = marks[i];
        }
        match ch {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    if open {
        out.push_str("</mark>");
    }
    out
}

fn card(ctx: &Ctx, r: &Record, words: &[String], en: bool) -> Card {
    let e = &r.entry;
    let tz = ctx.state.timezone();
    Card {
        title_html: highlight(&e.title, words),
        summary_html: highlight(&e.summary, words),
        code: e.code.to_string(),
        href: entry_href(r),
        // The charter's name of the signing member: the entry's own provider_name is whatever
        // its signer wrote.
        provider: ctx
            .state
            .with_charter(|c| c.and_then(|c| c.member(&r.feed)).map(|m| m.name.clone()))
            .unwrap_or_else(|| e.provider_name.clone()),
        share: shown(en, e.share_type.key(), e.share_type.label()),
        share_class: format::share_class(e.share_type),
        open: shown(en, e.open_type.key(), e.open_type.label()),
        open_class: format::open_class(e.open_type),
        cycle: shown(en, e.update_cycle.key(), e.update_cycle.label()),
        version: r.dataset.as_ref().map(|d| {
            format!(
                "v{} · {} · {}",
                d.version,
                format::time(tz, d.created_at_ms),
                d.rows.map_or_else(
                    || format::size(d.bytes),
                    |n| format!("{} 行", format::number(n))
                )
            )
        }),
        updated: format::time(tz, r.updated_ms),
    }
}

/// A key (English) or its Chinese label.
fn shown(en: bool, key: &'static str, label: &'static str) -> &'static str {
    if en {
        key
    } else {
        label
    }
}

/// The entry page's link for a record.
pub(crate) fn entry_href(r: &Record) -> String {
    format!(
        "/entry?code={}&provider={}",
        encode(r.entry.code.as_str()),
        encode(r.entry.provider_code.as_str())
    )
}

#[derive(Template)]
#[template(path = "catalogue.html")]
struct CataloguePage {
    c: Chrome,
    q: String,
    sort_time: bool,
    facets: Vec<Facet>,
    cards: Vec<Card>,
    total: String,
    pages: Vec<(usize, String, bool)>,
}

/// One page of a catalogue query, with every facet's counts over all its hits.
struct Found {
    total: usize,
    /// The page shown (1-based, within the pages there are).
    page: usize,
    records: Vec<Record>,
    facets: BTreeMap<&'static str, Vec<(String, u64)>>,
    /// The query's words, to highlight.
    words: Vec<String>,
}

/// Runs a catalogue query: through the ranked index (facets and paging done there), or, until
/// it is built, by a scan of every record ([`catalogue::search`]).
fn find(ctx: &Ctx, q: &CatalogueQuery, text: &str, newest: bool) -> Result<Found, PageError> {
    let store = &ctx.state.store;
    let facets: Vec<(String, String)> = FACETS
        .iter()
        .filter(|f| !q.picked(f).is_empty())
        .map(|f| (f.to_string(), q.picked(f).to_string()))
        .collect();
    // A page past what the index can skip is the last it can (a link never costs more).
    let page = q
        .page
        .clamp(1, crate::catalogue::search::MAX_WINDOW / PER_PAGE);
    let query = SearchQuery {
        text: text.to_string(),
        facets: facets.clone(),
        offset: (page - 1) * PER_PAGE,
        limit: PER_PAGE,
        newest_first: newest,
    };
    if let Some(hits) = ctx.search.query(&query) {
        let mut hits = hits.map_err(PageError::internal)?;
        let last = hits.total.div_ceil(PER_PAGE).max(1);
        if page > last {
            // Past the last page (a stale link): show the last one.
            let again = SearchQuery {
                offset: (last - 1) * PER_PAGE,
                ..query
            };
            if let Some(h) = ctx.search.query(&again) {
                hits = h.map_err(PageError::internal)?;
            }
        }
        // A stale index (its thread stopped) never shows a withdrawn entry as live.
        let records: Vec<Record> = catalogue::by_keys(store, &hits.keys)
            .map_err(PageError::internal)?
            .into_iter()
            .filter(|r| r.withdrawn.is_none())
            .collect();
        return Ok(Found {
            total: hits.total,
            page: page.min(last),
            records,
            facets: hits.facets,
            words: hits.words,
        });
    }
    let all = if text.is_empty() {
        catalogue::list(store, &Filter::default())
    } else {
        catalogue::search(store, text, &Filter::default())
    }
    .map_err(PageError::internal)?;
    let mut hits: Vec<Record> = all
        .into_iter()
        .filter(|r| facets.iter().all(|(f, v)| facet_value(r, f) == *v))
        .collect();
    let mut counts: BTreeMap<&'static str, Vec<(String, u64)>> = BTreeMap::new();
    for f in FACETS {
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        for r in &hits {
            *by.entry(facet_value(r, f)).or_default() += 1;
        }
        let mut values: Vec<(String, u64)> = by.into_iter().collect();
        values.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts.insert(f, values);
    }
    if newest {
        hits.sort_by_key(|r| std::cmp::Reverse(r.updated_ms));
    }
    let total = hits.len();
    let page = page.min(total.div_ceil(PER_PAGE).max(1));
    Ok(Found {
        total,
        page,
        records: hits
            .into_iter()
            .skip((page - 1) * PER_PAGE)
            .take(PER_PAGE)
            .collect(),
        facets: counts,
        words: text.split_whitespace().map(str::to_string).collect(),
    })
}

/// `GET /catalogue`.
pub(crate) async fn search(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<CatalogueQuery>,
) -> PageResult {
    let lang = viewer.lang;
    let text = q.q.trim().to_string();
    let sort_time = q.sort == "time" || text.is_empty();
    let found = {
        let (ctx, q, text) = (ctx.clone(), q.clone(), text.clone());
        tokio::task::spawn_blocking(move || find(&ctx, &q, &text, sort_time))
            .await
            .map_err(PageError::internal)??
    };
    let titles = [
        ("dept", "部门", "Department"),
        ("class", "资源分类", "Class"),
        ("share", "共享类型", "Share type"),
        ("open", "开放属性", "Open type"),
        ("cycle", "更新周期", "Update cycle"),
        ("format", "资源格式", "Format"),
    ];
    let facets = titles
        .iter()
        .map(|(f, zh, en)| Facet {
            title: lang.t(zh, en),
            values: found
                .facets
                .get(f)
                .into_iter()
                .flatten()
                .map(|(v, n)| {
                    let picked = q.picked(f) == v;
                    FacetValue {
                        label: label_of(&ctx, f, v, lang.en()),
                        count: format::number(*n),
                        href: q.with(f, if picked { "" } else { v }),
                        picked,
                    }
                })
                .collect(),
        })
        .collect();
    let total = found.total;
    let pages_n = total.div_ceil(PER_PAGE).max(1);
    let page = found.page;
    let cards = found
        .records
        .iter()
        .map(|r| card(&ctx, r, &found.words, lang.en()))
        .collect();
    let base = q.with("", "");
    let pages = (1..=pages_n)
        .map(|p| (p, format!("{base}&page={p}"), p == page))
        .collect();
    show(&CataloguePage {
        c: Chrome::new(&ctx, &viewer, lang.t("资源目录", "Catalogue")),
        q: text,
        sort_time,
        facets,
        cards,
        total: format::number(total as u64),
        pages,
    })
}

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    c: Chrome,
    stats: Vec<(&'static str, String)>,
    todos: Vec<super::applications::Row>,
    newest: Vec<Card>,
}

/// `GET /`.
pub(crate) async fn home(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let lang = viewer.lang;
    let all = catalogue::list(&ctx.state.store, &Filter::default()).map_err(PageError::internal)?;
    let by_mode = |m: ShareMode| all.iter().filter(|r| r.entry.share_mode == m).count() as u64;
    let departments = all
        .iter()
        .map(|r| r.entry.provider_code.as_str())
        .collect::<std::collections::BTreeSet<_>>()
        .len() as u64;
    let month = ctx.state.today().get(..7).unwrap_or_default().to_string();
    let tz = ctx.state.timezone();
    let apps = crate::applications::all(&ctx.state).map_err(PageError::internal)?;
    let this_month = apps
        .iter()
        .filter(|a| {
            a.history
                .first()
                .is_some_and(|(_, at, _)| format::time(tz, *at).starts_with(&month))
        })
        .count() as u64;
    let transfer = ctx.state.transfer.view();
    let stats = vec![
        (
            lang.t("目录总数", "Entries"),
            format::number(all.len() as u64),
        ),
        (
            lang.t("库表", "Tables"),
            format::number(by_mode(ShareMode::Table)),
        ),
        (
            lang.t("接口", "APIs"),
            format::number(by_mode(ShareMode::Api)),
        ),
        (
            lang.t("文件", "Files"),
            format::number(by_mode(ShareMode::File)),
        ),
        (lang.t("部门", "Departments"), format::number(departments)),
        (
            lang.t("本月申请", "Applications this month"),
            format::number(this_month),
        ),
        (
            lang.t("本节点已提供数据", "Data served by this node"),
            format::size(transfer.served_bytes),
        ),
        (
            lang.t("本节点已获取数据", "Data received by this node"),
            format::size(transfer.fetched_bytes),
        ),
    ];
    let todos = if viewer.has(crate::accounts::Role::Approver) {
        super::applications::awaiting(&ctx)
            .into_iter()
            .take(10)
            .map(|v| super::applications::row(v, lang))
            .collect()
    } else {
        Vec::new()
    };
    let mut newest = all;
    newest.sort_by_key(|r| std::cmp::Reverse(r.updated_ms));
    let newest = newest
        .iter()
        .take(6)
        .map(|r| card(&ctx, r, &[], lang.en()))
        .collect();
    show(&HomePage {
        c: Chrome::new(&ctx, &viewer, lang.t("首页", "Home")),
        stats,
        todos,
        newest,
    })
}

/// Which entry: code and provider.
#[derive(Deserialize)]
pub(crate) struct Which {
    code: String,
    #[serde(default)]
    provider: String,
    /// What the cataloguer just did (`published`, `updated`, `withdrawn`), to confirm it.
    #[serde(default)]
    done: String,
}

/// A row of the 信息项 table.
pub(crate) struct ItemRow {
    name: String,
    data_type: String,
    length: String,
    share: &'static str,
    share_class: &'static str,
}

/// A row of the versions table.
pub(crate) struct VersionRow {
    version: u64,
    rows: String,
    size: String,
    time: String,
    hash: String,
}

#[derive(Template)]
#[template(path = "entry.html")]
struct EntryPage {
    c: Chrome,
    fields: Vec<(&'static str, String)>,
    title: String,
    code: String,
    provider_code: String,
    share: &'static str,
    share_class: &'static str,
    open: &'static str,
    open_class: &'static str,
    withdrawn: Option<String>,
    items: Vec<ItemRow>,
    versions: Vec<VersionRow>,
    signer: String,
    signer_key: String,
    seq: u64,
    verified: bool,
    by: Option<String>,
    can_apply: bool,
    can_pull: bool,
    grants: Vec<(String, String)>,
    /// This node's entry, seen by a cataloguer: edit, upload and withdraw are offered.
    can_edit: bool,
    /// The confirmation of what the cataloguer just did.
    done: Option<&'static str>,
    /// The first rows of an 无条件共享 table this node holds: the shared columns and rows.
    preview: Option<Preview>,
    /// Why there is no preview (the provider could not be asked).
    preview_note: Option<String>,
    /// How the resource is used, as this node sees it: (label, value).
    usage: Vec<(&'static str, String)>,
}

/// A preview: the shared columns' names and the first rows.
type Preview = (Vec<String>, Vec<Vec<String>>);

/// What this node itself can say about an entry's preview.
enum LocalPreview {
    /// No preview applies (not an 无条件共享 table with data).
    None,
    /// This node holds the version: its rows.
    Rows(Preview),
    /// This node does not hold the version: ask the provider for these 信息项.
    Ask(huitong_protocol::dataset::DatasetVersion, Vec<String>),
    /// Reading it here failed (logged).
    Failed,
}

/// The preview of an 无条件共享 table as far as this node can make it: its shared columns'
/// first rows when this node holds the latest version whole.
fn local_preview(ctx: &Ctx, r: &Record) -> LocalPreview {
    let e = &r.entry;
    let Some(dv) = r.dataset.as_ref() else {
        return LocalPreview::None;
    };
    let columns = crate::dataset::preview::shared_columns(e);
    if columns.is_empty() || r.withdrawn.is_some() {
        return LocalPreview::None;
    }
    match crate::dataset::preview::first_rows(&ctx.state, &r.feed, dv, &columns) {
        Ok(Some(rows)) => LocalPreview::Rows((columns, rows)),
        Ok(None) => LocalPreview::Ask(dv.clone(), columns),
        Err(e) => {
            tracing::warn!(error = %e, code = %r.entry.code, "no preview");
            LocalPreview::Failed
        }
    }
}

/// The entry page's preview: this node's own rows, or the provider's answer (asked over the
/// network, waiting at most [`crate::transfer::preview::WAIT`]); otherwise why there is none.
async fn preview(
    ctx: &Ctx,
    r: &Record,
    local: LocalPreview,
    lang: super::page::Lang,
) -> (Option<Preview>, Option<String>) {
    let note = |zh: &str, en: &str, why: &str| Some(format!("{}{why}", lang.t(zh, en)));
    match local {
        LocalPreview::None => (None, None),
        LocalPreview::Rows(p) => (Some(p), None),
        LocalPreview::Failed => (None, note("预览暂不可用。", "No preview just now.", "")),
        // Our own version, not whole here: there is nobody else to ask.
        LocalPreview::Ask(..) if r.feed == ctx.state.id() => (
            None,
            note(
                "本节点的该版本数据不完整，暂无预览。",
                "This node's copy of the version is incomplete: no preview.",
                "",
            ),
        ),
        LocalPreview::Ask(dv, columns) => {
            match ctx
                .previews
                .get(&ctx.transport, &r.feed, &r.entry.code, &dv, &columns)
                .await
            {
                Ok(p) => (Some((p.columns.clone(), p.rows.clone())), None),
                Err(why) => (
                    None,
                    note(
                        "暂时无法从提供方节点取得预览：",
                        "No preview from the provider's node just now: ",
                        &why,
                    ),
                ),
            }
        }
    }
}

/// How the resource is used, as this node sees it (its receipts; the applications the person
/// may see): pulls, bytes, consuming departments, applications, the last pull.
fn usage(ctx: &Ctx, viewer: &Viewer, r: &Record) -> Vec<(&'static str, String)> {
    let lang = viewer.lang;
    let code = r.entry.code.as_str();
    let receipts: Vec<_> = crate::receipts::all(&ctx.state)
        .unwrap_or_default()
        .into_iter()
        .filter(|x| x.provider == r.feed && x.code == code)
        .collect();
    let consumers: std::collections::BTreeSet<_> = receipts.iter().map(|x| x.consumer).collect();
    let bytes: u64 = receipts.iter().map(|x| x.bytes).sum();
    let last = receipts.iter().map(|x| x.countersigned_at_ms).max();
    let apps = viewer
        .principal
        .as_ref()
        .map(|p| {
            crate::http::applications::views(ctx, p, None)
                .unwrap_or_default()
                .into_iter()
                .filter(|v| v.code == code)
                .count()
        })
        .unwrap_or(0);
    vec![
        (
            lang.t("拉取次数", "Pulls"),
            format::number(receipts.len() as u64),
        ),
        (lang.t("交换数据量", "Data exchanged"), format::size(bytes)),
        (
            lang.t("使用部门", "Consuming departments"),
            format::number(consumers.len() as u64),
        ),
        (
            lang.t("申请数", "Applications"),
            format::number(apps as u64),
        ),
        (
            lang.t("最近一次拉取", "Last pull"),
            last.map_or_else(|| "—".into(), |ms| format::time(ctx.state.timezone(), ms)),
        ),
    ]
}

/// `GET /entry?code=…&provider=…`.
pub(crate) async fn entry(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(w): Query<Which>,
) -> PageResult {
    let lang = viewer.lang;
    let store = &ctx.state.store;
    let r = catalogue::get(store, &w.code)
        .map_err(PageError::internal)?
        .into_iter()
        .find(|r| w.provider.is_empty() || r.entry.provider_code.as_str() == w.provider)
        .ok_or_else(|| {
            PageError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "{} {}",
                    lang.t("目录中没有这个资源：", "No catalogue entry"),
                    w.code
                ),
            )
        })?;
    let e = &r.entry;
    let en = lang.en();
    let tz = ctx.state.timezone();
    let or_none = |o: &Option<String>| o.clone().unwrap_or_else(|| "—".into());
    let fields = vec![
        (
            lang.t("信息资源分类", "Classification"),
            e.classification.as_str().to_string(),
        ),
        (lang.t("信息资源名称", "Title"), e.title.clone()),
        (lang.t("信息资源代码", "Code"), e.code.to_string()),
        (
            lang.t("信息资源提供方", "Provider"),
            e.provider_name.clone(),
        ),
        (
            lang.t("提供方代码", "Provider code"),
            e.provider_code.to_string(),
        ),
        (lang.t("信息资源摘要", "Summary"), e.summary.clone()),
        (
            lang.t("信息资源格式", "Format"),
            format!(
                "{} · {}",
                shown(en, e.format.category.key(), e.format.category.label()),
                e.format.kind
            ),
        ),
        (
            lang.t("信息项", "Items"),
            format!("{} {}", e.items.len(), lang.t("项", "items")),
        ),
        (
            lang.t("共享类型", "Share type"),
            shown(en, e.share_type.key(), e.share_type.label()).to_string(),
        ),
        (
            lang.t("共享条件", "Share condition"),
            or_none(&e.share_condition),
        ),
        (
            lang.t("共享方式", "Share mode"),
            shown(en, e.share_mode.key(), e.share_mode.label()).to_string(),
        ),
        (
            lang.t("开放属性", "Open type"),
            shown(en, e.open_type.key(), e.open_type.label()).to_string(),
        ),
        (
            lang.t("开放条件", "Open condition"),
            or_none(&e.open_condition),
        ),
        (
            lang.t("更新周期", "Update cycle"),
            shown(en, e.update_cycle.key(), e.update_cycle.label()).to_string(),
        ),
        (lang.t("发布日期", "Published"), e.publish_date.clone()),
        (
            lang.t("关联资源代码", "Related codes"),
            if e.related_codes.is_empty() {
                "—".into()
            } else {
                e.related_codes
                    .iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
    ];
    let items = e
        .items
        .iter()
        .map(|i| {
            let s = e.effective_share_type(i);
            ItemRow {
                name: i.name.clone(),
                data_type: if en {
                    i.data_type.key().to_string()
                } else {
                    format!("{} ({})", i.data_type.label(), i.data_type.key())
                },
                length: i.length.map_or_else(|| "—".into(), |l| l.to_string()),
                share: shown(en, s.key(), s.label()),
                share_class: format::share_class(s),
            }
        })
        .collect();
    let versions = crate::dataset::records::versions(store, &r.feed, e.code.as_str())
        .map_err(PageError::internal)?
        .into_iter()
        .rev()
        .map(|v| VersionRow {
            version: v.version,
            rows: v.rows.map_or_else(|| "—".into(), format::number),
            size: format::size(v.bytes),
            time: format::time(tz, v.created_at_ms),
            hash: v.manifest.to_hex(),
        })
        .collect();
    // Verified now, on this node: the stored signed entry opens under the provider's key.
    let verified = store
        .entry(&r.feed, r.seq)
        .ok()
        .flatten()
        .and_then(|(_, bytes)| huitong_protocol::feed::VerifiedEntry::open(&bytes).ok())
        .is_some_and(|v| v.entry.feed == r.feed && v.entry.seq == r.seq);
    let signer = ctx
        .state
        .with_charter(|c| c.and_then(|c| c.member(&r.feed)).map(|m| m.name.clone()))
        .unwrap_or_else(|| {
            lang.t("（章程中无此成员）", "(not a member of the charter)")
                .to_string()
        });
    let grants = super::applications::usable_grants(&ctx, &viewer, &r);
    // Reading receipts, applications and chunks is blocking work.
    let (local, usage) = {
        let (ctx, viewer, r) = (ctx.clone(), viewer.clone(), r.clone());
        tokio::task::spawn_blocking(move || (local_preview(&ctx, &r), usage(&ctx, &viewer, &r)))
            .await
            .map_err(PageError::internal)?
    };
    let (preview, preview_note) = preview(&ctx, &r, local, lang).await;
    let done = match w.done.as_str() {
        "published" => Some(lang.t("目录已发布。", "The entry was published.")),
        "updated" => Some(lang.t("目录已更新。", "The entry was updated.")),
        "withdrawn" => Some(lang.t("目录已下架。", "The entry was withdrawn.")),
        _ => None,
    };
    let has_data = r.dataset.is_some() && r.withdrawn.is_none();
    show(&EntryPage {
        c: Chrome::new(&ctx, &viewer, &e.title),
        title: e.title.clone(),
        code: e.code.to_string(),
        provider_code: e.provider_code.to_string(),
        share: shown(en, e.share_type.key(), e.share_type.label()),
        share_class: format::share_class(e.share_type),
        open: shown(en, e.open_type.key(), e.open_type.label()),
        open_class: format::open_class(e.open_type),
        withdrawn: r.withdrawn.clone(),
        fields,
        items,
        versions,
        signer,
        signer_key: r.feed.to_hex(),
        seq: r.seq,
        verified,
        by: r.by.as_ref().map(|a| format!("{} ({})", a.name, a.account)),
        can_apply: viewer.has(crate::accounts::Role::DataUser)
            && e.share_type == ShareType::Conditional
            && r.withdrawn.is_none(),
        can_pull: viewer.has(crate::accounts::Role::DataUser)
            && has_data
            && e.share_mode != huitong_protocol::catalogue::ShareMode::Api
            && (e.share_type == ShareType::Unconditional || !grants.is_empty()),
        grants,
        can_edit: viewer.has(crate::accounts::Role::Cataloguer)
            && r.feed == ctx.state.id()
            && r.withdrawn.is_none(),
        done,
        preview,
        preview_note,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highlighting_escapes_and_marks() {
        assert_eq!(
            highlight("人口<基本>信息", &["人口".into()]),
            "<mark>人口</mark>&lt;基本&gt;信息"
        );
        assert_eq!(highlight("a&b", &[]), "a&amp;b");
        assert_eq!(
            highlight("法人法人", &["法人".into()]),
            "<mark>法人法人</mark>"
        );
    }
}
