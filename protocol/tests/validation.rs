//! Catalogue entry validation, field by field: every problem is reported at once with its path.

use huitong_protocol::catalogue::{RawEntry, ShareType};

fn good() -> serde_json::Value {
    serde_json::json!({
        "classification": "101001",
        "title": "人口基本信息",
        "code": "101001/000001",
        "provider_name": "海门区公安局",
        "provider_code": "91350100M000100Y43",
        "abstract": "全区人口基本信息。",
        "format": {"category": "数据库", "type": "mysql"},
        "items": [
            {"name": "姓名", "data_type": "C", "length": 50},
            {"name": "出生日期", "data_type": "D"},
        ],
        "share_type": "有条件共享",
        "share_condition": "用于政务服务",
        "share_mode": "库表",
        "open_type": "不予开放",
        "update_cycle": "每日",
        "publish_date": "2026-02-28",
        "related_codes": ["101001/000002"],
    })
}

fn check(v: serde_json::Value) -> Vec<String> {
    let raw: RawEntry = serde_json::from_value(v).expect("shape");
    match raw.validate() {
        Ok(_) => Vec::new(),
        Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
    }
}

fn with(f: impl FnOnce(&mut serde_json::Value)) -> Vec<String> {
    let mut v = good();
    f(&mut v);
    check(v)
}

#[test]
fn a_good_entry_passes_and_keeps_its_values() {
    let raw: RawEntry = serde_json::from_value(good()).unwrap();
    let e = raw.validate().unwrap();
    assert_eq!(e.share_type, ShareType::Conditional);
    assert_eq!(e.items.len(), 2);
    assert_eq!(e.code.as_str(), "101001/000001");
    // English keys are accepted as well as Chinese labels.
    assert!(with(|v| v["share_type"] = "conditional".into()).is_empty());
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let errs = with(|v| {
        v["title"] = "".into();
        v["items"][1]["data_type"] = "X".into();
        v["provider_code"] = "91350100M000100Y44".into();
        v["update_cycle"] = "每两天".into();
    });
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(errs.contains(&"title: required field is missing or empty".to_owned()));
    assert!(errs.contains(
        &"items[1].data_type: unknown type \"X\"; expected one of C N Y D T L M G B I F".to_owned()
    ));
    assert!(
        errs.contains(&"provider_code: check character is '4' but GB 32100 gives '3'".to_owned())
    );
    assert!(errs
        .iter()
        .any(|e| e.starts_with("update_cycle: unknown update cycle \"每两天\"")));
}

#[test]
fn each_mandatory_field_is_named_when_missing() {
    for field in [
        "classification",
        "title",
        "code",
        "provider_name",
        "provider_code",
        "abstract",
        "format",
        "share_type",
        "share_mode",
        "open_type",
        "update_cycle",
        "publish_date",
    ] {
        let errs = with(|v| {
            v.as_object_mut().unwrap().remove(field);
        });
        assert!(
            errs.iter().any(|e| e.starts_with(&format!("{field}:"))),
            "{field}: {errs:?}"
        );
    }
}

#[test]
fn uscc_check_characters() {
    assert!(with(|v| v["provider_code"] = "91350100M000100Y4".into())[0].contains("18 characters"));
    assert!(
        with(|v| v["provider_code"] = "91350100M0001O0Y43".into())[0]
            .contains("'O' at position 14")
    );
}

#[test]
fn share_rules() {
    let e = with(|v| v["share_condition"] = serde_json::Value::Null);
    assert_eq!(e, vec!["share_condition: 有条件共享 needs a share_condition (the conditions and scope of sharing)"]);
    let e = with(|v| {
        v["share_type"] = "不予共享".into();
        v["share_condition"] = serde_json::Value::Null;
    });
    assert!(e[0].contains("legal basis"), "{e:?}");
    let e = with(|v| {
        v["share_type"] = "不予共享".into();
        v["open_type"] = "无条件开放".into();
    });
    // The entry's problem, and each item's: they inherit 不予共享 and 无条件开放.
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(
        e[2].starts_with("open_type: a resource that is 不予共享 is never open"),
        "{e:?}"
    );
    let e = with(|v| {
        v["open_type"] = "有条件开放".into();
    });
    assert!(e[0].starts_with("open_condition:"), "{e:?}");
}

#[test]
fn item_level_types_cannot_widen_the_entry() {
    let e = with(|v| v["items"][0]["share_type"] = "无条件共享".into());
    assert!(
        e[0].starts_with("items[0].share_type: an item cannot be shared more widely"),
        "{e:?}"
    );
    let e = with(|v| {
        v["items"][0]["share_type"] = "不予共享".into();
        v["items"][0]["open_type"] = "不予开放".into();
    });
    assert!(e.is_empty(), "{e:?}");
    let e = with(|v| v["items"][0]["length"] = serde_json::Value::Null);
    assert_eq!(e, vec!["items[0].length: 字符 (C) items need a length"]);
    let e = with(|v| v["items"][1]["name"] = "姓名".into());
    assert!(e[0].starts_with("items[1].name: duplicate"), "{e:?}");
    let e = with(|v| v["items"] = serde_json::json!([]));
    assert!(e[0].starts_with("items: structured resources"), "{e:?}");
}

#[test]
fn codes_dates_and_lengths() {
    let e = with(|v| v["code"] = "102001/000001".into());
    assert!(
        e[0].starts_with(
            "code: code 102001/000001 does not start with the entry's classification 101001"
        ),
        "{e:?}"
    );
    let e = with(|v| v["code"] = "101001-1".into());
    assert!(e[0].starts_with("code: resource code"), "{e:?}");
    let e = with(|v| v["classification"] = "901001".into());
    assert!(
        e.iter()
            .any(|x| x.starts_with("classification: 类 must be 1")),
        "{e:?}"
    );
    let e = with(|v| v["publish_date"] = "2026-02-30".into());
    assert_eq!(
        e,
        vec!["publish_date: \"2026-02-30\" is not a date YYYY-MM-DD"]
    );
    let e = with(|v| v["title"] = "名".repeat(129).into());
    assert_eq!(e, vec!["title: 129 characters; at most 128 allowed"]);
    let e = with(|v| v["related_codes"] = serde_json::json!(["101001/000001"]));
    assert!(
        e[0].starts_with("related_codes[0]: an entry cannot be related to itself"),
        "{e:?}"
    );
    let e = with(|v| v["format"]["category"] = "磁带".into());
    assert!(
        e[0].starts_with("format.category: unknown format category \"磁带\""),
        "{e:?}"
    );
}

/// The problems of an entry as a sorted list of `path: message` lines.
fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

#[test]
fn cross_field_rules_run_although_other_fields_are_bad() {
    // A bad USCC and a bad item type used to hide the missing share condition.
    let errs = with(|v| {
        v["provider_code"] = "91350100M000100Y44".into();
        v["items"][1]["data_type"] = "X".into();
        v["share_condition"] = serde_json::Value::Null;
        v["related_codes"] = serde_json::json!(["101001/000001", "坏代码"]);
    });
    assert_eq!(
        sorted(errs),
        vec![
            "items[1].data_type: unknown type \"X\"; expected one of C N Y D T L M G B I F",
            "provider_code: check character is '4' but GB 32100 gives '3'",
            "related_codes[0]: an entry cannot be related to itself",
            "related_codes[1]: resource code \"坏代码\" must be {classification}/{6-digit sequence}, e.g. 101001/000123",
            "share_condition: 有条件共享 needs a share_condition (the conditions and scope of sharing)",
        ]
    );
}

#[test]
fn every_rule_is_checked_not_only_the_first_that_applies() {
    // 不予共享 with no legal basis and an open resource: both are wrong, both are said.
    let errs = with(|v| {
        v["share_type"] = "不予共享".into();
        v["share_condition"] = serde_json::Value::Null;
        v["open_type"] = "无条件开放".into();
        v["items"] = serde_json::json!([{"name": "姓名", "data_type": "C", "length": 50}]);
    });
    assert_eq!(
        sorted(errs),
        vec![
            "items[0].open_type: an item that is 不予共享 is never open: open_type must be closed",
            "open_type: a resource that is 不予共享 is never open: open_type must be closed (不予开放), got open",
            "share_condition: 不予共享 needs a share_condition giving the legal basis (法律法规依据)",
        ]
    );
}

#[test]
fn unknown_keys_and_wrong_types_are_reported_with_everything_else() {
    let errs = with(|v| {
        v["colour"] = "red".into();
        v["title"] = 5.into();
        v["items"][0]["length"] = "50".into();
        v["items"][1]["colour"] = "blue".into();
        v["format"]["type"] = serde_json::json!(["mysql"]);
        v["update_cycle"] = "每两天".into();
        v["open_type"] = "有条件开放".into();
    });
    assert_eq!(
        sorted(errs),
        vec![
            "colour: unknown field; the fields of an entry are classification, title, code, provider_name, provider_code, abstract, format, items, share_type, share_condition, share_mode, open_type, open_condition, update_cycle, publish_date, related_codes",
            "format.type: expected text, found a list",
            "items[0].length: expected a whole number from 1 to 4294967295, found the text \"50\"",
            "items[1].colour: unknown field; the fields of an item (信息项) are name, data_type, length, share_type, open_type",
            "open_condition: 有条件开放 needs an open_condition",
            "title: expected text, found the number 5",
            "update_cycle: unknown update cycle \"每两天\"; expected one of realtime (实时), daily (每日), weekly (每周), monthly (每月), quarterly (每季度), half_yearly (每半年), yearly (每年), irregular (不定期)",
        ]
    );
}

#[test]
fn a_malformed_item_keeps_the_positions_of_the_others() {
    let errs = with(|v| {
        v["items"] = serde_json::json!([
            "姓名",
            {"name": "出生日期", "data_type": "X"},
        ]);
        v["format"] = "mysql".into();
    });
    assert_eq!(
        sorted(errs),
        vec![
            "format: expected a format: a table of fields, found the text \"mysql\"",
            "items[0]: expected an item (信息项): a table of fields, found the text \"姓名\"",
            "items[1].data_type: unknown type \"X\"; expected one of C N Y D T L M G B I F",
        ]
    );
    let errs = with(|v| v["items"] = "姓名".into());
    assert_eq!(
        errs,
        vec!["items: expected a list of tables, found the text \"姓名\""]
    );
}

#[test]
fn only_a_document_that_is_not_a_table_fails_to_decode() {
    let e = serde_json::from_value::<RawEntry>(serde_json::json!(["101001"])).unwrap_err();
    assert!(
        e.to_string().contains("a catalogue entry is a table"),
        "{e}"
    );
    let e = serde_json::from_str::<RawEntry>(r#"{"title": "a", "title": "b"}"#).unwrap();
    assert!(e
        .validate()
        .unwrap_err()
        .0
        .iter()
        .any(|e| e.to_string() == "title: given more than once; give it once"));
}

#[test]
fn toml_entries_read_the_same_bare_dates_included() {
    let mut v = good();
    v.as_object_mut().unwrap().remove("publish_date");
    let mut text = toml::to_string(&v).unwrap();
    text.insert_str(0, "publish_date = 2026-02-28\n");
    let raw: RawEntry = toml::from_str(&text).unwrap();
    assert_eq!(raw.validate().unwrap().publish_date, "2026-02-28");
    let raw: RawEntry = toml::from_str("title = 1\ncolour = \"red\"\n").unwrap();
    let errs = raw.validate().unwrap_err();
    assert_eq!(errs.0.len(), 13, "{errs}");
    assert!(errs.paths().contains(&"colour"), "{errs}");
    assert!(errs.paths().contains(&"title"), "{errs}");
    assert_eq!(errs.summary(), "13 problems");
}

#[test]
fn problems_come_in_the_order_of_the_fields() {
    let errs = with(|v| {
        v["zz"] = 1.into();
        v["related_codes"] = serde_json::json!(["x"]);
        v["items"][1]["data_type"] = "X".into();
        v["items"][0]["length"] = (-1).into();
        v["title"] = true.into();
        v["share_condition"] = serde_json::Value::Null;
    });
    let paths: Vec<&str> = errs.iter().map(|e| e.split(':').next().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "title",
            "items[0].length",
            "items[1].data_type",
            "share_condition",
            "related_codes[0]",
            "zz"
        ]
    );
}
