//! Delivery into a MySQL or MariaDB table: the target table (utf8mb4) is created from the
//! 信息项 when missing; the pulled CSV is loaded, in multi-row inserts in strict mode, into a
//! temporary table of the target's types and key, then in one transaction rows whose key is gone
//! are deleted, the others upserted by key, and [`META_TABLE`] records the version. A version
//! already recorded there is not applied again; a version whose key is not unique is refused.
//!
//! Layering: a leaf of [`crate::subscribe`]; connects through [`crate::dbconn`].

use std::path::Path;

use mysql_async::prelude::Queryable as _;
use mysql_async::{Conn, Params, Value};

use super::sql::{Column, DeliverError, Dialect, META_TABLE};
use super::Applied;

const MY: Dialect = Dialect::Mysql;
/// Placeholders per insert statement, at most (the protocol allows 65,535).
const MAX_PLACEHOLDERS: usize = 30_000;
/// Rows per insert statement, at most.
const MAX_ROWS: usize = 1000;

fn db(e: mysql_async::Error) -> DeliverError {
    DeliverError::Db(e.to_string())
}

/// The session of a delivery: strict (a value that does not fit is an error, never truncated or
/// clamped), and a lock wait that ends.
const SESSION: &str = "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,\
                       ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION', \
                       SESSION innodb_lock_wait_timeout = 60";

/// Whether the database holds `version` of `to`'s subscription, delivered into the same table
/// of the same resource (creating the metadata table when missing).
async fn holds(conn: &mut Conn, to: &super::Meta<'_>, version: u64) -> Result<bool, DeliverError> {
    conn.query_drop(MY.create_meta()).await.map_err(db)?;
    let row: Option<mysql_async::Row> = conn
        .exec_first(
            format!(
                "SELECT version, target_table, code, provider FROM {META_TABLE} \
                 WHERE node = ? AND subscription = ?"
            ),
            (to.node, to.subscription),
        )
        .await
        .map_err(db)?;
    let Some(row) = row else {
        return Ok(false);
    };
    let text = |i: usize| -> Option<String> { row.get_opt::<String, usize>(i)?.ok() };
    let held = row.get_opt::<i64, usize>(0).and_then(Result::ok);
    Ok(held == Some(version as i64)
        && text(1).as_deref() == Some(to.table)
        && text(2).as_deref() == Some(to.code)
        && text(3).as_deref() == Some(to.provider))
}

/// A delivered cell as the staging table takes it: empty is null; a 逻辑 value as 1 or 0.
fn cell(c: &Column, v: &str) -> Value {
    if v.is_empty() {
        return Value::NULL;
    }
    if c.data_type == huitong_protocol::catalogue::DataType::L {
        return match v {
            "true" | "1" | "是" => Value::Int(1),
            "false" | "0" | "否" => Value::Int(0),
            _ => Value::NULL,
        };
    }
    Value::Bytes(v.as_bytes().to_vec())
}

/// Loads the pulled CSV `csv` (header `columns`) into temporary table `into` in multi-row
/// inserts; the rows loaded. A key given twice is refused by the table's key.
async fn load(
    conn: &mut Conn,
    into: &str,
    columns: &[Column],
    csv: &Path,
) -> Result<u64, DeliverError> {
    let mut reader = super::sql::open_csv(csv, columns)?;
    let names: Vec<String> = columns.iter().map(|c| MY.quote(&c.name)).collect();
    let per = (MAX_PLACEHOLDERS / columns.len().max(1)).clamp(1, MAX_ROWS);
    let one = format!("({})", vec!["?"; columns.len()].join(", "));
    let mut rows = 0u64;
    let mut batch: Vec<Value> = Vec::with_capacity(per * columns.len());
    let mut rec = csv::StringRecord::new();
    loop {
        let more = reader
            .read_record(&mut rec)
            .map_err(|e| DeliverError::Io(format!("{}: {e}", csv.display())))?;
        if more {
            batch.extend(columns.iter().zip(rec.iter()).map(|(c, v)| cell(c, v)));
            rows += 1;
        }
        let n = batch.len() / columns.len().max(1);
        if n == per || (!more && n > 0) {
            let stmt = format!(
                "INSERT INTO {into} ({}) VALUES {}",
                names.join(", "),
                vec![one.as_str(); n].join(", ")
            );
            conn.exec_drop(stmt, Params::Positional(std::mem::take(&mut batch)))
                .await
                .map_err(|e| {
                    let why = e.to_string();
                    if why.contains("Duplicate entry") {
                        DeliverError::Data(format!(
                            "two rows of the version have the same key; choose a --key that identifies one row ({why})"
                        ))
                    } else {
                        DeliverError::Db(why)
                    }
                })?;
        }
        if !more {
            break;
        }
    }
    Ok(rows)
}

/// Inserts or updates the staging table's rows in `target` by key.
fn upsert(target: &str, columns: &[Column], key: &[String]) -> String {
    let q = |c: &str| MY.quote(c);
    let names: Vec<String> = columns.iter().map(|c| q(&c.name)).collect();
    let rest: Vec<String> = columns
        .iter()
        .filter(|c| !key.contains(&c.name))
        .map(|c| format!("{0} = VALUES({0})", q(&c.name)))
        .collect();
    let update = if rest.is_empty() {
        // Every column is the key: nothing to update (a no-op assignment keeps the syntax).
        let k = key.first().map(|k| q(k)).unwrap_or_default();
        format!("{k} = {k}")
    } else {
        rest.join(", ")
    };
    format!(
        "INSERT INTO {target} ({0}) SELECT {0} FROM huitong_stage ON DUPLICATE KEY UPDATE {update}",
        names.join(", ")
    )
}

/// Records `to` in [`META_TABLE`], commits after `hold`, and drops the temporary tables.
async fn record_and_commit(
    conn: &mut Conn,
    to: &super::Meta<'_>,
    hold: impl std::future::Future<Output = ()>,
) -> Result<(), DeliverError> {
    conn.exec_drop(
        format!(
            "INSERT INTO {META_TABLE} (node, subscription, target_table, code, provider, version, delivered_at) \
             VALUES (?, ?, ?, ?, ?, ?, NOW()) ON DUPLICATE KEY UPDATE target_table = VALUES(target_table), \
             code = VALUES(code), provider = VALUES(provider), version = VALUES(version), \
             delivered_at = VALUES(delivered_at)"
        ),
        (
            to.node,
            to.subscription,
            to.table,
            to.code,
            to.provider,
            to.version as i64,
        ),
    )
    .await
    .map_err(db)?;
    hold.await;
    conn.query_drop("COMMIT").await.map_err(db)?;
    conn.query_drop("DROP TEMPORARY TABLE IF EXISTS huitong_stage, huitong_gone")
        .await
        .map_err(db)
}

/// Makes an empty temporary staging table of `target`'s types and key.
async fn stage(conn: &mut Conn, target: &str) -> Result<(), DeliverError> {
    conn.query_drop("DROP TEMPORARY TABLE IF EXISTS huitong_stage, huitong_gone")
        .await
        .map_err(db)?;
    conn.query_drop(format!(
        "CREATE TEMPORARY TABLE huitong_stage LIKE {target}"
    ))
    .await
    .map_err(db)
}

/// Applies the pulled CSV `csv` (version `to.version`) to `table`.
pub async fn deliver(
    conn: &mut Conn,
    (table, columns, key): (&str, &[Column], &[String]),
    to: &super::Meta<'_>,
    csv: &Path,
    hold: impl std::future::Future<Output = ()>,
) -> Result<Applied, DeliverError> {
    conn.query_drop(SESSION).await.map_err(db)?;
    if holds(conn, to, to.version).await? {
        return Ok(Applied::Already);
    }
    super::sql::open_csv(csv, columns)?;
    conn.query_drop(MY.create_table(table, columns, key))
        .await
        .map_err(db)?;
    let target = MY.table(table);
    // The staging table has the target's types and key: each value is converted (strictly)
    // as it is loaded, and a key given twice is refused there.
    stage(conn, &target).await?;
    let rows = load(conn, "huitong_stage", columns, csv).await?;
    let matches: Vec<String> = key
        .iter()
        .map(|k| format!("{target}.{0} = s.{0}", MY.quote(k)))
        .collect();
    conn.query_drop("START TRANSACTION").await.map_err(db)?;
    conn.query_drop(format!(
        "DELETE FROM {target} WHERE NOT EXISTS (SELECT 1 FROM huitong_stage s WHERE {})",
        matches.join(" AND ")
    ))
    .await
    .map_err(db)?;
    conn.query_drop(upsert(&target, columns, key))
        .await
        .map_err(db)?;
    record_and_commit(conn, to, hold).await?;
    Ok(Applied::Rows(rows))
}

/// Applies a version's row changes — `upserts` (rows inserted or updated) and `deletes` (keys
/// deleted) — to `table`, which must hold exactly version `from` of this subscription (else
/// `Ok(None)`: the caller delivers the version whole), and must hold the version's `rows` after
/// them (else the transaction is rolled back and `Ok(None)`). The rows changed.
pub async fn apply_changes(
    conn: &mut Conn,
    (table, columns, key): (&str, &[Column], &[String]),
    (to, from, rows): (&super::Meta<'_>, u64, Option<u64>),
    (upserts, deletes): (&Path, &Path),
    hold: impl std::future::Future<Output = ()>,
) -> Result<Option<u64>, DeliverError> {
    conn.query_drop(SESSION).await.map_err(db)?;
    if !holds(conn, to, from).await? {
        return Ok(None);
    }
    let target = MY.table(table);
    stage(conn, &target).await?;
    // In the key's order (the deleted keys' file has its columns so); of the target's own types
    // and collation.
    let key_columns: Vec<Column> = key
        .iter()
        .filter_map(|k| columns.iter().find(|c| &c.name == k))
        .cloned()
        .collect();
    let key_list: Vec<String> = key.iter().map(|k| MY.quote(k)).collect();
    conn.query_drop(format!(
        "CREATE TEMPORARY TABLE huitong_gone AS SELECT {} FROM {target} WHERE 1 = 0",
        key_list.join(", ")
    ))
    .await
    .map_err(db)?;
    let upserted = load(conn, "huitong_stage", columns, upserts).await?;
    let deleted = load(conn, "huitong_gone", &key_columns, deletes).await?;
    let matches: Vec<String> = key
        .iter()
        .map(|k| format!("{target}.{0} = g.{0}", MY.quote(k)))
        .collect();
    conn.query_drop("START TRANSACTION").await.map_err(db)?;
    conn.query_drop(format!(
        "DELETE {target} FROM {target} JOIN huitong_gone g ON {}",
        matches.join(" AND ")
    ))
    .await
    .map_err(db)?;
    conn.query_drop(upsert(&target, columns, key))
        .await
        .map_err(db)?;
    // The version's rows, or the table was not the base after all: undo, deliver it whole.
    let count: Option<mysql_async::Row> = conn
        .query_first(format!("SELECT COUNT(*) FROM {target}"))
        .await
        .map_err(db)?;
    let count = count
        .and_then(|r| r.get_opt::<i64, usize>(0))
        .and_then(Result::ok);
    if rows.is_some_and(|r| Some(r as i64) != count) {
        conn.query_drop("ROLLBACK").await.map_err(db)?;
        return Ok(None);
    }
    record_and_commit(conn, to, hold).await?;
    Ok(Some(upserted + deleted))
}
