//! Person accounts of this node: who may sign in to its API (and portal), under which roles.
//!
//! Each account has a login name, a display name, roles, an argon2id password hash and a
//! disabled flag, stored in the `accounts` column family (so backups carry them; feeds never
//! do). The roles follow 三员分立 (GB/T 39477): a 系统管理员 may not also approve or audit, and a
//! 安全审计员 holds no other role, so the one who runs the node cannot approve what it serves nor
//! review their own work, and the auditor changes nothing.
//!
//! Layering: over the store; `http` signs people in with it, `cli` administers it through the
//! API. Passwords are in [`password`], signed-in sessions in [`sessions`], sign-in throttling
//! in [`throttle`].

pub mod password;
pub mod sessions;
pub mod throttle;

use std::sync::{Arc, Mutex};

use huitong_protocol::{actor, codec, Actor};
use serde::{Deserialize, Serialize};

use crate::state::NodeState;
use crate::store::{StoreError, CF_ACCOUNTS};

/// Most accounts a node keeps (a department has tens of staff; this bounds what an
/// administrator's script can create by mistake).
pub const MAX_ACCOUNTS: usize = 1000;

/// What a person may do on the node.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 系统管理员: accounts and node settings (backup, charter submission, garbage collection).
    Admin,
    /// 目录管理员: publish, edit and withdraw catalogue entries; upload dataset versions.
    Cataloguer,
    /// 审批人: decide incoming applications; revoke grants.
    Approver,
    /// 数据使用人: apply for data and pull it.
    DataUser,
    /// 安全审计员: read the audit views; changes nothing.
    Auditor,
}

impl Role {
    /// Every role, in the order they are shown.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Cataloguer,
        Role::Approver,
        Role::DataUser,
        Role::Auditor,
    ];

    /// The name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Cataloguer => "cataloguer",
            Role::Approver => "approver",
            Role::DataUser => "data_user",
            Role::Auditor => "auditor",
        }
    }

    /// The Chinese name (GB/T 39477 style).
    pub fn label(self) -> &'static str {
        match self {
            Role::Admin => "系统管理员",
            Role::Cataloguer => "目录管理员",
            Role::Approver => "审批人",
            Role::DataUser => "数据使用人",
            Role::Auditor => "安全审计员",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    /// Accepts the English name (`data_user` or `data-user`) or the Chinese one.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.replace('-', "_") || r.label() == s)
            .ok_or_else(|| {
                let known: Vec<String> = Role::ALL
                    .iter()
                    .map(|r| format!("{} ({})", r.as_str(), r.label()))
                    .collect();
                format!("unknown role {s:?}; roles are {}", known.join(", "))
            })
    }
}

/// Checks a set of roles against separation of duties (三员分立); the error says what to do.
pub fn check_roles(roles: &[Role]) -> Result<(), AccountError> {
    let has = |r| roles.contains(&r);
    if roles.is_empty() {
        return Err(AccountError::Roles(
            "an account needs at least one role".into(),
        ));
    }
    if has(Role::Auditor) && roles.iter().any(|&r| r != Role::Auditor) {
        return Err(AccountError::Roles(
            "the auditor (安全审计员) holds no other role: the one who reviews must not be able to change what they review; make a separate account".into(),
        ));
    }
    if has(Role::Admin) && has(Role::Approver) {
        return Err(AccountError::Roles(
            "the administrator (系统管理员) may not also approve (审批人): the one who runs the node must not decide who gets its data; make a separate account".into(),
        ));
    }
    Ok(())
}

/// An account as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Account {
    /// Login name ([`actor::check_account`]).
    pub name: String,
    /// Name as people read it.
    pub display_name: String,
    /// Roles, sorted, no duplicates, passing [`check_roles`].
    pub roles: Vec<Role>,
    /// argon2id PHC string.
    pub password: String,
    /// A disabled account cannot sign in and its sessions end.
    pub disabled: bool,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// When its password was last set (ms since the epoch).
    pub password_set_ms: u64,
    /// When the person last opened their notifications in the portal (ms since the epoch);
    /// newer ones count as unread.
    #[serde(default)]
    pub notices_seen_ms: u64,
}

impl Account {
    /// Whether the account holds `role`.
    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The actor named in the feed entries this person causes.
    pub fn actor(&self) -> Actor {
        Actor {
            account: self.name.clone(),
            name: self.display_name.clone(),
        }
    }
}

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccountError {
    /// A name is not valid.
    #[error("{0}")]
    Name(String),
    /// The roles break separation of duties, or there are none.
    #[error("{0}")]
    Roles(String),
    /// The password is too weak.
    #[error(transparent)]
    Password(#[from] password::PasswordError),
    /// An account of that name exists.
    #[error("an account named {0:?} exists already; pick another name, or change that one's password or roles")]
    Exists(String),
    /// No account of that name.
    #[error("no account named {0:?} on this node (`huitong user list` shows them)")]
    NotFound(String),
    /// The node holds as many accounts as it may.
    #[error("this node holds {MAX_ACCOUNTS} accounts already, the most it keeps (accounts are never reused for another person: what a person did stays under their name)")]
    Full,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new account, as asked for.
#[derive(Clone, Debug)]
pub struct NewAccount {
    /// Login name.
    pub name: String,
    /// Display name.
    pub display_name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// The password in clear (hashed before it is stored).
    pub password: String,
}

/// The node's accounts.
pub struct Accounts {
    state: Arc<NodeState>,
    /// Serialises read-modify-write of account rows.
    write: Mutex<()>,
}

impl Accounts {
    /// The accounts of `state`'s store.
    pub fn new(state: Arc<NodeState>) -> Self {
        Self {
            state,
            write: Mutex::new(()),
        }
    }

    /// The account named `name`, if any.
    pub fn get(&self, name: &str) -> Result<Option<Account>, StoreError> {
        let s = &self.state.store;
        match s.db().get_cf(s.cf(CF_ACCOUNTS), name.as_bytes())? {
            None => Ok(None),
            Some(v) => decode(&v).map(Some),
        }
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<Account>, StoreError> {
        let s = &self.state.store;
        s.db()
            .iterator_cf(s.cf(CF_ACCOUNTS), rocksdb::IteratorMode::Start)
            .map(|kv| decode(&kv?.1))
            .collect()
    }

    /// Creates an account (the password hashed with argon2id; slow on purpose, so call it off
    /// the async runtime).
    pub fn add(&self, new: NewAccount) -> Result<Account, AccountError> {
        actor::check_account(&new.name).map_err(AccountError::Name)?;
        actor::check_display_name(&new.display_name).map_err(AccountError::Name)?;
        let roles = normalised(new.roles);
        check_roles(&roles)?;
        password::check_policy(&new.name, &new.password)?;
        let hash = password::hash(&new.password)?;
        let _w = self.lock();
        if self.get(&new.name)?.is_some() {
            return Err(AccountError::Exists(new.name));
        }
        if self.count()? >= MAX_ACCOUNTS {
            return Err(AccountError::Full);
        }
        let now = crate::state::now_ms();
        let account = Account {
            name: new.name,
            display_name: new.display_name,
            roles,
            password: hash,
            disabled: false,
            created_ms: now,
            password_set_ms: now,
            notices_seen_ms: 0,
        };
        self.put(&account)?;
        Ok(account)
    }

    /// Sets an account's password (policy-checked, hashed).
    pub fn set_password(&self, name: &str, clear: &str) -> Result<Account, AccountError> {
        password::check_policy(name, clear)?;
        let hash = password::hash(clear)?;
        self.update(name, |a| {
            a.password = hash;
            a.password_set_ms = crate::state::now_ms();
            Ok(())
        })
    }

    /// Replaces an account's roles (checked for separation of duties).
    pub fn set_roles(&self, name: &str, roles: Vec<Role>) -> Result<Account, AccountError> {
        let roles = normalised(roles);
        check_roles(&roles)?;
        self.update(name, |a| {
            a.roles = roles;
            Ok(())
        })
    }

    /// Records that the person has seen their notifications up to `at_ms`.
    pub fn set_notices_seen(&self, name: &str, at_ms: u64) -> Result<Account, AccountError> {
        self.update(name, |a| {
            a.notices_seen_ms = a.notices_seen_ms.max(at_ms);
            Ok(())
        })
    }

    /// Disables or enables an account.
    pub fn set_disabled(&self, name: &str, disabled: bool) -> Result<Account, AccountError> {
        self.update(name, |a| {
            a.disabled = disabled;
            Ok(())
        })
    }

    fn update(
        &self,
        name: &str,
        change: impl FnOnce(&mut Account) -> Result<(), AccountError>,
    ) -> Result<Account, AccountError> {
        let _w = self.lock();
        let mut a = self
            .get(name)?
            .ok_or_else(|| AccountError::NotFound(name.to_string()))?;
        change(&mut a)?;
        self.put(&a)?;
        Ok(a)
    }

    fn put(&self, a: &Account) -> Result<(), StoreError> {
        let s = &self.state.store;
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(s.cf(CF_ACCOUNTS), a.name.as_bytes(), codec::encode(a));
        let w = s.writer();
        s.commit(&w, batch, true)
    }

    fn count(&self) -> Result<usize, StoreError> {
        let s = &self.state.store;
        let mut n = 0;
        for kv in s
            .db()
            .iterator_cf(s.cf(CF_ACCOUNTS), rocksdb::IteratorMode::Start)
        {
            kv?;
            n += 1;
        }
        Ok(n)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic while holding it leaves nothing half-changed.
        self.write.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn normalised(mut roles: Vec<Role>) -> Vec<Role> {
    roles.sort();
    roles.dedup();
    roles
}

fn decode(bytes: &[u8]) -> Result<Account, StoreError> {
    codec::decode(bytes, usize::MAX).map_err(|e| StoreError::Corrupt {
        cf: CF_ACCOUNTS,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separation_of_duties() {
        use Role::*;
        assert!(check_roles(&[]).is_err());
        assert!(check_roles(&[Admin]).is_ok());
        assert!(check_roles(&[Admin, Cataloguer, DataUser]).is_ok());
        assert!(check_roles(&[Cataloguer, Approver, DataUser]).is_ok());
        assert!(check_roles(&[Auditor]).is_ok());
        assert!(check_roles(&[Admin, Approver]).is_err());
        assert!(check_roles(&[Admin, Auditor]).is_err());
        assert!(check_roles(&[Auditor, DataUser]).is_err());
        assert!(check_roles(&[Auditor, Cataloguer]).is_err());
    }

    #[test]
    fn role_names_both_ways() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
            assert_eq!(r.label().parse::<Role>(), Ok(r));
        }
        assert_eq!("data-user".parse::<Role>(), Ok(Role::DataUser));
        assert!("root"
            .parse::<Role>()
            .unwrap_err()
            .contains("auditor (安全审计员)"));
    }
}
