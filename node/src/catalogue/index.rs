//! The inverted index behind catalogue search, kept in the `search` column family.
//!
//! Text is segmented with jieba (search mode, which also emits the shorter words inside long
//! ones), lower-cased, and stripped of punctuation. Postings are keys `token ‖ 0x00 ‖ record key`
//! written in the same batch as the record, so the index and the view always agree. A query's
//! tokens are intersected (AND).

use std::collections::BTreeSet;
use std::sync::OnceLock;

use huitong_protocol::Entry;
use jieba_rs::Jieba;
use rocksdb::{Direction, IteratorMode, WriteBatch};

use crate::store::{Store, StoreError, CF_SEARCH};

/// The node's one segmenter (its dictionary is loaded once).
pub(super) fn jieba() -> &'static Jieba {
    static JIEBA: OnceLock<Jieba> = OnceLock::new();
    JIEBA.get_or_init(Jieba::new)
}

/// Loads the segmentation dictionary now rather than on the first entry (it takes a
/// noticeable fraction of a second, which would otherwise stall the first ingest).
pub(crate) fn warm_up() {
    let _ = jieba();
}

/// The index tokens of a text.
pub(crate) fn tokens(text: &str) -> BTreeSet<String> {
    jieba()
        .cut_for_search(text, true)
        .into_iter()
        .map(|t| t.word.trim().to_lowercase())
        .filter(|t| !t.is_empty() && t.chars().any(char::is_alphanumeric))
        .collect()
}

fn entry_tokens(e: &Entry) -> BTreeSet<String> {
    let mut t = tokens(&e.title);
    t.extend(tokens(&e.summary));
    t.extend(tokens(&e.provider_name));
    for item in &e.items {
        t.extend(tokens(&item.name));
    }
    t.insert(e.code.as_str().to_lowercase());
    t.insert(e.provider_code.as_str().to_lowercase());
    t
}

fn posting(token: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(token.len() + 1 + key.len());
    k.extend_from_slice(token.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}

pub(super) fn add(store: &Store, batch: &mut WriteBatch, key: &[u8], e: &Entry) {
    for t in entry_tokens(e) {
        batch.put_cf(store.cf(CF_SEARCH), posting(&t, key), []);
    }
}

pub(super) fn remove(store: &Store, batch: &mut WriteBatch, key: &[u8], e: &Entry) {
    for t in entry_tokens(e) {
        batch.delete_cf(store.cf(CF_SEARCH), posting(&t, key));
    }
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

/// Record keys matching every token of `query`; `None` when the query has no tokens.
pub(super) fn lookup(store: &Store, query: &str) -> Result<Option<BTreeSet<Vec<u8>>>, StoreError> {
    // Query in plain (not search) mode so a long word is matched as the word the index holds.
    let words: BTreeSet<String> = jieba()
        .cut(query, true)
        .into_iter()
        .map(|t| t.word.trim().to_lowercase())
        .filter(|t| !t.is_empty() && t.chars().any(char::is_alphanumeric))
        .collect();
    if words.is_empty() {
        return Ok(None);
    }
    let mut result: Option<BTreeSet<Vec<u8>>> = None;
    for w in words {
        let p = postings(store, &w)?;
        result = Some(match result {
            None => p,
            Some(r) => r.intersection(&p).cloned().collect(),
        });
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    #[test]
    fn segments_chinese() {
        let t = super::tokens("人口基本信息查询");
        assert!(t.contains("人口"), "{t:?}");
        assert!(t.contains("信息"), "{t:?}");
    }
}
