//! Delivery into a directory: one file per version (`NAME-vN.ext`, the pull writes it in place)
//! or one current file (`NAME.ext`), which the pull writes under a hidden name beside it and
//! which then replaces the current file in one rename — a reader never sees half a version.
//!
//! Layering: a leaf of [`crate::subscribe`].

use std::path::{Path, PathBuf};

use crate::dataset::export::OutFormat;

use super::sql::DeliverError;

/// Where the pull of `version` writes, for a directory target.
pub fn pull_out(dir: &Path, format: OutFormat, current: bool, name: &str, version: u64) -> PathBuf {
    let ext = format.as_str();
    if current {
        dir.join(format!(".{name}.incoming.{ext}"))
    } else {
        dir.join(format!("{name}-v{version}.{ext}"))
    }
}

/// Completes a directory delivery of the file the pull wrote at `pulled`.
pub fn finish(
    dir: &Path,
    format: OutFormat,
    current: bool,
    name: &str,
    pulled: &Path,
) -> Result<(), DeliverError> {
    if !current {
        return Ok(());
    }
    let to = dir.join(format!("{name}.{}", format.as_str()));
    std::fs::rename(pulled, &to).map_err(|e| {
        DeliverError::Io(format!(
            "cannot replace {} with the new version: {e}",
            to.display()
        ))
    })
}
