//! A consumer's preview of an 无条件共享 table it does not hold: one [`DataRequest::Preview`]
//! to the provider, whose answer (the first rows of the 信息项 shared without conditions) is
//! checked against the entry as this node knows it — when it arrives and again each time it is
//! shown, so an item narrowed since is never shown — and kept per provider, resource, version
//! and manifest. A failure is kept for [`RETRY_AFTER`], so an unreachable provider slows one
//! page view, not every one. At most [`AT_ONCE`] asks run at once (page views beyond that say
//! the node is busy), so people opening pages cannot crowd out this node's pulls from a
//! provider.

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
/// Asks to providers at once.
pub const AT_ONCE: usize = 4;
/// Longest provider message shown (characters).
const MAX_MESSAGE: usize = 200;

/// Which version of which provider's resource.
type Key = (NodeId, String, u64, ChunkHash);

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
pub struct Previews {
    known: Mutex<HashMap<Key, Known>>,
    asking: tokio::sync::Semaphore,
}

impl Default for Previews {
    fn default() -> Self {
        Self {
            known: Mutex::default(),
            asking: tokio::sync::Semaphore::new(AT_ONCE),
        }
    }
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
        let key: Key = (*provider, code.to_string(), dv.version, dv.manifest);
        if let Some(known) = self.lock().get(&key) {
            match known {
                // Checked again: the entry may have narrowed an item since.
                Known::Rows(p) => return check(p.as_ref().clone(), allowed).map(Arc::new),
                Known::Failed(at, why) if at.elapsed() < RETRY_AFTER => return Err(why.clone()),
                Known::Failed(..) => {}
            }
        }
        let Ok(_asking) = self.asking.try_acquire() else {
            return Err(
                "this node is asking providers for other previews; reload in a moment".into(),
            );
        };
        let result = match tokio::time::timeout(WAIT, ask(t, provider, code, dv, allowed)).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "the provider did not answer within {} s",
                WAIT.as_secs()
            )),
        };
        let mut known = self.lock();
        if known.len() >= CACHED {
            if let Some(k) = known.keys().next().cloned() {
                known.remove(&k);
            }
        }
        match result {
            Ok(p) => {
                let p = Arc::new(p);
                known.insert(key, Known::Rows(p.clone()));
                Ok(p)
            }
            Err(why) => {
                tracing::debug!(%code, version = dv.version, error = %why, "no preview from the provider");
                known.insert(key, Known::Failed(Instant::now(), why.clone()));
                Err(why)
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Known>> {
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
        DataResponse::Refused { message, .. } => Err(format!(
            "the provider refused: 「{}」",
            crate::dataset::preview::clean_message(&message, MAX_MESSAGE)
        )),
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
