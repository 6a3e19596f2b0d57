//! ed25519 verification under ZIP-215 rules, one signature or many at once: how feed entries of
//! layout 3 ([`crate::feed::FEED_ENTRY_VERSION`]) are judged; they may name only a charter
//! version of layout 2 or later, so which rules judge an entry is fixed by signed data every
//! node holds, not by the release it runs ([`crate::Charter::signature_rule`]).
//!
//! Why not strict verification (what every other envelope kind uses): a node learns a feed
//! entry either alone (gossip) or in a range answer of up to 2,000, and a range is cheapest to
//! check as one batch (a random linear combination of the signatures: about 7–9 µs each instead
//! of ~38 µs, `docs/benchmarks.md`). Every node must reach the same verdict on an entry however
//! it arrived, or a hostile member could split a feed between nodes that synced it by range and
//! nodes that got it by gossip. Batch and strict single checks can disagree (a signature with a
//! small-order component); under ZIP-215 (cofactored equations, as `ed25519-zebra` implements
//! them) the single and the batch check accept exactly the same signatures. ZIP-215 accepts
//! every signature strict verification accepts and some malleated forms of them besides; an
//! entry's identity and chain link are the BLAKE3 of its payload, never of its signature, so a
//! malleated signature makes the same entry (a duplicate), not a fork.
//!
//! Layering: a leaf of the protocol crate (no I/O beyond the OS random source).

use std::convert::Infallible;

use ed25519_zebra::{batch, Signature, VerificationKey, VerificationKeyBytes};

use crate::NodeId;

/// Whether `sig` is `key`'s signature of `msg` under ZIP-215 rules.
pub fn verify(key: &NodeId, msg: &[u8], sig: &[u8; 64]) -> bool {
    let Ok(key) = VerificationKey::try_from(key.0) else {
        return false;
    };
    key.verify(&Signature::from_bytes(sig), msg).is_ok()
}

/// Whether every signature of `items` verifies under ZIP-215 rules, checked as one batch:
/// `true` exactly when [`verify`] holds for each (a batch holding a bad signature passes with
/// probability 2⁻¹²⁸: the coefficients are drawn from a key the operating system makes up for
/// this batch, which no signer can know). `false` when the OS random source fails, so a caller
/// that then checks one by one loses nothing but time.
pub fn verify_batch<'a>(
    items: impl IntoIterator<Item = (&'a NodeId, &'a [u8], &'a [u8; 64])>,
) -> bool {
    let Some(rng) = Coefficients::from_os() else {
        return false;
    };
    let mut verifier = batch::Verifier::new();
    for (key, msg, sig) in items {
        verifier.queue((
            VerificationKeyBytes::from(key.0),
            Signature::from_bytes(sig),
            msg,
        ));
    }
    verifier.verify(rng).is_ok()
}

/// The batch check's random coefficients: the BLAKE3 output stream under a 32-byte key from the
/// operating system, one key per batch (one system call, not one per signature).
struct Coefficients(blake3::OutputReader);

impl Coefficients {
    fn from_os() -> Option<Self> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).ok()?;
        Some(Self(
            blake3::Hasher::new_keyed(&key)
                .update(b"huitong zip215 batch coefficients")
                .finalize_xof(),
        ))
    }
}

impl rand_core::TryRng for Coefficients {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        let mut b = [0u8; 4];
        self.0.fill(&mut b);
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        let mut b = [0u8; 8];
        self.0.fill(&mut b);
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        self.0.fill(dst);
        Ok(())
    }
}

/// A keyed BLAKE3 output stream is a cryptographically secure generator while its key is secret.
impl rand_core::TryCryptoRng for Coefficients {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    /// Signed messages: (signer, message, signature).
    type Signed = Vec<(NodeId, Vec<u8>, [u8; 64])>;

    fn signed(n: usize) -> Signed {
        let keys: Vec<SecretKey> = (1..=3u8).map(|s| SecretKey::from_bytes([s; 32])).collect();
        (0..n)
            .map(|i| {
                let k = &keys[i % keys.len()];
                let msg = format!("entry {i}").into_bytes();
                let sig = k.sign(&msg);
                (k.public(), msg, sig)
            })
            .collect()
    }

    fn batch_of(items: &[(NodeId, Vec<u8>, [u8; 64])]) -> bool {
        verify_batch(items.iter().map(|(k, m, s)| (k, m.as_slice(), s)))
    }

    #[test]
    fn honest_signatures_verify_alone_and_in_a_batch() {
        let items = signed(50);
        assert!(items.iter().all(|(k, m, s)| verify(k, m, s)));
        assert!(batch_of(&items));
        assert!(batch_of(&[]), "an empty batch holds no bad signature");
    }

    #[test]
    fn one_bad_signature_fails_the_batch_wherever_it_is() {
        let items = signed(40);
        for at in [0, 17, 39] {
            // A flipped bit in the message, in R, and in s.
            for flip in 0..3 {
                let mut bad = items.clone();
                match flip {
                    0 => bad[at].1[0] ^= 1,
                    1 => bad[at].2[3] ^= 1,
                    _ => bad[at].2[40] ^= 1,
                }
                assert!(!verify(&bad[at].0, &bad[at].1, &bad[at].2));
                assert!(!batch_of(&bad), "bad item {at}, flip {flip}");
            }
        }
        // Another key's signature.
        let mut swapped = items.clone();
        swapped[5].0 = items[6].0;
        assert!(!batch_of(&swapped));
    }

    #[test]
    fn strict_signatures_are_zip215_signatures() {
        // What a node signs (ed25519-dalek) verifies under both rules.
        let items = signed(10);
        for (k, m, s) in &items {
            assert!(k.verify(m, s));
            assert!(verify(k, m, s));
        }
    }

    #[test]
    fn a_small_order_component_gets_one_verdict_alone_and_in_a_batch() {
        // What matters is that the single and the batch check agree, so no node's verdict
        // depends on whether the entry came alone or in a range.
        let key = crafted::key();
        let msg = b"an entry".to_vec();
        let sig = crafted::sign(&msg);
        assert!(!key.verify(&msg, &sig), "strict verification refuses it");
        assert!(verify(&key, &msg, &sig));
        let mut items = signed(20);
        items.insert(7, (key, msg, sig));
        assert!(
            batch_of(&items),
            "the batch accepts what the single check accepts"
        );
    }

    #[test]
    fn a_non_canonical_s_is_refused_alone_and_in_a_batch() {
        // s + ℓ (the group order): same point equation, but s must be below ℓ (ZIP-215 too).
        let mut items = signed(3);
        const ELL: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let s = &mut items[1].2[32..];
        let mut carry = 0u16;
        for (b, l) in s.iter_mut().zip(ELL) {
            let sum = u16::from(*b) + u16::from(l) + carry;
            *b = sum as u8;
            carry = sum >> 8;
        }
        assert!(!verify(&items[1].0, &items[1].1, &items[1].2));
        assert!(!batch_of(&items));
    }
}

/// A signature only ZIP-215 accepts, for tests: R' = rB + T with T of order 8 and
/// s = r + k·a for k = H(R' ‖ A ‖ M). Strict verification refuses it (R' ≠ sB − kA); the
/// cofactored equation holds (8T = 0).
#[cfg(test)]
pub(crate) mod crafted {
    use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};

    use crate::NodeId;

    fn secret() -> Scalar {
        Scalar::from_bytes_mod_order([7; 32])
    }

    /// The signer's key.
    pub(crate) fn key() -> NodeId {
        NodeId((secret() * ED25519_BASEPOINT_POINT).compress().to_bytes())
    }

    /// Its ZIP-215-only signature of `msg`.
    pub(crate) fn sign(msg: &[u8]) -> [u8; 64] {
        let r = Scalar::from_bytes_mod_order([9; 32]);
        let big_r = (r * ED25519_BASEPOINT_POINT + EIGHT_TORSION[1]).compress();
        let mut h = Sha512::new();
        h.update(big_r.as_bytes());
        h.update(key().0);
        h.update(msg);
        let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(big_r.as_bytes());
        sig[32..].copy_from_slice((r + k * secret()).as_bytes());
        sig
    }
}
