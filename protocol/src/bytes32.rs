//! Serde for the 32-byte values people copy around: node keys (which are also feed ids), entry,
//! chunk and audit record hashes.
//!
//! Two forms, chosen by the format: a CBOR byte string wherever bytes are signed, stored or sent
//! (`ciborium` is not human-readable), lower-case hex wherever people read them — the admin API's
//! JSON, `huitong … --json`, TOML. The CBOR form is exactly what `serde_bytes` wrote before this
//! module existed, so no signed byte changes (`tests/vectors.rs` pins it). Reading a
//! human-readable format also accepts the array of 32 numbers that the JSON of earlier versions
//! showed, so a new CLI still reads a node that has not been restarted yet.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Serializer;

/// Serialises 32 bytes: hex for people, a byte string for CBOR.
pub(crate) fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    if s.is_human_readable() {
        s.serialize_str(&hex::encode(bytes))
    } else {
        serde_bytes::serialize(bytes, s)
    }
}

/// Deserialises 32 bytes from either form.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
    if d.is_human_readable() {
        d.deserialize_any(Bytes32)
    } else {
        serde_bytes::deserialize(d)
    }
}

struct Bytes32;

impl<'de> Visitor<'de> for Bytes32 {
    type Value = [u8; 32];

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("64 hex digits (32 bytes)")
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<[u8; 32], E> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| E::invalid_value(de::Unexpected::Str(s), &self))?;
        Ok(out)
    }

    fn visit_bytes<E: de::Error>(self, b: &[u8]) -> Result<[u8; 32], E> {
        b.try_into().map_err(|_| E::invalid_length(b.len(), &self))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[u8; 32], A::Error> {
        let mut out = [0u8; 32];
        for (i, b) in out.iter_mut().enumerate() {
            *b = seq
                .next_element()?
                .ok_or_else(|| de::Error::invalid_length(i, &self))?;
        }
        if seq.next_element::<de::IgnoredAny>()?.is_some() {
            return Err(de::Error::invalid_length(33, &self));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::dataset::ChunkHash;
    use crate::feed::EntryHash;
    use crate::NodeId;

    #[test]
    fn hex_for_people_bytes_for_cbor() {
        let h = EntryHash([0xab; 32]);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", "ab".repeat(32)));
        assert_eq!(serde_json::from_str::<EntryHash>(&json).unwrap(), h);
        // The CBOR form is a 32-byte string (major type 2, length 32), as serde_bytes wrote it.
        let cbor = crate::codec::encode(&h);
        assert_eq!(&cbor[..2], &[0x58, 32]);
        assert_eq!(&cbor[2..], &[0xab; 32]);
        assert_eq!(crate::codec::decode::<EntryHash>(&cbor, 64).unwrap(), h);
        let c = ChunkHash([1; 32]);
        assert_eq!(
            serde_json::to_value(c).unwrap(),
            serde_json::Value::String("01".repeat(32))
        );
    }

    #[test]
    fn json_of_earlier_versions_still_reads() {
        let k = NodeId([7; 32]);
        let old = serde_json::to_string(&[7u8; 32]).unwrap();
        assert_eq!(serde_json::from_str::<NodeId>(&old).unwrap(), k);
        assert!(serde_json::from_str::<NodeId>("[1, 2]").is_err());
        assert!(serde_json::from_str::<NodeId>(&format!("\"{}\"", "0".repeat(62))).is_err());
        assert!(serde_json::from_str::<NodeId>(&format!("\"{}\"", "x".repeat(64))).is_err());
    }
}
