//! A statistics table as a download: CSV (UTF-8 with a byte-order mark, so spreadsheet
//! programs read the Chinese text) or XLSX (numbers as numbers). Text that a spreadsheet would
//! take for a formula (`=`, `+`, `-`, `@` first: entry titles come from other members) is
//! written so it stays text.

use super::tables::Table;

/// Why a table could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write the spreadsheet: {0}")]
pub(crate) struct ExportError(#[from] rust_xlsxwriter::XlsxError);

/// Whether a spreadsheet program would read `s` as a formula.
fn formula_like(s: &str) -> bool {
    s.starts_with(['=', '+', '-', '@', '\t', '\r'])
}

/// One CSV field.
fn csv_field(s: &str) -> String {
    let s = if formula_like(s) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The table as CSV: numbers unformatted, text as shown.
pub(crate) fn csv(t: &Table) -> Vec<u8> {
    let mut out = String::from("\u{feff}");
    let line = |cells: Vec<String>| cells.join(",") + "\r\n";
    out.push_str(&line(t.headers.iter().map(|h| csv_field(h)).collect()));
    for row in &t.rows {
        out.push_str(&line(
            row.iter()
                .map(|c| match c.number {
                    Some(n) if n.fract() == 0.0 => format!("{n:.0}"),
                    Some(n) => format!("{n:.2}"),
                    None => csv_field(&c.text),
                })
                .collect(),
        ));
    }
    out.into_bytes()
}

/// The table as an XLSX workbook of one sheet.
pub(crate) fn xlsx(t: &Table) -> Result<Vec<u8>, ExportError> {
    let mut book = rust_xlsxwriter::Workbook::new();
    let sheet = book.add_worksheet();
    sheet.set_name(t.id)?;
    let bold = rust_xlsxwriter::Format::new().set_bold();
    for (c, h) in t.headers.iter().enumerate() {
        sheet.write_string_with_format(0, col(c), h, &bold)?;
    }
    for (r, row) in t.rows.iter().enumerate() {
        let r = u32::try_from(r + 1).unwrap_or(u32::MAX);
        for (c, cell) in row.iter().enumerate() {
            match cell.number {
                Some(n) => sheet.write_number(r, col(c), n)?,
                None => sheet.write_string(r, col(c), &cell.text)?,
            };
        }
    }
    Ok(book.save_to_buffer()?)
}

fn col(c: usize) -> u16 {
    u16::try_from(c).unwrap_or(u16::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::tables::Cell;
    use super::*;

    fn table() -> Table {
        Table {
            id: "t",
            title: "t".into(),
            headers: vec!["名称".into(), "次数".into()],
            rows: vec![vec![
                Cell {
                    text: "=HYPERLINK(\"x\"),1".into(),
                    number: None,
                },
                Cell {
                    text: "1,234".into(),
                    number: Some(1234.0),
                },
            ]],
        }
    }

    #[test]
    fn csv_keeps_formulas_as_text_and_numbers_plain() {
        let text = String::from_utf8(csv(&table())).unwrap_or_default();
        assert_eq!(
            text,
            "\u{feff}名称,次数\r\n\"'=HYPERLINK(\"\"x\"\"),1\",1234\r\n"
        );
    }

    #[test]
    fn xlsx_is_a_zip_workbook() {
        let bytes = xlsx(&table()).unwrap_or_default();
        assert!(bytes.starts_with(b"PK"), "not a zip");
    }
}
