//! Checkpoints as signed notes: the hub signs (c2sp.org/signed-note, Ed25519, key name = the log
//! origin), the cascade node cosigns as a witness (c2sp.org/tlog-cosignature `cosignature/v1`,
//! an 8-byte timestamp and an Ed25519 signature over `cosignature/v1\ntime T\n` and the
//! checkpoint text). Node keys are used directly; `signed_note` does the note format.

use signed_note::{Note, NoteError, Signer, Verifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

use crate::{NodeId, SecretKey};

/// Largest checkpoint note a node accepts (a checkpoint with a few cosignatures is < 1 KiB).
pub const MAX_NOTE_BYTES: usize = 16 * 1024;

const ALG_ED25519: u8 = 0x01;
const ALG_COSIGNATURE_V1: u8 = 0x04;

fn key_id(name: &str, alg: u8, key: &NodeId) -> u32 {
    let mut encoded = vec![alg];
    encoded.extend_from_slice(&key.0);
    signed_note::key_id(name, &encoded)
}

/// The key name of a witness: `huitong.witness/` and 16 hex digits of its node key.
pub fn witness_name(key: &NodeId) -> String {
    format!("huitong.witness/{}", &key.to_hex()[..16])
}

fn cosigned_message(time: u64, text: &[u8]) -> Vec<u8> {
    let mut m = format!("cosignature/v1\ntime {time}\n").into_bytes();
    m.extend_from_slice(text);
    m
}

/// A node key signing a note: as the log (alg 0x01), or as a witness cosigning at `time`
/// (`cosignature/v1`, alg 0x04).
struct NodeSigner<'a> {
    name: String,
    id: u32,
    key: &'a SecretKey,
    cosign_time: Option<u64>,
}

impl Signer for NodeSigner<'_> {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        Ok(match self.cosign_time {
            None => self.key.sign(msg).to_vec(),
            Some(time) => {
                let mut sig = time.to_be_bytes().to_vec();
                sig.extend_from_slice(&self.key.sign(&cosigned_message(time, msg)));
                sig
            }
        })
    }
}

/// Checks the hub's signature (alg 0x01) or a witness's cosignature (alg 0x04).
struct KeyVerifier {
    name: String,
    id: u32,
    key: NodeId,
    cosignature: bool,
}

impl Verifier for KeyVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if self.cosignature {
            let Some((time, sig)) = sig.split_first_chunk::<8>() else {
                return false;
            };
            let Ok(sig) = <[u8; 64]>::try_from(sig) else {
                return false;
            };
            self.key
                .verify(&cosigned_message(u64::from_be_bytes(*time), msg), &sig)
        } else {
            <[u8; 64]>::try_from(sig).is_ok_and(|s| self.key.verify(msg, &s))
        }
    }
}

impl KeyVerifier {
    fn log(origin: &str, key: &NodeId) -> Self {
        Self {
            name: origin.to_owned(),
            id: key_id(origin, ALG_ED25519, key),
            key: *key,
            cosignature: false,
        }
    }

    fn witness(key: &NodeId) -> Self {
        let name = witness_name(key);
        Self {
            id: key_id(&name, ALG_COSIGNATURE_V1, key),
            name,
            key: *key,
            cosignature: true,
        }
    }
}

/// Why a checkpoint note was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Larger than [`MAX_NOTE_BYTES`].
    #[error("checkpoint note is larger than {MAX_NOTE_BYTES} bytes")]
    TooLarge,
    /// Not a signed note, or a signature that does not verify.
    #[error("checkpoint note: {0}")]
    Note(#[from] NoteError),
    /// Verified signatures, none of them the hub's.
    #[error("the checkpoint is not signed by the hub's key for {0}")]
    NotByHub(String),
    /// The text is not a checkpoint.
    #[error("the signed text is not a c2sp.org/tlog-checkpoint")]
    Malformed,
    /// Another log's checkpoint.
    #[error("checkpoint of log {found:?}, expected {expected:?}")]
    Origin {
        /// Origin found.
        found: String,
        /// Origin expected.
        expected: String,
    },
}

/// A checkpoint whose hub signature (and any known witness cosignatures) verified.
#[derive(Clone, Debug, PartialEq)]
pub struct SignedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The note in canonical form: the text, the hub's signature, then the cosignature of each
    /// known witness that verified (in the order of the witness list), nothing else. Signature
    /// lines of unknown keys, and repeats of a known key's, are dropped, so two copies of one
    /// checkpoint differ only in which witnesses cosigned.
    pub note: Vec<u8>,
    /// Witnesses whose cosignature verified, with the time they cosigned (s).
    pub cosigned_by: Vec<(NodeId, u64)>,
}

impl SignedCheckpoint {
    /// The checkpoint text alone (what was signed).
    pub fn text(&self) -> Vec<u8> {
        Note::from_bytes(&self.note)
            .map(|n| n.text().to_vec())
            .unwrap_or_default()
    }
}

/// Signs a checkpoint of the tree `(size, root)` with the hub's key.
pub fn sign_checkpoint(key: &SecretKey, origin: &str, size: u64, root: Hash) -> Vec<u8> {
    let text = match Checkpoint::new(origin, size, root, "") {
        Ok(c) => c.to_bytes(),
        // `origin()` never makes an empty origin; keep the signature over a valid text anyway.
        Err(_) => format!("{origin}\n{size}\n{root}\n").into_bytes(),
    };
    let signer = NodeSigner {
        name: origin.to_owned(),
        id: key_id(origin, ALG_ED25519, &key.public()),
        key,
        cosign_time: None,
    };
    let mut note = match Note::new(&text, &[]) {
        Ok(n) => n,
        Err(_) => return Vec::new(),
    };
    match note.add_sigs(&[&signer]) {
        Ok(()) => note.to_bytes(),
        Err(_) => Vec::new(),
    }
}

/// Adds `witness`'s cosignature at `time` (s) to a checkpoint note.
pub fn cosign(note: &[u8], witness: &SecretKey, time: u64) -> Result<Vec<u8>, CheckpointError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(CheckpointError::TooLarge);
    }
    let mut n = Note::from_bytes(note)?;
    let public = witness.public();
    let name = witness_name(&public);
    let signer = NodeSigner {
        id: key_id(&name, ALG_COSIGNATURE_V1, &public),
        name,
        key: witness,
        cosign_time: Some(time),
    };
    n.add_sigs(&[&signer])?;
    Ok(n.to_bytes())
}

/// Opens a checkpoint note: it must carry a valid signature of `hub` under `origin`; the
/// cosignatures of `witnesses` are checked too (a bad one refuses the note), others are ignored.
/// The note returned is canonical (see [`SignedCheckpoint::note`]): what a node stores, vouches
/// for and passes on holds no signature it did not verify.
pub fn open_checkpoint(
    bytes: &[u8],
    origin: &str,
    hub: &NodeId,
    witnesses: &[NodeId],
) -> Result<SignedCheckpoint, CheckpointError> {
    if bytes.len() > MAX_NOTE_BYTES {
        return Err(CheckpointError::TooLarge);
    }
    let note = Note::from_bytes(bytes)?;
    let log = KeyVerifier::log(origin, hub);
    let (log_name, log_id) = (log.name.clone(), log.id);
    let mut list: Vec<Box<dyn Verifier>> = vec![Box::new(log)];
    list.extend(
        witnesses
            .iter()
            .map(|w| Box::new(KeyVerifier::witness(w)) as Box<dyn Verifier>),
    );
    let (verified, _unknown) = note.verify(&VerifierList::new(list))?;
    let Some(hub_signature) = verified
        .iter()
        .find(|s| s.name() == log_name && s.id() == log_id)
    else {
        return Err(CheckpointError::NotByHub(origin.to_owned()));
    };
    let checkpoint = Checkpoint::from_bytes(note.text()).map_err(|_| CheckpointError::Malformed)?;
    if checkpoint.origin() != origin {
        return Err(CheckpointError::Origin {
            found: checkpoint.origin().to_owned(),
            expected: origin.to_owned(),
        });
    }
    let mut signatures = vec![hub_signature.clone()];
    let mut cosigned_by = Vec::new();
    for w in witnesses {
        let v = KeyVerifier::witness(w);
        if cosigned_by.iter().any(|(k, _)| k == w) {
            continue;
        }
        let Some(s) = verified
            .iter()
            .find(|s| s.name() == v.name && s.id() == v.id)
        else {
            continue;
        };
        let Some(time) = s.signature().first_chunk::<8>() else {
            continue;
        };
        cosigned_by.push((*w, u64::from_be_bytes(*time)));
        signatures.push(s.clone());
    }
    let canonical = Note::new(note.text(), &signatures)?.to_bytes();
    Ok(SignedCheckpoint {
        size: checkpoint.size(),
        root: *checkpoint.hash(),
        note: canonical,
        cosigned_by,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_cosign_open() {
        let hub = SecretKey::from_bytes([3; 32]);
        let city = SecretKey::from_bytes([4; 32]);
        let origin = crate::audit::origin("海门区");
        let root = tlog_tiles::record_hash(b"x");
        let note = sign_checkpoint(&hub, &origin, 1, root);
        let opened = open_checkpoint(&note, &origin, &hub.public(), &[city.public()])
            .expect("hub-signed checkpoint opens");
        assert_eq!((opened.size, opened.root), (1, root));
        assert!(opened.cosigned_by.is_empty());

        let cosigned = cosign(&note, &city, 1_800_000_000).expect("cosigns");
        let opened = open_checkpoint(&cosigned, &origin, &hub.public(), &[city.public()])
            .expect("cosigned checkpoint opens");
        assert_eq!(opened.cosigned_by, vec![(city.public(), 1_800_000_000)]);

        // Signed by someone else under the hub's name: refused.
        let forged = sign_checkpoint(&city, &origin, 1, root);
        assert!(open_checkpoint(&forged, &origin, &hub.public(), &[]).is_err());
        // Another origin: refused.
        assert!(open_checkpoint(&note, "other", &hub.public(), &[]).is_err());
        // A changed size under the same signature: refused.
        let text = String::from_utf8(note.clone()).expect("utf-8");
        let changed = text.replacen("\n1\n", "\n2\n", 1);
        assert!(open_checkpoint(changed.as_bytes(), &origin, &hub.public(), &[]).is_err());
    }

    /// Review s7, M3: what `open_checkpoint` returns holds only the signatures it verified, in
    /// one order, so padded copies of a checkpoint are the same note.
    #[test]
    fn opened_notes_are_canonical() {
        let hub = SecretKey::from_bytes([3; 32]);
        let (city, town) = (
            SecretKey::from_bytes([4; 32]),
            SecretKey::from_bytes([5; 32]),
        );
        let stranger = SecretKey::from_bytes([6; 32]);
        let origin = crate::audit::origin("海门区");
        let witnesses = [city.public(), town.public()];
        let note = sign_checkpoint(&hub, &origin, 1, tlog_tiles::record_hash(b"x"));
        let open =
            |n: &[u8]| open_checkpoint(n, &origin, &hub.public(), &witnesses).expect("opens");
        assert_eq!(
            open(&note).note,
            note,
            "a note with nothing extra is kept as it is"
        );

        // A stranger's line is dropped; the witnesses' follow the hub's in the list's order.
        let by_city = cosign(&note, &city, 1_800_000_000).expect("cosigns");
        let both = cosign(&by_city, &town, 1_800_000_001).expect("cosigns");
        let town_first = cosign(
            &cosign(&note, &town, 1_800_000_001).expect("cosigns"),
            &city,
            1_800_000_000,
        )
        .expect("cosigns");
        let padded = cosign(&town_first, &stranger, 1_800_000_002).expect("cosigns");
        assert_ne!(padded, both);
        let opened = open(&padded);
        assert_eq!(opened.note, both);
        assert_eq!(
            opened.cosigned_by,
            vec![
                (city.public(), 1_800_000_000),
                (town.public(), 1_800_000_001)
            ]
        );
        assert_eq!(
            open(&opened.note),
            opened,
            "canonical notes open to themselves"
        );

        // Only the hub's signature is kept when the witnesses are not known.
        let bare = open_checkpoint(&padded, &origin, &hub.public(), &[]).expect("opens");
        assert_eq!(bare.note, note);
    }
}
