//! The gateway's clients: each department system that calls services through this node holds
//! its own key (`hgw_` and 64 hex digits), shown once when it is added. The node keeps only
//! each key's BLAKE3 hash, with the client's name, in `gateway-clients` in the node directory
//! (mode 0600, one `name hash` line per client), and reads it on every call — so adding or
//! removing a client takes effect at once, without a restart.

use std::path::{Path, PathBuf};

/// The file, in the node directory.
pub const FILE: &str = "gateway-clients";
/// Most clients.
const MAX_CLIENTS: usize = 1000;
/// Longest client name (characters).
const MAX_NAME: usize = 64;

/// Why a client could not be added, removed or read.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// A bad name.
    #[error(
        "client name {0:?}: use 1 to 64 letters, digits, '-', '_' or '.' (e.g. minzheng-jiuzhu)"
    )]
    Name(String),
    /// The name is taken.
    #[error("a client named {0:?} exists; remove it first (`huitong gateway remove-client {0}`) or choose another name")]
    Exists(String),
    /// No such client.
    #[error("no client named {0:?}; see `huitong gateway clients`")]
    Unknown(String),
    /// Too many.
    #[error("at most {MAX_CLIENTS} gateway clients")]
    Full,
    /// The file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn io(dir: &Path) -> impl Fn(std::io::Error) -> ClientsError + '_ {
    move |source| ClientsError::Io {
        path: path(dir),
        source,
    }
}

fn hash(key: &str) -> String {
    blake3::hash(key.as_bytes()).to_hex().to_string()
}

/// Whether `name` is a client name.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Every (name, key hash), in the order added. A line that is not `name hash` (a hand edit
/// gone wrong) is an error naming it, never skipped.
fn read(dir: &Path) -> Result<Vec<(String, String)>, ClientsError> {
    let text = match std::fs::read_to_string(path(dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut all: Vec<(String, String)> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let ok = matches!(parts.as_slice(), [n, h] if valid_name(n)
            && h.len() == 64
            && h.bytes().all(|b| b.is_ascii_hexdigit())
            && !all.iter().any(|(on, oh)| on == n || oh == h));
        if !ok {
            return Err(ClientsError::Io {
                path: path(dir),
                source: std::io::Error::other(format!(
                    "line {} is not `name hash` with a new name and hash; fix or remove it",
                    i + 1
                )),
            });
        }
        all.push((parts[0].to_string(), parts[1].to_string()));
    }
    Ok(all)
}

/// Runs `f` on the list under an exclusive lock (`gateway-clients.lock`), so two changes at
/// once cannot undo each other.
fn locked<T>(
    dir: &Path,
    f: impl FnOnce(&mut Vec<(String, String)>) -> Result<T, ClientsError>,
) -> Result<T, ClientsError> {
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(format!("{FILE}.lock")))
        .map_err(io(dir))?;
    lock.lock().map_err(io(dir))?;
    let mut all = read(dir)?;
    let out = f(&mut all)?;
    write(dir, &all)?;
    Ok(out)
}

fn write(dir: &Path, all: &[(String, String)]) -> Result<(), ClientsError> {
    let text: String = all.iter().map(|(n, h)| format!("{n} {h}\n")).collect();
    let p = path(dir);
    let tmp = p.with_extension(format!("tmp{:016x}", rand::random::<u64>()));
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(dir))?;
        f.write_all(text.as_bytes()).map_err(io(dir))?;
        f.sync_all().map_err(io(dir))?;
    }
    std::fs::rename(&tmp, &p).map_err(io(dir))?;
    crate::durable::sync_parent(&p).map_err(io(dir))
}

/// Adds client `name`; its key (shown once: only its hash is kept).
pub fn add(dir: &Path, name: &str) -> Result<String, ClientsError> {
    if !valid_name(name) {
        return Err(ClientsError::Name(name.to_string()));
    }
    locked(dir, |all| {
        if all.iter().any(|(n, _)| n == name) {
            return Err(ClientsError::Exists(name.to_string()));
        }
        if all.len() >= MAX_CLIENTS {
            return Err(ClientsError::Full);
        }
        let key = format!("hgw_{}", hex::encode(rand::random::<[u8; 32]>()));
        all.push((name.to_string(), hash(&key)));
        Ok(key)
    })
}

/// Removes client `name`: its key stops working at once.
pub fn remove(dir: &Path, name: &str) -> Result<(), ClientsError> {
    locked(dir, |all| {
        let before = all.len();
        all.retain(|(n, _)| n != name);
        if all.len() == before {
            return Err(ClientsError::Unknown(name.to_string()));
        }
        Ok(())
    })
}

/// The clients' names.
pub fn names(dir: &Path) -> Result<Vec<String>, ClientsError> {
    Ok(read(dir)?.into_iter().map(|(n, _)| n).collect())
}

/// The clients last read, kept until the file changes.
static READ: crate::stamped::Stamped<Vec<(String, String)>> = crate::stamped::Stamped::new();

/// The clients, read again only when the file changed.
fn read_cached(dir: &Path) -> Result<Vec<(String, String)>, ClientsError> {
    let p = path(dir);
    match std::fs::metadata(&p) {
        Ok(m) => READ.get(&p, &m, || read(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// The client holding `key`, if any.
pub fn client_of(dir: &Path, key: &str) -> Result<Option<String>, ClientsError> {
    if !key.starts_with("hgw_") {
        return Ok(None);
    }
    let h = hash(key);
    Ok(read_cached(dir)?
        .into_iter()
        .find(|(_, k)| *k == h)
        .map(|(n, _)| n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_work_until_removed_and_names_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = add(d, "minzheng").unwrap();
        assert_eq!(client_of(d, &key).unwrap().as_deref(), Some("minzheng"));
        assert_eq!(client_of(d, "hgw_wrong").unwrap(), None);
        assert!(matches!(add(d, "minzheng"), Err(ClientsError::Exists(_))));
        assert!(matches!(add(d, "bad name"), Err(ClientsError::Name(_))));
        assert!(matches!(add(d, ""), Err(ClientsError::Name(_))));
        let text = std::fs::read_to_string(d.join(FILE)).unwrap();
        assert!(!text.contains(&key), "only the hash is kept");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(d.join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A hand edit gone wrong is an error, not a silently skipped line.
        let good = std::fs::read_to_string(d.join(FILE)).unwrap();
        std::fs::write(d.join(FILE), format!("{good}min zheng abc\n")).unwrap();
        assert!(client_of(d, &key).is_err());
        std::fs::write(d.join(FILE), good).unwrap();
        remove(d, "minzheng").unwrap();
        assert_eq!(client_of(d, &key).unwrap(), None);
        assert!(matches!(
            remove(d, "minzheng"),
            Err(ClientsError::Unknown(_))
        ));
    }
}
