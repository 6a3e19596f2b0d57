//! API services (issue #12) with real nodes over real sockets: a department system calls a
//! provider's 接口 resource through its own node's gateway (`/svc/…`, its own client key). A
//! lookup returns exactly the granted 信息项 of the right row; a 核验 answers match / no match
//! only, and a grant's terms hold (a masked 信息项 comes back masked, a 核验-only grant refuses
//! lookups); no key, no grant, a 信息项 outside the grant, a call over the day's quota (429,
//! Retry-After) and a revoked grant are refused with clear errors; the provider's node down gives 503 with a reason, not a hang. Both nodes' call logs
//! hold every call, hash-chained, and the answer the consumer keeps is signed by the provider;
//! the provider's portal shows the calls on its statistics page (a real headless browser).

use std::time::{Duration, Instant};

use huitong_protocol::call::{Outcome, Query, SignedAnswer};
use huitong_protocol::grant::{assemble, endorse, mint, GrantFacts};
use huitong_protocol::wire::{DataRequest, DataResponse};
use huitong_protocol::{ResourceCode, SecretKey};
use huitong_tests::workflow::{apply, wait_state};
use huitong_tests::{cli_ok, data, error_of, rogue, start_prepared};
use serde_json::{json, Value};

const CODE: &str = "301001/000051";

/// The gateway's base URL for the provider's resource, on node `i`.
fn svc(net: &huitong_testnet::Testnet, i: usize, provider_uscc: &str) -> anyhow::Result<String> {
    let api = net
        .api_addr(i)
        .ok_or_else(|| anyhow::anyhow!("node {i} has no API address"))?;
    Ok(format!("http://{api}/svc/{provider_uscc}/{CODE}"))
}

/// A GET or POST through the gateway: status and JSON body.
fn call(
    c: &reqwest::blocking::Client,
    key: Option<&str>,
    url: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut r = match &body {
        Some(b) => c.post(url).json(b),
        None => c.get(url),
    };
    if let Some(k) = key {
        r = r.header("authorization", format!("Bearer {k}"));
    }
    let r = r.send()?;
    let status = r.status().as_u16();
    let text = r.text()?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// The provider's signed word in a gateway answer or refusal (`answer`, base64), opened and
/// checked: the same call id as the answer's `id`.
fn signed_word(v: &Value) -> anyhow::Result<huitong_protocol::call::Answer> {
    use base64::Engine as _;
    let envelope = base64::engine::general_purpose::STANDARD
        .decode(v["answer"].as_str().unwrap_or_default())?;
    let opened = SignedAnswer::open(&envelope)?.answer;
    anyhow::ensure!(
        v["id"] == opened.id.as_str(),
        "the id is not the signed one: {v}"
    );
    Ok(opened)
}

fn lookup(base: &str, fields: &str, value: &str) -> String {
    let enc = huitong_testnet::percent_encode;
    format!(
        "{base}/lookup?key={}&value={}&fields={}",
        enc("编号"),
        enc(value),
        enc(fields)
    )
}

#[test]
fn a_department_system_calls_a_service_through_its_node_checked_and_logged_per_call(
) -> anyhow::Result<()> {
    // The provider answers at most 20 calls a day per consumer and resource.
    // Both anchor their call logs every second.
    let mut f = start_prepared(2, 2, &[], |net| {
        use std::io::Write as _;
        for (i, extra) in [(1, "calls_per_day = 20\n"), (2, "")] {
            let config = net.nodes[i].dir.join(huitong_config::CONFIG_FILE);
            let mut file = std::fs::OpenOptions::new().append(true).open(config)?;
            writeln!(file, "\n[services]\n{extra}anchor_secs = 1")?;
        }
        Ok(())
    })?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (provider, consumer) = (1, 2);
    let mut entry = data::table_entry(net, provider, 51, "有条件共享", Some("仅限社会救助核验"));
    entry["share_mode"] = "接口".into();
    data::publish_entry(net, &dir, provider, &entry)?;
    let csv = data::table_csv(&dir.join("t.csv"), 2_000, 0..0)?;
    data::publish(net, provider, CODE, &csv, &[])?;
    data::wait_version(net, consumer, CODE, 1)?;
    let p_uscc = net.nodes[provider].uscc.clone();
    let base = svc(net, consumer, &p_uscc)?;
    let c = reqwest::blocking::Client::builder().no_proxy().build()?;

    // The department system gets its own key; without it (or with another) nothing is called.
    let out = cli_ok(
        net,
        consumer,
        &["gateway", "add-client", "minzheng", "--json"],
    )?;
    let added: Value = serde_json::from_slice(&out.stdout)?;
    let key = added["key"].as_str().unwrap_or_default().to_string();
    assert!(key.starts_with("hgw_"), "{added}");
    let one = lookup(&base, "姓名", "NO0000000042");
    for k in [None, Some("hgw_0000"), Some("Bearer")] {
        let (s, v) = call(&c, k, &one, None)?;
        assert_eq!(s, 401, "{k:?}: {v}");
        assert!(error_of(&v).contains("gateway add-client"), "{v}");
    }

    // No grant yet: refused, saying what to do, with the provider's signed refusal.
    let (s, v) = call(&c, Some(&key), &one, None)?;
    assert_eq!(s, 403, "{v}");
    assert!(error_of(&v).contains("apply"), "{v}");
    let refusal = signed_word(&v)?;
    let provider_id = huitong_config::keyfile::read(
        &net.nodes[provider].dir.join(huitong_config::NODE_KEY_FILE),
    )?
    .public();
    assert_eq!(refusal.provider, provider_id);
    assert!(
        matches!(&refusal.outcome, Outcome::Refused { kind: huitong_protocol::wire::RefusalKind::NeedsGrant, message } if message.contains("apply") && message.contains("call it once the grant")),
        "{refusal:?}"
    );
    let refused_id = refusal.id;

    // Granted 编号 and 姓名 (not 金额).
    // (The only provider of this code: no --provider needed.)
    let id = apply(net, consumer, CODE, "编号,姓名,金额")?;
    wait_state(net, provider, "--incoming", &id, "accepted")?;
    cli_ok(
        net,
        provider,
        &["approve", &id, "--fields", "编号,姓名", "--masked", "姓名"],
    )?;
    wait_state(net, consumer, "--outgoing", &id, "granted")?;

    // A lookup returns exactly the granted 信息项 of the right row — 姓名 masked, as approved
    // — with the provider's signed answer.
    let (s, v) = call(
        &c,
        Some(&key),
        &lookup(&base, "编号,姓名", "NO0000000042"),
        None,
    )?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        v["rows"],
        json!([{"编号": "NO0000000042", "姓名": "张***"}]),
        "{v}"
    );
    assert_eq!(v["more"], false, "{v}");
    assert_eq!(v["grant"], id.as_str(), "{v}");
    let answer = signed_word(&v)?;
    assert_eq!(answer.provider, provider_id);
    assert!(matches!(answer.outcome, Outcome::Rows { .. }));
    let answered_id = answer.id;
    // No such row: an empty answer, not an error.
    let (s, v) = call(&c, Some(&key), &lookup(&base, "姓名", "NO9999999999"), None)?;
    assert_eq!((s, v["rows"].clone()), (200, json!([])), "{v}");

    // Another member presenting a grant made out to the consumer, or an expired one: refused by
    // the provider, which checks the connecting key and the period on every call.
    let node_key = |i: usize| -> anyhow::Result<SecretKey> {
        Ok(huitong_config::keyfile::read(
            &net.nodes[i].dir.join(huitong_config::NODE_KEY_FILE),
        )?)
    };
    let (hub_key, p_key, c_key) = (node_key(0)?, node_key(provider)?, node_key(consumer)?);
    let (rkey, _) = rogue::admit(net, provider)?;
    let other = rogue::connect(net, &rkey)?;
    let peer = net.nodes[provider].peer_id.clone();
    let forged = |consumer: huitong_protocol::NodeId, expires: u64| -> anyhow::Result<Vec<u8>> {
        let facts = GrantFacts {
            id: id.clone(),
            code: CODE.into(),
            provider: p_key.public(),
            consumer,
            fields: vec!["编号".into(), "姓名".into()],
            expires,
        };
        let token = mint(&hub_key, &facts)?;
        let block = endorse(&p_key, &token, &facts)?;
        Ok(assemble(&token, &block)?)
    };
    let now_s = huitong_tests::now_ms() / 1000;
    for (what, token, expected) in [
        // The token names the consumer: it does not allow the rogue's request.
        (
            "the consumer's grant",
            forged(c_key.public(), 4_000_000_000)?,
            "does not allow this request",
        ),
        // A token for the rogue under the consumer's application: the provider's record says
        // whose application it is.
        (
            "a grant under the consumer's application",
            forged(rkey.public(), 4_000_000_000)?,
            "another provider or consumer",
        ),
        // The same, expired: refused for its period first.
        (
            "an expired grant",
            forged(rkey.public(), now_s - 3600)?,
            "expired",
        ),
    ] {
        let (answer, _) = other.data(
            &peer,
            DataRequest::Call {
                code: ResourceCode::parse(CODE)?,
                grant: Some(serde_bytes::ByteBuf::from(token)),
                query: Query::Lookup {
                    key: "编号".into(),
                    value: "NO0000000042".into(),
                    fields: vec!["编号".into()],
                    limit: 1,
                    filters: Vec::new(),
                    offset: 0,
                },
            },
        )?;
        let DataResponse::Refused { message, .. } = &answer else {
            anyhow::bail!("{what} was answered: {answer:?}");
        };
        assert!(message.contains(expected), "{what}: {message}");
    }

    // A masked 信息项 can be matched but not probed by a range or prefix.
    let enc = huitong_testnet::percent_encode;
    let (s, v) = call(
        &c,
        Some(&key),
        &format!(
            "{}&filter={}",
            lookup(&base, "编号", "NO0000000042"),
            enc("姓名^=张")
        ),
        None,
    )?;
    assert_eq!(s, 403, "{v}");
    assert!(error_of(&v).contains("masked"), "{v}");

    // An API resource is called, never pulled whole, even under a grant.
    let out = dir.join("whole.csv").to_string_lossy().to_string();
    let why = data::pull_refused(net, consumer, &[CODE, "--out", &out])?;
    assert!(why.contains("API resource"), "{why}");

    // A 信息项 outside the grant is refused, naming it.
    let (s, v) = call(
        &c,
        Some(&key),
        &lookup(&base, "姓名,金额", "NO0000000042"),
        None,
    )?;
    assert_eq!(s, 403, "{v}");
    assert!(error_of(&v).contains("金额"), "{v}");

    // 核验: match or no match, no data.
    let verify = format!("{base}/verify");
    let (s, v) = call(
        &c,
        Some(&key),
        &verify,
        Some(json!({"编号": "NO0000000042", "姓名": "张三42"})),
    )?;
    assert_eq!((s, v["match"].clone()), (200, json!(true)), "{v}");
    assert!(v.get("rows").is_none(), "{v}");
    let (s, v) = call(
        &c,
        Some(&key),
        &verify,
        Some(json!({"编号": "NO0000000042", "姓名": "李四"})),
    )?;
    assert_eq!((s, v["match"].clone()), (200, json!(false)), "{v}");
    let (s, v) = call(
        &c,
        Some(&key),
        &verify,
        Some(json!(["not", "an", "object"])),
    )?;
    assert_eq!(s, 400, "{v}");

    // Malformed lookups and unknown services.
    let (s, v) = call(
        &c,
        Some(&key),
        &format!("{}&limit=1000", lookup(&base, "姓名", "x")),
        None,
    )?;
    assert_eq!(s, 200, "a limit above the most is capped: {v}");
    let (s, v) = call(&c, Some(&key), &lookup(&base, "", "x"), None)?;
    assert_eq!(s, 400, "{v}");
    // A value that is not UTF-8 once decoded is refused, not looked up as something else.
    let not_utf8 = format!(
        "{base}/lookup?key={}&value=%FF&fields={}",
        huitong_testnet::percent_encode("编号"),
        huitong_testnet::percent_encode("姓名")
    );
    let (s, v) = call(&c, Some(&key), &not_utf8, None)?;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("UTF-8"), "{v}");
    let other = svc(net, consumer, "91320684MA1XXXXXXX")?;
    let (s, v) = call(&c, Some(&key), &lookup(&other, "姓名", "x"), None)?;
    assert_eq!(s, 404, "{v}");

    // Both nodes log every call, hash-chained; the answered call has the same id on both.
    let logs = |i: usize| -> anyhow::Result<Value> {
        let out = cli_ok(net, i, &["audit", "calls", "--code", CODE, "--json"])?;
        Ok(serde_json::from_slice(&out.stdout)?)
    };
    let mine = logs(consumer)?;
    assert!(mine["broken"].is_null(), "{mine}");
    let calls = mine["calls"].as_array().cloned().unwrap_or_default();
    assert!(
        calls
            .iter()
            .all(|c| c["side"] == "consumer" && c["client"] == "minzheng"),
        "{mine}"
    );
    assert!(calls.iter().any(|c| c["status"] == "refused"), "{mine}");
    assert!(
        calls.iter().any(|c| c["id"] == answered_id.as_str()),
        "{mine}"
    );
    let theirs = logs(provider)?;
    assert!(theirs["broken"].is_null(), "{theirs}");
    let answered: Vec<&Value> = theirs["calls"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["id"] == answered_id.as_str())
        .collect();
    assert_eq!(answered.len(), 1, "{theirs}");
    assert_eq!(answered[0]["side"], "provider");
    assert_eq!(answered[0]["grant"], id.as_str());

    // Revocation stops the next call.
    cli_ok(net, provider, &["revoke", &id, "--reason", "核验任务结束"])?;
    let (s, v) = call(&c, Some(&key), &one, None)?;
    assert_eq!(s, 403, "the first call after the revocation: {v}");
    // The provider says the grant was revoked; or, once the consumer has heard of the
    // revocation, it presents no grant and the provider says to apply.
    let why = error_of(&v);
    assert!(why.contains("revoked") || why.contains("apply"), "{v}");

    // A grant for 核验 only: lookups are refused, verifications answered.
    let id2 = apply(net, consumer, CODE, "编号,姓名")?;
    wait_state(net, provider, "--incoming", &id2, "accepted")?;
    // A grant's quota above the provider's own (20 a day) is refused, saying so.
    let out = net.cli(provider, &["approve", &id2, "--calls-per-day", "21"])?;
    assert!(!out.status.success());
    let why = String::from_utf8_lossy(&out.stderr);
    assert!(
        why.contains("above this node's [services] calls_per_day 20"),
        "{why}"
    );
    // Its own quota, within the provider's: 1 call a second, 8 a day.
    cli_ok(
        net,
        provider,
        &[
            "approve",
            &id2,
            "--verify-only",
            "--calls-per-second",
            "1",
            "--calls-per-day",
            "8",
        ],
    )?;
    wait_state(net, consumer, "--outgoing", &id2, "granted")?;
    let (s, v) = call(&c, Some(&key), &one, None)?;
    assert_eq!(s, 403, "{v}");
    assert!(error_of(&v).contains("核验 only"), "{v}");
    let check = Some(json!({"编号": "NO0000000007", "姓名": "张三7"}));
    let (s, v) = call(&c, Some(&key), &verify, check.clone())?;
    assert_eq!((s, v["match"].clone()), (200, json!(true)), "{v}");

    // One call was answered under this grant (refusals do not count; the six answered under the
    // first grant count towards the provider's 20 for this consumer, not towards this grant's
    // 8). Calls in a row under the grant: one a second passes (a faster one gets 429 with
    // Retry-After ≤ 1 s, and a client that waits that long gets through); the eighth answered
    // is the grant's last of the day, then 429 with Retry-After until midnight.
    let mut answered = 1;
    let mut slowed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let daily = loop {
        assert!(Instant::now() < deadline, "no daily refusal within 60 s");
        let r = c
            .post(&verify)
            .json(&check)
            .header("authorization", format!("Bearer {key}"))
            .send()?;
        let status = r.status().as_u16();
        let retry: u64 = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or_default();
        let v: Value = r.json()?;
        let why = error_of(&v).to_string();
        match status {
            200 => answered += 1,
            429 if why.contains("a second") => {
                assert_eq!(retry, 1, "Retry-After of the rate quota: {v}");
                // The provider signs what it refuses, with the wait it asks for.
                let o = signed_word(&v)?.outcome;
                assert!(
                    matches!(o, Outcome::Throttled { retry_after_ms, .. } if (1..=1000).contains(&retry_after_ms)),
                    "{o:?}"
                );
                slowed += 1;
                // What a client is told to do: wait Retry-After.
                std::thread::sleep(Duration::from_secs(retry));
            }
            429 => break (retry, why, signed_word(&v)?),
            _ => panic!("unexpected answer {status}: {v}"),
        }
    };
    assert_eq!(answered, 8, "the grant allows 8 calls a day");
    assert!(slowed >= 1, "calls in a row were never over 1 a second");
    let (retry, why, throttled) = daily;
    assert!((1..=86_400).contains(&retry), "Retry-After {retry}");
    assert!(
        why.contains("8 calls today, the daily quota of grant"),
        "{why}"
    );
    assert!(
        matches!(&throttled.outcome, Outcome::Throttled { message, .. } if message.contains("8 calls")),
        "{throttled:?}"
    );
    assert_eq!(throttled.grant.as_deref(), Some(id2.as_str()));
    // The grant's terms are shown with the application.
    let out = cli_ok(net, consumer, &["applications", "--outgoing"])?;
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("≤ 1 calls/s") && shown.contains("≤ 8 calls/day"),
        "{shown}"
    );

    // The provider's own systems call its own service through its own node: the owner, no
    // grant, no quota, nothing masked.
    let out = cli_ok(
        net,
        provider,
        &["gateway", "add-client", "gongan", "--json"],
    )?;
    let own_key = serde_json::from_slice::<Value>(&out.stdout)?["key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let own = lookup(&svc(net, provider, &p_uscc)?, "姓名", "NO0000000042");
    let (s, v) = call(&c, Some(&own_key), &own, None)?;
    assert_eq!(
        (s, v["rows"].clone()),
        (200, json!([{"姓名": "张三42"}])),
        "{v}"
    );

    // Filters and paging (the owner reads every 信息项): 日期 2026-01-01 is every 84th row
    // (24 of 2,000); 编号 from NO0000000840 leaves 14; five at a time from the 11th: four.
    let own_base = svc(net, provider, &p_uscc)?;
    let page = |filter: &str, limit: u32, offset: u32| {
        format!(
            "{own_base}/lookup?key={}&value=2026-01-01&fields={}&filter={}&limit={limit}&offset={offset}",
            enc("日期"),
            enc("编号"),
            enc(filter)
        )
    };
    let numbers = |v: &Value| -> Vec<String> {
        v["rows"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["编号"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (s, v) = call(&c, Some(&own_key), &page("编号>=NO0000000840", 5, 10), None)?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        numbers(&v),
        [
            "NO0000001680",
            "NO0000001764",
            "NO0000001848",
            "NO0000001932"
        ],
        "{v}"
    );
    assert_eq!(v["more"], false, "{v}");
    let (s, v) = call(&c, Some(&own_key), &page("编号>=NO0000000840", 5, 5), None)?;
    assert_eq!((s, v["more"].clone()), (200, json!(true)), "{v}");
    assert_eq!(numbers(&v).len(), 5, "{v}");
    // Numbers compare as numbers: 金额 ≥ 10000 (n·7 ≥ 10,000) holds for the last six, though
    // "9996.00" sorts after "10000.00" as text.
    let (s, v) = call(&c, Some(&own_key), &page("金额>=10000", 100, 0), None)?;
    assert_eq!(s, 200, "{v}");
    assert_eq!(numbers(&v).len(), 6, "{v}");
    assert_eq!(numbers(&v)[0], "NO0000001512", "{v}");
    // No operator, no 信息项: each a 400 that says what is wrong.
    let (s, v) = call(&c, Some(&own_key), &page("金额", 1, 0), None)?;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("operator"), "{v}");
    let (s, v) = call(&c, Some(&own_key), &page("=1", 1, 0), None)?;
    assert_eq!(s, 400, "{v}");
    assert!(error_of(&v).contains("empty"), "{v}");
    // A filter on a 信息项 outside the grant is refused like a field outside it.
    let (s, v) = call(
        &c,
        Some(&key),
        &format!(
            "{}&filter={}",
            lookup(&base, "编号", "NO0000000042"),
            enc("金额>1")
        ),
        None,
    )?;
    assert!(s == 403 || s == 429, "{v}");

    // Every call is proved from the hub's audit log once the node's call log anchor lands,
    // on both sides: an answer, and refusals (the consumer holds the provider's signed word).
    let proved = [
        (&answered_id, "ok"),
        (&refused_id, "refused"),
        (&throttled.id, "refused"),
    ];
    for (i, (call_id, status)) in [consumer, provider]
        .into_iter()
        .flat_map(|i| proved.iter().map(move |p| (i, *p)))
    {
        let mut proof = Value::Null;
        huitong_tests::wait_until(
            Duration::from_secs(90),
            &format!("call {call_id} proved on node {i}"),
            || {
                let out = net.cli(i, &["audit", "verify", "--record", call_id, "--json"])?;
                if out.status.success() {
                    proof = serde_json::from_slice(&out.stdout)?;
                }
                Ok(out.status.success())
            },
        )?;
        let r = &proof[0];
        assert_eq!(r["kind"], "calls", "{proof}");
        assert_eq!(r["call"]["id"], call_id.as_str(), "{proof}");
        assert_eq!(r["call"]["status"], status, "{proof}");
        assert!(
            r["call"]["anchor"].as_u64() >= r["call"]["seq"].as_u64(),
            "{proof}"
        );
        if i == consumer {
            assert_eq!(r["call"]["answer_signed"], true, "{proof}");
        }
    }
    // Statistics: the calls per service and per peer, with latency.
    let out = cli_ok(net, provider, &["audit", "call-stats", "--json"])?;
    let st: Value = serde_json::from_slice(&out.stdout)?;
    let served = st["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["side"] == "provider" && r["code"] == CODE)
        .cloned()
        .unwrap_or_default();
    assert!(served["calls"].as_u64() >= Some(10), "{st}");
    assert!(served["refused"].as_u64() >= Some(1), "{st}");
    assert!(
        served["p99_us"].as_u64() >= served["p50_us"].as_u64(),
        "{st}"
    );
    assert!(
        st["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["side"] == "provider" && r["peer"].as_str().is_some()),
        "{st}"
    );

    // The same on the provider's portal, in a real browser: its statistics page lists the
    // calls it answered, per resource and consumer.
    let pw = huitong_tests::add_user(net, provider, "shenji", "钱审计", "auditor")?;
    let url = format!(
        "http://{}",
        net.portal_addr(provider)
            .ok_or_else(|| anyhow::anyhow!("no portal address"))?
    );
    let consumer_name = net.nodes[consumer].name.clone();
    let downloads = tempfile::tempdir()?;
    let rt = tokio::runtime::Runtime::new()?;
    let driver = huitong_tests::browser::Driver::start()?;
    rt.block_on(async {
        let b = driver.browser(downloads.path()).await?;
        b.sign_in(&url, "shenji", &pw).await?;
        b.open(&format!("{url}/statistics?period=day")).await?;
        b.wait_text("接口调用", false).await?;
        let table = b.text_of("#table-calls").await?;
        assert!(
            table.contains(CODE) && table.contains("提供方") && table.contains(&consumer_name),
            "{table}"
        );
        let total = b.text_of("#totals").await?;
        assert!(total.contains("接口调用"), "{total}");
        b.shot("services-statistics").await?;
        b.client.clone().close().await?;
        anyhow::Ok(())
    })?;

    // The provider's node down: 503 with a reason, within the call timeout.
    net.stop(provider, false)?;
    let t0 = Instant::now();
    let (s, v) = call(&c, Some(&key), &one, None)?;
    assert_eq!(s, 503, "{v}");
    assert!(error_of(&v).contains("did not answer"), "{v}");
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());

    // Restarted, the provider still counts the day's calls (read back from its call log): the
    // grant's day is still used up.
    net.start(provider)?;
    let mut last = (0, Value::Null);
    huitong_tests::wait_until(
        Duration::from_secs(90),
        "the restarted provider answering",
        || {
            last = call(&c, Some(&key), &verify, check.clone())?;
            Ok(last.0 != 503)
        },
    )?;
    let (s, v) = last;
    assert_eq!(s, 429, "{v}");
    assert!(error_of(&v).contains("daily quota of grant"), "{v}");
    Ok(())
}
