//! The store's schema version and migrations.
//!
//! Version 1 is the first layout. Version 2 holds feed entries of layout 2 (each names the
//! charter version it is judged by) and every charter version (`charter/N`): a version-1 store's
//! entries cannot be judged or served to version-2 peers, so it is refused with what to do
//! rather than misread. Version 3 keeps each feed head's stamp (timestamp and charter version)
//! in its `heads` row; a version-2 store is migrated in place at open (one read per feed). A
//! store written by a newer huitong is refused too.

use rocksdb::{IteratorMode, WriteBatch};
use tracing::info;

use super::{entry_key, stored_stamp, Head, Store, StoreError, CF_ENTRIES, CF_HEADS, CF_META};
use huitong_protocol::{EntryHash, NodeId};

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = 3;
const KEY: &[u8] = b"schema_version";

/// Rewrites every version-2 head row (`seq ‖ hash`) with the stamp of its entry, and the
/// schema version, in one batch.
fn heads_with_stamps(store: &Store) -> Result<(), StoreError> {
    let mut batch = WriteBatch::default();
    let mut feeds = 0;
    for kv in store
        .db()
        .iterator_cf(store.cf(CF_HEADS), IteratorMode::Start)
    {
        let (k, v) = kv?;
        let (Ok(feed), Some(seq), Some(hash)) = (
            <[u8; 32]>::try_from(&k[..]).map(NodeId),
            v.get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes),
            v.get(8..40).and_then(|b| <[u8; 32]>::try_from(b).ok()),
        ) else {
            return Err(StoreError::Corrupt {
                cf: CF_HEADS,
                detail: "a version-2 head row is not 40 bytes".into(),
            });
        };
        let Some(stored) = store
            .db()
            .get_cf(store.cf(CF_ENTRIES), entry_key(&feed, seq))?
        else {
            return Err(StoreError::Corrupt {
                cf: CF_ENTRIES,
                detail: format!("the head entry {seq} of feed {feed} is missing"),
            });
        };
        let envelope = stored.get(32..).unwrap_or_default();
        let head = Head {
            seq,
            hash: EntryHash(hash),
            stamp: stored_stamp(&feed, seq, envelope)?,
        };
        store.put_head(&mut batch, &feed, &head);
        feeds += 1;
    }
    batch.put_cf(store.cf(CF_META), KEY, SCHEMA_VERSION.to_be_bytes());
    store.db().write(batch)?;
    info!(
        feeds,
        "store migrated to schema 3 (feed heads keep their stamps)"
    );
    Ok(())
}

pub(super) fn migrate(store: &Store) -> Result<(), StoreError> {
    let cf = store.cf(CF_META);
    match store.db().get_cf(cf, KEY)? {
        None => {
            store.db().put_cf(cf, KEY, SCHEMA_VERSION.to_be_bytes())?;
            Ok(())
        }
        Some(v) => {
            let found = <[u8; 4]>::try_from(&v[..])
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    cf: CF_META,
                    detail: "schema version is not 4 bytes".into(),
                })?;
            if found > SCHEMA_VERSION {
                return Err(StoreError::TooNew { found });
            }
            match found {
                2 => heads_with_stamps(store),
                f if f < 2 => Err(StoreError::TooOld { found }),
                _ => Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use huitong_protocol::feed::{Event, FeedEntry, Stamp, FEED_ENTRY_VERSION};
    use huitong_protocol::{ResourceCode, SecretKey};

    use super::*;

    /// A version-2 store (40-byte head rows) opens as version 3 with each head's stamp read
    /// from its entry, once; a head row of the wrong length is reported, not misread.
    #[test]
    fn version_2_heads_gain_their_stamps_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = SecretKey::from_bytes([9; 32]);
        let entry = FeedEntry {
            version: FEED_ENTRY_VERSION,
            feed: key.public(),
            seq: 7,
            prev: EntryHash([1; 32]),
            timestamp_ms: 1_700_000_000_123,
            charter: 4,
            event: Event::CatalogueWithdrawn {
                code: ResourceCode::parse("101001/000001").unwrap(),
                reason: "test".into(),
            },
            by: None,
        };
        let sealed = entry.seal(&key);
        {
            let store = Store::open(dir.path()).unwrap();
            let mut stored = sealed.hash.0.to_vec();
            stored.extend_from_slice(&sealed.envelope.to_bytes());
            let db = store.db();
            db.put_cf(store.cf(CF_ENTRIES), entry_key(&entry.feed, 7), stored)
                .unwrap();
            let mut old_head = 7u64.to_be_bytes().to_vec();
            old_head.extend_from_slice(&sealed.hash.0);
            db.put_cf(store.cf(CF_HEADS), entry.feed.0, old_head)
                .unwrap();
            db.put_cf(store.cf(CF_META), KEY, 2u32.to_be_bytes())
                .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let head = store.head(&entry.feed).unwrap();
        assert_eq!((head.seq, head.hash), (7, sealed.hash));
        assert_eq!(
            head.stamp,
            Stamp {
                timestamp_ms: 1_700_000_000_123,
                charter: 4
            }
        );
        let version = store.db().get_cf(store.cf(CF_META), KEY).unwrap().unwrap();
        assert_eq!(version, SCHEMA_VERSION.to_be_bytes());
        // A truncated row in a version-3 store is corruption, said as such.
        store
            .db()
            .put_cf(store.cf(CF_HEADS), entry.feed.0, [0u8; 40])
            .unwrap();
        let err = store.head(&entry.feed).unwrap_err().to_string();
        assert!(err.contains("is 40 bytes, not 56"), "{err}");
    }
}
