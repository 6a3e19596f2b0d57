//! The call log: every API service call this node made (through its gateway) or answered, one
//! record each, hash-chained — each record names the hash of the log before it, and the head
//! is BLAKE3(previous head ‖ record) — so a record changed or dropped by mistake breaks every
//! later head. (Anyone who can write the store can recompute the chain: until the heads are
//! anchored in the hub's audit log it guards against accidents, not against the operator.) A consumer's record keeps the provider's signed answer, its proof
//! of what it was told.
//!
//! Records are written with the WAL but without a sync per call (a killed process keeps them;
//! a power cut may lose the last moments), and not under the store's writer lock: the log is
//! its own column family, appended under its own lock.
//!
//! Layering: a leaf above [`crate::store`]; the API services ([`crate::service`]) append to it
//! and the admin API reads it.

use std::sync::Mutex;

use huitong_protocol::{codec, NodeId};
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::store::{Store, StoreError, CF_CALLS, CF_CALL_IDS, CF_META};

/// The meta key of the log's head: (records, head hash).
const HEAD_KEY: &[u8] = b"calls_head";
/// Largest record (an answer envelope and the rest).
pub(crate) const MAX_RECORD_BYTES: usize = huitong_protocol::call::MAX_ANSWER_BYTES + 64 * 1024;

/// Which side of a call this node was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// This node's gateway made the call for one of its department's systems.
    Consumer,
    /// This node answered (or refused) a call to its own service.
    Provider,
}

impl Side {
    /// `consumer` or `provider`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Consumer => "consumer",
            Side::Provider => "provider",
        }
    }
}

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Answered.
    Ok,
    /// The provider refused it (grant, share type, quota, bad query).
    Refused,
    /// It failed (provider unreachable, timeout, a bad answer).
    Failed,
}

impl Status {
    /// `ok`, `refused` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Refused => "refused",
            Status::Failed => "failed",
        }
    }
}

/// One call, as this node saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallRecord {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When the call ended (ms since the Unix epoch).
    pub at_ms: u64,
    /// Which side this node was.
    pub side: Side,
    /// The other node (the provider for a consumer's record, the consumer for a provider's).
    pub peer: NodeId,
    /// The resource.
    pub code: String,
    /// `lookup` or `verify`.
    pub kind: String,
    /// The grant (application id) presented or used, if any.
    pub grant: Option<String>,
    /// The call's id (the same in both nodes' logs), when the provider answered or signed its
    /// refusal.
    pub id: Option<String>,
    /// Hex BLAKE3 of the query.
    pub query: String,
    /// Hex BLAKE3 of the provider's signed answer (or refusal) envelope, when it gave one.
    pub answer: Option<String>,
    /// How it ended.
    pub status: Status,
    /// Why it was refused or failed.
    pub detail: Option<String>,
    /// How long it took on this node, in microseconds.
    pub duration_us: u64,
    /// The department system that called (the gateway client's name), on the consumer.
    pub client: Option<String>,
    /// The provider's signed answer (or refusal) envelope, kept by the consumer.
    pub envelope: Option<ByteBuf>,
    /// Hex head of the log before this record (64 zeros for the first).
    pub prev: String,
}

/// What a caller fills in; [`CallLog::append`] adds the position, the time and the chain.
#[derive(Clone, Debug)]
pub struct NewCall {
    /// Which side this node was.
    pub side: Side,
    /// The other node.
    pub peer: NodeId,
    /// The resource.
    pub code: String,
    /// `lookup` or `verify`.
    pub kind: &'static str,
    /// The grant, if any.
    pub grant: Option<String>,
    /// The answer's id.
    pub id: Option<String>,
    /// BLAKE3 of the query.
    pub query: [u8; 32],
    /// BLAKE3 of the answer envelope.
    pub answer: Option<[u8; 32]>,
    /// How it ended.
    pub status: Status,
    /// Why it was refused or failed.
    pub detail: Option<String>,
    /// How long it took.
    pub duration: std::time::Duration,
    /// The gateway client.
    pub client: Option<String>,
    /// The answer envelope (consumer).
    pub envelope: Option<Vec<u8>>,
}

/// The log's head: records so far and the hash after the last.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Records in the log.
    pub size: u64,
    /// BLAKE3 chain head (zeros while empty).
    pub hash: [u8; 32],
}

/// The call log of a node (in [`crate::state::NodeState::calls`]).
#[derive(Default)]
pub struct CallLog {
    /// The head, read from the store on first use; held while a record is appended.
    head: Mutex<Option<Head>>,
    /// Whether the log was checked against this node's last anchor since start
    /// ([`crate::call_anchors::ready`]).
    resumed: std::sync::atomic::AtomicBool,
}

/// The next head after `record` on top of `prev`.
fn chain(prev: &[u8; 32], record: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(prev);
    h.update(record);
    *h.finalize().as_bytes()
}

impl CallLog {
    /// Appends one call; its record.
    pub fn append(&self, store: &Store, call: NewCall) -> Result<CallRecord, StoreError> {
        let mut guard = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let head = match *guard {
            Some(h) => h,
            None => read_head(store)?,
        };
        let record = CallRecord {
            seq: head.size + 1,
            at_ms: now_ms(),
            side: call.side,
            peer: call.peer,
            code: call.code,
            kind: call.kind.to_string(),
            grant: call.grant,
            id: call.id,
            query: hex::encode(call.query),
            answer: call.answer.map(hex::encode),
            status: call.status,
            detail: call.detail,
            duration_us: u64::try_from(call.duration.as_micros()).unwrap_or(u64::MAX),
            client: call.client,
            envelope: call.envelope.map(ByteBuf::from),
            prev: hex::encode(head.hash),
        };
        let bytes = codec::encode(&record);
        let next = Head {
            size: record.seq,
            hash: chain(&head.hash, &bytes),
        };
        let s = store;
        let mut batch = WriteBatch::default();
        batch.put_cf(s.cf(CF_CALLS), record.seq.to_be_bytes(), &bytes);
        if let Some(id) = &record.id {
            batch.put_cf(s.cf(CF_CALL_IDS), id.as_bytes(), record.seq.to_be_bytes());
        }
        batch.put_cf(s.cf(CF_META), HEAD_KEY, codec::encode(&next));
        s.db().write(batch)?;
        *guard = Some(next);
        Ok(record)
    }

    /// Continues the log after `anchored`, a head this node anchored beyond the log it holds
    /// (restored from a backup older than the anchor): the records between are lost, and the
    /// chain check says so at the gap, but every call from now on is chained to the anchored
    /// head and can be proved. Does nothing when the log already reaches it.
    pub fn resume_after(&self, store: &Store, anchored: Head) -> Result<bool, StoreError> {
        let mut guard = self.head.lock().unwrap_or_else(|p| p.into_inner());
        let head = match *guard {
            Some(h) => h,
            None => read_head(store)?,
        };
        if head.size >= anchored.size {
            return Ok(false);
        }
        store
            .db()
            .put_cf(store.cf(CF_META), HEAD_KEY, codec::encode(&anchored))?;
        *guard = Some(anchored);
        Ok(true)
    }

    /// Whether the log was checked against the last anchor since start.
    pub fn resumed(&self) -> bool {
        self.resumed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The log was checked against the last anchor.
    pub fn mark_resumed(&self) {
        self.resumed
            .store(true, std::sync::atomic::Ordering::Release);
    }

    /// The head now.
    pub fn head(&self, store: &Store) -> Result<Head, StoreError> {
        let mut guard = self.head.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = *guard {
            return Ok(h);
        }
        let h = read_head(store)?;
        *guard = Some(h);
        Ok(h)
    }
}

use crate::clock::now_ms;

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        cf: CF_CALLS,
        detail: detail.to_string(),
    }
}

fn read_head(s: &Store) -> Result<Head, StoreError> {
    match s.db().get_cf(s.cf(CF_META), HEAD_KEY)? {
        Some(b) => codec::decode(&b, 1024).map_err(corrupt),
        None => Ok(Head::default()),
    }
}

/// The record a call id names: the answer's id (32 hex digits, as both logs and the gateway's
/// answer give it) or `call-N` for record N (a refused or failed call has no answer id).
pub fn find(s: &Store, id: &str) -> Result<Option<CallRecord>, StoreError> {
    let seq = match id.strip_prefix("call-") {
        Some(n) => match n.parse::<u64>() {
            Ok(n) => n,
            Err(_) => return Ok(None),
        },
        None => match s.db().get_cf(s.cf(CF_CALL_IDS), id.as_bytes())? {
            Some(b) => u64::from_be_bytes(
                <[u8; 8]>::try_from(b.as_slice()).map_err(|_| corrupt("a call id's position"))?,
            ),
            None => return Ok(None),
        },
    };
    match s.db().get_cf(s.cf(CF_CALLS), seq.to_be_bytes())? {
        Some(v) => codec::decode(&v, MAX_RECORD_BYTES)
            .map(Some)
            .map_err(corrupt),
        None => Ok(None),
    }
}

/// Follows the chain from `from` (a head this node anchored, or the empty log) through record
/// `to`: the head after record `to`, or `Err` naming the first record that does not follow the
/// one before it (or is missing). Reads only the records between the two.
pub fn chain_from(s: &Store, from: Head, to: u64) -> Result<Result<Head, String>, StoreError> {
    let mut head = from;
    let start = from.size.saturating_add(1);
    let it = s.db().iterator_cf(
        s.cf(CF_CALLS),
        IteratorMode::From(&start.to_be_bytes(), rocksdb::Direction::Forward),
    );
    for kv in it {
        if head.size >= to {
            break;
        }
        let (k, v) = kv?;
        if k.len() != 8 {
            break;
        }
        let r: CallRecord = codec::decode(&v, MAX_RECORD_BYTES).map_err(corrupt)?;
        if r.seq != head.size + 1 || r.prev != hex::encode(head.hash) {
            return Ok(Err(format!(
                "record {} does not follow the log before it (a record was changed, removed or inserted)",
                r.seq
            )));
        }
        head = Head {
            size: r.seq,
            hash: chain(&head.hash, &v),
        };
    }
    if head.size < to {
        return Ok(Err(format!(
            "record {} is missing from the call log",
            head.size + 1
        )));
    }
    Ok(Ok(head))
}

/// Every record, oldest first, and whether the chain holds: `Err` names the first record
/// whose `prev` is not the head before it, or a head that does not match the stored one.
pub fn all(s: &Store) -> Result<(Vec<CallRecord>, Result<Head, String>), StoreError> {
    read(s, |_| true, usize::MAX)
}

/// The last `most` records that `keep` (without their answer envelopes), oldest first, and
/// whether the whole chain holds up to the head read first (calls appended meanwhile are
/// left for the next read). The log is checked record by record, never held whole.
pub fn read(
    s: &Store,
    keep: impl Fn(&CallRecord) -> bool,
    most: usize,
) -> Result<(Vec<CallRecord>, Result<Head, String>), StoreError> {
    let stored = read_head(s)?;
    let mut out = std::collections::VecDeque::new();
    let mut head = Head::default();
    let mut broken = None;
    for kv in s.db().iterator_cf(s.cf(CF_CALLS), IteratorMode::Start) {
        let (k, v) = kv?;
        if k.as_ref() > stored.size.to_be_bytes().as_slice() {
            break;
        }
        let mut r: CallRecord = codec::decode(&v, MAX_RECORD_BYTES).map_err(corrupt)?;
        if broken.is_none() && (r.seq != head.size + 1 || r.prev != hex::encode(head.hash)) {
            broken = Some(format!(
                "record {} does not follow the log before it (a record was changed, removed or inserted)",
                r.seq
            ));
        }
        head = Head {
            size: r.seq,
            hash: chain(&head.hash, &v),
        };
        if keep(&r) {
            r.envelope = None;
            out.push_back(r);
            if out.len() > most {
                out.pop_front();
            }
        }
    }
    let out: Vec<CallRecord> = out.into();
    let chain = match broken {
        Some(why) => Err(why),
        None if stored != head => Err(format!(
            "the stored head ({} records) does not match the records ({})",
            stored.size, head.size
        )),
        None => Ok(head),
    };
    Ok((out, chain))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(n: u8) -> NewCall {
        NewCall {
            side: Side::Provider,
            peer: NodeId([n; 32]),
            code: "301001/000001".into(),
            kind: "lookup",
            grant: None,
            id: None,
            query: [n; 32],
            answer: None,
            status: Status::Ok,
            detail: None,
            duration: std::time::Duration::from_micros(5),
            client: None,
            envelope: None,
        }
    }

    #[test]
    fn the_chain_holds_and_a_changed_record_breaks_it() {
        let (_dir, state) = crate::state::testing::department(&NodeId([9; 32]));
        let store = &state.store;
        let log = CallLog::default();
        for n in 1..=3 {
            let r = log.append(store, call(n)).unwrap();
            assert_eq!(r.seq, u64::from(n));
        }
        let (records, chain) = all(store).unwrap();
        assert_eq!(records.len(), 3);
        let head = chain.unwrap();
        assert_eq!(head, log.head(store).unwrap());
        assert_eq!(head.size, 3);
        // A fresh log (a restarted node) continues from the stored head.
        let again = CallLog::default();
        assert_eq!(again.append(store, call(4)).unwrap().seq, 4);
        assert!(all(store).unwrap().1.is_ok());
        // Someone edits record 2 in the store: the chain says so.
        let mut r2 = records[1].clone();
        r2.status = Status::Refused;
        let s = store;
        s.db()
            .put_cf(s.cf(CF_CALLS), 2u64.to_be_bytes(), codec::encode(&r2))
            .unwrap();
        let why = all(store).unwrap().1.unwrap_err();
        assert!(why.contains("record 3"), "{why}");
    }

    #[test]
    fn a_chain_from_an_anchored_head_finds_a_record_changed_after_it() {
        let (_dir, state) = crate::state::testing::department(&NodeId([9; 32]));
        let store = &state.store;
        let log = CallLog::default();
        let mut anchored = Head::default();
        for n in 1..=5u8 {
            let mut c = call(n);
            c.id = Some(format!("{n:032}"));
            log.append(store, c).unwrap();
            if n == 2 {
                anchored = log.head(store).unwrap();
            }
        }
        let end = log.head(store).unwrap();
        // From the anchor at 2 to the head at 5, and by id.
        assert_eq!(chain_from(store, anchored, 5).unwrap(), Ok(end));
        assert_eq!(find(store, &format!("{:032}", 4)).unwrap().unwrap().seq, 4);
        assert_eq!(find(store, "call-3").unwrap().unwrap().seq, 3);
        assert!(find(store, "call-x").unwrap().is_none());
        // Record 4 rewritten: the chain no longer reaches the head anchored at 5.
        let mut r4 = find(store, "call-4").unwrap().unwrap();
        r4.status = Status::Failed;
        store
            .db()
            .put_cf(store.cf(CF_CALLS), 4u64.to_be_bytes(), codec::encode(&r4))
            .unwrap();
        let after = chain_from(store, anchored, 5).unwrap();
        assert!(after != Ok(end), "{after:?}");
        // A record dropped: the chain says which is missing.
        store
            .db()
            .delete_cf(store.cf(CF_CALLS), 5u64.to_be_bytes())
            .unwrap();
        let why = chain_from(store, anchored, 5).unwrap().unwrap_err();
        assert!(why.contains("record 5"), "{why}");
    }
}
