//! Reading table data (库表) to publish: CSV, JSONL, XLSX and Parquet, each turned into rows of
//! text cells in the order of the entry's 信息项.
//!
//! CSV, XLSX and Parquet name their columns in a header (the first row, for CSV and XLSX); every
//! 信息项 must have a column and every column must be a 信息项. JSONL rows are objects whose
//! keys are 信息项 names; a missing key is an empty (null) cell.
//!
//! Every format is read as a stream of rows; XLSX, a zip archive, is checked (and the XML parts
//! calamine reads pre-scanned) before calamine reads it, and its first sheet streamed cell by cell
//! ([`xlsx`]).

pub mod xlsx;

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use arrow_array::RecordBatch;
use arrow_cast::display::{ArrayFormatter, FormatOptions};

/// A row of text cells in item order.
pub type Row = Vec<String>;

/// Why input could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct InputError {
    /// The input file.
    pub path: String,
    /// What was wrong, with the row or line, and what to do.
    pub message: String,
}

/// The input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputFormat {
    /// Comma-separated, UTF-8, header row.
    Csv,
    /// One JSON object per line.
    Jsonl,
    /// Excel workbook (first sheet, header row); `.xls` is refused when read.
    Xlsx,
    /// Apache Parquet.
    Parquet,
}

impl InputFormat {
    /// The format named by a file's extension.
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        Some(match ext.as_str() {
            "csv" => Self::Csv,
            "jsonl" | "ndjson" => Self::Jsonl,
            "xlsx" | "xlsm" | "xls" => Self::Xlsx,
            "parquet" => Self::Parquet,
            _ => return None,
        })
    }
}

/// Rows in item order.
pub type Rows = Box<dyn Iterator<Item = Result<Row, InputError>> + Send>;

/// Opens `path` and yields its rows in the order of `items`.
pub fn open(path: &Path, items: &[String]) -> Result<Rows, InputError> {
    let file = File::open(path).map_err(|e| InputError {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    open_file(file, path, items)
}

/// Yields the rows of `file`, opened from `path` (which names the format and the errors), in
/// the order of `items`.
pub fn open_file(file: File, path: &Path, items: &[String]) -> Result<Rows, InputError> {
    let err = |message: String| InputError {
        path: path.display().to_string(),
        message,
    };
    let format = InputFormat::of(path).ok_or_else(|| {
        err("unknown table format; use a .csv, .jsonl, .xlsx or .parquet file (or --file to publish it as an opaque file)".into())
    })?;
    match format {
        InputFormat::Csv => csv_reader_rows(file, path.display().to_string(), items),
        InputFormat::Jsonl => jsonl_rows(file, path, items),
        InputFormat::Xlsx => xlsx::rows(file, path, items),
        InputFormat::Parquet => parquet_rows(file, path, items),
    }
    .map_err(err)
}

/// Maps header columns to items: `order[i]` is the column of item `i`.
fn column_order(header: &[String], items: &[String]) -> Result<Vec<usize>, String> {
    let pos: HashMap<&str, usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| (h.trim().trim_start_matches('\u{feff}'), i))
        .collect();
    let missing: Vec<&str> = items
        .iter()
        .filter(|i| !pos.contains_key(i.as_str()))
        .map(String::as_str)
        .collect();
    let mut extra: Vec<&str> = pos
        .keys()
        .filter(|h| !items.iter().any(|i| i == *h))
        .copied()
        .collect();
    extra.sort_unstable();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(format!(
            "the header does not match the entry's 信息项: missing {missing:?}, not an item {extra:?}; the header must name exactly the items {items:?}"
        ));
    }
    Ok(items.iter().map(|i| pos[i.as_str()]).collect())
}

fn reorder(mut cells: Vec<String>, order: &[usize]) -> Row {
    // `order` names each column once (see `column_order`): the cells move, none is copied.
    order
        .iter()
        .map(|&i| cells.get_mut(i).map(std::mem::take).unwrap_or_default())
        .collect()
}

/// Rows in the order of `items` from CSV text read from `reader` (a stream, e.g. a database's
/// `COPY` output); `label` names it in errors.
pub fn csv_stream(
    reader: impl std::io::Read + Send + 'static,
    label: &str,
    items: &[String],
) -> Result<Rows, InputError> {
    csv_reader_rows(reader, label.to_owned(), items).map_err(|message| InputError {
        path: label.to_owned(),
        message,
    })
}

fn csv_reader_rows(
    reader: impl std::io::Read + Send + 'static,
    path_s: String,
    items: &[String],
) -> Result<Rows, String> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(reader);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("cannot read the header row: {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    let order = column_order(&header, items)?;
    Ok(Box::new(CsvRows {
        width: header.len(),
        reader,
        record: csv::StringRecord::new(),
        order,
        path: path_s,
        n: 0,
    }))
}

/// The rows of a CSV reader in item order, read into one reused record (a row costs the
/// allocation of its own cells only).
struct CsvRows<R> {
    reader: csv::Reader<R>,
    record: csv::StringRecord,
    order: Vec<usize>,
    width: usize,
    path: String,
    n: u64,
}

impl<R: std::io::Read> Iterator for CsvRows<R> {
    type Item = Result<Row, InputError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.n += 1;
        let fail = |message: String| {
            Some(Err(InputError {
                path: self.path.clone(),
                message: format!("row {}: {message}", self.n),
            }))
        };
        match self.reader.read_record(&mut self.record) {
            Ok(true) => {}
            Ok(false) => return None,
            Err(e) => return fail(e.to_string()),
        }
        if self.record.len() != self.width {
            return fail(format!(
                "{} cells where the header has {}",
                self.record.len(),
                self.width
            ));
        }
        Some(Ok(self
            .order
            .iter()
            .map(|&i| self.record.get(i).unwrap_or_default().to_owned())
            .collect()))
    }
}

/// A JSON value as a text cell: null is empty, a string itself, a number or boolean its text; a
/// nested value is refused.
pub fn json_cell(v: serde_json::Value) -> Result<String, String> {
    Ok(match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s,
        serde_json::Value::Bool(b) => b.to_string(),
        serde_json::Value::Number(n) => n.to_string(),
        other => {
            return Err(format!(
                "nested value {other} (cells must be strings, numbers, booleans or null)"
            ))
        }
    })
}

fn jsonl_rows(file: File, path: &Path, items: &[String]) -> Result<Rows, String> {
    let items: Vec<String> = items.to_vec();
    let path_s = path.display().to_string();
    let lines = BufReader::new(file).lines().enumerate();
    Ok(Box::new(
        lines
            .filter(|(_, l)| l.as_ref().map(|l| !l.trim().is_empty()).unwrap_or(true))
            .map(move |(n, line)| {
                let fail = |message: String| InputError {
                    path: path_s.clone(),
                    message: format!("line {}: {message}", n + 1),
                };
                let line = line.map_err(|e| fail(e.to_string()))?;
                let obj: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&line)
                        .map_err(|e| fail(format!("not a JSON object: {e}")))?;
                if let Some(k) = obj.keys().find(|k| !items.contains(k)) {
                    return Err(fail(format!(
                        "{k:?} is not an item of the entry; items are {items:?}"
                    )));
                }
                let mut obj = obj;
                items
                    .iter()
                    .map(|i| {
                        json_cell(obj.remove(i).unwrap_or(serde_json::Value::Null))
                            .map_err(|e| fail(format!("{i}: {e}")))
                    })
                    .collect()
            }),
    ))
}

fn xlsx_cell(d: &calamine::Data) -> String {
    use calamine::Data;
    match d {
        Data::Empty => String::new(),
        Data::String(s) => s.clone(),
        Data::Int(i) => i.to_string(),
        Data::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", *f as i64),
        Data::Float(f) => f.to_string(),
        Data::Bool(b) => b.to_string(),
        Data::DateTime(dt) => match dt.as_datetime() {
            Some(t) if t.time() == chrono::NaiveTime::MIN => t.format("%Y-%m-%d").to_string(),
            Some(t) => t.format("%Y-%m-%d %H:%M:%S").to_string(),
            None => dt.as_f64().to_string(),
        },
        Data::DateTimeIso(s) | Data::DurationIso(s) => s.clone(),
        Data::Error(e) => format!("#{e:?}"),
    }
}

fn batch_rows(batch: &RecordBatch, order: &[usize]) -> Result<Vec<Row>, String> {
    let options = FormatOptions::default().with_null("");
    let formatters = order
        .iter()
        .map(|&i| ArrayFormatter::try_new(batch.column(i).as_ref(), &options))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    Ok((0..batch.num_rows())
        .map(|r| formatters.iter().map(|f| f.value(r).to_string()).collect())
        .collect())
}

fn parquet_rows(file: File, path: &Path, items: &[String]) -> Result<Rows, String> {
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|e| e.to_string())?;
    let header: Vec<String> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let order = column_order(&header, items)?;
    let reader = builder.build().map_err(|e| e.to_string())?;
    let path_s = path.display().to_string();
    Ok(Box::new(reader.flat_map(move |b| {
        let rows = b
            .map_err(|e| e.to_string())
            .and_then(|b| batch_rows(&b, &order));
        match rows {
            Ok(rows) => rows.into_iter().map(Ok).collect::<Vec<_>>(),
            Err(message) => vec![Err(InputError {
                path: path_s.clone(),
                message,
            })],
        }
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn items() -> Vec<String> {
        vec!["编号".into(), "金额".into()]
    }

    fn rows(path: &Path) -> Vec<Row> {
        open(path, &items())
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    }

    fn want() -> Vec<Row> {
        vec![
            vec!["A1".into(), "12.5".into()],
            vec!["A2".into(), String::new()],
        ]
    }

    #[test]
    fn csv_columns_follow_the_items_not_the_header_order() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "金额,编号\n12.5,A1\n,A2\n").unwrap();
        assert_eq!(rows(&p), want());
    }

    #[test]
    fn csv_header_mismatch_names_missing_and_extra() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.csv");
        std::fs::write(&p, "编号,价格\nA1,1\n").unwrap();
        let e = open(&p, &items()).err().unwrap().to_string();
        assert!(e.contains("金额") && e.contains("价格"), "{e}");
    }

    #[test]
    fn jsonl_rows_with_numbers_nulls_and_bad_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.jsonl");
        std::fs::write(
            &p,
            "{\"编号\":\"A1\",\"金额\":12.5}\n\n{\"编号\":\"A2\",\"金额\":null}\n",
        )
        .unwrap();
        assert_eq!(rows(&p), want());
        std::fs::write(&p, "{\"编号\":\"A1\",\"别的\":1}\n").unwrap();
        let e = open(&p, &items())
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("别的"), "{e}");
    }

    #[test]
    fn parquet_values_become_text() {
        use arrow_array::{Float64Array, StringArray};
        use arrow_schema::{DataType, Field, Schema};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("编号", DataType::Utf8, true),
            Field::new("金额", DataType::Float64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(StringArray::from(vec!["A1", "A2"])),
                Arc::new(Float64Array::from(vec![Some(12.5), None])),
            ],
        )
        .unwrap();
        let mut w =
            parquet::arrow::ArrowWriter::try_new(File::create(&p).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        assert_eq!(rows(&p), want());
    }

    #[test]
    fn xlsx_first_sheet_with_header() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.xlsx");
        let mut book = rust_xlsxwriter::Workbook::new();
        let sheet = book.add_worksheet();
        sheet.write_string(0, 0, "编号").unwrap();
        sheet.write_string(0, 1, "金额").unwrap();
        sheet.write_string(1, 0, "A1").unwrap();
        sheet.write_number(1, 1, 12.5).unwrap();
        sheet.write_string(2, 0, "A2").unwrap();
        book.save(&p).unwrap();
        assert_eq!(rows(&p), want());
    }
}
