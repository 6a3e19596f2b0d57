//! Subscriptions (订阅): this node pulls each new version of another department's resource by
//! itself and delivers it into a target — a directory (one file per version, or one current
//! file replaced atomically), or a PostgreSQL or MySQL/MariaDB table ([`sql`]).
//!
//! A delivery pulls the latest version with the ordinary pull (every chunk verified, chunks
//! already held from earlier versions reused, the grant checked by the provider, a receipt
//! logged), then applies it. Into a table it is one transaction: the version's rows are loaded
//! into a temporary table, rows whose key is gone are deleted, the others upserted by key, and
//! the delivered version recorded in the target's `huitong_delivery` table — so a node killed
//! mid-delivery leaves the table as it was, and a repeated delivery changes nothing. A
//! delivery that fails (the provider away, the database down) is retried after 5 s, 10 s, 20 s …
//! up to 5 minutes, its error kept for `huitong subscriptions`.
//!
//! Subscriptions are kept in the store's `subscriptions` column family (name → CBOR
//! [`Subscription`]); target passwords are in the secrets file (`[targets."NAME"] password`).
//!
//! Layering: above the pull ([`crate::transfer::pull`]) and the dataset views; the API and the
//! daemon's task ([`task`]) call it.

pub mod dir;
pub mod mysql;
pub mod pg;
pub mod request;
pub mod sql;
pub mod task;

use std::path::PathBuf;

use huitong_protocol::codec;
use rocksdb::{IteratorMode, WriteBatch};
use serde::{Deserialize, Serialize};

use crate::dataset::export::OutFormat;
use crate::store::{Store, StoreError, CF_SUBSCRIPTIONS};

/// Where a subscription delivers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Target {
    /// Files in a directory.
    Dir {
        /// The directory (absolute).
        path: PathBuf,
        /// The file format.
        format: OutFormat,
        /// One current file (`NAME.ext`, replaced atomically) instead of one file per version
        /// (`NAME-vN.ext`).
        current: bool,
    },
    /// A PostgreSQL table.
    Postgres {
        /// `postgres://user@host[:port]/database` (the password is in the secrets file).
        url: String,
        /// The table (`name` or `schema.name`).
        table: String,
    },
    /// A MySQL or MariaDB table.
    Mysql {
        /// `mysql://user@host[:port]/database` (the password is in the secrets file).
        url: String,
        /// The table.
        table: String,
    },
}

impl Target {
    /// Whether it is a database table.
    pub fn is_table(&self) -> bool {
        !matches!(self, Target::Dir { .. })
    }

    /// For people: the directory, or `url#table`.
    pub fn describe(&self) -> String {
        match self {
            Target::Dir {
                path,
                format,
                current,
            } => format!(
                "{} ({}, {})",
                path.display(),
                format.as_str(),
                if *current {
                    "current file"
                } else {
                    "a file per version"
                }
            ),
            Target::Postgres { url, table } | Target::Mysql { url, table } => {
                format!("{url} table {table}")
            }
        }
    }
}

/// How far a subscription got.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// The version delivered last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// When (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_ms: Option<u64>,
    /// Rows of that version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
    /// Bytes the last pull fetched over the network (the rest were reused).
    #[serde(default)]
    pub bytes_fetched: u64,
    /// Milliseconds the last delivery's pull took.
    #[serde(default)]
    pub pull_ms: u64,
    /// Milliseconds the last delivery took to apply the pulled version to its target.
    #[serde(default)]
    pub apply_ms: u64,
    /// Why the last try failed (cleared by a delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failed tries since the last delivery.
    #[serde(default)]
    pub failures: u32,
    /// When the last try ended (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tried_at_ms: Option<u64>,
}

/// One subscription.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// Its name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The resource code.
    pub code: String,
    /// The provider's USCC.
    pub provider: String,
    /// The 信息项 delivered (none: every one the pull may take).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    /// The application whose grant is presented (none: this node's own grant, if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Present only `grant` (a person's subscription), never the node's own grant.
    #[serde(default)]
    pub own_grant_only: bool,
    /// The 信息项 that identify a row (a table target's primary key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key: Vec<String>,
    /// Where it delivers.
    pub target: Target,
    /// When it was made (ms).
    pub created_at_ms: u64,
    /// The account that made it (none: the node's CLI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    /// How far it got.
    #[serde(default)]
    pub delivery: Delivery,
}

/// What a delivery did to a table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The version's rows are in the table.
    Rows(u64),
    /// The table already held this version (a delivery repeated after a crash).
    Already,
}

/// What a table delivery records in the target's metadata table, one row per node and
/// subscription: a version counts as delivered only into the same table, of the same resource.
#[derive(Clone, Copy, Debug)]
pub struct Meta<'a> {
    /// The delivering node's key (hex).
    pub node: &'a str,
    /// The subscription's name.
    pub subscription: &'a str,
    /// The target table.
    pub table: &'a str,
    /// The resource code.
    pub code: &'a str,
    /// The provider's USCC.
    pub provider: &'a str,
    /// The version applied.
    pub version: u64,
}

/// One subscription with how far behind it is.
#[derive(Debug, Serialize, Deserialize)]
pub struct SubscriptionView {
    /// The subscription.
    #[serde(flatten)]
    pub subscription: Subscription,
    /// The latest version this node knows of.
    pub latest: Option<u64>,
    /// Versions not yet delivered.
    pub lag: u64,
}

/// Most subscriptions a node keeps.
pub const MAX_SUBSCRIPTIONS: usize = 1000;
/// Largest subscription record read back.
const MAX_RECORD: usize = 64 * 1024;

fn corrupt(detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        cf: CF_SUBSCRIPTIONS,
        detail: detail.to_string(),
    }
}

/// The subscription called `name`.
pub fn get(store: &Store, name: &str) -> Result<Option<Subscription>, StoreError> {
    match store
        .db()
        .get_cf(store.cf(CF_SUBSCRIPTIONS), name.as_bytes())?
    {
        Some(v) => codec::decode(&v, MAX_RECORD).map(Some).map_err(corrupt),
        None => Ok(None),
    }
}

/// Every subscription, by name.
pub fn list(store: &Store) -> Result<Vec<Subscription>, StoreError> {
    let mut out = Vec::new();
    for kv in store
        .db()
        .iterator_cf(store.cf(CF_SUBSCRIPTIONS), IteratorMode::Start)
    {
        let (_, v) = kv?;
        out.push(codec::decode(&v, MAX_RECORD).map_err(corrupt)?);
    }
    Ok(out)
}

/// Stores `s` (durably), replacing the one of the same name.
pub fn put(store: &Store, s: &Subscription) -> Result<(), StoreError> {
    let w = store.writer();
    let mut batch = WriteBatch::default();
    batch.put_cf(
        store.cf(CF_SUBSCRIPTIONS),
        s.name.as_bytes(),
        codec::encode(s),
    );
    store.commit(&w, batch, true)
}

/// Removes the subscription `name`; whether there was one.
pub fn remove(store: &Store, name: &str) -> Result<bool, StoreError> {
    let had = get(store, name)?.is_some();
    let w = store.writer();
    let mut batch = WriteBatch::default();
    batch.delete_cf(store.cf(CF_SUBSCRIPTIONS), name.as_bytes());
    store.commit(&w, batch, true)?;
    Ok(had)
}

/// Whether `name` may name a subscription (it names files and secrets entries).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.')
}
