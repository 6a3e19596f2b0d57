//! Person accounts, roles and sessions on a real node's API (issue #11, points 1–2 and 13):
//! accounts made with `huitong user add`, sign-in, every route checked for its role from a
//! table, separation of duties, sessions ended by role changes and disabling, sign-in guessing
//! slowed, and the signed-in person named in the signed entry every other node receives.

use std::time::Duration;

use huitong_node::accounts::Role;
use huitong_node::http::authz::RULES;
use huitong_testnet::Testnet;
use huitong_tests::{add_user, cli_ok, entry, start, wait_until};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(60);

/// Signs in on node `i`; the session token.
fn sign_in(net: &mut Testnet, i: usize, account: &str, password: &str) -> anyhow::Result<String> {
    Ok(huitong_tests::session(net, i, account, password)?.0)
}

/// Who may call each route ("anyone" signed in, "public", or the roles): the access policy as
/// the issue and the operator guide state it (三员分立: the administrator neither approves nor
/// audits; the auditor only reads).
const POLICY: &[(&str, &str, &str)] = &[
    ("POST", "/api/v1/login", "public"),
    ("POST", "/api/v1/logout", "anyone"),
    ("GET", "/api/v1/me", "anyone"),
    ("POST", "/api/v1/me/password", "anyone"),
    ("GET", "/api/v1/users", "admin,auditor"),
    ("POST", "/api/v1/users", "admin"),
    ("POST", "/api/v1/users/{account}/roles", "admin"),
    ("POST", "/api/v1/users/{account}/password", "admin"),
    ("POST", "/api/v1/users/{account}/disable", "admin"),
    ("POST", "/api/v1/users/{account}/enable", "admin"),
    ("GET", "/api/v1/status", "anyone"),
    ("GET", "/api/v1/healthz", "public"),
    ("GET", "/api/v1/metrics", "public"),
    ("GET", "/api/v1/openapi.json", "public"),
    ("GET", "/api/v1/peers", "anyone"),
    ("GET", "/api/v1/catalogue", "anyone"),
    ("POST", "/api/v1/catalogue", "cataloguer"),
    ("POST", "/api/v1/catalogue/batch", "cataloguer"),
    ("POST", "/api/v1/catalogue/withdraw", "cataloguer"),
    ("GET", "/api/v1/charter", "anyone"),
    ("POST", "/api/v1/charter", "admin"),
    ("POST", "/api/v1/datasets", "cataloguer"),
    ("GET", "/api/v1/datasets/versions", "anyone"),
    ("GET", "/api/v1/pulls", "data_user"),
    ("POST", "/api/v1/pulls", "data_user"),
    ("GET", "/api/v1/pulls/{id}", "data_user"),
    ("POST", "/api/v1/pulls/{id}/cancel", "data_user"),
    ("POST", "/api/v1/gc", "admin"),
    ("POST", "/api/v1/collect/run", "cataloguer"),
    ("GET", "/api/v1/subscriptions", "data_user,admin,auditor"),
    ("POST", "/api/v1/subscriptions", "data_user"),
    ("POST", "/api/v1/subscriptions/{name}/remove", "data_user"),
    ("GET", "/api/v1/collect/runs", "cataloguer,admin,auditor"),
    ("GET", "/api/v1/collect/sources", "cataloguer,admin,auditor"),
    ("POST", "/api/v1/backup", "admin"),
    ("GET", "/api/v1/applications", "data_user,approver,auditor"),
    ("POST", "/api/v1/applications", "data_user"),
    ("POST", "/api/v1/applications/{id}/approve", "approver"),
    ("POST", "/api/v1/applications/{id}/reject", "approver"),
    ("POST", "/api/v1/applications/{id}/revoke", "approver"),
    ("GET", "/api/v1/audit", "auditor"),
    ("GET", "/api/v1/audit/records/{id}", "auditor"),
    ("GET", "/api/v1/audit/records/{id}/proof", "auditor"),
    ("POST", "/api/v1/audit/proofs", "auditor"),
    ("POST", "/api/v1/audit/checkpoints", "auditor"),
    ("GET", "/api/v1/audit/receipts", "auditor"),
    ("GET", "/api/v1/audit/transfers", "auditor"),
    ("GET", "/api/v1/audit/calls", "auditor"),
    ("GET", "/api/v1/audit/calls/stats", "auditor"),
];

/// The path of a rule with its parameters filled with names that exist nowhere.
fn concrete(path: &str) -> String {
    path.replace("{id}", "0000")
        .replace("{account}", "nobody")
        .replace("{name}", "nothing")
}

#[test]
fn people_sign_in_and_every_route_is_checked_for_their_role() -> anyhow::Result<()> {
    let mut f = start(1, 2)?;
    let net = &mut f.net;
    // Node 0 is the hub, node 1 the department.
    let node = 1;

    // 三员分立: the administrator may not approve, the auditor holds no other role.
    for roles in ["admin,approver", "auditor,data_user", "admin,auditor"] {
        let out = net.cli(
            node,
            &["user", "add", "mixed", "--name", "混合", "--role", roles],
        )?;
        assert!(!out.status.success(), "{roles} accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("separate account"), "{roles}: {err}");
    }
    let bad = net.cli(
        node,
        &[
            "user",
            "add",
            "Zhang San",
            "--name",
            "张三",
            "--role",
            "approver",
        ],
    )?;
    assert!(String::from_utf8_lossy(&bad.stderr).contains("lower-case"));

    let people = [
        ("guanli", "管理员", Role::Admin),
        ("bianmu", "编目员", Role::Cataloguer),
        ("shenpi", "审批人", Role::Approver),
        ("shiyong", "使用人", Role::DataUser),
        ("shenji", "审计员", Role::Auditor),
    ];
    let mut tokens = Vec::new();
    for (account, name, role) in people {
        let password = add_user(net, node, account, name, role.as_str())?;
        tokens.push((role, sign_in(net, node, account, &password)?));
    }
    let listed = net.get(node, "/users")?;
    assert_eq!(listed.as_array().map(Vec::len), Some(people.len()));
    assert!(
        listed.to_string().find("argon2").is_none(),
        "hashes never leave the node"
    );

    // Who am I.
    let me = net.call(node, "GET", "/me", Some(&tokens[2].1), None)?;
    assert_eq!(me.body["account"], "shenpi");
    assert_eq!(me.body["roles"], json!(["approver"]));

    // Every route, every role, against the access policy written out here (independently of
    // the node's rule table, which must name exactly these routes): a role not listed is
    // refused (403); a listed one gets past the check (the request itself may still be bad:
    // 4xx other than 401/403). No token, or a forged one, is 401.
    let routes: std::collections::BTreeSet<(&str, &str)> =
        RULES.iter().map(|(m, p, _)| (*m, *p)).collect();
    let expected: std::collections::BTreeSet<(&str, &str)> =
        POLICY.iter().map(|(m, p, _)| (*m, *p)).collect();
    assert_eq!(
        routes, expected,
        "the node's rules and this test's policy name other routes"
    );
    let mut checked = 0;
    for (method, path, who) in POLICY {
        if *who == "public" || *path == "/api/v1/logout" {
            continue;
        }
        let p = concrete(path.trim_start_matches("/api/v1"));
        for token in ["", "hts_forged", "not-a-token"] {
            let a = net.call(node, method, &p, Some(token), Some(&json!({})))?;
            assert_eq!(a.status, 401, "{method} {path} with {token:?}: {}", a.body);
        }
        for (role, token) in &tokens {
            let allowed = *who == "anyone" || who.split(',').any(|r| r == role.as_str());
            // A real backup takes a while and writes a directory: asked only by those refused.
            if allowed && *path == "/api/v1/backup" {
                continue;
            }
            let a = net.call(node, method, &p, Some(token), Some(&json!({})))?;
            if allowed {
                assert!(
                    a.status != 401 && a.status != 403,
                    "{role} refused {method} {path}: {} {}",
                    a.status,
                    a.body
                );
            } else {
                assert_eq!(a.status, 403, "{role} allowed {method} {path}: {}", a.body);
                let why = a.body["error"].as_str().unwrap_or_default();
                assert!(why.contains("needs the role"), "{why}");
            }
            checked += 1;
        }
    }
    assert!(checked > 150, "{checked} checks");

    // A cataloguer's publish names them in the signed entry: the hub, which got it by gossip,
    // shows who published.
    let cataloguer = &tokens[1].1;
    let e = entry(net, node, 1, "人员签名条目");
    let a = net.call(node, "POST", "/catalogue", Some(cataloguer), Some(&e))?;
    assert_eq!(a.status, 200, "{}", a.body);
    let hub = net.index("hub").ok_or_else(|| anyhow::anyhow!("no hub"))?;
    let code: String = "301001/000001"
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    wait_until(WAIT, "the hub to show who published", || {
        let r = net.get(hub, &format!("/catalogue?code={code}"))?;
        Ok(r["records"][0]["by"] == json!({"account": "bianmu", "name": "编目员"}))
    })?;
    // The admin token acts as the node: no person named.
    let e = entry(net, node, 2, "节点签名条目");
    net.post(node, "/catalogue", &e)?;
    let r = net.get(node, "/catalogue?code=301001%2F000002")?;
    assert!(r["records"][0]["by"].is_null(), "{r}");

    // A change of roles ends the person's sessions; the new roles apply at the next sign-in.
    let data_user = tokens[3].1.clone();
    let changed = net.post(
        node,
        "/users/shiyong/roles",
        &json!({"roles": ["approver"]}),
    )?;
    assert_eq!(changed["sessions_ended"], 1);
    let a = net.call(node, "GET", "/pulls", Some(&data_user), None)?;
    assert_eq!(a.status, 401, "{}", a.body);

    // Disabled: the session ends and sign-in is refused, even with the right password.
    let auditor = tokens[4].1.clone();
    let pw = net.post(node, "/users/shenji/password", &json!({}))?["generated_password"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        net.call(node, "GET", "/audit", Some(&auditor), None)?
            .status,
        401
    );
    let auditor = sign_in(net, node, "shenji", &pw)?;
    cli_ok(net, node, &["user", "disable", "shenji"])?;
    assert_eq!(
        net.call(node, "GET", "/audit", Some(&auditor), None)?
            .status,
        401
    );
    let a = net.call(
        node,
        "POST",
        "/login",
        Some(""),
        Some(&json!({"account": "shenji", "password": pw})),
    )?;
    assert_eq!(
        a.status, 401,
        "a disabled account answers like a wrong password: {}",
        a.body
    );
    cli_ok(net, node, &["user", "enable", "shenji"])?;
    let auditor = sign_in(net, node, "shenji", &pw)?;

    // Paths a person names stay in the exchange directory: no pulling over the node's token,
    // no publishing the node's key.
    let token_file = net.nodes[node].dir.join("api.token");
    let user_pw = net.post(node, "/users/shiyong/password", &json!({}))?["generated_password"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    net.post(
        node,
        "/users/shiyong/roles",
        &json!({"roles": ["data_user"]}),
    )?;
    let data_user = sign_in(net, node, "shiyong", &user_pw)?;
    for out in [token_file.clone(), std::path::PathBuf::from("../api.token")] {
        let a = net.call(
            node,
            "POST",
            "/pulls",
            Some(&data_user),
            Some(&json!({"code": "301001/000001", "out": out})),
        )?;
        assert_eq!(a.status, 403, "{}", a.body);
        assert!(
            a.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("exchange directory")
                || a.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("`..`"),
            "{}",
            a.body
        );
    }
    // A bare name is the person's own file in their directory of the exchange directory, and
    // the pull is theirs.
    let a = net.call(
        node,
        "POST",
        "/pulls",
        Some(&data_user),
        Some(&json!({"code": "301001/000001", "out": "x.csv"})),
    )?;
    assert_eq!(a.status, 200, "{}", a.body);
    let pull = net.call(
        node,
        "GET",
        &format!("/pulls/{}", a.body["id"]),
        Some(&data_user),
        None,
    )?;
    assert_eq!(pull.body["started_by"], "shiyong", "{}", pull.body);
    let out = pull.body["out"].as_str().unwrap_or_default();
    assert!(out.ends_with("exchange/shiyong/x.csv"), "{out}");
    let key_file = net.nodes[node].dir.join("node.key");
    let a = net.call(
        node,
        "POST",
        "/datasets",
        Some(cataloguer),
        Some(&json!({"code": "301001/000001", "path": key_file, "file": true})),
    )?;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(net.nodes[node].dir.join("exchange").is_dir());
    // An administrator cannot give themselves other roles (to approve) or reset their own
    // password past the old one.
    let admin = &tokens[0].1;
    for (path, body) in [
        ("/users/guanli/roles", json!({"roles": ["approver"]})),
        ("/users/guanli/password", json!({})),
        ("/users/guanli/disable", json!({})),
    ] {
        let a = net.call(node, "POST", path, Some(admin), Some(&body))?;
        assert_eq!(a.status, 403, "{path}: {}", a.body);
    }
    // The auditor sees who holds which role.
    let auditor_view = net.call(node, "GET", "/users", Some(&auditor), None)?;
    assert_eq!(auditor_view.status, 200, "{}", auditor_view.body);

    // Sign-out ends the session.
    assert_eq!(
        net.call(node, "POST", "/logout", Some(&auditor), None)?
            .status,
        204
    );
    assert_eq!(
        net.call(node, "GET", "/me", Some(&auditor), None)?.status,
        401
    );

    // Guessing is slowed: after five wrong passwords the account waits, even for the right one;
    // an unknown account answers like a known one.
    for account in ["shenji", "nosuchperson"] {
        for _ in 0..6 {
            let a = net.call(
                node,
                "POST",
                "/login",
                Some(""),
                Some(&json!({"account": account, "password": "Wrong-password-1"})),
            )?;
            assert!(a.status == 401 || a.status == 429, "{}", a.body);
        }
        let a = net.call(
            node,
            "POST",
            "/login",
            Some(""),
            Some(&json!({"account": account, "password": pw})),
        )?;
        assert_eq!(a.status, 429, "{account}: {}", a.body);
        assert!(a.retry_after.is_some_and(|s| s >= 1));
    }

    // The probes answer without a token: health, and Prometheus metrics that count what the
    // node did (the entries published above, the refused sign-ins).
    let h = net.call(node, "GET", "/healthz", Some(""), None)?;
    assert_eq!(
        (h.status, h.body["status"].as_str()),
        (200, Some("ok")),
        "{}",
        h.body
    );
    let m = net.call(node, "GET", "/metrics", Some(""), None)?;
    assert_eq!(m.status, 200);
    let text = m.body.as_str().unwrap_or_default();
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    };
    assert!(value("huitong_catalogue_entries") >= Some(2.0), "{text}");
    assert!(value("huitong_members") >= Some(3.0), "{text}");
    assert!(
        text.contains("# TYPE huitong_entries_accepted counter"),
        "{text}"
    );
    assert!(
        text.contains("# HELP huitong_members Members in the charter.\n"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"), "{text}");

    // Oversized and malformed bodies are refused before any work.
    let big = json!({"account": "x".repeat(2 * 1024 * 1024), "password": "y"});
    // The node answers 413 as soon as it sees the length; it may close the connection while the
    // client is still sending, which the client reports as the connection closed: refused either
    // way, and the node goes on answering.
    match net.call(node, "POST", "/login", Some(""), Some(&big)) {
        Ok(a) => assert_eq!(a.status, 413, "{}", a.body),
        Err(e) => assert!(
            format!("{e:#}").contains("connection closed") || format!("{e:#}").contains("reset"),
            "{e:#}"
        ),
    }
    // The node goes on answering. The client's pooled connection may be the one the node
    // closed: the first request on it can fail, so this waits (bounded) for an answer.
    wait_until(Duration::from_secs(10), "the node answering again", || {
        Ok(net
            .call(node, "GET", "/healthz", Some(""), None)
            .is_ok_and(|r| r.status == 200))
    })?;
    let a = net.call(
        node,
        "POST",
        "/login",
        Some(""),
        Some(&json!({"account": 1})),
    )?;
    assert!(
        (400..500).contains(&a.status) && a.status != 429,
        "{}",
        a.status
    );
    Ok(())
}

/// The people who apply and approve are named in the signed entries, so every node — the
/// consumer's, the provider's and the hub's — shows who took each step of the application;
/// steps the nodes take by themselves (the hub's acceptance, issuing, endorsing) name nobody.
#[test]
fn the_application_timeline_names_the_applicant_and_the_approver_on_every_node(
) -> anyhow::Result<()> {
    let mut f = start(2, 2)?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let (hub, provider, consumer) = (0, 1, 2);
    let code = "301001/000051";
    huitong_tests::data::publish_table_entry(
        net,
        &dir,
        provider,
        51,
        "有条件共享",
        Some("仅限核验"),
    )?;
    wait_until(WAIT, "the entry on the consumer", || {
        let r = net.get(consumer, "/catalogue?code=301001%2F000051")?;
        Ok(r["records"].as_array().is_some_and(|a| !a.is_empty()))
    })?;
    let user = add_user(net, consumer, "zhangsan", "张三", "data_user")?;
    let user = sign_in(net, consumer, "zhangsan", &user)?;
    let approver = add_user(net, provider, "lisi", "李四", "approver")?;
    let approver = sign_in(net, provider, "lisi", &approver)?;

    let a = net.call(
        consumer,
        "POST",
        "/applications",
        Some(&user),
        Some(
            &json!({"code": code, "fields": ["编号", "姓名"], "purpose": "低保审核",
                     "basis": "社会救助暂行办法", "until": "2099-12-31"}),
        ),
    )?;
    assert_eq!(a.status, 200, "{}", a.body);
    let id = a.body["id"].as_str().unwrap_or_default().to_owned();
    huitong_tests::workflow::wait_state(net, provider, "--incoming", &id, "accepted")?;
    // The approver's inbox shows the 办理时限: 5 working days from the hub's acceptance.
    let incoming = huitong_tests::workflow::apps(net, provider, "--incoming")?;
    let app = incoming
        .iter()
        .find(|a| a["id"] == id.as_str())
        .ok_or_else(|| anyhow::anyhow!("{id} not incoming"))?;
    let left = app["deadline"]["working_days_left"].as_i64();
    assert!(matches!(left, Some(4..=5)), "{app}");
    let out = cli_ok(net, provider, &["applications", "--incoming"])?;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("working days left"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let a = net.call(
        provider,
        "POST",
        &format!("/applications/{id}/approve"),
        Some(&approver),
        Some(&json!({})),
    )?;
    assert_eq!(a.status, 200, "{}", a.body);
    for i in [consumer, provider, hub] {
        wait_until(WAIT, "the granted application with its people", || {
            let all = net.get(i, "/applications")?;
            let Some(app) = all
                .as_array()
                .and_then(|all| all.iter().find(|a| a["id"] == id.as_str()).cloned())
            else {
                return Ok(false);
            };
            if app["state"] != "granted" {
                return Ok(false);
            }
            let who = |state: &str| -> Vec<Value> {
                app["timeline"]
                    .as_array()
                    .map(|t| {
                        t.iter()
                            .filter(|s| s["state"] == state)
                            .map(|s| s["by"].clone())
                            .collect()
                    })
                    .unwrap_or_default()
            };
            assert_eq!(
                who("submitted"),
                [json!({"account": "zhangsan", "name": "张三"})]
            );
            assert_eq!(who("accepted"), [Value::Null], "the hub accepts by itself");
            assert_eq!(
                who("approved").first(),
                Some(&json!({"account": "lisi", "name": "李四"})),
                "{app}"
            );
            assert_eq!(
                who("granted"),
                [Value::Null],
                "the provider endorses by itself"
            );
            assert!(
                app["deadline"].is_null(),
                "decided: no deadline any more: {app}"
            );
            Ok(true)
        })?;
    }
    // A pull by the data user names them in the receipt, which the hub's auditors see.
    let csv = huitong_tests::data::table_csv(&dir.join("t.csv"), 200, 0..0)?;
    huitong_tests::data::publish(net, provider, code, &csv, &[])?;
    huitong_tests::data::wait_version(net, consumer, code, 1)?;
    let a = net.call(
        consumer,
        "POST",
        "/pulls",
        Some(&user),
        Some(&json!({"code": code, "out": "t.csv"})),
    )?;
    assert_eq!(a.status, 200, "{}", a.body);
    // A colleague holds no grant of their own: neither zhangsan's (named) nor the node's serves
    // them (grants follow the person who applied).
    let colleague = add_user(net, consumer, "wangwu", "王五", "data_user")?;
    let colleague = sign_in(net, consumer, "wangwu", &colleague)?;
    let a = net.call(
        consumer,
        "POST",
        "/pulls",
        Some(&colleague),
        Some(&json!({"code": code, "out": "w.csv", "grant": id})),
    )?;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.body["error"]
        .as_str()
        .unwrap_or_default()
        .contains("not one of yours"));
    // Nor a token in hand (it may be anyone's).
    let a = net.call(
        consumer,
        "POST",
        "/pulls",
        Some(&colleague),
        Some(&json!({"code": code, "out": "w.csv", "token": "AAAA"})),
    )?;
    assert_eq!(a.status, 403, "{}", a.body);
    let a = net.call(
        consumer,
        "POST",
        "/pulls",
        Some(&colleague),
        Some(&json!({"code": code, "out": "w.csv"})),
    )?;
    if a.status == 200 {
        let pull = a.body["id"].as_u64().unwrap_or_default();
        wait_until(
            WAIT,
            "the colleague's pull refused for want of a grant",
            || {
                let v = net.call(
                    consumer,
                    "GET",
                    &format!("/pulls/{pull}"),
                    Some(&colleague),
                    None,
                )?;
                Ok(v.body["phase"] == "failed"
                    && v.body["error"]
                        .as_str()
                        .is_some_and(|e| e.contains("no grant of your own")))
            },
        )?;
    } else {
        assert!((400..500).contains(&a.status), "{}", a.body);
    }
    wait_until(WAIT, "the hub's receipt naming who pulled", || {
        let r = net.get(hub, "/audit/receipts")?;
        Ok(r.as_array().is_some_and(|all| {
            all.iter()
                .any(|x| x["code"] == code && x["by"]["account"] == "zhangsan")
        }))
    })?;

    // The CLI shows them too.
    let out = cli_ok(net, consumer, &["applications", "--outgoing"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("submitted by 张三 (zhangsan)") && text.contains("approved by 李四 (lisi)"),
        "{text}"
    );
    Ok(())
}
