//! What a pull needs: the catalogue record of the resource, and the chunks its output needs —
//! a file's chunks, or the chosen columns' chunks of a table (by default the open columns and
//! the granted ones the entry does not now refuse).

use huitong_protocol::dataset::{Body, ChunkRef, Manifest};
use huitong_protocol::ResourceCode;

use super::{local, PullError, PullRequest};
use crate::catalogue::{self, Record};
use crate::state::NodeState;

pub(super) fn find_record(state: &NodeState, req: &PullRequest) -> Result<Record, PullError> {
    ResourceCode::parse(&req.code).map_err(|e| PullError::Invalid(format!("code: {e}")))?;
    catalogue::pick(&state.store, &req.code, req.provider.as_deref(), false).map_err(|e| match e {
        catalogue::PickError::Store(e) => local(e),
        other => PullError::Invalid(other.to_string()),
    })
}

/// One chunk to hold, and where it belongs (for error messages).
#[derive(Clone)]
pub(super) struct Want {
    pub(super) chunk: ChunkRef,
    pub(super) place: String,
}

/// What a pull fetches and writes.
pub(super) struct Selection {
    /// The chunks the output needs.
    pub(super) wants: Vec<Want>,
    /// The columns written (tables).
    pub(super) fields: Vec<String>,
    /// The columns left out because they are not 无条件共享.
    pub(super) withheld: Vec<String>,
}

/// The chunks the output needs; the columns chosen and those withheld.
pub(super) fn wants(
    manifest: &Manifest,
    record: &Record,
    fields: Option<&[String]>,
    granted: Option<&[String]>,
) -> Result<Selection, PullError> {
    match &manifest.body {
        Body::File { chunks, name } => {
            if fields.is_some() {
                return Err(PullError::Invalid(format!(
                    "{} is a file ({name}); --fields applies to tables only",
                    manifest.code
                )));
            }
            let w = chunks
                .iter()
                .enumerate()
                .map(|(i, c)| Want {
                    chunk: *c,
                    place: format!("file {name}, chunk {i}"),
                })
                .collect();
            Ok(Selection {
                wants: w,
                fields: Vec::new(),
                withheld: Vec::new(),
            })
        }
        Body::Table { columns, .. } => {
            let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
            let (chosen, withheld) = match fields {
                Some(f) => {
                    if let Some(bad) = f.iter().find(|f| !names.contains(&f.as_str())) {
                        return Err(PullError::Invalid(format!(
                            "{bad:?} is not a column of {}; columns: {}",
                            manifest.code,
                            names.join(", ")
                        )));
                    }
                    (f.to_vec(), Vec::new())
                }
                None => {
                    // The open columns, and the granted ones the entry does not now refuse.
                    let mut open = crate::access::open_columns(record);
                    open.extend(
                        granted
                            .unwrap_or_default()
                            .iter()
                            .filter(|f| {
                                crate::access::need(record, crate::access::Scope::Column(f)).is_ok()
                            })
                            .cloned(),
                    );
                    names
                        .iter()
                        .map(|n| n.to_string())
                        .partition(|n| open.contains(n))
                }
            };
            let mut w = Vec::new();
            for c in columns.iter().filter(|c| chosen.contains(&c.name)) {
                for (g, r) in c.chunks.iter().enumerate() {
                    w.push(Want {
                        chunk: *r,
                        place: format!("column {:?}, row group {g}", c.name),
                    });
                }
            }
            Ok(Selection {
                wants: w,
                fields: chosen,
                withheld,
            })
        }
    }
}
