//! Where the chunks of pulled files are. A file pull keeps no copy in the chunk store (see
//! [`super::assemble`]); instead `chunk_refs` records, per chunk, the finished output file and
//! offset. A later pull — typically a new version of the same file — reuses a chunk from there
//! if the file still holds exactly those bytes (checked by BLAKE3), and fetches it otherwise.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use huitong_protocol::codec;
use huitong_protocol::dataset::ChunkRef;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};

use crate::state::NodeState;
use crate::store::{StoreError, CF_CHUNK_REFS};

/// Where one chunk lies.
#[derive(Debug, Serialize, Deserialize)]
struct Place {
    /// The output file.
    path: String,
    /// Byte offset.
    offset: u64,
}

/// Records where the chunks of a finished output are (one batch).
pub fn record(
    state: &NodeState,
    out: &Path,
    placements: &[(ChunkRef, u64)],
) -> Result<(), StoreError> {
    let cf = state.store.cf(CF_CHUNK_REFS);
    let path = out.to_string_lossy().into_owned();
    let mut batch = WriteBatch::default();
    for (c, offset) in placements {
        let place = Place {
            path: path.clone(),
            offset: *offset,
        };
        batch.put_cf(cf, c.hash.0, codec::encode(&place));
    }
    state.store.db().write(batch)?;
    Ok(())
}

/// The chunk's bytes from where a finished output put them, if they are still intact.
pub fn read(state: &NodeState, chunk: &ChunkRef) -> Option<Vec<u8>> {
    let s = &state.store;
    let raw = s.db().get_cf(s.cf(CF_CHUNK_REFS), chunk.hash.0).ok()??;
    let place: Place = codec::decode(&raw, 64 * 1024).ok()?;
    let file = File::open(&place.path).ok()?;
    let mut buf = vec![0u8; chunk.len as usize];
    file.read_exact_at(&mut buf, place.offset).ok()?;
    chunk.matches(&buf).then_some(buf)
}
