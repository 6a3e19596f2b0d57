//! `[collect]`: where this node collects its own resources' data from (采集) — a department
//! database read on a schedule, a folder that receives files, or an HTTP/JSON API read page by
//! page — each run making a dataset version. Database passwords and API headers are in the node's
//! secrets file (`[sources."CODE"] password` / `headers`), never here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `[collect]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// Retries of a failed scheduled run, with growing waits (1, 2, 4 … minutes). Unset:
    /// [`DEFAULT_RETRIES`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// Failed runs in a row after which the node raises an alarm (log and notification). Unset:
    /// [`DEFAULT_ALARM_AFTER`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alarm_after: Option<u32>,
    /// The sources, one per resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceConfig>,
}

/// The default retries of a failed scheduled run.
pub const DEFAULT_RETRIES: u32 = 3;
/// The default failed runs in a row before an alarm.
pub const DEFAULT_ALARM_AFTER: u32 = 3;
/// The most retries that can be set.
pub const MAX_RETRIES: u32 = 10;

impl CollectConfig {
    /// Whether nothing is set.
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The source of resource `code`.
    pub fn source(&self, code: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.code == code)
    }

    /// Retries of a failed scheduled run.
    pub fn retries(&self) -> u32 {
        self.retries.unwrap_or(DEFAULT_RETRIES)
    }

    /// Failed runs in a row before an alarm.
    pub fn alarm_after(&self) -> u32 {
        self.alarm_after.unwrap_or(DEFAULT_ALARM_AFTER)
    }

    pub(crate) fn check(&self) -> Result<(), (&'static str, String)> {
        if self.retries.is_some_and(|r| r > MAX_RETRIES) {
            return Err((
                "collect.retries",
                format!("must be 0 to {MAX_RETRIES}; remove the key for the default of {DEFAULT_RETRIES}"),
            ));
        }
        if self.alarm_after == Some(0) {
            return Err((
                "collect.alarm_after",
                format!(
                    "must be at least 1; remove the key for the default of {DEFAULT_ALARM_AFTER}"
                ),
            ));
        }
        let mut codes = std::collections::HashSet::new();
        for s in &self.sources {
            s.check()
                .map_err(|why| ("collect.sources", format!("{}: {why}", s.code)))?;
            if !codes.insert(s.code.as_str()) {
                return Err((
                    "collect.sources",
                    format!("{} has two sources; keep one", s.code),
                ));
            }
        }
        Ok(())
    }
}

/// What a source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A PostgreSQL table or query.
    Postgres,
    /// A MySQL or MariaDB table or query.
    Mysql,
    /// A folder that receives CSV, JSONL or XLSX files: each complete file is a new version.
    Folder,
    /// An HTTP/JSON API, read page by page.
    Http,
}

/// How an HTTP source's pages follow each other.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PagingStyle {
    /// `?page=N&size=S`, N from `first` (1 by default); ends at a short page.
    #[default]
    Page,
    /// `?offset=K&limit=S`, K from 0; ends at a short page.
    Offset,
    /// Each page names the next (`next`, a JSON pointer to a URL on the same host or a cursor
    /// sent back as `param`); ends when it names none.
    Next,
    /// One request, no paging.
    None,
}

/// `paging` of an HTTP source.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Paging {
    /// How pages follow each other.
    #[serde(default)]
    pub style: PagingStyle,
    /// The query parameter of the page number, offset or cursor (default `page`, `offset`,
    /// `cursor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
    /// The query parameter of the page size (default `size`, or `limit` for offsets; none for
    /// `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_param: Option<String>,
    /// Records asked per page (default [`DEFAULT_PAGE_SIZE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u32>,
    /// The first page's number (`page` style; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    /// `next` style: the JSON pointer to the next page's URL or cursor in a page (default
    /// `/next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Records asked per page by default.
pub const DEFAULT_PAGE_SIZE: u32 = 500;
/// The most records asked per page.
pub const MAX_PAGE_SIZE: u32 = 10_000;
/// Seconds a folder's file must stay unchanged before it is picked up, by default.
pub const DEFAULT_SETTLE_SECS: u64 = 10;

impl Paging {
    /// The query parameter of the page number, offset or cursor.
    pub fn param(&self) -> &str {
        self.param.as_deref().unwrap_or(match self.style {
            PagingStyle::Page | PagingStyle::None => "page",
            PagingStyle::Offset => "offset",
            PagingStyle::Next => "cursor",
        })
    }

    /// The query parameter of the page size, if one is sent.
    pub fn size_param(&self) -> Option<&str> {
        match (&self.size_param, self.style) {
            (Some(p), _) => Some(p),
            (None, PagingStyle::Page) => Some("size"),
            (None, PagingStyle::Offset) => Some("limit"),
            (None, _) => None,
        }
    }

    /// Records asked per page.
    pub fn size(&self) -> u32 {
        self.size.unwrap_or(DEFAULT_PAGE_SIZE)
    }

    /// The JSON pointer to the next page's URL or cursor.
    pub fn next(&self) -> &str {
        self.next.as_deref().unwrap_or("/next")
    }
}

/// `[[collect.sources]]`: one resource's data, read from a department database.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The resource code (`class/number`) of this node's catalogue entry.
    pub code: String,
    /// The kind of source.
    pub kind: SourceKind,
    /// `postgres://user@host[:port]/database` or `mysql://user@host[:port]/database`, without
    /// the password (that is in the secrets file); or the HTTP source's first page,
    /// `http[s]://host[:port]/path[?query]`. None for a folder.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// A table (`name` or `schema.name`), read whole in primary-key order; or …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
    /// … a query (`SELECT …`; give it an `ORDER BY`, so unchanged data makes no new version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// 信息项 → column, for the 信息项 whose column has another name (default: the same name).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub columns: BTreeMap<String, String>,
    /// When runs start: a cron expression (`minute hour day month weekday`, in the federation's
    /// time zone), `update_cycle` (from the entry's 更新周期; the default) or `manual`.
    /// A folder also takes `watch` (the default for folders): a file is taken as soon as it is
    /// complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// A folder source's directory, where the files arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A folder source: seconds a file must stay unchanged before it is taken (default
    /// [`DEFAULT_SETTLE_SECS`]); a `NAME.done` file beside it says it is complete at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settle_secs: Option<u64>,
    /// A folder or HTTP source: the 信息项 that identify a row. When the rows come in the byte
    /// order of that key's text, a version carries its row changes; otherwise it is whole.
    /// (A database table's key is its primary key.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// An HTTP source: the JSON pointer to the array of records in a page (default: the page
    /// is the array).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub records: Option<String>,
    /// An HTTP source's paging.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
    /// A database source: the column that grows whenever a row is inserted or changed (an
    /// `updated_at` timestamp, a change counter). A run then reads only the rows past the last
    /// run's value and lays them over the latest version; deletions are not seen until a full
    /// run (`huitong collect run CODE --full`). Needs a key: the table's primary key, or `key`
    /// for a query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watermark: Option<String>,
    /// An `https://` source: the absolute path of a PEM file holding the certificate
    /// authorities that sign the API's certificate (a department's own CA). When set, only
    /// these are trusted for this source; when unset, the system's trust store is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
}

/// Longest query or table name accepted.
const MAX_QUERY_BYTES: usize = 64 * 1024;

impl SourceConfig {
    /// A source of `kind` for the entry `code` at `url`, with every other setting at its
    /// default (fill them in with struct update syntax).
    pub fn new(code: &str, kind: SourceKind, url: &str) -> Self {
        Self {
            code: code.to_owned(),
            kind,
            url: url.to_owned(),
            table: None,
            query: None,
            columns: BTreeMap::new(),
            schedule: None,
            path: None,
            settle_secs: None,
            key: Vec::new(),
            records: None,
            paging: None,
            watermark: None,
            ca: None,
        }
    }

    /// The schedule as written (`update_cycle` when unset; `watch` for a folder).
    pub fn schedule(&self) -> &str {
        self.schedule.as_deref().unwrap_or(match self.kind {
            SourceKind::Folder => "watch",
            _ => "update_cycle",
        })
    }

    /// A folder's settle time in seconds.
    pub fn settle_secs(&self) -> u64 {
        self.settle_secs.unwrap_or(DEFAULT_SETTLE_SECS)
    }

    /// Where the data comes from, as shown to operators (never a password: a URL holding one
    /// is refused by [`Self::check`]).
    pub fn location(&self) -> String {
        match self.kind {
            SourceKind::Folder => self.path.clone().unwrap_or_default(),
            // Query values may be keys the API takes in the URL: only their names are shown.
            SourceKind::Http => match self.url.split_once('?') {
                Some((base, query)) => {
                    let names: Vec<String> = query
                        .split('&')
                        .map(|kv| format!("{}=…", kv.split('=').next().unwrap_or_default()))
                        .collect();
                    format!("{base}?{}", names.join("&"))
                }
                None => self.url.clone(),
            },
            _ => self.url.clone(),
        }
    }

    fn check(&self) -> Result<(), String> {
        if !self.code.contains('/') || self.code.len() > 32 {
            return Err(format!(
                "code {:?} must be a resource code, class/number",
                self.code
            ));
        }
        for k in &self.key {
            if k.is_empty() || k.len() > 128 {
                return Err(format!("key {k:?} must be a 信息项 name"));
            }
        }
        if self.ca.is_some() && !(self.kind == SourceKind::Http && self.url.starts_with("https://"))
        {
            return Err("ca is for an https source (kind = \"http\", url = \"https://…\"): the PEM file of the authority that signs the API's certificate".into());
        }
        match self.kind {
            SourceKind::Folder => return self.check_folder(),
            SourceKind::Http => return self.check_http(),
            SourceKind::Postgres | SourceKind::Mysql => {}
        }
        if (!self.key.is_empty() && self.table.is_some())
            || self.path.is_some()
            || self.records.is_some()
            || self.paging.is_some()
            || self.settle_secs.is_some()
        {
            return Err("path, settle_secs, records and paging are for folder and http sources, and a database table's key is its primary key (key is for a query)".into());
        }
        if let Some(w) = &self.watermark {
            if w.is_empty() || w.len() > 63 || w.chars().any(|c| c.is_control()) {
                return Err(format!("watermark {w:?} must be a column name"));
            }
            if self.query.is_some() && self.key.is_empty() {
                return Err("a query read by a watermark needs key = [\"信息项\", …]: the 信息项 that identify a row".into());
            }
        }
        let rest = match self.kind {
            SourceKind::Postgres => self
                .url
                .strip_prefix("postgres://")
                .or_else(|| self.url.strip_prefix("postgresql://"))
                // Not echoed: it may hold a password.
                .ok_or("url must be postgres://user@host[:port]/database (kind = \"postgres\")")?,
            _ => self
                .url
                .strip_prefix("mysql://")
                .ok_or("url must be mysql://user@host[:port]/database (kind = \"mysql\")")?,
        };
        if rest.contains(['?', '%', '#']) || rest.chars().any(char::is_whitespace) {
            return Err(
                "url takes no query parameters, escapes or spaces: scheme://user@host[:port]/database"
                    .into(),
            );
        }
        match rest.split_once('@') {
            Some((user, _)) if user.contains(':') => {
                // Never echo what follows: it is a password.
                return Err(format!(
                    "url holds a password; remove it and put it in secrets.toml as [sources.\"{}\"] password = \"…\" (mode 0600)",
                    self.code
                ));
            }
            Some((user, host)) if !user.is_empty() && !host.is_empty() => {}
            _ => {
                return Err(
                    "url must name the user and the host: postgres://user@host[:port]/database"
                        .into(),
                )
            }
        }
        match (&self.table, &self.query) {
            (Some(t), None) => {
                let ok = !t.is_empty()
                    && t.len() <= 128
                    && t.split('.').count() <= 2
                    && t.split('.').all(|part| !part.is_empty())
                    && !t.chars().any(|c| c == '"' || c.is_control());
                if !ok {
                    return Err(format!(
                        "table {t:?} must be name or schema.name (no quotes)"
                    ));
                }
            }
            (None, Some(q)) => {
                if q.trim().is_empty() || q.len() > MAX_QUERY_BYTES {
                    return Err(format!(
                        "query must be a SELECT of at most {} KiB",
                        MAX_QUERY_BYTES / 1024
                    ));
                }
            }
            _ => return Err("give either table or query (one of them)".into()),
        }
        self.check_columns()?;
        self.check_schedule()
    }

    fn check_columns(&self) -> Result<(), String> {
        for (item, column) in &self.columns {
            if column.is_empty() || column.len() > 63 || column.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "columns: {item:?} maps to {column:?}, not a column name"
                ));
            }
        }
        Ok(())
    }

    fn check_schedule(&self) -> Result<(), String> {
        let schedule = self.schedule();
        let watch = self.kind == SourceKind::Folder && schedule == "watch";
        if !watch
            && schedule != "update_cycle"
            && schedule != "manual"
            && schedule.split_whitespace().count() != 5
        {
            return Err(format!(
                "schedule {schedule:?} must be a cron expression of 5 fields (minute hour day month weekday), update_cycle or manual{}",
                if self.kind == SourceKind::Folder { ", or watch" } else { "" }
            ));
        }
        Ok(())
    }

    fn check_folder(&self) -> Result<(), String> {
        if self.watermark.is_some() {
            return Err("watermark is for database sources".into());
        }
        if !self.url.is_empty()
            || self.table.is_some()
            || self.query.is_some()
            || self.records.is_some()
            || self.paging.is_some()
        {
            return Err("a folder source takes path (and settle_secs, key, columns, schedule); url, table, query, records and paging are for other kinds".into());
        }
        match &self.path {
            Some(p) if p.starts_with('/') && !p.chars().any(char::is_control) => {}
            _ => {
                return Err(
                    "path must be the folder's absolute path, where the files arrive".into(),
                )
            }
        }
        if self.settle_secs.is_some_and(|s| s > 24 * 3600) {
            return Err("settle_secs must be at most 86400 (a day)".into());
        }
        if !self.columns.is_empty() {
            return Err("a folder's files name their columns by 信息项 (the header): columns is for database and http sources".into());
        }
        self.check_schedule()
    }

    fn check_http(&self) -> Result<(), String> {
        if self.watermark.is_some() {
            return Err("watermark is for database sources".into());
        }
        if self.table.is_some()
            || self.query.is_some()
            || self.path.is_some()
            || self.settle_secs.is_some()
        {
            return Err("an http source takes url, records, paging (and key, columns, schedule); table, query, path and settle_secs are for other kinds".into());
        }
        let rest = self
            .url
            .strip_prefix("https://")
            .or_else(|| self.url.strip_prefix("http://"))
            .ok_or(
                "url must be the API's first page, https://host[:port]/path[?query] or http://… (headers such as Authorization go in secrets.toml [sources.\"CODE\"] headers)",
            )?;
        let host = rest.split(['/', '?']).next().unwrap_or_default();
        if host.is_empty() || host.contains('@') {
            return Err("url must name the host and no user or password: https://host[:port]/path (credentials go in secrets.toml [sources.\"CODE\"] headers)".into());
        }
        if let Some(ca) = &self.ca {
            if !ca.starts_with('/') || ca.chars().any(char::is_control) {
                return Err(format!(
                    "ca {ca:?} must be the absolute path of a PEM file of certificate authorities"
                ));
            }
        }
        if self.url.len() > 2048
            || self
                .url
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err("url must be at most 2048 characters, without spaces".into());
        }
        for pointer in [
            self.records.as_deref(),
            self.paging.as_ref().map(Paging::next),
        ]
        .into_iter()
        .flatten()
        {
            if !pointer.is_empty() && !pointer.starts_with('/') {
                return Err(format!(
                    "{pointer:?} must be a JSON pointer: empty, or /name/… (e.g. /data/list)"
                ));
            }
        }
        if let Some(p) = &self.paging {
            if p.size() == 0 || p.size() > MAX_PAGE_SIZE {
                return Err(format!("paging.size must be 1 to {MAX_PAGE_SIZE}"));
            }
            for name in [Some(p.param()), p.size_param()].into_iter().flatten() {
                if name.is_empty()
                    || name.len() > 64
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
                {
                    return Err(format!(
                        "paging parameter {name:?} must be a plain query parameter name"
                    ));
                }
            }
        }
        self.check_columns()?;
        self.check_schedule()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str) -> SourceConfig {
        SourceConfig {
            table: Some("public.people".into()),
            ..SourceConfig::new("301001/000001", SourceKind::Postgres, url)
        }
    }

    #[test]
    fn a_password_in_the_url_is_refused_without_being_repeated() {
        let e = source("postgres://collector:s3cret@127.0.0.1/hr")
            .check()
            .unwrap_err();
        assert!(e.contains("secrets.toml") && !e.contains("s3cret"), "{e}");
        let e = source("mysql://collector:s3cret").check().unwrap_err();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(source("postgres://collector@127.0.0.1:5432/hr")
            .check()
            .is_ok());
    }

    #[test]
    fn table_or_query_and_a_schedule_of_five_fields() {
        let mut s = source("postgres://c@h/db");
        s.query = Some("SELECT 1".into());
        assert!(s.check().unwrap_err().contains("either table or query"));
        s.table = None;
        assert!(s.check().is_ok());
        s.schedule = Some("every day".into());
        assert!(s.check().unwrap_err().contains("cron"));
        s.schedule = Some("0 2 * * *".into());
        assert!(s.check().is_ok());
        let mut t = source("postgres://c@h/db");
        t.table = Some("a.\"b\"".into());
        assert!(t.check().is_err());
    }

    #[test]
    fn a_folder_takes_an_absolute_path_and_watches_by_default() {
        let mut f = source("");
        f.kind = SourceKind::Folder;
        f.table = None;
        assert!(f.check().unwrap_err().contains("path"));
        f.path = Some("inbox".into());
        assert!(f.check().unwrap_err().contains("absolute"));
        f.path = Some("/srv/inbox".into());
        assert_eq!(f.schedule(), "watch");
        assert!(f.check().is_ok());
        f.url = "postgres://c@h/db".into();
        assert!(f.check().is_err(), "a folder takes no url");
        let mut d = source("postgres://c@h/db");
        d.schedule = Some("watch".into());
        assert!(d.check().is_err(), "only a folder watches");
    }

    #[test]
    fn an_http_source_takes_a_plain_url_and_json_pointers() {
        let mut h = source("http://10.0.0.7:8080/api/people?type=1");
        h.kind = SourceKind::Http;
        h.table = None;
        assert!(h.check().is_ok());
        assert_eq!(h.location(), "http://10.0.0.7:8080/api/people?type=…");
        h.records = Some("data.list".into());
        assert!(h.check().unwrap_err().contains("JSON pointer"));
        h.records = Some("/data/list".into());
        h.paging = Some(Paging {
            size: Some(0),
            ..Paging::default()
        });
        assert!(h.check().unwrap_err().contains("paging.size"));
        h.paging = None;
        h.url = "http://user:pw@10.0.0.7/api".into();
        let e = h.check().unwrap_err();
        assert!(!e.contains("pw@"), "{e}");
        h.url = "ftp://10.0.0.7/api".into();
        assert!(h.check().is_err());
        h.ca = Some("/etc/huitong/dept-ca.pem".into());
        h.url = "http://10.0.0.7:8080/api".into();
        assert!(
            h.check().unwrap_err().contains("https"),
            "a CA for plain http"
        );
        h.url = "https://api.rsj.haimen.gov.cn/v1/people".into();
        assert!(h.check().is_ok());
        h.ca = Some("dept-ca.pem".into());
        assert!(h.check().unwrap_err().contains("absolute"));
    }
}
