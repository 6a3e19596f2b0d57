//! The first rows of a table version this node holds whole (its own, or one it pulled), for
//! the portal's preview of an 无条件共享 table: the first row group's chunks of the chosen
//! columns, each verified against its hash, cut to a few rows and each cell to a readable
//! length. Nothing is fetched from another node here: a consumer that does not hold the
//! version asks the provider ([`crate::transfer::preview`]), which answers with this.

use arrow_array::Array;
use huitong_protocol::catalogue::{Entry, ShareType};
use huitong_protocol::dataset::{Body, DatasetVersion, SignedManifest};
use huitong_protocol::wire::{MAX_PREVIEW_CELL_CHARS, MAX_PREVIEW_COLUMNS};
use huitong_protocol::NodeId;

use super::records;
use super::table;
use crate::state::NodeState;

/// Most rows a preview shows.
pub const MAX_ROWS: usize = huitong_protocol::wire::MAX_PREVIEW_ROWS;

/// The 信息项 of `entry` a preview may show: those shared without conditions (an item may be
/// stricter than its entry), the first [`MAX_PREVIEW_COLUMNS`] of them, or none when the entry
/// itself is not 无条件共享.
pub fn shared_columns(entry: &Entry) -> Vec<String> {
    if entry.share_type != ShareType::Unconditional {
        return Vec::new();
    }
    entry
        .items
        .iter()
        .filter(|i| entry.effective_share_type(i) == ShareType::Unconditional)
        .map(|i| i.name.clone())
        .take(MAX_PREVIEW_COLUMNS)
        .collect()
}

/// `cell` cut to [`MAX_PREVIEW_CELL_CHARS`] characters (with `…` when cut).
pub fn cut(cell: &str) -> String {
    cut_to(cell, MAX_PREVIEW_CELL_CHARS)
}

/// `text` cut to `chars` characters (with `…` when cut).
pub fn cut_to(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// Another node's message as this node repeats it: control characters and the bidirectional
/// formatting characters dropped (no line breaks or direction overrides in logs and pages), cut
/// to `chars` characters.
pub fn clean_message(text: &str, chars: usize) -> String {
    let text: String = text
        .chars()
        .filter(|c| !c.is_control() && !bidi_format(*c))
        .collect();
    cut_to(&text, chars)
}

/// The Unicode characters that change the direction text is shown in (marks, embeddings,
/// overrides, isolates).
fn bidi_format(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

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
                        cut(a.value(r))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_cells_are_cut_at_a_character_boundary() {
        let long = "数".repeat(MAX_PREVIEW_CELL_CHARS + 5);
        let cut = cut(&long);
        assert_eq!(cut.chars().count(), MAX_PREVIEW_CELL_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(super::cut("短"), "短");
        let exact = "a".repeat(MAX_PREVIEW_CELL_CHARS);
        assert_eq!(super::cut(&exact), exact);
    }

    #[test]
    fn another_nodes_message_loses_line_breaks_and_direction_overrides() {
        assert_eq!(
            clean_message("refused\n\u{202E}gnp.exe\u{2066}x\u{200F}", 100),
            "refusedgnp.exex"
        );
        assert_eq!(clean_message("无授权，请申请", 3), "无授权…");
    }
}
