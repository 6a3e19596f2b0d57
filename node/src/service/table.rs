//! A table version loaded for API calls: every column decoded from the chunk store (each chunk
//! verified against its hash), and an exact-match index per key 信息项, built the first time a
//! call looks that 信息项 up. [`Tables`] keeps the last few versions loaded, so a call costs a
//! hash lookup, not a decode.
//!
//! Bounded: a version whose columns take more than [`MAX_LOADED_BYTES`] is not served (pull it
//! instead); at most [`KEPT`] versions stay loaded (the least recently used goes); one column's
//! index takes at most [`MAX_INDEX_BYTES`] (a column with more distinct data cannot be looked
//! up); an answer's rows stop at [`MAX_ANSWER_BYTES`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use arrow_array::{Array, StringArray};
use huitong_protocol::call::{Outcome, Query, MAX_ANSWER_BYTES};
use huitong_protocol::dataset::{Body, ChunkHash, DatasetVersion, SignedManifest};
use huitong_protocol::NodeId;

use crate::dataset::{records, table};
use crate::state::NodeState;

/// Largest table (sum of its column chunks) a query service loads.
pub const MAX_LOADED_BYTES: u64 = 512 * 1024 * 1024;
/// Most rows of one key value a filtered lookup examines: a key shared by more rows needs a
/// narrower key.
pub const MAX_EXAMINED: usize = 200_000;
/// Versions kept loaded.
const KEPT: usize = 4;
/// Largest index of one column (an estimate: each distinct value and its row list).
pub const MAX_INDEX_BYTES: usize = 128 * 1024 * 1024;
/// Most rows a 核验 answered on an async worker reads ([`Loaded::quick`]).
const QUICK_ROWS: usize = 64;
/// Most cells (rows × 信息项) and bytes of them a lookup answered on an async worker returns.
const QUICK_CELLS: usize = 256;
const QUICK_BYTES: usize = 16 * 1024;

/// Why a version cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    /// Not a table held complete here, or too large.
    #[error("{0}")]
    Unservable(String),
    /// The store or a chunk failed.
    #[error("cannot read the version: {0}")]
    Read(String),
}

/// A column's values and the rows holding each.
type Index = HashMap<String, Vec<u32>>;

/// One loaded version.
pub struct Loaded {
    /// The dataset version.
    pub version: u64,
    names: Vec<String>,
    /// Per column, per row group.
    columns: Vec<Vec<StringArray>>,
    /// First row of each row group.
    starts: Vec<usize>,
    rows: usize,
    /// Value → rows, per column, built on first use (or why the column cannot be looked up).
    indexes: Vec<OnceLock<Result<Index, String>>>,
}

impl Loaded {
    fn column(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// The value of column `c` in row `row` (`None`: empty).
    fn cell(&self, c: usize, row: usize) -> Option<&str> {
        let g = self.starts.partition_point(|&s| s <= row).checked_sub(1)?;
        let a = self.columns.get(c)?.get(g)?;
        let i = row - self.starts[g];
        (i < a.len() && !a.is_null(i)).then(|| a.value(i))
    }

    /// The index of column `c`, built once (each column on its own, so building one holds up
    /// no call on another).
    fn index(&self, c: usize) -> Result<&Index, String> {
        let built = self.indexes.get(c).ok_or("no such column")?.get_or_init(|| {
            let mut m: Index = HashMap::new();
            let mut bytes = 0usize;
            for row in 0..self.rows {
                if let Some(v) = self.cell(c, row) {
                    let rows = match m.get_mut(v) {
                        Some(rows) => rows,
                        None => {
                            bytes += v.len() + 64;
                            m.entry(v.to_string()).or_default()
                        }
                    };
                    bytes += 4;
                    // Rows fit u32: checked when the version was loaded.
                    rows.push(u32::try_from(row).unwrap_or(u32::MAX));
                    if bytes > MAX_INDEX_BYTES {
                        return Err(format!(
                            "信息项 {:?} has too much distinct data to be looked up by the service (an index over {} MiB)",
                            self.names[c],
                            MAX_INDEX_BYTES >> 20
                        ));
                    }
                }
            }
            Ok(m)
        });
        built.as_ref().map_err(Clone::clone)
    }

    /// The rows of `c` equal to `value`.
    fn find(&self, c: usize, value: &str) -> Result<&[u32], String> {
        Ok(self.index(c)?.get(value).map_or(&[][..], Vec::as_slice))
    }

    /// Whether answering `q` is quick: every index it reads is built, and it reads a few rows
    /// (a lookup without filters or offset, returning at most [`QUICK_CELLS`] cells of at most
    /// [`QUICK_BYTES`] in all; a 核验 whose rarest value is in at most [`QUICK_ROWS`] rows).
    /// Anything else may build an index, scan many rows or make a large answer to sign.
    pub fn quick(&self, q: &Query) -> bool {
        let built = |name: &str| {
            self.column(name)
                .and_then(|c| self.indexes.get(c)?.get())
                .and_then(|r| r.as_ref().ok())
        };
        match q {
            Query::Lookup {
                key,
                value,
                fields,
                limit,
                filters,
                offset,
            } => {
                let Some(index) = built(key).filter(|_| filters.is_empty() && *offset == 0) else {
                    return false;
                };
                // The rows it returns, and the size of their cells (a small answer to sign).
                let rows = index.get(value).map_or(&[][..], Vec::as_slice);
                let rows = &rows[..rows.len().min(*limit as usize)];
                if rows.len() * fields.len() > QUICK_CELLS {
                    return false;
                }
                let cols: Option<Vec<usize>> = fields.iter().map(|f| self.column(f)).collect();
                let bytes: usize = cols
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        rows.iter()
                            .map(|&r| self.cell(c, r as usize).map_or(0, str::len))
                            .sum::<usize>()
                    })
                    .sum();
                bytes <= QUICK_BYTES
            }
            Query::Verify { record } => {
                let mut rarest = usize::MAX;
                for (k, v) in record {
                    match built(k) {
                        Some(index) => rarest = rarest.min(index.get(v).map_or(0, Vec::len)),
                        None => return false,
                    }
                }
                rarest <= QUICK_ROWS
            }
            Query::Http { .. } => false,
        }
    }

    /// Answers a query whose 信息项 were all authorized: a lookup's rows (at most its limit),
    /// or whether one row holds every value of a 核验. `Err` names an unknown 信息项.
    pub fn answer(&self, q: &Query) -> Result<Outcome, String> {
        let col = |name: &str| {
            self.column(name)
                .ok_or_else(|| format!("version {} has no column {name:?}", self.version))
        };
        match q {
            Query::Lookup {
                key,
                value,
                fields,
                limit,
                filters,
                offset,
            } => {
                let k = col(key)?;
                let cols = fields
                    .iter()
                    .map(|f| col(f))
                    .collect::<Result<Vec<_>, _>>()?;
                let conds = filters
                    .iter()
                    .map(|f| col(&f.item).map(|c| (c, f)))
                    .collect::<Result<Vec<_>, _>>()?;
                let found = self.find(k, value)?;
                if !conds.is_empty() && found.len() > MAX_EXAMINED {
                    return Err(format!(
                        "{key} = {value:?} holds {} rows, more than a filtered lookup examines ({MAX_EXAMINED}); look up a narrower key",
                        found.len()
                    ));
                }
                let (limit, skip) = (*limit as usize, *offset as usize);
                // The rows that pass every filter, in table order: skip `offset`, keep `limit`,
                // and look one further to say whether more match.
                let mut passing = found.iter().map(|&r| r as usize).filter(|&row| {
                    conds
                        .iter()
                        .all(|&(c, f)| f.op.test(self.cell(c, row), &f.value))
                });
                let mut bytes = 0usize;
                let mut rows = Vec::with_capacity(found.len().min(limit));
                for row in passing.by_ref().skip(skip).take(limit) {
                    let r: Vec<Option<String>> = cols
                        .iter()
                        .map(|&c| self.cell(c, row).map(str::to_string))
                        .collect();
                    bytes += r.iter().flatten().map(|v| v.len() + 4).sum::<usize>() + 4;
                    if bytes > MAX_ANSWER_BYTES {
                        return Err(format!(
                            "the answer would be more than {MAX_ANSWER_BYTES} bytes; ask for fewer rows (limit) or 信息项"
                        ));
                    }
                    rows.push(r);
                }
                Ok(Outcome::Rows {
                    fields: fields.clone(),
                    rows,
                    more: passing.next().is_some(),
                })
            }
            Query::Http { .. } => Err(format!(
                "version {} is served as a query service: call …/lookup or …/verify, not an HTTP path",
                self.version
            )),
            Query::Verify { record } => {
                let cols = record
                    .iter()
                    .map(|(k, v)| col(k).map(|c| (c, v.as_str())))
                    .collect::<Result<Vec<_>, _>>()?;
                // Start from the rarest value.
                let mut shortest: Option<&[u32]> = None;
                for &(c, v) in &cols {
                    let rows = self.find(c, v)?;
                    if shortest.is_none_or(|s| rows.len() < s.len()) {
                        shortest = Some(rows);
                    }
                }
                let hit = shortest.unwrap_or_default().iter().any(|&row| {
                    cols.iter()
                        .all(|&(c, v)| self.cell(c, row as usize) == Some(v))
                });
                Ok(Outcome::Match(hit))
            }
        }
    }
}

/// The versions loaded for calls.
#[derive(Default)]
pub struct Tables {
    loaded: Mutex<Vec<(ChunkHash, Arc<Loaded>)>>,
    /// Held while a version loads, so two first calls load it once.
    loading: Mutex<()>,
}

impl Tables {
    /// The version with manifest `m`, if it is loaded (never loads it). A hit moves the
    /// version to the end: the least recently used is dropped first.
    pub fn loaded(&self, m: &ChunkHash) -> Option<Arc<Loaded>> {
        let mut all = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let at = all.iter().position(|(held, _)| held == m)?;
        let hit = all.remove(at);
        let l = hit.1.clone();
        all.push(hit);
        Some(l)
    }

    /// Version `dv` of this node's table, loaded (blocking: call it off the async workers).
    pub fn get(
        &self,
        state: &NodeState,
        provider: &NodeId,
        dv: &DatasetVersion,
    ) -> Result<Arc<Loaded>, TableError> {
        if let Some(l) = self.loaded(&dv.manifest) {
            return Ok(l);
        }
        let _loading = self.loading.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = self.loaded(&dv.manifest) {
            return Ok(l);
        }
        let l = Arc::new(load(state, provider, dv)?);
        let mut all = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= KEPT {
            all.remove(0);
        }
        all.push((dv.manifest, l.clone()));
        Ok(l)
    }
}

fn load(state: &NodeState, provider: &NodeId, dv: &DatasetVersion) -> Result<Loaded, TableError> {
    let read = |e: &dyn std::fmt::Display| TableError::Read(e.to_string());
    let stored = records::manifest(&state.store, &dv.manifest)
        .map_err(|e| read(&e))?
        .filter(|m| m.complete)
        .ok_or_else(|| {
            TableError::Unservable(format!(
                "version {} is not held complete on the provider",
                dv.version
            ))
        })?;
    let signed = SignedManifest::open(&stored.envelope, provider, dv).map_err(|e| read(&e))?;
    let Body::Table {
        row_groups,
        columns,
    } = &signed.manifest.body
    else {
        return Err(TableError::Unservable(format!(
            "version {} is a file, not a table: a query service needs a table",
            dv.version
        )));
    };
    let bytes: u64 = columns
        .iter()
        .flat_map(|c| c.chunks.iter())
        .map(|c| u64::from(c.len))
        .sum();
    if bytes > MAX_LOADED_BYTES {
        return Err(TableError::Unservable(format!(
            "version {} is {bytes} bytes, more than a query service loads ({MAX_LOADED_BYTES}); pull it instead",
            dv.version
        )));
    }
    let mut starts = Vec::with_capacity(row_groups.len());
    let mut rows = 0usize;
    for &n in row_groups {
        starts.push(rows);
        rows = rows.saturating_add(usize::try_from(n).unwrap_or(usize::MAX));
    }
    if u32::try_from(rows).is_err() {
        return Err(TableError::Unservable(format!(
            "version {} has {rows} rows, more than a query service serves",
            dv.version
        )));
    }
    let mut decoded = Vec::with_capacity(columns.len());
    for c in columns {
        let mut groups = Vec::with_capacity(c.chunks.len());
        for chunk in &c.chunks {
            let b = state
                .chunks
                .read_verified(&chunk.hash)
                .map_err(|e| read(&e))?;
            groups.push(table::decode_column(&b).map_err(|e| read(&e))?);
        }
        decoded.push(groups);
    }
    Ok(Loaded {
        version: dv.version,
        names: columns.iter().map(|c| c.name.clone()).collect(),
        indexes: (0..decoded.len()).map(|_| OnceLock::new()).collect(),
        columns: decoded,
        starts,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded() -> Loaded {
        let col = |v: &[Option<&str>]| StringArray::from(v.to_vec());
        Loaded {
            version: 1,
            names: vec!["id".into(), "name".into()],
            columns: vec![
                vec![col(&[Some("a"), Some("b")]), col(&[Some("a"), None])],
                vec![
                    col(&[Some("甲"), Some("乙")]),
                    col(&[Some("丙"), Some("丁")]),
                ],
            ],
            starts: vec![0, 2],
            rows: 4,
            indexes: vec![OnceLock::new(), OnceLock::new()],
        }
    }

    #[test]
    fn only_calls_on_built_indexes_that_read_few_rows_are_quick() {
        use huitong_protocol::call::{Filter, Op};
        let t = loaded();
        let lookup = |filters: Vec<Filter>, offset| Query::Lookup {
            key: "id".into(),
            value: "a".into(),
            fields: vec!["name".into()],
            limit: 10,
            filters,
            offset,
        };
        let verify = |id: &str| Query::Verify {
            record: vec![("id".into(), id.into()), ("name".into(), "甲".into())],
        };
        // Nothing is indexed yet: the first call builds the index, off the async workers.
        assert!(!t.quick(&lookup(Vec::new(), 0)));
        t.answer(&lookup(Vec::new(), 0)).unwrap();
        assert!(t.quick(&lookup(Vec::new(), 0)));
        // Filters and offsets may read many rows; a 核验 needs every index it reads.
        let f = Filter {
            item: "name".into(),
            op: Op::Eq,
            value: "甲".into(),
        };
        assert!(!t.quick(&lookup(vec![f], 0)));
        assert!(!t.quick(&lookup(Vec::new(), 1)));
        assert!(!t.quick(&verify("a")));
        t.answer(&verify("a")).unwrap();
        assert!(t.quick(&verify("a")) && t.quick(&verify("z")));
        // A 核验 whose rarest value is held by many rows is not quick.
        let many = vec![Some("x"); QUICK_ROWS + 1];
        let big = Loaded {
            version: 1,
            names: vec!["id".into()],
            columns: vec![vec![StringArray::from(many)]],
            starts: vec![0],
            rows: QUICK_ROWS + 1,
            indexes: vec![OnceLock::new()],
        };
        let common = Query::Verify {
            record: vec![("id".into(), "x".into())],
        };
        assert_eq!(big.answer(&common).unwrap(), Outcome::Match(true));
        assert!(!big.quick(&common));
        let rare = Query::Verify {
            record: vec![("id".into(), "y".into())],
        };
        assert!(big.quick(&rare));
        // A lookup returning more than QUICK_CELLS cells (65 rows × 4) is not quick; 65 × 3 is.
        let wide = |n: usize| Query::Lookup {
            key: "id".into(),
            value: "x".into(),
            fields: vec!["id".into(); n],
            limit: 100,
            filters: Vec::new(),
            offset: 0,
        };
        assert!(big.quick(&wide(3)) && !big.quick(&wide(4)));
        assert!(!big.quick(&Query::Http {
            method: "GET".into(),
            path: "/".into(),
            query: String::new(),
            content_type: None,
            body: Vec::new(),
        }));
    }

    #[test]
    fn lookups_span_row_groups_and_respect_the_limit() {
        let t = loaded();
        let q = |limit| Query::Lookup {
            key: "id".into(),
            value: "a".into(),
            fields: vec!["name".into()],
            limit,
            filters: Vec::new(),
            offset: 0,
        };
        assert_eq!(
            t.answer(&q(10)).unwrap(),
            Outcome::Rows {
                fields: vec!["name".into()],
                rows: vec![vec![Some("甲".into())], vec![Some("丙".into())]],
                more: false
            }
        );
        let Outcome::Rows { rows, more, .. } = t.answer(&q(1)).unwrap() else {
            unreachable!()
        };
        assert_eq!((rows.len(), more), (1, true));
        let unknown = Query::Lookup {
            key: "nope".into(),
            value: "a".into(),
            fields: vec!["name".into()],
            limit: 1,
            filters: Vec::new(),
            offset: 0,
        };
        assert!(t.answer(&unknown).unwrap_err().contains("nope"));
    }

    #[test]
    fn filters_and_offset_page_through_the_matching_rows() {
        use huitong_protocol::call::{Filter, Op};
        let t = loaded();
        let q = |filters: Vec<Filter>, offset, limit| Query::Lookup {
            key: "id".into(),
            value: "a".into(),
            fields: vec!["name".into()],
            limit,
            filters,
            offset,
        };
        let names = |o: Outcome| match o {
            Outcome::Rows { rows, more, .. } => (
                rows.into_iter()
                    .map(|r| r[0].clone().unwrap_or_default())
                    .collect::<Vec<_>>(),
                more,
            ),
            other => unreachable!("{other:?}"),
        };
        // Page 2 of 1 row each: the second match, and nothing after it.
        assert_eq!(
            names(t.answer(&q(Vec::new(), 1, 1)).unwrap()),
            (vec!["丙".to_string()], false)
        );
        let not_jia = Filter {
            item: "name".into(),
            op: Op::Ne,
            value: "甲".into(),
        };
        assert_eq!(
            names(t.answer(&q(vec![not_jia], 0, 10)).unwrap()),
            (vec!["丙".to_string()], false)
        );
        let unknown = Filter {
            item: "nope".into(),
            op: Op::Eq,
            value: "x".into(),
        };
        assert!(t.answer(&q(vec![unknown], 0, 1)).is_err());
    }

    #[test]
    fn a_verification_needs_one_row_with_every_value() {
        let t = loaded();
        let v = |pairs: &[(&str, &str)]| Query::Verify {
            record: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        assert_eq!(
            t.answer(&v(&[("id", "a"), ("name", "丙")])),
            Ok(Outcome::Match(true))
        );
        // Both values exist, but not in one row.
        assert_eq!(
            t.answer(&v(&[("id", "b"), ("name", "甲")])),
            Ok(Outcome::Match(false))
        );
        assert_eq!(t.answer(&v(&[("name", "丁")])), Ok(Outcome::Match(true)));
    }
}
