//! The node's secrets file, `secrets.toml` in the node's directory: the credentials this node
//! presents to its department's own systems — today the headers each proxied service's backend
//! expects (`[backends."CODE"] headers = { Authorization = "Bearer …" }`), the password of each
//! collection source's database (`[sources."CODE"] password = "…"`) or the headers of its HTTP
//! API (`[sources."CODE"] headers = { … }`), and the password of each subscription target
//! database (`[targets."NAME"] url = "…"` and `password = "…"`: the password is given only to
//! that database). Never in the
//! catalogue, the config, a log line or any `--json` output.
//!
//! The file must be readable by its owner only (mode 0600 or stricter): anything else is refused
//! with the `chmod` to run. A malformed file is reported by line, never by content (a parse error
//! may quote the value). No file means no credentials.
//!
//! Layering: a leaf (reads one file); the proxied services ([`crate::service::proxy`]), the
//! collection runs ([`crate::collect`]) and the daemon's start-up check use it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

/// The file name, in the node's directory.
pub const SECRETS_FILE: &str = "secrets.toml";
/// Largest secrets file read.
const MAX_BYTES: u64 = 256 * 1024;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    backends: BTreeMap<String, Backend>,
    #[serde(default)]
    sources: BTreeMap<String, Source>,
    #[serde(default)]
    targets: BTreeMap<String, TargetCreds>,
}

/// A subscription target's credentials, bound to the database they are for: a subscription
/// made again under the same name towards another host gets no password.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetCreds {
    url: String,
    password: String,
}

impl std::fmt::Debug for TargetCreds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TargetCreds {{ url: {:?}, password: <hidden> }}",
            self.url
        )
    }
}

/// A collection source's credentials: its database's password, or the headers its HTTP API
/// expects.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Source {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Source { password: <hidden>, headers: <hidden> }")
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Backend {
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Why the secrets could not be used. No variant carries a secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// Others may read the file.
    #[error("{path} may be read by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Mode {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file cannot be read, or is too large.
    #[error("cannot read {path}: {why}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The file is not valid.
    #[error("{path} is malformed near line {line}; expected [backends.\"CLASS/NUMBER\"] with headers = {{ Name = \"value\" }}, or [sources.\"CLASS/NUMBER\"] with password = \"…\" or headers = {{ Name = \"value\" }}, or [targets.\"NAME\"] with url = \"…\" and password = \"…\"")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line of the error (1-based).
        line: usize,
    },
    /// A target's credentials are for another database than the subscription's.
    #[error("{path}: [targets.\"{name}\"] is for another database than subscription {name}'s; set its url to the subscription's --into, or remove the entry")]
    TargetUrl {
        /// The file.
        path: PathBuf,
        /// The subscription.
        name: String,
    },
    /// A header name or value cannot be sent.
    #[error("{path}: header {name:?} of {code} is not a valid HTTP header name or value")]
    Header {
        /// The file.
        path: PathBuf,
        /// The resource code.
        code: String,
        /// The header name.
        name: String,
    },
}

fn read(dir: &Path) -> Result<(PathBuf, File), SecretsError> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(SECRETS_FILE);
    let failed = |e: std::io::Error| SecretsError::Read {
        path: path.clone(),
        why: e.to_string(),
    };
    // Only a regular file (not a FIFO that would block the open, nor a device).
    match std::fs::metadata(&path) {
        Ok(m) if !m.is_file() => {
            return Err(SecretsError::Read {
                path,
                why: "not a regular file".into(),
            })
        }
        _ => {}
    }
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((path, File::default())),
        Err(e) => return Err(failed(e)),
    };
    let meta = f.metadata().map_err(failed)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::Mode { path, mode });
    }
    if meta.len() > MAX_BYTES {
        return Err(SecretsError::Read {
            path,
            why: format!("larger than {} KiB", MAX_BYTES / 1024),
        });
    }
    let mut text = String::new();
    f.take(MAX_BYTES)
        .read_to_string(&mut text)
        .map_err(failed)?;
    match toml::from_str::<File>(&text) {
        Ok(file) => Ok((path, file)),
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start).min(text.len());
            let line = text
                .get(..at)
                .map_or(1, |before| before.matches('\n').count() + 1);
            Err(SecretsError::Parse { path, line })
        }
    }
}

/// Checks the whole file (at start, so an operator hears of a mistake before the first call).
pub fn check(dir: &Path) -> Result<(), SecretsError> {
    let (path, file) = read(dir)?;
    for (code, b) in &file.backends {
        to_headers(&path, code, &b.headers)?;
    }
    for (code, s) in &file.sources {
        to_headers(&path, code, &s.headers)?;
    }
    Ok(())
}

fn to_headers(
    path: &Path,
    code: &str,
    headers: &BTreeMap<String, String>,
) -> Result<HeaderMap, SecretsError> {
    let mut out = HeaderMap::new();
    for (name, value) in headers {
        let bad = || SecretsError::Header {
            path: path.to_path_buf(),
            code: code.to_string(),
            name: name.clone(),
        };
        let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad())?;
        // Headers that frame the request belong to the HTTP client, and one name given twice
        // (in other case) would hide a value.
        use reqwest::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE};
        if [CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING, UPGRADE].contains(&n)
            || out.contains_key(&n)
        {
            return Err(bad());
        }
        let mut v = HeaderValue::from_str(value).map_err(|_| bad())?;
        // Never printed by the HTTP client's debug output.
        v.set_sensitive(true);
        out.insert(n, v);
    }
    Ok(out)
}

/// The password of collection source `code`'s database (`None` when the file gives none). The
/// file is read again every time (a run is rare; an operator may have just changed it).
pub fn source_password(dir: &Path, code: &str) -> Result<Option<Password>, SecretsError> {
    Ok(read(dir)?
        .1
        .sources
        .remove(code)
        .and_then(|s| s.password.map(Password)))
}

/// The headers collection source `code`'s HTTP API expects (`[sources."CODE"] headers`; none
/// when the file gives none), read as [`source_password`] is.
pub fn source_headers(dir: &Path, code: &str) -> Result<HeaderMap, SecretsError> {
    let (path, mut file) = read(dir)?;
    match file.sources.remove(code) {
        Some(s) => to_headers(&path, code, &s.headers),
        None => Ok(HeaderMap::new()),
    }
}

/// The password of subscription `name`'s target database (`[targets."NAME"]`, whose `url` must
/// be the subscription's `url`), read as [`source_password`] is.
pub fn target_password(
    dir: &Path,
    name: &str,
    url: &str,
) -> Result<Option<Password>, SecretsError> {
    let (path, mut file) = read(dir)?;
    match file.targets.remove(name) {
        None => Ok(None),
        Some(t) if t.url == url => Ok(Some(Password(t.password))),
        Some(_) => Err(SecretsError::TargetUrl {
            path,
            name: name.to_owned(),
        }),
    }
}

/// A database password: never printed (its `Debug` hides it).
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// The password, to hand to the database driver.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<hidden>")
    }
}

/// The resource codes the file gives headers for.
pub fn backend_codes(dir: &Path) -> Result<Vec<String>, SecretsError> {
    Ok(read(dir)?.1.backends.into_keys().collect())
}

/// The file last read, kept until it changes (a proxied call reads it every time).
static READ: crate::stamped::Stamped<std::sync::Arc<File>> = crate::stamped::Stamped::new();

/// The headers the backend of resource `code` expects (none when the file names none). The
/// file's mode is checked on every call; it is read again only when it changed.
pub fn backend_headers(dir: &Path, code: &str) -> Result<HeaderMap, SecretsError> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(SECRETS_FILE);
    let m = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HeaderMap::new()),
        Err(e) => {
            return Err(SecretsError::Read {
                path,
                why: e.to_string(),
            })
        }
    };
    let mode = m.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretsError::Mode { path, mode });
    }
    let file = READ.get(&path, &m, || read(dir).map(|(_, f)| std::sync::Arc::new(f)))?;
    match file.backends.get(code) {
        Some(b) => to_headers(&path, code, &b.headers),
        None => Ok(HeaderMap::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn write(dir: &Path, text: &str, mode: u32) {
        let p = dir.join(SECRETS_FILE);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn headers_are_read_only_from_a_private_file_and_errors_never_quote_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        assert!(backend_headers(dir.path(), "301001/000001")
            .unwrap()
            .is_empty());
        let text =
            "[backends.\"301001/000001\"]\nheaders = { Authorization = \"Bearer s3cret\" }\n";
        write(dir.path(), text, 0o600);
        let h = backend_headers(dir.path(), "301001/000001").unwrap();
        assert_eq!(h["authorization"], "Bearer s3cret");
        assert!(h["authorization"].is_sensitive());
        assert!(check(dir.path()).is_ok());
        write(dir.path(), text, 0o644);
        let e = backend_headers(dir.path(), "301001/000001").unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        write(
            dir.path(),
            "[backends.\"a/b\"]\nheaders = { X = 1 }\nsecret = \"s3cret\"\n",
            0o600,
        );
        let e = check(dir.path()).unwrap_err().to_string();
        assert!(e.contains("line 2") && !e.contains("s3cret"), "{e}");
        write(
            dir.path(),
            "[backends.\"a/b\"]\nheaders = { \"bad name\" = \"s3cret\" }\n",
            0o600,
        );
        let e = check(dir.path()).unwrap_err().to_string();
        assert!(e.contains("bad name") && !e.contains("s3cret"), "{e}");
        for framing in ["Host", "Content-Length"] {
            let text = format!("[backends.\"a/b\"]\nheaders = {{ {framing} = \"s3cret\" }}\n");
            write(dir.path(), &text, 0o600);
            assert!(check(dir.path()).is_err(), "{framing}");
        }
    }
}
