//! The hub's audit log: what its entries are, where its tiles live, and how its checkpoints and
//! proofs are signed and checked.
//!
//! The log is an RFC 6962 Merkle tree in the C2SP tlog-tiles layout (tile height 8): hash tiles
//! at `tile/<L>/<N>[.p/<W>]`, entry bundles at `tile/entries/<N>[.p/<W>]` (each entry a 2-byte
//! big-endian length and that many bytes), and a `checkpoint` in the c2sp.org/tlog-checkpoint
//! format signed as a c2sp.org/signed-note by the hub's node key. Each entry is the CBOR of a
//! [`Record`]: the hash of one application, decision, grant, revocation, receipt or charter
//! version, never its content. The tree and note maths are the `tlog_tiles` and `signed_note`
//! crates'; this module adds the huitong names, keys and limits.
//!
//! - [`note`]: checkpoint signing by the hub, witness cosignatures (c2sp.org/tlog-cosignature,
//!   `cosignature/v1`) by the cascade node, and checking both.
//! - [`proof`]: the c2sp.org/tlog-proof file (`huitong audit export-proof`) and its offline check.

pub mod note;
pub mod proof;

use serde::{Deserialize, Serialize};
use tlog_tiles::Tile;

use crate::codec::{self, DecodeError};
use crate::NodeId;

/// Tile height of the C2SP tlog-tiles layout: 256 hashes per full tile.
pub const TILE_HEIGHT: u8 = 8;
/// Entries (or hashes) in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Largest encoded [`Record`].
pub const MAX_RECORD_BYTES: usize = 1024;
/// Longest proof (inclusion or consistency) a node accepts: 64 levels cover any u64 size.
pub const MAX_PROOF_HASHES: usize = 64;

/// What kind of event an audit record stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordKind {
    /// An application (submitted).
    Application,
    /// A decision: accepted into the queue, approved or rejected.
    Decision,
    /// A grant: token issued by the hub or endorsed by the provider.
    Grant,
    /// A revocation.
    Revocation,
    /// A transfer receipt (provider-signed, consumer-countersigned).
    Receipt,
    /// A charter version.
    Charter,
    /// A provider's own record of a transfer (completed or abandoned).
    Transfer,
    /// A node's API call log head ([`crate::call::LogHead`]).
    Calls,
    /// A grant event that the applications view refused (wrong signer, wrong state, a wider
    /// approval): logged so that it is seen, never as the step it claims to be.
    Refused,
}

impl RecordKind {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::Application => "application",
            RecordKind::Decision => "decision",
            RecordKind::Grant => "grant",
            RecordKind::Revocation => "revocation",
            RecordKind::Receipt => "receipt",
            RecordKind::Charter => "charter",
            RecordKind::Transfer => "transfer",
            RecordKind::Calls => "calls",
            RecordKind::Refused => "refused",
        }
    }
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// What it stands for.
    pub kind: RecordKind,
    /// The application id, receipt id, transfer id or charter version it is about.
    pub id: String,
    /// Who signed the event: the feed owner (or the authority for a charter).
    pub signer: NodeId,
    /// Position in that feed (the charter version for a charter).
    pub seq: u64,
    /// BLAKE3 of the signed payload (feed entry, or charter).
    #[serde(with = "crate::bytes32")]
    pub hash: [u8; 32],
    /// The signer's timestamp (ms since the Unix epoch).
    pub at_ms: u64,
}

impl Record {
    /// The bytes stored in the log.
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes log entry bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        codec::decode(bytes, MAX_RECORD_BYTES)
    }

    /// The key that identifies the event: at most one log entry per signed event.
    pub fn key(&self) -> [u8; 32] {
        self.hash
    }
}

/// The origin line (and log key name) of a federation's audit log.
pub fn origin(federation: &str) -> String {
    let name: String = federation
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '+' {
                '-'
            } else {
                c
            }
        })
        .collect();
    format!("huitong.audit/{name}")
}

/// The C2SP tlog-tiles path of a hash tile or entry bundle (tile height 8).
pub fn tile_path(tile: &Tile) -> String {
    // tlog_tiles writes the Go sumdb form `tile/8/L/N` and `tile/8/data/N`.
    let p = tile.path();
    let rest = p
        .strip_prefix(&format!("tile/{TILE_HEIGHT}/"))
        .unwrap_or(&p);
    match rest.strip_prefix("data/") {
        Some(n) => format!("tile/entries/{n}"),
        None => format!("tile/{rest}"),
    }
}

/// Parses a C2SP tile path back into a tile (for requests from members).
pub fn parse_tile_path(path: &str) -> Option<Tile> {
    let rest = path.strip_prefix("tile/")?;
    let go = match rest.strip_prefix("entries/") {
        Some(n) => format!("tile/{TILE_HEIGHT}/data/{n}"),
        None => format!("tile/{TILE_HEIGHT}/{rest}"),
    };
    Tile::from_path(&go).ok()
}

/// Encodes entries as an entry bundle: each a 2-byte big-endian length and the bytes.
pub fn encode_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        // Records are at most MAX_RECORD_BYTES, far below u16::MAX.
        let len = u16::try_from(e.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&e[..usize::from(len)]);
    }
    out
}

/// Splits an entry bundle into its entries, or says where it is malformed.
pub fn decode_bundle(bytes: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        if rest.len() < 2 {
            return Err(format!("truncated length after entry {}", out.len()));
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        if rest.len() < 2 + len {
            return Err(format!("entry {} is truncated", out.len()));
        }
        out.push(&rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c2sp_paths() {
        let t = Tile::new(TILE_HEIGHT, 0, 1_234_067, 256, false);
        assert_eq!(tile_path(&t), "tile/0/x001/x234/067");
        let t = Tile::new(TILE_HEIGHT, 1, 0, 7, false);
        assert_eq!(tile_path(&t), "tile/1/000.p/7");
        let t = Tile::new(TILE_HEIGHT, 0, 3, 10, true);
        assert_eq!(tile_path(&t), "tile/entries/003.p/10");
        for p in [
            "tile/0/x001/x234/067",
            "tile/1/000.p/7",
            "tile/entries/003.p/10",
        ] {
            let t = parse_tile_path(p).expect("parses");
            assert_eq!(tile_path(&t), p);
        }
        assert!(parse_tile_path("tile/../../etc/passwd").is_none());
        assert!(parse_tile_path("tile/0/256.p/300").is_none());
    }

    #[test]
    fn bundles_round_trip_and_refuse_truncation() {
        let a: &[u8] = b"abc";
        let b: &[u8] = b"";
        let bundle = encode_bundle([a, b]);
        assert_eq!(decode_bundle(&bundle).expect("decodes"), vec![a, b]);
        assert!(decode_bundle(&bundle[..bundle.len() - 3]).is_err());
    }

    #[test]
    fn origin_has_no_spaces_or_pluses() {
        assert_eq!(origin("海门 区+x"), "huitong.audit/海门-区-x");
        assert!(signed_note::is_key_name_valid(&origin("海门区")));
    }
}
