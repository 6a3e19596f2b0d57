//! Collection from a department database (issue #13) with a real PostgreSQL server and real
//! nodes over real sockets: the provider's node reads a table into a dataset version (columns
//! mapped to the entry's 信息项), makes no version when nothing changed, a new one after inserts,
//! updates and deletes, which another department pulls row for row equal to the table; a wrong
//! password, a column of the wrong type and a dropped table each fail the run with a clear
//! error while the previous version stays the latest; three failures in a row raise the alarm;
//! the password appears in no output, `--json` answer or log.

use std::io::Write as _;

use huitong_testnet::mariadb::MariaDb;
use huitong_testnet::pg::Postgres;
use huitong_tests::{cli_ok, data, start_prepared};
use serde_json::Value;

const CODE: &str = "301001/000071";
const PASSWORD: &str = "c0llect-pa55-s3cret";
const WRONG: &str = "wr0ng-pa55-s3cret";
const TARGET_PASSWORD: &str = "tar9et-pa55-s3cret";

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

fn sorted(mut rows: Vec<String>) -> Vec<String> {
    rows.sort();
    rows
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

/// The source table (1000 people) in `pg`, and a testnet whose department 1 collects it
/// (`[[collect.sources]]`, password in secrets.toml) and has published the entry; `prepare`
/// may change the nodes' directories first.
fn source_and_nodes(
    pg: &Postgres,
    prepare: impl FnOnce(&mut huitong_testnet::Testnet) -> anyhow::Result<()>,
) -> anyhow::Result<huitong_tests::Fixture> {
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
    let f = start_prepared(2, 2, &[], |net| {
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
        write_secrets(dir, PASSWORD)?;
        prepare(net)
    })?;
    let dir = f.tmp.path().to_path_buf();
    let mut entry = data::table_entry(&f.net, 1, 71, "无条件共享", None);
    if let Some(item) = entry["items"][4].as_object_mut() {
        item.remove("share_type");
    }
    data::publish_entry(&f.net, &dir, 1, &entry)?;
    Ok(f)
}

#[test]
fn a_table_is_collected_into_versions_and_failures_keep_the_last_one() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let mut f = source_and_nodes(&pg, |_| Ok(()))?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
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
    // A version's rows are in the order of the key's text (see collect/postgres.rs).
    assert_eq!(
        sorted(pulled),
        sorted(table_rows(&pg)?),
        "the pulled version is the table"
    );

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
        data::latest_version(net, provider, CODE)?,
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

/// Node `i`'s subscription `name`, as `huitong subscriptions --json` shows it.
fn subscription(net: &huitong_testnet::Testnet, i: usize, name: &str) -> anyhow::Result<Value> {
    let out = cli_ok(net, i, &["subscriptions", "--json"])?;
    let all: Value = serde_json::from_slice(&out.stdout)?;
    all.as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name).cloned())
        .ok_or_else(|| anyhow::anyhow!("no subscription {name}: {all}"))
}

/// Waits until node `i` delivered `version` for subscription `name`.
fn wait_delivered(
    net: &huitong_testnet::Testnet,
    i: usize,
    name: &str,
    version: u64,
) -> anyhow::Result<()> {
    let mut last = Value::Null;
    huitong_tests::wait_until(
        std::time::Duration::from_secs(90),
        &format!("subscription {name} at v{version}"),
        || {
            last = subscription(net, i, name)?;
            Ok(last["delivery"]["version"].as_u64() >= Some(version))
        },
    )
    .map_err(|e| anyhow::anyhow!("{e}; last seen: {last}"))
}

/// The subscriber's MariaDB table, in the source's row format, by key.
fn delivered_rows(db: &MariaDb) -> anyhow::Result<Vec<String>> {
    Ok(db
        .sql(
            "hr2",
            "SELECT `编号`, `姓名`, CAST(`金额` AS DECIMAL(12,2)), DATE_FORMAT(`日期`, '%Y-%m-%d'), \
             IFNULL(`备注`, '') FROM people ORDER BY CAST(`编号` AS UNSIGNED)",
        )?
        .lines()
        .map(str::to_owned)
        .collect())
}

#[test]
fn subscriptions_deliver_each_version_into_mariadb_exactly_even_across_a_kill() -> anyhow::Result<()>
{
    use std::os::unix::fs::PermissionsExt as _;
    let pg = Postgres::start()?;
    let db = MariaDb::start()?;
    db.sql(
        "mysql",
        &format!(
            "CREATE DATABASE hr2 DEFAULT CHARSET utf8mb4; \
             CREATE USER 'sub'@'127.0.0.1' IDENTIFIED BY '{TARGET_PASSWORD}'; \
             GRANT ALL ON hr2.* TO 'sub'@'127.0.0.1'"
        ),
    )?;
    let (my_port, pg_port) = (db.port, pg.port);
    let mut f = source_and_nodes(&pg, |net| {
        // Each target's password, bound to its database.
        let secrets = net.nodes[2].dir.join("secrets.toml");
        std::fs::write(
            &secrets,
            format!(
                "[targets.\"people\"]\nurl = \"mysql://sub@127.0.0.1:{my_port}/hr2\"\n\
                 password = \"{TARGET_PASSWORD}\"\n\
                 [targets.\"people-pg\"]\nurl = \"postgres://sub@127.0.0.1:{pg_port}/hr3\"\n\
                 password = \"{TARGET_PASSWORD}\"\n"
            ),
        )?;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    })?;
    pg.sql(
        "postgres",
        &format!("CREATE ROLE sub LOGIN PASSWORD '{TARGET_PASSWORD}'"),
    )?;
    pg.sql("postgres", "CREATE DATABASE hr3 OWNER sub")?;
    let files = f.tmp.path().join("delivered");
    std::fs::create_dir(&files)?;
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    let mut seen = String::new();
    let (run, _) = collect(net, provider, &mut seen)?;
    assert_eq!(run["version"], 1, "{run}");
    data::wait_version(net, consumer, CODE, 1)?;

    // A database target with a wrong table name is refused at once; a right one is tried.
    let url = format!("mysql://sub@127.0.0.1:{}/hr2", db.port);
    let refused = net.cli(
        consumer,
        &["subscribe", CODE, "--into", &url, "--table", "people"],
    )?;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--key"),
        "a table target needs a key"
    );
    // The password of target "people" is given only to its own database.
    let elsewhere = format!("mysql://sub@127.0.0.1:{}/mysql", db.port);
    let refused = net.cli(
        consumer,
        &[
            "subscribe",
            CODE,
            "--into",
            &elsewhere,
            "--table",
            "people",
            "--key",
            "编号",
            "--name",
            "people",
        ],
    )?;
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("another database"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let out = cli_ok(
        net,
        consumer,
        &[
            "subscribe",
            CODE,
            "--into",
            &url,
            "--table",
            "people",
            "--key",
            "编号",
            "--name",
            "people",
            "--json",
        ],
    )?;
    seen.push_str(&String::from_utf8_lossy(&out.stdout));
    let pg_url = format!("postgres://sub@127.0.0.1:{}/hr3", pg.port);
    cli_ok(
        net,
        consumer,
        &[
            "subscribe",
            CODE,
            "--into",
            &pg_url,
            "--table",
            "people",
            "--key",
            "编号",
            "--name",
            "people-pg",
        ],
    )?;
    cli_ok(
        net,
        consumer,
        &[
            "subscribe",
            CODE,
            "--into",
            &files.to_string_lossy(),
            "--current",
            "--name",
            "people-file",
        ],
    )?;
    wait_delivered(net, consumer, "people", 1)?;
    wait_delivered(net, consumer, "people-file", 1)?;
    assert_eq!(
        delivered_rows(&db)?,
        table_rows(&pg)?,
        "v1 delivered row for row"
    );

    // Inserts, updates and deletes at the source: v2 lands in the table and the file.
    pg.sql(
        "hr",
        "UPDATE people SET name = name || '改', amount = amount + 1 WHERE id % 97 = 0; \
         DELETE FROM people WHERE id IN (5, 500, 999); \
         INSERT INTO people (id, name, amount, day, note) \
         SELECT n, '李四' || n, n, DATE '2026-12-01', '新增' FROM generate_series(1001, 1010) AS n",
    )?;
    let (run, _) = collect(net, provider, &mut seen)?;
    assert_eq!(run["version"], 2, "{run}");
    wait_delivered(net, consumer, "people", 2)?;
    wait_delivered(net, consumer, "people-file", 2)?;
    wait_delivered(net, consumer, "people-pg", 2)?;
    // The tables got v2 as its row changes (13 rows of 1,010), the file whole.
    let into_table = subscription(net, consumer, "people")?["delivery"]["bytes_fetched"]
        .as_u64()
        .unwrap_or(u64::MAX);
    let into_file = subscription(net, consumer, "people-file")?["delivery"]["bytes_fetched"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        into_table * 5 < into_file,
        "the row changes ({into_table} bytes) are a small part of the version ({into_file} bytes)"
    );
    let v2 = table_rows(&pg)?;
    assert_eq!(delivered_rows(&db)?, v2, "v2 delivered row for row");
    let file = std::fs::read_to_string(files.join("people-file.csv"))?;
    let file_rows: Vec<String> = file.lines().skip(1).map(|l| l.replace(',', "|")).collect();
    assert_eq!(
        sorted(file_rows),
        sorted(v2.clone()),
        "the current file is v2"
    );
    assert_eq!(
        db.sql(
            "hr2",
            "SELECT version FROM huitong_delivery WHERE subscription = 'people'"
        )?
        .trim(),
        "2"
    );

    // kill -9 in the middle of delivering v3 (its changes applied, not committed): the table
    // stays v2; after the restart v3 is delivered exactly once.
    std::fs::write(net.nodes[consumer].dir.join("faults"), "deliver-hold\n")?;
    pg.sql(
        "hr",
        "UPDATE people SET note = '第三版' WHERE id % 50 = 0; DELETE FROM people WHERE id = 1; \
         INSERT INTO people (id, name, amount, day, note) VALUES (2000, '王五', 1.5, '2026-12-02', NULL)",
    )?;
    let (run, _) = collect(net, provider, &mut seen)?;
    assert_eq!(run["version"], 3, "{run}");
    let log = net.nodes[consumer].dir.join(huitong_testnet::LOG_FILE);
    huitong_tests::wait_until(
        std::time::Duration::from_secs(90),
        "the delivery of v3 holding before its commit",
        || Ok(std::fs::read_to_string(&log)?.contains("delivery holding before its commit")),
    )?;
    net.stop(consumer, true)?;
    std::fs::remove_file(net.nodes[consumer].dir.join("faults"))?;
    assert_eq!(
        delivered_rows(&db)?,
        v2,
        "a killed delivery changed nothing"
    );
    net.start(consumer)?;
    wait_delivered(net, consumer, "people", 3)?;
    assert_eq!(
        delivered_rows(&db)?,
        table_rows(&pg)?,
        "v3 delivered row for row"
    );
    wait_delivered(net, consumer, "people-pg", 3)?;
    let in_pg: Vec<String> = pg
        .sql(
            "hr3",
            "SELECT \"编号\", \"姓名\", \"金额\"::numeric(12,2), to_char(\"日期\", 'YYYY-MM-DD'), \"备注\" \
             FROM people ORDER BY \"编号\"::int",
        )?
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        in_pg,
        table_rows(&pg)?,
        "v3 delivered into PostgreSQL row for row"
    );
    assert_eq!(
        db.sql(
            "hr2",
            "SELECT version FROM huitong_delivery WHERE subscription = 'people'"
        )?
        .trim(),
        "3"
    );
    let s = subscription(net, consumer, "people")?;
    assert_eq!(s["lag"], 0, "{s}");
    seen.push_str(&s.to_string());

    // The target's password is in no output and no log.
    let log = std::fs::read_to_string(&log)?;
    assert!(!seen.contains(TARGET_PASSWORD) && !log.contains(TARGET_PASSWORD));
    Ok(())
}

#[test]
fn a_mariadb_table_is_collected_with_its_types_checked() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let db = MariaDb::start()?;
    db.sql(
        "mysql",
        &format!(
            "CREATE DATABASE hr DEFAULT CHARSET utf8mb4; \
             CREATE USER 'collector'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
             GRANT SELECT ON hr.* TO 'collector'@'127.0.0.1'"
        ),
    )?;
    db.sql(
        "hr",
        "CREATE TABLE people (id INT PRIMARY KEY, name VARCHAR(100) NOT NULL, amount DECIMAL(12,2), \
         day DATE, note VARCHAR(200)); \
         INSERT INTO people SELECT seq, CONCAT('张三', seq), seq * 7 % 100000 + (seq % 100) / 100, \
         DATE_ADD('2026-01-01', INTERVAL seq % 300 DAY), IF(seq % 10 = 0, NULL, CONCAT('第', seq, '条备注')) \
         FROM seq_1_to_500",
    )?;
    let port = db.port;
    let mut f = start_prepared(2, 2, &[], |net| {
        let dir = &net.nodes[1].dir;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(huitong_config::CONFIG_FILE))?;
        writeln!(
            file,
            "\n[[collect.sources]]\ncode = \"{CODE}\"\nkind = \"mysql\"\n\
             url = \"mysql://collector@127.0.0.1:{port}/hr\"\ntable = \"people\"\n\
             schedule = \"manual\"\n\
             columns = {{ \"编号\" = \"id\", \"姓名\" = \"name\", \"金额\" = \"amount\", \"日期\" = \"day\", \"备注\" = \"note\" }}"
        )?;
        let secrets = dir.join("secrets.toml");
        std::fs::write(
            &secrets,
            format!("[sources.\"{CODE}\"]\npassword = \"{PASSWORD}\"\n"),
        )?;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
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
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(
        ok && run["outcome"] == "published" && run["rows"] == 500,
        "{run}"
    );
    let (run, _) = collect(net, provider, &mut seen)?;
    assert_eq!(run["outcome"], "unchanged", "{run}");
    data::wait_version(net, consumer, CODE, 1)?;
    let out = dir.join("pulled.csv");
    data::pull(net, consumer, &[CODE, "--out", &out.to_string_lossy()])?;
    let pulled: Vec<String> = std::fs::read_to_string(&out)?
        .lines()
        .skip(1)
        .map(|l| l.replace(',', "|"))
        .collect();
    let source: Vec<String> = db
        .sql(
            "hr",
            "SELECT id, name, amount, DATE_FORMAT(day, '%Y-%m-%d'), IFNULL(note, '') FROM people ORDER BY id",
        )?
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(sorted(pulled), sorted(source), "the version is the table");

    // A cell breaking its 信息项's rule (姓名 is at most 50 characters): the run fails in its
    // one pass over the rows, naming the row; version 1 stays.
    db.sql(
        "hr",
        "UPDATE people SET name = REPEAT('长', 60) WHERE id = 7",
    )?;
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(!ok && run["outcome"] == "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(error.contains("break the 信息项 rules"), "{error}");
    db.sql("hr", "UPDATE people SET name = '张三7' WHERE id = 7")?;
    let (run, _) = collect(net, provider, &mut seen)?;
    assert_eq!(run["outcome"], "unchanged", "{run}");

    // A column whose type cannot hold its 信息项: the run fails, version 1 stays.
    db.sql("hr", "ALTER TABLE people MODIFY day INT")?;
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(!ok && run["outcome"] == "failed", "{run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("\"day\"") && error.contains("日期"),
        "{error}"
    );
    assert!(!seen.contains(PASSWORD));
    Ok(())
}

#[test]
fn a_watermark_reads_only_the_changed_rows_and_a_full_run_sees_deletions() -> anyhow::Result<()> {
    let pg = Postgres::start()?;
    let mut f = source_and_nodes(&pg, |net| {
        // Inside the [[collect.sources]] just written.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(net.nodes[1].dir.join(huitong_config::CONFIG_FILE))?;
        writeln!(file, "watermark = \"changed_at\"")?;
        Ok(())
    })?;
    pg.sql(
        "hr",
        "ALTER TABLE people ADD COLUMN changed_at timestamptz NOT NULL DEFAULT '2026-01-01 08:00:00+08'; \
         UPDATE people SET changed_at = changed_at + id * interval '1 second'",
    )?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    let mut seen = String::new();
    let pulled = |net: &huitong_testnet::Testnet, name: &str| -> anyhow::Result<Vec<String>> {
        let out = dir.join(name);
        data::pull(net, consumer, &[CODE, "--out", &out.to_string_lossy()])?;
        Ok(sorted(
            std::fs::read_to_string(&out)?
                .lines()
                .skip(1)
                .map(|l| l.replace(',', "|"))
                .collect(),
        ))
    };

    // The first run reads the whole table and records where the watermark is.
    let (first, ok) = collect(net, provider, &mut seen)?;
    assert!(ok && first["outcome"] == "published", "{first}");
    assert!(first.get("incremental").is_none(), "{first}");
    let mark = first["watermark"].as_str().unwrap_or_default().to_owned();
    // The largest of 1 … 1000 seconds past 08:00.
    assert!(mark.starts_with("2026-01-01 08:16:40"), "{first}");

    // Ten rows changed and five inserted, their watermark moved: only they are read, and the
    // new version is the whole table.
    pg.sql(
        "hr",
        "UPDATE people SET name = name || '改', changed_at = '2026-02-01 09:00:00+08' WHERE id % 100 = 0; \
         INSERT INTO people (id, name, amount, day, note, changed_at) \
         SELECT n, '新' || n, n, DATE '2026-12-01', NULL, '2026-02-01 09:30:00+08' FROM generate_series(2001, 2005) AS n",
    )?;
    let (run, ok) = collect(net, provider, &mut seen)?;
    assert!(
        ok && run["outcome"] == "published" && run["version"] == 2 && run["incremental"] == true,
        "{run}"
    );
    assert_eq!(run["rows"], 1005);
    let (all, changed) = (
        first["source_bytes"].as_u64().unwrap_or(0),
        run["source_bytes"].as_u64().unwrap_or(u64::MAX),
    );
    assert!(
        changed * 20 < all,
        "15 changed rows read ({changed} bytes) against the whole table ({all} bytes)"
    );
    assert!(run["watermark"]
        .as_str()
        .unwrap_or_default()
        .starts_with("2026-02-01 09:30:00"));
    data::wait_version(net, consumer, CODE, 2)?;
    assert_eq!(
        pulled(net, "v2.csv")?,
        sorted(table_rows(&pg)?),
        "v2 is the table"
    );

    // A deletion moves no watermark: an incremental run does not see it; a full one does.
    pg.sql("hr", "DELETE FROM people WHERE id = 7")?;
    let (run, _) = collect(net, provider, &mut seen)?;
    assert!(
        run["outcome"] == "unchanged" && run["incremental"] == true,
        "{run}"
    );
    let out = cli_ok(net, provider, &["collect", "run", CODE, "--full", "--json"])?;
    let run: Value = serde_json::from_slice(&out.stdout)?;
    assert!(
        run["outcome"] == "published" && run["version"] == 3 && run.get("incremental").is_none(),
        "{run}"
    );
    assert_eq!(run["rows"], 1004);
    data::wait_version(net, consumer, CODE, 3)?;
    assert_eq!(
        pulled(net, "v3.csv")?,
        sorted(table_rows(&pg)?),
        "v3 is the table"
    );
    let (run, _) = collect(net, provider, &mut seen)?;
    assert!(
        run["outcome"] == "unchanged" && run["incremental"] == true,
        "{run}"
    );
    assert!(!seen.contains(PASSWORD));
    Ok(())
}
