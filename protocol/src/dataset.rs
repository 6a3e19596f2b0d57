//! Dataset versions: the signed manifest, the feed announcement, and the value rules of 信息项.
//!
//! A version is described by a [`Manifest`], sealed in its own envelope
//! ([`crate::Kind::Manifest`]) by the provider. The provider's feed carries a
//! [`DatasetVersion`] announcement with the BLAKE3 of the manifest payload, so a consumer that
//! fetches the manifest from anyone can check it against the signed feed.
//!
//! Table data (库表) is cut into row groups; each column of each group is one chunk (an Arrow
//! IPC stream of one UTF-8 column). Files (文件) are cut into content-defined chunks. Every chunk
//! is addressed by the BLAKE3 of its bytes.

mod values;

use serde::{Deserialize, Serialize};

use crate::catalogue::DataType;
use crate::codec::{self, DecodeError};
use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::{NodeId, ResourceCode, SecretKey};

pub use values::{check_value, is_date, ValueError};

/// Version of the manifest layout.
pub const MANIFEST_VERSION: u8 = 1;
/// Largest manifest envelope a node accepts (≈ 400k chunk references).
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;
/// Largest chunk a node stores or sends.
pub const MAX_CHUNK_BYTES: u32 = 8 * 1024 * 1024;

/// BLAKE3 of a chunk's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ChunkHash(#[serde(with = "crate::bytes32")] pub [u8; 32]);

impl ChunkHash {
    /// Hashes bytes.
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Checks that `bytes` hash to this name; `Err(actual)` when they do not.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), ChunkHash> {
        let actual = Self::of(bytes);
        if actual == *self {
            Ok(())
        } else {
            Err(actual)
        }
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl std::fmt::Debug for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkHash({})", &self.to_hex()[..16])
    }
}

impl std::fmt::Display for ChunkHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// A chunk: its hash and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the bytes.
    pub hash: ChunkHash,
    /// Length in bytes (≤ [`MAX_CHUNK_BYTES`]).
    pub len: u32,
}

impl ChunkRef {
    /// Whether `bytes` are this chunk: its length and its hash.
    pub fn matches(&self, bytes: &[u8]) -> bool {
        bytes.len() == self.len as usize && self.hash.verify(bytes).is_ok()
    }
}

/// One column (信息项) of a table version: one chunk per row group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// 信息项名称.
    pub name: String,
    /// 数据类型.
    pub data_type: DataType,
    /// 数据长度, if the entry sets one.
    pub length: Option<u32>,
    /// Chunk of each row group, in order.
    pub chunks: Vec<ChunkRef>,
}

/// What a version holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// 库表: columns cut into row groups.
    Table {
        /// Rows in each row group, in order.
        row_groups: Vec<u64>,
        /// The columns, in the entry's item order.
        columns: Vec<Column>,
    },
    /// 文件: one file cut into content-defined chunks.
    File {
        /// The file name as published (no directories).
        name: String,
        /// The chunks, in order.
        chunks: Vec<ChunkRef>,
    },
}

/// The signed description of one dataset version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Layout version ([`MANIFEST_VERSION`]).
    pub layout: u8,
    /// The provider's node key (the signer).
    pub provider: NodeId,
    /// 信息资源代码.
    pub code: ResourceCode,
    /// Version number, from 1, increasing per resource.
    pub version: u64,
    /// Milliseconds since the Unix epoch when the version was made.
    pub created_at_ms: u64,
    /// The data.
    pub body: Body,
    /// Rows refused at publication (with `--allow-rejects`): a JSONL report stored as chunks.
    pub rejects: Option<Rejects>,
    /// The rows that changed since an earlier version, by key (a collected table with a key):
    /// a consumer holding that version fetches these instead of the whole table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes: Option<Changes>,
}

/// A table version's row changes against its base version: every row inserted or updated
/// (all columns), and the key of every row deleted. Applying them to the base gives the
/// version's table, as a set of rows by key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// The version the changes lead from.
    pub base: u64,
    /// That version's manifest hash.
    pub base_manifest: ChunkHash,
    /// The 信息项 that identify a row.
    pub key: Vec<String>,
    /// Rows inserted or updated: a table body with the version's columns.
    pub upserts: Body,
    /// Keys of rows deleted: a table body with the key columns.
    pub deletes: Body,
}

/// Which part of a version a pull takes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The whole table (or file).
    #[default]
    Whole,
    /// The rows inserted or updated since the base ([`Changes::upserts`]).
    Upserts,
    /// The keys of rows deleted since the base ([`Changes::deletes`]).
    Deletes,
}

/// The report of rows refused at publication.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejects {
    /// Number of refused rows.
    pub rows: u64,
    /// The JSONL report, one line per violation.
    pub report: Vec<ChunkRef>,
}

/// The feed announcement of a new version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetVersion {
    /// 信息资源代码.
    pub code: ResourceCode,
    /// Version number.
    pub version: u64,
    /// BLAKE3 of the manifest payload (the signed bytes).
    pub manifest: ChunkHash,
    /// Rows (tables) or `None` (files).
    pub rows: Option<u64>,
    /// Total bytes of all chunks.
    pub bytes: u64,
    /// Number of chunks.
    pub chunks: u64,
    /// When the version was made (ms).
    pub created_at_ms: u64,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Bad envelope (size, CBOR, kind, signature).
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Payload is not a manifest.
    #[error("payload is not a manifest: {0}")]
    Payload(#[from] DecodeError),
    /// The manifest does not match what the feed announced or breaks a rule.
    #[error("manifest refused: {0}")]
    Invalid(String),
}

/// A manifest whose signature and shape were checked.
#[derive(Clone, Debug)]
pub struct SignedManifest {
    /// The decoded manifest.
    pub manifest: Manifest,
    /// BLAKE3 of the signed payload.
    pub hash: ChunkHash,
    /// The envelope bytes, for storage and forwarding.
    pub bytes: Vec<u8>,
}

impl Manifest {
    /// Signs the manifest.
    pub fn seal(&self, key: &SecretKey) -> SignedManifest {
        let payload = codec::encode(self);
        let hash = ChunkHash::of(&payload);
        let bytes = Envelope::seal(Kind::Manifest, key, payload).to_bytes();
        SignedManifest {
            manifest: self.clone(),
            hash,
            bytes,
        }
    }

    /// Every chunk reference (data and reject report).
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        let data: Box<dyn Iterator<Item = &ChunkRef>> = match &self.body {
            Body::Table { columns, .. } => Box::new(columns.iter().flat_map(|c| c.chunks.iter())),
            Body::File { chunks, .. } => Box::new(chunks.iter()),
        };
        data.chain(self.rejects.iter().flat_map(|r| r.report.iter()))
    }

    /// The chunks of the row changes, if any (kept by the provider beside [`Self::chunks`]).
    pub fn change_chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.changes.iter().flat_map(|c| {
            [&c.upserts, &c.deletes].into_iter().flat_map(|b| match b {
                Body::Table { columns, .. } => {
                    Box::new(columns.iter().flat_map(|c| c.chunks.iter()))
                        as Box<dyn Iterator<Item = &ChunkRef>>
                }
                Body::File { chunks, .. } => Box::new(chunks.iter()),
            })
        })
    }

    /// This manifest as a pull of `part` sees it: the part's rows as the body (no report, no
    /// changes); the whole manifest for [`Part::Whole`]. `None` when it has no such part.
    pub fn part(&self, part: Part) -> Option<Manifest> {
        let body = match (part, &self.changes) {
            (Part::Whole, _) => return Some(self.clone()),
            (Part::Upserts, Some(c)) => c.upserts.clone(),
            (Part::Deletes, Some(c)) => c.deletes.clone(),
            (_, None) => return None,
        };
        Some(Manifest {
            body,
            rejects: None,
            changes: None,
            ..self.clone()
        })
    }

    /// Rows of a table version.
    pub fn rows(&self) -> Option<u64> {
        match &self.body {
            Body::Table { row_groups, .. } => Some(row_groups.iter().sum()),
            Body::File { .. } => None,
        }
    }

    /// The feed announcement for this manifest.
    pub fn announcement(&self, hash: ChunkHash) -> DatasetVersion {
        DatasetVersion {
            code: self.code.clone(),
            version: self.version,
            manifest: hash,
            rows: self.rows(),
            bytes: self.chunks().map(|c| u64::from(c.len)).sum(),
            chunks: self.chunks().count() as u64,
            created_at_ms: self.created_at_ms,
        }
    }

    /// Checks the shape rules that need no other state.
    pub fn check(&self) -> Result<(), String> {
        if self.layout != MANIFEST_VERSION {
            return Err(format!("unsupported manifest layout {}", self.layout));
        }
        if self.version == 0 {
            return Err("version numbers start at 1".into());
        }
        if let Some(c) = self
            .chunks()
            .chain(self.change_chunks())
            .find(|c| c.len > MAX_CHUNK_BYTES)
        {
            return Err(format!(
                "chunk {} is {} bytes, more than the limit of {MAX_CHUNK_BYTES}",
                c.hash, c.len
            ));
        }
        // A chunk is named by the hash of its bytes, so one hash has one length. A manifest
        // listing it with two would make a consumer write the first length at every place.
        let mut lens = std::collections::HashMap::new();
        for c in self.chunks().chain(self.change_chunks()) {
            match lens.insert(c.hash, c.len) {
                Some(other) if other != c.len => {
                    return Err(format!(
                        "chunk {} is listed with two lengths ({other} and {} bytes), but a chunk's hash names its bytes: the provider's manifest is malformed; ask the provider to publish the version again",
                        c.hash, c.len
                    ));
                }
                _ => {}
            }
        }
        check_body(&self.body)?;
        if let Some(c) = &self.changes {
            let Body::Table { columns, .. } = &self.body else {
                return Err("a file version carries no row changes".into());
            };
            if c.base >= self.version {
                return Err("row changes must lead from an earlier version".into());
            }
            check_body(&c.upserts)?;
            check_body(&c.deletes)?;
            // Each part's columns, with their types and lengths, are the version's own.
            let shape = |cols: &[&Column]| -> Vec<(String, DataType, Option<u32>)> {
                cols.iter()
                    .map(|c| (c.name.clone(), c.data_type, c.length))
                    .collect()
            };
            let part = |b: &Body| match b {
                Body::Table { columns, .. } => shape(&columns.iter().collect::<Vec<_>>()),
                Body::File { .. } => Vec::new(),
            };
            let all: Vec<&Column> = columns.iter().collect();
            if part(&c.upserts) != shape(&all) {
                return Err("the changed rows must have the version's columns".into());
            }
            let keyed: Vec<&Column> = c
                .key
                .iter()
                .filter_map(|k| columns.iter().find(|col| &col.name == k))
                .collect();
            if c.key.is_empty() || keyed.len() != c.key.len() || part(&c.deletes) != shape(&keyed) {
                return Err(
                    "the deleted keys must have the key columns, 信息项 of the version".into(),
                );
            }
        }
        Ok(())
    }
}

/// Checks the shape of one body.
fn check_body(body: &Body) -> Result<(), String> {
    match body {
        Body::Table {
            row_groups,
            columns,
        } => {
            if columns.is_empty() {
                return Err("a table version needs at least one column".into());
            }
            if let Some(c) = columns.iter().find(|c| c.chunks.len() != row_groups.len()) {
                return Err(format!(
                    "column {:?} has {} chunks for {} row groups",
                    c.name,
                    c.chunks.len(),
                    row_groups.len()
                ));
            }
            let mut names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            names.sort_unstable();
            if names.windows(2).any(|w| w[0] == w[1]) {
                return Err("two columns have the same name".into());
            }
        }
        Body::File { name, .. } => {
            if name.is_empty() || name.contains(['/', '\\', '\0']) || name == ".." {
                return Err(format!("file name {name:?} is not a plain file name"));
            }
        }
    }
    Ok(())
}

impl SignedManifest {
    /// Opens manifest envelope bytes, checks the signature and the shape rules, and that it is
    /// the manifest `announced` by `provider`.
    pub fn open(
        bytes: &[u8],
        provider: &NodeId,
        announced: &DatasetVersion,
    ) -> Result<Self, ManifestError> {
        let envelope = Envelope::open_limited(bytes, Kind::Manifest, MAX_MANIFEST_BYTES)?;
        let hash = ChunkHash::of(envelope.payload());
        if hash != announced.manifest {
            return Err(ManifestError::Invalid(format!(
                "its hash {hash} is not the {} the provider's feed announced",
                announced.manifest
            )));
        }
        if envelope.signer() != *provider {
            return Err(ManifestError::Invalid(format!(
                "signed by {} instead of the provider {provider}",
                envelope.signer()
            )));
        }
        let manifest: Manifest = codec::decode(envelope.payload(), MAX_MANIFEST_BYTES)?;
        if manifest.provider != *provider
            || manifest.code != announced.code
            || manifest.version != announced.version
        {
            return Err(ManifestError::Invalid(
                "provider, code or version differ from the announcement".into(),
            ));
        }
        manifest.check().map_err(ManifestError::Invalid)?;
        Ok(Self {
            manifest,
            hash,
            bytes: bytes.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider's changes must have the version's columns, types and lengths, and the key's.
    #[test]
    fn row_changes_must_match_the_version_columns() {
        let col = |name: &str, data_type: DataType| Column {
            name: name.into(),
            data_type,
            length: None,
            chunks: Vec::new(),
        };
        let table = |cols: Vec<Column>| Body::Table {
            row_groups: Vec::new(),
            columns: cols,
        };
        let mut m = file_manifest(Vec::new());
        m.version = 2;
        m.body = table(vec![col("编号", DataType::C), col("金额", DataType::N)]);
        let changes = |upserts: Body, deletes: Body| Changes {
            base: 1,
            base_manifest: ChunkHash([0; 32]),
            key: vec!["编号".into()],
            upserts,
            deletes,
        };
        m.changes = Some(changes(
            table(vec![col("编号", DataType::C), col("金额", DataType::N)]),
            table(vec![col("编号", DataType::C)]),
        ));
        assert!(m.check().is_ok(), "{:?}", m.check());
        m.changes = Some(changes(
            table(vec![col("编号", DataType::C), col("金额", DataType::C)]),
            table(vec![col("编号", DataType::C)]),
        ));
        assert!(m.check().is_err(), "another type for 金额");
        m.changes = Some(changes(
            table(vec![col("编号", DataType::C), col("金额", DataType::N)]),
            table(vec![col("金额", DataType::N)]),
        ));
        assert!(m.check().is_err(), "deletes without the key column");
    }

    fn file_manifest(chunks: Vec<ChunkRef>) -> Manifest {
        Manifest {
            layout: MANIFEST_VERSION,
            provider: SecretKey::from_bytes([1; 32]).public(),
            code: ResourceCode::parse("101001/000001").expect("code"),
            version: 1,
            created_at_ms: 1_700_000_000_000,
            body: Body::File {
                name: "data.bin".into(),
                chunks,
            },
            rejects: None,
            changes: None,
        }
    }

    /// Review 10, L6: `[(H,100),(H,50)]` used to pass, and a pull then wrote 200 bytes for a
    /// 150-byte layout.
    #[test]
    fn a_chunk_listed_with_two_lengths_is_refused() {
        let h = ChunkHash([7; 32]);
        let twice = |a, b| {
            file_manifest(vec![
                ChunkRef { hash: h, len: a },
                ChunkRef {
                    hash: ChunkHash([8; 32]),
                    len: 10,
                },
                ChunkRef { hash: h, len: b },
            ])
        };
        let e = twice(100, 50).check().unwrap_err();
        assert!(e.contains("two lengths (100 and 50 bytes)"), "{e}");
        // The same chunk twice with one length is a file that repeats itself: fine.
        assert_eq!(twice(100, 100).check(), Ok(()));
        // A reject report chunk counts too.
        let mut m = twice(100, 100);
        m.rejects = Some(Rejects {
            rows: 1,
            report: vec![ChunkRef { hash: h, len: 99 }],
        });
        assert!(m.check().unwrap_err().contains("two lengths"));
    }
}
