//! The cross-field rules of a catalogue entry (shared by typed and raw validation).

use super::{Entry, FormatCategory, OpenType, ShareMode, ShareType, ValidationErrors};

const MAX_TITLE: usize = 128;
const MAX_NAME: usize = 128;
const MAX_TEXT: usize = 4000;
const MAX_ITEMS: usize = 1000;
const MAX_RELATED: usize = 100;

fn too_long(errors: &mut ValidationErrors, path: &str, s: &str, max: usize) {
    let n = s.chars().count();
    if s.trim().is_empty() {
        errors.push(path, "required field is missing or empty");
    } else if n > max {
        errors.push(path, format!("{n} characters; at most {max} allowed"));
    }
}

/// Whether `s` is a real calendar date `YYYY-MM-DD`.
pub(crate) fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return false;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<u32>().ok());
    let (Some(y), Some(m), Some(d)) = (num(0..4), num(5..7), num(8..10)) else {
        return false;
    };
    if !s[0..4].bytes().all(|c| c.is_ascii_digit()) || !(1900..=9999).contains(&y) {
        return false;
    }
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days = match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&d)
}

pub(super) fn check(e: &Entry, errors: &mut ValidationErrors) {
    too_long(errors, "title", &e.title, MAX_TITLE);
    too_long(errors, "provider_name", &e.provider_name, MAX_NAME);
    too_long(errors, "abstract", &e.summary, MAX_TEXT);
    too_long(errors, "format.type", &e.format.kind, 32);
    if e.code.classification() != e.classification.as_str() {
        errors.push(
            "code",
            format!(
                "code {} does not start with the entry's classification {}",
                e.code, e.classification
            ),
        );
    }
    if !is_date(&e.publish_date) {
        errors.push(
            "publish_date",
            format!("{:?} is not a date YYYY-MM-DD", e.publish_date),
        );
    }
    match e.share_type {
        ShareType::Conditional if e.share_condition.is_none() => errors.push(
            "share_condition",
            "有条件共享 needs a share_condition (the conditions and scope of sharing)",
        ),
        ShareType::None if e.share_condition.is_none() => errors.push(
            "share_condition",
            "不予共享 needs a share_condition giving the legal basis (法律法规依据)",
        ),
        ShareType::None if e.open_type != OpenType::Closed => errors.push(
            "open_type",
            format!(
                "a resource that is 不予共享 is never open: open_type must be closed (不予开放), got {}",
                e.open_type
            ),
        ),
        _ => {}
    }
    if let Some(c) = &e.share_condition {
        too_long(errors, "share_condition", c, MAX_TEXT);
    }
    if e.open_type == OpenType::Conditional && e.open_condition.is_none() {
        errors.push("open_condition", "有条件开放 needs an open_condition");
    }
    if let Some(c) = &e.open_condition {
        too_long(errors, "open_condition", c, MAX_TEXT);
    }
    let structured = e.share_mode == ShareMode::Table
        || matches!(
            e.format.category,
            FormatCategory::Database | FormatCategory::Spreadsheet
        );
    if structured && e.items.is_empty() {
        errors.push(
            "items",
            "structured resources (库表, 数据库, 电子表格) must list their 信息项",
        );
    }
    if e.items.len() > MAX_ITEMS {
        errors.push("items", format!("at most {MAX_ITEMS} items"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, item) in e.items.iter().enumerate() {
        let path = |f: &str| format!("items[{i}].{f}");
        too_long(errors, &path("name"), &item.name, 64);
        if !seen.insert(item.name.as_str()) {
            errors.push(path("name"), format!("duplicate item name {:?}", item.name));
        }
        match item.length {
            Some(0) => errors.push(path("length"), "length must be at least 1"),
            None if item.data_type == super::DataType::C => {
                errors.push(path("length"), "字符 (C) items need a length")
            }
            _ => {}
        }
        let share = item.share_type.unwrap_or(e.share_type);
        if share.rank() < e.share_type.rank() {
            errors.push(
                path("share_type"),
                format!(
                    "an item cannot be shared more widely ({}) than its resource ({})",
                    share, e.share_type
                ),
            );
        }
        let open = item.open_type.unwrap_or(e.open_type);
        if open.rank() < e.open_type.rank() {
            errors.push(
                path("open_type"),
                format!(
                    "an item cannot be more open ({}) than its resource ({})",
                    open, e.open_type
                ),
            );
        }
        if share == ShareType::None && open != OpenType::Closed {
            errors.push(
                path("open_type"),
                "an item that is 不予共享 is never open: open_type must be closed",
            );
        }
    }
    if e.related_codes.len() > MAX_RELATED {
        errors.push(
            "related_codes",
            format!("at most {MAX_RELATED} related codes"),
        );
    }
    for (i, c) in e.related_codes.iter().enumerate() {
        if c == &e.code {
            errors.push(
                format!("related_codes[{i}]"),
                "an entry cannot be related to itself",
            );
        }
    }
}
