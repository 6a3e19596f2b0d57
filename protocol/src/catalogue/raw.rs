//! [`RawEntry`]: a catalogue entry as a person writes it, every field optional and textual, so
//! that validation can report every problem at once instead of stopping at the first: the
//! decoder ([`super::decode`]) keeps unknown keys and wrong types as problems, each field is
//! parsed on its own, and the cross-field rules ([`super::rules`]) run on every field that
//! parsed.

use serde::Serialize;

use super::enums::Labelled;
use super::rules::{ItemView, View};
use super::{
    DataType, Entry, Format, FormatCategory, Item, OpenType, ShareMode, ShareType, UpdateCycle,
    ValidationErrors,
};
use crate::{Classification, ResourceCode, Uscc};

/// An unvalidated entry (TOML or JSON input). Decoding only fails when the input is not a
/// table/object; unknown keys and values of the wrong type are kept as problems for
/// [`RawEntry::validate`] to report with the rest.
#[derive(Clone, Debug, Default, Serialize)]
#[allow(missing_docs)]
pub struct RawEntry {
    pub classification: Option<String>,
    pub title: Option<String>,
    pub code: Option<String>,
    pub provider_name: Option<String>,
    pub provider_code: Option<String>,
    #[serde(rename = "abstract")]
    pub summary: Option<String>,
    pub format: Option<RawFormat>,
    pub items: Vec<RawItem>,
    pub share_type: Option<String>,
    pub share_condition: Option<String>,
    pub share_mode: Option<String>,
    pub open_type: Option<String>,
    pub open_condition: Option<String>,
    pub update_cycle: Option<String>,
    pub publish_date: Option<String>,
    pub related_codes: Vec<String>,
    /// Problems found while decoding (unknown keys, wrong types), reported by `validate`.
    #[serde(skip)]
    pub(super) problems: ValidationErrors,
}

/// Unvalidated 信息资源格式.
#[derive(Clone, Debug, Default, Serialize)]
#[allow(missing_docs)]
pub struct RawFormat {
    pub category: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Unvalidated 信息项.
#[derive(Clone, Debug, Default, Serialize)]
#[allow(missing_docs)]
pub struct RawItem {
    pub name: Option<String>,
    pub data_type: Option<String>,
    pub length: Option<u32>,
    pub share_type: Option<String>,
    pub open_type: Option<String>,
}

/// The fields of an entry that parsed; `None` where a field is missing or malformed (and
/// already reported). An optional field that parsed is `Some(None)` when absent.
struct Parsed {
    classification: Option<Classification>,
    title: Option<String>,
    code: Option<ResourceCode>,
    provider_name: Option<String>,
    provider_code: Option<Uscc>,
    summary: Option<String>,
    category: Option<FormatCategory>,
    kind: Option<String>,
    items: Option<Vec<ParsedItem>>,
    share_type: Option<ShareType>,
    share_condition: Option<Option<String>>,
    share_mode: Option<ShareMode>,
    open_type: Option<OpenType>,
    open_condition: Option<Option<String>>,
    update_cycle: Option<UpdateCycle>,
    publish_date: Option<String>,
    related_codes: Vec<Option<ResourceCode>>,
}

/// The fields of one 信息项 that parsed.
struct ParsedItem {
    name: Option<String>,
    data_type: Option<DataType>,
    length: Option<Option<u32>>,
    share_type: Option<Option<ShareType>>,
    open_type: Option<Option<OpenType>>,
}

impl Parsed {
    /// What the rules read.
    fn view(&self) -> View<'_> {
        View {
            classification: self.classification.as_ref(),
            title: self.title.as_deref(),
            code: self.code.as_ref(),
            provider_name: self.provider_name.as_deref(),
            summary: self.summary.as_deref(),
            category: self.category,
            kind: self.kind.as_deref(),
            items: self.items.as_ref().map(|items| {
                items
                    .iter()
                    .map(|i| ItemView {
                        name: i.name.as_deref(),
                        data_type: i.data_type,
                        length: i.length,
                        share_type: i.share_type,
                        open_type: i.open_type,
                    })
                    .collect()
            }),
            share_type: self.share_type,
            share_condition: self.share_condition.as_ref().map(Option::as_deref),
            share_mode: self.share_mode,
            open_type: self.open_type,
            open_condition: self.open_condition.as_ref().map(Option::as_deref),
            publish_date: self.publish_date.as_deref(),
            related_codes: self.related_codes.iter().map(Option::as_ref).collect(),
        }
    }

    /// The entry, when every field parsed.
    fn into_entry(self) -> Option<Entry> {
        let items = self
            .items?
            .into_iter()
            .map(|i| {
                Some(Item {
                    name: i.name?,
                    data_type: i.data_type?,
                    length: i.length?,
                    share_type: i.share_type?,
                    open_type: i.open_type?,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Entry {
            classification: self.classification?,
            title: self.title?,
            code: self.code?,
            provider_name: self.provider_name?,
            provider_code: self.provider_code?,
            summary: self.summary?,
            format: Format {
                category: self.category?,
                kind: self.kind?,
            },
            items,
            share_type: self.share_type?,
            share_condition: self.share_condition?,
            share_mode: self.share_mode?,
            open_type: self.open_type?,
            open_condition: self.open_condition?,
            update_cycle: self.update_cycle?,
            publish_date: self.publish_date?,
            related_codes: self.related_codes.into_iter().collect::<Option<Vec<_>>>()?,
        })
    }
}

/// Parses fields one by one, collecting problems.
struct Parser {
    errors: ValidationErrors,
}

impl Parser {
    /// Whether a problem was already reported at `path` or at a field that contains it (a
    /// value of the wrong type is not reported again as missing or unparsable).
    fn reported(&self, path: &str) -> bool {
        self.errors.0.iter().any(|e| {
            path.strip_prefix(e.path.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
        })
    }

    fn required<'a>(&mut self, path: &str, v: &'a Option<String>) -> Option<&'a str> {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                if !self.reported(path) {
                    self.errors.push(path, "required field is missing or empty");
                }
                None
            }
        }
    }

    /// An optional text: `Some(None)` when absent or blank, `None` when malformed.
    fn optional(&self, path: &str, v: &Option<String>) -> Option<Option<String>> {
        if self.reported(path) {
            return None;
        }
        Some(
            v.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        )
    }

    fn with<T, E: std::fmt::Display>(
        &mut self,
        path: &str,
        v: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        if self.reported(path) {
            return None;
        }
        match parse(v?) {
            Ok(t) => Some(t),
            Err(e) => {
                self.errors.push(path, e.to_string());
                None
            }
        }
    }

    /// Parses an optional enumeration value: `Some(None)` when absent, `None` when malformed.
    fn enumeration<T: Labelled>(&mut self, path: &str, v: Option<&str>) -> Option<Option<T>> {
        if self.reported(path) {
            return None;
        }
        let Some(s) = v else {
            return Some(None);
        };
        let t = T::parse(s);
        if t.is_none() {
            self.errors.push(
                path,
                format!(
                    "unknown {} {s:?}; expected one of {}",
                    T::WHAT,
                    T::expected()
                ),
            );
            return None;
        }
        Some(t)
    }

    /// Parses a mandatory enumeration value.
    fn required_enum<T: Labelled>(&mut self, path: &str, v: &Option<String>) -> Option<T> {
        let s = self.required(path, v)?;
        self.enumeration(path, Some(s)).flatten()
    }

    fn item(&mut self, i: usize, item: &RawItem) -> ParsedItem {
        let path = |f: &str| format!("items[{i}].{f}");
        let length = path("length");
        ParsedItem {
            name: self.required(&path("name"), &item.name).map(str::to_owned),
            data_type: self.required_enum(&path("data_type"), &item.data_type),
            length: (!self.reported(&length)).then_some(item.length),
            share_type: self.enumeration(&path("share_type"), item.share_type.as_deref()),
            open_type: self.enumeration(&path("open_type"), item.open_type.as_deref()),
        }
    }

    fn entry(&mut self, raw: &RawEntry) -> Parsed {
        let v = self.required("classification", &raw.classification);
        let classification = self.with("classification", v, Classification::parse);
        let title = self.required("title", &raw.title).map(str::to_owned);
        let v = self.required("code", &raw.code);
        let code = self.with("code", v, ResourceCode::parse);
        let provider_name = self
            .required("provider_name", &raw.provider_name)
            .map(str::to_owned);
        let v = self.required("provider_code", &raw.provider_code);
        let provider_code = self.with("provider_code", v, Uscc::parse);
        let summary = self.required("abstract", &raw.summary).map(str::to_owned);
        let (category, kind) = match &raw.format {
            None => {
                if !self.reported("format") {
                    self.errors.push("format", "required field is missing");
                }
                (None, None)
            }
            Some(f) => (
                self.required_enum("format.category", &f.category),
                self.required("format.type", &f.kind).map(str::to_owned),
            ),
        };
        let items = (!self.reported("items")).then(|| {
            raw.items
                .iter()
                .enumerate()
                .map(|(i, item)| self.item(i, item))
                .collect()
        });
        Parsed {
            classification,
            title,
            code,
            provider_name,
            provider_code,
            summary,
            category,
            kind,
            items,
            share_type: self.required_enum("share_type", &raw.share_type),
            share_condition: self.optional("share_condition", &raw.share_condition),
            share_mode: self.required_enum("share_mode", &raw.share_mode),
            open_type: self.required_enum("open_type", &raw.open_type),
            open_condition: self.optional("open_condition", &raw.open_condition),
            update_cycle: self.required_enum("update_cycle", &raw.update_cycle),
            publish_date: self
                .required("publish_date", &raw.publish_date)
                .map(str::to_owned),
            related_codes: raw
                .related_codes
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    self.with(&format!("related_codes[{i}]"), Some(c), ResourceCode::parse)
                })
                .collect(),
        }
    }
}

impl RawEntry {
    /// Validates every field and every rule; returns the entry or all problems found: unknown
    /// keys and wrong types, each field that does not parse, and every cross-field rule over
    /// the fields that did.
    pub fn validate(&self) -> Result<Entry, ValidationErrors> {
        let mut p = Parser {
            errors: self.problems.clone(),
        };
        let parsed = p.entry(self);
        let mut errors = p.errors;
        super::rules::check(&parsed.view(), &mut errors);
        if !errors.0.is_empty() {
            // In the order of the fields, as the person wrote them (a stable sort: a field's
            // own problem comes before the rules it breaks).
            errors.0.sort_by_key(|e| super::decode::position(&e.path));
            return Err(errors);
        }
        // Invariant: a field that did not parse was reported, so no problem means complete.
        let entry = parsed.into_entry();
        debug_assert!(entry.is_some(), "an unparsed field was not reported");
        entry.ok_or_else(|| {
            let mut e = ValidationErrors::default();
            e.push("", "the entry is incomplete");
            e
        })
    }
}

impl From<&Entry> for RawEntry {
    fn from(e: &Entry) -> Self {
        RawEntry {
            classification: Some(e.classification.to_string()),
            title: Some(e.title.clone()),
            code: Some(e.code.to_string()),
            provider_name: Some(e.provider_name.clone()),
            provider_code: Some(e.provider_code.to_string()),
            summary: Some(e.summary.clone()),
            format: Some(RawFormat {
                category: Some(e.format.category.key().to_owned()),
                kind: Some(e.format.kind.clone()),
            }),
            items: e
                .items
                .iter()
                .map(|i| RawItem {
                    name: Some(i.name.clone()),
                    data_type: Some(i.data_type.key().to_owned()),
                    length: i.length,
                    share_type: i.share_type.map(|s| s.key().to_owned()),
                    open_type: i.open_type.map(|s| s.key().to_owned()),
                })
                .collect(),
            share_type: Some(e.share_type.key().to_owned()),
            share_condition: e.share_condition.clone(),
            share_mode: Some(e.share_mode.key().to_owned()),
            open_type: Some(e.open_type.key().to_owned()),
            open_condition: e.open_condition.clone(),
            update_cycle: Some(e.update_cycle.key().to_owned()),
            publish_date: Some(e.publish_date.clone()),
            related_codes: e.related_codes.iter().map(|c| c.to_string()).collect(),
            problems: ValidationErrors::default(),
        }
    }
}
