//! A real PostgreSQL server for the tests and benchmarks, in a temporary directory on loopback: Debian's
//! `postgresql` package (`/usr/lib/postgresql/*/bin`), installed by `.ci/run` and the README's
//! test command. As root, the server runs as the `postgres` user (PostgreSQL refuses root).
//! The superuser `admin` logs in over the Unix socket without a password; TCP logins need one
//! (scram-sha-256), so a wrong password is refused as on a real server. Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

/// A running server.
pub struct Postgres {
    tmp: tempfile::TempDir,
    bin: PathBuf,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    as_postgres: bool,
}

fn server_bin() -> anyhow::Result<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .collect()
        })
        .unwrap_or_default();
    found.retain(|b| b.join("initdb").exists());
    found.sort();
    found.pop().context(
        "no PostgreSQL server found under /usr/lib/postgresql: install Debian's postgresql package (apt-get install postgresql; .ci/run and ./quickstart.sh test do)",
    )
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Postgres {
    /// Creates and starts a server; waits until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let bin = server_bin()?;
        let tmp = tempfile::Builder::new().prefix("huitong-pg").tempdir()?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let as_postgres = unsafe { libc::geteuid() } == 0;
        if as_postgres {
            let st = Command::new("chown")
                .args(["postgres:postgres"])
                .arg(tmp.path())
                .status()?;
            if !st.success() {
                bail!("cannot give {} to the postgres user", tmp.path().display());
            }
        }
        let mut pg = Self {
            tmp,
            bin,
            port: 0,
            as_postgres,
        };
        let data = pg.tmp.path().join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "admin",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        pg.port = free_port()?;
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=20 -c shared_buffers=32MB",
            pg.port,
            pg.tmp.path().display()
        );
        let log = pg.tmp.path().join("server.log");
        pg.run(
            "pg_ctl",
            &[
                "-D",
                path(&data),
                "-l",
                path(&log),
                "-o",
                &opts,
                "-w",
                "-t",
                "120",
                "start",
            ],
        )
        .with_context(|| {
            format!(
                "PostgreSQL did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        })?;
        Ok(pg)
    }

    /// The server's own temporary directory (readable and writable by the server's user), for
    /// files `\copy` reads or writes.
    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn command(&self, program: &str) -> Command {
        let exe = self.bin.join(program);
        if self.as_postgres {
            let runuser = ["/usr/sbin/runuser", "/sbin/runuser"]
                .into_iter()
                .find(|p| Path::new(p).exists())
                .unwrap_or("runuser");
            let mut c = Command::new(runuser);
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .command(program)
            .args(args)
            .current_dir(self.tmp.path())
            .output()
            .with_context(|| format!("cannot run {program}"))?;
        if !out.status.success() {
            bail!(
                "{program} {} failed: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `sql` as the superuser in database `db`; returns the rows, one per line, fields
    /// separated by `|`.
    pub fn sql(&self, db: &str, sql: &str) -> anyhow::Result<String> {
        let port = self.port.to_string();
        let host = self.tmp.path().display().to_string();
        self.run(
            "psql",
            &[
                "-h",
                &host,
                "-p",
                &port,
                "-U",
                "admin",
                "-d",
                db,
                "-v",
                "ON_ERROR_STOP=1",
                "-X",
                "-q",
                "-At",
                "-c",
                sql,
            ],
        )
    }
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.tmp.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args(["-D", path(&data), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
