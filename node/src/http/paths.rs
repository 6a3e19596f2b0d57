//! Files named by people: a signed-in person's pull output and dataset input are files in their
//! own directory of the exchange directory, `<exchange>/<account>/` (`storage.exchange_dir`,
//! default `exchange/` in the node directory), never elsewhere on the host — otherwise a data
//! user could pull a file over the node's `api.token` and a cataloguer could publish the node
//! key. The node's admin token (the CLI on the node's own machine) names any path, as before.
//!
//! A person names a bare file name (no `/`, not starting with `.`). Their directory is made by
//! the node, owned by the node's user and open to nobody else (0700), so no other user of the
//! host can put a link or a FIFO there, or swap a directory in, between the check here and the
//! node's later opening, writing and renaming; and one person's files are not another's.
//! Files reach it by the person's pulls, and by uploads through the portal (removed once published).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use axum::http::StatusCode;

use super::authz::Principal;
use super::{fail, Ctx, Fail};

/// The exchange directory of the node (created at start).
pub(crate) fn exchange_dir(state: &crate::state::NodeState) -> PathBuf {
    match &state.config.storage.exchange_dir {
        Some(d) if d.is_absolute() => d.clone(),
        Some(d) => state.dir.join(d),
        None => state.dir.join("exchange"),
    }
}

/// `path` as the request may use it: unchanged for the node token; for a person, the file of
/// that name in their directory (see the module doc).
pub(super) fn for_principal(ctx: &Ctx, who: &Principal, path: &Path) -> Result<PathBuf, Fail> {
    match who {
        Principal::Node => Ok(path.to_path_buf()),
        Principal::Person { account, .. } => {
            let owner = std::fs::metadata(&ctx.state.dir)
                .map_err(super::internal)?
                .uid();
            own_file(&exchange_dir(&ctx.state), &account.name, owner, path)
                .map_err(|m| fail(StatusCode::FORBIDDEN, m))
        }
    }
}

/// A person's own directory of the exchange directory (made if missing), where their
/// subscriptions deliver.
pub(super) fn own_dir(ctx: &Ctx, account: &str) -> Result<PathBuf, Fail> {
    let owner = std::fs::metadata(&ctx.state.dir)
        .map_err(super::internal)?
        .uid();
    let file = own_file(
        &exchange_dir(&ctx.state),
        account,
        owner,
        Path::new("subscription"),
    )
    .map_err(|m| fail(StatusCode::FORBIDDEN, m))?;
    Ok(file.parent().map(Path::to_path_buf).unwrap_or(file))
}

/// The file `name` in `<root>/<account>/`, made if missing (0700, owned by `owner`), or why not.
fn own_file(root: &Path, account: &str, owner: u32, name: &Path) -> Result<PathBuf, String> {
    let text = name.to_string_lossy();
    if name.components().count() != 1
        || text.contains('/')
        || text.starts_with('.')
        || text.is_empty()
    {
        return Err(format!(
            "{text:?}: name a file, without a directory (people's files are in their own directory of the exchange directory, {})",
            root.display()
        ));
    }
    huitong_protocol::actor::check_account(account)?;
    let dir = root.join(account);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !meta.is_dir() || meta.uid() != owner || meta.permissions().mode() & 0o077 != 0 {
        return Err(format!(
            "{} must be a directory of the node's user open to nobody else (0700); remove it and the node makes it again",
            dir.display()
        ));
    }
    Ok(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_names_files_in_their_own_directory_only() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("exchange");
        let me = std::fs::metadata(tmp.path()).unwrap().uid();
        assert_eq!(
            own_file(&root, "zhangsan", me, Path::new("a.csv")).unwrap(),
            root.join("zhangsan/a.csv")
        );
        let mode = std::fs::metadata(root.join("zhangsan"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        for bad in [
            tmp.path().join("api.token"),
            PathBuf::from("../api.token"),
            PathBuf::from("sub/b.csv"),
            PathBuf::from(".a.csv.huitong-partial.1"),
            PathBuf::from(""),
        ] {
            assert!(
                own_file(&root, "zhangsan", me, &bad).is_err(),
                "{}",
                bad.display()
            );
        }
        // A directory someone else could write to, or a link in its place, is refused.
        std::fs::create_dir_all(root.join("lisi")).unwrap();
        std::fs::set_permissions(root.join("lisi"), std::fs::Permissions::from_mode(0o777))
            .unwrap();
        assert!(own_file(&root, "lisi", me, Path::new("a.csv")).is_err());
        std::os::unix::fs::symlink(tmp.path(), root.join("wangwu")).unwrap();
        assert!(own_file(&root, "wangwu", me, Path::new("api.token")).is_err());
        // Owned by another user: refused.
        assert!(own_file(&root, "zhangsan", me + 1, Path::new("a.csv")).is_err());
    }
}
