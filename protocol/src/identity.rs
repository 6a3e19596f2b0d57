//! Node identity: an ed25519 key pair. The libp2p `PeerId` of a node is derived from the same
//! public key (see `node::net::identity`), so one key signs feeds and authenticates transport.

use std::fmt;

use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

/// A node's (or the federation authority's) ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(#[serde(with = "crate::bytes32")] pub [u8; 32]);

impl NodeId {
    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(s.trim()).map_err(|_| KeyError::BadHex)?;
        let arr: [u8; 32] = bytes.try_into().map_err(|_| KeyError::BadLength)?;
        Self::from_bytes(arr)
    }

    /// Checks that the bytes are a valid ed25519 point.
    pub fn from_bytes(bytes: [u8; 32]) -> Result<Self, KeyError> {
        decompressed::get(&bytes).ok_or(KeyError::NotAPoint)?;
        Ok(Self(bytes))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Verifies an ed25519 signature over `msg` (strict verification: no malleable signatures).
    pub fn verify(&self, msg: &[u8], sig: &[u8; 64]) -> bool {
        let Some(key) = decompressed::get(&self.0) else {
            return false;
        };
        let sig = ed25519_dalek::Signature::from_bytes(sig);
        let ok = key.verify_strict(msg, &sig).is_ok();
        if ok {
            decompressed::keep(&self.0, key);
        }
        ok
    }
}

/// Public keys kept decompressed. Decompressing a point (a field square root) is a good part of
/// an ed25519 verification, and a node checks the same few signers again and again (feeds,
/// providers' answers, envelopes decoded then verified). Only keys that have just verified a
/// signature are kept (a peer cannot fill the set with keys it merely names), and the set is
/// bounded (emptied when full), so keys a peer makes up cost what they cost without it.
mod decompressed {
    use std::collections::HashMap;
    use std::sync::{LazyLock, Mutex};

    use ed25519_dalek::VerifyingKey;

    /// Keys kept at most (about 200 bytes each; fewer in unit tests, which fill the set).
    pub(super) const KEPT: usize = if cfg!(test) { 64 } else { 4096 };

    static KEYS: LazyLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));

    /// The key `bytes` decompressed (kept, or decompressed now), or `None` if they are not a
    /// valid point.
    pub(super) fn get(bytes: &[u8; 32]) -> Option<VerifyingKey> {
        if let Some(k) = KEYS.lock().unwrap_or_else(|p| p.into_inner()).get(bytes) {
            return Some(*k);
        }
        VerifyingKey::from_bytes(bytes).ok()
    }

    /// Keeps `key`, decompressed from `bytes`, which has just verified a signature.
    pub(super) fn keep(bytes: &[u8; 32], key: VerifyingKey) {
        let mut keys = KEYS.lock().unwrap_or_else(|p| p.into_inner());
        if keys.contains_key(bytes) {
            return;
        }
        if keys.len() >= KEPT {
            keys.clear();
        }
        keys.insert(*bytes, key);
    }

    /// How many keys are kept.
    #[cfg(test)]
    pub(super) fn kept() -> usize {
        KEYS.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether `bytes` are kept.
    #[cfg(test)]
    pub(super) fn holds(bytes: &[u8; 32]) -> bool {
        KEYS.lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(bytes)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &self.to_hex()[..16])
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A secret ed25519 signing key (node key or authority key).
pub struct SecretKey(ed25519_dalek::SigningKey);

impl SecretKey {
    /// Builds a key from its 32 secret bytes (callers draw them from the OS RNG).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(ed25519_dalek::SigningKey::from_bytes(&bytes))
    }

    /// The 32 secret bytes, for writing the key file.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// Signs `msg`.
    pub fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.0.sign(msg).to_bytes()
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public={})", self.public().to_hex())
    }
}

/// A key could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// Not hexadecimal.
    #[error("not hexadecimal")]
    BadHex,
    /// Not 32 bytes.
    #[error("an ed25519 public key is 32 bytes (64 hex characters)")]
    BadLength,
    /// Not a curve point.
    #[error("not a valid ed25519 public key")]
    NotAPoint,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes([seed; 32])
    }

    #[test]
    fn kept_keys_verify_as_before() {
        let (a, b) = (key(1), key(2));
        let sig = a.sign(b"entry");
        // Twice: the second time the key comes decompressed from the kept set.
        for _ in 0..2 {
            assert!(a.public().verify(b"entry", &sig));
            assert!(!a.public().verify(b"other", &sig));
            assert!(!b.public().verify(b"entry", &sig));
        }
    }

    #[test]
    fn bytes_that_are_no_point_stay_refused() {
        let not_a_point = (0u8..=255)
            .map(|i| [i; 32])
            .find(|b| ed25519_dalek::VerifyingKey::from_bytes(b).is_err())
            .expect("some repeated byte is not a point");
        for _ in 0..2 {
            assert!(matches!(
                NodeId::from_bytes(not_a_point),
                Err(KeyError::NotAPoint)
            ));
            assert!(!NodeId(not_a_point).verify(b"entry", &[0; 64]));
        }
    }

    #[test]
    fn only_keys_that_verified_are_kept_and_the_set_is_bounded() {
        // A key no other test of this crate signs with (the set is shared by all of them).
        let named = SecretKey::from_bytes(*blake3::hash(b"identity: a key only named").as_bytes());
        let named = named.public();
        assert!(NodeId::from_bytes(named.0).is_ok());
        assert!(!named.verify(b"entry", &key(4).sign(b"entry")));
        assert!(!decompressed::holds(&named.0), "named or failed: not kept");
        for i in 0..(decompressed::KEPT + 10) {
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            let k = SecretKey::from_bytes(seed);
            assert!(k.public().verify(b"entry", &k.sign(b"entry")));
            assert!(decompressed::kept() <= decompressed::KEPT);
        }
        // Other tests verify at the same time and may empty the set when it is full: a verified
        // key is kept unless that happened just now, so one of a few tries shows it.
        let last = SecretKey::from_bytes([9; 32]);
        let kept = (0..10).any(|_| {
            assert!(last.public().verify(b"entry", &last.sign(b"entry")));
            decompressed::holds(&last.public().0)
        });
        assert!(kept, "a verified key is kept");
    }
}
