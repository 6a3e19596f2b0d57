//! Publishing a dataset version: check every cell against the entry's 信息项, cut the data into
//! chunks, seal the manifest, and announce the version in this node's feed.
//!
//! Tables are read twice: the first pass only validates, so a refused publish stores nothing;
//! the second pass (skipping rows refused under `--allow-rejects`) writes the chunks. Chunks are
//! fsynced, then the manifest is stored, then the feed entry is appended (durably), so an
//! announced version always has its data on disk.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};

use huitong_protocol::catalogue::Item;
use huitong_protocol::dataset::{
    check_value, Body, ChunkHash, ChunkRef, Column, Manifest, Rejects, MANIFEST_VERSION,
};
use huitong_protocol::feed::VerifiedEntry;
use huitong_protocol::Event;
use serde::{Deserialize, Serialize};

use super::input::{self, InputError};
use super::records::{self, StoredManifest};
use super::table::{self, ChunkFormatError, Grouper};
use crate::catalogue::{self, Record};
use crate::chunks::ChunkError;
use crate::feeds::{AppendError, Feeds};
use crate::state::{now_ms, NodeState};
use crate::store::StoreError;

/// Content-defined chunking of files: minimum, average and maximum chunk size.
const FILE_CHUNK_MIN: usize = 256 * 1024;
const FILE_CHUNK_AVG: usize = 1024 * 1024;
const FILE_CHUNK_MAX: usize = 4 * 1024 * 1024;
/// The reject report is cut into chunks of this size.
const REPORT_CHUNK: usize = 4 * 1024 * 1024;
/// How many rejects an error shows.
const SHOWN_REJECTS: usize = 20;

/// What to publish.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishRequest {
    /// Resource code (this node's entry).
    pub code: String,
    /// Absolute path of the input on the node's host.
    pub path: PathBuf,
    /// Publish the file as opaque bytes (文件) instead of reading it as a table.
    #[serde(default)]
    pub file: bool,
    /// Publish the rows that pass and store a report of those that do not.
    #[serde(default)]
    pub allow_rejects: bool,
}

/// One refused cell.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Reject {
    /// Data row number (1 = the first row after the header).
    pub row: u64,
    /// The 信息项.
    pub item: String,
    /// The value as given.
    pub value: String,
    /// The rule it breaks.
    pub rule: String,
}

/// What a publish did.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PublishReport {
    /// Resource code.
    pub code: String,
    /// The new version number.
    pub version: u64,
    /// Rows published (tables).
    pub rows: Option<u64>,
    /// Rows refused and reported (with `--allow-rejects`).
    pub rejected_rows: u64,
    /// Bytes of all chunks.
    pub bytes: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// Bytes of chunks this version added to the store (the rest were already held).
    pub new_bytes: u64,
    /// BLAKE3 of the manifest.
    pub manifest: String,
    /// Feed seq of the announcement.
    pub seq: u64,
}

/// Why a publish failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// No live entry of this organisation with that code.
    #[error("no published catalogue entry {0} of this organisation; publish the entry first (`huitong catalogue publish`)")]
    UnknownCode(String),
    /// A table needs 信息项.
    #[error("entry {0} lists no 信息项, so it cannot hold a table; publish the data with --file")]
    NoItems(String),
    /// The input could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Cells break the item rules.
    #[error("{count} row(s) break the 信息项 rules; nothing was published. Fix them, or publish with --allow-rejects to store the rest and a report of these")]
    Rejected {
        /// Rows refused.
        count: u64,
        /// The first refused cells.
        first: Vec<Reject>,
    },
    /// Input file error.
    #[error("{path}: {source}")]
    File {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Chunk store failure.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// Column encoding failure.
    #[error(transparent)]
    Format(#[from] ChunkFormatError),
    /// Store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The feed refused the announcement.
    #[error(transparent)]
    Append(#[from] AppendError),
}

/// Tracks which chunks a publish wrote and how many bytes they add.
struct Writes<'a> {
    state: &'a NodeState,
    written: Vec<ChunkHash>,
    new_bytes: u64,
}

impl Writes<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<ChunkRef, ChunkError> {
        let (r, new) = self.state.chunks.put(bytes)?;
        if new {
            self.new_bytes += bytes.len() as u64;
        }
        self.written.push(r.hash);
        Ok(r)
    }
}

fn own_record(state: &NodeState, code: &str) -> Result<Record, PublishError> {
    let ours = &state.config.node.org_code;
    match catalogue::get_by_provider(&state.store, ours, code)? {
        Some(r) if r.withdrawn.is_none() => Ok(r),
        _ => Err(PublishError::UnknownCode(code.to_owned())),
    }
}

/// Publishes a new version; returns the report and the sealed feed entry to gossip.
pub fn publish(
    feeds: &Feeds,
    req: &PublishRequest,
) -> Result<(PublishReport, VerifiedEntry), PublishError> {
    let state = &**feeds.state();
    let record = own_record(state, &req.code)?;
    let mut writes = Writes {
        state,
        written: Vec::new(),
        new_bytes: 0,
    };
    let (body, rejects, rejected_rows) = if req.file {
        (file_body(&mut writes, &req.path)?, None, 0)
    } else {
        table_body(
            &mut writes,
            &record.entry.items,
            &req.path,
            req.allow_rejects,
            &req.code,
        )?
    };
    let latest = records::version(&state.store, &state.id(), &req.code, None)?;
    let manifest = Manifest {
        layout: MANIFEST_VERSION,
        provider: state.id(),
        code: record.entry.code.clone(),
        version: latest.map_or(1, |d| d.version + 1),
        created_at_ms: now_ms(),
        body,
        rejects,
    };
    let sealed = manifest.seal(&state.key);
    state.chunks.sync(&writes.written)?;
    records::put_manifest(
        &state.store,
        &sealed.hash,
        &StoredManifest {
            envelope: sealed.bytes.clone(),
            complete: true,
        },
    )?;
    let announcement = manifest.announcement(sealed.hash);
    let entry = feeds.append(Event::DatasetPublished(announcement.clone()))?;
    tracing::info!(code = %req.code, version = manifest.version, chunks = announcement.chunks, bytes = announcement.bytes, "published dataset version");
    Ok((
        PublishReport {
            code: req.code.clone(),
            version: manifest.version,
            rows: announcement.rows,
            rejected_rows,
            bytes: announcement.bytes,
            chunks: announcement.chunks,
            new_bytes: writes.new_bytes,
            manifest: sealed.hash.to_hex(),
            seq: entry.entry.seq,
        },
        entry,
    ))
}

fn file_body(writes: &mut Writes<'_>, path: &Path) -> Result<Body, PublishError> {
    let file_err = |source| PublishError::File {
        path: path.display().to_string(),
        source,
    };
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("data")
        .to_owned();
    let file = File::open(path).map_err(file_err)?;
    let mut chunks = Vec::new();
    let cdc = fastcdc::v2020::StreamCDC::new(file, FILE_CHUNK_MIN, FILE_CHUNK_AVG, FILE_CHUNK_MAX);
    for chunk in cdc {
        let chunk = chunk.map_err(|e| file_err(std::io::Error::other(e.to_string())))?;
        chunks.push(writes.put(&chunk.data)?);
    }
    Ok(Body::File { name, chunks })
}

/// The outcome of pass 1.
struct Validation {
    /// Data rows (from 1) with at least one refused cell.
    refused: HashSet<u64>,
    /// The first refused cells, for the error message.
    first: Vec<Reject>,
    /// One JSON line per refused cell.
    report: Vec<u8>,
}

/// Pass 1: checks every cell; returns the refused rows and the JSONL report.
fn validate(items: &[Item], path: &Path) -> Result<Validation, PublishError> {
    let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
    let mut refused = HashSet::new();
    let mut first = Vec::new();
    let mut report = Vec::new();
    for (n, row) in input::open(path, &names)?.enumerate() {
        let row = row?;
        let row_no = n as u64 + 1;
        for (item, value) in items.iter().zip(&row) {
            if let Err(e) = check_value(item.data_type, item.length, value) {
                let r = Reject {
                    row: row_no,
                    item: item.name.clone(),
                    value: value.clone(),
                    rule: e.rule,
                };
                if let Ok(line) = serde_json::to_vec(&r) {
                    report.extend_from_slice(&line);
                    report.push(b'\n');
                }
                if first.len() < SHOWN_REJECTS {
                    first.push(r);
                }
                refused.insert(row_no);
            }
        }
    }
    Ok(Validation {
        refused,
        first,
        report,
    })
}

type TableParts = (Body, Option<Rejects>, u64);

fn table_body(
    writes: &mut Writes<'_>,
    items: &[Item],
    path: &Path,
    allow_rejects: bool,
    code: &str,
) -> Result<TableParts, PublishError> {
    if items.is_empty() {
        return Err(PublishError::NoItems(code.to_owned()));
    }
    let Validation {
        refused,
        first,
        report,
    } = validate(items, path)?;
    if !refused.is_empty() && !allow_rejects {
        return Err(PublishError::Rejected {
            count: refused.len() as u64,
            first,
        });
    }
    let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
    let mut columns: Vec<Column> = items
        .iter()
        .map(|i| Column {
            name: i.name.clone(),
            data_type: i.data_type,
            length: i.length,
            chunks: Vec::new(),
        })
        .collect();
    let mut row_groups = Vec::new();
    let mut grouper = Grouper::new(items.len());
    let mut flush =
        |grouper: &mut Grouper, columns: &mut Vec<Column>| -> Result<(), PublishError> {
            row_groups.push(grouper.rows() as u64);
            for (col, cells) in columns.iter_mut().zip(grouper.take()) {
                let bytes = table::encode_column(&col.name, &cells)?;
                col.chunks.push(writes.put(&bytes)?);
            }
            Ok(())
        };
    for (n, row) in input::open(path, &names)?.enumerate() {
        let row = row?;
        if refused.contains(&(n as u64 + 1)) {
            continue;
        }
        if grouper.push(row) {
            flush(&mut grouper, &mut columns)?;
        }
    }
    if grouper.rows() > 0 {
        flush(&mut grouper, &mut columns)?;
    }
    let rejects = if refused.is_empty() {
        None
    } else {
        let mut chunks = Vec::new();
        for part in report.chunks(REPORT_CHUNK) {
            chunks.push(writes.put(part)?);
        }
        Some(Rejects {
            rows: refused.len() as u64,
            report: chunks,
        })
    };
    Ok((
        Body::Table {
            row_groups,
            columns,
        },
        rejects,
        refused.len() as u64,
    ))
}
