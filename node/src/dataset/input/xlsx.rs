//! XLSX in bounded memory. An XLSX file is a zip archive of XML parts, so a small file can
//! unpack to gigabytes (a zip bomb), and calamine reads some parts whole and builds more from
//! them than they hold. So:
//!
//! 1. Before calamine sees the file, the archive is checked with the `zip` crate (the one
//!    calamine reads it with): at most [`MAX_FILE`] bytes, [`MAX_ENTRIES`] parts and a central
//!    directory of [`MAX_DIRECTORY`] bytes (read from the end-of-central-directory record, before
//!    the directory is parsed); each part's declared size at most [`MAX_SHEET_PART`] for
//!    worksheets (streamed) and [`MAX_HELD_PART`] for every other part (calamine holds shared
//!    strings, styles and the workbook whole); and no part larger than 1 MiB that unpacks to
//!    more than [`MAX_RATIO`] times its packed size. `zip` fails any part that unpacks past its
//!    declared size, so the declared sizes are real bounds.
//! 2. Then the parts calamine reads are streamed once with quick-xml ([`prescan`]): no DOCTYPE,
//!    no XML token over [`MAX_CELL_XML`] bytes; the shared strings' declared count (calamine
//!    reserves room for it) and their number at most [`MAX_SHARED_STRINGS`], each string at
//!    most [`MAX_CELL_XML`] bytes of XML; font names and number-format codes at most
//!    [`MAX_STYLE_TEXT`] bytes, and what calamine builds from the styles (it copies the font and
//!    the format code into every cell format) and from the workbook's sheet list at most
//!    [`MAX_PART_MEMORY`] each; every cell of the first sheet at most [`MAX_CELL_XML`] bytes of
//!    XML.
//! 3. The first sheet is streamed cell by cell (`Xlsx::worksheet_cells_reader`), never loaded
//!    as a dense range: a sheet with one cell at A1 and one at XFD1048576 costs two cells, not
//!    17 billion. Rows beyond 1,048,576 and columns beyond 16,384 (the format's limits) are
//!    refused, and so is a row holding more than [`MAX_ROW_BYTES`] of text (a row of cells that
//!    all name one long shared string). The reader runs on its own thread and hands rows over a
//!    channel bounded in rows and in bytes.
//!
//! The legacy binary `.xls` format is refused: calamine loads every sheet of it into a dense
//! range sized by whatever cell positions the file claims.

mod prescan;

pub use prescan::{
    MAX_CELL_XML, MAX_NUMBER_FORMATS, MAX_PART_MEMORY, MAX_SHARED_STRINGS, MAX_STYLE_TEXT,
};

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{mpsc, Arc, Condvar, Mutex};

use calamine::{Data, Reader, Xlsx, XlsxError};

use super::{column_order, reorder, InputError, Rows};

/// The largest XLSX file read.
pub const MAX_FILE: u64 = 256 << 20;
/// The most parts (files) in the archive.
pub const MAX_ENTRIES: u64 = 10_000;
/// The largest central directory (the archive's list of parts).
pub const MAX_DIRECTORY: u64 = 4 << 20;
/// The largest worksheet part, unpacked (streamed, but one cell's text is held whole).
pub const MAX_SHEET_PART: u64 = 512 << 20;
/// The largest other part, unpacked (calamine reads these whole).
pub const MAX_HELD_PART: u64 = 64 << 20;
/// The highest unpacked-to-packed ratio of a part larger than [`RATIO_FLOOR`].
pub const MAX_RATIO: u64 = 100;
/// Parts at most this large are not held to [`MAX_RATIO`].
const RATIO_FLOOR: u64 = 1 << 20;
/// Rows of a sheet (the XLSX format's limit).
pub const MAX_ROWS: u32 = 1 << 20;
/// Columns of a sheet (the XLSX format's limit, XFD).
pub const MAX_COLUMNS: u32 = 1 << 14;
/// The most text in one row of the sheet, header included: its cells' bytes (and 24 bytes a
/// cell). A cell holds at most about [`MAX_CELL_XML`] bytes, but cells of one row may all name
/// the same long shared string.
pub const MAX_ROW_BYTES: u64 = 16 << 20;
/// Rows queued between the reader thread and the publish.
const QUEUE: usize = 256;
/// Bytes of rows queued between the reader thread and the publish (a larger row waits until
/// the queue is empty).
const QUEUE_BYTES: u64 = 32 << 20;

/// The bytes of rows in the queue ([`row_bytes`]), at most [`QUEUE_BYTES`] unless one row is
/// alone in it; shared by the reader thread and the reading side.
#[derive(Default)]
struct Queued {
    /// Bytes queued, and whether the reading side is gone.
    state: Mutex<(u64, bool)>,
    changed: Condvar,
}

impl Queued {
    /// Waits until `n` more bytes fit (or the queue is empty) and counts them; false once the
    /// reading side is gone.
    fn add(&self, n: u64) -> bool {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !s.1 && s.0 > 0 && s.0 + n > QUEUE_BYTES {
            s = self.changed.wait(s).unwrap_or_else(|e| e.into_inner());
        }
        if s.1 {
            return false;
        }
        s.0 += n;
        true
    }

    /// Uncounts a row taken from the queue.
    fn remove(&self, n: u64) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = s.0.saturating_sub(n);
        self.changed.notify_all();
    }
}

/// The reading side's hold on the queue: dropping it (the rows are no longer read) wakes and
/// stops a reader thread waiting for room.
struct Reading(Arc<Queued>);

impl Drop for Reading {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 = true;
        self.0.changed.notify_all();
    }
}

/// What the reader thread sends.
enum Msg {
    Header(Vec<String>),
    Row(Vec<String>),
    Error(String),
    End,
}

/// `AB12` for row `r` and column `c` (both from 0).
fn cell_name(r: u32, c: u32) -> String {
    let mut col = String::new();
    let mut n = c + 1;
    while n > 0 {
        let d = (n - 1) % 26;
        col.insert(0, char::from(b'A' + d as u8));
        n = (n - 1) / 26;
    }
    format!("{col}{}", r + 1)
}

/// Finds the end-of-central-directory record and returns (entries, directory size); the
/// zip64 markers (0xFFFF, 0xFFFFFFFF) mean an archive too large to be a spreadsheet.
fn directory_size(file: &mut File, len: u64) -> Result<(u64, u64), String> {
    const EOCD: [u8; 4] = [0x50, 0x4b, 0x05, 0x06];
    let tail_len = len.min(22 + 65_535);
    let mut tail = vec![0u8; tail_len as usize];
    file.seek(SeekFrom::Start(len - tail_len))
        .and_then(|_| file.read_exact(&mut tail))
        .map_err(|e| e.to_string())?;
    let at = (0..tail.len().saturating_sub(21))
        .rev()
        .find(|&i| tail[i..i + 4] == EOCD)
        .ok_or("not an XLSX workbook: no zip directory at the end of the file")?;
    let u16_at = |o: usize| u64::from(u16::from_le_bytes([tail[at + o], tail[at + o + 1]]));
    let u32_at = |o: usize| {
        u64::from(u32::from_le_bytes([
            tail[at + o],
            tail[at + o + 1],
            tail[at + o + 2],
            tail[at + o + 3],
        ]))
    };
    let (entries, size) = (u16_at(10), u32_at(12));
    if entries == 0xFFFF || size == 0xFFFF_FFFF {
        return Err("the workbook is a zip64 archive, larger than any spreadsheet this node reads; save the sheet as CSV".into());
    }
    Ok((entries, size))
}

/// Whether calamine streams this part (a worksheet) rather than reading it whole (`\` is read
/// as `/`, as calamine reads it).
fn streamed(name: &str) -> bool {
    let lower = name.replace('\\', "/").to_ascii_lowercase();
    let base = lower.rsplit('/').next().unwrap_or_default();
    lower.contains("worksheets/")
        && !matches!(base, "sharedstrings.xml" | "styles.xml" | "workbook.xml")
        && !base.ends_with(".rels")
}

/// Checks the archive before calamine reads it: the declared sizes, then the XML of the parts
/// calamine reads ([`prescan`]; see the module doc).
fn check_archive(file: &mut File) -> Result<(), String> {
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len > MAX_FILE {
        return Err(format!(
            "the workbook is {len} bytes; XLSX files up to {MAX_FILE} bytes are read: save the sheet as CSV (or Parquet) to publish more"
        ));
    }
    let (entries, directory) = directory_size(file, len)?;
    if entries > MAX_ENTRIES || directory > MAX_DIRECTORY {
        return Err(format!(
            "the workbook lists {entries} parts in a {directory}-byte directory (at most {MAX_ENTRIES} parts, {MAX_DIRECTORY} bytes): not a spreadsheet this node reads"
        ));
    }
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let mut zip = zip::ZipArchive::new(BufReader::new(&mut *file))
        .map_err(|e| format!("not an XLSX workbook (a zip archive): {e}"))?;
    let mut parts = Vec::with_capacity(zip.len());
    for i in 0..zip.len() {
        let part = zip.by_index_data(i).map_err(|e| e.to_string())?;
        let name = part.name().map_err(|e| e.to_string())?.into_owned();
        let (size, packed) = (part.size(), part.compressed_size());
        let limit = if streamed(&name) {
            MAX_SHEET_PART
        } else {
            MAX_HELD_PART
        };
        if size > limit {
            return Err(format!(
                "part {name} unpacks to {size} bytes, more than the {limit} bytes this node reads: save the sheet as CSV (or Parquet) to publish it"
            ));
        }
        if size > RATIO_FLOOR && size > packed.saturating_mul(MAX_RATIO) {
            return Err(format!(
                "part {name} unpacks {packed} bytes to {size} ({}×, more than {MAX_RATIO}×): refused as a likely zip bomb; if the workbook is genuine, save the sheet as CSV",
                size / packed.max(1)
            ));
        }
        parts.push(prescan::Part {
            index: i,
            name,
            size,
        });
    }
    prescan::check(&mut zip, &parts)
}

/// Opens the first sheet of an XLSX workbook and yields its rows in the order of `items`.
pub(super) fn rows(mut file: File, path: &Path, items: &[String]) -> Result<Rows, String> {
    if path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("xls"))
    {
        return Err("the legacy .xls format is not read (it cannot be read in bounded memory): save the workbook as .xlsx or the sheet as CSV".into());
    }
    check_archive(&mut file)?;
    file.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    let queued = Arc::new(Queued::default());
    let reading = Reading(queued.clone());
    std::thread::Builder::new()
        .name("xlsx-reader".into())
        .spawn(move || {
            let end = match stream(file, &tx, &queued) {
                Ok(()) => Msg::End,
                Err(e) => Msg::Error(e),
            };
            let _ = tx.send(end);
        })
        .map_err(|e| format!("cannot start the XLSX reader: {e}"))?;
    let header = match rx.recv() {
        Ok(Msg::Header(h)) => h,
        Ok(Msg::Error(e)) => return Err(e),
        Ok(Msg::End) => {
            return Err("the first sheet is empty; its first row must name the items".into())
        }
        Ok(Msg::Row(_)) | Err(_) => return Err("the XLSX reader stopped unexpectedly".into()),
    };
    let order = column_order(&header, items)?;
    let path_s = path.display().to_string();
    let mut done = false;
    Ok(Box::new(std::iter::from_fn(move || {
        if done {
            return None;
        }
        let fail = |message: String| {
            Some(Err(InputError {
                path: path_s.clone(),
                message,
            }))
        };
        match rx.recv() {
            Ok(Msg::Row(cells)) => {
                reading.0.remove(row_bytes(&cells));
                Some(Ok(reorder(cells, &order)))
            }
            Ok(Msg::End) => {
                done = true;
                None
            }
            Ok(Msg::Error(e)) => {
                done = true;
                fail(e)
            }
            Ok(Msg::Header(_)) | Err(_) => {
                done = true;
                fail("the XLSX reader stopped unexpectedly".into())
            }
        }
    })))
}

/// The reader thread: streams the first sheet's cells and sends the header, then the rows.
fn stream(file: File, tx: &mpsc::SyncSender<Msg>, queued: &Queued) -> Result<(), String> {
    let malformed = |e: XlsxError| {
        let text = e.to_string();
        if text.contains("declared uncompressed size") {
            format!("a part of the workbook unpacks to more than its declared size ({text}): refused as malformed or a zip bomb")
        } else {
            format!("cannot read the workbook: {text}")
        }
    };
    let mut book: Xlsx<_> = Xlsx::new(BufReader::new(file)).map_err(malformed)?;
    let sheet = book
        .sheet_names()
        .first()
        .cloned()
        .ok_or("the workbook has no sheet")?;
    let mut cells = match book.worksheet_cells_reader(&sheet) {
        Ok(c) => c,
        Err(XlsxError::NotAWorksheet(kind)) => {
            return Err(format!(
                "the first sheet is a {kind}, not a worksheet; move the table to the first sheet"
            ))
        }
        Err(e) => return Err(malformed(e)),
    };
    let mut sink = |m: Msg| {
        if let Msg::Row(cells) = &m {
            if !queued.add(row_bytes(cells)) {
                return false;
            }
        }
        tx.send(m).is_ok()
    };
    let mut rows = Assembler::default();
    while let Some(cell) = cells.next_cell().map_err(malformed)? {
        let (r, c) = cell.get_position();
        let value = Data::from(cell.get_value().clone());
        if value == Data::Empty {
            continue;
        }
        if r >= MAX_ROWS || c >= MAX_COLUMNS {
            return Err(format!(
                "a value at row {}, column {} lies beyond the XLSX limits ({MAX_ROWS} rows, {MAX_COLUMNS} columns): the workbook is malformed",
                u64::from(r) + 1,
                u64::from(c) + 1
            ));
        }
        if !rows.cell(r, c, super::xlsx_cell(&value), &mut sink)? {
            return Ok(());
        }
    }
    rows.finish(&mut sink)?;
    Ok(())
}

/// Turns the cells of a sheet, in sheet order, into the header (the first row holding a value;
/// its first to last value name the columns) and the rows below it, each as wide as the header.
/// Rows with no value between two rows that have one are sent empty, as a spreadsheet shows
/// them; trailing empty rows are not sent. Memory: the header and one row.
#[derive(Default)]
struct Assembler {
    /// The header row's index, its first column and its width, once complete.
    header: Option<(u32, u32, u32)>,
    /// The header row's cells while it is read.
    head: Vec<(u32, String)>,
    /// The data row being assembled.
    row: Option<(u32, Vec<String>)>,
    /// The header row's index while it is read.
    head_r: u32,
    /// Bytes of the row being read (the header, then each data row), see [`row_bytes`].
    bytes: u64,
}

/// What a cell costs a row: its text and its `String`.
const CELL_BYTES: u64 = 24;

/// The bytes a row holds, as [`MAX_ROW_BYTES`] and [`QUEUE_BYTES`] count them.
fn row_bytes(cells: &[String]) -> u64 {
    cells.iter().map(|c| c.len() as u64 + CELL_BYTES).sum()
}

impl Assembler {
    /// Takes one non-empty cell; `send` returns false once nobody reads (then this returns
    /// false too).
    fn cell(
        &mut self,
        r: u32,
        c: u32,
        v: String,
        send: &mut dyn FnMut(Msg) -> bool,
    ) -> Result<bool, String> {
        let Some((hr, first, width)) = self.header else {
            if !self.head.is_empty() && r != self.head_r {
                if r < self.head_r {
                    return Err(out_of_order(r, c));
                }
                let names = self.close_header()?;
                if !send(Msg::Header(names)) {
                    return Ok(false);
                }
                return self.cell(r, c, v, send);
            }
            if self.head.len() >= MAX_COLUMNS as usize {
                return Err(format!(
                    "the header row holds more than {MAX_COLUMNS} cells: the workbook is malformed"
                ));
            }
            self.head_r = r;
            self.count(r, &v)?;
            self.head.push((c, v));
            return Ok(true);
        };
        if r <= hr {
            return Err(out_of_order(r, c));
        }
        let current = self.row.as_ref().map(|(cur, _)| *cur);
        match current {
            Some(cur) if cur == r => {}
            Some(cur) if r < cur => return Err(out_of_order(r, c)),
            _ => {
                let mut next = hr + 1;
                if let Some((cur, cells)) = self.row.take() {
                    if !send(Msg::Row(cells)) {
                        return Ok(false);
                    }
                    next = cur + 1;
                }
                for _ in next..r {
                    if !send(Msg::Row(vec![String::new(); width as usize])) {
                        return Ok(false);
                    }
                }
                self.row = Some((r, vec![String::new(); width as usize]));
                self.bytes = 0;
            }
        }
        if c < first || c - first >= width {
            return Err(format!(
                "cell {} holds {v:?} outside the header's columns {} to {}: give the column a header (an item name) or clear the cell",
                cell_name(r, c),
                cell_name(hr, first),
                cell_name(hr, first + width - 1)
            ));
        }
        self.count(r, &v)?;
        if let Some((_, cells)) = &mut self.row {
            cells[(c - first) as usize] = v;
        }
        Ok(true)
    }

    /// Counts a value into the bytes of row `r`, refused past [`MAX_ROW_BYTES`].
    fn count(&mut self, r: u32, v: &str) -> Result<(), String> {
        self.bytes += v.len() as u64 + CELL_BYTES;
        if self.bytes > MAX_ROW_BYTES {
            return Err(format!(
                "row {} of the sheet holds more than {MAX_ROW_BYTES} bytes of text (its cells may name one long shared string over and over): refused as malformed or hostile; save the sheet as CSV to publish it",
                u64::from(r) + 1
            ));
        }
        Ok(())
    }

    /// Closes the header row: its names, first to last column, with no gap.
    fn close_header(&mut self) -> Result<Vec<String>, String> {
        self.head.sort_by_key(|(c, _)| *c);
        let r = self.head_r;
        let first = self.head.first().map_or(0, |(c, _)| *c);
        let mut names = Vec::with_capacity(self.head.len());
        for (i, (c, name)) in std::mem::take(&mut self.head).into_iter().enumerate() {
            let want = first + i as u32;
            if c != want {
                return Err(format!(
                    "the header row ({}) has no name in {}: every column of the table needs an item name",
                    r + 1,
                    cell_name(r, want)
                ));
            }
            names.push(name);
        }
        self.header = Some((r, first, names.len() as u32));
        self.bytes = 0;
        Ok(names)
    }

    /// Sends what is left: the header of a sheet with no data rows, or the last row.
    fn finish(&mut self, send: &mut dyn FnMut(Msg) -> bool) -> Result<(), String> {
        if self.header.is_none() && !self.head.is_empty() {
            let names = self.close_header()?;
            send(Msg::Header(names));
        }
        if let Some((_, cells)) = self.row.take() {
            send(Msg::Row(cells));
        }
        Ok(())
    }
}

fn out_of_order(r: u32, c: u32) -> String {
    format!(
        "cell {} comes after a later row in the sheet's XML: the workbook is malformed; save it again from a spreadsheet program",
        cell_name(r, c)
    )
}

#[cfg(test)]
mod tests {
    use super::super::Row;
    use super::*;
    use std::io::Write;

    const NS: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
    const REL: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
    const PKG: &str = "http://schemas.openxmlformats.org/package/2006/relationships";

    /// A minimal workbook whose first sheet is `sheet` (its XML), with optional shared strings.
    fn workbook(sheet: &[u8], shared: Option<&[u8]>) -> Vec<u8> {
        let mut parts = vec![("xl/worksheets/sheet1.xml", sheet.to_vec())];
        if let Some(s) = shared {
            parts.push(("xl/sharedStrings.xml", s.to_vec()));
        }
        package(&parts)
    }

    /// A workbook of these parts, beside (or instead of) the minimal ones: the package and
    /// workbook relationships and the workbook naming one sheet, `worksheets/sheet1.xml`.
    fn package(parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
        let mut all: Vec<(&str, Vec<u8>)> = vec![
            (
                "_rels/.rels",
                format!(r#"<Relationships xmlns="{PKG}"><Relationship Id="rId1" Type="{REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>"#).into_bytes(),
            ),
            (
                "xl/workbook.xml",
                format!(r#"<workbook xmlns="{NS}" xmlns:r="{REL}"><sheets><sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>"#).into_bytes(),
            ),
            (
                "xl/_rels/workbook.xml.rels",
                format!(r#"<Relationships xmlns="{PKG}"><Relationship Id="rId1" Type="{REL}/worksheet" Target="worksheets/sheet1.xml"/></Relationships>"#).into_bytes(),
            ),
        ];
        for (name, bytes) in parts {
            all.retain(|(n, _)| n != name);
            all.push((name, bytes.clone()));
        }
        let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let o = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, bytes) in all {
            z.start_file(name, o).unwrap();
            z.write_all(&bytes).unwrap();
        }
        z.finish().unwrap().into_inner()
    }

    /// `len` random letters and digits: they do not compress (below 100×), as an attacker
    /// would pad a part to pass the ratio check.
    fn noise(len: usize) -> String {
        use rand::Rng;
        rand::rng()
            .sample_iter(&rand::distr::Alphanumeric)
            .take(len)
            .map(char::from)
            .collect()
    }

    /// Whether the checks run before calamine is given the file refuse it; the error.
    fn refused_before_calamine(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.xlsx");
        std::fs::write(&p, bytes).unwrap();
        let mut f = File::open(&p).unwrap();
        match check_archive(&mut f) {
            Err(e) => e,
            Ok(()) => panic!("the workbook passed the checks and would go to calamine"),
        }
    }

    /// Sheet XML with these `(cell, inline text)` values.
    fn sheet(cells: &[(&str, &str)]) -> Vec<u8> {
        let mut x = format!(r#"<worksheet xmlns="{NS}"><sheetData>"#);
        for (at, v) in cells {
            x.push_str(&format!(
                r#"<row><c r="{at}" t="inlineStr"><is><t>{v}</t></is></c></row>"#
            ));
        }
        x.push_str("</sheetData></worksheet>");
        x.into_bytes()
    }

    fn items() -> Vec<String> {
        vec!["编号".into(), "金额".into()]
    }

    fn read(bytes: &[u8]) -> Result<Vec<Row>, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.xlsx");
        std::fs::write(&p, bytes).unwrap();
        rows(File::open(&p).unwrap(), &p, &items())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.message)
    }

    #[test]
    fn a_sheet_is_streamed_from_its_header_with_gaps_kept() {
        // The table starts at B2; rows 5 and 6 hold nothing (sent empty), then row 7.
        let s = sheet(&[
            ("B2", "金额"),
            ("C2", "编号"),
            ("B3", "1"),
            ("C3", "A1"),
            ("C4", "A2"),
            ("B7", "7"),
        ]);
        let e = |a: &str, b: &str| vec![a.to_string(), b.to_string()];
        assert_eq!(
            read(&workbook(&s, None)).unwrap(),
            vec![e("A1", "1"), e("A2", ""), e("", ""), e("", ""), e("", "7")]
        );
    }

    #[test]
    fn a_far_cell_is_refused_without_a_dense_range() {
        // calamine's worksheet_range would allocate 2^34 cells for this sheet.
        let s = sheet(&[("A1", "编号"), ("B1", "金额"), ("XFD1048576", "x")]);
        let e = read(&workbook(&s, None)).unwrap_err();
        assert!(
            e.contains("XFD1048576") && e.contains("outside the header"),
            "{e}"
        );
    }

    /// Sheet XML of about `len` bytes: the header, then one row over and over.
    fn repeated(len: usize) -> Vec<u8> {
        let mut s = sheet(&[("A1", "编号"), ("B1", "金额")]);
        s.truncate(s.len() - "</sheetData></worksheet>".len());
        let row = br#"<row><c t="inlineStr"><is><t>A</t></is></c><c><v>1</v></c></row>"#;
        while s.len() < len {
            s.extend_from_slice(row);
        }
        s.extend_from_slice(b"</sheetData></worksheet>");
        s
    }

    /// 16 MiB of one repeated row deflates to a few KiB: refused from the declared sizes,
    /// before a byte is unpacked.
    #[test]
    fn a_zip_bomb_is_refused_before_it_is_unpacked() {
        let bomb = workbook(&repeated(16 << 20), None);
        assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
        let started = std::time::Instant::now();
        let e = read(&bomb).unwrap_err();
        assert!(
            e.contains("xl/worksheets/sheet1.xml") && e.contains("zip bomb"),
            "{e}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    /// Patches the uncompressed size `name` declares in its local and central headers.
    fn declare(zip: &mut [u8], name: &str, size: u32) {
        let n = name.as_bytes();
        let mut patched = 0;
        for i in 0..zip.len() - n.len() {
            if &zip[i..i + n.len()] != n {
                continue;
            }
            for (sig, header, field) in [
                ([0x50, 0x4b, 0x03, 0x04], 30, 22),
                ([0x50, 0x4b, 0x01, 0x02], 46, 24),
            ] {
                if i >= header && zip[i - header..i - header + 4] == sig {
                    zip[i - header + field..i - header + field + 4]
                        .copy_from_slice(&size.to_le_bytes());
                    patched += 1;
                }
            }
        }
        assert_eq!(patched, 2, "both headers of {name} patched");
    }

    /// A sheet that declares 4 KiB but unpacks to 4 MiB passes the checks of the declared
    /// sizes; the zip reader stops it at the declared size.
    #[test]
    fn a_part_that_unpacks_past_its_declared_size_is_stopped() {
        let mut liar = workbook(&repeated(4 << 20), None);
        declare(&mut liar, "xl/worksheets/sheet1.xml", 4096);
        let e = read(&liar).unwrap_err();
        assert!(e.contains("declared uncompressed size"), "{e}");
    }

    #[test]
    fn a_huge_declared_shared_string_count_is_refused() {
        let sst = format!(
            r#"<?xml version="1.0"?><sst xmlns="{NS}" count="1" uniqueCount="1000000000000"><si><t>编号</t></si></sst>"#
        );
        let e = read(&workbook(&sheet(&[]), Some(sst.as_bytes()))).unwrap_err();
        assert!(e.contains("1000000000000 shared strings"), "{e}");
    }

    /// Review 10, H2(b): the hand-written scanner took the `sst` in the comment for the real
    /// one and passed `uniqueCount="1"`; calamine skips the comment and reserves room for 10^11
    /// strings (2.4 TB), which aborts the node. A DOCTYPE is refused outright.
    #[test]
    fn markup_in_a_comment_or_a_doctype_does_not_hide_the_shared_string_count() {
        let fooled = format!(
            r#"<?xml version="1.0"?><!-- <sst uniqueCount="1"/> --><sst xmlns="{NS}" uniqueCount="100000000000"><si><t>编号</t></si></sst>"#
        );
        let e = refused_before_calamine(&workbook(&sheet(&[]), Some(fooled.as_bytes())));
        assert!(
            e.contains("declares 100000000000 shared strings")
                && e.contains("save the sheet as CSV"),
            "{e}"
        );
        let doctype = format!(
            r#"<?xml version="1.0"?><!DOCTYPE sst [<!ENTITY x "<sst uniqueCount='1'/>">]><sst xmlns="{NS}" uniqueCount="1"><si><t>编号</t></si></sst>"#
        );
        let e = refused_before_calamine(&workbook(&sheet(&[]), Some(doctype.as_bytes())));
        assert!(
            e.contains("xl/sharedStrings.xml holds a DOCTYPE")
                && e.contains("save the sheet as CSV"),
            "{e}"
        );
    }

    /// Styles XML: one font named `font_name`, then `xfs` cell formats naming it, each padded
    /// with a few random letters so the part does not compress past 100×.
    fn styles(font_name: &str, xfs: usize) -> Vec<u8> {
        let mut x = format!(
            r#"<styleSheet xmlns="{NS}"><fonts count="1"><font><name val="{font_name}"/></font></fonts><cellXfs count="{xfs}">"#
        );
        for _ in 0..xfs {
            x.push_str(&format!(r#"<xf fontId="0" x="{}"/>"#, noise(6)));
        }
        x.push_str("</cellXfs></styleSheet>");
        x.into_bytes()
    }

    /// Review 10, H2(a): calamine copies the font (with its name) into every `xf`, so a 1 MiB
    /// font name and 200,000 `<xf fontId="0"/>` (a 1.5 MiB file) asked for 200 GiB. Refused
    /// before calamine: the font name is too long; with a name under that limit, what calamine
    /// would build is still counted and refused.
    #[test]
    fn styles_that_calamine_would_multiply_are_refused() {
        let s = sheet(&[("A1", "编号"), ("B1", "金额")]);
        let bomb = package(&[
            ("xl/worksheets/sheet1.xml", s.clone()),
            ("xl/styles.xml", styles(&noise(1 << 20), 200_000)),
        ]);
        assert!(bomb.len() < 4 << 20, "{} bytes", bomb.len());
        let e = refused_before_calamine(&bomb);
        assert!(
            e.contains(
                "xl/styles.xml holds a single XML tag, text or comment of more than 1048576 bytes"
            ) && e.contains("save the sheet as CSV"),
            "{e}"
        );
        let e = read(&bomb).unwrap_err();
        assert!(e.contains("xl/styles.xml holds a single XML tag"), "{e}");
        let long_name = package(&[
            ("xl/worksheets/sheet1.xml", s.clone()),
            ("xl/styles.xml", styles(&noise(100_000), 10)),
        ]);
        let e = refused_before_calamine(&long_name);
        assert!(
            e.contains("xl/styles.xml holds a font name of 100000 bytes (at most 1024)"),
            "{e}"
        );

        let many = package(&[
            ("xl/worksheets/sheet1.xml", s.clone()),
            ("xl/styles.xml", styles(&noise(1000), 200_000)),
        ]);
        let e = refused_before_calamine(&many);
        assert!(
            e.contains("xl/styles.xml would take more than 67108864 bytes of memory")
                && e.contains("save the sheet as CSV"),
            "{e}"
        );

        // Ordinary styles pass.
        let fine = package(&[
            ("xl/worksheets/sheet1.xml", s),
            ("xl/styles.xml", styles("宋体", 2_000)),
        ]);
        assert_eq!(read(&fine).unwrap(), Vec::<Row>::new());
    }

    /// The same with the workbook: calamine builds each sheet's path from the folder and the
    /// target of its relationship, so 3,000 `sheet` elements naming one 60 KB target asked for
    /// 180 MB.
    #[test]
    fn a_sheet_list_that_calamine_would_multiply_is_refused() {
        let target = format!("worksheets/{}.xml", noise(60_000));
        let mut book = format!(r#"<workbook xmlns="{NS}" xmlns:r="{REL}"><sheets>"#);
        for i in 0..3_000 {
            book.push_str(&format!(
                r#"<sheet name="s{i}" sheetId="{i}" r:id="rId1"/>"#
            ));
        }
        book.push_str("</sheets></workbook>");
        let bomb = package(&[
            ("xl/workbook.xml", book.into_bytes()),
            (
                "xl/_rels/workbook.xml.rels",
                format!(r#"<Relationships xmlns="{PKG}"><Relationship Id="rId1" Type="{REL}/worksheet" Target="{target}"/></Relationships>"#).into_bytes(),
            ),
        ]);
        let e = refused_before_calamine(&bomb);
        assert!(
            e.contains("the workbook xl/workbook.xml would take about")
                && e.contains("3000 sheets")
                && e.contains("save the sheet as CSV"),
            "{e}"
        );
    }

    /// Review 10, H2(c): a 512 MiB worksheet part could hold a single cell of almost that size,
    /// held about four times over. A cell is now at most 1 MiB of XML (Excel's own limit is
    /// 32,767 characters), found before calamine reads the sheet; so is a shared string.
    #[test]
    fn a_huge_cell_is_refused_before_calamine() {
        let big = noise(2 << 20);
        let s = sheet(&[("A1", "编号"), ("B1", "金额"), ("A2", "1"), ("B2", &big)]);
        let e = refused_before_calamine(&workbook(&s, None));
        assert!(
            e.contains("cell B2 of xl/worksheets/sheet1.xml holds more than 1048576 bytes")
                && e.contains("save the sheet as CSV"),
            "{e}"
        );
        // One shared string of 2 MiB.
        let sst = format!(r#"<sst xmlns="{NS}"><si><t>{big}</t></si></sst>"#);
        let e = refused_before_calamine(&workbook(&sheet(&[]), Some(sst.as_bytes())));
        assert!(
            e.contains("shared string 1 of xl/sharedStrings.xml holds more than 1048576 bytes"),
            "{e}"
        );
    }

    /// Review s7, H2: an end tag of the cell's local name but another prefix (`</x:c>`) does
    /// not end the value for calamine, which reads `<v>` to `</v>` and keeps all text between;
    /// nor for the pre-scan, which measures the cell to that point. Each run of text is under
    /// the token limit; the cell is over the cell limit. (The `<b>` balances the extra end tag,
    /// which quick-xml would refuse.)
    #[test]
    fn a_cell_closed_by_an_end_tag_of_another_prefix_is_refused_before_calamine() {
        let runs: String = (0..3)
            .map(|_| format!("<!---->{}", noise(600_000)))
            .collect();
        let s = format!(
            r#"<worksheet xmlns="{NS}"><sheetData><row><b><c r="A2" t="str"><v>x</x:c>{runs}</v></c></row></sheetData></worksheet>"#
        );
        let bytes = workbook(s.as_bytes(), None);
        let e = refused_before_calamine(&bytes);
        assert!(
            e.contains("cell A2 of xl/worksheets/sheet1.xml holds more than 1048576 bytes"),
            "{e}"
        );
        // calamine, given the file, holds the whole 1.8 MB as the cell's value.
        let mut book: Xlsx<_> = Xlsx::new(std::io::Cursor::new(bytes)).unwrap();
        let mut cells = book.worksheet_cells_reader("Sheet1").unwrap();
        let cell = cells.next_cell().unwrap().unwrap();
        assert_eq!(cell.get_position(), (1, 0));
        match cell.get_value() {
            calamine::DataRef::String(v) => assert_eq!(v.len(), 1_800_001),
            v => panic!("{v:?}"),
        }
    }

    /// Cells of one row may all name one long shared string: 20 cells naming one 900 KB string
    /// make 18 MB in one row, refused past 16 MiB.
    #[test]
    fn a_row_of_one_long_shared_string_is_refused() {
        let names: Vec<String> = (0..20).map(|i| format!("项{i}")).collect();
        let sst = format!(
            r#"<sst xmlns="{NS}" uniqueCount="1"><si><t>{}</t></si></sst>"#,
            noise(900_000)
        );
        let mut x = format!(r#"<worksheet xmlns="{NS}"><sheetData><row r="1">"#);
        for (i, n) in names.iter().enumerate() {
            x.push_str(&format!(
                r#"<c r="{}" t="inlineStr"><is><t>{n}</t></is></c>"#,
                cell_name(0, i as u32)
            ));
        }
        x.push_str(r#"</row><row r="2">"#);
        for i in 0..names.len() {
            x.push_str(&format!(
                r#"<c r="{}" t="s"><v>0</v></c>"#,
                cell_name(1, i as u32)
            ));
        }
        x.push_str("</row></sheetData></worksheet>");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.xlsx");
        std::fs::write(&p, workbook(x.as_bytes(), Some(sst.as_bytes()))).unwrap();
        let e = rows(File::open(&p).unwrap(), &p, &names)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_err()
            .message;
        assert!(
            e.contains("row 2 of the sheet holds more than 16777216 bytes of text")
                && e.contains("save the sheet as CSV"),
            "{e}"
        );
    }

    #[test]
    fn legacy_xls_and_non_zip_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let xls = dir.path().join("t.xls");
        std::fs::write(&xls, b"\xd0\xcf\x11\xe0").unwrap();
        let e = rows(File::open(&xls).unwrap(), &xls, &items())
            .err()
            .unwrap();
        assert!(e.contains(".xls"), "{e}");
        let e = read(b"not a zip at all").unwrap_err();
        assert!(e.contains("not an XLSX workbook"), "{e}");
    }
}
