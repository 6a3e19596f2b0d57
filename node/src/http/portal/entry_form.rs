//! The catalogue entry form: a submitted form read into the validator's [`RawEntry`] (the same
//! one the CLI and the API check), and the validator's problems put back beside the fields they
//! belong to. Form fields are named by the validator's own paths (`title`, `format.category`,
//! `items[2].length`), so a problem finds its field by name; 信息项 rows left blank are skipped,
//! and a problem of the n-th item given is shown on the row it was typed in.

use std::collections::BTreeMap;

use huitong_protocol::catalogue::{
    DataType, Entry, FormatCategory, OpenType, RawEntry, RawFormat, RawItem, ShareMode, ShareType,
    UpdateCycle,
};
use huitong_protocol::FieldError;

use super::form::Form;
use super::page::Lang;

/// Blank 信息项 rows a form offers beyond those filled in (and adds on "more rows").
pub(crate) const BLANK_ROWS: usize = 3;
/// Most 信息项 rows a form holds: the validator's most items (more are refused, not cut off).
const MAX_ROWS: usize = huitong_protocol::catalogue::MAX_ITEMS;

/// One 信息项 row as typed.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct ItemInput {
    pub(crate) name: String,
    pub(crate) data_type: String,
    pub(crate) length: String,
    pub(crate) share_type: String,
    pub(crate) open_type: String,
}

impl ItemInput {
    fn is_blank(&self) -> bool {
        [
            &self.name,
            &self.data_type,
            &self.length,
            &self.share_type,
            &self.open_type,
        ]
        .iter()
        .all(|v| v.is_empty())
    }
}

/// The entry form as typed: every field by its path, and the 信息项 rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct EntryInput {
    pub(crate) fields: BTreeMap<&'static str, String>,
    pub(crate) items: Vec<ItemInput>,
    /// The feed position of the entry as it was opened for editing (a save over a later one
    /// is refused).
    pub(crate) seen: Option<u64>,
    /// Rows the form said it has beyond [`MAX_ROWS`] (refused, never cut off unseen).
    pub(crate) too_many: bool,
}

/// The entry's own fields, by the validator's paths, in the order the form shows them.
pub(crate) const FIELDS: [&str; 16] = [
    "classification",
    "code",
    "title",
    "provider_name",
    "provider_code",
    "abstract",
    "format.category",
    "format.type",
    "share_type",
    "share_condition",
    "share_mode",
    "open_type",
    "open_condition",
    "update_cycle",
    "publish_date",
    "related_codes",
];

impl EntryInput {
    /// What a submitted form holds (at most [`MAX_ROWS`] 信息项 rows, as its `rows` says).
    pub(crate) fn from_form(form: &Form) -> Self {
        let fields = FIELDS
            .iter()
            .map(|k| (*k, form.get(k).to_string()))
            .collect();
        let given = form.get("rows").parse::<usize>().unwrap_or(0);
        let rows = given.min(MAX_ROWS);
        let items = (0..rows)
            .map(|i| {
                let cell = |f: &str| form.get(&format!("items[{i}].{f}")).to_string();
                ItemInput {
                    name: cell("name"),
                    data_type: cell("data_type"),
                    length: cell("length"),
                    share_type: cell("share_type"),
                    open_type: cell("open_type"),
                }
            })
            .collect();
        Self {
            fields,
            items,
            seen: form.get("seen").parse().ok(),
            too_many: given > MAX_ROWS,
        }
    }

    /// The form filled with a stored entry.
    pub(crate) fn from_entry(e: &Entry) -> Self {
        let raw = RawEntry::from(e);
        let mut fields = BTreeMap::new();
        let text = |o: &Option<String>| o.clone().unwrap_or_default();
        let format = raw.format.clone().unwrap_or_default();
        for (k, v) in [
            ("classification", text(&raw.classification)),
            ("code", text(&raw.code)),
            ("title", text(&raw.title)),
            ("provider_name", text(&raw.provider_name)),
            ("provider_code", text(&raw.provider_code)),
            ("abstract", text(&raw.summary)),
            ("format.category", text(&format.category)),
            ("format.type", text(&format.kind)),
            ("share_type", text(&raw.share_type)),
            ("share_condition", text(&raw.share_condition)),
            ("share_mode", text(&raw.share_mode)),
            ("open_type", text(&raw.open_type)),
            ("open_condition", text(&raw.open_condition)),
            ("update_cycle", text(&raw.update_cycle)),
            ("publish_date", text(&raw.publish_date)),
            ("related_codes", raw.related_codes.join(", ")),
        ] {
            fields.insert(k, v);
        }
        let items = raw
            .items
            .iter()
            .map(|i| ItemInput {
                name: text(&i.name),
                data_type: text(&i.data_type),
                length: i.length.map(|l| l.to_string()).unwrap_or_default(),
                share_type: text(&i.share_type),
                open_type: text(&i.open_type),
            })
            .collect();
        Self {
            fields,
            items,
            seen: None,
            too_many: false,
        }
    }

    /// The value typed for `key` ("" when none).
    pub(crate) fn get(&self, key: &str) -> &str {
        self.fields.get(key).map_or("", String::as_str)
    }

    /// The form's 信息项 rows that are not blank, with the row each came from.
    fn filled(&self) -> Vec<(usize, &ItemInput)> {
        self.items
            .iter()
            .enumerate()
            .filter(|(_, i)| !i.is_blank())
            .collect()
    }

    /// The entry for the validator, and the problems the form itself finds (a length that is
    /// not a number): the validator never sees a value the form could not read.
    pub(crate) fn to_raw(&self) -> (RawEntry, Vec<FieldError>) {
        let opt = |k: &str| Some(self.get(k).to_string()).filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        if self.too_many {
            problems.push(FieldError {
                path: "items".into(),
                message: format!(
                    "more than {MAX_ROWS} 信息项 rows; an entry lists at most {MAX_ROWS}"
                ),
            });
        }
        // Problems are numbered like the validator's, by the item's place among those given.
        let items = self
            .filled()
            .into_iter()
            .enumerate()
            .map(|(n, (_, i))| {
                let length = if i.length.is_empty() {
                    None
                } else {
                    match i.length.parse::<u32>() {
                        Ok(l) => Some(l),
                        Err(_) => {
                            problems.push(FieldError {
                                path: format!("items[{n}].length"),
                                message: format!("{:?} is not a whole number", i.length),
                            });
                            None
                        }
                    }
                };
                let o = |v: &str| Some(v.to_string()).filter(|v| !v.is_empty());
                RawItem {
                    name: o(&i.name),
                    data_type: o(&i.data_type),
                    length,
                    share_type: o(&i.share_type),
                    open_type: o(&i.open_type),
                }
            })
            .collect();
        let mut raw = RawEntry::default();
        raw.classification = opt("classification");
        raw.title = opt("title");
        raw.code = opt("code");
        raw.provider_name = opt("provider_name");
        raw.provider_code = opt("provider_code");
        raw.summary = opt("abstract");
        raw.format = Some(RawFormat {
            category: opt("format.category"),
            kind: opt("format.type"),
        });
        raw.items = items;
        raw.share_type = opt("share_type");
        raw.share_condition = opt("share_condition");
        raw.share_mode = opt("share_mode");
        raw.open_type = opt("open_type");
        raw.open_condition = opt("open_condition");
        raw.update_cycle = opt("update_cycle");
        raw.publish_date = opt("publish_date");
        raw.related_codes = self
            .get("related_codes")
            .split([',', '，', ' ', '、', '\n'])
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .collect();
        (raw, problems)
    }

    /// The validator's problems by the form field they belong to: `items[n]` of the validator
    /// is the n-th filled row, `related_codes[i]` the codes' one field, `format` its category.
    pub(crate) fn place(&self, errors: &[FieldError]) -> BTreeMap<String, Vec<String>> {
        let rows: Vec<usize> = self.filled().into_iter().map(|(row, _)| row).collect();
        let mut placed: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for e in errors {
            placed
                .entry(field_of(&e.path, &rows))
                .or_default()
                .push(e.message.clone());
        }
        placed
    }
}

/// The form field a validator path belongs to (`rows`: the form row of each item given).
fn field_of(path: &str, rows: &[usize]) -> String {
    if let Some(rest) = path.strip_prefix("items[") {
        if let Some((n, tail)) = rest.split_once(']') {
            if let Ok(n) = n.parse::<usize>() {
                let row = rows.get(n).copied().unwrap_or(n);
                return format!("items[{row}]{tail}");
            }
        }
    }
    if path.starts_with("related_codes") {
        return "related_codes".into();
    }
    match path {
        "format" => "format.category".into(),
        "" => "entry".into(),
        p if FIELDS.contains(&p) || p == "items" => p.into(),
        // An unknown key or a rule over several fields: shown at the top.
        _ => "entry".into(),
    }
}

/// A choice of a select list.
#[derive(Clone, Debug)]
pub(crate) struct Choice {
    pub(crate) value: &'static str,
    pub(crate) label: String,
    pub(crate) selected: bool,
}

/// The choices for `field` (an enumeration of the standard), with `value` selected; `None` for
/// a free-text field. `blank` offers an empty first choice (an item's "as the entry").
pub(crate) fn choices(field: &str, value: &str, lang: Lang, blank: bool) -> Option<Vec<Choice>> {
    let all: Vec<(&'static str, &'static str)> = match field {
        "format.category" => FormatCategory::ALL
            .iter()
            .map(|v| (v.key(), v.label()))
            .collect(),
        "share_type" => ShareType::ALL
            .iter()
            .map(|v| (v.key(), v.label()))
            .collect(),
        "share_mode" => ShareMode::ALL
            .iter()
            .map(|v| (v.key(), v.label()))
            .collect(),
        "open_type" => OpenType::ALL.iter().map(|v| (v.key(), v.label())).collect(),
        "update_cycle" => UpdateCycle::ALL
            .iter()
            .map(|v| (v.key(), v.label()))
            .collect(),
        "data_type" => DataType::ALL.iter().map(|v| (v.key(), v.label())).collect(),
        _ => return None,
    };
    let first = blank.then(|| Choice {
        value: "",
        label: lang.t("（同资源）", "(as the entry)").to_string(),
        selected: value.is_empty(),
    });
    let any_selected = all.iter().any(|(k, l)| *k == value || *l == value);
    let mut out: Vec<Choice> = first.into_iter().collect();
    if !blank && !any_selected {
        out.push(Choice {
            value: "",
            label: lang.t("— 请选择 —", "— choose —").to_string(),
            selected: true,
        });
    }
    out.extend(all.into_iter().map(|(key, label)| Choice {
        value: key,
        label: if lang.en() {
            key.to_string()
        } else {
            format!("{label}（{key}）")
        },
        selected: key == value || label == value,
    }));
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Form {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        Form::parse(body.as_bytes())
    }

    #[test]
    fn problems_land_on_the_row_they_were_typed_in() {
        let f = form(&[
            ("rows", "4"),
            ("items[0].name", "姓名"),
            ("items[0].data_type", "C"),
            ("items[0].length", "20"),
            // Row 1 left blank: the second item given is row 2.
            ("items[2].name", "年龄"),
            ("items[2].data_type", "N"),
            ("items[2].length", "abc"),
            ("items[3].name", ""),
            ("items[3].data_type", "X"),
        ]);
        let input = EntryInput::from_form(&f);
        let (raw, problems) = input.to_raw();
        assert_eq!(raw.items.len(), 3);
        assert_eq!(problems.len(), 1);
        // The second item given, typed in row 2.
        assert_eq!(problems[0].path, "items[1].length");
        let mut errors = raw.validate().expect_err("an incomplete entry").0;
        errors.extend(problems);
        let placed = input.place(&errors);
        assert!(placed.contains_key("items[2].length"), "{placed:?}");
        // The third item given (validator's items[2]) was typed in row 3.
        assert!(placed.contains_key("items[3].name"), "{placed:?}");
        assert!(placed.contains_key("items[3].data_type"), "{placed:?}");
        assert!(placed.contains_key("title"), "{placed:?}");
        assert!(
            !placed.keys().any(|k| k.starts_with("items[1]")),
            "{placed:?}"
        );
    }

    #[test]
    fn a_stored_entry_fills_the_form_and_validates_again() {
        let mut raw = RawEntry::default();
        raw.classification = Some("301001".into());
        raw.title = Some("测试".into());
        raw.code = Some("301001/000001".into());
        raw.provider_name = Some("区民政局".into());
        raw.provider_code = Some("11320684014170358F".into());
        raw.summary = Some("摘要".into());
        raw.format = Some(RawFormat {
            category: Some("数据库".into()),
            kind: Some("mysql".into()),
        });
        raw.items = vec![RawItem {
            name: Some("姓名".into()),
            data_type: Some("C".into()),
            length: Some(50),
            ..RawItem::default()
        }];
        raw.share_type = Some("无条件共享".into());
        raw.share_mode = Some("库表".into());
        raw.open_type = Some("不予开放".into());
        raw.update_cycle = Some("每日".into());
        raw.publish_date = Some("2026-01-02".into());
        raw.related_codes = vec!["301001/000002".into()];
        let entry = match raw.validate() {
            Ok(e) => e,
            Err(e) => panic!("{e:?}"),
        };
        let input = EntryInput::from_entry(&entry);
        assert_eq!(input.get("related_codes"), "301001/000002");
        let (again, problems) = input.to_raw();
        assert!(problems.is_empty());
        assert_eq!(again.validate().ok(), Some(entry));
    }

    #[test]
    fn choices_mark_the_value_and_offer_a_blank_where_asked() {
        let c = choices("share_type", "有条件共享", Lang::Zh, false).unwrap_or_default();
        assert_eq!(c.iter().filter(|c| c.selected).count(), 1);
        assert!(c.iter().any(|c| c.selected && c.value == "conditional"));
        let c = choices("share_type", "", Lang::En, true).unwrap_or_default();
        assert!(c[0].selected && c[0].value.is_empty());
        assert!(choices("title", "", Lang::Zh, false).is_none());
    }
}
