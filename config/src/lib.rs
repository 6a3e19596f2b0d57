//! Node configuration: the `huitong.toml` schema with its defaults, validation with errors that
//! name the file, the key and the fix, and the key files (`node.key`, authority keys).
#![deny(missing_docs, unreachable_pub)]

mod collect;
pub mod keyfile;
mod schema;

pub use collect::{
    CollectConfig, Paging, PagingStyle, SourceConfig, SourceKind, DEFAULT_ALARM_AFTER,
    DEFAULT_PAGE_SIZE, DEFAULT_RETRIES, DEFAULT_SETTLE_SECS, MAX_PAGE_SIZE, MAX_RETRIES,
};

pub use schema::{
    ApiConfig, ApplicationsConfig, BackendConfig, Config, FederationConfig, LogConfig, LogFormat,
    NetworkConfig, NodeConfig, NotifyConfig, PortalConfig, ServicesConfig, StorageConfig,
    DEFAULT_ANCHOR_SECS, DEFAULT_BACKEND_RESPONSE_KIB, DEFAULT_BACKEND_TIMEOUT_SECS,
    DEFAULT_CALLS_PER_DAY, DEFAULT_CALLS_PER_SECOND, DEFAULT_DEADLINE_WORKING_DAYS,
    DEFAULT_SMALL_CHUNK_KIB, MAX_BACKEND_RESPONSE_KIB, MAX_SMALL_CHUNK_KIB,
};

use std::path::{Path, PathBuf};

/// Name of the configuration file inside a node directory.
pub const CONFIG_FILE: &str = "huitong.toml";
/// Name of the node key file inside a node directory.
pub const NODE_KEY_FILE: &str = "node.key";
/// Largest configuration file accepted.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A configuration problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error(
        "cannot read {path}: {source}; is this a node directory? create one with `huitong init`"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is too large.
    #[error("{path} is larger than {MAX_CONFIG_BYTES} bytes; this is not a huitong.toml")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// TOML syntax or type error.
    #[error("{path}: {message}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and key.
        message: String,
    },
    /// A value is not acceptable.
    #[error("{path}: key `{key}`: {message}")]
    Value {
        /// The file.
        path: PathBuf,
        /// Dotted key, e.g. `node.org_code`.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Config {
    /// Reads and validates `huitong.toml` from a node directory.
    pub fn load(dir: &Path) -> Result<Config, ConfigError> {
        let path = dir.join(CONFIG_FILE);
        let read = |source| ConfigError::Read {
            path: path.clone(),
            source,
        };
        let meta = std::fs::metadata(&path).map_err(read)?;
        if meta.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge { path });
        }
        let text = std::fs::read_to_string(&path).map_err(read)?;
        Self::parse(&text, &path)
    }

    /// Parses and validates configuration text; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::Value {
                path: path.to_owned(),
                key,
                message,
            })?;
        Ok(config)
    }

    /// Serialises to TOML (for `huitong init`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }
}
