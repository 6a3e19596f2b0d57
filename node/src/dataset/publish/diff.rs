//! Row-level versions: while a collected table is published, its rows are compared by key with
//! the latest version's, and the rows inserted or updated and the keys deleted are stored as the
//! new version's [`Changes`], so a consumer holding the latest version fetches about the changed
//! rows only.
//!
//! Both sides come in the same key order (the collector sorts by the key's text, byte by byte),
//! so the comparison is one merge, holding one row group of the base at a time. Rows out of that
//! order, a key given twice, or a base that cannot be read make the version carry no changes
//! (it is still published whole); they never fail the publish.
//!
//! Layering: a child of the publisher; reads the chunk store.

use std::cmp::Ordering;

use arrow_array::{Array, StringArray};
use huitong_protocol::catalogue::Item;
use huitong_protocol::dataset::{Body, Changes, ChunkHash, Column, Manifest};
use tracing::info;

use super::{PublishError, TableWriter, Writes};
use crate::chunks::ChunkStore;
use crate::dataset::input::{InputError, Row};
use crate::dataset::table;

/// The rows of a stored table version, in order, one row group in memory at a time.
struct BaseRows<'a> {
    chunks: &'a ChunkStore,
    columns: Vec<Column>,
    groups: usize,
    group: usize,
    cells: Vec<StringArray>,
    row: usize,
}

impl<'a> BaseRows<'a> {
    /// The rows of table version `base`, or `None` when it is not a table.
    fn of(chunks: &'a ChunkStore, base: &Manifest) -> Option<Self> {
        let Body::Table {
            row_groups,
            columns,
        } = &base.body
        else {
            return None;
        };
        Some(Self {
            chunks,
            columns: columns.clone(),
            groups: row_groups.len(),
            group: 0,
            cells: Vec::new(),
            row: 0,
        })
    }

    fn load_next_group(&mut self) -> Result<bool, String> {
        while self.group < self.groups {
            let g = self.group;
            self.group += 1;
            let mut cells = Vec::with_capacity(self.columns.len());
            for c in &self.columns {
                let r = c
                    .chunks
                    .get(g)
                    .ok_or("a column of the base lacks a row group")?;
                let bytes = self
                    .chunks
                    .read_intact(r)
                    .ok_or("a chunk of the base version is missing or damaged")?;
                cells.push(table::decode_column(&bytes).map_err(|e| e.to_string())?);
            }
            self.cells = cells;
            self.row = 0;
            if self.cells.first().is_some_and(|c| !c.is_empty()) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn next(&mut self) -> Result<Option<Row>, String> {
        if self.cells.first().is_none_or(|c| self.row >= c.len()) && !self.load_next_group()? {
            return Ok(None);
        }
        let i = self.row;
        self.row += 1;
        Ok(Some(
            self.cells
                .iter()
                .map(|a| {
                    if a.is_null(i) {
                        String::new()
                    } else {
                        a.value(i).to_owned()
                    }
                })
                .collect(),
        ))
    }
}

/// How a table's rows are ordered by their key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyOrder {
    /// By the key's text, field by field, byte by byte.
    #[default]
    Text,
    /// By the key's fields as integers (a database's integer primary key, read in index order);
    /// a field that is not an integer compares by its text, after the integers.
    Integer,
}

impl KeyOrder {
    /// Compares two keys field by field.
    pub fn cmp(self, a: &[&str], b: &[&str]) -> Ordering {
        match self {
            KeyOrder::Text => a
                .iter()
                .map(|s| s.as_bytes())
                .cmp(b.iter().map(|s| s.as_bytes())),
            KeyOrder::Integer => a
                .iter()
                .zip(b)
                .map(|(x, y)| int_cmp(x, y))
                .find(|o| o.is_ne())
                .unwrap_or_else(|| a.len().cmp(&b.len())),
        }
    }
}

/// Two fields as integers (text that is not one comes after, by its bytes).
fn int_cmp(x: &str, y: &str) -> Ordering {
    match (x.parse::<i128>(), y.parse::<i128>()) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => Ordering::Less,
        (Err(_), Ok(_)) => Ordering::Greater,
        (Err(_), Err(_)) => x.as_bytes().cmp(y.as_bytes()),
    }
}

/// The merge of the new rows with the base's.
pub(super) struct Differ<'a> {
    order: KeyOrder,
    base: BaseRows<'a>,
    peeked: Option<Row>,
    key: Vec<usize>,
    key_names: Vec<String>,
    upserts: TableWriter,
    deletes: TableWriter,
    last: Option<Vec<String>>,
    last_base: Option<Vec<String>>,
    broken: Option<String>,
    base_version: u64,
    base_manifest: ChunkHash,
}

impl<'a> Differ<'a> {
    /// A merge against `base` (hash `base_hash`) for a table of `items` keyed by `key`; `None`
    /// when the base is not a table of the same columns or the key is not among them.
    pub(super) fn new(
        chunks: &'a ChunkStore,
        (base, base_hash): (&Manifest, ChunkHash),
        items: &[Item],
        (key, order): (&[String], KeyOrder),
    ) -> Option<Self> {
        let idx = key_positions(base, items, key)?;
        let key_items: Vec<Item> = idx.iter().map(|&i| items[i].clone()).collect();
        Some(Self {
            order,
            base: BaseRows::of(chunks, base)?,
            peeked: None,
            key: idx,
            key_names: key.to_vec(),
            upserts: TableWriter::new(items),
            deletes: TableWriter::new(&key_items),
            last: None,
            last_base: None,
            broken: None,
            base_version: base.version,
            base_manifest: base_hash,
        })
    }

    fn key_of<'r>(&self, row: &'r [String]) -> Vec<&'r str> {
        self.key
            .iter()
            .map(|&i| row.get(i).map_or("", String::as_str))
            .collect()
    }

    /// The next base row, checking the base's own key order.
    fn peek(&mut self) -> Option<Row> {
        if self.peeked.is_none() && self.broken.is_none() {
            match self.base.next() {
                Ok(Some(row)) => {
                    let k: Vec<String> = self.key_of(&row).into_iter().map(str::to_owned).collect();
                    let kr: Vec<&str> = k.iter().map(String::as_str).collect();
                    if let Some(last) = &self.last_base {
                        let lr: Vec<&str> = last.iter().map(String::as_str).collect();
                        if self.order.cmp(&kr, &lr) != Ordering::Greater {
                            self.broken =
                                Some("the base version's rows are not in key order".into());
                            return None;
                        }
                    }
                    self.last_base = Some(k);
                    self.peeked = Some(row);
                }
                Ok(None) => {}
                Err(e) => self.broken = Some(e),
            }
        }
        self.peeked.clone()
    }

    /// Takes in the next new row (in key order).
    pub(super) fn push(&mut self, writes: &mut Writes<'_>, row: &Row) -> Result<(), PublishError> {
        if self.broken.is_some() {
            return Ok(());
        }
        let k: Vec<String> = self.key_of(row).into_iter().map(str::to_owned).collect();
        let kr: Vec<&str> = k.iter().map(String::as_str).collect();
        if let Some(last) = &self.last {
            let lr: Vec<&str> = last.iter().map(String::as_str).collect();
            if self.order.cmp(&kr, &lr) != Ordering::Greater {
                self.broken = Some("the rows are not in key order, or a key repeats".into());
                return Ok(());
            }
        }
        loop {
            let Some(b) = self.peek() else {
                if self.broken.is_none() {
                    self.upserts.push(writes, row.clone())?;
                }
                break;
            };
            let bk: Vec<&str> = self.key_of(&b);
            match self.order.cmp(&bk, &kr) {
                Ordering::Less => {
                    let deleted: Row = bk.iter().map(|s| (*s).to_owned()).collect();
                    self.deletes.push(writes, deleted)?;
                    self.peeked = None;
                }
                Ordering::Equal => {
                    if b != *row {
                        self.upserts.push(writes, row.clone())?;
                    }
                    self.peeked = None;
                    break;
                }
                Ordering::Greater => {
                    self.upserts.push(writes, row.clone())?;
                    break;
                }
            }
        }
        self.last = Some(k);
        Ok(())
    }

    /// Ends the merge: the changes, or `None` when they could not be told.
    pub(super) fn finish(
        mut self,
        writes: &mut Writes<'_>,
    ) -> Result<Option<Changes>, PublishError> {
        while let Some(b) = self.peek() {
            let deleted: Row = self.key_of(&b).iter().map(|s| (*s).to_owned()).collect();
            self.deletes.push(writes, deleted)?;
            self.peeked = None;
        }
        if let Some(why) = self.broken {
            info!(reason = %why, "this version carries no row changes; consumers pull it whole");
            return Ok(None);
        }
        let (row_groups, columns) = self.upserts.finish(writes)?;
        let upserts = Body::Table {
            row_groups,
            columns,
        };
        let (row_groups, columns) = self.deletes.finish(writes)?;
        let deletes = Body::Table {
            row_groups,
            columns,
        };
        Ok(Some(Changes {
            base: self.base_version,
            base_manifest: self.base_manifest,
            key: self.key_names,
            upserts,
            deletes,
        }))
    }
}

/// The positions of `key` among `items`, when the base is a table of exactly those columns.
fn key_positions(base: &Manifest, items: &[Item], key: &[String]) -> Option<Vec<usize>> {
    let Body::Table { columns, .. } = &base.body else {
        return None;
    };
    let same =
        columns.len() == items.len() && columns.iter().zip(items).all(|(c, i)| c.name == i.name);
    let idx: Vec<usize> = key
        .iter()
        .filter_map(|k| items.iter().position(|i| &i.name == k))
        .collect();
    (same && !key.is_empty() && idx.len() == key.len()).then_some(idx)
}

/// The latest version's rows with the rows inserted or changed since laid over them by key (a
/// watermark run): one merge in key order, a changed row replacing the base row of its key.
/// The changed rows must come in key order, each key once; otherwise the merge fails (its rows
/// would be wrong, not just without changes).
pub(super) struct Overlay<'a, I> {
    order: KeyOrder,
    base: BaseRows<'a>,
    base_next: Option<Row>,
    last_base: Option<Row>,
    changed: I,
    changed_next: Option<Row>,
    last_changed: Option<Row>,
    key: Vec<usize>,
}

impl<'a, I> Overlay<'a, I> {
    /// `changed` laid over `base`, a table of `items` keyed by `key`; `None` when the base is
    /// not a table of the same columns or the key is not among them.
    pub(super) fn new(
        chunks: &'a ChunkStore,
        base: &Manifest,
        items: &[Item],
        (key, order): (&[String], KeyOrder),
        changed: I,
    ) -> Option<Self> {
        Some(Self {
            order,
            key: key_positions(base, items, key)?,
            base: BaseRows::of(chunks, base)?,
            base_next: None,
            last_base: None,
            changed,
            changed_next: None,
            last_changed: None,
        })
    }

    fn key_of<'r>(&self, row: &'r [String]) -> Vec<&'r str> {
        self.key
            .iter()
            .map(|&i| row.get(i).map_or("", String::as_str))
            .collect()
    }
}

fn overlay_error(message: String) -> InputError {
    InputError {
        path: "the changed rows".into(),
        message,
    }
}

impl<I: Iterator<Item = Result<Row, InputError>>> Iterator for Overlay<'_, I> {
    type Item = Result<Row, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.base_next.is_none() {
            match self.base.next() {
                Ok(Some(row)) => {
                    // A base in another order (read before the source's key type changed)
                    // cannot be merged: the result would hold a key twice.
                    if let Some(last) = &self.last_base {
                        if self.order.cmp(&self.key_of(&row), &self.key_of(last))
                            != Ordering::Greater
                        {
                            return Some(Err(overlay_error(
                                "the latest version's rows are not in this key order".into(),
                            )));
                        }
                    }
                    self.last_base = Some(row.clone());
                    self.base_next = Some(row);
                }
                Ok(None) => {}
                Err(e) => return Some(Err(overlay_error(format!("the latest version: {e}")))),
            }
        }
        if self.changed_next.is_none() {
            match self.changed.next() {
                Some(Ok(row)) => {
                    if let Some(last) = &self.last_changed {
                        if self.order.cmp(&self.key_of(&row), &self.key_of(last))
                            != Ordering::Greater
                        {
                            return Some(Err(overlay_error(
                                "they are not in key order, or a key repeats".into(),
                            )));
                        }
                    }
                    self.last_changed = Some(row.clone());
                    self.changed_next = Some(row);
                }
                Some(Err(e)) => return Some(Err(e)),
                None => {}
            }
        }
        let order = match (&self.base_next, &self.changed_next) {
            (None, None) => return None,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(b), Some(c)) => self.order.cmp(&self.key_of(b), &self.key_of(c)),
        };
        match order {
            Ordering::Less => self.base_next.take().map(Ok),
            Ordering::Equal => {
                self.base_next = None;
                self.changed_next.take().map(Ok)
            }
            Ordering::Greater => self.changed_next.take().map(Ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_field_by_field_as_bytes() {
        assert_eq!(KeyOrder::Text.cmp(&["10"], &["9"]), Ordering::Less);
        assert_eq!(KeyOrder::Text.cmp(&["a", "b"], &["a", "c"]), Ordering::Less);
        assert_eq!(KeyOrder::Text.cmp(&["张"], &["a"]), Ordering::Greater);
        assert_eq!(KeyOrder::Text.cmp(&["ab"], &["a"]), Ordering::Greater);
        assert_eq!(KeyOrder::Integer.cmp(&["10"], &["9"]), Ordering::Greater);
        assert_eq!(KeyOrder::Integer.cmp(&["-3"], &["2"]), Ordering::Less);
        assert_eq!(
            KeyOrder::Integer.cmp(&["1", "b"], &["1", "a"]),
            Ordering::Greater
        );
    }
}
