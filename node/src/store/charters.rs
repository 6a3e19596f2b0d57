//! Charter versions in the `meta` column family: every version held, oldest first, and the
//! evidence of equivocation (a second, different charter of a version held).

use rocksdb::{Direction, IteratorMode, WriteBatch};

use super::{Store, StoreError, Writer, CF_META};

const PREFIX: &[u8] = b"charter/";
const EVIDENCE: &[u8] = b"charter_evidence/";

fn key(prefix: &[u8], version: u64) -> Vec<u8> {
    let mut k = prefix.to_vec();
    k.extend_from_slice(&version.to_be_bytes());
    k
}

impl Store {
    /// Every charter envelope held, oldest version first.
    pub fn charters(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.prefixed(PREFIX)
    }

    /// The envelope of charter version `version`.
    pub fn charter(&self, version: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(CF_META), key(PREFIX, version))?)
    }

    /// Charter envelopes from version `from` on, at most `limit`.
    pub fn charters_from(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let start = key(PREFIX, from);
        let mut out = Vec::new();
        let mode = IteratorMode::From(&start, Direction::Forward);
        for kv in self.db.iterator_cf(self.cf(CF_META), mode) {
            let (k, v) = kv?;
            if !k.starts_with(PREFIX) || out.len() >= limit {
                break;
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }

    /// Stores a charter version (durably: the network and `status` act on it at once).
    pub fn put_charter(
        &self,
        w: &Writer<'_>,
        version: u64,
        envelope: &[u8],
    ) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), key(PREFIX, version), envelope);
        self.commit(w, batch, true)
    }

    /// Stores a charter that contradicts the version held (the held one is in the history).
    pub fn put_charter_evidence(
        &self,
        w: &Writer<'_>,
        version: u64,
        hash: &[u8; 32],
        envelope: &[u8],
    ) -> Result<(), StoreError> {
        let mut k = key(EVIDENCE, version);
        k.extend_from_slice(hash);
        let mut batch = WriteBatch::default();
        batch.put_cf(self.cf(CF_META), k, envelope);
        self.commit(w, batch, true)
    }

    /// Every contradicting charter envelope held as evidence.
    pub fn charter_evidence(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        self.prefixed(EVIDENCE)
    }

    fn prefixed(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        let mode = IteratorMode::From(prefix, Direction::Forward);
        for kv in self.db.iterator_cf(self.cf(CF_META), mode) {
            let (k, v) = kv?;
            if !k.starts_with(prefix) {
                break;
            }
            out.push(v.to_vec());
        }
        Ok(out)
    }
}
