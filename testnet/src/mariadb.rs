//! A real MariaDB server for the tests and benchmarks, in a temporary directory on loopback: Debian's
//! `mariadb-server` package, installed by `.ci/run` and the README's test command. As root, the
//! server runs as the `mysql` user. `root` logs in over the Unix socket without a password; the
//! tests make their own users for TCP. Killed when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// A running server.
pub struct MariaDb {
    tmp: tempfile::TempDir,
    child: Child,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
}

fn socket(tmp: &Path) -> PathBuf {
    tmp.join("mysqld.sock")
}

impl MariaDb {
    /// Creates and starts a server; waits until it answers.
    pub fn start() -> anyhow::Result<Self> {
        let server = ["/usr/sbin/mariadbd", "/usr/sbin/mysqld"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("no MariaDB server (/usr/sbin/mariadbd): install Debian's mariadb-server package (apt-get install mariadb-server; .ci/run and ./quickstart.sh test do)")?;
        let tmp = tempfile::Builder::new().prefix("huitong-maria").tempdir()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let user = if root { "mysql" } else { "" };
        if root {
            let st = Command::new("chown")
                .arg("mysql:mysql")
                .arg(tmp.path())
                .status()?;
            if !st.success() {
                bail!("cannot give {} to the mysql user", tmp.path().display());
            }
        }
        let data = tmp.path().join("data");
        let mut install = Command::new("mariadb-install-db");
        install
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db");
        if root {
            install.arg(format!("--user={user}"));
        }
        let out = install.output().context("cannot run mariadb-install-db")?;
        if !out.status.success() {
            bail!(
                "mariadb-install-db failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut cmd = Command::new(server);
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket(tmp.path()).display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!(
                "--pid-file={}",
                tmp.path().join("mysqld.pid").display()
            ))
            .arg(format!(
                "--log-error={}",
                tmp.path().join("error.log").display()
            ))
            .arg("--innodb-buffer-pool-size=64M")
            .arg("--skip-name-resolve")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if root {
            cmd.arg(format!("--user={user}"));
        }
        let child = cmd.spawn().context("cannot start mariadbd")?;
        let db = Self { tmp, child, port };
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        loop {
            if db.sql("mysql", "SELECT 1").is_ok() {
                return Ok(db);
            }
            if std::time::Instant::now() > deadline {
                bail!(
                    "MariaDB did not answer within 90 s: {}",
                    std::fs::read_to_string(db.tmp.path().join("error.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `sql` as root in database `db`; returns the rows, one per line, fields separated by
    /// `|` (NULL as `NULL`).
    pub fn sql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", socket(self.tmp.path()).display()))
            .args(["-uroot", "-N", "-B", "-e", sql, db])
            .output()
            .context("cannot run the mariadb client")?;
        if !out.status.success() {
            bail!("mariadb: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).replace('\t', "|"))
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
