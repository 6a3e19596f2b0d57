//! Delivery into a PostgreSQL table: the target table is created from the 信息项 when missing;
//! in one transaction the pulled CSV is streamed into a temporary table with `COPY FROM STDIN`,
//! rows whose key is gone are deleted, the others upserted by key (a row that did not change is
//! not rewritten), and [`META_TABLE`] records the version. A version already recorded there is
//! not applied again.
//!
//! Layering: a leaf of [`crate::subscribe`]; connects through [`crate::dbconn`].

use std::path::Path;

use futures::SinkExt as _;
use tokio::io::AsyncReadExt as _;

use huitong_protocol::catalogue::DataType;

use super::sql::{Column, DeliverError, Dialect, META_TABLE};
use super::Applied;
use crate::dbconn::describe_pg;

const PG: Dialect = Dialect::Postgres;

fn db(e: tokio_postgres::Error) -> DeliverError {
    let why = describe_pg(&e);
    if why.contains("cannot affect row a second time") || why.contains("duplicate key value") {
        DeliverError::Data(format!(
            "two rows of the version have the same key; choose a --key that identifies one row ({why})"
        ))
    } else {
        DeliverError::Db(why)
    }
}

/// Time limits of a delivery's session: a statement, a lock wait, an idle transaction.
const LIMITS: &str = "SET statement_timeout = '30min'; SET lock_timeout = '60s'; \
                      SET idle_in_transaction_session_timeout = '10min'";

/// Whether the database holds `version` of `to`'s subscription, delivered into the same table
/// of the same resource (creating the metadata table when missing).
async fn holds(
    client: &tokio_postgres::Client,
    to: &super::Meta<'_>,
    version: u64,
) -> Result<bool, DeliverError> {
    client.batch_execute(&PG.create_meta()).await.map_err(db)?;
    let row = client
        .query_opt(
            &format!(
                "SELECT version, target_table, code, provider FROM {META_TABLE} \
                 WHERE node = $1 AND subscription = $2"
            ),
            &[&to.node, &to.subscription],
        )
        .await
        .map_err(db)?;
    let Some(row) = row else {
        return Ok(false);
    };
    let held: i64 = row.try_get(0).map_err(db)?;
    let (table, code, provider): (String, String, String) = (
        row.try_get(1).map_err(db)?,
        row.try_get(2).map_err(db)?,
        row.try_get(3).map_err(db)?,
    );
    Ok(held == version as i64 && table == to.table && code == to.code && provider == to.provider)
}

/// Streams the pulled CSV `csv` into `into` (`table (columns)`) with `COPY FROM STDIN`; the
/// rows copied. Every empty cell is a null, quoted or not (the csv writer quotes a lone empty
/// field).
async fn copy_file(
    client: &tokio_postgres::Client,
    into: &str,
    names: &[String],
    csv: &Path,
) -> Result<u64, DeliverError> {
    let sink = client
        .copy_in(&format!(
            "COPY {into} FROM STDIN (FORMAT csv, HEADER true, FORCE_NULL ({}))",
            names.join(", ")
        ))
        .await
        .map_err(db)?;
    let mut sink = std::pin::pin!(sink);
    let io = |e: std::io::Error| DeliverError::Io(format!("{}: {e}", csv.display()));
    let mut file = tokio::fs::File::open(csv).await.map_err(io)?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        sink.send(bytes::Bytes::copy_from_slice(&buf[..n]))
            .await
            .map_err(db)?;
    }
    sink.as_mut().finish().await.map_err(db)
}

/// Records `to` in [`META_TABLE`] (inside the delivery's transaction).
async fn record(client: &tokio_postgres::Client, to: &super::Meta<'_>) -> Result<(), DeliverError> {
    client
        .execute(
            &format!(
                "INSERT INTO {META_TABLE} (node, subscription, target_table, code, provider, version, delivered_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, now()) ON CONFLICT (node, subscription) DO UPDATE SET \
                 target_table = EXCLUDED.target_table, code = EXCLUDED.code, provider = EXCLUDED.provider, \
                 version = EXCLUDED.version, delivered_at = EXCLUDED.delivered_at"
            ),
            &[
                &to.node,
                &to.subscription,
                &to.table,
                &to.code,
                &to.provider,
                &(to.version as i64),
            ],
        )
        .await
        .map_err(db)?;
    Ok(())
}

/// Applies the pulled CSV `csv` (version `to.version`) to `table`. Into an empty table (the
/// first delivery) the file is copied straight in; otherwise through a temporary table, then
/// deletes and upserts by key.
pub async fn deliver(
    client: &tokio_postgres::Client,
    (table, columns, key): (&str, &[Column], &[String]),
    to: &super::Meta<'_>,
    csv: &Path,
    hold: impl std::future::Future<Output = ()>,
) -> Result<Applied, DeliverError> {
    client.batch_execute(LIMITS).await.map_err(db)?;
    if holds(client, to, to.version).await? {
        return Ok(Applied::Already);
    }
    super::sql::open_csv(csv, columns)?;
    client
        .batch_execute(&PG.create_table(table, columns, key))
        .await
        .map_err(db)?;
    let target = PG.table(table);
    let q = |c: &str| PG.quote(c);
    let names: Vec<String> = columns.iter().map(|c| q(&c.name)).collect();
    client.batch_execute("BEGIN").await.map_err(db)?;
    let empty = client
        .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {target})"), &[])
        .await
        .map_err(db)?
        .try_get::<_, bool>(0)
        .map_err(db)?;
    // PostgreSQL reads every 数据类型 but 逻辑 (是/否) as its column type by itself.
    let direct = empty && !columns.iter().any(|c| c.data_type == DataType::L);
    let rows = if direct {
        copy_file(
            client,
            &format!("{target} ({})", names.join(", ")),
            &names,
            csv,
        )
        .await?
    } else {
        let stage_cols: Vec<String> = names.iter().map(|n| format!("{n} TEXT")).collect();
        client
            .batch_execute(&format!(
                "CREATE TEMP TABLE huitong_stage ({}) ON COMMIT DROP",
                stage_cols.join(", ")
            ))
            .await
            .map_err(db)?;
        let rows = copy_file(client, "huitong_stage", &names, csv).await?;
        client
            .batch_execute(&upsert(&target, columns, key, true))
            .await
            .map_err(db)?;
        rows
    };
    record(client, to).await?;
    hold.await;
    client.batch_execute("COMMIT").await.map_err(db)?;
    Ok(Applied::Rows(rows))
}

/// Inserts or updates the staging table's rows in `target` by key (a row that did not change is
/// not rewritten), after deleting the rows whose key the staging table lacks (`whole`: the
/// staging table is the whole version) or whose key `huitong_gone` lists (row changes).
fn upsert(target: &str, columns: &[Column], key: &[String], whole: bool) -> String {
    let q = |c: &str| PG.quote(c);
    let cast = |c: &Column, side: &str| PG.cast(c, &format!("{side}.{}", q(&c.name)));
    let key_cols: Vec<&Column> = columns.iter().filter(|c| key.contains(&c.name)).collect();
    let matches = |side: &str| -> String {
        key_cols
            .iter()
            .map(|c| format!("t.{} = {}", q(&c.name), cast(c, side)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let names: Vec<String> = columns.iter().map(|c| q(&c.name)).collect();
    let values: Vec<String> = columns.iter().map(|c| cast(c, "s")).collect();
    let rest: Vec<&Column> = columns.iter().filter(|c| !key.contains(&c.name)).collect();
    let on_conflict = if rest.is_empty() {
        "DO NOTHING".to_owned()
    } else {
        let set: Vec<String> = rest
            .iter()
            .map(|c| format!("{0} = EXCLUDED.{0}", q(&c.name)))
            .collect();
        let old: Vec<String> = rest.iter().map(|c| format!("t.{}", q(&c.name))).collect();
        let new: Vec<String> = rest
            .iter()
            .map(|c| format!("EXCLUDED.{}", q(&c.name)))
            .collect();
        format!(
            "DO UPDATE SET {} WHERE ({}) IS DISTINCT FROM ({})",
            set.join(", "),
            old.join(", "),
            new.join(", ")
        )
    };
    let keys: Vec<String> = key.iter().map(|k| q(k)).collect();
    let insert = format!(
        "INSERT INTO {target} AS t ({}) SELECT {} FROM huitong_stage s ON CONFLICT ({}) {on_conflict}",
        names.join(", "),
        values.join(", "),
        keys.join(", ")
    );
    if whole {
        format!(
            "DELETE FROM {target} t WHERE NOT EXISTS (SELECT 1 FROM huitong_stage s WHERE {}); {insert}",
            matches("s")
        )
    } else {
        format!(
            "DELETE FROM {target} t USING huitong_gone g WHERE {}; {insert}",
            matches("g")
        )
    }
}

/// Applies a version's row changes — `upserts` (rows inserted or updated) and `deletes` (keys
/// deleted) — to `table`, which must hold exactly version `from` of this subscription (else
/// `Ok(None)`: the caller delivers the version whole), and must hold the version's `rows` after
/// them (else the transaction is rolled back and `Ok(None)`). The rows changed.
pub async fn apply_changes(
    client: &tokio_postgres::Client,
    (table, columns, key): (&str, &[Column], &[String]),
    (to, from, rows): (&super::Meta<'_>, u64, Option<u64>),
    (upserts, deletes): (&Path, &Path),
    hold: impl std::future::Future<Output = ()>,
) -> Result<Option<u64>, DeliverError> {
    client.batch_execute(LIMITS).await.map_err(db)?;
    if !holds(client, to, from).await? {
        return Ok(None);
    }
    let q = |c: &str| PG.quote(c);
    let names: Vec<String> = columns.iter().map(|c| q(&c.name)).collect();
    let keys: Vec<String> = key.iter().map(|k| q(k)).collect();
    let text = |n: &[String]| {
        n.iter()
            .map(|n| format!("{n} TEXT"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    client
        .batch_execute(&format!(
            "BEGIN; CREATE TEMP TABLE huitong_stage ({}) ON COMMIT DROP; \
             CREATE TEMP TABLE huitong_gone ({}) ON COMMIT DROP",
            text(&names),
            text(&keys)
        ))
        .await
        .map_err(db)?;
    let upserted = copy_file(client, "huitong_stage", &names, upserts).await?;
    let deleted = copy_file(client, "huitong_gone", &keys, deletes).await?;
    client
        .batch_execute(&upsert(&PG.table(table), columns, key, false))
        .await
        .map_err(db)?;
    // The version's rows, or the table was not the base after all: undo, deliver it whole.
    let count: i64 = client
        .query_one(&format!("SELECT count(*) FROM {}", PG.table(table)), &[])
        .await
        .map_err(db)?
        .try_get(0)
        .map_err(db)?;
    if rows.is_some_and(|r| r as i64 != count) {
        client.batch_execute("ROLLBACK").await.map_err(db)?;
        return Ok(None);
    }
    record(client, to).await?;
    hold.await;
    client.batch_execute("COMMIT").await.map_err(db)?;
    Ok(Some(upserted + deleted))
}
