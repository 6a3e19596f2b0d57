//! CBOR encoding and size-limited decoding (RFC 8949, via `ciborium`).
//!
//! Every decoder in the protocol goes through [`decode`], which refuses input larger than the
//! limit given before parsing a single byte.

use serde::{de::DeserializeOwned, Serialize};

/// Largest signed envelope a node accepts (feed entry or charter).
pub const MAX_ENVELOPE_BYTES: usize = 256 * 1024;
/// Largest request a peer may send on a request-response protocol.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Largest response a node accepts on a request-response protocol.
pub const MAX_RESPONSE_BYTES: usize = 8 * 1024 * 1024;

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is larger than this decoder accepts.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Length of the input.
        len: usize,
        /// The limit that applied.
        limit: usize,
    },
    /// The input ends in the middle of a value (for a stream: the peer closed it early).
    #[error("truncated CBOR: the input ends in the middle of a value")]
    Truncated,
    /// The input is not well-formed CBOR of the expected shape.
    #[error("malformed CBOR: {0}")]
    Malformed(String),
}

/// Encodes a value as CBOR.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every protocol type serialises (no maps with
    // non-string keys, no untagged floats): an error here is a programming bug.
    if let Err(e) = ciborium::into_writer(value, &mut out) {
        debug_assert!(false, "CBOR encoding into a Vec failed: {e}");
    }
    out
}

/// Decodes CBOR bytes of at most `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    ciborium::from_reader(bytes).map_err(|e| match e {
        ciborium::de::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Truncated
        }
        e => DecodeError::Malformed(e.to_string()),
    })
}
