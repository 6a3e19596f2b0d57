//! Host paths named by people: a signed-in person's pull output and dataset input must lie in
//! the node's exchange directory (`storage.exchange_dir`, default `exchange/` in the node
//! directory), never elsewhere on the host — otherwise a data user could pull a file over the
//! node's `api.token` and a cataloguer could publish the node key. The node's admin token (the
//! CLI on the node's own machine) names any path, as before.
//!
//! A person's path may be relative (to the exchange directory) or absolute; it may not hold
//! `..`; its directory, with every symbolic link resolved, must be inside the exchange
//! directory; and the file itself may not be a symbolic link.

use std::path::{Component, Path, PathBuf};

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

/// `path` as the request may use it: unchanged for the node token; for a person, confined to
/// the exchange directory (see the module doc).
pub(super) fn for_principal(ctx: &Ctx, who: &Principal, path: &Path) -> Result<PathBuf, Fail> {
    match who {
        Principal::Node => Ok(path.to_path_buf()),
        Principal::Person { .. } => {
            confine(&exchange_dir(&ctx.state), path).map_err(|m| fail(StatusCode::FORBIDDEN, m))
        }
    }
}

/// `path` inside `root`, or why not.
fn confine(root: &Path, path: &Path) -> Result<PathBuf, String> {
    let outside = |p: &Path| {
        format!(
            "{} is outside the exchange directory {}: a person's pulls and dataset files must be there (storage.exchange_dir in huitong.toml)",
            p.display(),
            root.display()
        )
    };
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{}: a path with `..` is refused", path.display()));
    }
    let root_real = std::fs::canonicalize(root)
        .map_err(|e| format!("the exchange directory {}: {e}", root.display()))?;
    let joined = root_real.join(path);
    let (Some(dir), Some(name)) = (joined.parent(), joined.file_name()) else {
        return Err(format!("{}: name a file", path.display()));
    };
    let dir_real = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    if !dir_real.starts_with(&root_real) {
        return Err(outside(path));
    }
    let target = dir_real.join(name);
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!(
            "{} is a symbolic link; name the file itself",
            target.display()
        ));
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_in_the_exchange_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("exchange");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(tmp.path().join("api.token"), "secret").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("api.token"), root.join("link")).unwrap();
        std::os::unix::fs::symlink(tmp.path(), root.join("up")).unwrap();
        let real = std::fs::canonicalize(&root).unwrap();
        assert_eq!(
            confine(&root, Path::new("a.csv")).unwrap(),
            real.join("a.csv")
        );
        assert_eq!(
            confine(&root, &root.join("sub/b.csv")).unwrap(),
            real.join("sub/b.csv")
        );
        for bad in [
            tmp.path().join("api.token"),
            PathBuf::from("../api.token"),
            PathBuf::from("sub/../../api.token"),
            PathBuf::from("up/api.token"),
            PathBuf::from("link"),
            PathBuf::from("/etc/passwd"),
        ] {
            assert!(confine(&root, &bad).is_err(), "{}", bad.display());
        }
    }
}
