//! [`RawEntry`]: a catalogue entry as a person writes it, every field optional and textual, so
//! that validation can report every problem at once instead of stopping at the first.

use serde::{Deserialize, Serialize};

use super::enums::Labelled;
use super::{
    DataType, Entry, Format, FormatCategory, Item, OpenType, ShareMode, ShareType, UpdateCycle,
    ValidationErrors,
};
use crate::{Classification, ResourceCode, Uscc};

/// An unvalidated entry (TOML or JSON input). Unknown keys are refused by the decoder.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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
    #[serde(default)]
    pub items: Vec<RawItem>,
    pub share_type: Option<String>,
    pub share_condition: Option<String>,
    pub share_mode: Option<String>,
    pub open_type: Option<String>,
    pub open_condition: Option<String>,
    pub update_cycle: Option<String>,
    pub publish_date: Option<String>,
    #[serde(default)]
    pub related_codes: Vec<String>,
}

/// Unvalidated 信息资源格式.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawFormat {
    pub category: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// Unvalidated 信息项.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(missing_docs)]
pub struct RawItem {
    pub name: Option<String>,
    pub data_type: Option<String>,
    pub length: Option<u32>,
    pub share_type: Option<String>,
    pub open_type: Option<String>,
}

/// Collects field errors while parsing.
struct Parser {
    errors: ValidationErrors,
}

impl Parser {
    fn required<'a>(&mut self, path: &str, v: &'a Option<String>) -> Option<&'a str> {
        match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s),
            _ => {
                self.errors.push(path, "required field is missing or empty");
                None
            }
        }
    }

    fn with<T, E: std::fmt::Display>(
        &mut self,
        path: &str,
        v: Option<&str>,
        parse: impl FnOnce(&str) -> Result<T, E>,
    ) -> Option<T> {
        match parse(v?) {
            Ok(t) => Some(t),
            Err(e) => {
                self.errors.push(path, e.to_string());
                None
            }
        }
    }

    /// Parses an optional enumeration value.
    fn enumeration<T: Labelled>(&mut self, path: &str, v: Option<&str>) -> Option<T> {
        let s = v?;
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
        }
        t
    }

    /// Parses a mandatory enumeration value.
    fn required_enum<T: Labelled>(&mut self, path: &str, v: &Option<String>) -> Option<T> {
        let s = self.required(path, v);
        self.enumeration(path, s)
    }
}

impl RawEntry {
    /// Validates every field and every rule; returns the entry or all problems found.
    pub fn validate(&self) -> Result<Entry, ValidationErrors> {
        let mut p = Parser {
            errors: ValidationErrors(Vec::new()),
        };
        let v = p.required("classification", &self.classification);
        let classification = p.with("classification", v, Classification::parse);
        let title = p.required("title", &self.title).map(str::to_owned);
        let v = p.required("code", &self.code);
        let code = p.with("code", v, ResourceCode::parse);
        let provider_name = p
            .required("provider_name", &self.provider_name)
            .map(str::to_owned);
        let v = p.required("provider_code", &self.provider_code);
        let provider_code = p.with("provider_code", v, Uscc::parse);
        let summary = p.required("abstract", &self.summary).map(str::to_owned);
        let format = match &self.format {
            None => {
                p.errors.push("format", "required field is missing");
                None
            }
            Some(f) => {
                let category: Option<FormatCategory> =
                    p.required_enum("format.category", &f.category);
                let kind = p.required("format.type", &f.kind).map(str::to_owned);
                category
                    .zip(kind)
                    .map(|(category, kind)| Format { category, kind })
            }
        };
        let mut items = Vec::with_capacity(self.items.len());
        for (i, item) in self.items.iter().enumerate() {
            let path = |f: &str| format!("items[{i}].{f}");
            let name = p.required(&path("name"), &item.name).map(str::to_owned);
            let data_type: Option<DataType> = p.required_enum(&path("data_type"), &item.data_type);
            let share_type: Option<ShareType> =
                p.enumeration(&path("share_type"), item.share_type.as_deref());
            let open_type: Option<OpenType> =
                p.enumeration(&path("open_type"), item.open_type.as_deref());
            if let (Some(name), Some(data_type)) = (name, data_type) {
                items.push(Item {
                    name,
                    data_type,
                    length: item.length,
                    share_type,
                    open_type,
                });
            }
        }
        let share_type: Option<ShareType> = p.required_enum("share_type", &self.share_type);
        let share_mode: Option<ShareMode> = p.required_enum("share_mode", &self.share_mode);
        let open_type: Option<OpenType> = p.required_enum("open_type", &self.open_type);
        let update_cycle: Option<UpdateCycle> = p.required_enum("update_cycle", &self.update_cycle);
        let publish_date = p
            .required("publish_date", &self.publish_date)
            .map(str::to_owned);
        let mut related_codes = Vec::new();
        for (i, c) in self.related_codes.iter().enumerate() {
            if let Some(c) = p.with(&format!("related_codes[{i}]"), Some(c), ResourceCode::parse) {
                related_codes.push(c);
            }
        }
        let nonempty = |s: &Option<String>| {
            s.as_deref()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let mut errors = p.errors;
        let complete = errors.0.is_empty();
        let entry = match (
            classification,
            title,
            code,
            provider_name,
            provider_code,
            summary,
            format,
            share_type,
            share_mode,
            open_type,
            update_cycle,
            publish_date,
        ) {
            (
                Some(classification),
                Some(title),
                Some(code),
                Some(provider_name),
                Some(provider_code),
                Some(summary),
                Some(format),
                Some(share_type),
                Some(share_mode),
                Some(open_type),
                Some(update_cycle),
                Some(publish_date),
            ) if complete => Entry {
                classification,
                title,
                code,
                provider_name,
                provider_code,
                summary,
                format,
                items,
                share_type,
                share_condition: nonempty(&self.share_condition),
                share_mode,
                open_type,
                open_condition: nonempty(&self.open_condition),
                update_cycle,
                publish_date,
                related_codes,
            },
            _ => return Err(errors),
        };
        super::rules::check(&entry, &mut errors);
        if errors.0.is_empty() {
            Ok(entry)
        } else {
            Err(errors)
        }
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
        }
    }
}
