//! Collection from a folder and from an HTTP/JSON API (issue #13), with real nodes over real
//! sockets and a real HTTP server: files dropped into the folder (CSV, JSONL, XLSX) become versions once complete
//! (a half-written hidden file is not taken), a malformed CSV fails its run with the line and is
//! moved to `failed/` with its reason while the previous version stays the latest; an API read
//! page by page with a token from the secrets file becomes a version equal to its records, makes
//! no version when nothing changed, and a wrong token or a nested value fails the run; the token
//! appears in no output and no log. An HTTPS API is read trusting only the authority in the
//! source's `ca` file: a certificate of another authority fails the run before any request.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use huitong_tests::{cli_ok, data, start_prepared};
use serde_json::{json, Value};

const CODE: &str = "301001/000071";
const TOKEN: &str = "Bearer t0ken-f0r-the-api";

/// Appends a `[[collect.sources]]` to node `i`'s config.
fn add_source(net: &huitong_testnet::Testnet, i: usize, toml: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(net.nodes[i].dir.join(huitong_config::CONFIG_FILE))?;
    writeln!(file, "\n[[collect.sources]]\ncode = \"{CODE}\"\n{toml}")?;
    Ok(())
}

fn publish(f: &huitong_tests::Fixture, i: usize) -> anyhow::Result<()> {
    let mut entry = data::table_entry(&f.net, i, 71, "无条件共享", None);
    if let Some(item) = entry["items"][4].as_object_mut() {
        item.remove("share_type");
    }
    data::publish_entry(&f.net, f.tmp.path(), i, &entry)
}

/// Node `i`'s runs of [`CODE`], newest first.
fn runs(net: &huitong_testnet::Testnet, i: usize) -> anyhow::Result<Vec<Value>> {
    let out = cli_ok(net, i, &["collect", "runs", CODE, "--json"])?;
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v["runs"].as_array().cloned().unwrap_or_default())
}

/// The rows node `i` pulls of [`CODE`]'s latest version, `,`-joined, sorted.
fn pulled(f: &huitong_tests::Fixture, i: usize) -> anyhow::Result<Vec<String>> {
    let out = f
        .tmp
        .path()
        .join(format!("pulled-{}.csv", rand::random::<u32>()));
    data::pull(&f.net, i, &[CODE, "--out", &out.to_string_lossy()])?;
    let text = std::fs::read_to_string(&out)?;
    let mut rows: Vec<String> = text.lines().skip(1).map(str::to_owned).collect();
    rows.sort();
    Ok(rows)
}

#[test]
fn files_dropped_into_a_folder_become_versions_and_a_malformed_one_is_put_aside(
) -> anyhow::Result<()> {
    let inbox = tempfile::tempdir()?;
    let path = inbox.path().to_path_buf();
    let mut f = start_prepared(2, 2, &[], |net| {
        add_source(
            net,
            1,
            &format!(
                "kind = \"folder\"\npath = \"{}\"\nsettle_secs = 1\nkey = [\"编号\"]",
                path.display()
            ),
        )
    })?;
    publish(&f, 1)?;
    let (provider, consumer) = (1, 2);

    // Nothing to take yet: a run by hand says where to put a file.
    let out = f.net.cli(provider, &["collect", "run", CODE])?;
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("no complete file"), "{said}");

    // A file written under a hidden name is not taken; renamed into place, it is.
    let hidden = path.join(".people.csv");
    data::table_csv(&hidden, 300, 0..0)?;
    let out = f.net.cli(provider, &["collect", "run", CODE])?;
    assert!(!out.status.success(), "a hidden file is not taken");
    assert_eq!(runs(&f.net, provider)?.len(), 0);
    std::fs::rename(&hidden, path.join("people.csv"))?;
    data::wait_version(&mut f.net, provider, CODE, 1)?;
    let run = &runs(&f.net, provider)?[0];
    assert_eq!(run["outcome"], "published", "{run}");
    assert_eq!(run["file"], "people.csv");
    assert_eq!(run["rows"], 300);
    let done: Vec<String> = std::fs::read_dir(path.join("done"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert!(
        done.len() == 1 && done[0].ends_with("-people.csv"),
        "{done:?}"
    );
    data::wait_version(&mut f.net, consumer, CODE, 1)?;
    let mut expected: Vec<String> = (0..300).map(|n| data::table_row(n, "")).collect();
    expected.sort();
    assert_eq!(pulled(&f, consumer)?, expected, "the version is the file");

    // A malformed CSV (a row with a field too many), complete at once by its mark: the run
    // fails naming the line, the file goes to failed/ with the reason, version 1 stays.
    let mut bad = String::from("编号,姓名,金额,日期,备注\n");
    for n in 0..10 {
        bad.push_str(&data::table_row(n, "坏"));
        bad.push('\n');
    }
    bad.push_str("NO0000000099,多一列,1.00,2026-01-01,备注,多余\n");
    std::fs::write(path.join("broken.csv"), &bad)?;
    std::fs::write(path.join("broken.csv.done"), "")?;
    let mut last = Value::Null;
    huitong_tests::wait_until(
        std::time::Duration::from_secs(60),
        "the malformed file's run",
        || {
            last = runs(&f.net, provider)?[0].clone();
            Ok(last["file"] == "broken.csv")
        },
    )?;
    assert_eq!(last["outcome"], "failed", "{last}");
    let error = last["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error.contains("broken.csv") && error.contains("row 11"),
        "the row: {error}"
    );
    let failed: Vec<String> = std::fs::read_dir(path.join("failed"))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    let note = failed
        .iter()
        .find(|n| n.ends_with(".error.txt"))
        .ok_or_else(|| anyhow::anyhow!("no reason beside the file: {failed:?}"))?;
    let why = std::fs::read_to_string(path.join("failed").join(note))?;
    assert!(why.contains("row 11"), "{why}");
    assert!(!path.join("broken.csv").exists() && !path.join("broken.csv.done").exists());
    assert_eq!(
        data::latest_version(&mut f.net, provider, CODE)?,
        1,
        "a failed run makes no version"
    );

    // A JSONL file with a tenth of the rows changed: version 2, equal to it.
    let mut jsonl = String::new();
    let mut expected = Vec::new();
    for n in 0..300u64 {
        let tag = if n % 10 == 3 { "改" } else { "" };
        let row = data::table_row(n, tag);
        let cells: Vec<&str> = row.split(',').collect();
        let obj = json!({"编号": cells[0], "姓名": cells[1], "金额": cells[2], "日期": cells[3], "备注": cells[4]});
        jsonl.push_str(&obj.to_string());
        jsonl.push('\n');
        expected.push(row);
    }
    expected.sort();
    std::fs::write(path.join(".v2.jsonl"), jsonl)?;
    std::fs::rename(path.join(".v2.jsonl"), path.join("v2.jsonl"))?;
    data::wait_version(&mut f.net, provider, CODE, 2)?;
    data::wait_version(&mut f.net, consumer, CODE, 2)?;
    assert_eq!(
        pulled(&f, consumer)?,
        expected,
        "version 2 is the JSONL file"
    );

    // An Excel workbook, complete at once by its mark: version 3, equal to its sheet.
    let rows: Vec<Vec<String>> = (0..250u64)
        .map(|n| {
            data::table_row(n, if n % 7 == 0 { "表" } else { "" })
                .split(',')
                .map(str::to_owned)
                .collect()
        })
        .collect();
    let mut expected: Vec<String> = rows.iter().map(|r| r.join(",")).collect();
    expected.sort();
    data::xlsx_table(
        &path.join("v3.xlsx"),
        &["编号", "姓名", "金额", "日期", "备注"],
        &rows,
    )?;
    std::fs::write(path.join("v3.xlsx.done"), "")?;
    data::wait_version(&mut f.net, provider, CODE, 3)?;
    data::wait_version(&mut f.net, consumer, CODE, 3)?;
    assert_eq!(pulled(&f, consumer)?, expected, "version 3 is the workbook");
    Ok(())
}

/// The records the test API serves, and how many requests it answered.
#[derive(Default)]
struct Api {
    records: Vec<Value>,
    requests: usize,
}

/// One request's path and query, and its `Authorization` header.
fn read_request(stream: &mut impl std::io::Read) -> anyhow::Result<(String, String)> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let target = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let mut auth = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                auth = value.trim().to_owned();
            }
        }
    }
    Ok((target, auth))
}

/// Serves `api` as `GET /api/people?page=N&size=S` → `{"code":0,"data":{"list":[…]}}`, pages
/// from 1, only with the right token (401 otherwise); `(status, body)` of one request.
fn answer(api: &Mutex<Api>, target: &str, auth: &str) -> (u16, String) {
    let mut api = api.lock().unwrap_or_else(|p| p.into_inner());
    api.requests += 1;
    if auth != TOKEN {
        return (401, "{\"error\":\"unauthorised\"}".into());
    }
    let query = target.split_once('?').map(|(_, q)| q).unwrap_or_default();
    let param = |name: &str| -> usize {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (page, size) = (param("page").max(1), param("size").max(1));
    let list: Vec<Value> = api
        .records
        .iter()
        .skip((page - 1) * size)
        .take(size)
        .cloned()
        .collect();
    (200, json!({"code": 0, "data": {"list": list}}).to_string())
}

/// Reads one request from `stream` and writes `api`'s answer.
fn respond(
    stream: &mut (impl std::io::Read + std::io::Write),
    api: &Mutex<Api>,
) -> anyhow::Result<()> {
    let (target, auth) = read_request(stream)?;
    let (status, body) = answer(api, &target, &auth);
    let head = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    Ok(())
}

/// A real HTTP server on loopback serving `api`, one connection at a time, over TLS with
/// `tls`; its port.
fn serve(api: Arc<Mutex<Api>>, tls: Option<Arc<rustls::ServerConfig>>) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            match &tls {
                None => {
                    let _ = respond(&mut stream, &api);
                }
                Some(config) => {
                    let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                        continue;
                    };
                    let mut tls = rustls::StreamOwned::new(conn, stream);
                    // A client that refuses the certificate ends here.
                    let _ = respond(&mut tls, &api);
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                    stream = tls.sock;
                }
            }
            // Close only after the client has read all (no reset of an unread answer).
            let mut rest = Vec::new();
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let _ = stream.read_to_end(&mut rest);
        }
    });
    Ok(port)
}

fn record(n: u64, tag: &str) -> Value {
    let row = data::table_row(n, tag);
    let c: Vec<&str> = row.split(',').collect();
    // The API's own field names, mapped to the 信息项 by the source's columns; numbers as JSON
    // numbers, an absent note as null.
    json!({"id": c[0], "name": c[1], "amount": c[2].parse::<f64>().unwrap_or(0.0), "day": c[3],
           "note": if n.is_multiple_of(50) { Value::Null } else { json!(c[4]) }, "unused": {"x": 1}})
}

/// A record as the pulled CSV has it.
fn as_row(r: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    ["id", "name", "amount", "day", "note"]
        .iter()
        .map(|k| text(&r[*k]))
        .collect::<Vec<_>>()
        .join(",")
}

/// Node `i` reads the test API at `url` in pages of 100 when asked, with the token in its
/// secrets file (mode 0600) and the source settings `extra`.
fn add_api_source(
    net: &huitong_testnet::Testnet,
    i: usize,
    url: &str,
    extra: &str,
) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    add_source(
        net,
        i,
        &format!(
            "kind = \"http\"\nurl = \"{url}\"\nrecords = \"/data/list\"\n\
             paging = {{ style = \"page\", size = 100 }}\nschedule = \"manual\"\n{extra}\n\
             columns = {{ \"编号\" = \"id\", \"姓名\" = \"name\", \"金额\" = \"amount\", \"日期\" = \"day\", \"备注\" = \"note\" }}"
        ),
    )?;
    let secrets = net.nodes[i].dir.join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("[sources.\"{CODE}\".headers]\nAuthorization = \"{TOKEN}\"\n"),
    )?;
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// `huitong collect run CODE --json` on node `i`: the run printed, whether the command
/// succeeded, and all it wrote (stdout and stderr).
fn collect_now(f: &huitong_tests::Fixture, i: usize) -> anyhow::Result<(Value, bool, String)> {
    let out = f.net.cli(i, &["collect", "run", CODE, "--json"])?;
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "no run printed ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((v, out.status.success(), printed))
}

#[test]
fn an_http_api_is_read_page_by_page_into_versions() -> anyhow::Result<()> {
    let api = Arc::new(Mutex::new(Api {
        records: (0..1234).map(|n| record(n, "")).collect(),
        requests: 0,
    }));
    let port = serve(api.clone(), None)?;
    let mut f = start_prepared(2, 2, &[], |net| {
        add_api_source(
            net,
            1,
            &format!("http://127.0.0.1:{port}/api/people"),
            "key = [\"编号\"]",
        )
    })?;
    publish(&f, 1)?;
    let (provider, consumer) = (1, 2);
    let mut seen = String::new();
    let mut run = |f: &huitong_tests::Fixture| -> anyhow::Result<(Value, bool)> {
        let (v, ok, printed) = collect_now(f, provider)?;
        seen.push_str(&printed);
        Ok((v, ok))
    };

    // 1,234 records in pages of 100: 13 requests, version 1 equal to the records.
    let (v, ok) = run(&f)?;
    assert!(
        ok && v["outcome"] == "published" && v["rows"] == 1234,
        "{v}"
    );
    assert_eq!(api.lock().map(|a| a.requests).unwrap_or(0), 13);
    data::wait_version(&mut f.net, consumer, CODE, 1)?;
    let expect = |api: &Mutex<Api>| {
        let mut rows: Vec<String> = api
            .lock()
            .map(|a| a.records.iter().map(as_row).collect())
            .unwrap_or_default();
        rows.sort();
        rows
    };
    assert_eq!(
        pulled(&f, consumer)?,
        expect(&api),
        "version 1 is the API's records"
    );
    let (v, _) = run(&f)?;
    assert_eq!(v["outcome"], "unchanged", "{v}");

    // Records changed, one removed, two added: version 2, equal to them.
    {
        let mut a = api.lock().unwrap_or_else(|p| p.into_inner());
        for n in (0..1234).step_by(37) {
            a.records[n] = record(n as u64, "改");
        }
        a.records.remove(500);
        a.records.push(record(5000, "新"));
        a.records.push(record(5001, "新"));
    }
    let (v, ok) = run(&f)?;
    assert!(
        ok && v["outcome"] == "published" && v["version"] == 2 && v["rows"] == 1235,
        "{v}"
    );
    data::wait_version(&mut f.net, consumer, CODE, 2)?;
    assert_eq!(
        pulled(&f, consumer)?,
        expect(&api),
        "version 2 is the API's records"
    );

    // A nested value where a cell belongs: the run fails naming the place; version 2 stays.
    {
        let mut a = api.lock().unwrap_or_else(|p| p.into_inner());
        a.records[150]["name"] = json!({"first": "三", "last": "张"});
    }
    let (v, ok) = run(&f)?;
    assert!(!ok && v["outcome"] == "failed", "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("page 2, record 51, field \"name\""),
        "{error}"
    );

    // A wrong token: the API's 401, with what to check.
    let secrets = f.net.nodes[provider].dir.join("secrets.toml");
    std::fs::write(
        &secrets,
        format!("[sources.\"{CODE}\".headers]\nAuthorization = \"Bearer wrong\"\n"),
    )?;
    let (v, ok) = run(&f)?;
    assert!(!ok && v["outcome"] == "failed", "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("401") && error.contains("headers"),
        "{error}"
    );
    assert_eq!(
        data::latest_version(&mut f.net, provider, CODE)?,
        2,
        "failed runs make no version"
    );

    // The token is in no output and no log.
    let log = std::fs::read_to_string(f.net.nodes[provider].dir.join(huitong_testnet::LOG_FILE))?;
    let token = TOKEN.trim_start_matches("Bearer ");
    assert!(!seen.contains(token) && !log.contains(token));
    Ok(())
}

#[test]
fn an_https_api_is_read_trusting_the_authority_in_the_sources_ca_file() -> anyhow::Result<()> {
    let api = Arc::new(Mutex::new(Api {
        records: (0..250).map(|n| record(n, "")).collect(),
        requests: 0,
    }));
    // The department's API certificate, self-signed (its own authority), for 127.0.0.1.
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into()),
        )?;
    let port = serve(api.clone(), Some(Arc::new(tls)))?;
    let ca = tempfile::tempdir()?;
    let ca_file = ca.path().join("dept-ca.pem");
    // First another authority: the API's certificate must be refused.
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])?;
    std::fs::write(&ca_file, other.cert.pem())?;
    let mut f = start_prepared(1, 2, &[], |net| {
        add_api_source(
            net,
            1,
            &format!("https://127.0.0.1:{port}/api/people"),
            &format!("ca = {:?}", ca_file.display()),
        )
    })?;
    publish(&f, 1)?;
    let (provider, consumer) = (1, 0);
    let run = |f: &huitong_tests::Fixture| -> anyhow::Result<(Value, bool)> {
        let (v, ok, _) = collect_now(f, provider)?;
        Ok((v, ok))
    };

    let (v, ok) = run(&f)?;
    assert!(!ok && v["outcome"] == "failed", "{v}");
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("certificate") && error.contains("ca file"),
        "a certificate of another authority is refused, saying why: {error}"
    );
    assert_eq!(
        api.lock().map(|a| a.requests).unwrap_or(0),
        0,
        "nothing was asked of a server not trusted"
    );

    std::fs::write(&ca_file, cert.cert.pem())?;
    let (v, ok) = run(&f)?;
    assert!(ok && v["outcome"] == "published" && v["rows"] == 250, "{v}");
    assert_eq!(api.lock().map(|a| a.requests).unwrap_or(0), 3);
    data::wait_version(&mut f.net, consumer, CODE, 1)?;
    let mut expect: Vec<String> = api
        .lock()
        .map(|a| a.records.iter().map(as_row).collect())
        .unwrap_or_default();
    expect.sort();
    assert_eq!(
        pulled(&f, consumer)?,
        expect,
        "version 1 is the API's records"
    );

    std::fs::write(&ca_file, "not a certificate\n")?;
    let (v, ok) = run(&f)?;
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        !ok && error.contains("holds no certificate"),
        "a ca file without a certificate is named: {error}"
    );
    std::fs::remove_file(&ca_file)?;
    std::fs::create_dir(&ca_file)?;
    let (v, ok) = run(&f)?;
    let error = v["error"].as_str().unwrap_or_default();
    assert!(
        !ok && error.contains("not a regular file"),
        "a directory as the ca file is named: {error}"
    );
    assert_eq!(
        api.lock().map(|a| a.requests).unwrap_or(0),
        3,
        "no request without the authority to check the API by"
    );
    Ok(())
}
