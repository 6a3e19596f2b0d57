//! The c2sp.org/tlog-proof@v1 file: a checkpoint (with cosignatures), an entry index, its
//! Merkle inclusion proof, and — in `extra` — the entry itself, so the file alone proves that
//! this exact [`Record`] is in the hub's log. Checking it needs no network: only the log's
//! origin and the hub's (and witnesses') public keys.

use base64::prelude::*;
use tlog_tiles::{check_record, record_hash, Hash};

use super::note::{open_checkpoint, CheckpointError, SignedCheckpoint, MAX_NOTE_BYTES};
use super::{Record, MAX_PROOF_HASHES, MAX_RECORD_BYTES};
use crate::NodeId;

/// First line of the format.
pub const HEADER: &str = "c2sp.org/tlog-proof@v1";
/// Largest proof file accepted.
pub const MAX_PROOF_FILE_BYTES: usize = MAX_NOTE_BYTES + 8 * 1024;

/// An inclusion proof of one entry.
#[derive(Clone, Debug, PartialEq)]
pub struct TlogProof {
    /// The entry bytes (a CBOR [`Record`]), carried in `extra`.
    pub entry: Vec<u8>,
    /// The entry's index.
    pub index: u64,
    /// The inclusion proof against the checkpoint's tree.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note.
    pub checkpoint: Vec<u8>,
}

/// Why a proof was refused; every message names the index when it is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Not a tlog-proof file.
    #[error("not a c2sp.org/tlog-proof@v1 file: {0}")]
    Format(String),
    /// The checkpoint does not verify.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The entry is not a huitong audit record.
    #[error("entry {index}: not an audit record: {detail}")]
    Record {
        /// Index.
        index: u64,
        /// Why.
        detail: String,
    },
    /// The Merkle proof does not lead to the checkpoint's root.
    #[error("entry {index} is not included in the log of size {size} (root {root}): the inclusion proof does not match")]
    NotIncluded {
        /// Index.
        index: u64,
        /// Checkpoint tree size.
        size: u64,
        /// Checkpoint root.
        root: String,
    },
}

/// A proof that checked out.
#[derive(Clone, Debug)]
pub struct VerifiedProof {
    /// The record proved.
    pub record: Record,
    /// Its index.
    pub index: u64,
    /// The checkpoint it is proved against.
    pub checkpoint: SignedCheckpoint,
}

impl TlogProof {
    /// The file bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = format!(
            "{HEADER}\nextra {}\nindex {}\n",
            BASE64_STANDARD.encode(&self.entry),
            self.index
        );
        for h in &self.hashes {
            s.push_str(&BASE64_STANDARD.encode(h.0));
            s.push('\n');
        }
        s.push('\n');
        let mut out = s.into_bytes();
        out.extend_from_slice(&self.checkpoint);
        out
    }

    /// Parses file bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProofError> {
        let bad = |m: &str| ProofError::Format(m.to_owned());
        if bytes.len() > MAX_PROOF_FILE_BYTES {
            return Err(bad("larger than a proof can be"));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad("missing header line"));
        }
        let mut line = lines.next().ok_or_else(|| bad("missing index line"))?;
        let mut entry = None;
        if let Some(e) = line.strip_prefix("extra ") {
            entry = Some(
                BASE64_STANDARD
                    .decode(e)
                    .map_err(|_| bad("extra is not base64"))?,
            );
            line = lines.next().ok_or_else(|| bad("missing index line"))?;
        }
        let entry = entry.ok_or_else(|| bad("no extra line carrying the audit record"))?;
        let index = line
            .strip_prefix("index ")
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| bad("bad index line"))?;
        let hashes = lines
            .map(|l| Hash::parse_hash(l).map_err(|_| bad("a proof line is not a base64 hash")))
            .collect::<Result<Vec<_>, _>>()?;
        if hashes.len() > MAX_PROOF_HASHES {
            return Err(bad("too many proof hashes"));
        }
        Ok(Self {
            entry,
            index,
            hashes,
            checkpoint: checkpoint.as_bytes().to_vec(),
        })
    }

    /// Checks the proof offline: the checkpoint's signatures, that the entry is a record, and
    /// that the entry's leaf hash with the proof leads to the checkpoint's root.
    pub fn verify(
        &self,
        origin: &str,
        hub: &NodeId,
        witnesses: &[NodeId],
    ) -> Result<VerifiedProof, ProofError> {
        let checkpoint = open_checkpoint(&self.checkpoint, origin, hub, witnesses)?;
        let index = self.index;
        if self.entry.len() > MAX_RECORD_BYTES {
            return Err(ProofError::Record {
                index,
                detail: "too large".into(),
            });
        }
        let record = Record::decode(&self.entry).map_err(|e| ProofError::Record {
            index,
            detail: e.to_string(),
        })?;
        check_inclusion(&self.hashes, &checkpoint, index, record_hash(&self.entry))?;
        Ok(VerifiedProof {
            record,
            index,
            checkpoint,
        })
    }
}

/// Checks that the leaf `leaf` is at `index` of the checkpoint's tree.
pub fn check_inclusion(
    hashes: &[Hash],
    checkpoint: &SignedCheckpoint,
    index: u64,
    leaf: Hash,
) -> Result<(), ProofError> {
    let not_included = || ProofError::NotIncluded {
        index,
        size: checkpoint.size,
        root: checkpoint.root.to_string(),
    };
    if hashes.len() > MAX_PROOF_HASHES || index >= checkpoint.size {
        return Err(not_included());
    }
    check_record(
        &hashes.to_vec(),
        checkpoint.size,
        checkpoint.root,
        index,
        leaf,
    )
    .map_err(|_| not_included())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::note::sign_checkpoint;
    use crate::audit::RecordKind;
    use crate::SecretKey;
    use tlog_tiles::{node_hash, record_hash};

    fn record(i: u8) -> Vec<u8> {
        Record {
            kind: RecordKind::Receipt,
            id: format!("{i:016x}"),
            signer: SecretKey::from_bytes([9; 32]).public(),
            seq: u64::from(i),
            hash: [i; 32],
            at_ms: 0,
        }
        .encode()
    }

    #[test]
    fn proof_file_round_trip_and_tamper() {
        let hub = SecretKey::from_bytes([5; 32]);
        let origin = "huitong.audit/test";
        let (a, b) = (record(0), record(1));
        let root = node_hash(record_hash(&a), record_hash(&b));
        let checkpoint = sign_checkpoint(&hub, origin, 2, root);
        let proof = TlogProof {
            entry: b.clone(),
            index: 1,
            hashes: vec![record_hash(&a)],
            checkpoint,
        };
        let bytes = proof.to_bytes();
        assert!(bytes.starts_with(b"c2sp.org/tlog-proof@v1\nextra "));
        let parsed = TlogProof::from_bytes(&bytes).expect("parses");
        assert_eq!(parsed, proof);
        let ok = parsed.verify(origin, &hub.public(), &[]).expect("verifies");
        assert_eq!(ok.index, 1);
        assert_eq!(ok.record.seq, 1);

        // The other entry under the same proof: refused, naming the index.
        let mut wrong = proof.clone();
        wrong.entry = a;
        let e = wrong.verify(origin, &hub.public(), &[]).unwrap_err();
        assert!(e.to_string().contains("entry 1 is not included"), "{e}");
        // Another hub key: refused.
        let other = SecretKey::from_bytes([6; 32]).public();
        assert!(proof.verify(origin, &other, &[]).is_err());
        // Garbage: a format error, not a panic.
        assert!(TlogProof::from_bytes(b"c2sp.org/tlog-proof@v1\nindex x\n\n").is_err());
    }
}
