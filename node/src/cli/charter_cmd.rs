//! `huitong charter …` and `huitong authority …`: charter administration. New versions are
//! signed with the authority key file ([`charter_amend`]): online against the local node's
//! charter, or offline from a charter file to a charter file, which a node then imports.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Subcommand;
use huitong_config::keyfile;
use huitong_protocol::{Charter, Member, MemberStatus, NodeId, Role, Uscc};

use super::charter_amend::{self, amend, Signing};
use super::output::{self, count, Table};
use crate::api;
use crate::client::ApiClient;

/// Charter commands.
#[derive(Subcommand, Debug)]
pub enum CharterCmd {
    /// Show the current charter, with this node's head of each member's feed.
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Admit a member (or change its name, key, role or addresses); creates version 1 if none.
    /// A new key or role closes the member's old feed (see --last-seq).
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
        #[command(flatten)]
        signing: Signing,
    },
    /// Suspend a member: its feed is closed at --last-seq (default: this node's head of it),
    /// later entries are refused and its connections closed.
    Suspend {
        /// Member USCC.
        uscc: String,
        /// Let it stay connected to read (sync the catalogue, pull what it may) while it cannot
        /// publish.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        signing: Signing,
    },
    /// Reinstate a suspended member.
    Reinstate {
        /// Member USCC.
        uscc: String,
        #[command(flatten)]
        signing: Signing,
    },
    /// Remove a member: its feed is closed at --last-seq; its earlier entries stay.
    Remove {
        /// Member USCC.
        uscc: String,
        #[command(flatten)]
        signing: Signing,
    },
    /// Set the feed quota: how many entries one member's feed may take an hour.
    Quota {
        /// Entries per feed per hour (entry timestamps), at least 1.
        #[arg(long)]
        entries_per_hour: u32,
        #[command(flatten)]
        signing: Signing,
    },
    /// Move the charter to the current layout (2: feed entries judged by ZIP-215 rules, so a
    /// node checks a range of them as one batch). Upgrade every member's node first: a node of
    /// an earlier release refuses the new version ("unsupported layout 2").
    UpgradeLayout {
        #[command(flatten)]
        signing: Signing,
    },
    /// Import signed charter files (from the platform administrator), oldest first.
    Import {
        /// The files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Export the current signed charter to a file (the base of an offline amendment).
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

pub(super) async fn current(client: &ApiClient) -> anyhow::Result<Option<api::CharterView>> {
    match client.get::<api::CharterView, _>("/charter", &()).await {
        Ok(c) => Ok(Some(c)),
        Err(e) if e.to_string().contains("holds no charter") => Ok(None),
        Err(e) => Err(e),
    }
}

fn member_mut<'a>(c: &'a mut Charter, uscc: &str) -> anyhow::Result<&'a mut Member> {
    let version = c.version - 1;
    c.members
        .iter_mut()
        .find(|m| m.uscc.as_str() == uscc)
        .with_context(|| format!("no member with USCC {uscc} in charter version {version}"))
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
                "federation {} — charter version {} (layout {}) — authority {}",
                c.federation, c.version, c.layout, c.authority
            );
            let mut t = Table::new().indent("  ").right_align(&[3]);
            t.row(["role", "status", "USCC", "feed head", "name", "node key"]);
            for m in &c.members {
                let key = m.node_key.to_hex();
                let head = c.feed_heads.get(&key).copied().unwrap_or(0);
                t.row([
                    m.role.as_str().to_owned(),
                    m.status.as_str().to_owned(),
                    m.uscc.to_string(),
                    head.to_string(),
                    m.name.clone(),
                    key,
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
            signing,
        } => {
            let uscc = Uscc::parse(&uscc).map_err(|e| anyhow::anyhow!("--uscc: {e}"))?;
            let node_key =
                NodeId::from_hex(&node_key).map_err(|e| anyhow::anyhow!("--node-key: {e}"))?;
            let role = Role::parse(&role)
                .with_context(|| format!("--role: {role:?} is not department, hub or cascade"))?;
            amend(dir, signing, |c| {
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
            read_only,
            signing,
        } => {
            let status = if read_only {
                MemberStatus::ReadOnly
            } else {
                MemberStatus::Suspended
            };
            amend(dir, signing, |c| {
                member_mut(c, &uscc)?.status = status;
                Ok(())
            })
            .await
        }
        CharterCmd::Reinstate { uscc, signing } => {
            amend(dir, signing, |c| {
                member_mut(c, &uscc)?.status = MemberStatus::Active;
                Ok(())
            })
            .await
        }
        CharterCmd::Remove { uscc, signing } => {
            amend(dir, signing, |c| {
                member_mut(c, &uscc)?;
                c.members.retain(|m| m.uscc.as_str() != uscc);
                Ok(())
            })
            .await
        }
        CharterCmd::Quota {
            entries_per_hour,
            signing,
        } => {
            amend(dir, signing, |c| {
                c.feed_quota.entries_per_hour = entries_per_hour;
                Ok(())
            })
            .await
        }
        CharterCmd::UpgradeLayout { signing } => {
            amend(dir, signing, |c| {
                if c.layout >= huitong_protocol::charter::CHARTER_LAYOUT_VERSION {
                    bail!(
                        "the charter is at layout {} already, the current one: nothing to sign",
                        c.layout
                    );
                }
                c.layout = huitong_protocol::charter::CHARTER_LAYOUT_VERSION;
                Ok(())
            })
            .await
        }
        CharterCmd::Import { files } => {
            let client = ApiClient::new(dir)?;
            // Oldest version first, whatever order the files were given in.
            let mut charters = Vec::new();
            for file in files {
                let bytes = charter_amend::read_charter_file(&file)?;
                let version = charter_amend::version_of(&bytes)
                    .with_context(|| format!("{} is not a signed charter", file.display()))?;
                charters.push((version, file, bytes));
            }
            charters.sort_by_key(|(v, _, _)| *v);
            for (version, file, bytes) in charters {
                let answer = client
                    .post::<api::CharterView, _>(
                        "/charter",
                        &api::CharterSubmit {
                            envelope_hex: hex::encode(bytes),
                        },
                    )
                    .await;
                match answer {
                    Ok(v) => println!(
                        "{}: version {version} imported; this node holds charter version {} ({})",
                        file.display(),
                        v.version,
                        count(v.members.len() as u64, "member", "members")
                    ),
                    Err(e) if e.to_string().contains("is held already") => {
                        println!("{}: version {version} is held already", file.display())
                    }
                    Err(e) => return Err(e.context(format!("{} was not imported", file.display()))),
                }
            }
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
