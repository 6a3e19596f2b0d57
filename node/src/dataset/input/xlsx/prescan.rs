//! The XML pre-scan of an XLSX workbook: the parts calamine reads, streamed once with quick-xml
//! (the parser calamine uses, configured as calamine configures it, so both see the same tags,
//! comments and text) before calamine is given the file. The zip checks bound each part's size;
//! this bounds what calamine builds from a part, which can be far larger than the part itself:
//!
//! * every part scanned: no DOCTYPE (spreadsheet programs never write one; it can declare
//!   entities), and no single token (a tag with its attributes, a run of text, a comment) over
//!   [`MAX_CELL_XML`] bytes — calamine buffers each token whole; the scan itself stops reading
//!   a token a little past that, so it holds no more either;
//! * the shared strings (`sharedStrings.xml`, wherever it is): the count the `sst` element
//!   declares (calamine reserves room for that many up front) at most [`MAX_SHARED_STRINGS`]
//!   and one per 4 bytes of the part, at most [`MAX_SHARED_STRINGS`] strings, each at most
//!   [`MAX_CELL_XML`] bytes of XML;
//! * the styles (`styles.xml`): calamine copies the font, with its name, and the number-format
//!   code into every cell format (`xf`), so one long font name and millions of 16-byte `xf`
//!   elements used to ask for terabytes. Font names and format codes are at most
//!   [`MAX_STYLE_TEXT`] bytes and the memory calamine needs for the styles, counted as it would
//!   build them, at most [`MAX_PART_MEMORY`];
//! * the workbook (the part `_rels/.rels` names): calamine copies the folder and the target of
//!   the sheet's relationship into every `sheet` element's path, and keeps every relationship
//!   of the workbook; that memory is at most [`MAX_PART_MEMORY`] too;
//! * the first sheet (the part the workbook's first `sheet` element points to): each cell's XML
//!   (value, formula, rich-text runs), at most [`MAX_CELL_XML`] bytes — calamine holds a cell's
//!   text whole.
//!
//! A cell, a shared string or a defined name is measured from its start tag to the end tag
//! that closes it as calamine reads it ([`Held`]). calamine reads a value (`v`, `is`, `t`, `f`,
//! `si`, `definedName`) until an end tag of exactly the name it opened with, prefix included,
//! and keeps all text in between; quick-xml, with end names unchecked, lets any end tag by.
//! So `<v>x</x:c>…</v>` is one value to calamine, and the scan closes an element only at an
//! end tag of its very name while everything opened inside it is closed the same way: it
//! never ends a measure before calamine ends the value.
//!
//! Parts are found as calamine finds them: by the paths it builds, compared without regard to
//! case or to `\` versus `/` (calamine's lookup is case-insensitive), and the shared strings
//! and styles by file name in any folder. Where calamine would take one of several candidates
//! (two relationships, two parts whose names differ only in case), every candidate is scanned.
//! The scan is an upper bound, not a copy of calamine's logic: it counts every element of a
//! kind wherever it is, not only where calamine looks.

use std::collections::{HashMap, HashSet};
use std::io::{BufReader, Read, Seek};

use quick_xml::events::{BytesStart, BytesText, Event};

/// The most bytes of XML in one token of a part the pre-scan reads, in one cell of the first
/// sheet, and in one shared string. Excel's own limit of 32,767 characters in a cell takes at
/// most about 200 KiB of XML, even with every character escaped.
pub const MAX_CELL_XML: u64 = 1 << 20;
/// The most memory calamine may need to hold the styles, or the workbook's sheet list and
/// relationships (each counted on its own).
pub const MAX_PART_MEMORY: u64 = 64 << 20;
/// The longest font name or number-format code, in bytes of XML (Excel allows 31 and 255
/// characters).
pub const MAX_STYLE_TEXT: u64 = 1 << 10;
/// The most number formats in the styles (Excel allows about 250 custom ones).
pub const MAX_NUMBER_FORMATS: usize = 1 << 16;
/// The most shared strings a workbook may declare or hold.
pub const MAX_SHARED_STRINGS: u64 = 1 << 22;
/// The most bytes of element names open at once inside one cell, shared string or defined name
/// (the scan keeps them to match end tags; spreadsheet programs nest a few short names).
const MAX_OPEN_NAMES: usize = 64 << 10;
/// The scan reads a part through a buffer of this size.
const SCAN_BUFFER: usize = 64 << 10;
/// The scan fails a token once it has read this much of it (the token limit plus what two
/// buffers may hold), before checking the exact length.
const SCAN_READ: u64 = MAX_CELL_XML + 2 * SCAN_BUFFER as u64;
/// What calamine keeps per cell format beside its `Style` and the text it copies: a
/// `CellFormat`, and what the allocator adds to the two copied strings.
const XF_EXTRA: u64 = 80;
/// What calamine keeps per number format beside its code: the id and the map entry.
const NUMBER_FORMAT_COST: u64 = 96;
/// What calamine keeps per `sheet` element beside its strings: two `String`s, a `Sheet`.
const SHEET_COST: u64 = 128;
/// What calamine keeps per relationship of the workbook beside its strings: three `String`s
/// and the map entry.
const RELATIONSHIP_COST: u64 = 128;
/// What calamine keeps per defined name beside its strings.
const DEFINED_NAME_COST: u64 = 64;
/// The longest built-in number-format code calamine copies (`General` and the like).
const BUILTIN_FORMAT: u64 = 64;

/// One part of the archive.
pub(super) struct Part {
    /// Its index in the archive.
    pub index: usize,
    /// Its name as stored.
    pub name: String,
    /// Its declared unpacked size.
    pub size: u64,
}

/// A part name as calamine compares names: lower case, `\` read as `/`.
fn key(name: &str) -> String {
    name.replace('\\', "/").to_ascii_lowercase()
}

/// The file name of a [`key`].
fn base(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The local name of an element or attribute name (after any `prefix:`).
fn local(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// A cell, shared string or defined name being measured: open from its start tag until every
/// element opened inside it, and then itself, is closed by an end tag of exactly its name,
/// innermost first. Any other end tag is passed over, as calamine passes it over inside a value
/// (a value ends only at the end tag of its very name, and the value is inside the element, so
/// it is still measured while calamine reads it). Within a well-formed part this is the
/// element's own extent.
struct Held {
    /// What is measured: "cell", "shared string", "defined name" (for the message).
    what: &'static str,
    /// Where the outermost start tag begins.
    from: u64,
    /// The raw names (prefix included) of the elements open, outermost first, one after the
    /// other; at most [`MAX_OPEN_NAMES`] bytes.
    names: String,
    /// Where each name in `names` ends.
    ends: Vec<usize>,
}

impl Held {
    fn new(what: &'static str) -> Self {
        Held {
            what,
            from: 0,
            names: String::new(),
            ends: Vec::new(),
        }
    }

    /// Whether an element is being measured.
    fn is_open(&self) -> bool {
        !self.ends.is_empty()
    }

    /// Opens element `name` of part `part` at `from` (inside the element measured, if one is).
    fn open(&mut self, part: &str, name: &str, from: u64) -> Result<(), String> {
        if !self.is_open() {
            self.from = from;
            self.names.clear();
        }
        if self.names.len() + name.len() > MAX_OPEN_NAMES {
            return Err(format!(
                "{part} nests elements with more than {MAX_OPEN_NAMES} bytes of names inside one {}, far deeper than spreadsheet programs write: refused as malformed or hostile; save the workbook again from a spreadsheet program, or save the sheet as CSV",
                self.what
            ));
        }
        self.names.push_str(name);
        self.ends.push(self.names.len());
        Ok(())
    }

    /// An end tag: closes the innermost element open if it has exactly this name.
    fn close(&mut self, name: &str) {
        let start = match self.ends.len() {
            0 => return,
            n if n >= 2 => self.ends[n - 2],
            _ => 0,
        };
        if &self.names[start..] == name {
            self.ends.pop();
            self.names.truncate(start);
        }
    }

    /// The bytes of XML measured up to `at`, if an element is open.
    fn bytes(&self, at: u64) -> Option<u64> {
        self.is_open().then(|| at - self.from)
    }
}

/// The attributes of a start tag as `(name, raw value)` pairs, read as leniently as calamine
/// reads them (no check for duplicates); ends at the first malformed one, where calamine stops
/// with an error.
struct Attrs<'a> {
    rest: &'a str,
}

fn attrs<'a>(e: &'a BytesStart<'_>) -> Attrs<'a> {
    Attrs {
        rest: e.attributes_raw(),
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.rest.trim_start();
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().filter(|q| *q == '"' || *q == '\'')?;
        let body = &after[1..];
        let end = body.find(quote).unwrap_or(body.len());
        self.rest = body.get(end + 1..).unwrap_or_default();
        Some((name, &body[..end]))
    }
}

/// Reads a part for the scan and fails once more than [`SCAN_READ`] bytes were read since the
/// scan last reset it (before each token).
struct Capped<R> {
    inner: R,
    read: u64,
    over: bool,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read > SCAN_READ {
            self.over = true;
            return Err(std::io::Error::other("an XML token is too long"));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// The refusal of a part holding a token longer than [`MAX_CELL_XML`].
fn token_too_long(part: &str) -> String {
    format!(
        "{part} holds a single XML tag, text or comment of more than {MAX_CELL_XML} bytes: refused as malformed or hostile (calamine would hold it whole); save the workbook again from a spreadsheet program, or save the sheet as CSV"
    )
}

/// Streams the XML of part `part` from `reader` and hands every event, with the byte positions
/// where it starts and ends, to `visit`. Refuses a DOCTYPE, a token longer than
/// [`MAX_CELL_XML`] and XML that is not well-formed.
fn scan<R: Read>(
    part: &str,
    reader: R,
    visit: &mut dyn FnMut(&Event<'_>, u64, u64) -> Result<(), String>,
) -> Result<(), String> {
    let capped = Capped {
        inner: reader,
        read: 0,
        over: false,
    };
    let mut xml = quick_xml::Reader::from_reader(BufReader::with_capacity(SCAN_BUFFER, capped));
    let config = xml.config_mut();
    config.check_end_names = false;
    config.trim_text(false);
    config.check_comments = false;
    config.expand_empty_elements = true;
    let mut buf = Vec::new();
    loop {
        xml.get_mut().get_mut().read = 0;
        buf.clear();
        let before = xml.buffer_position();
        // A token too long: the part's own check names what it is in (a cell, a shared
        // string), as if the token ended just past the limit; else the message is general.
        let too_long = |visit: &mut dyn FnMut(&Event<'_>, u64, u64) -> Result<(), String>| {
            let past = before + MAX_CELL_XML + 1;
            visit(&Event::Text(BytesText::new("")), before, past)?;
            Err(token_too_long(part))
        };
        let event = match xml.read_event_into(&mut buf) {
            Ok(event) => event,
            Err(_) if xml.get_ref().get_ref().over => return too_long(visit),
            Err(quick_xml::Error::Io(e)) => {
                return Err(format!(
                    "cannot unpack {part} ({e}): refused as malformed or a zip bomb; save the workbook again from a spreadsheet program, or save the sheet as CSV"
                ))
            }
            Err(e) => {
                return Err(format!(
                    "{part} is not well-formed XML ({e}): save the workbook again from a spreadsheet program, or save the sheet as CSV"
                ))
            }
        };
        let after = xml.buffer_position();
        if after - before > MAX_CELL_XML {
            return too_long(visit);
        }
        match event {
            Event::Eof => return Ok(()),
            Event::DocType(_) => {
                return Err(format!(
                    "{part} holds a DOCTYPE declaration, which spreadsheet programs never write (it can declare entities): refused as malformed or hostile; save the workbook again from a spreadsheet program, or save the sheet as CSV"
                ))
            }
            event => visit(&event, before, after)?,
        }
    }
}

/// The bytes of `part`, unpacked as they are read.
fn open<'z, R: Read + Seek>(
    zip: &'z mut zip::ZipArchive<R>,
    part: &Part,
) -> Result<zip::read::ZipFile<'z, R>, String> {
    zip.by_index(part.index)
        .map_err(|e| format!("{}: {e}", part.name))
}

/// Checks the parts calamine reads (see the module doc).
pub(super) fn check<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    parts: &[Part],
) -> Result<(), String> {
    for part in parts {
        match base(&key(&part.name)) {
            "sharedstrings.xml" => shared_strings(&part.name, part.size, open(zip, part)?)?,
            "styles.xml" => styles(&part.name, open(zip, part)?)?,
            _ => {}
        }
    }
    // The workbook, its relationships and its first sheet, where `_rels/.rels` points.
    let mut books = HashSet::new();
    for part in parts.iter().filter(|p| key(&p.name) == "_rels/.rels") {
        books.extend(office_documents(&part.name, open(zip, part)?)?);
    }
    let mut sheets_scanned = HashSet::new();
    for (folder, name) in books {
        let mut book = Book::default();
        let book_key = key(&format!("{folder}{name}"));
        for part in parts.iter().filter(|p| key(&p.name) == book_key) {
            workbook(&part.name, open(zip, part)?, &mut book)?;
        }
        let mut rels = Relationships {
            wanted: book.first_ids.clone(),
            ..Relationships::default()
        };
        let rels_key = key(&format!("{folder}_rels/{name}.rels"));
        for part in parts.iter().filter(|p| key(&p.name) == rels_key) {
            relationships(&part.name, open(zip, part)?, &mut rels)?;
        }
        let per_sheet =
            SHEET_COST + 2 * book.longest_sheet_attr + folder.len() as u64 + rels.longest_target;
        let structs = book.sheets * per_sheet
            + book.names * DEFINED_NAME_COST
            + rels.count * RELATIONSHIP_COST;
        let memory = 2 * structs + book.name_bytes + rels.bytes;
        if memory > MAX_PART_MEMORY {
            return Err(format!(
                "the workbook {folder}{name} would take about {memory} bytes of memory to open ({} sheets, {} defined names, {} relationships; at most {MAX_PART_MEMORY} bytes): refused as malformed or hostile; save the workbook again from a spreadsheet program, or save the sheet as CSV",
                book.sheets, book.names, rels.count
            ));
        }
        for target in &rels.first_targets {
            let path = match target.strip_prefix('/') {
                Some(absolute) => absolute.to_owned(),
                None => format!("{folder}{target}"),
            };
            let sheet_key = key(&path);
            for part in parts.iter().filter(|p| key(&p.name) == sheet_key) {
                if sheets_scanned.insert(part.index) {
                    worksheet(&part.name, open(zip, part)?)?;
                }
            }
        }
    }
    Ok(())
}

/// The shared strings: the declared count, the number of strings and each one's size.
fn shared_strings<R: Read>(part: &str, size: u64, reader: R) -> Result<(), String> {
    let mut seen_sst = false;
    let mut strings = 0u64;
    // The shared string measured and its number.
    let mut held = Held::new("shared string");
    let mut which = 0u64;
    scan(part, reader, &mut |event, from, at| {
        match event {
            Event::Start(e) if !seen_sst && e.local_name().as_ref() == "sst" => {
                seen_sst = true;
                let declared = attrs(e)
                    .filter(|(k, _)| local(k) == "uniqueCount")
                    .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
                    .max();
                if let Some(n) = declared {
                    if n > MAX_SHARED_STRINGS || n > size / 4 {
                        return Err(format!(
                            "{part} declares {n} shared strings in {size} bytes (at most {MAX_SHARED_STRINGS}, and one per 4 bytes): refused as malformed; save the sheet as CSV"
                        ));
                    }
                }
            }
            Event::Start(e) if e.local_name().as_ref() == "si" => {
                strings += 1;
                if strings > MAX_SHARED_STRINGS {
                    return Err(format!(
                        "{part} holds more than {MAX_SHARED_STRINGS} shared strings: save the sheet as CSV to publish it"
                    ));
                }
                if !held.is_open() {
                    which = strings;
                }
                held.open(part, e.name().as_ref(), from)?;
            }
            Event::Start(e) if held.is_open() => held.open(part, e.name().as_ref(), from)?,
            Event::End(e) => held.close(e.name().as_ref()),
            _ => {}
        }
        match held.bytes(at) {
            Some(bytes) if bytes > MAX_CELL_XML => Err(format!(
                "shared string {which} of {part} holds more than {MAX_CELL_XML} bytes of XML: a value that long does not belong in a spreadsheet (Excel's own limit is 32,767 characters); save the sheet as CSV to publish it"
            )),
            _ => Ok(()),
        }
    })?;
    if !seen_sst {
        return Err(format!(
            "{part} holds no sst element: not a workbook this node reads; save it again from a spreadsheet program, or save the sheet as CSV"
        ));
    }
    Ok(())
}

/// The styles: what calamine would hold for the fonts, fills, borders, number formats and cell
/// formats, counted in document order as calamine builds them (a cell format can only use the
/// fonts and number formats before it).
fn styles<R: Read>(part: &str, reader: R) -> Result<(), String> {
    use calamine::{Borders, Fill, Font, Style};
    use std::mem::size_of;
    let mut formats: HashMap<String, u64> = HashMap::new();
    let mut longest_font = 0u64;
    let (mut structs, mut strings) = (0u64, 0u64);
    let (mut xfs, mut fonts) = (0u64, 0u64);
    let too_long = |what: &str, len: u64| {
        format!(
            "{part} holds a {what} of {len} bytes (at most {MAX_STYLE_TEXT}): refused as malformed or hostile; save the workbook again from a spreadsheet program, or save the sheet as CSV"
        )
    };
    scan(part, reader, &mut |event, _, _| {
        let Event::Start(e) = event else {
            return Ok(());
        };
        match e.local_name().as_ref() {
            "numFmt" => {
                let mut code = 0u64;
                let mut ids = Vec::new();
                for (k, v) in attrs(e) {
                    if local(k) == "numFmtId" {
                        ids.push(v);
                    } else {
                        code = code.max(v.len() as u64);
                    }
                }
                if code > MAX_STYLE_TEXT {
                    return Err(too_long("number format", code));
                }
                for id in ids {
                    let held = formats.entry(id.to_owned()).or_default();
                    *held = (*held).max(code);
                }
                if formats.len() > MAX_NUMBER_FORMATS {
                    return Err(format!(
                        "{part} defines more than {MAX_NUMBER_FORMATS} number formats: refused as malformed; save the sheet as CSV"
                    ));
                }
                structs += NUMBER_FORMAT_COST;
                strings += code;
            }
            "font" => {
                fonts += 1;
                structs += size_of::<Font>() as u64;
            }
            "name" => {
                for (_, v) in attrs(e) {
                    let len = v.len() as u64;
                    if len > MAX_STYLE_TEXT {
                        return Err(too_long("font name", len));
                    }
                    longest_font = longest_font.max(len);
                    strings += len;
                }
            }
            "fill" => structs += size_of::<Fill>() as u64,
            "border" => structs += size_of::<Borders>() as u64,
            "xf" => {
                xfs += 1;
                let code = attrs(e)
                    .filter(|(k, _)| local(k) == "numFmtId")
                    .filter_map(|(_, v)| formats.get(v).copied())
                    .max()
                    .unwrap_or(0)
                    .max(BUILTIN_FORMAT);
                structs += size_of::<Style>() as u64 + XF_EXTRA;
                strings += longest_font + code;
            }
            _ => return Ok(()),
        }
        let memory = 2 * structs + strings;
        if memory > MAX_PART_MEMORY {
            return Err(format!(
                "{part} would take more than {MAX_PART_MEMORY} bytes of memory to load ({xfs} cell formats and {fonts} fonts so far, the longest font name {longest_font} bytes; calamine copies the font and number format into every cell format): refused as malformed or hostile; save the workbook again from a spreadsheet program, or save the sheet as CSV"
            ));
        }
        Ok(())
    })
}

/// Where `_rels/.rels` says the workbook is: `(folder, file name)` as calamine splits the
/// target of an `officeDocument` relationship (every such relationship counts).
fn office_documents<R: Read>(part: &str, reader: R) -> Result<Vec<(String, String)>, String> {
    let mut found = Vec::new();
    scan(part, reader, &mut |event, _, _| {
        let Event::Start(e) = event else {
            return Ok(());
        };
        if e.local_name().as_ref() != "Relationship"
            || !attrs(e).any(|(_, v)| v.ends_with("/relationships/officeDocument"))
        {
            return Ok(());
        }
        for (_, target) in attrs(e).filter(|(k, _)| *k == "Target") {
            let Ok(target) = quick_xml::escape::unescape(target) else {
                continue;
            };
            let (folder, name) = match target.rfind('/') {
                Some(i) => target.split_at(i + 1),
                None => ("", target.as_ref()),
            };
            let folder = folder.strip_prefix('/').unwrap_or(folder);
            let name = if name.is_empty() {
                "workbook.xml"
            } else {
                name
            };
            found.push((folder.to_owned(), name.to_owned()));
        }
        Ok(())
    })?;
    Ok(found)
}

/// What the workbook part holds, as far as calamine's memory goes.
#[derive(Default)]
struct Book {
    /// `sheet` elements.
    sheets: u64,
    /// The longest attribute value of a `sheet` element (its name, copied twice).
    longest_sheet_attr: u64,
    /// `definedName` elements.
    names: u64,
    /// Bytes of XML inside `definedName` elements (calamine keeps their text).
    name_bytes: u64,
    /// The relationship ids the first `sheet` element names (calamine opens that sheet).
    first_ids: Vec<String>,
}

fn workbook<R: Read>(part: &str, reader: R, book: &mut Book) -> Result<(), String> {
    // The defined name measured: every byte from its start tag to its end (or to the end of
    // the part, where calamine has read it all before failing) counts.
    let mut held = Held::new("defined name");
    scan(part, reader, &mut |event, from, at| {
        match event {
            Event::Start(e) if held.is_open() || e.local_name().as_ref() == "definedName" => {
                held.open(part, e.name().as_ref(), from)?;
            }
            _ => {}
        }
        if held.is_open() {
            book.name_bytes += at - from;
        }
        match event {
            Event::Start(e) if e.local_name().as_ref() == "sheet" => {
                if book.sheets == 0 {
                    book.first_ids = attrs(e)
                        .filter(|(k, _)| local(k) == "id")
                        .map(|(_, v)| v.to_owned())
                        .collect();
                }
                book.sheets += 1;
                let longest = attrs(e).map(|(_, v)| v.len() as u64).max().unwrap_or(0);
                book.longest_sheet_attr = book.longest_sheet_attr.max(longest);
            }
            Event::Start(e) if e.local_name().as_ref() == "definedName" => book.names += 1,
            Event::End(e) => held.close(e.name().as_ref()),
            _ => {}
        }
        Ok(())
    })
}

/// What the workbook's relationships part holds, as far as calamine's memory goes, and where
/// the first sheet is.
#[derive(Default)]
struct Relationships {
    /// The relationship ids of the first sheet.
    wanted: Vec<String>,
    /// `Relationship` elements.
    count: u64,
    /// Bytes of their tags (calamine keeps their id, type and target).
    bytes: u64,
    /// The longest `Target` (copied into the path of every sheet that names it).
    longest_target: u64,
    /// The targets of the first sheet's relationship.
    first_targets: Vec<String>,
}

fn relationships<R: Read>(part: &str, reader: R, rels: &mut Relationships) -> Result<(), String> {
    scan(part, reader, &mut |event, from, at| {
        let Event::Start(e) = event else {
            return Ok(());
        };
        if e.local_name().as_ref() != "Relationship" {
            return Ok(());
        }
        rels.count += 1;
        rels.bytes += at - from;
        let first = attrs(e)
            .filter(|(k, _)| *k == "Id")
            .any(|(_, id)| rels.wanted.iter().any(|w| w == id));
        for (_, target) in attrs(e).filter(|(k, _)| *k == "Target") {
            rels.longest_target = rels.longest_target.max(target.len() as u64);
            if first {
                rels.first_targets.push(target.to_owned());
            }
        }
        Ok(())
    })
}

/// The first sheet: every cell's XML at most [`MAX_CELL_XML`] bytes.
fn worksheet<R: Read>(part: &str, reader: R) -> Result<(), String> {
    // The cell measured; its reference (for the message; one buffer for all cells).
    let mut cell = Held::new("cell");
    let mut name = String::new();
    let mut cells = 0u64;
    scan(part, reader, &mut |event, from, at| {
        match event {
            Event::Start(e) if cell.is_open() => cell.open(part, e.name().as_ref(), from)?,
            Event::Start(e) if e.local_name().as_ref() == "c" => {
                cells += 1;
                name.clear();
                if let Some((_, r)) = attrs(e).find(|(k, _)| *k == "r") {
                    name.extend(r.chars().take(16));
                }
                cell.open(part, e.name().as_ref(), from)?;
            }
            Event::End(e) => cell.close(e.name().as_ref()),
            _ => {}
        }
        match cell.bytes(at) {
            Some(bytes) if bytes > MAX_CELL_XML => {
                let which = if name.is_empty() {
                    format!("number {cells}")
                } else {
                    name.clone()
                };
                Err(format!(
                    "cell {which} of {part} holds more than {MAX_CELL_XML} bytes of XML: a value that long does not belong in a spreadsheet (Excel's own limit is 32,767 characters); save the sheet as CSV to publish it"
                ))
            }
            _ => Ok(()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count_sst(xml: &str) -> Result<(), String> {
        shared_strings("sst.xml", xml.len() as u64 * 1000, xml.as_bytes())
    }

    #[test]
    fn attributes_are_read_as_calamine_reads_them() {
        let mut seen = Vec::new();
        scan(
            "t.xml",
            br#"<a x = '1>' p:y="2" bad z="3"/>"#.as_slice(),
            &mut |event, _, _| {
                if let Event::Start(e) = event {
                    seen.extend(attrs(e).map(|(k, v)| (k.to_owned(), v.to_owned())));
                }
                Ok(())
            },
        )
        .unwrap();
        // `bad z` has no `=` of its own: calamine reads the name "bad z" (and then fails).
        assert_eq!(
            seen,
            vec![
                ("x".to_owned(), "1>".to_owned()),
                ("p:y".to_owned(), "2".to_owned()),
                ("bad z".to_owned(), "3".to_owned())
            ]
        );
    }

    #[test]
    fn the_declared_shared_string_count_is_read_by_the_xml_parser() {
        assert!(
            count_sst(r#"<?xml version="1.0"?><x:sst xmlns:x="a" uniqueCount = '12'/>"#).is_ok()
        );
        let e = count_sst(r#"<sst a=">" xuniqueCount="1" uniqueCount="99999999999"><si/></sst>"#)
            .unwrap_err();
        assert!(e.contains("declares 99999999999 shared strings"), "{e}");
        let e = count_sst("<foo/>").unwrap_err();
        assert!(e.contains("no sst element"), "{e}");
    }

    #[test]
    fn a_doctype_is_refused_in_any_part_scanned() {
        let e = count_sst(r#"<!DOCTYPE sst [<!ENTITY a "b">]><sst/>"#).unwrap_err();
        assert!(
            e.contains("DOCTYPE") && e.contains("save the sheet as CSV"),
            "{e}"
        );
    }

    /// Excel's most cell formats (64,000), each with a custom number format and the font
    /// "Microsoft YaHei UI", stay within the memory allowed for styles.
    #[test]
    fn the_most_cell_formats_excel_writes_pass() {
        let mut x = String::from(
            r#"<styleSheet><numFmts count="1"><numFmt numFmtId="164" formatCode="[$-804]yyyy&quot;年&quot;m&quot;月&quot;d&quot;日&quot;;@"/></numFmts><fonts count="2"><font><name val="Microsoft YaHei UI"/></font><font><name val="宋体"/></font></fonts><cellXfs count="64000">"#,
        );
        for i in 0..64_000 {
            x.push_str(&format!(
                r#"<xf numFmtId="164" fontId="{}" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>"#,
                i % 2
            ));
        }
        x.push_str("</cellXfs></styleSheet>");
        assert_eq!(styles("styles.xml", x.as_bytes()), Ok(()));
    }

    /// Three runs of text of 600,000 bytes, each its own token (a comment between them): 1.8 MB
    /// in all, every token under [`MAX_CELL_XML`]. (The review's attack repeats this 500 times.)
    fn padding() -> String {
        let run = "a".repeat(600_000);
        (0..3).map(|_| format!("<!---->{run}")).collect()
    }

    /// Three `<t>` elements of 600,000 bytes each.
    fn texts() -> String {
        let run = "a".repeat(600_000);
        (0..3).map(|_| format!("<t>{run}</t>")).collect()
    }

    fn sheet_of(cells: &str) -> String {
        format!("<worksheet><sheetData><row>{cells}</row></sheetData></worksheet>")
    }

    /// Review s7, H2: calamine reads a value until the end tag of its very name (`</v>`), with
    /// every text between kept, so an end tag of the same local name but another prefix
    /// (`</x:c>`) must not end the cell for the scan either. (quick-xml refuses more end tags
    /// than start tags even without checking their names, so each attack opens one element
    /// more, `<b>`, and calamine reads it to the end without an error.)
    #[test]
    fn a_cell_is_not_closed_by_an_end_tag_of_another_prefix() {
        let x = sheet_of(&format!(
            r#"<b><c r="A2" t="str"><v>x</x:c>{}</v></c>"#,
            padding()
        ));
        let e = worksheet("sheet.xml", x.as_bytes()).unwrap_err();
        assert!(
            e.contains("cell A2 of sheet.xml holds more than 1048576 bytes")
                && e.contains("save the sheet as CSV"),
            "{e}"
        );
        // An inline string (`<is>`, read until `</is>`) the same way.
        let x = sheet_of(&format!(
            r#"<b><b><c r="B3" t="inlineStr"><is><t>a</t></x:c></x:is>{}</is></c>"#,
            texts()
        ));
        let e = worksheet("sheet.xml", x.as_bytes()).unwrap_err();
        assert!(
            e.contains("cell B3 of sheet.xml holds more than 1048576 bytes"),
            "{e}"
        );
    }

    /// A value still open at the cell's own end tag: calamine reads on to `</v>`.
    #[test]
    fn a_value_open_past_its_cells_end_tag_is_counted_with_the_cell() {
        let x = sheet_of(&format!(
            r#"<b><c r="C4" t="str"><v>x</c>{}</v></c>"#,
            padding()
        ));
        let e = worksheet("sheet.xml", x.as_bytes()).unwrap_err();
        assert!(e.contains("cell C4 of sheet.xml holds more than"), "{e}");
    }

    #[test]
    fn a_shared_string_is_not_closed_by_an_end_tag_of_another_prefix() {
        let x = format!("<sst><b><si><r/><t>a</t></x:si>{}</si></sst>", texts());
        let e = count_sst(&x).unwrap_err();
        assert!(
            e.contains("shared string 1 of sst.xml holds more than 1048576 bytes")
                && e.contains("save the sheet as CSV"),
            "{e}"
        );
    }

    /// Defined names are read the same way: all their text counts toward the workbook's memory.
    #[test]
    fn a_defined_name_is_not_closed_by_an_end_tag_of_another_prefix() {
        let x = format!(
            r#"<workbook><definedNames><b><definedName name="a">x</x:definedName>{}</definedName></definedNames></workbook>"#,
            padding()
        );
        let mut book = Book::default();
        workbook("workbook.xml", x.as_bytes(), &mut book).unwrap();
        assert!(book.name_bytes > 1_800_000, "{}", book.name_bytes);
    }

    /// The scan keeps the names of the elements open inside a cell or string, so it refuses
    /// deep nesting, within the size limit, before holding much.
    #[test]
    fn deep_nesting_inside_a_shared_string_is_refused() {
        let e = count_sst(&format!("<sst><si>{}</si></sst>", "<ab>".repeat(40_000))).unwrap_err();
        assert!(
            e.contains("sst.xml nests elements with more than 65536 bytes of names inside one shared string"),
            "{e}"
        );
    }

    /// Cells and shared strings that close as they should are counted one by one, however
    /// they are prefixed, and whatever they hold.
    #[test]
    fn well_formed_cells_and_strings_are_counted_one_by_one() {
        let run = "a".repeat(600_000);
        let cells: String = (0..3)
            .map(|i| {
                format!(
                    r#"<x:c r="A{i}" t="inlineStr"><x:is><x:r><x:rPr/><x:t xml:space="preserve">{run}</x:t></x:r><x:rPh><x:t>b</x:t></x:rPh></x:is></x:c><c r="B{i}"><f>SUM(A1)</f><v/></c>"#
                )
            })
            .collect();
        assert_eq!(worksheet("sheet.xml", sheet_of(&cells).as_bytes()), Ok(()));
        let strings: String = (0..3)
            .map(|_| format!("<x:si><x:r><x:t>{run}</x:t></x:r></x:si><si/>"))
            .collect();
        assert_eq!(count_sst(&format!("<x:sst>{strings}</x:sst>")), Ok(()));
    }

    #[test]
    fn a_long_token_is_refused_without_being_held() {
        let comment = format!("<sst><!--{}--></sst>", "x".repeat(64 << 20));
        let e = count_sst(&comment).unwrap_err();
        assert!(e.contains("more than 1048576 bytes"), "{e}");
    }
}
