//! Writing a held version out: a file version as its original bytes, a table version as CSV,
//! JSONL or Parquet with the chosen columns.
//!
//! Output goes to a partial file of its own beside the target ([`crate::partial`]), is fsynced,
//! and is renamed over the target only when complete, so a reader never sees half a file. Chunks
//! are re-verified as they are read. An export can be stopped between row groups. The target may
//! not be a symbolic link.
//!
//! Room for the output is reserved first in the node's free-space ledger
//! ([`crate::outfile::Space`]), for the bytes [`estimate`] says the format writes (a table pull
//! reserves it before it fetches anything and hands the reservation over). Bytes written count
//! as landed, so the reservation covers only what is still to come; an output that outgrows its
//! estimate (values needing JSON escapes or doubled CSV quotes, floats that grow when typed)
//! asks for more room in steps of [`GROW_STEP`] as it goes, and fails with the same error as an
//! up-front refusal when there is none, leaving nothing behind.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use arrow_schema::{DataType as ArrowType, Field, Schema};
use huitong_protocol::catalogue::DataType;
use huitong_protocol::dataset::{Body, Column, Manifest};
use serde::{Deserialize, Serialize};

use super::table::{self, ChunkFormatError};
use crate::chunks::{ChunkError, ChunkStore};
use crate::outfile::{self, OutError, Reservation, Space};

/// An export that outgrows its reservation asks for this much more at a time.
pub const GROW_STEP: u64 = 16 << 20;
/// Parquet's fixed overhead in the estimate (footer, schema, Arrow schema, page indexes).
const PARQUET_FIXED: u64 = 64 << 10;
/// Parquet's overhead per column in the estimate (column chunk metadata and statistics).
const PARQUET_PER_COLUMN: u64 = 4 << 10;

/// Output formats for tables.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutFormat {
    /// CSV with a header row.
    #[default]
    Csv,
    /// One JSON object per row.
    Jsonl,
    /// Apache Parquet (typed columns for 整型, 浮点/双精度 and 逻辑).
    Parquet,
}

impl OutFormat {
    /// Its name, as in JSON and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            OutFormat::Csv => "csv",
            OutFormat::Jsonl => "jsonl",
            OutFormat::Parquet => "parquet",
        }
    }
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// Writing the output failed.
    #[error("{path}: {message}")]
    Write {
        /// The output path.
        path: String,
        /// What failed.
        message: String,
    },
    /// A chunk is missing or corrupt.
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    /// A column chunk does not decode.
    #[error(transparent)]
    Format(#[from] ChunkFormatError),
    /// Stopped on request before the output was complete; nothing was written.
    #[error("stopped before the output was complete; nothing was written")]
    Stopped,
    /// The output is a link, or there is no room for it.
    #[error(transparent)]
    Out(#[from] OutError),
}

/// The bytes an export of `columns` in `format` writes, as far as the manifest tells (review 10,
/// M9). `data` is the chosen columns' chunk bytes: Arrow IPC, so the text plus at least 4 bytes
/// a cell (offsets) plus headers.
/// - a file version: its size, exactly;
/// - CSV: `data` plus the header row; each value's 4 bytes of offsets cover its separator or
///   line end and a pair of quotes;
/// - JSONL: `data` plus, on every row, `{`, `}` and the line end and, for every column, its
///   JSON-quoted name, `:`, `,` and two more bytes (`rows × Σ(len(name)+6)` with quotes counted
///   in the name), covering value quotes, `null` and typed values such as `false` or `1.0`;
/// - Parquet (compressed, usually far smaller): `data` plus 1/16, 64 KiB and 4 KiB a column.
///
/// Text needing JSON escapes or doubled CSV quotes can write more; the export then asks for
/// more room as it goes ([`GROW_STEP`]).
pub fn estimate(manifest: &Manifest, columns: &[String], format: OutFormat) -> u64 {
    let (row_groups, all) = match &manifest.body {
        Body::File { chunks, .. } => return chunks.iter().map(|c| u64::from(c.len)).sum(),
        Body::Table {
            row_groups,
            columns,
        } => (row_groups, columns),
    };
    // The columns the export writes, as it picks them.
    let selected: Vec<&Column> = columns
        .iter()
        .filter_map(|c| all.iter().find(|a| &a.name == c))
        .collect();
    let rows: u64 = row_groups.iter().fold(0, |a, &r| a.saturating_add(r));
    let data: u64 = selected
        .iter()
        .flat_map(|c| &c.chunks)
        .fold(0, |a, c| a.saturating_add(u64::from(c.len)));
    let quoted =
        |name: &str| serde_json::to_string(name).map_or(name.len() + 2, |q| q.len()) as u64;
    match format {
        OutFormat::Csv => {
            let header: u64 = selected.iter().map(|c| quoted(&c.name) + 1).sum();
            data.saturating_add(header)
        }
        OutFormat::Jsonl => {
            let per_row: u64 = 3 + selected.iter().map(|c| quoted(&c.name) + 4).sum::<u64>();
            data.saturating_add(rows.saturating_mul(per_row))
        }
        OutFormat::Parquet => data
            .saturating_add(data / 16)
            .saturating_add(PARQUET_FIXED)
            .saturating_add(PARQUET_PER_COLUMN.saturating_mul(selected.len() as u64)),
    }
}

/// Where an export's room comes from.
pub enum Room<'a> {
    /// Reserve it in the node's ledger now.
    Reserve(&'a Space),
    /// Already reserved (a table pull reserves before it fetches).
    Held(Reservation),
}

/// The partial output as the format writers see it: every write counts as landed in the
/// reservation, which grows (checked) when the output outgrows it.
struct Metered {
    file: File,
    written: Arc<AtomicU64>,
    room: Reservation,
    /// Where a refused growth is told to the export (the writers see only an I/O error).
    refused: Arc<std::sync::Mutex<Option<OutError>>>,
}

impl Metered {
    fn new(file: File, room: Reservation) -> Self {
        let written = Arc::new(AtomicU64::new(0));
        let w = written.clone();
        room.track(move || w.load(Ordering::Relaxed));
        Self {
            file,
            written,
            room,
            refused: Default::default(),
        }
    }
}

impl Write for Metered {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let after = self
            .written
            .load(Ordering::Relaxed)
            .saturating_add(buf.len() as u64);
        if after > self.room.bytes() {
            if let Err(e) = self.room.grow_to(after.saturating_add(GROW_STEP)) {
                let message = e.to_string();
                *self.refused.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                return Err(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    message,
                ));
            }
        }
        let n = self.file.write(buf)?;
        self.written.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Writes `manifest`'s data (only `columns`, for tables) to `out`. `stop` is asked between
/// row groups; when it says yes the export ends with [`ExportError::Stopped`] and leaves nothing.
pub fn export(
    chunks: &ChunkStore,
    manifest: &Manifest,
    columns: &[String],
    format: OutFormat,
    out: &Path,
    room: Room<'_>,
    stop: &dyn Fn() -> bool,
) -> Result<u64, ExportError> {
    let werr = |e: &dyn std::fmt::Display| ExportError::Write {
        path: out.display().to_string(),
        message: e.to_string(),
    };
    outfile::check_target(out)?;
    let room = match room {
        Room::Held(r) => r,
        Room::Reserve(space) => space.reserve_one(out, estimate(manifest, columns, format))?,
    };
    let partial = crate::partial::Partial::claim(out, false).map_err(|e| werr(&e))?;
    let file = Metered::new(partial.file().try_clone().map_err(|e| werr(&e))?, room);
    let refused = file.refused.clone();
    let result = (|| {
        let written = match &manifest.body {
            Body::File { chunks: refs, .. } => {
                let mut w = BufWriter::with_capacity(1 << 20, file);
                let mut n = 0u64;
                for r in refs {
                    if stop() {
                        return Err(ExportError::Stopped);
                    }
                    let bytes = chunks.read_verified(&r.hash)?;
                    w.write_all(&bytes).map_err(|e| werr(&e))?;
                    n += bytes.len() as u64;
                }
                w.into_inner().map_err(|e| werr(&e))?;
                n
            }
            Body::Table {
                row_groups,
                columns: all,
            } => {
                let selected: Vec<&Column> = columns
                    .iter()
                    .filter_map(|c| all.iter().find(|a| &a.name == c))
                    .collect();
                write_table(
                    chunks,
                    row_groups.len(),
                    &selected,
                    format,
                    file,
                    stop,
                    &werr,
                )?
            }
        };
        if stop() {
            return Err(ExportError::Stopped);
        }
        Ok(written)
    })();
    match result {
        Ok(n) => {
            partial.finish().map_err(|e| werr(&e))?;
            Ok(n)
        }
        Err(e) => {
            partial.discard();
            // The output outgrew its estimate and no more room was left: say so plainly.
            let refused = refused.lock().unwrap_or_else(|p| p.into_inner()).take();
            Err(refused.map_or(e, ExportError::Out))
        }
    }
}

/// Writes rows (flushed into `file`, not synced); returns how many.
fn write_table(
    chunks: &ChunkStore,
    groups: usize,
    columns: &[&Column],
    format: OutFormat,
    file: Metered,
    stop: &dyn Fn() -> bool,
    werr: &dyn Fn(&dyn std::fmt::Display) -> ExportError,
) -> Result<u64, ExportError> {
    let mut sink = Sink::new(format, columns, file).map_err(|e| werr(&e))?;
    let mut rows = 0u64;
    for g in 0..groups {
        if stop() {
            return Err(ExportError::Stopped);
        }
        let arrays = columns
            .iter()
            .map(|c| {
                Ok(table::decode_column(
                    &chunks.read_verified(&c.chunks[g].hash)?,
                )?)
            })
            .collect::<Result<Vec<StringArray>, ExportError>>()?;
        rows += sink.group(columns, &arrays).map_err(|e| werr(&e))?;
    }
    sink.finish().map_err(|e| werr(&e))?;
    Ok(rows)
}

/// A table writer in one of the output formats.
enum Sink {
    Csv(Box<csv::Writer<Metered>>),
    Jsonl(BufWriter<Metered>),
    Parquet(Box<parquet::arrow::ArrowWriter<Metered>>, Arc<Schema>),
}

fn cell(a: &StringArray, r: usize) -> Option<&str> {
    (!a.is_null(r)).then(|| a.value(r))
}

fn arrow_type(t: DataType) -> ArrowType {
    match t {
        DataType::I => ArrowType::Int64,
        DataType::B | DataType::F => ArrowType::Float64,
        DataType::L => ArrowType::Boolean,
        _ => ArrowType::Utf8,
    }
}

fn truthy(s: &str) -> bool {
    matches!(s, "true" | "1" | "是")
}

fn json_value(t: DataType, v: Option<&str>) -> serde_json::Value {
    use serde_json::Value;
    let Some(v) = v else { return Value::Null };
    match t {
        DataType::I => v
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(v)),
        DataType::B | DataType::F => v
            .parse::<f64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(v)),
        DataType::L => Value::Bool(truthy(v)),
        _ => Value::from(v),
    }
}

fn typed(t: DataType, a: &StringArray) -> ArrayRef {
    let n = a.len();
    match arrow_type(t) {
        ArrowType::Int64 => Arc::new(Int64Array::from_iter(
            (0..n).map(|r| cell(a, r).and_then(|v| v.parse().ok())),
        )),
        ArrowType::Float64 => Arc::new(Float64Array::from_iter(
            (0..n).map(|r| cell(a, r).and_then(|v| v.parse().ok())),
        )),
        ArrowType::Boolean => Arc::new(BooleanArray::from_iter(
            (0..n).map(|r| cell(a, r).map(truthy)),
        )),
        _ => Arc::new(a.clone()),
    }
}

impl Sink {
    fn new(format: OutFormat, columns: &[&Column], file: Metered) -> Result<Self, String> {
        let names = columns.iter().map(|c| c.name.as_str());
        Ok(match format {
            OutFormat::Csv => {
                let mut w = csv::WriterBuilder::new().from_writer(file);
                w.write_record(names).map_err(|e| e.to_string())?;
                Sink::Csv(Box::new(w))
            }
            OutFormat::Jsonl => Sink::Jsonl(BufWriter::with_capacity(1 << 20, file)),
            OutFormat::Parquet => {
                let schema = Arc::new(Schema::new(
                    columns
                        .iter()
                        .map(|c| Field::new(&c.name, arrow_type(c.data_type), true))
                        .collect::<Vec<_>>(),
                ));
                let props = parquet::file::properties::WriterProperties::builder()
                    .set_compression(parquet::basic::Compression::SNAPPY)
                    .build();
                let w = parquet::arrow::ArrowWriter::try_new(file, schema.clone(), Some(props))
                    .map_err(|e| e.to_string())?;
                Sink::Parquet(Box::new(w), schema)
            }
        })
    }

    fn group(&mut self, columns: &[&Column], arrays: &[StringArray]) -> Result<u64, String> {
        let rows = arrays.first().map_or(0, |a| a.len());
        if arrays.iter().any(|a| a.len() != rows) {
            return Err("columns of one row group have different lengths".into());
        }
        match self {
            Sink::Csv(w) => {
                for r in 0..rows {
                    w.write_record(arrays.iter().map(|a| cell(a, r).unwrap_or("")))
                        .map_err(|e| e.to_string())?;
                }
            }
            Sink::Jsonl(w) => {
                // Keys in column order (a serde_json map would sort them).
                let keys = columns
                    .iter()
                    .map(|c| serde_json::to_string(&c.name))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())?;
                let mut line = String::new();
                for r in 0..rows {
                    line.clear();
                    line.push('{');
                    for (i, ((c, a), k)) in columns.iter().zip(arrays).zip(&keys).enumerate() {
                        if i > 0 {
                            line.push(',');
                        }
                        line.push_str(k);
                        line.push(':');
                        line.push_str(&json_value(c.data_type, cell(a, r)).to_string());
                    }
                    line.push_str("}\n");
                    w.write_all(line.as_bytes()).map_err(|e| e.to_string())?;
                }
            }
            Sink::Parquet(w, schema) => {
                let cols = columns
                    .iter()
                    .zip(arrays)
                    .map(|(c, a)| typed(c.data_type, a))
                    .collect();
                let batch =
                    RecordBatch::try_new(schema.clone(), cols).map_err(|e| e.to_string())?;
                w.write(&batch).map_err(|e| e.to_string())?;
            }
        }
        Ok(rows as u64)
    }

    /// Flushes everything into the file (not synced).
    fn finish(self) -> Result<(), String> {
        match self {
            Sink::Csv(w) => w.into_inner().map(drop).map_err(|e| e.to_string()),
            Sink::Jsonl(w) => w.into_inner().map(drop).map_err(|e| e.to_string()),
            Sink::Parquet(w, _) => w.into_inner().map(drop).map_err(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::dataset::{Body, Column, Manifest, MANIFEST_VERSION};
    use huitong_protocol::{ResourceCode, SecretKey};

    #[test]
    fn table_to_csv_jsonl_and_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::chunks::open_in(dir.path());
        let space = Space::new(dir.path(), crate::outfile::Floor::Bytes(0));
        let cells = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let col = |name: &str, t: DataType, v: &[&str]| Column {
            name: name.into(),
            data_type: t,
            length: None,
            chunks: vec![
                store
                    .put(&table::encode_column(name, &cells(v)).unwrap())
                    .unwrap()
                    .0,
            ],
        };
        let manifest = Manifest {
            layout: MANIFEST_VERSION,
            provider: SecretKey::from_bytes([7; 32]).public(),
            code: ResourceCode::parse("301001/000001").unwrap(),
            version: 1,
            created_at_ms: 0,
            body: Body::Table {
                row_groups: vec![2],
                columns: vec![
                    col("编号", DataType::C, &["A,1", "A2"]),
                    col("数量", DataType::I, &["3", ""]),
                    col("有效", DataType::L, &["是", "false"]),
                ],
            },
            rejects: None,
            changes: None,
        };
        let all: Vec<String> = vec!["编号".into(), "数量".into(), "有效".into()];
        let csv = dir.path().join("o.csv");
        assert_eq!(
            export(
                &store,
                &manifest,
                &all,
                OutFormat::Csv,
                &csv,
                Room::Reserve(&space),
                &|| false
            )
            .unwrap(),
            2
        );
        assert_eq!(
            std::fs::read_to_string(&csv).unwrap(),
            "编号,数量,有效\n\"A,1\",3,是\nA2,,false\n"
        );
        let jsonl = dir.path().join("o.jsonl");
        export(
            &store,
            &manifest,
            &all[..2],
            OutFormat::Jsonl,
            &jsonl,
            Room::Reserve(&space),
            &|| false,
        )
        .unwrap();
        assert_eq!(
            std::fs::read_to_string(&jsonl).unwrap(),
            "{\"编号\":\"A,1\",\"数量\":3}\n{\"编号\":\"A2\",\"数量\":null}\n"
        );
        let pq = dir.path().join("o.parquet");
        export(
            &store,
            &manifest,
            &all,
            OutFormat::Parquet,
            &pq,
            Room::Reserve(&space),
            &|| false,
        )
        .unwrap();
        let back: Vec<Vec<String>> = crate::dataset::input::open(&pq, &all)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            back,
            vec![cells(&["A,1", "3", "true"]), cells(&["A2", "", "false"])]
        );
        assert!(crate::partial::existing(&csv).is_empty());
        // A stopped export leaves neither the output nor a partial file.
        let stopped = dir.path().join("stopped.csv");
        assert!(matches!(
            export(
                &store,
                &manifest,
                &all,
                OutFormat::Csv,
                &stopped,
                Room::Reserve(&space),
                &|| true
            ),
            Err(ExportError::Stopped)
        ));
        assert!(!stopped.exists() && crate::partial::existing(&stopped).is_empty());
    }

    /// Issue #10, point 6: never through a link (a link at the output is refused, one planted
    /// at a partial file's name is left alone), and not at all when the file system lacks the
    /// room, which the error names.
    #[test]
    fn links_and_too_little_space_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::chunks::open_in(dir.path());
        let space = Space::new(dir.path(), crate::outfile::Floor::Bytes(0));
        let file = |chunks: Vec<huitong_protocol::dataset::ChunkRef>| Manifest {
            layout: MANIFEST_VERSION,
            provider: SecretKey::from_bytes([7; 32]).public(),
            code: ResourceCode::parse("301001/000001").unwrap(),
            version: 1,
            created_at_ms: 0,
            body: Body::File {
                name: "f".into(),
                chunks,
            },
            rejects: None,
            changes: None,
        };
        let never = || false;
        let small = file(vec![store.put(b"bytes").unwrap().0]);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let out = dir.path().join("out.bin");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        let e = export(
            &store,
            &small,
            &[],
            OutFormat::Csv,
            &out,
            Room::Reserve(&space),
            &never,
        )
        .unwrap_err();
        assert!(
            matches!(e, ExportError::Out(OutError::Symlink { .. })),
            "{e}"
        );
        let out2 = dir.path().join("out2.bin");
        let planted = dir.path().join(crate::partial::prefix(&out2));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        assert_eq!(
            export(
                &store,
                &small,
                &[],
                OutFormat::Csv,
                &out2,
                Room::Reserve(&space),
                &never
            )
            .unwrap(),
            5
        );
        assert_eq!(std::fs::read(&out2).unwrap(), b"bytes");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert!(std::fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink());
        // More than the file system holds: refused before anything is written.
        let free = crate::outfile::available(dir.path()).unwrap();
        let chunk = huitong_protocol::dataset::ChunkRef {
            hash: huitong_protocol::dataset::ChunkHash::of(b"x"),
            len: huitong_protocol::dataset::MAX_CHUNK_BYTES,
        };
        // A quarter more than is free, a margin other writers on the machine will not close.
        let huge = file(vec![
            chunk;
            (free / 4 * 5 / u64::from(chunk.len)) as usize + 1
        ]);
        let out4 = dir.path().join("out4.bin");
        match export(
            &store,
            &huge,
            &[],
            OutFormat::Csv,
            &out4,
            Room::Reserve(&space),
            &never,
        ) {
            Err(ExportError::Out(OutError::NoSpace {
                needed, available, ..
            })) => assert!(needed > available),
            other => panic!("expected NoSpace, got {other:?}"),
        }
        assert!(crate::partial::existing(&out4).is_empty() && !out4.exists());
    }

    /// A table of `rows` rows of short values (codes, flags, small numbers, some empty, some
    /// needing CSV quotes) in groups of 1,000, with long column names.
    fn short_values(store: &ChunkStore, rows: usize) -> (Manifest, Vec<String>) {
        let names = [
            ("统一社会信用代码是否有效标志", DataType::L),
            ("行政区划代码", DataType::C),
            ("登记状态", DataType::I),
            ("注册资本万元", DataType::F),
            ("备注", DataType::C),
        ];
        let cell = |c: usize, r: usize| -> String {
            match c {
                0 => ["0", "1", ""][r % 3].into(),
                1 => ["A", "B,C", ""][r % 3].into(),
                2 => (r % 10).to_string(),
                3 => ["1", "2.5", ""][r % 3].into(),
                _ => (if r.is_multiple_of(7) { "x" } else { "" }).into(),
            }
        };
        let groups: Vec<(usize, usize)> = (0..rows)
            .step_by(1000)
            .map(|s| (s, (s + 1000).min(rows)))
            .collect();
        let columns = names
            .iter()
            .enumerate()
            .map(|(c, (name, t))| Column {
                name: (*name).into(),
                data_type: *t,
                length: None,
                chunks: groups
                    .iter()
                    .map(|&(a, b)| {
                        let cells: Vec<String> = (a..b).map(|r| cell(c, r)).collect();
                        store
                            .put(&table::encode_column(name, &cells).unwrap())
                            .unwrap()
                            .0
                    })
                    .collect(),
            })
            .collect();
        let manifest = Manifest {
            layout: MANIFEST_VERSION,
            provider: SecretKey::from_bytes([7; 32]).public(),
            code: ResourceCode::parse("301001/000001").unwrap(),
            version: 1,
            created_at_ms: 0,
            body: Body::Table {
                row_groups: groups.iter().map(|&(a, b)| (b - a) as u64).collect(),
                columns,
            },
            rejects: None,
            changes: None,
        };
        (
            manifest,
            names.iter().map(|(n, _)| (*n).to_string()).collect(),
        )
    }

    /// Review 10, M9: the estimate of each format is at least what the export writes, for a
    /// table of short values where JSONL (every column name on every row) is several times the
    /// chunks' bytes, the old estimate.
    #[test]
    fn estimates_cover_the_output_of_every_format() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::chunks::open_in(dir.path());
        let space = Space::new(dir.path(), crate::outfile::Floor::Bytes(0));
        let (manifest, names) = short_values(&store, 5_500);
        let chunk_bytes: u64 = manifest.chunks().map(|c| u64::from(c.len)).sum();
        for (format, cols) in [
            (OutFormat::Jsonl, &names[..]),
            (OutFormat::Jsonl, &names[1..2]),
            (OutFormat::Csv, &names[..]),
            (OutFormat::Csv, &names[1..2]),
            (OutFormat::Parquet, &names[..]),
        ] {
            let out = dir
                .path()
                .join(format!("o-{}-{}", cols.len(), format.as_str()));
            let rows = export(
                &store,
                &manifest,
                cols,
                format,
                &out,
                Room::Reserve(&space),
                &|| false,
            )
            .unwrap();
            assert_eq!(rows, 5_500);
            let actual = std::fs::metadata(&out).unwrap().len();
            let est = estimate(&manifest, cols, format);
            assert!(
                est >= actual,
                "{format:?} {cols:?}: estimate {est} < actual {actual}"
            );
            eprintln!(
                "{format:?}, {} column(s): estimate {est}, actual {actual}, chunk bytes {}",
                cols.len(),
                estimate(&manifest, cols, OutFormat::Csv)
            );
            // Not wildly more for text either (a pull would be refused on a disk it fits on).
            assert!(
                format == OutFormat::Parquet || est <= actual * 3,
                "{format:?} {cols:?}: estimate {est}, actual {actual}"
            );
            if format == OutFormat::Jsonl && cols.len() == names.len() {
                assert!(
                    actual > 3 * chunk_bytes,
                    "JSONL of short values is several times the chunks' bytes: {actual} vs {chunk_bytes}"
                );
            }
        }
        assert_eq!(
            space.reserved(dir.path()).unwrap(),
            (0, 0),
            "every export gave its room back"
        );
    }

    /// An export that outgrows its reservation asks for more as it goes: granted when there is
    /// room, else it fails naming the numbers and leaves nothing behind.
    #[test]
    fn an_export_past_its_estimate_asks_for_more_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::chunks::open_in(dir.path());
        let (manifest, names) = short_values(&store, 3_000);
        let free = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1 << 30));
        let f = free.clone();
        let space = Space::with_probe(
            dir.path(),
            crate::outfile::Floor::Bytes(0),
            Box::new(move |_| {
                Ok(crate::outfile::space::FsSpace {
                    available: f.load(std::sync::atomic::Ordering::Relaxed),
                    size: 1 << 40,
                })
            }),
        );
        let out = dir.path().join("grown.jsonl");
        let room = space.reserve_one(&out, 100).unwrap();
        export(
            &store,
            &manifest,
            &names,
            OutFormat::Jsonl,
            &out,
            Room::Held(room),
            &|| false,
        )
        .unwrap();
        assert!(std::fs::metadata(&out).unwrap().len() > 100);
        // Only 1 MiB free: the first growth (a step of 16 MiB) is refused.
        free.store(1 << 20, std::sync::atomic::Ordering::Relaxed);
        let out2 = dir.path().join("refused.jsonl");
        let room = space.reserve_one(&out2, 100).unwrap();
        let e = export(
            &store,
            &manifest,
            &names,
            OutFormat::Jsonl,
            &out2,
            Room::Held(room),
            &|| false,
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ExportError::Out(OutError::NoSpace {
                    available: 1048576,
                    ..
                })
            ),
            "{e}"
        );
        assert!(e.to_string().contains("needed"), "{e}");
        assert!(!out2.exists() && crate::partial::existing(&out2).is_empty());
        assert_eq!(space.reserved(dir.path()).unwrap(), (0, 0));
    }
}
