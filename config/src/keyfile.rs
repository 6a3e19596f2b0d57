//! Key files: 64 hex characters of an ed25519 secret key and a newline, mode 0600.
//!
//! Writing refuses to overwrite; reading refuses a file that others can read.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use huitong_protocol::SecretKey;

/// A key file problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// I/O.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file exists already.
    #[error("{0} exists already; refusing to overwrite a key (move it away first if you really mean to)")]
    Exists(PathBuf),
    /// Others may read it.
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a key.
    #[error("{0} does not hold a key (expected 64 hex characters)")]
    Format(PathBuf),
}

/// Draws a fresh key from the operating system's RNG.
pub fn generate() -> Result<SecretKey, std::io::Error> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom").and_then(|mut f| {
        use std::io::Read;
        f.read_exact(&mut bytes)
    })?;
    Ok(SecretKey::from_bytes(bytes))
}

/// Writes a new key file with mode 0600; refuses to overwrite.
pub fn write_new(path: &Path, key: &SecretKey) -> Result<(), KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::Exists(path.to_owned())
            } else {
                io(e)
            }
        })?;
    writeln!(f, "{}", hex::encode(key.to_bytes())).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Reads a key file, checking its permissions.
pub fn read(path: &Path) -> Result<SecretKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > 1024 {
        return Err(KeyFileError::Format(path.to_owned()));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    let bytes = hex::decode(text.trim()).map_err(|_| KeyFileError::Format(path.to_owned()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| KeyFileError::Format(path.to_owned()))?;
    Ok(SecretKey::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_refuse_overwrite_and_loose_modes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.key");
        let k = generate().unwrap();
        write_new(&p, &k).unwrap();
        assert_eq!(read(&p).unwrap().public(), k.public());
        assert!(matches!(write_new(&p, &k), Err(KeyFileError::Exists(_))));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(read(&p), Err(KeyFileError::Permissions { .. })));
    }
}
