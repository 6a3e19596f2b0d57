//! What the table targets share: the columns a delivery writes (one per 信息项, typed from its
//! 数据类型), identifiers quoted for each server, the cast from a delivered text cell to the
//! column's type, the metadata table, and reading the pulled CSV.
//!
//! Layering: a leaf of [`crate::subscribe`].

use std::path::Path;

use huitong_protocol::catalogue::{DataType, Item};

/// The table that records, in the target database, which version each subscription delivered.
pub const META_TABLE: &str = "huitong_delivery";

/// Why a delivery failed. Holds no password.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeliverError {
    /// The database could not be reached.
    #[error(transparent)]
    Connect(#[from] crate::dbconn::ConnectError),
    /// The database refused a statement.
    #[error("the target database refused the delivery: {0}")]
    Db(String),
    /// The pulled file could not be read, or the target file written.
    #[error("{0}")]
    Io(String),
    /// The version does not fit the target (a key that is not unique, a missing key).
    #[error("{0}")]
    Data(String),
}

/// One column a delivery writes.
#[derive(Clone, Debug)]
pub struct Column {
    /// The 信息项 name (also the column's).
    pub name: String,
    /// Its type.
    pub data_type: DataType,
    /// Its 数据长度.
    pub length: Option<u32>,
}

impl Column {
    /// The columns for `fields` of `items` (every item when `None`), in item order.
    pub fn of(items: &[Item], fields: Option<&[String]>) -> Vec<Column> {
        items
            .iter()
            .filter(|i| fields.is_none_or(|f| f.contains(&i.name)))
            .map(|i| Column {
                name: i.name.clone(),
                data_type: i.data_type,
                length: i.length,
            })
            .collect()
    }
}

/// Which server's dialect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// MySQL and MariaDB.
    Mysql,
}

impl Dialect {
    /// `ident` quoted so the server reads it as given.
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::Postgres => format!("\"{}\"", ident.replace('"', "\"\"")),
            Dialect::Mysql => format!("`{}`", ident.replace('`', "``")),
        }
    }

    /// A table name (`name`, or `schema.name`) quoted part by part.
    pub fn table(self, name: &str) -> String {
        name.split('.')
            .map(|p| self.quote(p))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// The column type for `c`.
    pub fn column_type(self, c: &Column) -> String {
        let text_len = c.length.filter(|l| (1..=4000).contains(l));
        match (self, c.data_type) {
            (_, DataType::C) => match text_len {
                Some(l) => format!("VARCHAR({l})"),
                None if self == Dialect::Mysql => "LONGTEXT".into(),
                None => "TEXT".into(),
            },
            (Dialect::Postgres, DataType::M | DataType::G) => "TEXT".into(),
            (Dialect::Mysql, DataType::M | DataType::G) => "LONGTEXT".into(),
            (_, DataType::I) => "BIGINT".into(),
            (Dialect::Postgres, DataType::N | DataType::Y) => "NUMERIC".into(),
            (Dialect::Mysql, DataType::N | DataType::Y) => "DECIMAL(38,10)".into(),
            (Dialect::Postgres, DataType::B | DataType::F) => "DOUBLE PRECISION".into(),
            (Dialect::Mysql, DataType::B | DataType::F) => "DOUBLE".into(),
            (_, DataType::D) => "DATE".into(),
            (Dialect::Postgres, DataType::T) => "TIMESTAMP".into(),
            (Dialect::Mysql, DataType::T) => "DATETIME".into(),
            (_, DataType::L) => "BOOLEAN".into(),
        }
    }

    /// The expression that turns text cell `v` (an expression) into `c`'s type.
    pub fn cast(self, c: &Column, v: &str) -> String {
        match (self, c.data_type) {
            (_, DataType::C | DataType::M | DataType::G) => v.to_owned(),
            (_, DataType::L) => format!(
                "CASE WHEN {v} IN ('true', '1', '是') THEN TRUE WHEN {v} IN ('false', '0', '否') THEN FALSE END"
            ),
            (Dialect::Postgres, _) => format!("CAST({v} AS {})", self.column_type(c)),
            (Dialect::Mysql, DataType::I) => format!("CAST({v} AS SIGNED)"),
            (Dialect::Mysql, DataType::B | DataType::F) => format!("CAST({v} AS DOUBLE)"),
            (Dialect::Mysql, _) => format!("CAST({v} AS {})", self.column_type(c)),
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` for the target, keyed by `key`.
    pub fn create_table(self, table: &str, columns: &[Column], key: &[String]) -> String {
        let cols: Vec<String> = columns
            .iter()
            .map(|c| {
                let not_null = if key.contains(&c.name) {
                    " NOT NULL"
                } else {
                    ""
                };
                format!("{} {}{not_null}", self.quote(&c.name), self.column_type(c))
            })
            .collect();
        let keys: Vec<String> = key.iter().map(|k| self.quote(k)).collect();
        let charset = if self == Dialect::Mysql {
            " DEFAULT CHARSET = utf8mb4"
        } else {
            ""
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({}, PRIMARY KEY ({})){charset}",
            self.table(table),
            cols.join(", "),
            keys.join(", ")
        )
    }

    /// `CREATE TABLE IF NOT EXISTS` for [`META_TABLE`].
    pub fn create_meta(self) -> String {
        let (text, time) = match self {
            Dialect::Postgres => ("TEXT", "TIMESTAMPTZ"),
            Dialect::Mysql => ("VARCHAR(255)", "DATETIME"),
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {META_TABLE} (node VARCHAR(64) NOT NULL, \
             subscription VARCHAR(64) NOT NULL, target_table {text} NOT NULL, \
             code {text} NOT NULL, provider {text} NOT NULL, version BIGINT NOT NULL, \
             delivered_at {time} NOT NULL, PRIMARY KEY (node, subscription))"
        )
    }
}

/// Whether `name` may name a target table: `name` or `schema.name`, no quotes or controls.
pub fn valid_table(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    (1..=2).contains(&parts.len())
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.len() <= 63
                && !p.chars().any(|c| c.is_control() || matches!(c, '"' | '`'))
        })
}

/// Opens the pulled CSV at `path` and checks its header is `columns`, in order.
pub fn open_csv(
    path: &Path,
    columns: &[Column],
) -> Result<csv::Reader<std::fs::File>, DeliverError> {
    let io = |e: &dyn std::fmt::Display| DeliverError::Io(format!("{}: {e}", path.display()));
    let mut r = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| io(&e))?;
    let header = r.headers().map_err(|e| io(&e))?;
    if header.len() != columns.len() || header.iter().zip(columns).any(|(h, c)| h != c.name) {
        return Err(io(&"the pulled file's columns are not the subscription's"));
    }
    Ok(r)
}

/// Reads the pulled CSV at `path` (header checked by [`open_csv`]), calling `row` with each
/// record (empty cells are nulls); returns the rows read.
pub fn read_csv(
    path: &Path,
    columns: &[Column],
    mut row: impl FnMut(&csv::StringRecord) -> Result<(), DeliverError>,
) -> Result<u64, DeliverError> {
    let mut r = open_csv(path, columns)?;
    let mut rec = csv::StringRecord::new();
    let mut n = 0u64;
    while r
        .read_record(&mut rec)
        .map_err(|e| DeliverError::Io(format!("{}: {e}", path.display())))?
    {
        row(&rec)?;
        n += 1;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_types_and_casts_per_dialect() {
        let c = Column {
            name: "金\"额".into(),
            data_type: DataType::N,
            length: Some(12),
        };
        assert_eq!(Dialect::Postgres.quote(&c.name), "\"金\"\"额\"");
        assert_eq!(Dialect::Mysql.quote("a`b"), "`a``b`");
        assert_eq!(Dialect::Mysql.table("db.t"), "`db`.`t`");
        assert_eq!(Dialect::Postgres.cast(&c, "s.x"), "CAST(s.x AS NUMERIC)");
        let i = Column {
            name: "n".into(),
            data_type: DataType::I,
            length: None,
        };
        assert_eq!(Dialect::Mysql.cast(&i, "v"), "CAST(v AS SIGNED)");
        let sql = Dialect::Postgres.create_table("t", &[i], &["n".into()]);
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS \"t\" (\"n\" BIGINT NOT NULL, PRIMARY KEY (\"n\"))"
        );
        assert!(valid_table("public.people") && !valid_table("a.b.c") && !valid_table("x\"y"));
    }
}
