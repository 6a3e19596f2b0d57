//! Signing the next charter version, online or offline.
//!
//! Online (the default), the next version follows the charter the local node holds and is
//! submitted to it. Offline (`--out FILE`), it follows a signed charter *file* (`--from`, written
//! by `huitong charter export` on any node) and is written to a file, so the authority key never
//! touches a networked machine; a node then imports it. Either way the base is verified against
//! the authority key before anything is signed, the new version names the base's hash, and every
//! feed the change stops (a member suspended, removed, re-keyed or given another role) is closed
//! at the last seq the federation keeps: this node's head of that feed online, `--last-seq`
//! offline.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use huitong_config::keyfile;
use huitong_protocol::charter::{CharterHash, ClosedFeed, CHARTER_LAYOUT_VERSION};
use huitong_protocol::{Charter, MemberStatus, SecretKey};

use super::output::count;
use crate::api;
use crate::client::ApiClient;

/// Where the next version comes from and where it goes.
#[derive(clap::Args, Debug)]
pub struct Signing {
    /// The authority key file.
    #[arg(long)]
    authority_key: PathBuf,
    /// Offline: write the new signed version to this file (it must not exist) instead of
    /// submitting it to the local node; import it on a node with `huitong charter import FILE`.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Offline: the signed charter file the new version follows (from `huitong charter export`
    /// on a node that holds the latest version). Without it, offline signs version 1.
    #[arg(long, requires = "out")]
    from: Option<PathBuf>,
    /// Offline, version 1 only: the federation name (e.g. 海门区).
    #[arg(long)]
    federation: Option<String>,
    /// The last seq of the stopped member's feed that the federation keeps (its later entries
    /// are refused everywhere). Default online: this node's head of that feed. Required offline
    /// when the change suspends, removes, re-keys or changes the role of a member.
    #[arg(long)]
    last_seq: Option<u64>,
}

/// The version a change follows.
struct Base {
    charter: Option<(Charter, CharterHash)>,
    federation: String,
    /// Feed heads this node holds, by node key (online only).
    heads: Option<BTreeMap<String, u64>>,
    client: Option<ApiClient>,
}

async fn base(dir: &Path, s: &Signing, key: &SecretKey) -> anyhow::Result<Base> {
    let authority = key.public();
    if s.out.is_some() {
        let Some(from) = &s.from else {
            let federation = s.federation.clone().context(
                "offline without --from signs version 1: give --federation NAME, or --from FILE to follow an existing version",
            )?;
            return Ok(Base {
                charter: None,
                federation,
                heads: None,
                client: None,
            });
        };
        let bytes = read_charter_file(from)?;
        let (c, env) = Charter::open(&bytes, &authority).with_context(|| {
            format!(
                "{} is not a charter signed by this authority key",
                from.display()
            )
        })?;
        return Ok(Base {
            federation: c.federation.clone(),
            charter: Some((c, CharterHash::of(env.payload()))),
            heads: None,
            client: None,
        });
    }
    let client = ApiClient::new(dir)?;
    match super::charter_cmd::current(&client).await? {
        Some(view) => {
            let bytes = hex::decode(&view.envelope_hex)?;
            let (c, env) = Charter::open(&bytes, &authority).with_context(|| {
                format!(
                    "the node's charter is signed by {}, not by this authority key",
                    view.authority
                )
            })?;
            Ok(Base {
                federation: c.federation.clone(),
                charter: Some((c, CharterHash::of(env.payload()))),
                heads: Some(view.feed_heads),
                client: Some(client),
            })
        }
        None => {
            let status: api::Status = client.get("/status", &()).await?;
            Ok(Base {
                charter: None,
                federation: status.federation,
                heads: Some(BTreeMap::new()),
                client: Some(client),
            })
        }
    }
}

/// Reads a signed charter file, refusing what cannot be one.
pub(super) fn read_charter_file(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if meta.len() > huitong_protocol::codec::MAX_ENVELOPE_BYTES as u64 {
        bail!(
            "{} is {} bytes, too large to be a charter",
            path.display(),
            meta.len()
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The version of a signed charter (its signature checked, not its authority: the node
/// checks that).
pub(super) fn version_of(bytes: &[u8]) -> anyhow::Result<u64> {
    let env = huitong_protocol::Envelope::open(bytes, huitong_protocol::Kind::Charter)?;
    let c: Charter = huitong_protocol::codec::decode(
        env.payload(),
        huitong_protocol::codec::MAX_ENVELOPE_BYTES,
    )?;
    Ok(c.version)
}

/// Signs the version after the base with `change` applied, then submits or writes it.
pub(super) async fn amend(
    dir: &Path,
    s: Signing,
    change: impl FnOnce(&mut Charter) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let key = keyfile::read(&s.authority_key)?;
    let base = base(dir, &s, &key).await?;
    let mut next = match &base.charter {
        Some((c, hash)) => Charter {
            version: c.version + 1,
            issued_at_ms: crate::state::now_ms(),
            previous: Some(*hash),
            closed: Vec::new(),
            ..c.clone()
        },
        None => Charter {
            layout: CHARTER_LAYOUT_VERSION,
            federation: base.federation.clone(),
            version: 1,
            issued_at_ms: crate::state::now_ms(),
            authority: key.public(),
            members: Vec::new(),
            timezone: huitong_protocol::charter::DEFAULT_TIMEZONE.into(),
            witnesses: Default::default(),
            previous: None,
            closed: Vec::new(),
            feed_quota: Default::default(),
        },
    };
    change(&mut next)?;
    if let Some((prev, hash)) = &base.charter {
        close_stopped_feeds(prev, &mut next, &base, s.last_seq)?;
        println!(
            "version {} follows version {} (hash {}, issued {})",
            next.version,
            prev.version,
            &hash.to_hex()[..16],
            super::output::time_ms(prev.issued_at_ms)
        );
        for c in &next.closed {
            let who = prev.member(&c.node_key).map_or_else(
                || c.node_key.to_hex(),
                |m| format!("{} ({})", m.name, m.uscc),
            );
            println!(
                "closes the feed of {who} at seq {}: its later entries are refused everywhere",
                c.last_seq
            );
        }
    }
    next.check()?;
    if let Some((prev, hash)) = &base.charter {
        next.follows(prev, hash)?;
    }
    let env = next.seal(&key);
    let members = count(next.members.len() as u64, "member", "members");
    match (&s.out, &base.client) {
        (Some(out), _) => {
            write_new(out, &env.to_bytes())?;
            println!(
                "charter version {} ({members}) signed and written to {}; import it on a node with `huitong charter import {}`",
                next.version,
                out.display(),
                out.display()
            );
        }
        (None, Some(client)) => {
            let v: api::CharterView = client
                .post(
                    "/charter",
                    &api::CharterSubmit {
                        envelope_hex: hex::encode(env.to_bytes()),
                    },
                )
                .await?;
            println!("charter version {} accepted ({members})", v.version);
        }
        (None, None) => bail!("nowhere to send the new version: give --out FILE"),
    }
    Ok(())
}

/// Closes the feed of every key active in `prev` that is not the same active member in `next`.
fn close_stopped_feeds(
    prev: &Charter,
    next: &mut Charter,
    base: &Base,
    last_seq: Option<u64>,
) -> anyhow::Result<()> {
    for m in prev
        .members
        .iter()
        .filter(|m| m.status == MemberStatus::Active)
    {
        let same = next.member(&m.node_key).is_some_and(|n| {
            n.status == MemberStatus::Active && n.uscc == m.uscc && n.role == m.role
        });
        if same {
            continue;
        }
        let held = base
            .heads
            .as_ref()
            .map(|h| h.get(&m.node_key.to_hex()).copied().unwrap_or(0));
        let last_seq = match (last_seq, held) {
            (Some(n), _) => n,
            (None, Some(h)) => h,
            (None, None) => bail!(
                "offline, this change stops the feed of {} ({}): give --last-seq N, the seq of its last entry the federation keeps (`huitong charter show` on the hub lists each member's feed head)",
                m.name,
                m.uscc
            ),
        };
        next.closed.push(ClosedFeed {
            node_key: m.node_key,
            last_seq,
        });
    }
    Ok(())
}

/// Writes a file that must not exist yet (never through a symlink, never over another file).
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| {
            format!(
                "cannot create {} (it must not exist yet; choose another file name)",
                path.display()
            )
        })?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        s: Signing,
    }

    #[test]
    fn from_needs_out() {
        assert!(Cli::try_parse_from(["x", "--authority-key", "k", "--from", "f"]).is_err());
        let ok = Cli::try_parse_from(["x", "--authority-key", "k", "--from", "f", "--out", "o"]);
        assert!(ok.is_ok());
    }
}
