//! Delivery into a MySQL or MariaDB table: the target table (utf8mb4) is created from the
//! 信息项 when missing; the pulled CSV is loaded into a temporary table in multi-row inserts,
//! then in one transaction rows whose key is gone are deleted, the others upserted by key, and
//! [`META_TABLE`] records the version. A version already recorded there is not applied again; a
//! version whose key is not unique is refused (MySQL would silently keep the last row).
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

/// Applies the pulled CSV `csv` (version `to.version`) to `table`.
pub async fn deliver(
    conn: &mut Conn,
    (table, columns, key): (&str, &[Column], &[String]),
    to: &super::Meta<'_>,
    csv: &Path,
    hold: impl std::future::Future<Output = ()>,
) -> Result<Applied, DeliverError> {
    conn.query_drop(MY.create_meta()).await.map_err(db)?;
    let done: Option<i64> = conn
        .exec_first(
            format!("SELECT version FROM {META_TABLE} WHERE subscription = ?"),
            (to.subscription,),
        )
        .await
        .map_err(db)?;
    if done == Some(to.version as i64) {
        return Ok(Applied::Already);
    }
    let mut reader = super::sql::open_csv(csv, columns)?;
    conn.query_drop(MY.create_table(table, columns, key))
        .await
        .map_err(db)?;
    let q = |c: &str| MY.quote(c);
    let stage_cols: Vec<String> = columns
        .iter()
        .map(|c| format!("{} LONGTEXT", q(&c.name)))
        .collect();
    conn.query_drop("DROP TEMPORARY TABLE IF EXISTS huitong_stage")
        .await
        .map_err(db)?;
    conn.query_drop(format!(
        "CREATE TEMPORARY TABLE huitong_stage ({}) DEFAULT CHARSET = utf8mb4",
        stage_cols.join(", ")
    ))
    .await
    .map_err(db)?;
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
            batch.extend(rec.iter().map(|v| {
                if v.is_empty() {
                    Value::NULL
                } else {
                    Value::Bytes(v.as_bytes().to_vec())
                }
            }));
            rows += 1;
        }
        let n = batch.len() / columns.len().max(1);
        if n == per || (!more && n > 0) {
            let stmt = format!(
                "INSERT INTO huitong_stage VALUES {}",
                vec![one.as_str(); n].join(", ")
            );
            conn.exec_drop(stmt, Params::Positional(std::mem::take(&mut batch)))
                .await
                .map_err(db)?;
        }
        if !more {
            break;
        }
    }
    let key_cols: Vec<&Column> = columns.iter().filter(|c| key.contains(&c.name)).collect();
    let key_list: Vec<String> = key_cols.iter().map(|c| q(&c.name)).collect();
    let (total, distinct): (i64, i64) = conn
        .query_first(format!(
            "SELECT COUNT(*), COUNT(DISTINCT {}) FROM huitong_stage",
            key_list.join(", ")
        ))
        .await
        .map_err(db)?
        .unwrap_or((0, 0));
    if total != distinct {
        return Err(DeliverError::Data(format!(
            "{} row(s) of the version repeat a key or have none; choose a --key that identifies one row",
            total - distinct
        )));
    }
    let target = MY.table(table);
    let cast = |c: &Column| MY.cast(c, &format!("s.{}", q(&c.name)));
    let matches: Vec<String> = key_cols
        .iter()
        .map(|c| format!("{target}.{} = {}", q(&c.name), cast(c)))
        .collect();
    let names: Vec<String> = columns.iter().map(|c| q(&c.name)).collect();
    let values: Vec<String> = columns.iter().map(cast).collect();
    let rest: Vec<String> = columns
        .iter()
        .filter(|c| !key.contains(&c.name))
        .map(|c| format!("{0} = VALUES({0})", q(&c.name)))
        .collect();
    let update = if rest.is_empty() {
        // Every column is the key: nothing to update (a no-op assignment keeps the syntax).
        let k = key_list.first().cloned().unwrap_or_default();
        format!("{k} = {k}")
    } else {
        rest.join(", ")
    };
    conn.query_drop("START TRANSACTION").await.map_err(db)?;
    conn.query_drop(format!(
        "DELETE FROM {target} WHERE NOT EXISTS (SELECT 1 FROM huitong_stage s WHERE {})",
        matches.join(" AND ")
    ))
    .await
    .map_err(db)?;
    conn.query_drop(format!(
        "INSERT INTO {target} ({}) SELECT {} FROM huitong_stage s ON DUPLICATE KEY UPDATE {update}",
        names.join(", "),
        values.join(", ")
    ))
    .await
    .map_err(db)?;
    conn.exec_drop(
        format!(
            "INSERT INTO {META_TABLE} (subscription, code, provider, version, delivered_at) \
             VALUES (?, ?, ?, ?, NOW()) ON DUPLICATE KEY UPDATE code = VALUES(code), \
             provider = VALUES(provider), version = VALUES(version), delivered_at = VALUES(delivered_at)"
        ),
        (to.subscription, to.code, to.provider, to.version as i64),
    )
    .await
    .map_err(db)?;
    hold.await;
    conn.query_drop("COMMIT").await.map_err(db)?;
    conn.query_drop("DROP TEMPORARY TABLE IF EXISTS huitong_stage")
        .await
        .map_err(db)?;
    Ok(Applied::Rows(rows))
}
