//! Ranked catalogue search (tantivy): BM25 over the Chinese text of every live entry (title,
//! abstract, 信息项 names, provider, codes), cut with the jieba tokens the rest of the node uses,
//! with facet counts (部门, 资源分类, 共享类型, 开放属性, 更新周期, 资源格式) and paging done by the
//! index, so a query over 100,000 entries reads only the page it shows.
//!
//! The index is derived data, kept in `<node dir>/search/` and rebuilt from the catalogue view
//! at every start (a crash cannot leave it disagreeing with the store). The catalogue view
//! notes each key it changes ([`Search::note`]); a syncer thread takes the noted keys under the
//! store's writer lock — so every batch that noted them has committed — re-reads those records
//! and adds them to the index. A commit (a new segment: files written and synced, the reader
//! reopened — far dearer than adding a record) comes when a search waits for it, when a
//! thousand records wait, or [`LONE_COMMIT_AFTER`] after the first uncommitted change — while
//! changes keep arriving, as in a fresh node's catch-up, at most once a second: fewer, larger
//! segments. A search first waits (boundedly) until everything noted before it is
//! indexed, so a person finds what they just published; one right after a start waits
//! (boundedly) for the first build. Until that build finishes, or if the index failed,
//! [`Search::query`] answers `None` and callers scan the store ([`super::search`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use rocksdb::IteratorMode;
use tantivy::collector::{Count, FacetCollector, MultiCollector, TopDocs};
use tantivy::query::{AllQuery, BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    Facet, FacetOptions, Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value,
    FAST, STORED, STRING,
};
use tantivy::tokenizer::{PreTokenizedStream, PreTokenizedString, Token, Tokenizer};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, Order, ReloadPolicy, TantivyDocument};
use tokio_util::sync::CancellationToken;

use super::index::{query_words, words};
use super::Record;
use crate::state::NodeState;
use crate::store::{StoreError, CF_CATALOGUE};

/// How long a search waits for changes noted before it to be indexed.
const FRESH_WAIT: Duration = Duration::from_secs(2);
/// How often the syncer looks for noted keys.
const SYNC_EVERY: Duration = Duration::from_millis(50);
/// The index writer's memory (tantivy's least per thread is 15 MB).
const WRITER_BYTES: usize = 32 << 20;
/// While changes keep arriving (a fresh node's catch-up), how long indexed documents may wait
/// for their commit: a commit per [`SYNC_EVERY`] makes a small segment each time and merges
/// them again and again. A lone change is committed at once.
const BULK_COMMIT_EVERY: Duration = Duration::from_secs(1);
/// Changes waiting that make a bulk catch-up (a fresh node's sync, an import): while they keep
/// arriving the index waits ([`Pace`]).
const BULK_BACKLOG: usize = 1000;
/// The longest an indexed change waits for its commit when no search asks for it. An entry
/// gossiped to every member was a commit on every member, which made a publication cost each
/// of 200 members ~20 ms of CPU; commits now gather the changes of a few seconds.
const LONE_COMMIT_AFTER: Duration = Duration::from_secs(3);
/// How long no change must have been noted before a waiting bulk backlog is indexed.
const BULK_QUIET: Duration = Duration::from_millis(500);
/// The longest the index waits for a bulk catch-up before it indexes what is noted anyway.
const MAX_DEFER: Duration = Duration::from_secs(20);

/// Most hits a query may skip and return together (tantivy sizes its heap by it).
pub const MAX_WINDOW: usize = 1_000_000;

/// The facets, by the names the portal's links use.
pub const FACETS: [&str; 6] = ["dept", "class", "share", "open", "cycle", "format"];

/// Why a search failed.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// The index failed.
    #[error("catalogue search index: {0}")]
    Index(#[from] tantivy::TantivyError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The fields of a document.
#[derive(Clone, Copy)]
struct Fields {
    key: Field,
    title: Field,
    summary: Field,
    items: Field,
    provider: Field,
    codes: Field,
    updated: Field,
    facets: [Field; 6],
}

impl Fields {
    fn schema() -> (Schema, Fields) {
        let mut b = Schema::builder();
        // jieba words: term frequencies for BM25, no positions (no phrase queries).
        let text = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(WORDS_TOKENIZER)
                .set_index_option(IndexRecordOption::WithFreqs),
        );
        let key = b.add_text_field("key", STRING | STORED);
        let title = b.add_text_field("title", text.clone());
        let summary = b.add_text_field("summary", text.clone());
        let items = b.add_text_field("items", text.clone());
        let provider = b.add_text_field("provider", text.clone());
        let codes = b.add_text_field("codes", text);
        let updated = b.add_u64_field("updated", FAST);
        let facets = FACETS.map(|f| b.add_facet_field(f, FacetOptions::default()));
        (
            b.build(),
            Fields {
                key,
                title,
                summary,
                items,
                provider,
                codes,
                updated,
                facets,
            },
        )
    }

    /// The searched text fields with their boosts (a word in the title counts most).
    fn weighted(&self) -> [(Field, f32); 5] {
        [
            (self.title, 3.0),
            (self.items, 1.5),
            (self.summary, 1.0),
            (self.provider, 1.0),
            (self.codes, 2.0),
        ]
    }
}

/// The name the jieba words are registered under with the index.
const WORDS_TOKENIZER: &str = "huitong_words";

/// [`words`] as a tantivy tokenizer, so a document carries its plain text and the indexing
/// thread segments it (pre-tokenized text would be serialized into the document as JSON and
/// parsed back, which cost about as much as the segmenting).
#[derive(Clone)]
struct Words;

impl Tokenizer for Words {
    type TokenStream<'a> = PreTokenizedStream;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> PreTokenizedStream {
        let tokens = words(text)
            .into_iter()
            .enumerate()
            .map(|(position, text)| Token {
                offset_from: 0,
                offset_to: 0,
                position,
                text,
                position_length: 1,
            })
            .collect();
        PreTokenizedStream::from(PreTokenizedString {
            text: String::new(),
            tokens,
        })
    }
}

/// The value of facet `name` for a record (the portal's links carry these).
pub fn facet_value(r: &Record, name: &str) -> String {
    let e = &r.entry;
    match name {
        "dept" => e.provider_code.to_string(),
        "class" => e.classification.class().to_string(),
        "share" => e.share_type.key().to_string(),
        "open" => e.open_type.key().to_string(),
        "cycle" => e.update_cycle.key().to_string(),
        "format" => e.format.category.key().to_string(),
        _ => String::new(),
    }
}

fn document(f: &Fields, key: &str, r: &Record) -> TantivyDocument {
    let e = &r.entry;
    let mut d = TantivyDocument::default();
    d.add_text(f.key, key);
    d.add_text(f.title, &e.title);
    d.add_text(f.summary, &e.summary);
    let items: Vec<&str> = e.items.iter().map(|i| i.name.as_str()).collect();
    d.add_text(f.items, items.join(" "));
    d.add_text(f.provider, &e.provider_name);
    d.add_text(
        f.codes,
        format!("{} {}", e.code.as_str(), e.provider_code.as_str()),
    );
    d.add_u64(f.updated, r.updated_ms);
    for (field, name) in f.facets.iter().zip(FACETS) {
        d.add_facet(*field, Facet::from_path([facet_value(r, name)]));
    }
    d
}

/// A query: words (empty: every live entry), facet values it must have, the page.
#[derive(Clone, Debug, Default)]
pub struct SearchQuery {
    /// The words typed.
    pub text: String,
    /// (facet name, value) pairs every hit has.
    pub facets: Vec<(String, String)>,
    /// Hits skipped.
    pub offset: usize,
    /// Hits returned at most.
    pub limit: usize,
    /// Newest first instead of by relevance (an empty query is always newest first).
    pub newest_first: bool,
}

/// What a search found.
#[derive(Clone, Debug, Default)]
pub struct Hits {
    /// All hits, over every page.
    pub total: usize,
    /// The page's record keys, best first.
    pub keys: Vec<Vec<u8>>,
    /// Each facet's values over all hits, with counts.
    pub facets: BTreeMap<&'static str, Vec<(String, u64)>>,
    /// The query's words (to highlight).
    pub words: Vec<String>,
}

/// The index once built, for searching.
struct Engine {
    reader: IndexReader,
    fields: Fields,
}

/// The catalogue's search index: shared by the catalogue view (which notes changes), the
/// syncer thread and the HTTP handlers.
pub struct Search {
    dir: PathBuf,
    engine: RwLock<Option<Arc<Engine>>>,
    /// Record keys changed since the syncer last took them.
    dirty: Mutex<BTreeSet<Vec<u8>>>,
    /// Changes noted, ever.
    noted: AtomicU64,
    /// Changes noted that the committed index holds.
    indexed: AtomicU64,
    /// Set when the catalogue view is rebuilt: the syncer rebuilds the index too.
    reset: AtomicBool,
    /// Set when a search waits for changes to be indexed: the syncer does not wait for a bulk
    /// catch-up to end.
    wanted: AtomicBool,
    /// Set until the first build has finished or failed: a search meanwhile waits for it
    /// (boundedly) rather than answering from the unranked scan at once.
    building: AtomicBool,
}

/// When the index waits. While a bulk catch-up keeps noting changes (at least
/// [`BULK_BACKLOG`] waiting, the last noted less than [`BULK_QUIET`] ago) the index waits, at
/// most [`MAX_DEFER`] at a time and not while a search waits: indexing beside the catch-up
/// takes about a third of the CPU the catch-up needs, and the catalogue is listed and served
/// from the store meanwhile. A lone change is indexed at once.
struct Pace {
    last_noted: u64,
    changed_at: Instant,
    deferred_since: Option<Instant>,
}

impl Pace {
    fn new(now: Instant) -> Self {
        Self {
            last_noted: 0,
            changed_at: now,
            deferred_since: None,
        }
    }

    /// Whether to wait now, with `noted` changes noted ever and `backlog` waiting.
    fn defer(&mut self, noted: u64, backlog: usize, wanted: bool, now: Instant) -> bool {
        if noted != self.last_noted {
            self.last_noted = noted;
            self.changed_at = now;
        }
        let bulk = backlog >= BULK_BACKLOG && now.duration_since(self.changed_at) < BULK_QUIET;
        if !bulk || wanted {
            self.deferred_since = None;
            return false;
        }
        let since = *self.deferred_since.get_or_insert(now);
        if now.duration_since(since) >= MAX_DEFER {
            self.deferred_since = None;
            return false;
        }
        true
    }
}

/// The index writer and the changes it holds not committed yet.
struct Indexer {
    writer: IndexWriter,
    uncommitted: Uncommitted,
    /// The changes noted ever when the keys now added were taken (what a commit makes indexed).
    taken: u64,
}

impl Indexer {
    fn new(writer: IndexWriter) -> Self {
        Self {
            writer,
            uncommitted: Uncommitted::new(Instant::now()),
            taken: 0,
        }
    }
}

/// The changes added to the index since its last commit, and when to commit them.
struct Uncommitted {
    /// Records changed since the last commit.
    count: usize,
    /// When the first of them was added.
    since: Option<Instant>,
    last_commit: Instant,
}

impl Uncommitted {
    fn new(now: Instant) -> Self {
        Self {
            count: 0,
            since: None,
            last_commit: now,
        }
    }

    fn added(&mut self, now: Instant) {
        self.count += 1;
        self.since.get_or_insert(now);
    }

    fn committed(&mut self, now: Instant) {
        *self = Self::new(now);
    }

    /// Whether to commit now: a search waits (`wanted`); while changes keep coming (`more`), at
    /// most once per [`BULK_COMMIT_EVERY`]; otherwise once a bulk of them is waiting or the
    /// oldest has waited [`LONE_COMMIT_AFTER`].
    fn due(&self, wanted: bool, more: bool, now: Instant) -> bool {
        let Some(since) = self.since else {
            return false;
        };
        if wanted {
            return true;
        }
        if more {
            return now.duration_since(self.last_commit) >= BULK_COMMIT_EVERY;
        }
        self.count >= BULK_BACKLOG || now.duration_since(since) >= LONE_COMMIT_AFTER
    }
}

impl Search {
    /// A search index in `dir` (made when [`Search::run`] starts).
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            engine: RwLock::new(None),
            dirty: Mutex::new(BTreeSet::new()),
            noted: AtomicU64::new(0),
            indexed: AtomicU64::new(0),
            reset: AtomicBool::new(false),
            wanted: AtomicBool::new(false),
            building: AtomicBool::new(true),
        }
    }

    /// The catalogue record at `key` changed (staged in a batch not yet committed).
    pub fn note(&self, key: &[u8]) {
        self.dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_vec());
        self.noted.fetch_add(1, Ordering::SeqCst);
    }

    /// The catalogue view is being rebuilt: rebuild the index after it.
    pub fn note_reset(&self) {
        self.reset.store(true, Ordering::SeqCst);
        self.noted.fetch_add(1, Ordering::SeqCst);
    }

    /// Changes noted that the index does not hold yet (0: ranked search is up to date).
    pub fn pending(&self) -> u64 {
        self.noted
            .load(Ordering::SeqCst)
            .saturating_sub(self.indexed.load(Ordering::SeqCst))
    }

    /// Whether the first build has finished.
    pub fn ready(&self) -> bool {
        self.engine().is_some()
    }

    fn engine(&self) -> Option<Arc<Engine>> {
        self.engine
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Builds the index and keeps it in step with the catalogue until `shutdown`; blocking
    /// (run it on its own thread). A failure or a panic is logged and searching goes back to
    /// the unranked scan of the store.
    pub fn run(&self, state: &NodeState, shutdown: &CancellationToken) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.keep_in_step(state, shutdown)
        }));
        let why = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "the index thread panicked".to_string(),
        };
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) = None;
        self.building.store(false, Ordering::SeqCst);
        tracing::error!(error = %why, dir = %self.dir.display(), "catalogue search index stopped; searching scans the store, unranked, until the node restarts");
    }

    fn keep_in_step(
        &self,
        state: &NodeState,
        shutdown: &CancellationToken,
    ) -> Result<(), SearchError> {
        let mut indexer = Indexer::new(self.build(state, None)?);
        self.sync(state, &mut indexer, true)?;
        self.building.store(false, Ordering::SeqCst);
        let mut pace = Pace::new(Instant::now());
        while !shutdown.is_cancelled() {
            std::thread::sleep(SYNC_EVERY);
            if self.reset.swap(false, Ordering::SeqCst) {
                // The catalogue view was rebuilt: build again under the writer lock, so the
                // scan sees the rebuilt view whole (rare: a closure enforced).
                let _w = state.store.writer();
                indexer = Indexer::new(self.build(state, Some(indexer.writer))?);
                drop(_w);
            }
            let backlog = self.dirty.lock().unwrap_or_else(|p| p.into_inner()).len();
            let wanted = self.wanted.swap(false, Ordering::SeqCst);
            let noted = self.noted.load(Ordering::SeqCst);
            if pace.defer(noted, backlog, wanted, Instant::now()) {
                continue;
            }
            self.sync(state, &mut indexer, wanted)?;
        }
        Ok(())
    }

    /// Makes a new index from every live record (the old writer, if any, finished first);
    /// returns its writer. Keys noted meanwhile stay noted for the next sync.
    fn build(
        &self,
        state: &NodeState,
        old: Option<IndexWriter>,
    ) -> Result<IndexWriter, SearchError> {
        let started = Instant::now();
        self.reset.store(false, Ordering::SeqCst);
        if let Some(old) = old {
            old.wait_merging_threads()?;
        }
        // The directory is ours: a link there is removed, never followed.
        if std::fs::symlink_metadata(&self.dir).is_ok_and(|m| m.file_type().is_symlink()) {
            std::fs::remove_file(&self.dir).map_err(tantivy::TantivyError::from)?;
        }
        if self.dir.exists() {
            std::fs::remove_dir_all(&self.dir).map_err(tantivy::TantivyError::from)?;
        }
        std::fs::create_dir_all(&self.dir).map_err(tantivy::TantivyError::from)?;
        let (schema, fields) = Fields::schema();
        let index = Index::create_in_dir(&self.dir, schema)?;
        index.tokenizers().register(WORDS_TOKENIZER, Words);
        let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_BYTES)?;
        let store = &state.store;
        let mut n = 0u64;
        for kv in store
            .db()
            .iterator_cf(store.cf(CF_CATALOGUE), IteratorMode::Start)
        {
            let (k, v) = kv.map_err(StoreError::from)?;
            let r = super::decode(&v)?;
            if r.withdrawn.is_none() {
                writer.add_document(document(&fields, &String::from_utf8_lossy(&k), &r))?;
                n += 1;
            }
        }
        writer.commit()?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        *self.engine.write().unwrap_or_else(|p| p.into_inner()) =
            Some(Arc::new(Engine { reader, fields }));
        tracing::info!(
            entries = n,
            ms = started.elapsed().as_millis() as u64,
            "catalogue search index built"
        );
        Ok(writer)
    }

    /// Indexes the noted keys, if any, and commits when that is due ([`Uncommitted::due`];
    /// `wanted`: a search waits).
    fn sync(
        &self,
        state: &NodeState,
        indexer: &mut Indexer,
        wanted: bool,
    ) -> Result<(), SearchError> {
        let Some(engine) = self.engine() else {
            return Ok(());
        };
        if self.noted.load(Ordering::SeqCst) == self.indexed.load(Ordering::SeqCst) {
            return Ok(());
        }
        // Under the writer lock no batch is between noting its keys and committing them.
        let keys = {
            let _w = state.store.writer();
            let keys = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|p| p.into_inner()));
            indexer.taken = self.noted.load(Ordering::SeqCst);
            keys
        };
        let f = engine.fields;
        let cf = state.store.cf(CF_CATALOGUE);
        let writer = &mut indexer.writer;
        for k in &keys {
            let key = String::from_utf8_lossy(k);
            writer.delete_term(tantivy::Term::from_field_text(f.key, &key));
            if let Some(v) = state.store.db().get_cf(cf, k).map_err(StoreError::from)? {
                let r = super::decode(&v)?;
                if r.withdrawn.is_none() {
                    writer.add_document(document(&f, &key, &r))?;
                }
            }
            indexer.uncommitted.added(Instant::now());
        }
        let more = !self
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if indexer.uncommitted.since.is_none() {
            // Nothing taken since the last commit (only a reset was noted): nothing to commit.
            self.indexed.store(indexer.taken, Ordering::SeqCst);
            return Ok(());
        }
        if !indexer.uncommitted.due(wanted, more, Instant::now()) {
            return Ok(());
        }
        indexer.writer.commit()?;
        engine.reader.reload()?;
        indexer.uncommitted.committed(Instant::now());
        self.indexed.store(indexer.taken, Ordering::SeqCst);
        Ok(())
    }

    /// Waits until the changes noted before now are indexed (at most [`FRESH_WAIT`]).
    fn wait_fresh(&self) {
        let want = self.noted.load(Ordering::SeqCst);
        wait_while(|| {
            let behind = self.indexed.load(Ordering::SeqCst) < want;
            if behind {
                self.wanted.store(true, Ordering::SeqCst);
            }
            behind
        });
    }

    /// Waits until the first build has finished or failed (at most [`FRESH_WAIT`]): right
    /// after a start, a search gets the ranked answer, not the unranked scan's.
    fn wait_built(&self) {
        wait_while(|| self.building.load(Ordering::SeqCst));
    }

    /// Runs `q`; `None` while the index is not built (search with [`super::search`] then): a
    /// build that takes longer than [`FRESH_WAIT`], or an index that failed.
    pub fn query(&self, q: &SearchQuery) -> Option<Result<Hits, SearchError>> {
        self.wait_built();
        self.engine()?;
        self.wait_fresh();
        let engine = self.engine()?;
        Some(run_query(&engine, q))
    }
}

/// Polls `pending` until it is false, at most [`FRESH_WAIT`].
fn wait_while(mut pending: impl FnMut() -> bool) {
    let deadline = Instant::now() + FRESH_WAIT;
    while pending() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_query(engine: &Engine, q: &SearchQuery) -> Result<Hits, SearchError> {
    let f = &engine.fields;
    // The distinct words, the first MAX_QUERY_WORDS (each is a clause over five fields).
    let words = query_words(&q.text);
    let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    // Every word must match in some field (AND over words, OR over fields), ranked by BM25
    // with the fields' boosts.
    for w in &words {
        let any_field: Vec<(Occur, Box<dyn Query>)> = f
            .weighted()
            .iter()
            .map(|(field, boost)| {
                let term = TermQuery::new(
                    tantivy::Term::from_field_text(*field, w),
                    IndexRecordOption::WithFreqs,
                );
                (
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(term), *boost)) as Box<dyn Query>,
                )
            })
            .collect();
        must.push((Occur::Must, Box::new(BooleanQuery::new(any_field))));
    }
    for (name, value) in &q.facets {
        if let Some(i) = FACETS.iter().position(|n| n == name) {
            let term = tantivy::Term::from_facet(f.facets[i], &Facet::from_path([value.as_str()]));
            must.push((
                Occur::Must,
                Box::new(TermQuery::new(term, IndexRecordOption::Basic)),
            ));
        }
    }
    let query: Box<dyn Query> = if must.is_empty() {
        Box::new(AllQuery)
    } else {
        Box::new(BooleanQuery::new(must))
    };
    let searcher = engine.reader.searcher();
    let mut multi = MultiCollector::new();
    let count = multi.add_collector(Count);
    let facet_handles: Vec<_> = FACETS
        .iter()
        .map(|name| {
            let mut c = FacetCollector::for_field(*name);
            c.add_facet(Facet::root());
            multi.add_collector(c)
        })
        .collect();
    // tantivy keeps a heap of offset + limit: both bounded.
    let limit = q.limit.clamp(1, MAX_WINDOW);
    let offset = q.offset.min(MAX_WINDOW - limit);
    let newest = q.newest_first || words.is_empty();
    let (mut fruit, addresses): (_, Vec<DocAddress>) = if newest {
        let top = TopDocs::with_limit(limit)
            .and_offset(offset)
            .order_by_u64_field("updated", Order::Desc);
        let (docs, fruit) = searcher.search(&query, &(top, multi))?;
        (fruit, docs.into_iter().map(|(_, a)| a).collect())
    } else {
        let top = TopDocs::with_limit(limit)
            .and_offset(offset)
            .order_by_score();
        let (docs, fruit) = searcher.search(&query, &(top, multi))?;
        (fruit, docs.into_iter().map(|(_, a)| a).collect())
    };
    let total = count.extract(&mut fruit);
    let mut facets = BTreeMap::new();
    for (name, handle) in FACETS.iter().zip(facet_handles) {
        let counts = handle.extract(&mut fruit);
        let mut values: Vec<(String, u64)> = counts
            .get(Facet::root())
            .map(|(facet, n)| {
                let path = facet.to_path();
                (path.first().map_or_else(String::new, |s| s.to_string()), n)
            })
            .collect();
        values.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        facets.insert(*name, values);
    }
    let mut keys = Vec::with_capacity(addresses.len());
    for a in addresses {
        let d: TantivyDocument = searcher.doc(a)?;
        if let Some(k) = d.get_first(f.key).and_then(|v| v.as_str()) {
            keys.push(k.as_bytes().to_vec());
        }
    }
    Ok(Hits {
        total,
        keys,
        facets,
        words: words.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lower_case_without_punctuation() {
        let w = words("人口基本信息（2026版）");
        assert!(w.contains(&"人口".to_string()), "{w:?}");
        assert!(w.contains(&"2026".to_string()), "{w:?}");
        assert!(!w.iter().any(|t| t == "（"), "{w:?}");
    }

    #[test]
    fn the_index_waits_for_a_bulk_catch_up_but_not_for_long_nor_for_a_search() {
        let t0 = Instant::now();
        let mut pace = Pace::new(t0);
        let ms = |n: u64| t0 + Duration::from_millis(n);
        // A lone change: indexed at once.
        assert!(!pace.defer(1, 1, false, ms(0)));
        // A bulk backlog still growing: wait…
        assert!(pace.defer(2000, BULK_BACKLOG, false, ms(50)));
        assert!(pace.defer(4000, 2 * BULK_BACKLOG, false, ms(100)));
        // …but not while a search waits for it.
        assert!(!pace.defer(4000, 2 * BULK_BACKLOG, true, ms(150)));
        // Quiet for BULK_QUIET: index.
        assert!(pace.defer(5000, 3 * BULK_BACKLOG, false, ms(200)));
        assert!(!pace.defer(5000, 3 * BULK_BACKLOG, false, ms(200) + BULK_QUIET));
        // Changes that never stop: indexed after MAX_DEFER anyway, then waiting again.
        let mut n = 5000;
        let mut at = ms(1000);
        let started = at;
        loop {
            n += 100;
            at += Duration::from_millis(50);
            if !pace.defer(n, 3 * BULK_BACKLOG, false, at) {
                break;
            }
            assert!(
                at - started <= MAX_DEFER + Duration::from_millis(50),
                "waited too long"
            );
        }
        assert!(at - started >= MAX_DEFER, "indexed before MAX_DEFER");
        assert!(pace.defer(
            n + 100,
            3 * BULK_BACKLOG,
            false,
            at + Duration::from_millis(50)
        ));
    }

    #[test]
    fn a_commit_waits_for_a_search_a_bulk_or_a_few_seconds() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let mut u = Uncommitted::new(t0);
        // Nothing added: nothing to commit, even for a search.
        assert!(!u.due(true, false, ms(10_000)));
        // A lone change: not yet…
        u.added(ms(100));
        assert!(!u.due(false, false, ms(100)));
        assert!(!u.due(
            false,
            false,
            ms(100) + LONE_COMMIT_AFTER - Duration::from_millis(1)
        ));
        // …at once for a search, or once it has waited LONE_COMMIT_AFTER.
        assert!(u.due(true, false, ms(150)));
        assert!(u.due(false, false, ms(100) + LONE_COMMIT_AFTER));
        // Changes still coming: at most once per BULK_COMMIT_EVERY, counted from the last commit.
        u.committed(ms(200));
        u.added(ms(210));
        assert!(!u.due(
            false,
            true,
            ms(200) + BULK_COMMIT_EVERY - Duration::from_millis(1)
        ));
        assert!(u.due(false, true, ms(200) + BULK_COMMIT_EVERY));
        // A bulk waiting and no more coming: at once.
        for _ in 1..BULK_BACKLOG {
            u.added(ms(220));
        }
        assert!(u.due(false, false, ms(230)));
        u.committed(ms(240));
        assert!(!u.due(false, false, ms(240) + LONE_COMMIT_AFTER));
    }
}
