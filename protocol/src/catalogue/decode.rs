//! Reading an entry as a person wrote it (JSON or TOML, through serde) without stopping at the
//! first bad field.
//!
//! The document is first read whole as a value tree; then each known key is taken out and its
//! type checked. An unknown key, a value of the wrong type or a key given twice becomes a
//! [`FieldError`](super::FieldError) kept in the [`RawEntry`], which [`RawEntry::validate`]
//! reports together with every other problem. A malformed value is left out of the `RawEntry`
//! (a placeholder keeps list positions, so paths stay right) and is not reported again as
//! missing. Only a document that is not a table/object at all fails to decode.

use ciborium::Value;
use serde::{de, Deserialize, Deserializer};

use super::raw::{RawEntry, RawFormat, RawItem};
use super::ValidationErrors;

/// The keys of an entry, a format and an item, in the order people write them.
const ENTRY_KEYS: &[&str] = &[
    "classification",
    "title",
    "code",
    "provider_name",
    "provider_code",
    "abstract",
    "format",
    "items",
    "share_type",
    "share_condition",
    "share_mode",
    "open_type",
    "open_condition",
    "update_cycle",
    "publish_date",
    "related_codes",
];
const FORMAT_KEYS: &[&str] = &["category", "type"];
const ITEM_KEYS: &[&str] = &["name", "data_type", "length", "share_type", "open_type"];

/// Where a problem at `path` comes in a report: in the order of the entry's fields (unknown keys
/// last), a list's elements in their order.
pub(super) fn position(path: &str) -> (usize, usize) {
    let end = path.find(['.', '[']).unwrap_or(path.len());
    let field = ENTRY_KEYS
        .iter()
        .position(|k| *k == &path[..end])
        .unwrap_or(ENTRY_KEYS.len());
    let index = path[end..]
        .strip_prefix('[')
        .and_then(|rest| rest.split(']').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    (field, index)
}

/// How the TOML deserializer hands a bare date (`publish_date = 2026-02-28`) to serde.
const TOML_DATETIME: &str = "$__toml_private_datetime";

impl<'de> Deserialize<'de> for RawEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let Value::Map(fields) = Value::deserialize(d)? else {
            return Err(de::Error::custom(
                "a catalogue entry is a table (TOML) or an object (JSON) of fields",
            ));
        };
        let mut problems = ValidationErrors::default();
        let mut t = Fields::new(String::new(), fields, ENTRY_KEYS, "an entry");
        let mut raw = RawEntry {
            classification: t.text("classification", &mut problems),
            title: t.text("title", &mut problems),
            code: t.text("code", &mut problems),
            provider_name: t.text("provider_name", &mut problems),
            provider_code: t.text("provider_code", &mut problems),
            summary: t.text("abstract", &mut problems),
            format: t.table("format", FORMAT_KEYS, "a format", &mut problems, |t, p| {
                RawFormat {
                    category: t.text("category", p),
                    kind: t.text("type", p),
                }
            }),
            items: t.tables(
                "items",
                ITEM_KEYS,
                "an item (信息项)",
                &mut problems,
                |t, p| RawItem {
                    name: t.text("name", p),
                    data_type: t.text("data_type", p),
                    length: t.whole("length", p),
                    share_type: t.text("share_type", p),
                    open_type: t.text("open_type", p),
                },
            ),
            share_type: t.text("share_type", &mut problems),
            share_condition: t.text("share_condition", &mut problems),
            share_mode: t.text("share_mode", &mut problems),
            open_type: t.text("open_type", &mut problems),
            open_condition: t.text("open_condition", &mut problems),
            update_cycle: t.text("update_cycle", &mut problems),
            publish_date: t.text("publish_date", &mut problems),
            related_codes: t.texts("related_codes", &mut problems),
            ..RawEntry::default()
        };
        t.finish(&mut problems);
        raw.problems = problems;
        Ok(raw)
    }
}

/// The fields of one table/object not taken out yet.
struct Fields {
    /// Its path (`""`, `format`, `items[2]`).
    path: String,
    fields: Vec<(Value, Value)>,
    known: &'static [&'static str],
    /// What it is, for the unknown-key message.
    what: &'static str,
}

impl Fields {
    fn new(
        path: String,
        fields: Vec<(Value, Value)>,
        known: &'static [&'static str],
        what: &'static str,
    ) -> Self {
        Self {
            path,
            fields,
            known,
            what,
        }
    }

    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Takes `key` out; `null` counts as absent. A second occurrence is a problem.
    fn take(&mut self, key: &str, problems: &mut ValidationErrors) -> Option<Value> {
        let is_key = |k: &Value| matches!(k, Value::Text(t) if t == key);
        let first = self.fields.iter().position(|(k, _)| is_key(k))?;
        let (_, v) = self.fields.remove(first);
        if self.fields.iter().any(|(k, _)| is_key(k)) {
            self.fields.retain(|(k, _)| !is_key(k));
            problems.push(self.path(key), "given more than once; give it once");
        }
        (!v.is_null()).then_some(v)
    }

    fn text(&mut self, key: &str, problems: &mut ValidationErrors) -> Option<String> {
        let v = self.take(key, problems)?;
        text(v)
            .map_err(|v| problems.push(self.path(key), expected("text", &v)))
            .ok()
    }

    /// A whole number that fits in `u32`.
    fn whole(&mut self, key: &str, problems: &mut ValidationErrors) -> Option<u32> {
        let v = self.take(key, problems)?;
        let n = match &v {
            Value::Integer(i) => u32::try_from(i128::from(*i)).ok(),
            _ => None,
        };
        if n.is_none() {
            problems.push(
                self.path(key),
                expected(&format!("a whole number from 1 to {}", u32::MAX), &v),
            );
        }
        n
    }

    /// A list of texts; a malformed element is reported and kept as `""` so positions hold.
    fn texts(&mut self, key: &str, problems: &mut ValidationErrors) -> Vec<String> {
        let path = self.path(key);
        self.list(key, "a list of text", problems)
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                text(v).unwrap_or_else(|v| {
                    problems.push(format!("{path}[{i}]"), expected("text", &v));
                    String::new()
                })
            })
            .collect()
    }

    /// A nested table read by `read`.
    fn table<T>(
        &mut self,
        key: &str,
        known: &'static [&'static str],
        what: &'static str,
        problems: &mut ValidationErrors,
        read: impl FnOnce(&mut Fields, &mut ValidationErrors) -> T,
    ) -> Option<T> {
        let path = self.path(key);
        match self.take(key, problems)? {
            Value::Map(fields) => Some(read_table(path, fields, known, what, problems, read)),
            v => {
                problems.push(path, expected(&format!("{what}: a table of fields"), &v));
                None
            }
        }
    }

    /// A list of tables; a malformed element is reported and kept as `T::default()` so that
    /// positions hold.
    fn tables<T: Default>(
        &mut self,
        key: &str,
        known: &'static [&'static str],
        what: &'static str,
        problems: &mut ValidationErrors,
        mut read: impl FnMut(&mut Fields, &mut ValidationErrors) -> T,
    ) -> Vec<T> {
        let path = self.path(key);
        self.list(key, "a list of tables", problems)
            .into_iter()
            .enumerate()
            .map(|(i, v)| {
                let path = format!("{path}[{i}]");
                match v {
                    Value::Map(fields) => {
                        read_table(path, fields, known, what, problems, &mut read)
                    }
                    v => {
                        problems.push(path, expected(&format!("{what}: a table of fields"), &v));
                        T::default()
                    }
                }
            })
            .collect()
    }

    fn list(&mut self, key: &str, what: &str, problems: &mut ValidationErrors) -> Vec<Value> {
        match self.take(key, problems) {
            None => Vec::new(),
            Some(Value::Array(a)) => a,
            Some(v) => {
                problems.push(self.path(key), expected(what, &v));
                Vec::new()
            }
        }
    }

    /// Reports every key not taken out.
    fn finish(mut self, problems: &mut ValidationErrors) {
        for (k, _) in std::mem::take(&mut self.fields) {
            let key = match k {
                Value::Text(t) => t,
                other => describe(&other),
            };
            problems.push(
                self.path(&key),
                format!(
                    "unknown field; the fields of {} are {}",
                    self.what,
                    self.known.join(", ")
                ),
            );
        }
    }
}

fn read_table<T>(
    path: String,
    fields: Vec<(Value, Value)>,
    known: &'static [&'static str],
    what: &'static str,
    problems: &mut ValidationErrors,
    read: impl FnOnce(&mut Fields, &mut ValidationErrors) -> T,
) -> T {
    let mut t = Fields::new(path, fields, known, what);
    let out = read(&mut t, problems);
    t.finish(problems);
    out
}

/// The text of a value (a TOML bare date counts as text); `Err(v)` when it is not text.
fn text(v: Value) -> Result<String, Value> {
    match v {
        Value::Text(s) => Ok(s),
        Value::Map(m) => match <[(Value, Value); 1]>::try_from(m) {
            Ok([(Value::Text(k), Value::Text(s))]) if k == TOML_DATETIME => Ok(s),
            Ok([kv]) => Err(Value::Map(vec![kv])),
            Err(m) => Err(Value::Map(m)),
        },
        v => Err(v),
    }
}

fn expected(what: &str, found: &Value) -> String {
    format!("expected {what}, found {}", describe(found))
}

/// A value as a person would name it.
fn describe(v: &Value) -> String {
    match v {
        Value::Integer(i) => format!("the number {}", i128::from(*i)),
        Value::Float(f) => format!("the number {f}"),
        Value::Text(s) => format!("the text {s:?}"),
        Value::Bool(b) => format!("{b}"),
        Value::Null => "nothing (null)".to_owned(),
        Value::Array(_) => "a list".to_owned(),
        Value::Map(_) => "a table".to_owned(),
        Value::Bytes(_) | Value::Tag(..) => "binary data".to_owned(),
        _ => "an unsupported value".to_owned(),
    }
}
