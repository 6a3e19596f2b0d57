//! Reading a PostgreSQL table or query into a staging CSV file whose header is the entry's
//! 信息项: `COPY (SELECT …) TO STDOUT (FORMAT csv)` streamed to the file, in one read-only
//! repeatable-read transaction (one consistent snapshot), so no row is ever held in memory.
//!
//! Each 信息项 reads the column of the same name, or the one `columns` maps it to; a column the
//! entry does not list is not read (the minimum, as 个人信息保护法 asks). Before any row is read,
//! each column's type is checked against its 信息项's 数据类型 (a `date` column cannot hold a
//! 整型 item); the cells themselves are checked by the publisher. Values are written as the
//! 信息项 rules expect them: booleans as `true`/`false`, dates as `YYYY-MM-DD`, timestamps as
//! `YYYY-MM-DD HH:MM:SS` in the federation's time zone. A table is read in primary-key order
//! (all columns when it has none), so unchanged data gives the same chunks and no new version.
//!
//! Layering: a leaf of [`crate::collect`]; connects through [`crate::dbconn`].

use std::sync::atomic::{AtomicU64, Ordering};

use futures::StreamExt as _;
use huitong_config::SourceConfig;
use huitong_protocol::catalogue::{DataType, Item};
use tokio_postgres::types::Type;

use super::stream::{Closed, Layout, Sink};
use super::{CollectError, Reading, SEND_AT};
use crate::secrets::Password;

/// `"name"` with inner quotes doubled: an identifier PostgreSQL reads as given.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn is_text(t: &Type) -> bool {
    [
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::UNKNOWN,
    ]
    .contains(t)
}

fn is_int(t: &Type) -> bool {
    [Type::INT2, Type::INT4, Type::INT8].contains(t)
}

fn is_number(t: &Type) -> bool {
    is_int(t) || [Type::NUMERIC, Type::FLOAT4, Type::FLOAT8].contains(t)
}

/// Whether a column of type `t` can hold values of 数据类型 `d` at all.
fn compatible(d: DataType, t: &Type) -> bool {
    match d {
        DataType::C | DataType::M | DataType::G => *t != Type::BYTEA,
        DataType::I => is_int(t) || *t == Type::NUMERIC || is_text(t),
        DataType::N | DataType::Y | DataType::B | DataType::F => is_number(t) || is_text(t),
        DataType::D => *t == Type::DATE || is_text(t),
        DataType::T => [Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(t) || is_text(t),
        DataType::L => *t == Type::BOOL || is_int(t) || is_text(t),
    }
}

/// The select expression that writes column `c` of type `t` as the 信息项 rules expect.
fn expression(c: &str, t: &Type) -> String {
    let c = quote_ident(c);
    if *t == Type::BOOL {
        format!("CASE WHEN {c} THEN 'true' WHEN NOT {c} THEN 'false' END")
    } else if [Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(t) {
        format!("to_char({c}, 'YYYY-MM-DD HH24:MI:SS')")
    } else if *t == Type::DATE {
        format!("to_char({c}, 'YYYY-MM-DD')")
    } else {
        c
    }
}

/// The header line: the 信息项 names as CSV.
fn header(items: &[Item]) -> Result<Vec<u8>, std::io::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(items.iter().map(|i| i.name.as_str()))
        .map_err(std::io::Error::other)?;
    w.into_inner()
        .map_err(|e| std::io::Error::other(e.to_string()))
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
    let client = crate::dbconn::postgres(&src.url, password, &format!("[sources.\"{code}\"]"))
        .await
        .map_err(|e| CollectError::Connect {
            code: code.clone(),
            at: e.at,
            why: e.why,
        })?;
    read(&client, src, items, reading, (out, bytes))
        .await
        .map_err(|e| match e {
            Failure::Db(why) => CollectError::Source { code, why },
            Failure::Closed => CollectError::Stream("the publisher stopped reading".into()),
        })
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

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Self {
        Failure::Db(crate::dbconn::describe_pg(&e))
    }
}

async fn read(
    client: &tokio_postgres::Client,
    src: &SourceConfig,
    items: &[Item],
    Reading { since, tz }: Reading,
    (out, bytes): (&Sink, &AtomicU64),
) -> Result<Option<String>, Failure> {
    super::check_mapping(src, items).map_err(Failure::Db)?;
    client
        .batch_execute(&format!(
            "SET client_encoding = 'UTF8'; SET DateStyle = 'ISO, YMD'; SET TimeZone = '{}'; \
             SET statement_timeout = '30min'; SET lock_timeout = '60s'; SET work_mem = '256MB'; \
             SET idle_in_transaction_session_timeout = '10min'; \
             BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            tz.name().replace('\'', "''")
        ))
        .await?;
    let from = super::from_clause(src, quote_ident);
    let probe = client.prepare(&format!("SELECT * FROM {from}")).await?;
    let columns = probe.columns();
    let mut exprs = Vec::with_capacity(items.len());
    for item in items {
        let name = src.columns.get(&item.name).unwrap_or(&item.name);
        let Some(col) = columns.iter().find(|c| c.name() == name) else {
            let have: Vec<&str> = columns.iter().map(|c| c.name()).collect();
            return Err(Failure::Db(super::missing_column(name, item, &have)));
        };
        if !compatible(item.data_type, col.type_()) {
            return Err(Failure::Db(super::wrong_type(name, col.type_(), item)));
        }
        exprs.push(expression(name, col.type_()));
    }
    // A table is read in key order when every key column is a 信息项 (so the version can carry
    // its row changes) — as integers when they all are, else by the key's text, byte by byte —
    // else by all its columns.
    let pk = match &src.table {
        Some(_) => primary_key(client, &from).await?,
        None => Vec::new(),
    };
    let key = super::key_items(src, items, &pk);
    let (filter, reached, over_latest) = match &src.watermark {
        None => (String::new(), None, false),
        Some(wm) => {
            let Some(col) = columns.iter().find(|c| c.name() == wm) else {
                let have: Vec<&str> = columns.iter().map(|c| c.name()).collect();
                return Err(Failure::Db(super::missing_watermark(wm, &have)));
            };
            let t = col.type_();
            let usable = (is_int(t) || *t == Type::NUMERIC)
                || [Type::DATE, Type::TIMESTAMP, Type::TIMESTAMPTZ].contains(t);
            if !usable {
                return Err(Failure::Db(super::watermark_type(wm, t)));
            }
            let wm = quote_ident(wm);
            let row = client
                .query_one(&format!("SELECT max({wm})::text FROM {from}"), &[])
                .await?;
            super::watermark_filter(&key, &wm, (since, row.get(0))).map_err(Failure::Db)?
        }
    };
    let key_order = super::key_order(src, &key, |name| {
        columns
            .iter()
            .any(|c| c.name() == name && is_int(c.type_()))
    });
    let order = super::order_by(src, items, (&key, &exprs, key_order), |e| {
        format!("({e})::text COLLATE \"C\"")
    });
    let copy = format!(
        "COPY (SELECT {} FROM {from}{filter}{order}) TO STDOUT (FORMAT csv)",
        exprs.join(", ")
    );
    let stream = client.copy_out(&copy).await?;
    let mut stream = std::pin::pin!(stream);
    out.layout(Layout {
        key,
        order: key_order,
        over_latest,
    });
    out.send(header(items).map_err(|e| Failure::Db(e.to_string()))?)
        .await?;
    // The server sends a message per row: gather them into pieces of about SEND_AT bytes.
    let mut piece = Vec::with_capacity(SEND_AT + (1 << 12));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        piece.extend_from_slice(&chunk);
        bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        if piece.len() >= SEND_AT {
            out.send(std::mem::replace(
                &mut piece,
                Vec::with_capacity(SEND_AT + (1 << 12)),
            ))
            .await?;
        }
    }
    out.send(piece).await?;
    client.batch_execute("COMMIT").await?;
    Ok(reached)
}

/// The primary-key columns of the table `from` (quoted), in key order.
async fn primary_key(client: &tokio_postgres::Client, from: &str) -> Result<Vec<String>, Failure> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) \
             WHERE i.indrelid = $1::text::regclass AND i.indisprimary \
             ORDER BY array_position(i.indkey::int2[], a.attnum)",
            &[&from],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_types_checked() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        let mut src = SourceConfig {
            table: Some("hr.people".into()),
            ..SourceConfig::new(
                "301001/000001",
                huitong_config::SourceKind::Postgres,
                "postgres://c@h/db",
            )
        };
        assert_eq!(
            crate::collect::from_clause(&src, quote_ident),
            "\"hr\".\"people\""
        );
        src.table = None;
        src.query = Some("SELECT 1 AS x;".into());
        assert_eq!(
            crate::collect::from_clause(&src, quote_ident),
            "(\nSELECT 1 AS x\n) AS huitong_source"
        );
        assert!(compatible(DataType::I, &Type::INT8));
        assert!(!compatible(DataType::I, &Type::DATE));
        assert!(!compatible(DataType::D, &Type::INT4));
        assert!(compatible(DataType::T, &Type::TIMESTAMPTZ));
        assert!(!compatible(DataType::C, &Type::BYTEA));
        assert_eq!(
            expression("ok", &Type::BOOL),
            "CASE WHEN \"ok\" THEN 'true' WHEN NOT \"ok\" THEN 'false' END"
        );
    }
}
