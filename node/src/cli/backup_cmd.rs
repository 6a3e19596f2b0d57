//! `huitong backup --out DIR` and `huitong restore --from DIR` (what a backup holds:
//! [`crate::backup`]).
//!
//! `backup` checkpoints the store of the running node through its admin API (the node stages
//! the checkpoint, and then a copy of its audit log taken while it holds the log, in its
//! directory; this process copies them), or, when the node is stopped, opens the store itself
//! (holding its lock, so the node cannot start meanwhile) and copies `audit/` as it is. It then
//! copies the chunk store and the node's files, checks the copied audit log against its
//! checkpoint, and only then writes `backup.json`.
//!
//! `restore` refuses while a node runs in `--dir`, refuses a backup of another node key, keeps
//! a replaced store as `db.before-restore-<time>`, and makes sure the restored store carries
//! the catch-up mark, so the node catches up on its own feed from its peers before it appends.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::Args;
use huitong_config::{keyfile, Config, NODE_KEY_FILE};

use super::dataset_cmd::absolute;
use super::output::{self, bytes, count};
use crate::api;
use crate::audit_log::tiles::CHECKPOINT_FILE;
use crate::backup::{self, BackupInfo, Copier, BACKUP_FORMAT, NODE_FILES};
use crate::client::ApiClient;
use crate::store::{Store, StoreError, CATCH_UP_MARK_VERSION};

/// `huitong backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// A new directory for the backup (it must not exist; its parent must).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

/// `huitong restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup directory (written by `huitong backup`).
    #[arg(long = "from", value_name = "DIR")]
    from: PathBuf,
    /// Replace the store already in the node directory (it is kept as
    /// `db.before-restore-<time>`).
    #[arg(long)]
    force: bool,
}

fn bar(total: u64) -> indicatif::ProgressBar {
    output::progress_bar(std::io::stderr().is_terminal(), "copying", Some(total))
}

/// Where the store's checkpoint comes from.
enum Source {
    /// The node is stopped: this process holds its store.
    Offline(Store),
    /// The running node staged a checkpoint here.
    Staged(api::BackupStaged),
}

/// Opens the store of a stopped node; `None` when a node holds it (it is running).
fn open_if_stopped(dir: &Path) -> anyhow::Result<Option<Store>> {
    match Store::open(&dir.join("db")) {
        Ok(s) => Ok(Some(s)),
        Err(StoreError::Locked(_)) => Ok(None),
        Err(e) => Err(e).context("cannot open the node's store"),
    }
}

/// The audit log's origin and hub key, from the charter in a stopped node's store.
fn offline_audit_keys(
    config: &Config,
    store: &Store,
) -> anyhow::Result<(String, huitong_protocol::NodeId, Option<u64>)> {
    let authority = config
        .authority_key()
        .map_err(|(k, m)| anyhow::anyhow!("{k}: {m}"))?;
    let charters = crate::charter::load(store, authority)?;
    let keys = charters.latest().and_then(|c| {
        let hub = c
            .members
            .iter()
            .find(|m| m.role == huitong_protocol::Role::Hub)?;
        Some((huitong_protocol::audit::origin(&c.federation), hub.node_key))
    });
    let (origin, hub) = keys.ok_or_else(|| {
        anyhow::anyhow!(
            "the node holds an audit log but no charter naming the hub that signs it, so the copy cannot be checked; import the charter (`huitong charter import`), then back up again"
        )
    })?;
    Ok((origin, hub, None))
}

/// Runs `huitong backup`.
pub(super) async fn backup(dir: &Path, args: BackupArgs) -> anyhow::Result<()> {
    let config = Config::load(dir)?;
    let own = keyfile::read(&dir.join(NODE_KEY_FILE))?.public();
    let out = absolute(&args.out)?;
    if std::fs::symlink_metadata(&out).is_ok() {
        bail!(
            "--out {}: already exists; a backup goes into a new directory (it never overwrites one)",
            args.out.display()
        );
    }
    let parent = out.parent().unwrap_or(Path::new("/")).to_path_buf();
    if !parent.is_dir() {
        bail!(
            "--out {}: the directory {} does not exist",
            args.out.display(),
            parent.display()
        );
    }
    if !dir.join("db").is_dir() {
        bail!(
            "{} holds no store (db/): nothing to back up; is --dir the node directory?",
            dir.display()
        );
    }
    // A stopped node is backed up here, holding its directory (no node or restore starts
    // meanwhile); a running one stages a checkpoint itself.
    let (source, _dir_lock) = match crate::dirlock::DirLock::acquire(dir, "backup") {
        Ok(lock) => match open_if_stopped(dir)? {
            Some(store) => (Source::Offline(store), Some(lock)),
            None => bail!(
                "the store in {} is locked by another process, though no node holds the directory; try again",
                dir.display()
            ),
        },
        Err(held @ crate::dirlock::DirLockError::Held { .. }) => {
            let staged: api::BackupStaged = ApiClient::new(dir)?
                .post("/backup", &())
                .await
                .with_context(|| {
                    format!("{held}; if that is the running node, it did not checkpoint its store")
                })?;
            (Source::Staged(staged), None)
        }
        Err(e) => return Err(e.into()),
    };
    let result = write_backup(dir, &config, &own, &out, &parent, &source);
    if let Source::Staged(s) = &source {
        if let Err(e) = std::fs::remove_dir_all(&s.staging) {
            eprintln!(
                "warning: cannot remove the staged checkpoint {}: {e}; remove it by hand",
                s.staging.display()
            );
        }
    }
    let info = match result {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&out);
            return Err(e.context(format!(
                "backup failed; the incomplete backup in {} was removed",
                out.display()
            )));
        }
    };
    if args.json {
        return output::json(&info);
    }
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "backed up {} ({}) to {}: {} in {}, own feed at seq {}",
        info.name,
        info.org_code,
        out.display(),
        bytes(info.bytes),
        count(info.files, "file", "files"),
        info.own_seq
    )?;
    writeln!(
        o,
        "it holds node.key: keep it as safe as the node. Restore with `huitong restore --from {} --dir NODE_DIR`",
        out.display()
    )?;
    Ok(())
}

fn write_backup(
    dir: &Path,
    config: &Config,
    own: &huitong_protocol::NodeId,
    out: &Path,
    parent: &Path,
    source: &Source,
) -> anyhow::Result<BackupInfo> {
    let sized = |p: &Path, skip: &[&str]| {
        backup::size_of(p, skip).with_context(|| format!("cannot read {}", p.display()))
    };
    let db_size = match source {
        Source::Offline(_) => sized(&dir.join("db"), &[])?.0,
        Source::Staged(s) => sized(&s.db, &[])?.0,
    };
    let mut need =
        db_size + sized(&dir.join("chunks"), &["tmp"])?.0 + sized(&dir.join("audit"), &[])?.0;
    for f in NODE_FILES {
        need += sized(&dir.join(f), &[])?.0;
    }
    backup::check_space(parent, need)?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(out)
        .with_context(|| format!("cannot create {}", out.display()))?;
    let bar = bar(need);
    let progress = |n| bar.set_position(n);
    let mut c = Copier::new(&progress);
    let audit_out = out.join(backup::STAGED_AUDIT);
    // The audit log after the store: the log may then be ahead of the store's queue, which the
    // appender handles (a record found in the log is not appended twice).
    let (own_seq, created_at_ms, audit_keys) = match source {
        Source::Offline(store) => {
            let seq = backup::checkpoint(store, own, &out.join(backup::STAGED_DB))?;
            let (b, f) = sized(&out.join(backup::STAGED_DB), &[])?;
            c.bytes += b;
            c.files += f;
            // The node is stopped (this process holds its store): its log does not change.
            c.audit(&dir.join(backup::STAGED_AUDIT), &audit_out)?;
            let keys = if audit_out.join(CHECKPOINT_FILE).is_file() {
                Some(offline_audit_keys(config, store)?)
            } else {
                None
            };
            (seq, crate::state::now_ms(), keys)
        }
        Source::Staged(s) => {
            c.tree(&s.db, &out.join(backup::STAGED_DB), &[], &[], false)?;
            let keys = match &s.audit {
                Some(a) => {
                    c.audit(&a.dir, &audit_out)?;
                    let hub = huitong_protocol::NodeId::from_hex(&a.hub).with_context(|| {
                        format!("the node named the audit log's hub key {:?}", a.hub)
                    })?;
                    Some((a.origin.clone(), hub, Some(a.size)))
                }
                None => None,
            };
            (s.own_seq, s.created_at_ms, keys)
        }
    };
    c.chunks(&dir.join("chunks"), &out.join("chunks"), false)?;
    for f in NODE_FILES {
        if dir.join(f).is_file() {
            c.file(&dir.join(f), &out.join(f), false)?;
        }
    }
    bar.finish_and_clear();
    // The copied log must open: every tile its checkpoint needs, hashing to it.
    let audit_size = match audit_keys {
        Some((origin, hub, staged_size)) => {
            let report = backup::check_audit(&audit_out, &origin, &hub)?;
            if let Some(size) = staged_size.filter(|&s| s != report.size) {
                bail!(
                    "the node copied its audit log at size {size}, but the backup's copy holds a checkpoint of size {}; run the backup again",
                    report.size
                );
            }
            Some(report.size)
        }
        None => None,
    };
    let info = BackupInfo {
        format: BACKUP_FORMAT,
        node_key: own.to_hex(),
        name: config.node.name.clone(),
        org_code: config.node.org_code.clone(),
        own_seq,
        created_at_ms,
        huitong: env!("CARGO_PKG_VERSION").into(),
        bytes: c.bytes,
        files: c.files,
        audit_size,
    };
    backup::write_info(out, &info)?;
    Ok(info)
}

/// Runs `huitong restore`.
pub(super) fn restore(dir: &Path, args: RestoreArgs) -> anyhow::Result<()> {
    let from = absolute(&args.from)?;
    let info = backup::read_info(&from).map_err(anyhow::Error::msg)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Held until the restored store is in place: no node starts in between (it would create a
    // fresh store, or open a half-copied one).
    let _dir_lock = crate::dirlock::DirLock::acquire(dir, "restore")?;
    let key_file = dir.join(NODE_KEY_FILE);
    if key_file.exists() {
        let key = keyfile::read(&key_file)?.public().to_hex();
        if key != info.node_key {
            bail!(
                "{} is a backup of node key {} ({}), but the node in {} has key {key}: restore a node's backup into its own directory (or into an empty one)",
                from.display(),
                info.node_key,
                info.name,
                dir.display()
            );
        }
    }
    let db = dir.join("db");
    if db.exists() {
        if open_if_stopped(dir)?.is_none() {
            bail!(
                "a node is running in {}: stop it first (e.g. `systemctl stop huitong`), then restore",
                dir.display()
            );
        }
        if !args.force {
            bail!(
                "{} already holds a store (db/): restoring replaces it with the backup's. Run again with --force; the current store is kept as db.before-restore-<time>",
                dir.display()
            );
        }
    }
    let need = backup::size_of(&from, &[])
        .context("cannot read the backup")?
        .0;
    backup::check_space(dir, need)?;
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let mut kept = Vec::new();
    let mut set_aside = |name: &str| -> anyhow::Result<()> {
        let p = dir.join(name);
        if p.exists() {
            let aside = dir.join(format!("{name}.before-restore-{stamp}"));
            std::fs::rename(&p, &aside)
                .with_context(|| format!("cannot move {} aside", p.display()))?;
            kept.push(aside);
        }
        Ok(())
    };
    set_aside("audit")?;
    let bar = bar(need);
    let progress = |n| bar.set_position(n);
    let mut c = Copier::new(&progress);
    // The store is copied beside its place, marked, and only then renamed into it: a restore
    // cut short never leaves a half-copied or unmarked `db/` for a node to start from.
    let restoring = dir.join(crate::daemon::RESTORING_DB);
    if restoring.exists() {
        std::fs::remove_dir_all(&restoring).with_context(|| {
            format!(
                "cannot remove {} left by an earlier restore",
                restoring.display()
            )
        })?;
    }
    c.tree(&from.join("db"), &restoring, &[], &[], false)?;
    c.audit(
        &from.join(backup::STAGED_AUDIT),
        &dir.join(backup::STAGED_AUDIT),
    )?;
    // Chunks are named by their content: ones the node holds already are the same bytes.
    c.chunks(&from.join("chunks"), &dir.join("chunks"), true)?;
    let mut kept_files = Vec::new();
    for f in NODE_FILES {
        if dir.join(f).exists() {
            kept_files.push(f);
        } else if from.join(f).is_file() {
            c.file(&from.join(f), &dir.join(f), false)?;
        }
    }
    bar.finish_and_clear();
    // A store restored by any means catches up before it appends.
    let store = Store::open(&restoring).context("cannot open the restored store")?;
    if store.catch_up_mark()?.is_none() {
        let own_seq = store
            .head(&huitong_protocol::NodeId::from_hex(&info.node_key)?)?
            .seq;
        store.set_catch_up_mark(
            &store.writer(),
            &crate::store::CatchUpMark {
                version: CATCH_UP_MARK_VERSION,
                own_seq,
                backed_up_at_ms: info.created_at_ms,
            },
        )?;
    }
    drop(store);
    // `db.restoring` exists until `db/` is the backup's: a node refuses to start meanwhile.
    set_aside("db")?;
    std::fs::rename(&restoring, &db)
        .with_context(|| format!("cannot move the restored store into {}", db.display()))?;
    crate::durable::sync_dir(dir).with_context(|| format!("cannot sync {}", dir.display()))?;
    let mut o = std::io::stdout().lock();
    writeln!(
        o,
        "restored {} ({}) into {} from the backup of {} (own feed at seq {}): {} in {}",
        info.name,
        info.org_code,
        dir.display(),
        output::time_ms(info.created_at_ms),
        info.own_seq,
        bytes(c.bytes),
        count(c.files, "file", "files")
    )?;
    for k in &kept {
        writeln!(
            o,
            "kept the replaced {} (delete it once the node runs well)",
            k.display()
        )?;
    }
    if !kept_files.is_empty() {
        writeln!(o, "kept this directory's own {}", kept_files.join(", "))?;
    }
    writeln!(
        o,
        "start the node: it catches up on its own feed from its peers before it publishes anything (`huitong status` shows CATCHING UP until then)"
    )?;
    Ok(())
}
