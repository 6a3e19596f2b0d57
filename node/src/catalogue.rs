//! The catalogue: a materialised view of every member's feed, with a Chinese full-text index.
//!
//! [`View`] stages the view and index changes of one feed event into the same `WriteBatch`
//! as the feed entry itself, so the view never disagrees with the feeds after a crash; it also
//! decides whether this node's own publication is a new entry or an update, and refuses to
//! withdraw an entry that is not live. Queries ([`list`], [`get`], [`search`], [`pick`]) read
//! RocksDB directly; ranked search with facets and paging goes through [`search::Search`], an
//! index derived from this view (the view notes every key it changes).
//!
//! Layering: a view over [`crate::feeds`] (registered by the daemon); the lowest of the views
//! (the others read it). It names no other view.

mod index;
pub mod search;

use huitong_protocol::catalogue::{OpenType, ShareType};
use huitong_protocol::dataset::DatasetVersion;
use huitong_protocol::{codec, Actor, Entry, Event, FeedEntry, NodeId};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::feeds::{Accepted, AppendError, Applied};
use crate::state::NodeState;
use crate::store::{Store, StoreError, CF_CATALOGUE, CF_META};

/// One catalogue entry as this node sees it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Record {
    /// The entry.
    pub entry: Entry,
    /// The feed that published it.
    pub feed: NodeId,
    /// Seq of the latest event about it.
    pub seq: u64,
    /// When that event was signed (ms).
    pub updated_ms: u64,
    /// Set once withdrawn (已下架): the reason.
    pub withdrawn: Option<String>,
    /// The latest dataset version announced for it.
    #[serde(default)]
    pub dataset: Option<DatasetVersion>,
    /// The person on the provider's node who signed in and caused the latest event (published,
    /// updated or withdrew it), as that entry names them; `None` when the node acted by itself.
    #[serde(default)]
    pub by: Option<Actor>,
}

/// Search filters.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Filter {
    /// Provider USCC or a part of its name.
    pub provider: Option<String>,
    /// Classification prefix (e.g. `1` or `101`).
    pub classification: Option<String>,
    /// Share type.
    pub share_type: Option<ShareType>,
    /// Open type.
    pub open_type: Option<OpenType>,
    /// Include withdrawn entries.
    #[serde(default)]
    pub include_withdrawn: bool,
}

impl Filter {
    fn accepts(&self, r: &Record) -> bool {
        (self.include_withdrawn || r.withdrawn.is_none())
            && self.provider.as_deref().is_none_or(|p| {
                r.entry.provider_code.as_str() == p || r.entry.provider_name.contains(p)
            })
            && self
                .classification
                .as_deref()
                .is_none_or(|c| r.entry.classification.starts_with(c))
            && self.share_type.is_none_or(|s| r.entry.share_type == s)
            && self.open_type.is_none_or(|o| r.entry.open_type == o)
    }
}

fn key(provider: &str, code: &str) -> Vec<u8> {
    format!("{provider}/{code}").into_bytes()
}

fn decode(v: &[u8]) -> Result<Record, StoreError> {
    codec::decode(v, usize::MAX).map_err(|e| StoreError::Corrupt {
        cf: CF_CATALOGUE,
        detail: e.to_string(),
    })
}

/// Loads the search tokenizer's dictionary and rewrites a code index of an earlier layout
/// (call once at start, before the node ingests anything or answers a search). The dictionary
/// (~80 ms in a release build, seconds in a debug one) is loaded before the node joins its
/// peers: loaded on the index thread instead, a node could hold entries and answer searches
/// before its ranked index was built.
pub fn warm_up(store: &Store) -> Result<(), StoreError> {
    index::warm_up();
    if let Some(records) = index::upgrade(store)? {
        tracing::info!(
            records,
            "catalogue code index written (word postings of earlier versions dropped)"
        );
    }
    Ok(())
}

/// Reads one record by provider USCC and code.
pub fn get_by_provider(
    store: &Store,
    provider: &str,
    code: &str,
) -> Result<Option<Record>, StoreError> {
    store
        .db()
        .get_cf(store.cf(CF_CATALOGUE), key(provider, code))?
        .map(|v| decode(&v))
        .transpose()
}

/// Why [`pick`] found no single record.
#[derive(Debug, thiserror::Error)]
pub enum PickError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No (live) record.
    #[error("no catalogue entry {0} here; search the catalogue with `huitong catalogue search`")]
    None(String),
    /// Several providers, none chosen.
    #[error("several providers publish {code}: {choices}; choose one with --provider USCC")]
    Several {
        /// The code.
        code: String,
        /// `name (USCC)` of each.
        choices: String,
    },
}

/// The one record of `code` by `provider` (a USCC), or the only one when no provider is named;
/// `live`: withdrawn entries do not count.
pub fn pick(
    store: &Store,
    code: &str,
    provider: Option<&str>,
    live: bool,
) -> Result<Record, PickError> {
    let mut found: Vec<Record> = get(store, code)?
        .into_iter()
        .filter(|r| !live || r.withdrawn.is_none())
        .filter(|r| provider.is_none_or(|p| r.entry.provider_code.as_str() == p))
        .collect();
    match found.len() {
        0 => Err(PickError::None(code.to_owned())),
        1 => Ok(found.remove(0)),
        _ => Err(PickError::Several {
            code: code.to_owned(),
            choices: found
                .iter()
                .map(|r| format!("{} ({})", r.entry.provider_name, r.entry.provider_code))
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

/// Every record with this code (codes are unique per provider, so there may be several).
/// Live records are found through the index (the code is one of their tokens); only a code
/// with no live record (withdrawn, or unknown) costs a scan.
pub fn get(store: &Store, code: &str) -> Result<Vec<Record>, StoreError> {
    let mut out = Vec::new();
    for k in index::postings(store, &code.to_lowercase())? {
        if let Some(v) = store.db().get_cf(store.cf(CF_CATALOGUE), &k)? {
            let r = decode(&v)?;
            if r.entry.code.as_str() == code {
                out.push(r);
            }
        }
    }
    if out.is_empty() {
        out = all(store)?
            .into_iter()
            .filter(|r| r.entry.code.as_str() == code)
            .collect();
    }
    Ok(out)
}

fn all(store: &Store) -> Result<Vec<Record>, StoreError> {
    let mut out = Vec::new();
    for kv in store
        .db()
        .iterator_cf(store.cf(CF_CATALOGUE), IteratorMode::Start)
    {
        let (_, v) = kv?;
        out.push(decode(&v)?);
    }
    Ok(out)
}

/// Every record the filter accepts, ordered by provider and code.
pub fn list(store: &Store, filter: &Filter) -> Result<Vec<Record>, StoreError> {
    Ok(all(store)?
        .into_iter()
        .filter(|r| filter.accepts(r))
        .collect())
}

/// Full-text search, unranked, for when the ranked index ([`search::Search`]) is not built yet:
/// every record the filter accepts of which each word of `text` is a word (jieba search mode,
/// as in the ranked index) of the title, abstract, 信息项 names, provider, code or provider
/// code; reads every record. An empty query lists everything the filter accepts.
pub fn search(store: &Store, text: &str, filter: &Filter) -> Result<Vec<Record>, StoreError> {
    let words = index::query_words(text);
    Ok(list(store, filter)?
        .into_iter()
        .filter(|r| index::matches(&r.entry, &words))
        .collect())
}

/// The records at `keys`, in that order (a key whose record is gone is skipped).
pub fn by_keys(store: &Store, keys: &[Vec<u8>]) -> Result<Vec<Record>, StoreError> {
    let cf = store.cf(CF_CATALOGUE);
    let mut out = Vec::with_capacity(keys.len());
    for k in keys {
        if let Some(v) = store.db().get_cf(cf, k)? {
            out.push(decode(&v)?);
        }
    }
    Ok(out)
}

/// Full-text search ranked by relevance (BM25) when the search index is built, else
/// [`search`] (a scan of every record, unranked); the filter applies either way.
pub fn ranked(
    store: &Store,
    index: &search::Search,
    text: &str,
    filter: &Filter,
) -> Result<Vec<Record>, search::SearchError> {
    let q = search::SearchQuery {
        text: text.to_string(),
        limit: usize::try_from(count(store)?)
            .unwrap_or(usize::MAX)
            .saturating_add(1),
        ..search::SearchQuery::default()
    };
    match index.query(&q) {
        Some(hits) => Ok(by_keys(store, &hits?.keys)?
            .into_iter()
            .filter(|r| r.withdrawn.is_none() && filter.accepts(r))
            .collect()),
        None => Ok(search(store, text, filter)?),
    }
}

/// Key in the `meta` column family of the number of live (not withdrawn) records, kept in
/// the same batch as the records so `status` need not scan the catalogue.
const LIVE_COUNT: &[u8] = b"catalogue_live";

/// Number of live (not withdrawn) records.
pub fn count(store: &Store) -> Result<u64, StoreError> {
    let v = store.db().get_cf(store.cf(CF_META), LIVE_COUNT)?;
    Ok(v.and_then(|v| <[u8; 8]>::try_from(&v[..]).ok())
        .map_or(0, u64::from_be_bytes))
}

fn stage_count(store: &Store, batch: &mut WriteBatch, delta: i64) -> Result<(), StoreError> {
    if delta != 0 {
        let n = count(store)?.saturating_add_signed(delta);
        batch.put_cf(store.cf(CF_META), LIVE_COUNT, n.to_be_bytes());
    }
    Ok(())
}

/// The catalogue as a view over the feeds; it notes every record it changes in the search
/// index, when there is one.
pub struct View {
    /// The ranked search index kept from this view.
    pub search: Option<std::sync::Arc<search::Search>>,
}

impl crate::feeds::View for View {
    fn reset(&self, state: &NodeState, batch: &mut WriteBatch) -> Result<(), StoreError> {
        state.store.clear(batch, CF_CATALOGUE)?;
        state.store.clear(batch, crate::store::CF_SEARCH)?;
        state.store.delete_meta(batch, LIVE_COUNT);
        if let Some(s) = &self.search {
            s.note_reset();
        }
        Ok(())
    }

    /// This node's own publication is an update when the entry is live here; a withdrawal needs
    /// a live entry.
    fn prepare(&self, state: &NodeState, event: Event) -> Result<Event, AppendError> {
        let ours = &state.config.node.org_code;
        Ok(match event {
            Event::CataloguePublished(entry) | Event::CatalogueUpdated(entry) => {
                match get_by_provider(&state.store, ours, entry.code.as_str())? {
                    Some(r) if r.withdrawn.is_none() => Event::CatalogueUpdated(entry),
                    _ => Event::CataloguePublished(entry),
                }
            }
            Event::CatalogueWithdrawn { code, reason } => {
                match get_by_provider(&state.store, ours, code.as_str())? {
                    Some(r) if r.withdrawn.is_none() => Event::CatalogueWithdrawn { code, reason },
                    _ => return Err(AppendError::Unknown(code)),
                }
            }
            other => other,
        })
    }

    fn apply(&self, state: &NodeState, batch: &mut WriteBatch, a: &Accepted<'_>) -> Applied {
        if let Some(k) = apply(&state.store, batch, &a.entry.entry, a.provider)? {
            if let Some(s) = &self.search {
                s.note(&k);
            }
        }
        Ok(Vec::new())
    }
}

/// Whether an event of `feed` stamped `at_ms` is older than the record it would change, which
/// another feed of the same provider wrote: after a key rotation the provider's old and new
/// feeds reach a node in any order, and the later event wins (within one feed, the chain orders
/// events).
fn superseded(old: &Record, feed: &NodeId, at_ms: u64) -> bool {
    old.feed != *feed && old.updated_ms > at_ms
}

/// Stages the view and index changes for one feed event; returns the key of the record it
/// changed, if any.
fn apply(
    store: &Store,
    batch: &mut WriteBatch,
    e: &FeedEntry,
    provider: &str,
) -> Result<Option<Vec<u8>>, StoreError> {
    let (feed, seq, timestamp_ms, event) = (&e.feed, e.seq, e.timestamp_ms, &e.event);
    let cf = store.cf(CF_CATALOGUE);
    match event {
        Event::CataloguePublished(entry) | Event::CatalogueUpdated(entry) => {
            let k = key(provider, entry.code.as_str());
            let old = get_by_provider(store, provider, entry.code.as_str())?;
            if old
                .as_ref()
                .is_some_and(|o| superseded(o, feed, timestamp_ms))
            {
                return Ok(None);
            }
            match &old {
                Some(old) if old.withdrawn.is_none() => index::remove(store, batch, &k, &old.entry),
                // A withdrawn record has no postings; republishing makes it live again.
                _ => stage_count(store, batch, 1)?,
            }
            index::add(store, batch, &k, entry);
            let record = Record {
                entry: entry.clone(),
                feed: *feed,
                seq,
                updated_ms: timestamp_ms,
                withdrawn: None,
                dataset: old.and_then(|o| o.dataset),
                by: e.by.clone(),
            };
            batch.put_cf(cf, &k, codec::encode(&record));
            return Ok(Some(k));
        }
        Event::CatalogueWithdrawn { code, reason } => {
            let k = key(provider, code.as_str());
            if let Some(mut old) = get_by_provider(store, provider, code.as_str())? {
                if superseded(&old, feed, timestamp_ms) {
                    return Ok(None);
                }
                if old.withdrawn.is_none() {
                    index::remove(store, batch, &k, &old.entry);
                    stage_count(store, batch, -1)?;
                }
                old.withdrawn = Some(reason.clone());
                old.seq = seq;
                old.updated_ms = timestamp_ms;
                old.by = e.by.clone();
                batch.put_cf(cf, &k, codec::encode(&old));
                return Ok(Some(k));
            }
        }
        Event::DatasetPublished(d) => {
            let k = key(provider, d.code.as_str());
            if let Some(mut r) = get_by_provider(store, provider, d.code.as_str())? {
                if r.dataset.as_ref().is_none_or(|old| old.version < d.version) {
                    r.dataset = Some(d.clone());
                    batch.put_cf(cf, &k, codec::encode(&r));
                    return Ok(Some(k));
                }
            }
        }
        _ => {}
    }
    Ok(None)
}
