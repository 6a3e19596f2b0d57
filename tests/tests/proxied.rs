//! Proxied API services (issue #12, 1b) with real nodes and a real backend over real sockets: a
//! provider's 接口 resource answered by its department's own HTTP/JSON service. The consumer's
//! system calls its own node's gateway (`/svc/…/call/PATH`); the provider's node checks the
//! grant, the operation against the OpenAPI description published as the entry's dataset
//! version, adds the backend's credentials from its secrets file, masks what the grant masks,
//! and cuts off a slow or oversized backend with a clear error. The credentials appear in no
//! log and no `--json` output. The consumer's gateway also listens on an address of its own
//! over HTTPS (`[gateway]`), serving the gateway there and nothing of the admin API.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use huitong_tests::workflow::{apply, wait_state};
use huitong_tests::{cli_ok, data, error_of, start_prepared};
use serde_json::{json, Value};

const CODE: &str = "301001/000061";
const SECRET: &str = "Bearer t0ken-behind-the-node";

/// What the backend saw.
#[derive(Default)]
struct Seen {
    requests: AtomicUsize,
    admin: AtomicUsize,
}

/// A request as the backend read it: method, path, headers (lower-case names) and body.
type Request = (String, String, Vec<(String, String)>, Vec<u8>);

fn read_request(s: &mut TcpStream) -> anyhow::Result<Request> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    );
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len.min(1 << 20)];
    r.read_exact(&mut body)?;
    Ok((method, path, headers, body))
}

fn respond(s: &mut TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    write!(
        s,
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)
}

/// The department's backend: `GET /api/persons/{id}`, `POST /api/persons` (echo), `GET
/// /api/slow` (answers after 20 s), `GET /api/big` (10 MiB), `GET /api/admin` (never to be
/// reached). Every request must carry the credentials, else 401.
fn backend(listener: TcpListener, seen: Arc<Seen>) {
    for s in listener.incoming() {
        let Ok(mut s) = s else { continue };
        let seen = seen.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let (method, path, headers, body) = read_request(&mut s)?;
            seen.requests.fetch_add(1, Ordering::SeqCst);
            let authorized = headers
                .iter()
                .any(|(k, v)| k == "authorization" && v == SECRET);
            if !authorized {
                return Ok(respond(&mut s, 401, br#"{"error":"no credentials"}"#)?);
            }
            match (method.as_str(), path.as_str()) {
                ("GET", p) if p.starts_with("/api/persons/") => {
                    let id = p.trim_start_matches("/api/persons/");
                    let v =
                        json!({"编号": id, "姓名": "张三丰", "金额": 12.5, "日期": "2026-01-01"});
                    respond(&mut s, 200, v.to_string().as_bytes())?;
                }
                ("POST", "/api/persons") => respond(&mut s, 201, &body)?,
                ("GET", "/api/slow") => {
                    std::thread::sleep(Duration::from_secs(20));
                    respond(&mut s, 200, b"{}")?;
                }
                ("GET", "/api/big") => {
                    let big = vec![b' '; 10 << 20];
                    respond(&mut s, 200, &big)?;
                }
                ("GET", "/api/admin") => {
                    seen.admin.fetch_add(1, Ordering::SeqCst);
                    respond(&mut s, 200, b"{}")?;
                }
                _ => respond(&mut s, 404, b"{}")?,
            }
            Ok(())
        });
    }
}

const OPENAPI: &str = r#"{
  "openapi": "3.0.3",
  "info": {"title": "人口基础信息查询", "version": "1.0"},
  "paths": {
    "/persons/{id}": {"get": {"summary": "按编号查询"}},
    "/persons": {"post": {"summary": "登记"}},
    "/slow": {"get": {}},
    "/big": {"get": {}}
  }
}"#;

fn call(
    c: &reqwest::blocking::Client,
    key: &str,
    method: reqwest::Method,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, reqwest::header::HeaderMap, Value)> {
    let mut r = c
        .request(method, url)
        .header("authorization", format!("Bearer {key}"));
    if let Some(b) = &body {
        r = r.json(b);
    }
    let r = r.send()?;
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let text = r.text()?;
    Ok((
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// `GET path` with the client key over TLS to `port` on loopback (name `gateway.test`): the raw
/// answer.
async fn tls_get(
    roots: &rustls::RootCertStore,
    port: u16,
    path: &str,
    key: &str,
) -> anyhow::Result<String> {
    let auth = format!("Bearer {key}");
    huitong_tests::tls::get(
        roots,
        port,
        ("gateway.test", "gateway.test"),
        path,
        &[("Authorization", &auth)],
    )
    .await
}

#[test]
fn a_proxied_service_forwards_described_operations_with_the_nodes_credentials() -> anyhow::Result<()>
{
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let seen = Arc::new(Seen::default());
    {
        let seen = seen.clone();
        std::thread::spawn(move || backend(listener, seen));
    }
    let cert = rcgen::generate_simple_self_signed(vec!["gateway.test".to_string()])?;
    let mut f = start_prepared(2, 2, &[], |net| {
        use std::os::unix::fs::PermissionsExt as _;
        // The consumer's gateway on an HTTPS listener of its own.
        let dir = &net.nodes[2].dir;
        std::fs::write(dir.join("gateway.crt"), cert.cert.pem())?;
        std::fs::write(dir.join("gateway.key"), cert.key_pair.serialize_pem())?;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(huitong_config::CONFIG_FILE))?;
        writeln!(
            file,
            "\n[gateway]\nlisten = \"127.0.0.1:0\"\ntls_cert = \"gateway.crt\"\ntls_key = \"gateway.key\""
        )?;
        let dir = &net.nodes[1].dir;
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(huitong_config::CONFIG_FILE))?;
        writeln!(
            file,
            "\n[[services.backends]]\ncode = \"{CODE}\"\nbase_url = \"http://127.0.0.1:{port}/api\"\ntimeout_secs = 2"
        )?;
        let secrets = dir.join("secrets.toml");
        std::fs::write(
            &secrets,
            format!("[backends.\"{CODE}\"]\nheaders = {{ Authorization = \"{SECRET}\" }}\n"),
        )?;
        std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o600))?;
        Ok(())
    })?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    let mut entry = data::table_entry(net, provider, 61, "有条件共享", Some("仅限社会救助核验"));
    entry["share_mode"] = "接口".into();
    data::publish_entry(net, &dir, provider, &entry)?;
    let description = dir.join("openapi.json");
    std::fs::write(&description, OPENAPI)?;
    data::publish(net, provider, CODE, &description, &["--file"])?;
    data::wait_version(net, consumer, CODE, 1)?;

    let out = cli_ok(
        net,
        consumer,
        &["gateway", "add-client", "minzheng", "--json"],
    )?;
    let key = serde_json::from_slice::<Value>(&out.stdout)?["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let p_uscc = net.nodes[provider].uscc.clone();
    let api = net
        .api_addr(consumer)
        .ok_or_else(|| anyhow::anyhow!("no API address"))?;
    let base = format!("http://{api}/svc/{p_uscc}/{CODE}/call");
    let c = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()?;

    let get = |path: &str| {
        call(
            &c,
            &key,
            reqwest::Method::GET,
            &format!("{base}{path}"),
            None,
        )
    };

    // No grant: refused at the provider, nothing reaches the backend.
    let (s, _, v) = get("/persons/NO1")?;
    assert_eq!(s, 403, "{v}");
    assert_eq!(seen.requests.load(Ordering::SeqCst), 0);

    let id = apply(net, consumer, CODE, "编号,姓名,金额,日期,备注")?;
    wait_state(net, provider, "--incoming", &id, "accepted")?;
    // 核验-only is for query services over a dataset: such a grant could not be used here.
    let out = net.cli(provider, &["approve", &id, "--verify-only"])?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("proxied service") && err.contains("--verify-only"),
        "{err}"
    );
    cli_ok(net, provider, &["approve", &id, "--masked", "姓名"])?;
    wait_state(net, consumer, "--outgoing", &id, "granted")?;

    // A described operation: forwarded with the node's credentials (the backend answers 401
    // without them), 姓名 masked as the grant says, the call's id in a header.
    let (s, h, v) = get("/persons/NO1")?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["编号"], "NO1", "{v}");
    assert_eq!(v["姓名"], "张**", "{v}");
    assert_eq!(v["金额"], json!(12.5), "only 姓名 is masked: {v}");
    let call_id = h
        .get("x-huitong-call")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert_eq!(call_id.len(), 32, "{h:?}");
    let (s, _, v) = call(
        &c,
        &key,
        reqwest::Method::POST,
        &format!("{base}/persons"),
        Some(json!({"编号": "NO2"})),
    )?;
    // A grant that masks allows reads only: the write never reaches the backend.
    assert_eq!(s, 403, "{v}");
    assert!(error_of(&v).contains("GET calls only"), "{v}");

    // The same call through the consumer's HTTPS gateway listener; the admin API is not there.
    // The port it bound is in gateway.addr.
    let gateway_port: u16 = std::fs::read_to_string(net.nodes[consumer].dir.join("gateway.addr"))?
        .trim()
        .parse::<std::net::SocketAddr>()?
        .port();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    let rt = tokio::runtime::Runtime::new()?;
    let at = format!("/svc/{p_uscc}/{CODE}/call/persons/NO3");
    let answer = rt.block_on(tls_get(&roots, gateway_port, &at, &key))?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("NO3") && answer.contains("张**"),
        "{answer}"
    );
    let answer = rt.block_on(tls_get(&roots, gateway_port, "/api/v1/status", &key))?;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    let answer = rt.block_on(tls_get(&roots, gateway_port, &at, "hgw_wrong"))?;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");

    // Not in the description: refused before the backend.
    for (m, p) in [
        (reqwest::Method::GET, "/admin"),
        (reqwest::Method::DELETE, "/persons/NO1"),
        (reqwest::Method::GET, "/persons/NO1/extra"),
    ] {
        let (s, _, v) = call(&c, &key, m.clone(), &format!("{base}{p}"), None)?;
        assert_eq!(s, 404, "{m} {p}: {v}");
        assert!(error_of(&v).contains("OpenAPI"), "{v}");
    }
    assert_eq!(seen.admin.load(Ordering::SeqCst), 0);
    // Paths that a URL parser or the backend would resolve elsewhere are refused.
    for p in [
        "/a/../admin",
        "/.%2e/.%2e/admin",
        "/persons/%2e%2E",
        "/persons/a%2Fb",
        "/persons/..;x",
    ] {
        let (s, _, v) = get(p)?;
        assert!(s == 400 || s == 404, "{p}: {v}");
    }
    assert_eq!(seen.admin.load(Ordering::SeqCst), 0);

    // A slow backend is cut off at its timeout (2 s), a 10 MiB answer at 1 MiB, each saying so.
    let t0 = Instant::now();
    let (s, _, v) = get("/slow")?;
    assert_eq!(s, 503, "{v}");
    assert!(error_of(&v).contains("did not answer within 2 s"), "{v}");
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
    let (s, _, v) = get("/big")?;
    assert_eq!(s, 503, "{v}");
    assert!(error_of(&v).contains("more than 1024 KiB"), "{v}");

    // Both sides logged the calls; the credentials are in no log and no JSON output.
    let logged = cli_ok(net, provider, &["audit", "calls", "--code", CODE, "--json"])?;
    let v: Value = serde_json::from_slice(&logged.stdout)?;
    assert!(
        v["calls"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["id"] == call_id.as_str() && c["kind"] == "http"),
        "{v}"
    );
    let config = cli_ok(net, provider, &["status", "--json"])?;
    for i in [provider, consumer] {
        let log = std::fs::read_to_string(net.nodes[i].dir.join(huitong_testnet::LOG_FILE))?;
        assert!(
            !log.contains("t0ken"),
            "node {i}'s log holds the backend's credentials"
        );
    }
    for out in [&logged.stdout, &config.stdout] {
        assert!(!String::from_utf8_lossy(out).contains("t0ken"));
    }
    Ok(())
}
