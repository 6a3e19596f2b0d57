//! Table layout: rows are cut into row groups at content-defined boundaries, and each column of
//! a group becomes one chunk, an Arrow IPC stream holding one nullable UTF-8 column.
//!
//! Boundaries depend on the rows themselves (a row ends a group when its hash hits a target,
//! once the group holds [`MIN_GROUP_BYTES`]), so inserting, deleting or changing rows moves only
//! the groups around the change: a new version shares every other chunk with the last one.
//! A group also ends at [`MAX_GROUP_BYTES`] or [`MAX_GROUP_ROWS`], which keeps every column
//! chunk far below the protocol's chunk limit.

use std::io::Cursor;
use std::sync::Arc;

use arrow_array::{Array, RecordBatch, StringArray};
use arrow_ipc::reader::StreamReader;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{DataType, Field, Schema};

/// A group may end once it holds this many bytes of cell text.
pub const MIN_GROUP_BYTES: usize = 64 * 1024;
/// A collected table's groups may end at this many bytes of cell text: its versions carry row
/// changes by key, so small groups buy little reuse, and fewer, larger chunks are much cheaper
/// to write (one file each) and to fetch.
pub const COLLECTED_MIN_GROUP_BYTES: usize = 1024 * 1024;
/// A group always ends at this many bytes of cell text.
pub const MAX_GROUP_BYTES: usize = 4 * 1024 * 1024;
/// A group always ends at this many rows.
pub const MAX_GROUP_ROWS: usize = 65_536;
/// After [`MIN_GROUP_BYTES`], one row in this many ends a group (by its hash).
const BOUNDARY_ODDS: u64 = 512;

/// Why a column chunk could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
#[error("column chunk: {0}")]
pub struct ChunkFormatError(String);

impl From<arrow_schema::ArrowError> for ChunkFormatError {
    fn from(e: arrow_schema::ArrowError) -> Self {
        Self(e.to_string())
    }
}

/// Accumulates rows column by column and says where a group ends.
pub struct Grouper {
    columns: Vec<Vec<String>>,
    bytes: usize,
    rows: usize,
    min_bytes: usize,
}

/// FNV-1a over the cells of a row (a fast, stable boundary hash; not for integrity).
fn row_hash(row: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for cell in row {
        for b in cell.as_bytes().iter().chain([&0x1f]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

impl Grouper {
    /// An empty grouper for `width` columns.
    pub fn new(width: usize) -> Self {
        Self::with_min_bytes(width, MIN_GROUP_BYTES)
    }

    /// An empty grouper for `width` columns whose groups may end from `min_bytes` of cell text
    /// (at most [`MAX_GROUP_BYTES`]).
    pub fn with_min_bytes(width: usize, min_bytes: usize) -> Self {
        Self {
            columns: vec![Vec::new(); width],
            bytes: 0,
            rows: 0,
            min_bytes: min_bytes.min(MAX_GROUP_BYTES),
        }
    }

    /// Adds a row; returns true when the group should end after it.
    pub fn push(&mut self, row: Vec<String>) -> bool {
        let boundary = self.bytes >= self.min_bytes && row_hash(&row).is_multiple_of(BOUNDARY_ODDS);
        for (col, cell) in self.columns.iter_mut().zip(row) {
            self.bytes += cell.len() + 1;
            col.push(cell);
        }
        self.rows += 1;
        boundary || self.bytes >= MAX_GROUP_BYTES || self.rows >= MAX_GROUP_ROWS
    }

    /// Rows held.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Takes the held columns, leaving the grouper empty.
    pub fn take(&mut self) -> Vec<Vec<String>> {
        self.bytes = 0;
        self.rows = 0;
        let width = self.columns.len();
        std::mem::replace(&mut self.columns, vec![Vec::new(); width])
    }
}

/// Encodes one column of a group (empty cells become nulls).
pub fn encode_column(name: &str, cells: &[String]) -> Result<Vec<u8>, ChunkFormatError> {
    let array = StringArray::from_iter(cells.iter().map(|c| (!c.is_empty()).then_some(c.as_str())));
    let schema = Arc::new(Schema::new(vec![Field::new(name, DataType::Utf8, true)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(array)])?;
    let mut w = StreamWriter::try_new(Vec::new(), &schema)?;
    w.write(&batch)?;
    w.finish()?;
    Ok(w.into_inner()?)
}

/// Decodes a column chunk into its cells (nulls as `None`).
pub fn decode_column(bytes: &[u8]) -> Result<StringArray, ChunkFormatError> {
    let reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let mut parts = Vec::new();
    for batch in reader {
        let batch = batch?;
        if batch.num_columns() != 1 {
            return Err(ChunkFormatError(format!(
                "{} columns where one was expected",
                batch.num_columns()
            )));
        }
        let col = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| ChunkFormatError("the column is not UTF-8".into()))?
            .clone();
        parts.push(col);
    }
    match parts.len() {
        1 => Ok(parts.remove(0)),
        n => Err(ChunkFormatError(format!(
            "{n} record batches where one was expected"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_round_trip_keeps_nulls_and_text() {
        let cells = vec!["海门".to_string(), String::new(), "42".to_string()];
        let bytes = encode_column("地区", &cells).unwrap();
        assert_eq!(
            bytes,
            encode_column("地区", &cells).unwrap(),
            "encoding is deterministic"
        );
        let col = decode_column(&bytes).unwrap();
        assert_eq!(col.value(0), "海门");
        assert!(col.is_null(1));
        assert_eq!(col.value(2), "42");
    }

    #[test]
    fn boundaries_resynchronise_after_an_insert() {
        let rows: Vec<Vec<String>> = (0..20_000)
            .map(|i| vec![format!("row {i:08} with some text")])
            .collect();
        let cuts = |rows: &[Vec<String>]| {
            let mut g = Grouper::new(1);
            let mut out = Vec::new();
            for (i, r) in rows.iter().enumerate() {
                if g.push(r.clone()) {
                    out.push(rows[i][0].clone());
                    g.take();
                }
            }
            out
        };
        let a = cuts(&rows);
        let mut changed = rows.clone();
        changed.insert(100, vec!["an inserted row".into()]);
        let b = cuts(&changed);
        assert!(a.len() > 5, "several groups: {}", a.len());
        let shared = a.iter().filter(|c| b.contains(c)).count();
        assert!(
            shared + 1 >= a.len(),
            "only the first group moves: {shared} of {}",
            a.len()
        );
    }
}
