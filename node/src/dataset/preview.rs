//! The first rows of a table version this node holds whole (its own, or one it pulled), for
//! the portal's preview of an 无条件共享 table: the first row group's chunks of the chosen
//! columns, each verified against its hash, cut to a few rows. Nothing is fetched from another
//! node; a version not held complete here has no preview.

use arrow_array::Array;
use huitong_protocol::dataset::{Body, DatasetVersion, SignedManifest};
use huitong_protocol::NodeId;

use super::records;
use super::table;
use crate::state::NodeState;

/// Most rows a preview shows.
pub const MAX_ROWS: usize = 10;

/// Why a preview could not be made (the store or a chunk failed).
#[derive(Debug, thiserror::Error)]
#[error("cannot read the version for a preview: {0}")]
pub struct PreviewError(String);

/// The columns `columns` (in that order) of the first [`MAX_ROWS`] rows of version `dv` of
/// `provider`'s table, or `None` when this node does not hold it complete (or it is a file).
pub fn first_rows(
    state: &NodeState,
    provider: &NodeId,
    dv: &DatasetVersion,
    columns: &[String],
) -> Result<Option<Vec<Vec<String>>>, PreviewError> {
    let err = |e: &dyn std::fmt::Display| PreviewError(e.to_string());
    let Some(stored) = records::manifest(&state.store, &dv.manifest).map_err(|e| err(&e))? else {
        return Ok(None);
    };
    if !stored.complete {
        return Ok(None);
    }
    let signed = SignedManifest::open(&stored.envelope, provider, dv).map_err(|e| err(&e))?;
    let Body::Table {
        row_groups,
        columns: all,
    } = &signed.manifest.body
    else {
        return Ok(None);
    };
    if row_groups.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let mut cells: Vec<Vec<String>> = Vec::new();
    for name in columns {
        // A column the manifest lacks stays in its place, empty (never shifts the others
        // under the wrong heading).
        let Some(first) = all
            .iter()
            .find(|c| &c.name == name)
            .and_then(|c| c.chunks.first())
        else {
            cells.push(Vec::new());
            continue;
        };
        let bytes = state
            .chunks
            .read_verified(&first.hash)
            .map_err(|e| err(&e))?;
        let a = table::decode_column(&bytes).map_err(|e| err(&e))?;
        let n = a.len().min(MAX_ROWS);
        cells.push(
            (0..n)
                .map(|r| {
                    if a.is_null(r) {
                        String::new()
                    } else {
                        a.value(r).to_string()
                    }
                })
                .collect(),
        );
    }
    // Columns to rows.
    let rows = cells.iter().map(Vec::len).max().unwrap_or(0);
    Ok(Some(
        (0..rows)
            .map(|r| {
                cells
                    .iter()
                    .map(|c| c.get(r).cloned().unwrap_or_default())
                    .collect()
            })
            .collect(),
    ))
}
