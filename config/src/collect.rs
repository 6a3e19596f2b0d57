//! `[collect]`: where this node collects its own resources' data from (采集) — a department
//! database read on a schedule, each run making a dataset version. The database password is in
//! the node's secrets file (`[sources."CODE"] password`), never here.

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
    /// the password (that is in the secrets file).
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// Longest query or table name accepted.
const MAX_QUERY_BYTES: usize = 64 * 1024;

impl SourceConfig {
    /// The schedule as written (`update_cycle` when unset).
    pub fn schedule(&self) -> &str {
        self.schedule.as_deref().unwrap_or("update_cycle")
    }

    fn check(&self) -> Result<(), String> {
        if !self.code.contains('/') || self.code.len() > 32 {
            return Err(format!(
                "code {:?} must be a resource code, class/number",
                self.code
            ));
        }
        let rest = match self.kind {
            SourceKind::Postgres => self
                .url
                .strip_prefix("postgres://")
                .or_else(|| self.url.strip_prefix("postgresql://"))
                // Not echoed: it may hold a password.
                .ok_or("url must be postgres://user@host[:port]/database (kind = \"postgres\")")?,
            SourceKind::Mysql => self
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
        for (item, column) in &self.columns {
            if column.is_empty() || column.len() > 63 || column.chars().any(|c| c.is_control()) {
                return Err(format!(
                    "columns: {item:?} maps to {column:?}, not a column name"
                ));
            }
        }
        let schedule = self.schedule();
        if schedule != "update_cycle"
            && schedule != "manual"
            && schedule.split_whitespace().count() != 5
        {
            return Err(format!(
                "schedule {schedule:?} must be a cron expression of 5 fields (minute hour day month weekday), update_cycle or manual"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str) -> SourceConfig {
        SourceConfig {
            code: "301001/000001".into(),
            kind: SourceKind::Postgres,
            url: url.into(),
            table: Some("public.people".into()),
            query: None,
            columns: BTreeMap::new(),
            schedule: None,
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
}
