//! `huitong charter …` and `huitong authority …`: charter administration. New versions are
//! signed on the administrator's machine with the authority key file and submitted to the
//! local node, which verifies and gossips them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use huitong_config::keyfile;
use huitong_protocol::charter::CHARTER_LAYOUT_VERSION;
use huitong_protocol::{Charter, Member, MemberStatus, NodeId, Role, Uscc};

use super::output::{self, count, Table};
use crate::api;
use crate::client::ApiClient;

/// Charter commands.
#[derive(Subcommand, Debug)]
pub enum CharterCmd {
    /// Show the current charter.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Admit a member (or update its key, role and addresses); creates version 1 if none.
    Admit {
        /// Member USCC.
        #[arg(long)]
        uscc: String,
        /// Member name.
        #[arg(long)]
        name: String,
        /// Member node key (hex, from its `huitong init`).
        #[arg(long)]
        node_key: String,
        /// department, hub or cascade.
        #[arg(long, default_value = "department")]
        role: String,
        /// Multiaddress where it listens (repeatable).
        #[arg(long)]
        addr: Vec<String>,
        /// The authority key file.
        #[arg(long)]
        authority_key: PathBuf,
    },
    /// Suspend a member: its new feed entries are refused.
    Suspend {
        /// Member USCC.
        uscc: String,
        /// The authority key file.
        #[arg(long)]
        authority_key: PathBuf,
    },
    /// Reinstate a suspended member.
    Reinstate {
        /// Member USCC.
        uscc: String,
        /// The authority key file.
        #[arg(long)]
        authority_key: PathBuf,
    },
    /// Import a signed charter file (from the platform administrator).
    Import {
        /// The file.
        file: PathBuf,
    },
    /// Export the current signed charter to a file.
    Export {
        /// The file.
        file: PathBuf,
    },
}

/// Authority key commands.
#[derive(Subcommand, Debug)]
pub enum AuthorityCmd {
    /// Create a new authority key file (0600) and print its public key.
    Keygen {
        /// Where to write it.
        #[arg(long)]
        out: PathBuf,
    },
}

pub(super) fn authority(cmd: AuthorityCmd) -> anyhow::Result<()> {
    match cmd {
        AuthorityCmd::Keygen { out } => {
            let key = keyfile::generate()?;
            keyfile::write_new(&out, &key)?;
            println!("{}", key.public().to_hex());
            Ok(())
        }
    }
}

async fn current(client: &ApiClient) -> anyhow::Result<Option<api::CharterView>> {
    match client.get::<api::CharterView, _>("/charter", &()).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.to_string().contains("holds no charter") => Ok(None),
        Err(e) => Err(e),
    }
}

async fn amend(
    dir: &Path,
    key_file: &Path,
    f: impl FnOnce(&mut Charter) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let key = keyfile::read(key_file)?;
    let client = ApiClient::new(dir)?;
    let mut charter = match current(&client).await? {
        Some(c) => Charter {
            layout: CHARTER_LAYOUT_VERSION,
            federation: c.federation,
            version: c.version + 1,
            issued_at_ms: crate::state::now_ms(),
            authority: NodeId::from_hex(&c.authority)?,
            members: c.members,
            timezone: c.timezone,
            witnesses: c.witnesses,
        },
        None => {
            let s: api::Status = client.get("/status", &()).await?;
            Charter {
                layout: CHARTER_LAYOUT_VERSION,
                federation: s.federation,
                version: 1,
                issued_at_ms: crate::state::now_ms(),
                authority: key.public(),
                members: Vec::new(),
                timezone: huitong_protocol::charter::DEFAULT_TIMEZONE.into(),
                witnesses: Default::default(),
            }
        }
    };
    if charter.authority != key.public() {
        bail!(
            "{} is not this federation's authority key (the charter is signed by {})",
            key_file.display(),
            charter.authority
        );
    }
    f(&mut charter)?;
    charter.check()?;
    let env = charter.seal(&key);
    let v: api::CharterView = client
        .post(
            "/charter",
            &api::CharterSubmit {
                envelope_hex: hex::encode(env.to_bytes()),
            },
        )
        .await?;
    println!(
        "charter version {} accepted ({})",
        v.version,
        count(v.members.len() as u64, "member", "members")
    );
    Ok(())
}

fn set_status(c: &mut Charter, uscc: &str, status: MemberStatus) -> anyhow::Result<()> {
    let m = c
        .members
        .iter_mut()
        .find(|m| m.uscc.as_str() == uscc)
        .with_context(|| {
            format!(
                "no member with USCC {uscc} in charter version {}",
                c.version - 1
            )
        })?;
    m.status = status;
    Ok(())
}

pub(super) async fn run(dir: &Path, cmd: CharterCmd) -> anyhow::Result<()> {
    match cmd {
        CharterCmd::Show { json } => {
            let Some(c) = current(&ApiClient::new(dir)?).await? else {
                bail!(
                    "this node holds no charter yet; import one with `huitong charter import FILE`"
                );
            };
            if json {
                return output::json(&c);
            }
            println!(
                "federation {} — charter version {} — authority {}",
                c.federation, c.version, c.authority
            );
            let mut t = Table::new().indent("  ");
            for m in &c.members {
                let peer = crate::net::peer_id(&m.node_key)
                    .map(|p| p.to_string())
                    .unwrap_or_default();
                t.row([
                    m.role.as_str().to_owned(),
                    format!("{:?}", m.status).to_lowercase(),
                    m.uscc.to_string(),
                    m.name.clone(),
                    peer,
                ]);
            }
            t.write(&mut std::io::stdout().lock())?;
            Ok(())
        }
        CharterCmd::Admit {
            uscc,
            name,
            node_key,
            role,
            addr,
            authority_key,
        } => {
            let uscc = Uscc::parse(&uscc).map_err(|e| anyhow::anyhow!("--uscc: {e}"))?;
            let node_key =
                NodeId::from_hex(&node_key).map_err(|e| anyhow::anyhow!("--node-key: {e}"))?;
            let role = Role::parse(&role)
                .with_context(|| format!("--role: {role:?} is not department, hub or cascade"))?;
            amend(dir, &authority_key, |c| {
                let member = Member {
                    uscc: uscc.clone(),
                    name,
                    node_key,
                    role,
                    addresses: addr,
                    status: MemberStatus::Active,
                };
                match c.members.iter_mut().find(|m| m.uscc == uscc) {
                    Some(m) => *m = member,
                    None => c.members.push(member),
                }
                Ok(())
            })
            .await
        }
        CharterCmd::Suspend {
            uscc,
            authority_key,
        } => {
            amend(dir, &authority_key, |c| {
                set_status(c, &uscc, MemberStatus::Suspended)
            })
            .await
        }
        CharterCmd::Reinstate {
            uscc,
            authority_key,
        } => {
            amend(dir, &authority_key, |c| {
                set_status(c, &uscc, MemberStatus::Active)
            })
            .await
        }
        CharterCmd::Import { file } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            if bytes.len() > huitong_protocol::codec::MAX_ENVELOPE_BYTES {
                bail!("{} is too large to be a charter", file.display());
            }
            let v: api::CharterView = ApiClient::new(dir)?
                .post(
                    "/charter",
                    &api::CharterSubmit {
                        envelope_hex: hex::encode(bytes),
                    },
                )
                .await?;
            println!(
                "charter version {} imported ({})",
                v.version,
                count(v.members.len() as u64, "member", "members")
            );
            Ok(())
        }
        CharterCmd::Export { file } => {
            let Some(c) = current(&ApiClient::new(dir)?).await? else {
                bail!("this node holds no charter yet");
            };
            std::fs::write(&file, hex::decode(c.envelope_hex)?)
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!(
                "charter version {} written to {}",
                c.version,
                file.display()
            );
            Ok(())
        }
    }
}
