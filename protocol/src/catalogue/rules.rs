//! The cross-field rules of a catalogue entry (shared by typed and raw validation).

use super::{DataType, Entry, FormatCategory, OpenType, ShareMode, ShareType, ValidationErrors};
use crate::{Classification, ResourceCode};

const MAX_TITLE: usize = 128;
const MAX_NAME: usize = 128;
const MAX_TEXT: usize = 4000;
/// Most 信息项 an entry lists.
pub const MAX_ITEMS: usize = 1000;
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

/// What the rules read: each field of an entry, `None` where it is missing or malformed (that
/// problem is reported by the parser), so that every rule whose fields are known still runs.
/// An optional field is `Some(None)` when it is known to be absent.
pub(super) struct View<'a> {
    pub(super) classification: Option<&'a Classification>,
    pub(super) title: Option<&'a str>,
    pub(super) code: Option<&'a ResourceCode>,
    pub(super) provider_name: Option<&'a str>,
    pub(super) summary: Option<&'a str>,
    pub(super) category: Option<FormatCategory>,
    pub(super) kind: Option<&'a str>,
    /// `None` when `items` is not a list at all.
    pub(super) items: Option<Vec<ItemView<'a>>>,
    pub(super) share_type: Option<ShareType>,
    pub(super) share_condition: Option<Option<&'a str>>,
    pub(super) share_mode: Option<ShareMode>,
    pub(super) open_type: Option<OpenType>,
    pub(super) open_condition: Option<Option<&'a str>>,
    pub(super) publish_date: Option<&'a str>,
    pub(super) related_codes: Vec<Option<&'a ResourceCode>>,
}

/// One 信息项 as the rules read it (see [`View`]).
pub(super) struct ItemView<'a> {
    pub(super) name: Option<&'a str>,
    pub(super) data_type: Option<DataType>,
    pub(super) length: Option<Option<u32>>,
    pub(super) share_type: Option<Option<ShareType>>,
    pub(super) open_type: Option<Option<OpenType>>,
}

impl<'a> From<&'a Entry> for View<'a> {
    fn from(e: &'a Entry) -> Self {
        View {
            classification: Some(&e.classification),
            title: Some(&e.title),
            code: Some(&e.code),
            provider_name: Some(&e.provider_name),
            summary: Some(&e.summary),
            category: Some(e.format.category),
            kind: Some(&e.format.kind),
            items: Some(
                e.items
                    .iter()
                    .map(|i| ItemView {
                        name: Some(&i.name),
                        data_type: Some(i.data_type),
                        length: Some(i.length),
                        share_type: Some(i.share_type),
                        open_type: Some(i.open_type),
                    })
                    .collect(),
            ),
            share_type: Some(e.share_type),
            share_condition: Some(e.share_condition.as_deref()),
            share_mode: Some(e.share_mode),
            open_type: Some(e.open_type),
            open_condition: Some(e.open_condition.as_deref()),
            publish_date: Some(&e.publish_date),
            related_codes: e.related_codes.iter().map(Some).collect(),
        }
    }
}

/// An item's own type, or the entry's when it inherits; `None` when either needed is unknown.
fn effective<T: Copy>(own: Option<Option<T>>, entry: Option<T>) -> Option<T> {
    match own? {
        Some(t) => Some(t),
        None => entry,
    }
}

/// Checks every rule over the fields that are known.
pub(super) fn check(e: &View<'_>, errors: &mut ValidationErrors) {
    let texts = [
        ("title", e.title, MAX_TITLE),
        ("provider_name", e.provider_name, MAX_NAME),
        ("abstract", e.summary, MAX_TEXT),
        ("format.type", e.kind, 32),
        ("share_condition", e.share_condition.flatten(), MAX_TEXT),
        ("open_condition", e.open_condition.flatten(), MAX_TEXT),
    ];
    for (path, text, max) in texts {
        if let Some(text) = text {
            too_long(errors, path, text, max);
        }
    }
    if let (Some(code), Some(classification)) = (e.code, e.classification) {
        if code.classification() != classification.as_str() {
            errors.push(
                "code",
                format!(
                    "code {code} does not start with the entry's classification {classification}"
                ),
            );
        }
    }
    if let Some(date) = e.publish_date.filter(|d| !is_date(d)) {
        errors.push("publish_date", format!("{date:?} is not a date YYYY-MM-DD"));
    }
    match (e.share_type, e.share_condition) {
        (Some(ShareType::Conditional), Some(None)) => errors.push(
            "share_condition",
            "有条件共享 needs a share_condition (the conditions and scope of sharing)",
        ),
        (Some(ShareType::None), Some(None)) => errors.push(
            "share_condition",
            "不予共享 needs a share_condition giving the legal basis (法律法规依据)",
        ),
        _ => {}
    }
    if let (Some(ShareType::None), Some(open)) = (e.share_type, e.open_type) {
        if open != OpenType::Closed {
            errors.push(
                "open_type",
                format!(
                    "a resource that is 不予共享 is never open: open_type must be closed (不予开放), got {open}"
                ),
            );
        }
    }
    if (e.open_type, e.open_condition) == (Some(OpenType::Conditional), Some(None)) {
        errors.push("open_condition", "有条件开放 needs an open_condition");
    }
    if let Some(items) = &e.items {
        check_items(e, items, errors);
    }
    if e.related_codes.len() > MAX_RELATED {
        errors.push(
            "related_codes",
            format!("at most {MAX_RELATED} related codes"),
        );
    }
    for (i, c) in e.related_codes.iter().enumerate() {
        if c.is_some() && *c == e.code {
            errors.push(
                format!("related_codes[{i}]"),
                "an entry cannot be related to itself",
            );
        }
    }
}

fn check_items(e: &View<'_>, items: &[ItemView<'_>], errors: &mut ValidationErrors) {
    let structured = e.share_mode == Some(ShareMode::Table)
        || matches!(
            e.category,
            Some(FormatCategory::Database | FormatCategory::Spreadsheet)
        );
    if structured && items.is_empty() {
        errors.push(
            "items",
            "structured resources (库表, 数据库, 电子表格) must list their 信息项",
        );
    }
    if items.len() > MAX_ITEMS {
        errors.push("items", format!("at most {MAX_ITEMS} items"));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = |f: &str| format!("items[{i}].{f}");
        if let Some(name) = item.name {
            too_long(errors, &path("name"), name, 64);
            if !seen.insert(name) {
                errors.push(path("name"), format!("duplicate item name {name:?}"));
            }
        }
        match (item.length, item.data_type) {
            (Some(Some(0)), _) => errors.push(path("length"), "length must be at least 1"),
            (Some(None), Some(DataType::C)) => {
                errors.push(path("length"), "字符 (C) items need a length")
            }
            _ => {}
        }
        let share = effective(item.share_type, e.share_type);
        if let (Some(share), Some(entry)) = (share, e.share_type) {
            if share.rank() < entry.rank() {
                errors.push(
                    path("share_type"),
                    format!(
                        "an item cannot be shared more widely ({share}) than its resource ({entry})"
                    ),
                );
            }
        }
        let open = effective(item.open_type, e.open_type);
        if let (Some(open), Some(entry)) = (open, e.open_type) {
            if open.rank() < entry.rank() {
                errors.push(
                    path("open_type"),
                    format!("an item cannot be more open ({open}) than its resource ({entry})"),
                );
            }
        }
        if share == Some(ShareType::None) && open.is_some_and(|o| o != OpenType::Closed) {
            errors.push(
                path("open_type"),
                "an item that is 不予共享 is never open: open_type must be closed",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A view in which nothing is known.
    fn unknown() -> View<'static> {
        View {
            classification: None,
            title: None,
            code: None,
            provider_name: None,
            summary: None,
            category: None,
            kind: None,
            items: None,
            share_type: None,
            share_condition: None,
            share_mode: None,
            open_type: None,
            open_condition: None,
            publish_date: None,
            related_codes: Vec::new(),
        }
    }

    fn problems(v: &View<'_>) -> Vec<String> {
        let mut errors = ValidationErrors::default();
        check(v, &mut errors);
        errors.0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn nothing_known_nothing_said() {
        assert!(problems(&unknown()).is_empty());
    }

    #[test]
    fn a_rule_runs_as_soon_as_its_own_fields_are_known() {
        let v = View {
            share_type: Some(ShareType::Conditional),
            share_condition: Some(None),
            open_type: Some(OpenType::Conditional),
            // Malformed (None): its rule waits, the others do not.
            open_condition: None,
            publish_date: Some("2026-13-01"),
            ..unknown()
        };
        assert_eq!(
            problems(&v),
            vec![
                "publish_date: \"2026-13-01\" is not a date YYYY-MM-DD",
                "share_condition: 有条件共享 needs a share_condition (the conditions and scope of sharing)",
            ]
        );
    }

    #[test]
    fn item_rules_use_what_is_known_of_the_item_and_the_entry() {
        let item = |share_type, open_type| ItemView {
            name: Some("姓名"),
            data_type: None,
            length: Some(None),
            share_type,
            open_type,
        };
        let v = View {
            share_type: None,
            open_type: Some(OpenType::Closed),
            share_mode: Some(ShareMode::Table),
            items: Some(vec![
                // Not shared but open: wrong whatever the entry's share type.
                item(Some(Some(ShareType::None)), Some(Some(OpenType::Open))),
                // Inherits an unknown share type: nothing to say about sharing.
                item(Some(None), None),
            ]),
            ..unknown()
        };
        assert_eq!(
            problems(&v),
            vec![
                "items[0].open_type: an item cannot be more open (open) than its resource (closed)",
                "items[0].open_type: an item that is 不予共享 is never open: open_type must be closed",
                "items[1].name: duplicate item name \"姓名\"",
            ]
        );
        let empty = View {
            share_mode: Some(ShareMode::Table),
            items: Some(Vec::new()),
            ..unknown()
        };
        assert_eq!(
            problems(&empty),
            vec!["items: structured resources (库表, 数据库, 电子表格) must list their 信息项"]
        );
    }
}
