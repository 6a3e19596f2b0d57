//! Connections to department databases (collection sources and subscription targets):
//! PostgreSQL and MySQL/MariaDB, a URL without the password plus the password from the secrets
//! file, a time limit on connecting, and errors in the server's own words — never holding the
//! password.
//!
//! Layering: a leaf; uses the drivers only.

use std::time::Duration;

use tracing::debug;

use crate::secrets::Password;

/// Time allowed to connect and log in.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a database could not be reached. Holds no password.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to {at}: {why}")]
pub struct ConnectError {
    /// `user@host:port/database`.
    pub at: String,
    /// The server's or the driver's reason.
    pub why: String,
}

/// The server's own words for a PostgreSQL error (the driver's `Display` says only "db error"),
/// else the driver's.
pub fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.hint() {
            Some(h) => format!("{}: {} ({h})", db.severity(), db.message()),
            None => format!("{}: {}", db.severity(), db.message()),
        },
        None => e.to_string(),
    }
}

/// The hint added when a login failed and no password is set.
fn no_password_hint(password: Option<&Password>, secrets_entry: &str) -> String {
    if password.is_none() {
        format!("; no password is set for it in secrets.toml ({secrets_entry} password = \"…\")")
    } else {
        String::new()
    }
}

/// Connects to PostgreSQL at `url` (`postgres://user@host[:port]/db`); the connection's task
/// runs until the client is dropped. `secrets_entry` names where the password belongs, for
/// the error.
pub async fn postgres(
    url: &str,
    password: Option<&Password>,
    secrets_entry: &str,
) -> Result<tokio_postgres::Client, ConnectError> {
    let mut cfg: tokio_postgres::Config = url.parse().map_err(|e| ConnectError {
        at: "the database".into(),
        why: format!("the URL is not a PostgreSQL URL: {e}"),
    })?;
    if let Some(p) = password {
        cfg.password(p.expose());
    }
    cfg.connect_timeout(CONNECT_TIMEOUT);
    cfg.application_name("huitong");
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let at = format!(
        "{}@{host}:{}/{}",
        cfg.get_user().unwrap_or_default(),
        cfg.get_ports().first().copied().unwrap_or(5432),
        cfg.get_dbname().unwrap_or_default()
    );
    let (client, connection) =
        match tokio::time::timeout(CONNECT_TIMEOUT, cfg.connect(tokio_postgres::NoTls)).await {
            Err(_) => {
                return Err(ConnectError {
                    at,
                    why: format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
                })
            }
            Ok(Err(e)) => {
                return Err(ConnectError {
                    why: format!(
                        "{}{}",
                        describe_pg(&e),
                        no_password_hint(password, secrets_entry)
                    ),
                    at,
                })
            }
            Ok(Ok(c)) => c,
        };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            debug!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}

/// Connects to MySQL/MariaDB at `url` (`mysql://user@host[:port]/db`).
pub async fn mysql(
    url: &str,
    password: Option<&Password>,
    secrets_entry: &str,
) -> Result<mysql_async::Conn, ConnectError> {
    let opts = mysql_async::Opts::from_url(url).map_err(|e| ConnectError {
        at: "the database".into(),
        why: format!("the URL is not a MySQL URL: {e}"),
    })?;
    let at = format!(
        "{}@{}:{}/{}",
        opts.user().unwrap_or_default(),
        opts.ip_or_hostname(),
        opts.tcp_port(),
        opts.db_name().unwrap_or_default()
    );
    let opts = mysql_async::OptsBuilder::from_opts(opts)
        .pass(password.map(|p| p.expose().to_owned()))
        // One statement cache per connection is enough for a delivery.
        .stmt_cache_size(16);
    match tokio::time::timeout(CONNECT_TIMEOUT, mysql_async::Conn::new(opts)).await {
        Err(_) => Err(ConnectError {
            at,
            why: format!("no answer in {} s", CONNECT_TIMEOUT.as_secs()),
        }),
        Ok(Err(e)) => Err(ConnectError {
            why: format!("{e}{}", no_password_hint(password, secrets_entry)),
            at,
        }),
        Ok(Ok(c)) => Ok(c),
    }
}
