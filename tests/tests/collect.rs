//! Collection from a department database (issue #13) with a real PostgreSQL server and real
//! nodes over real sockets: the provider's node reads a table into a dataset version (columns
//! mapped to the entry's 信息项), makes no version when nothing changed, a new one after inserts,
//! updates and deletes, which another department pulls row for row equal to the table; a wrong
//! password, a column of the wrong type and a dropped table each fail the run with a clear
//! error while the previous version stays the latest; three failures in a row raise the alarm;
//! the password appears in no output, `--json` answer or log.

use std::io::Write as _;

use huitong_tests::pg::Postgres;
use huitong_tests::{cli_ok, data, start_prepared};
use serde_json::Value;

const CODE: &str = "301001/000071";
const PASSWORD: &str = "c0llect-pa55-s3cret";
const WRONG: &str = "wr0ng-pa55-s3cret";

fn write_secrets(dir: &std::path::Path, password: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let secrets = dir.join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("[sources.\"{CODE}\"]\npassword = \"{password}\"\n"),
    )?;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// `huitong collect run CODE --json` on node `i`: the run, and whether the command succeeded.
fn collect(
    net: &huitong_testnet::Testnet,
    i: usize,
    seen: &mut String,
) -> anyhow::Result<(Value, bool)> {
    let out = net.cli(i, &["collect", "run", CODE, "--json"])?;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    seen.push_str(&stdout);
    seen.push_str(&stderr);
    let run: Value = serde_json::from_str(&stdout)
        .map_err(|e| anyhow::anyhow!("collect run printed no run ({e}): {stdout} {stderr}"))?;
    Ok((run, out.status.success()))
}

/// The table as the pulled CSV should have it, `|`-separated, in key order.
fn table_rows(pg: &Postgres) -> anyhow::Result<Vec<String>> {
    Ok(pg
        .sql(
            "hr",
            "SELECT id, name, amount, to_char(day, 'YYYY-MM-DD'), note FROM people ORDER BY id",
        )?
        .lines()
        .map(str::to_owned)
        .collect())
}

fn latest_version(net: &mut huitong_testnet::Testnet, i: usize) -> anyhow::Result<u64> {
    let q: String = CODE.bytes().map(|b| format!("%{b:02X}")).collect();
    let v = net.get(i, &format!("/datasets/versions?code={q}"))?;
    Ok(v[0]["versions"]
        .as_array()
        .and_then(|a| a.last())
        .and_then(|d| d["version"].as_u64())
        .unwrap_or(0))
}

#[test]
fn a_table_is_collected_into_versions_and_failures_keep_the_last_one() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    pg.sql(
        "postgres",
        &format!("CREATE ROLE collector LOGIN PASSWORD '{PASSWORD}'"),
    )?;
    pg.sql("postgres", "CREATE DATABASE hr OWNER collector")?;
    pg.sql(
        "hr",
        "CREATE TABLE people (id integer PRIMARY KEY, name text NOT NULL, amount numeric(12,2), \
         day date, note text, internal_flag boolean DEFAULT true); \
         INSERT INTO people (id, name, amount, day, note) \
         SELECT n, '张三' || n, (n * 7 % 100000) + (n % 100) / 100.0, \
                DATE '2026-01-01' + (n % 300), CASE WHEN n % 10 = 0 THEN NULL ELSE '第' || n || '条备注' END \
         FROM generate_series(1, 1000) AS n; \
         ALTER TABLE people OWNER TO collector",
    )?;
    let port = pg.port;
    let mut f = start_prepared(2, 2, &[], |net| {
        let dir = &net.nodes[1].dir;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(huitong_config::CONFIG_FILE))?;
        writeln!(
            file,
            "\n[[collect.sources]]\ncode = \"{CODE}\"\nkind = \"postgres\"\n\
             url = \"postgres://collector@127.0.0.1:{port}/hr\"\ntable = \"public.people\"\n\
             schedule = \"manual\"\n\
             columns = {{ \"编号\" = \"id\", \"姓名\" = \"name\", \"金额\" = \"amount\", \"日期\" = \"day\", \"备注\" = \"note\" }}"
        )?;
        write_secrets(dir, PASSWORD)
    })?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    let mut entry = data::table_entry(net, provider, 71, "无条件共享", None);
    if let Some(item) = entry["items"][4].as_object_mut() {
        item.remove("share_type");
    }
    data::publish_entry(net, &dir, provider, &entry)?;
    let mut seen = String::new();

    // Full collection: version 1 with every row.
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(ok, "{run}");
    assert_eq!(run["outcome"], "published", "{run}");
    assert_eq!(run["version"], 1);
    assert_eq!(run["rows"], 1000);
    // Nothing changed: no version.
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(
        ok && run["outcome"] == "unchanged" && run["version"] == 1,
        "{run}"
    );

    // Inserts, updates and deletes: version 2, which another department pulls equal to the
    // table, row for row.
    pg.sql(
        "hr",
        "UPDATE people SET name = name || '改', amount = amount + 1 WHERE id % 97 = 0; \
         DELETE FROM people WHERE id IN (5, 500, 999); \
         INSERT INTO people (id, name, amount, day, note) \
         SELECT n, '李四' || n, n, DATE '2026-12-01', '新增' FROM generate_series(1001, 1010) AS n",
    )?;
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(
        ok && run["outcome"] == "published" && run["version"] == 2,
        "{run}"
    );
    assert_eq!(run["rows"], 1007);
    data::wait_version(net, consumer, CODE, 2)?;
    let out = dir.join("pulled.csv");
    data::pull(net, consumer, &[CODE, "--out", &out.to_string_lossy()])?;
    let pulled = std::fs::read_to_string(&out)?;
    let mut lines = pulled.lines();
    assert_eq!(lines.next(), Some("编号,姓名,金额,日期,备注"));
    let pulled: Vec<String> = lines.map(|l| l.replace(',', "|")).collect();
    assert_eq!(pulled, table_rows(&pg)?, "the pulled version is the table");

    // A wrong password: the run fails with the database's reason; version 2 stays.
    write_secrets(&net.nodes[provider].dir, WRONG)?;
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(!ok && run["outcome"] == "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.contains("password authentication failed"), "{error}");
    write_secrets(&net.nodes[provider].dir, PASSWORD)?;

    // A column whose type cannot hold the 信息项 (日期 from an integer).
    pg.sql(
        "hr",
        "ALTER TABLE people ALTER COLUMN day TYPE integer USING 20260101",
    )?;
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(!ok && run["outcome"] == "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("\"day\"") && error.contains("日期"),
        "{error}"
    );

    // The table dropped.
    pg.sql("hr", "DROP TABLE people")?;
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(!ok && run["outcome"] == "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.contains("does not exist"), "{error}");
    assert_eq!(
        latest_version(net, provider)?,
        2,
        "failed runs make no version"
    );

    // Three failures in a row: the source is in alarm; the history shows every run.
    let sources = cli_ok(net, provider, &["collect", "sources", "--json"])?;
    let sources: Value = serde_json::from_slice(&sources.stdout)?;
    assert_eq!(sources[0]["code"], CODE);
    assert_eq!(sources[0]["alarm"], true, "{sources}");
    assert_eq!(sources[0]["failures_in_a_row"], 3);
    seen.push_str(&sources.to_string());
    let runs = cli_ok(net, provider, &["collect", "runs", CODE, "--json"])?;
    let runs: Value = serde_json::from_slice(&runs.stdout)?;
    let outcomes: Vec<&str> = runs["runs"]
        .as_array()
        .map(|a| a.iter().filter_map(|r| r["outcome"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        outcomes,
        [
            "failed",
            "failed",
            "failed",
            "published",
            "unchanged",
            "published"
        ]
    );
    seen.push_str(&runs.to_string());
    let table = cli_ok(net, provider, &["collect", "runs"])?;
    seen.push_str(&String::from_utf8_lossy(&table.stdout));

    // The password is nowhere: outputs, answers, the node's log.
    let log = std::fs::read_to_string(net.nodes[provider].dir.join(huitong_testnet::LOG_FILE))?;
    for secret in [PASSWORD, WRONG] {
        assert!(!seen.contains(secret), "a password in the output");
        assert!(!log.contains(secret), "a password in the log");
    }
    Ok(())
}
