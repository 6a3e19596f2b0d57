//! Making a subscription: what `huitong subscribe` asks, checked before anything is stored —
//! the resource and its provider, the 信息项, the key, the name, and the target (a directory
//! that exists; a database URL without a password, which is tried at once).
//!
//! Layering: a leaf of [`crate::subscribe`] over the catalogue view.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::sql::valid_table;
use super::{valid_name, Delivery, Subscription, Target, MAX_SUBSCRIPTIONS};
use crate::state::{now_ms, NodeState};

/// `POST /api/v1/subscriptions`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubscribeRequest {
    /// Its name (default: the code with `-` for `/`).
    #[serde(default)]
    pub name: Option<String>,
    /// The resource code.
    pub code: String,
    /// The provider's USCC, when several providers use the code.
    #[serde(default)]
    pub provider: Option<String>,
    /// Only these 信息项.
    #[serde(default)]
    pub fields: Option<Vec<String>>,
    /// Present the grant of this application.
    #[serde(default)]
    pub grant: Option<String>,
    /// The 信息项 that identify a row (required for a table target).
    #[serde(default)]
    pub key: Vec<String>,
    /// Where to deliver.
    pub target: Target,
}

/// Why a subscription was refused.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// The request itself is wrong.
    #[error("{0}")]
    Invalid(String),
    /// The resource is not in the catalogue.
    #[error("{0}")]
    NotFound(String),
    /// The name is taken.
    #[error("a subscription called {0} exists; choose another --name or `huitong unsubscribe {0}` first")]
    Exists(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

fn invalid(m: impl Into<String>) -> RequestError {
    RequestError::Invalid(m.into())
}

/// Checks a database URL: the scheme, a user and host, and no password (that belongs in the
/// secrets file). The URL is never repeated (it may hold a password).
fn check_url(url: &str, schemes: &[&str], name: &str) -> Result<(), RequestError> {
    let rest = schemes
        .iter()
        .find_map(|s| url.strip_prefix(s))
        .ok_or_else(|| invalid(format!("--into must start with {}", schemes.join(" or "))))?;
    if rest.contains(['?', '%', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "--into takes no query parameters, escapes or spaces: scheme://user@host[:port]/database",
        ));
    }
    match rest.split_once('@') {
        Some((_, host)) if host.starts_with('/') => Err(invalid(
            "--into must name a network host, not a socket path",
        )),
        Some((user, _)) if user.contains(':') => Err(invalid(format!(
            "--into holds a password; remove it and put it in secrets.toml as [targets.\"{name}\"] password = \"…\" (mode 0600)"
        ))),
        Some((user, host)) if !user.is_empty() && !host.is_empty() && host.contains('/') => Ok(()),
        _ => Err(invalid(
            "--into must name the user, the host and the database: scheme://user@host[:port]/database",
        )),
    }
}

/// Checks `req` against this node's catalogue and subscriptions; the subscription to store.
pub fn check(
    state: &NodeState,
    req: SubscribeRequest,
    created_by: Option<String>,
    own_grant_only: bool,
) -> Result<Subscription, RequestError> {
    let records = crate::catalogue::get(&state.store, &req.code)?;
    let mut records: Vec<_> = records
        .into_iter()
        .filter(|r| r.withdrawn.is_none())
        .filter(|r| {
            req.provider
                .as_deref()
                .is_none_or(|p| r.entry.provider_code.as_str() == p)
        })
        .collect();
    let record = match records.len() {
        0 => {
            return Err(RequestError::NotFound(format!(
                "no catalogue entry {} here{}",
                req.code,
                req.provider
                    .as_deref()
                    .map(|p| format!(" from provider {p}"))
                    .unwrap_or_default()
            )))
        }
        1 => records.remove(0),
        _ => {
            return Err(invalid(format!(
                "several providers publish {}; name one with --provider ({})",
                req.code,
                records
                    .iter()
                    .map(|r| r.entry.provider_code.as_str().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            )))
        }
    };
    if record.feed == state.id() {
        return Err(invalid(
            "this node provides the resource itself; subscribe from the node that uses it",
        ));
    }
    let items: Vec<&str> = record.entry.items.iter().map(|i| i.name.as_str()).collect();
    if let Some(fields) = &req.fields {
        if let Some(f) = fields.iter().find(|f| !items.contains(&f.as_str())) {
            return Err(invalid(format!(
                "{f} is not a 信息项 of {}; it has {}",
                req.code,
                items.join(", ")
            )));
        }
    }
    let delivered: Vec<&str> = match &req.fields {
        Some(f) => f.iter().map(String::as_str).collect(),
        None => items.clone(),
    };
    if req.target.is_table() {
        if items.is_empty() {
            return Err(invalid(format!(
                "{} is not a table (it lists no 信息项); deliver it into a directory",
                req.code
            )));
        }
        if req.key.is_empty() {
            return Err(invalid(
                "a table target needs --key: the 信息项 that identify a row (its primary key)",
            ));
        }
    }
    if let Some(k) = req.key.iter().find(|k| !delivered.contains(&k.as_str())) {
        return Err(invalid(format!(
            "--key {k} is not among the delivered 信息项 ({})",
            delivered.join(", ")
        )));
    }
    let name = req
        .name
        .clone()
        .unwrap_or_else(|| req.code.replace('/', "-"));
    if !valid_name(&name) {
        return Err(invalid(format!(
            "--name {name:?}: use 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'"
        )));
    }
    if super::get(&state.store, &name)?.is_some() {
        return Err(RequestError::Exists(name));
    }
    if super::list(&state.store)?.len() >= MAX_SUBSCRIPTIONS {
        return Err(invalid(format!(
            "this node has {MAX_SUBSCRIPTIONS} subscriptions, the most it keeps; remove one first"
        )));
    }
    match &req.target {
        Target::Dir { path, .. } => {
            if !path.is_absolute() || !path.is_dir() {
                return Err(invalid(format!(
                    "--into {}: not a directory on the node's host",
                    path.display()
                )));
            }
        }
        Target::Postgres { url, table } => {
            check_url(url, &["postgres://", "postgresql://"], &name)?;
            if !valid_table(table) {
                return Err(invalid(format!("--table {table:?}: name or schema.name")));
            }
        }
        Target::Mysql { url, table } => {
            check_url(url, &["mysql://"], &name)?;
            if !valid_table(table) || table.contains('.') {
                return Err(invalid(format!("--table {table:?}: a table name")));
            }
        }
    }
    Ok(Subscription {
        name,
        code: req.code,
        provider: record.entry.provider_code.as_str().to_owned(),
        fields: req.fields,
        grant: req.grant,
        own_grant_only,
        key: req.key,
        target: match req.target {
            Target::Dir {
                path,
                format,
                current,
            } => Target::Dir {
                path: std::fs::canonicalize(&path).unwrap_or(PathBuf::from(&path)),
                format,
                current,
            },
            t => t,
        },
        created_at_ms: now_ms(),
        created_by,
        delivery: Delivery::default(),
    })
}

/// Tries the target database of `sub` (the password from the secrets file), so a mistake is
/// heard of now rather than at the first delivery.
pub async fn try_target(state: &NodeState, sub: &Subscription) -> Result<(), RequestError> {
    let entry = format!("[targets.\"{}\"]", sub.name);
    let password = match &sub.target {
        Target::Dir { .. } => return Ok(()),
        Target::Postgres { url, .. } | Target::Mysql { url, .. } => {
            crate::secrets::target_password(&state.dir, &sub.name, url)
                .map_err(|e| invalid(e.to_string()))?
        }
    };
    match &sub.target {
        Target::Dir { .. } => Ok(()),
        Target::Postgres { url, .. } => crate::dbconn::postgres(url, password.as_ref(), &entry)
            .await
            .map(drop)
            .map_err(|e| invalid(format!("the target database: {e}"))),
        Target::Mysql { url, .. } => {
            let conn = crate::dbconn::mysql(url, password.as_ref(), &entry)
                .await
                .map_err(|e| invalid(format!("the target database: {e}")))?;
            conn.disconnect()
                .await
                .map_err(|e| invalid(format!("the target database: {e}")))
        }
    }
}
