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

use super::sql::{Column, DeliverError, Dialect, META_TABLE};
use super::Applied;
use crate::dbconn::describe_pg;

const PG: Dialect = Dialect::Postgres;

fn db(e: tokio_postgres::Error) -> DeliverError {
    let why = describe_pg(&e);
    if why.contains("cannot affect row a second time") {
        DeliverError::Data(format!(
            "two rows of the version have the same key; choose a --key that identifies one row ({why})"
        ))
    } else {
        DeliverError::Db(why)
    }
}

/// The version `subscription` delivered into the database, if any (creating the metadata
/// table when missing).
async fn delivered(
    client: &tokio_postgres::Client,
    subscription: &str,
) -> Result<Option<u64>, DeliverError> {
    client.batch_execute(&PG.create_meta()).await.map_err(db)?;
    let row = client
        .query_opt(
            &format!("SELECT version FROM {META_TABLE} WHERE subscription = $1"),
            &[&subscription],
        )
        .await
        .map_err(db)?;
    Ok(row.map(|r| r.get::<_, i64>(0).max(0) as u64))
}

/// Applies the pulled CSV `csv` (version `to.version`) to `table`.
pub async fn deliver(
    client: &tokio_postgres::Client,
    (table, columns, key): (&str, &[Column], &[String]),
    to: &super::Meta<'_>,
    csv: &Path,
    hold: impl std::future::Future<Output = ()>,
) -> Result<Applied, DeliverError> {
    if delivered(client, to.subscription).await? == Some(to.version) {
        return Ok(Applied::Already);
    }
    super::sql::open_csv(csv, columns)?;
    client
        .batch_execute(&PG.create_table(table, columns, key))
        .await
        .map_err(db)?;
    let target = PG.table(table);
    let q = |c: &str| PG.quote(c);
    let stage_cols: Vec<String> = columns
        .iter()
        .map(|c| format!("{} TEXT", q(&c.name)))
        .collect();
    client
        .batch_execute(&format!(
            "BEGIN; CREATE TEMP TABLE huitong_stage ({}) ON COMMIT DROP",
            stage_cols.join(", ")
        ))
        .await
        .map_err(db)?;
    let sink = client
        .copy_in("COPY huitong_stage FROM STDIN (FORMAT csv, HEADER true)")
        .await
        .map_err(db)?;
    let mut sink = std::pin::pin!(sink);
    let mut file = tokio::fs::File::open(csv)
        .await
        .map_err(|e| DeliverError::Io(format!("{}: {e}", csv.display())))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .await
            .map_err(|e| DeliverError::Io(format!("{}: {e}", csv.display())))?;
        if n == 0 {
            break;
        }
        sink.send(bytes::Bytes::copy_from_slice(&buf[..n]))
            .await
            .map_err(db)?;
    }
    let rows = sink.as_mut().finish().await.map_err(db)?;
    let cast = |c: &Column, side: &str| PG.cast(c, &format!("{side}.{}", q(&c.name)));
    let key_cols: Vec<&Column> = columns.iter().filter(|c| key.contains(&c.name)).collect();
    let matches: Vec<String> = key_cols
        .iter()
        .map(|c| format!("t.{} = {}", q(&c.name), cast(c, "s")))
        .collect();
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
    let apply = format!(
        "DELETE FROM {target} t WHERE NOT EXISTS (SELECT 1 FROM huitong_stage s WHERE {}); \
         INSERT INTO {target} AS t ({}) SELECT {} FROM huitong_stage s ON CONFLICT ({}) {on_conflict}",
        matches.join(" AND "),
        names.join(", "),
        values.join(", "),
        keys.join(", ")
    );
    client.batch_execute(&apply).await.map_err(db)?;
    client
        .execute(
            &format!(
                "INSERT INTO {META_TABLE} (subscription, code, provider, version, delivered_at) \
                 VALUES ($1, $2, $3, $4, now()) ON CONFLICT (subscription) DO UPDATE SET \
                 code = EXCLUDED.code, provider = EXCLUDED.provider, version = EXCLUDED.version, \
                 delivered_at = EXCLUDED.delivered_at"
            ),
            &[
                &to.subscription,
                &to.code,
                &to.provider,
                &(to.version as i64),
            ],
        )
        .await
        .map_err(db)?;
    hold.await;
    client.batch_execute("COMMIT").await.map_err(db)?;
    Ok(Applied::Rows(rows))
}
