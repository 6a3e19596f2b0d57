//! Why a provider refused a request: the kinds every node tells apart, on the wire (data
//! requests) and in a signed call refusal.

use serde::{Deserialize, Serialize};

/// Why a provider refused a data request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RefusalKind {
    /// No such resource, version or chunk here.
    NotFound,
    /// 有条件共享: an application and a grant are needed.
    NeedsGrant,
    /// 不予共享.
    NotShared,
    /// The resource was withdrawn (已下架).
    Withdrawn,
    /// The provider is busy or failed; try again.
    Unavailable,
    /// The request is malformed or out of bounds (a call's query).
    Invalid,
}
