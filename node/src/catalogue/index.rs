//! The code index behind look-ups by resource code, kept in the `search` column family, and
//! the plain matching used until the ranked search index ([`super::search`]) is built.
//!
//! Each live record has one posting, `code ‖ 0x00 ‖ record key` (the code lower-cased), written
//! in the same batch as the record, so the index and the view always agree. Full-text search is
//! the ranked index's job; it is built behind the view, so ingesting an entry costs one posting
//! rather than one per word (a catalogue sync from peers spent a third of its time on those).
//! Until that index is built (the first seconds after a start), [`matches`] answers a query by
//! reading every record: each of the query's words must be a word of the record's text, as in
//! the ranked index.
//!
//! A store whose `search` family still holds the word postings of earlier versions is rewritten
//! at start ([`upgrade`]).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use huitong_protocol::Entry;
use jieba_rs::Jieba;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::store::{Store, StoreError, CF_CATALOGUE, CF_META, CF_SEARCH};

/// The node's one segmenter (its dictionary is loaded once).
pub(super) fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

/// Loads the segmentation dictionary now rather than on the first search or indexed record (it
/// takes a noticeable fraction of a second).
pub(crate) fn warm_up() {
    let _ = jieba();
}

fn posting(token: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(token.len() + 1 + key.len());
    k.extend_from_slice(token.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

fn code_posting(e: &Entry, key: &[u8]) -> Vec<u8> {
    posting(&e.code.as_str().to_lowercase(), key)
}

pub(super) fn add(store: &Store, batch: &mut WriteBatch, key: &[u8], e: &Entry) {
    batch.put_cf(store.cf(CF_SEARCH), code_posting(e, key), []);
}

pub(super) fn remove(store: &Store, batch: &mut WriteBatch, key: &[u8], e: &Entry) {
    batch.delete_cf(store.cf(CF_SEARCH), code_posting(e, key));
}

pub(super) fn postings(store: &Store, token: &str) -> Result<BTreeSet<Vec<u8>>, StoreError> {
    let mut prefix = token.as_bytes().to_vec();
    prefix.push(0);
    let mut out = BTreeSet::new();
    let iter = store.db().iterator_cf(
        store.cf(CF_SEARCH),
        IteratorMode::From(&prefix, Direction::Forward),
    );
    for kv in iter {
        let (k, _) = kv?;
        if !k.starts_with(&prefix) {
            break;
        }
        out.insert(k[prefix.len()..].to_vec());
    }
    Ok(out)
}

/// The search tokens of a text: jieba's search-mode words (long words and the shorter words in
/// them), lower-cased, punctuation dropped. The ranked index cuts documents and queries with
/// them, and [`matches`] too, so a query finds the same entries before the index is built as
/// after.
pub(super) fn words(text: &str) -> Vec<String> {
    jieba()
        .cut_for_search(text, true)
        .into_iter()
        .map(|t| t.word.trim().to_lowercase())
        .filter(|t| !t.is_empty() && t.chars().any(char::is_alphanumeric))
        .collect()
}

/// The distinct words of a query, the first [`MAX_QUERY_WORDS`] of them.
pub(super) fn query_words(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for w in words(query) {
        if out.len() == MAX_QUERY_WORDS {
            break;
        }
        out.insert(w);
    }
    out
}

/// The most words of a query that count (the first ones): each costs a term look-up in the
/// ranked index or a scan of every record here, and no real query needs more.
pub(super) const MAX_QUERY_WORDS: usize = 32;

/// Whether every one of `words` is a word ([`words`]) of the entry's title, abstract,
/// provider, 信息项 names, code or provider code: the ranked index's rule, unranked. (A
/// substring test would find 「甲4」 in an entry whose provider code holds a 4.)
pub(super) fn matches(e: &Entry, words: &BTreeSet<String>) -> bool {
    let fields = [
        e.title.as_str(),
        e.summary.as_str(),
        e.provider_name.as_str(),
        e.code.as_str(),
        e.provider_code.as_str(),
    ];
    let fields: Vec<(&str, String)> = fields
        .into_iter()
        .chain(e.items.iter().map(|i| i.name.as_str()))
        .map(|f| (f, f.to_lowercase()))
        .collect();
    // A word of a text occurs in it (lower-cased): a cheap test that rules out most entries
    // before any is segmented; then only the fields that hold a word still missing are
    // segmented, until every word is found.
    let mut missing: Vec<&String> = words.iter().collect();
    if !missing
        .iter()
        .all(|w| fields.iter().any(|(_, low)| low.contains(w.as_str())))
    {
        return false;
    }
    for (field, low) in &fields {
        if missing.is_empty() {
            break;
        }
        if !missing.iter().any(|w| low.contains(w.as_str())) {
            continue;
        }
        let own: BTreeSet<String> = self::words(field).into_iter().collect();
        missing.retain(|w| !own.contains(*w));
    }
    missing.is_empty()
}

/// Rewrites a `search` family that holds the word postings of earlier versions (a posting per
/// word of every record) as the code index: once, at start, in one batch; a store already
/// rewritten (marked in `meta`) is left alone. Returns how many records were indexed.
pub(super) fn upgrade(store: &Store) -> Result<Option<u64>, StoreError> {
    if store.db().get_cf(store.cf(CF_META), LAYOUT_KEY)?.as_deref() == Some(LAYOUT) {
        return Ok(None);
    }
    let mut batch = WriteBatch::default();
    store.clear(&mut batch, CF_SEARCH)?;
    let mut n = 0;
    for kv in store
        .db()
        .iterator_cf(store.cf(CF_CATALOGUE), IteratorMode::Start)
    {
        let (k, v) = kv?;
        let r = super::decode(&v)?;
        if r.withdrawn.is_none() {
            add(store, &mut batch, &k, &r.entry);
            n += 1;
        }
    }
    batch.put_cf(store.cf(CF_META), LAYOUT_KEY, LAYOUT);
    store.db().write(batch)?;
    Ok(Some(n))
}

/// Marks in `meta` that the `search` family holds the code index (not word postings).
const LAYOUT_KEY: &[u8] = b"catalogue_index_layout";
const LAYOUT: &[u8] = b"codes/1";

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(title: &str, code: &str) -> Entry {
        serde_json::from_value(serde_json::json!({
            "classification": "101001", "title": title, "code": code,
            "provider_name": "海门区公安局", "provider_code": "11320684014170358F",
            "abstract": "全区户籍人口的基本信息", "format": {"category": "database", "type": "mysql"},
            "items": [{"name": "公民身份号码", "data_type": "C", "length": 18,
                       "share_type": null, "open_type": null}],
            "share_type": "conditional", "share_condition": "用于政务服务",
            "share_mode": "table", "open_type": "closed", "open_condition": null,
            "update_cycle": "daily", "publish_date": "2026-01-01", "related_codes": []
        }))
        .unwrap()
    }

    #[test]
    fn segments_chinese() {
        let t = query_words("人口基本信息查询");
        assert!(t.contains("人口"), "{t:?}");
        assert!(t.contains("信息"), "{t:?}");
    }

    #[test]
    fn every_query_word_must_occur_somewhere_in_the_entry() {
        let e = entry("人口基本信息", "101001/000001");
        for hit in [
            "人口",
            "户籍 人口",
            "身份号码",
            "公安局",
            "101001/000001",
            "11320684014170358f",
        ] {
            assert!(matches(&e, &query_words(hit)), "{hit}");
        }
        for miss in ["企业", "人口 企业", "101001/000002"] {
            assert!(!matches(&e, &query_words(miss)), "{miss}");
        }
        // A word, not a substring: 「信息4」 is not found through the 4 in the provider code.
        assert!(matches(&e, &query_words("人口基本信息")));
        assert!(!matches(&e, &query_words("人口基本信息4")));
    }

    #[test]
    fn word_postings_of_earlier_versions_become_the_code_index_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (live, gone) = (
            entry("人口基本信息", "101001/000001"),
            entry("法人", "101001/000002"),
        );
        let mut batch = WriteBatch::default();
        let cf = store.cf(CF_CATALOGUE);
        for (e, withdrawn) in [(&live, None), (&gone, Some("停用".to_string()))] {
            let k = super::super::key(e.provider_code.as_str(), e.code.as_str());
            let r = super::super::Record {
                entry: e.clone(),
                feed: huitong_protocol::SecretKey::from_bytes([1; 32]).public(),
                seq: 1,
                updated_ms: 1,
                withdrawn,
                dataset: None,
                by: None,
            };
            batch.put_cf(cf, &k, huitong_protocol::codec::encode(&r));
            // What earlier versions wrote: a posting per word.
            batch.put_cf(store.cf(CF_SEARCH), posting("人口", &k), []);
        }
        store.db().write(batch).unwrap();
        assert_eq!(upgrade(&store).unwrap(), Some(1));
        let k = super::super::key(live.provider_code.as_str(), live.code.as_str());
        assert_eq!(
            postings(&store, "101001/000001").unwrap(),
            BTreeSet::from([k])
        );
        assert!(
            postings(&store, "人口").unwrap().is_empty(),
            "word postings dropped"
        );
        assert!(
            postings(&store, "101001/000002").unwrap().is_empty(),
            "withdrawn"
        );
        assert_eq!(upgrade(&store).unwrap(), None, "done once");
    }
}
