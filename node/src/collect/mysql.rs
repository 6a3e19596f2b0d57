//! Reading a MySQL or MariaDB table or query into the staging CSV, as [`super::postgres`] does
//! for PostgreSQL: one read-only consistent-snapshot transaction, rows streamed from the server
//! one at a time (never the whole table in memory), each 信息项's column type checked before
//! any row is read, dates and times written as the 信息项 rules expect (in the federation's UTC
//! offset), a table read in primary-key order.
//!
//! Layering: a leaf of [`crate::collect`]; connects through [`crate::dbconn`].

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{Offset as _, TimeZone as _};
use huitong_config::SourceConfig;
use huitong_protocol::catalogue::{DataType, Item};
use mysql_async::consts::ColumnType;
use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Value};

use super::stream::{Closed, Layout, Sink};
use super::{CollectError, Reading, SEND_AT};
use crate::secrets::Password;

/// `` `name` `` with inner backquotes doubled.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn is_text(t: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_STRING
            | MYSQL_TYPE_BLOB
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_ENUM
            | MYSQL_TYPE_JSON
    )
}

fn is_int(t: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG
    )
}

fn is_number(t: ColumnType) -> bool {
    use ColumnType::*;
    is_int(t)
        || matches!(
            t,
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL | MYSQL_TYPE_FLOAT | MYSQL_TYPE_DOUBLE
        )
}

fn is_datetime(t: ColumnType) -> bool {
    use ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 | MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2
    )
}

fn is_date(t: ColumnType) -> bool {
    matches!(
        t,
        ColumnType::MYSQL_TYPE_DATE | ColumnType::MYSQL_TYPE_NEWDATE
    )
}

/// Whether a column of type `t` can hold values of 数据类型 `d` at all.
fn compatible(d: DataType, t: ColumnType) -> bool {
    match d {
        DataType::C | DataType::M | DataType::G => true,
        DataType::I => is_int(t) || is_number(t) || is_text(t),
        DataType::N | DataType::Y | DataType::B | DataType::F => is_number(t) || is_text(t),
        DataType::D => is_date(t) || is_text(t),
        DataType::T => is_datetime(t) || is_text(t),
        DataType::L => is_int(t) || is_text(t),
    }
}

/// The select expression that writes column `c` of type `t` as the 信息项 rules expect.
fn expression(c: &str, t: ColumnType) -> String {
    let c = quote(c);
    if is_datetime(t) {
        format!("DATE_FORMAT({c}, '%Y-%m-%d %H:%i:%s')")
    } else if is_date(t) {
        format!("DATE_FORMAT({c}, '%Y-%m-%d')")
    } else {
        c
    }
}

/// The federation's offset from UTC now, as MySQL takes it (`+08:00`): named zones need the
/// server's zone tables, which are often not loaded.
fn offset(tz: chrono_tz::Tz) -> String {
    let secs = tz
        .offset_from_utc_datetime(&chrono::Utc::now().naive_utc())
        .fix()
        .local_minus_utc();
    let (sign, secs) = if secs < 0 { ('-', -secs) } else { ('+', secs) };
    format!("{sign}{:02}:{:02}", secs / 3600, secs % 3600 / 60)
}

enum Failure {
    Db(String),
    Closed,
}

impl From<Closed> for Failure {
    fn from(_: Closed) -> Self {
        Failure::Closed
    }
}

impl From<mysql_async::Error> for Failure {
    fn from(e: mysql_async::Error) -> Self {
        Failure::Db(e.to_string())
    }
}

/// Streams the source of `src` as CSV text (the 信息项 header first) into `out`, adding the
/// bytes read to `bytes` as they arrive; the watermark reached, if the source has one.
pub async fn extract(
    src: &SourceConfig,
    password: Option<&Password>,
    items: &[Item],
    reading: Reading,
    (out, bytes): (&Sink, &AtomicU64),
) -> Result<Option<String>, CollectError> {
    let code = src.code.clone();
    let mut conn = crate::dbconn::mysql(&src.url, password, &format!("[sources.\"{code}\"]"))
        .await
        .map_err(|e| CollectError::Connect {
            code: code.clone(),
            at: e.at,
            why: e.why,
        })?;
    let result = read(&mut conn, src, items, reading, (out, bytes)).await;
    if let Err(e) = conn.disconnect().await {
        tracing::debug!(error = %e, "closing the source database connection");
    }
    result.map_err(|e| match e {
        Failure::Db(why) => CollectError::Source { code, why },
        Failure::Closed => CollectError::Stream("the publisher stopped reading".into()),
    })
}

/// The CSV text a writer made.
fn text_of(w: csv::Writer<Vec<u8>>) -> Result<Vec<u8>, Failure> {
    w.into_inner().map_err(|e| Failure::Db(e.to_string()))
}

async fn read(
    conn: &mut Conn,
    src: &SourceConfig,
    items: &[Item],
    Reading { since, tz }: Reading,
    (out, bytes): (&Sink, &AtomicU64),
) -> Result<Option<String>, Failure> {
    super::check_mapping(src, items).map_err(Failure::Db)?;
    conn.query_drop(format!(
        "SET NAMES utf8mb4; SET time_zone = '{}'; SET SESSION innodb_lock_wait_timeout = 60; \
         SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        offset(tz)
    ))
    .await?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        .await?;
    let from = super::from_clause(src, quote);
    let columns: Vec<(String, ColumnType)> = {
        let probe = conn
            .query_iter(format!("SELECT * FROM {from} LIMIT 0"))
            .await?;
        let cols = probe
            .columns_ref()
            .iter()
            .map(|c| (c.name_str().into_owned(), c.column_type()))
            .collect();
        probe.drop_result().await?;
        cols
    };
    let mut exprs = Vec::with_capacity(items.len());
    for item in items {
        let name = src.columns.get(&item.name).unwrap_or(&item.name);
        let Some((_, t)) = columns.iter().find(|(c, _)| c == name) else {
            let have: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
            return Err(Failure::Db(super::missing_column(name, item, &have)));
        };
        if !compatible(item.data_type, *t) {
            let type_name = format!("{t:?}");
            let type_name = type_name.trim_start_matches("MYSQL_TYPE_").to_lowercase();
            return Err(Failure::Db(super::wrong_type(name, type_name, item)));
        }
        exprs.push(expression(name, *t));
    }
    // A table is read in key order when every key column is a 信息项 (so the version can carry
    // its row changes) — as integers when they all are, else by the key's text, byte by byte —
    // else by all its columns.
    let pk: Vec<String> = match &src.table {
        Some(t) => {
            let table = t.rsplit('.').next().unwrap_or(t);
            conn.exec(
                "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY ORDINAL_POSITION",
                (table,),
            )
            .await?
        }
        None => Vec::new(),
    };
    let key = super::key_items(src, items, &pk);
    let (filter, reached, over_latest) = match &src.watermark {
        None => (String::new(), None, false),
        Some(wm) => {
            let Some((_, t)) = columns.iter().find(|(c, _)| c == wm) else {
                let have: Vec<&str> = columns.iter().map(|(c, _)| c.as_str()).collect();
                return Err(Failure::Db(super::missing_watermark(wm, &have)));
            };
            let usable = is_int(*t)
                || matches!(
                    t,
                    ColumnType::MYSQL_TYPE_DECIMAL | ColumnType::MYSQL_TYPE_NEWDECIMAL
                )
                || is_date(*t)
                || is_datetime(*t);
            if !usable {
                let type_name = format!("{t:?}");
                let type_name = type_name.trim_start_matches("MYSQL_TYPE_").to_lowercase();
                return Err(Failure::Db(super::watermark_type(wm, type_name)));
            }
            let wm = quote(wm);
            let max: Option<Option<String>> = conn
                .query_first(format!("SELECT CAST(MAX({wm}) AS CHAR) FROM {from}"))
                .await?;
            super::watermark_filter(&key, &wm, (since, max.flatten())).map_err(Failure::Db)?
        }
    };
    let key_order = super::key_order(src, &key, |name| {
        columns.iter().any(|(c, t)| c == name && is_int(*t))
    });
    let order = super::order_by(src, items, (&key, &exprs, key_order), |e| {
        format!("CAST({e} AS CHAR) COLLATE utf8mb4_bin")
    });
    let mut rows = conn
        .query_iter(format!(
            "SELECT {} FROM {from}{filter}{order}",
            exprs.join(", ")
        ))
        .await?;
    out.layout(Layout {
        key,
        order: key_order,
        over_latest,
    });
    let mut csv = csv::Writer::from_writer(Vec::with_capacity(1 << 16));
    csv.write_record(items.iter().map(|i| i.name.as_str()))
        .map_err(|e| Failure::Db(e.to_string()))?;
    let mut cells: Vec<String> = Vec::with_capacity(items.len());
    while let Some(row) = rows.next().await? {
        cells.clear();
        for (i, item) in items.iter().enumerate() {
            cells.push(match row.as_ref(i) {
                None | Some(Value::NULL) => String::new(),
                Some(Value::Bytes(b)) => String::from_utf8(b.clone()).map_err(|_| {
                    Failure::Db(format!(
                        "a value of 信息项 {:?} is not UTF-8 text; set the column's character set to utf8mb4",
                        item.name
                    ))
                })?,
                Some(other) => other.as_sql(true).trim_matches('\'').to_owned(),
            });
        }
        csv.write_record(&cells)
            .map_err(|e| Failure::Db(e.to_string()))?;
        if csv.get_ref().len() >= SEND_AT {
            let full = std::mem::replace(&mut csv, csv::Writer::from_writer(Vec::new()));
            let buf = text_of(full)?;
            bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            out.send(buf).await?;
        }
    }
    let buf = text_of(csv)?;
    bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
    out.send(buf).await?;
    drop(rows);
    conn.query_drop("COMMIT").await?;
    Ok(reached)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_types_and_the_offset() {
        assert_eq!(quote("a`b"), "`a``b`");
        assert!(compatible(DataType::I, ColumnType::MYSQL_TYPE_LONGLONG));
        assert!(!compatible(DataType::D, ColumnType::MYSQL_TYPE_LONG));
        assert!(!compatible(DataType::I, ColumnType::MYSQL_TYPE_DATE));
        assert_eq!(
            expression("d", ColumnType::MYSQL_TYPE_DATE),
            "DATE_FORMAT(`d`, '%Y-%m-%d')"
        );
        let tz: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        assert_eq!(offset(tz), "+08:00");
    }
}
