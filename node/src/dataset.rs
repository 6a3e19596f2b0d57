//! Dataset versions on this node: publishing ([`publish`]), the records of versions and
//! manifests ([`records`]), the table layout ([`table`]), input readers ([`input`]), writing a
//! version out ([`export`]), and who may receive which columns ([`access`]).

pub mod export;
pub mod input;
pub mod publish;
pub mod records;
pub mod table;

use huitong_protocol::catalogue::ShareType;
use huitong_protocol::wire::RefusalKind;

use crate::catalogue::Record;

/// What a member may pull of a resource without a grant.
pub fn access(record: &Record) -> Result<Vec<String>, (RefusalKind, String)> {
    let e = &record.entry;
    if let Some(reason) = &record.withdrawn {
        return Err((
            RefusalKind::Withdrawn,
            format!("{} was withdrawn (已下架): {reason}", e.code),
        ));
    }
    match e.share_type {
        ShareType::Unconditional => Ok(e
            .items
            .iter()
            .filter(|i| e.effective_share_type(i) == ShareType::Unconditional)
            .map(|i| i.name.clone())
            .collect()),
        ShareType::Conditional => Err((
            RefusalKind::NeedsGrant,
            format!(
                "{} 「{}」 is 有条件共享 (conditional): apply for it and obtain a grant before pulling; conditions: {}",
                e.code,
                e.title,
                e.share_condition.as_deref().unwrap_or("see the catalogue entry")
            ),
        )),
        ShareType::None => Err((
            RefusalKind::NotShared,
            format!(
                "{} 「{}」 is 不予共享 (not shared); legal basis: {}",
                e.code,
                e.title,
                e.share_condition.as_deref().unwrap_or("not given in the entry")
            ),
        )),
    }
}
