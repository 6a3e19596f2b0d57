//! Publishing a dataset version: check every cell against the entry's 信息项, cut the data into
//! chunks, seal the manifest, and announce the version in this node's feed.
//!
//! Tables are read twice: the first pass only validates, so a refused publish stores nothing;
//! the second pass (skipping rows refused under `--allow-rejects`) writes the chunks. Chunks are
//! fsynced, then the manifest is stored, then the feed entry is appended (durably), so an
//! announced version always has its data on disk. A publish holds a chunk-store lease
//! ([`crate::chunks::Lease`]) so the garbage collector never removes a chunk it just wrote.
//!
//! Memory stays bounded whatever the input: refused cells go to a report file under
//! `<node dir>/rejects/` as they are found (its path is in the answer), only the first
//! [`SHOWN_REJECTS`] and the counts are kept in memory, and pass 2 checks each row again instead
//! of remembering which rows were refused. A refused value is reported by its first
//! [`REPORTED_VALUE`] bytes (and its length), so a huge cell costs the report and the answer no
//! more than a short one.
//!
//! Disk stays bounded too (review 10, M9): the chunks a publish writes and its reject report take
//! room from the node's free-space ledger ([`crate::outfile::Space`]) in steps as they grow
//! ([`ROOM_STEP`], [`REPORT_CHUNK`]), each checked against what `statvfs` says is free, less
//! what running pulls and exports reserved, less the floor kept free for the store. How many
//! bytes are new is not known before the data is cut (chunks already held are not written
//! again), so nothing is reserved up front; a publish that runs out of room fails naming the
//! numbers, and nothing is announced.

mod diff;

pub use diff::KeyOrder;

/// How collected rows are laid out, as their extractor says before the first row.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The 信息项 that identify a row (empty: none), the rows sorted by it in `order`.
    pub key: Vec<String>,
    /// How the rows are sorted by `key`.
    pub order: KeyOrder,
    /// The rows are only those inserted or changed since the latest version (a watermark run),
    /// to be laid over it.
    pub over_latest: bool,
}

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use huitong_protocol::catalogue::Item;
use huitong_protocol::dataset::{
    check_value, Body, ChunkHash, ChunkRef, Column, DatasetVersion, Manifest, Rejects,
    SignedManifest, MANIFEST_VERSION,
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
use crate::outfile::{Reservation, Space};
use crate::state::{now_ms, NodeState};
use crate::store::StoreError;

/// Content-defined chunking of files: minimum, average and maximum chunk size.
const FILE_CHUNK_MIN: usize = 256 * 1024;
const FILE_CHUNK_AVG: usize = 1024 * 1024;
const FILE_CHUNK_MAX: usize = 4 * 1024 * 1024;
/// The reject report is cut into chunks of this size (and its room reserved in such steps).
const REPORT_CHUNK: usize = 4 * 1024 * 1024;
/// A publish reserves room for its chunks in steps of this size.
pub const ROOM_STEP: u64 = 16 * 1024 * 1024;
/// How many rejects an error shows.
const SHOWN_REJECTS: usize = 20;
/// Where reject reports are written, under the node directory.
pub const REPORT_DIR: &str = "rejects";
/// A reject report stops growing at this size (the counts stay exact).
const MAX_REPORT_BYTES: u64 = 64 * 1024 * 1024;
/// How many reject reports are kept in [`REPORT_DIR`] (the oldest go first).
const KEPT_REPORTS: usize = 32;
/// A refused value longer than this (in bytes) is reported by its start.
pub const REPORTED_VALUE: usize = 1024;

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
    /// The input file as the CLI sees it: the node refuses a file it sees differently
    /// ([`crate::seen`]).
    #[serde(default)]
    pub path_seen: Option<crate::seen::FileId>,
    /// The name a 文件 resource's file is published under (default: the input's file name; the
    /// portal gives the name the browser sent, since it stores the upload under another).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_name: Option<String>,
}

/// One refused cell.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Reject {
    /// Data row number (1 = the first row after the header).
    pub row: u64,
    /// The 信息项.
    pub item: String,
    /// The value as given, or its first [`REPORTED_VALUE`] bytes (cut at a character) and `…`
    /// when it is longer.
    pub value: String,
    /// The value's length in bytes, when `value` holds only its start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_bytes: Option<u64>,
    /// The rule it breaks.
    pub rule: String,
}

impl Reject {
    /// The refused cell `value` of `item` in data row `row`, breaking `rule`; a long value is
    /// kept by its start only (see [`REPORTED_VALUE`]).
    fn new(row: u64, item: &str, value: &str, rule: String) -> Self {
        let (value, value_bytes) = if value.len() <= REPORTED_VALUE {
            (value.to_owned(), None)
        } else {
            let mut end = REPORTED_VALUE;
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            (format!("{}…", &value[..end]), Some(value.len() as u64))
        };
        Self {
            row,
            item: item.to_owned(),
            value,
            value_bytes,
            rule,
        }
    }
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
    /// Cells refused.
    #[serde(default)]
    pub rejected_cells: u64,
    /// The reject report on the node's host (one JSON line per refused cell).
    #[serde(default)]
    pub report: Option<PathBuf>,
    /// Cells listed in the report (fewer than `rejected_cells` once it reached its size limit).
    #[serde(default)]
    pub report_cells: u64,
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
    #[error("{count} row(s) break the 信息项 rules ({cells} cell(s)); nothing was published.{} Fix them, or publish with --allow-rejects to store the rest and a report of these", report.as_ref().map(|p| format!(" Every refused cell is listed in {}.", p.display())).unwrap_or_default())]
    Rejected {
        /// Rows refused.
        count: u64,
        /// Cells refused.
        cells: u64,
        /// The first refused cells.
        first: Vec<Reject>,
        /// The report file on the node's host.
        report: Option<PathBuf>,
    },
    /// The node sees another file at the path than the CLI does ([`crate::seen`]).
    #[error("--from {0}")]
    NotShared(String),
    /// Pass 2 refused another number of rows than pass 1.
    #[error("{0} changed while it was being published (the second reading refused other rows than the first); nothing was published: publish a file that is not being written to")]
    Changed(String),
    /// A report could not be written (a link in the way, no room).
    #[error(transparent)]
    Out(#[from] crate::outfile::OutError),
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
    /// Changed rows cannot be laid over the latest version.
    #[error("cannot lay the changed rows over the latest version of {code}: {why}; collect it whole (`huitong collect run {code} --full`)")]
    Overlay {
        /// The resource.
        code: String,
        /// Why.
        why: String,
    },
}

/// Tracks which chunks a publish wrote and how many bytes they add, and holds their room.
struct Writes<'a> {
    state: &'a NodeState,
    written: Vec<ChunkHash>,
    new_bytes: u64,
    /// Room in the chunk store's file system, grown in [`ROOM_STEP`]s.
    room: Reservation,
    /// Bytes written to the chunk store (landed in `room`).
    landed: Arc<AtomicU64>,
}

impl<'a> Writes<'a> {
    fn new(state: &'a NodeState) -> Result<Self, PublishError> {
        let room = state.space.reserve_one(state.chunks.root(), 0)?;
        let landed = Arc::new(AtomicU64::new(0));
        let l = landed.clone();
        room.track(move || l.load(Ordering::Relaxed));
        Ok(Self {
            state,
            written: Vec::new(),
            new_bytes: 0,
            room,
            landed,
        })
    }

    fn put(&mut self, bytes: &[u8]) -> Result<ChunkRef, PublishError> {
        let after = self.new_bytes.saturating_add(bytes.len() as u64);
        if after > self.room.bytes() {
            self.room.grow_to(after.saturating_add(ROOM_STEP))?;
        }
        let (r, new) = self.state.chunks.put(bytes)?;
        if new {
            self.new_bytes += bytes.len() as u64;
            self.landed.store(self.new_bytes, Ordering::Relaxed);
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
    by: Option<&huitong_protocol::Actor>,
) -> Result<(PublishReport, VerifiedEntry), PublishError> {
    match publish_version(feeds, req, by, false)? {
        Published::New(report, entry) => Ok((report, *entry)),
        // Only returned when asked to skip an unchanged version, which this does not.
        Published::Unchanged { .. } => {
            unreachable!("publish_version always makes a version when not asked to skip")
        }
    }
}

/// What [`publish_if_changed`] did.
#[derive(Debug)]
pub enum Published {
    /// A new version: the report and the sealed feed entry to gossip.
    New(PublishReport, Box<VerifiedEntry>),
    /// The data is exactly the latest version's (same columns, row groups and chunks): nothing
    /// was announced.
    Unchanged {
        /// The latest version, which stays the latest.
        version: u64,
    },
}

/// Publishes a new version unless the data is exactly the latest version's (a scheduled
/// collection that found nothing new makes no version).
pub fn publish_if_changed(
    feeds: &Feeds,
    req: &PublishRequest,
    by: Option<&huitong_protocol::Actor>,
) -> Result<Published, PublishError> {
    publish_version(feeds, req, by, true)
}

/// Whether `body` (and no rejects) is what the latest version `latest` holds.
fn same_as(state: &NodeState, latest: &DatasetVersion, body: &Body) -> Result<bool, PublishError> {
    let Some(stored) = records::manifest(&state.store, &latest.manifest)? else {
        return Ok(false);
    };
    // Our own signed manifest: a failure to open it means it is not comparable, so a new
    // version is made.
    Ok(SignedManifest::open(&stored.envelope, &state.id(), latest)
        .is_ok_and(|m| m.manifest.body == *body && m.manifest.rejects.is_none()))
}

fn publish_version(
    feeds: &Feeds,
    req: &PublishRequest,
    by: Option<&huitong_protocol::Actor>,
    skip_unchanged: bool,
) -> Result<Published, PublishError> {
    let state = &**feeds.state();
    let record = own_record(state, &req.code)?;
    crate::seen::same_as_cli(&req.path, req.path_seen).map_err(PublishError::NotShared)?;
    let _lease = state.chunks.lease_blocking();
    let mut writes = Writes::new(state)?;
    let (body, rejects, refusals) = if req.file {
        (
            file_body(&mut writes, &req.path, req.file_name.as_deref())?,
            None,
            Refusals::default(),
        )
    } else {
        table_body(
            &mut writes,
            &record.entry.items,
            &req.path,
            req.allow_rejects,
            &req.code,
        )?
    };
    seal_and_announce(
        feeds,
        (&record, &req.code, by),
        writes,
        ((body, rejects, refusals), None),
        skip_unchanged,
    )
}

/// Publishes rows in item order from `rows` (a collection run) as a new version of `code`,
/// unless they are exactly the latest version's: one pass (see [`streamed_body`]). With a key
/// (the 信息项 that identify a row, the rows sorted by it), the version also carries its row
/// changes against the latest version ([`diff`]). `over_latest`: `rows` are only the rows
/// inserted or changed since the latest version (a watermark run), laid over its rows by key
/// ([`diff::Overlay`]).
pub fn publish_rows_if_changed(
    feeds: &Feeds,
    code: &str,
    (rows, layout): (input::Rows, &Layout),
    by: Option<&huitong_protocol::Actor>,
) -> Result<Published, PublishError> {
    let Layout {
        key,
        order,
        over_latest,
    } = layout;
    let (order, over_latest) = (*order, *over_latest);
    let state = &**feeds.state();
    let record = own_record(state, code)?;
    let _lease = state.chunks.lease_blocking();
    let mut writes = Writes::new(state)?;
    let base = match records::version(&state.store, &state.id(), code, None)? {
        Some(latest) if !key.is_empty() => records::manifest(&state.store, &latest.manifest)?
            .and_then(|stored| SignedManifest::open(&stored.envelope, &state.id(), &latest).ok()),
        _ => None,
    };
    let mut differ = base.as_ref().and_then(|b| {
        diff::Differ::new(
            &state.chunks,
            (&b.manifest, b.hash),
            &record.entry.items,
            (key, order),
        )
    });
    let overlay_error = |why: &str| PublishError::Overlay {
        code: code.to_owned(),
        why: why.to_owned(),
    };
    let rows: Box<dyn Iterator<Item = Result<input::Row, InputError>> + '_> = if over_latest {
        let b = base
            .as_ref()
            .ok_or_else(|| overlay_error("there is no latest table version of this node's"))?;
        Box::new(
            diff::Overlay::new(
                &state.chunks,
                &b.manifest,
                &record.entry.items,
                (key, order),
                rows,
            )
            .ok_or_else(|| {
                overlay_error(
                    "its columns are not the entry's 信息项, or the key is not among them",
                )
            })?,
        )
    } else {
        rows
    };
    let body = streamed_body(
        &mut writes,
        &record.entry.items,
        (rows, differ.as_mut()),
        code,
    )?;
    let changes = match differ {
        Some(d) => d.finish(&mut writes)?,
        None => None,
    };
    seal_and_announce(
        feeds,
        (&record, code, by),
        writes,
        ((body, None, Refusals::default()), changes),
        true,
    )
}

/// Seals the manifest of `body` and announces it (unless `skip_unchanged` and it is the latest
/// version's body).
fn seal_and_announce(
    feeds: &Feeds,
    (record, code, by): (&Record, &str, Option<&huitong_protocol::Actor>),
    writes: Writes<'_>,
    ((body, rejects, refusals), changes): (TableParts, Option<huitong_protocol::dataset::Changes>),
    skip_unchanged: bool,
) -> Result<Published, PublishError> {
    let state = &**feeds.state();
    let latest = records::version(&state.store, &state.id(), code, None)?;
    if let Some(latest) = latest
        .as_ref()
        .filter(|_| skip_unchanged && rejects.is_none())
    {
        if same_as(state, latest, &body)? {
            return Ok(Published::Unchanged {
                version: latest.version,
            });
        }
    }
    let manifest = Manifest {
        layout: MANIFEST_VERSION,
        provider: state.id(),
        code: record.entry.code.clone(),
        version: latest.as_ref().map_or(1, |d| d.version + 1),
        created_at_ms: now_ms(),
        body,
        rejects,
        // Changes lead from the version they were told against, which must still be the latest.
        changes: changes.filter(|c| latest.as_ref().is_some_and(|l| l.version == c.base)),
    };
    let sealed = manifest.seal(&state.key);
    state.chunks.sync(&writes.written)?;
    records::put_manifest(
        &state.store,
        &sealed.hash,
        &StoredManifest {
            envelope: sealed.bytes.clone(),
            complete: true,
            held_at_ms: now_ms(),
        },
    )?;
    let announcement = manifest.announcement(sealed.hash);
    let entry = match feeds.append_as(by, Event::DatasetPublished(announcement.clone())) {
        Ok(entry) => entry,
        Err(e) if e.refused_before_writing() => {
            // Never announced: forget the manifest, so chunk collection can remove what only
            // it referenced (a retry publishes a new one).
            records::drop_manifests(&state.store, &[sealed.hash])?;
            return Err(e.into());
        }
        Err(e) => {
            // The announcement may be in the feed (a store failure after the commit): keep the
            // manifest and its chunks, which members may ask for (review s7, L6).
            tracing::warn!(code = %code, version = manifest.version, error = %e, "publishing failed after the announcement may have been written; its manifest and chunks are kept");
            return Err(e.into());
        }
    };
    tracing::info!(code = %code, version = manifest.version, chunks = announcement.chunks, bytes = announcement.bytes, "published dataset version");
    Ok(Published::New(
        PublishReport {
            code: code.to_owned(),
            version: manifest.version,
            rows: announcement.rows,
            rejected_rows: refusals.rows,
            rejected_cells: refusals.cells,
            report_cells: refusals.report.as_ref().map_or(0, |r| r.cells),
            report: refusals.report.map(|r| r.path),
            bytes: announcement.bytes,
            chunks: announcement.chunks,
            new_bytes: writes.new_bytes,
            manifest: sealed.hash.to_hex(),
            seq: entry.entry.seq,
        },
        Box::new(entry),
    ))
}

fn file_body(
    writes: &mut Writes<'_>,
    path: &Path,
    given: Option<&str>,
) -> Result<Body, PublishError> {
    let file_err = |source| PublishError::File {
        path: path.display().to_string(),
        source,
    };
    let name = clean_file_name(
        given
            .or_else(|| path.file_name().and_then(|n| n.to_str()))
            .unwrap_or("data"),
    );
    let file = File::open(path).map_err(file_err)?;
    let mut chunks = Vec::new();
    let cdc = fastcdc::v2020::StreamCDC::new(file, FILE_CHUNK_MIN, FILE_CHUNK_AVG, FILE_CHUNK_MAX);
    for chunk in cdc {
        let chunk = chunk.map_err(|e| file_err(std::io::Error::other(e.to_string())))?;
        chunks.push(writes.put(&chunk.data)?);
    }
    Ok(Body::File { name, chunks })
}

/// Longest published file name, in bytes.
pub const MAX_FILE_NAME: usize = 200;

/// The name a 文件 resource's file is published under: the last part of `given` (after any `/`
/// or `\\`), without control or direction-changing characters, at most [`MAX_FILE_NAME`] bytes,
/// never hidden (a leading `.` gets `data` before it) nor empty. It travels in the manifest to
/// every consumer.
pub fn clean_file_name(given: &str) -> String {
    let last = given.rsplit(['/', '\\']).next().unwrap_or_default();
    let hidden = |c: &char| {
        c.is_control()
            || matches!(*c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
    };
    let mut out = String::new();
    for c in last.chars().filter(|c| !hidden(c)) {
        if out.len() + c.len_utf8() > MAX_FILE_NAME {
            break;
        }
        out.push(c);
    }
    if out.trim().is_empty() || out.starts_with('.') {
        format!("data{out}")
    } else {
        out
    }
}

/// The outcome of pass 1: counts and the first rejects in memory, every reject in the report
/// file on disk.
struct Validation {
    /// Data rows with at least one refused cell.
    rows: u64,
    /// Refused cells.
    cells: u64,
    /// The first refused cells, for the error message.
    first: Vec<Reject>,
    /// The report file (none when nothing was refused).
    report: Option<Report>,
}

/// Whether every cell of `row` passes its item's rules.
fn row_passes(items: &[Item], row: &[String]) -> bool {
    items
        .iter()
        .zip(row)
        .all(|(item, value)| check_value(item.data_type, item.length, value).is_ok())
}

/// Pass 1: checks every cell; refused cells go to the report file as they are found.
fn validate(
    state: &NodeState,
    items: &[Item],
    path: &Path,
    code: &str,
) -> Result<Validation, PublishError> {
    let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
    let mut v = Validation::new();
    for (n, row) in input::open(path, &names)?.enumerate() {
        v.check_row(state, items, (n as u64 + 1, &row?), code)?;
    }
    if let Some(r) = &mut v.report {
        r.finish()?;
    }
    Ok(v)
}

impl Validation {
    fn new() -> Self {
        Self {
            rows: 0,
            cells: 0,
            first: Vec::new(),
            report: None,
        }
    }

    /// Checks data row `row_no`; its refused cells go to the report. Whether it passes.
    fn check_row(
        &mut self,
        state: &NodeState,
        items: &[Item],
        (row_no, row): (u64, &[String]),
        code: &str,
    ) -> Result<bool, PublishError> {
        let mut refused = false;
        for (item, value) in items.iter().zip(row) {
            if let Err(e) = check_value(item.data_type, item.length, value) {
                let r = Reject::new(row_no, &item.name, value, e.rule);
                if self.report.is_none() {
                    self.report = Some(Report::create(&state.dir, &state.space, code)?);
                }
                if let Some(report) = &mut self.report {
                    report.add(&r)?;
                }
                if self.first.len() < SHOWN_REJECTS {
                    self.first.push(r);
                }
                self.cells += 1;
                refused = true;
            }
        }
        self.rows += u64::from(refused);
        Ok(!refused)
    }

    /// The error for the rows refused, the report finished.
    fn refused(mut self) -> Result<PublishError, PublishError> {
        if let Some(r) = &mut self.report {
            r.finish()?;
        }
        Ok(PublishError::Rejected {
            count: self.rows,
            cells: self.cells,
            first: self.first,
            report: self.report.map(|r| r.path),
        })
    }
}

/// What pass 1 refused.
#[derive(Default)]
struct Refusals {
    rows: u64,
    cells: u64,
    report: Option<Report>,
}

type TableParts = (Body, Option<Rejects>, Refusals);

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
    let v = validate(writes.state, items, path, code)?;
    if v.rows > 0 && !allow_rejects {
        return Err(PublishError::Rejected {
            count: v.rows,
            cells: v.cells,
            first: v.first,
            report: v.report.map(|r| r.path),
        });
    }
    let names: Vec<String> = items.iter().map(|i| i.name.clone()).collect();
    let mut table = TableWriter::new(items);
    // Pass 2 checks each row again instead of remembering which were refused (memory stays
    // bounded whatever the input); the count must come out the same.
    let mut skipped = 0u64;
    for row in input::open(path, &names)? {
        let row = row?;
        if !row_passes(items, &row) {
            skipped += 1;
            continue;
        }
        table.push(writes, row)?;
    }
    let (row_groups, columns) = table.finish(writes)?;
    if skipped != v.rows {
        return Err(PublishError::Changed(path.display().to_string()));
    }
    let rejects = match &v.report {
        Some(report) if v.rows > 0 => Some(Rejects {
            rows: v.rows,
            report: report.store(writes)?,
        }),
        _ => None,
    };
    Ok((
        Body::Table {
            row_groups,
            columns,
        },
        rejects,
        Refusals {
            rows: v.rows,
            cells: v.cells,
            report: v.report,
        },
    ))
}

/// Cuts rows into row groups and each group's columns into chunks, as they come.
struct TableWriter {
    columns: Vec<Column>,
    row_groups: Vec<u64>,
    grouper: Grouper,
}

impl TableWriter {
    fn new(items: &[Item]) -> Self {
        Self::with_min_bytes(items, table::MIN_GROUP_BYTES)
    }

    /// A writer whose groups may end from `min_bytes` of cell text.
    fn with_min_bytes(items: &[Item], min_bytes: usize) -> Self {
        Self {
            columns: items
                .iter()
                .map(|i| Column {
                    name: i.name.clone(),
                    data_type: i.data_type,
                    length: i.length,
                    chunks: Vec::new(),
                })
                .collect(),
            row_groups: Vec::new(),
            grouper: Grouper::with_min_bytes(items.len(), min_bytes),
        }
    }

    fn flush(&mut self, writes: &mut Writes<'_>) -> Result<(), PublishError> {
        self.row_groups.push(self.grouper.rows() as u64);
        for (col, cells) in self.columns.iter_mut().zip(self.grouper.take()) {
            let bytes = table::encode_column(&col.name, &cells)?;
            col.chunks.push(writes.put(&bytes)?);
        }
        Ok(())
    }

    fn push(&mut self, writes: &mut Writes<'_>, row: input::Row) -> Result<(), PublishError> {
        if self.grouper.push(row) {
            self.flush(writes)?;
        }
        Ok(())
    }

    fn finish(mut self, writes: &mut Writes<'_>) -> Result<(Vec<u64>, Vec<Column>), PublishError> {
        if self.grouper.rows() > 0 {
            self.flush(writes)?;
        }
        Ok((self.row_groups, self.columns))
    }
}

/// One pass over `rows` that checks every cell while cutting the chunks (a collection run:
/// the rows come once, from a database). A refused cell fails the publish once every row is
/// checked (the report lists them all); the chunks written before it are left to chunk
/// collection, nothing is announced.
fn streamed_body(
    writes: &mut Writes<'_>,
    items: &[Item],
    (rows, mut differ): (
        impl Iterator<Item = Result<input::Row, InputError>>,
        Option<&mut diff::Differ<'_>>,
    ),
    code: &str,
) -> Result<Body, PublishError> {
    if items.is_empty() {
        return Err(PublishError::NoItems(code.to_owned()));
    }
    let state = writes.state;
    let mut v = Validation::new();
    let mut table = TableWriter::with_min_bytes(items, table::COLLECTED_MIN_GROUP_BYTES);
    for (n, row) in rows.enumerate() {
        let row = row?;
        if v.check_row(state, items, (n as u64 + 1, &row), code)? && v.rows == 0 {
            if let Some(d) = differ.as_deref_mut() {
                d.push(writes, &row)?;
            }
            table.push(writes, row)?;
        }
    }
    if v.rows > 0 {
        return Err(v.refused()?);
    }
    let (row_groups, columns) = table.finish(writes)?;
    Ok(Body::Table {
        row_groups,
        columns,
    })
}

/// The report of refused cells: one JSON line per cell (as in the manifest's report), written
/// to `<node dir>/rejects/` as pass 1 finds them, never held in memory. A report stops growing
/// at [`MAX_REPORT_BYTES`] (the counts stay exact); room for it is reserved [`REPORT_CHUNK`] at
/// a time. The newest [`KEPT_REPORTS`] files are kept.
struct Report {
    path: PathBuf,
    out: Option<std::io::BufWriter<File>>,
    /// Bytes written.
    bytes: u64,
    /// Cells written (fewer than refused once the report is full).
    cells: u64,
    /// Room reserved for the report (`bytes` landed in it).
    room: Reservation,
    /// `bytes`, as the reservation reads it.
    landed: Arc<AtomicU64>,
}

impl Report {
    fn create(node_dir: &Path, space: &Space, code: &str) -> Result<Self, PublishError> {
        let dir = node_dir.join(REPORT_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| PublishError::File {
            path: dir.display().to_string(),
            source,
        })?;
        prune_reports(&dir);
        // A random part: the portal serves reports by name, and the code and time are public.
        let path = dir.join(format!(
            "{}-{}-{}.jsonl",
            code.replace('/', "-"),
            now_ms(),
            hex::encode(rand::random::<[u8; 8]>())
        ));
        let room = space.reserve_one(&path, REPORT_CHUNK as u64)?;
        let file = crate::outfile::create_new(&path)?;
        let landed = Arc::new(AtomicU64::new(0));
        let l = landed.clone();
        room.track(move || l.load(Ordering::Relaxed));
        Ok(Self {
            path,
            out: Some(std::io::BufWriter::new(file)),
            bytes: 0,
            cells: 0,
            room,
            landed,
        })
    }

    fn add(&mut self, r: &Reject) -> Result<(), PublishError> {
        // The line is at least this long: once even that does not fit, nothing is serialised.
        let least = (r.value.len() + r.item.len() + r.rule.len()) as u64;
        if self.bytes + least > MAX_REPORT_BYTES {
            return Ok(());
        }
        let Ok(mut line) = serde_json::to_vec(r) else {
            return Ok(());
        };
        line.push(b'\n');
        let len = line.len() as u64;
        if self.bytes + len > MAX_REPORT_BYTES {
            return Ok(());
        }
        if self.bytes + len > self.room.bytes() {
            self.room.grow_to(self.bytes + REPORT_CHUNK as u64)?;
        }
        let written = match &mut self.out {
            Some(out) => std::io::Write::write_all(out, &line),
            None => Ok(()),
        };
        written.map_err(|e| self.io(e))?;
        self.bytes += len;
        self.landed.store(self.bytes, Ordering::Relaxed);
        self.cells += 1;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), PublishError> {
        if let Some(out) = self.out.take() {
            let file = out.into_inner().map_err(|e| self.io(e.into_error()))?;
            file.sync_data().map_err(|e| self.io(e))?;
        }
        Ok(())
    }

    fn io(&self, source: std::io::Error) -> PublishError {
        PublishError::File {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Stores the report as chunks of at most [`REPORT_CHUNK`] bytes, read back from the file.
    fn store(&self, writes: &mut Writes<'_>) -> Result<Vec<ChunkRef>, PublishError> {
        let mut file = File::open(&self.path).map_err(|e| self.io(e))?;
        let mut chunks = Vec::new();
        let mut buf = vec![0u8; REPORT_CHUNK];
        loop {
            let n = read_full(&mut file, &mut buf).map_err(|e| self.io(e))?;
            if n == 0 {
                break;
            }
            chunks.push(writes.put(&buf[..n])?);
        }
        Ok(chunks)
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match std::io::Read::read(file, &mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Keeps the newest reports in `dir` (names end in the time they were made), so that at most
/// [`KEPT_REPORTS`] remain once the next one is written.
fn prune_reports(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut reports: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    reports.sort();
    let excess = (reports.len() + 1).saturating_sub(KEPT_REPORTS);
    for (_, path) in reports.into_iter().take(excess) {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove an old reject report");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_file_names_are_cleaned() {
        assert_eq!(clean_file_name("C:\\x\\报表.xlsx"), "报表.xlsx");
        assert_eq!(clean_file_name("a/b/.bashrc"), "data.bashrc");
        assert_eq!(clean_file_name("evil\u{202E}gpj.exe"), "evilgpj.exe");
        assert_eq!(clean_file_name("\n\t"), "data");
        assert_eq!(clean_file_name("../../etc/passwd"), "passwd");
        assert_eq!(clean_file_name("a\u{7}b"), "ab");
        assert!(clean_file_name(&"数".repeat(300)).len() <= MAX_FILE_NAME);
    }

    /// Review 10, H2(c): a refused value of megabytes was serialised whole into the report line
    /// (and kept whole among the first rejects of the answer).
    #[test]
    fn a_long_refused_value_is_reported_by_its_start() {
        let long = "值".repeat(1_000_000);
        let r = Reject::new(7, "金额", &long, "not a number".into());
        assert!(
            r.value.len() <= REPORTED_VALUE + "…".len(),
            "{}",
            r.value.len()
        );
        assert!(r.value.starts_with("值值") && r.value.ends_with('…'));
        assert_eq!(r.value_bytes, Some(3_000_000));
        let short = Reject::new(7, "金额", "x", "not a number".into());
        assert_eq!((short.value.as_str(), short.value_bytes), ("x", None));
        let line = serde_json::to_string(&short).unwrap();
        assert!(!line.contains("value_bytes"), "{line}");

        // The report stops growing at its limit without serialising what no longer fits.
        let dir = tempfile::tempdir().unwrap();
        let space = Space::new(dir.path(), crate::outfile::Floor::Bytes(0));
        let mut report = Report::create(dir.path(), &space, "102001/000001").unwrap();
        report.add(&r).unwrap();
        assert!(
            report.bytes < 2 * REPORTED_VALUE as u64 + 200,
            "{}",
            report.bytes
        );
        report.bytes = MAX_REPORT_BYTES - 10;
        report.add(&short).unwrap();
        assert_eq!(report.cells, 1, "a line past the limit is not written");
        report.finish().unwrap();
    }
}
