//! A consumer's preview of an 无条件共享 table it does not hold: one [`DataRequest::Preview`]
//! to the provider, whose answer (the first rows of the 信息项 shared without conditions) is
//! checked against the entry as this node knows it and kept per version. A version never
//! changes, so an answer is kept until the cache is full; a failure is kept for
//! [`RETRY_AFTER`], so an unreachable provider slows one page view, not every one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use huitong_protocol::dataset::{ChunkHash, DatasetVersion};
use huitong_protocol::wire::{
    DataRequest, DataResponse, MAX_PREVIEW_BYTES, MAX_PREVIEW_COLUMNS, MAX_PREVIEW_ROWS,
};
use huitong_protocol::{NodeId, ResourceCode};

use crate::link::{request_once, Transport};

/// How long a page waits for the provider's answer.
pub const WAIT: Duration = Duration::from_secs(4);
/// How long a failed ask is remembered before the provider is asked again.
pub const RETRY_AFTER: Duration = Duration::from_secs(30);
/// Versions whose answers are kept.
const CACHED: usize = 256;

/// The first rows of a table version: the 信息项 shown and the rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Preview {
    /// The 信息项 shown, in order.
    pub columns: Vec<String>,
    /// Rows, one cell per column.
    pub rows: Vec<Vec<String>>,
}

/// What was learnt about one version.
enum Known {
    Rows(Arc<Preview>),
    Failed(Instant, String),
}

/// The previews this node asked providers for.
#[derive(Default)]
pub struct Previews {
    known: Mutex<HashMap<ChunkHash, Known>>,
}

impl Previews {
    /// The preview of version `dv` of `provider`'s table `code`, asked of the provider unless
    /// known; `allowed` is the 信息项 the entry shares without conditions (an answer naming
    /// others is refused). Errors are sentences for a person.
    pub async fn get(
        &self,
        t: &Transport,
        provider: &NodeId,
        code: &ResourceCode,
        dv: &DatasetVersion,
        allowed: &[String],
    ) -> Result<Arc<Preview>, String> {
        if let Some(known) = self.lock().get(&dv.manifest) {
            match known {
                Known::Rows(p) => return Ok(p.clone()),
                Known::Failed(at, why) if at.elapsed() < RETRY_AFTER => return Err(why.clone()),
                Known::Failed(..) => {}
            }
        }
        let result = match tokio::time::timeout(WAIT, ask(t, provider, code, dv, allowed)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the provider did not answer within {} s",
                WAIT.as_secs()
            )),
        };
        let mut known = self.lock();
        if known.len() >= CACHED {
            known.clear();
        }
        match result {
            Ok(p) => {
                let p = Arc::new(p);
                known.insert(dv.manifest, Known::Rows(p.clone()));
                Ok(p)
            }
            Err(why) => {
                tracing::debug!(%code, version = dv.version, error = %why, "no preview from the provider");
                known.insert(dv.manifest, Known::Failed(Instant::now(), why.clone()));
                Err(why)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ChunkHash, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn ask(
    t: &Transport,
    provider: &NodeId,
    code: &ResourceCode,
    dv: &DatasetVersion,
    allowed: &[String],
) -> Result<Preview, String> {
    let peer = crate::net::peer_id(provider)
        .ok_or_else(|| "the provider's node key is not a valid peer id".to_string())?;
    let req = DataRequest::Preview {
        code: code.clone(),
        version: dv.version,
    };
    match request_once(t, peer, &req, MAX_PREVIEW_BYTES).await? {
        DataResponse::Preview { columns, rows } => check(Preview { columns, rows }, allowed),
        DataResponse::Refused { message, .. } => Err(format!("the provider refused: {message}")),
        _ => Err("unexpected answer to a preview request".into()),
    }
}

/// The provider's answer, if it keeps to the bounds and shows only `allowed` 信息项.
fn check(p: Preview, allowed: &[String]) -> Result<Preview, String> {
    let bad = |what: &str| Err(format!("the provider's preview {what}; it is not shown"));
    if p.columns.len() > MAX_PREVIEW_COLUMNS || p.rows.len() > MAX_PREVIEW_ROWS {
        return bad("is larger than a preview may be");
    }
    if let Some(c) = p.columns.iter().find(|c| !allowed.contains(c)) {
        return bad(&format!(
            "names 信息项 {c:?}, which is not shared without conditions"
        ));
    }
    if p.rows.iter().any(|r| r.len() != p.columns.len()) {
        return bad("has rows that do not match its columns");
    }
    Ok(Preview {
        rows: p
            .rows
            .iter()
            .map(|r| r.iter().map(|c| crate::dataset::preview::cut(c)).collect())
            .collect(),
        columns: p.columns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(columns: &[&str], rows: &[&[&str]]) -> Preview {
        Preview {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: rows
                .iter()
                .map(|r| r.iter().map(|c| c.to_string()).collect())
                .collect(),
        }
    }

    #[test]
    fn an_answer_is_checked_against_the_entry() {
        let allowed = vec!["姓名".to_string(), "地址".to_string()];
        let ok = p(&["地址"], &[&["海门"]]);
        assert_eq!(check(ok.clone(), &allowed), Ok(ok));
        let other = check(p(&["身份证号"], &[&["1"]]), &allowed).unwrap_err();
        assert!(other.contains("身份证号"), "{other}");
        let ragged = check(p(&["姓名", "地址"], &[&["a"]]), &allowed).unwrap_err();
        assert!(ragged.contains("rows"), "{ragged}");
        let many: Vec<&[&str]> = vec![&["x"]; MAX_PREVIEW_ROWS + 1];
        assert!(check(p(&["姓名"], &many), &allowed).is_err());
        let long = "长".repeat(1000);
        let cut = check(p(&["姓名"], &[&[long.as_str()]]), &allowed).unwrap();
        assert!(
            cut.rows[0][0].chars().count() <= huitong_protocol::wire::MAX_PREVIEW_CELL_CHARS + 1
        );
    }
}
