//! Demo sign-ins: one account per role on every node of a testnet, so that whoever launched it
//! can sign in as a cataloguer, an approver, a data user, an auditor or an administrator. Each
//! role has the same account name and password on every node; the passwords are generated once
//! per testnet and kept in `logins.json` (mode 0600) in the testnet directory — a demo's
//! convenience, not how a real node's accounts are made (`huitong user add`, one per person).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Testnet;

/// The file in the testnet directory with the demo logins.
pub const LOGINS_FILE: &str = "logins.json";

/// One demo login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Login {
    /// Role (`admin`, `cataloguer`, `approver`, `data_user`, `auditor`).
    pub role: String,
    /// Its Chinese name.
    pub label: String,
    /// Account name (the same on every node).
    pub account: String,
    /// Password (the same on every node).
    pub password: String,
}

/// The demo accounts: role, its label, account name, display name.
const DEMO: [(&str, &str, &str, &str); 5] = [
    ("admin", "系统管理员", "guanli", "演示管理员"),
    ("cataloguer", "目录管理员", "bianmu", "演示编目员"),
    ("approver", "审批人", "shenpi", "演示审批人"),
    ("data_user", "数据使用人", "shiyong", "演示使用人"),
    ("auditor", "安全审计员", "shenji", "演示审计员"),
];

impl Testnet {
    /// The demo logins of this testnet, made sure to exist on every node (nodes must be
    /// running). The passwords are generated and written to `logins.json` before any account
    /// is made, and an account found already there gets its password set again, so an `up`
    /// interrupted half-way ends with the same logins on every node next time.
    pub fn demo_logins(&mut self) -> anyhow::Result<Vec<Login>> {
        let file = self.dir.join(LOGINS_FILE);
        let done = self.dir.join("logins.done");
        let logins: Vec<Login> = if file.exists() {
            let bytes = std::fs::read(&file)?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{} is not a list of logins", file.display()))?
        } else {
            let logins: Vec<Login> = DEMO
                .iter()
                .map(|(role, label, account, _)| Login {
                    role: (*role).into(),
                    label: (*label).into(),
                    account: (*account).into(),
                    password: huitong_node::accounts::password::generate(),
                })
                .collect();
            write_private(&file, &serde_json::to_vec_pretty(&logins)?)?;
            logins
        };
        if done.exists() {
            return Ok(logins);
        }
        for (l, (_, _, _, name)) in logins.iter().zip(DEMO) {
            for i in 0..self.nodes.len() {
                let body = json!({
                    "account": l.account,
                    "display_name": name,
                    "roles": [l.role],
                    "password": l.password,
                });
                let a = self.call(i, "POST", "/users", None, Some(&body))?;
                let a = if a.status == 409 {
                    let path = format!("/users/{}/password", l.account);
                    self.call(
                        i,
                        "POST",
                        &path,
                        None,
                        Some(&json!({"password": l.password})),
                    )?
                } else {
                    a
                };
                if !(200..300).contains(&a.status) {
                    anyhow::bail!(
                        "cannot make the demo login {} on {}: {} {}",
                        l.account,
                        self.nodes[i].name,
                        a.status,
                        a.body
                    );
                }
            }
        }
        std::fs::write(&done, "")?;
        Ok(logins)
    }
}

/// Writes `bytes` to a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
