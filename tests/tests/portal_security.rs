//! The portal's HTTP side against a real node (issue #11, point 13): every page checked for its
//! role from the route table, no session sent to sign-in (or refused for a POST), a form without
//! its CSRF token or from another site refused, no session fixation, sign-in guessing slowed,
//! oversized and malformed forms refused, and the pages' security headers. The hub's
//! administrator reads the audit status read-only, without records or receipts.

use std::collections::HashMap;

use huitong_node::http::authz::Need;
use huitong_node::http::portal::PAGES;
use huitong_testnet::Testnet;
use huitong_tests::{add_user, session, start};
use reqwest::blocking::{Client, Response};

/// The portal's base URL and the name of its session cookie (scoped by port).
fn portal(net: &Testnet, i: usize) -> anyhow::Result<(String, String)> {
    let addr = net
        .portal_addr(i)
        .ok_or_else(|| anyhow::anyhow!("no portal address"))?;
    let port = addr.rsplit(':').next().unwrap_or_default().to_string();
    Ok((format!("http://{addr}"), format!("huitong_session_{port}")))
}

fn client() -> anyhow::Result<Client> {
    Ok(Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?)
}

/// The login form's one-time token and the cookie that carries it, from `GET /login`.
fn login_form(c: &Client, base: &str) -> anyhow::Result<(String, String)> {
    let r = c.get(format!("{base}/login")).send()?;
    let cookie = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("huitong_login_"))
        .and_then(|v| v.split(';').next())
        .unwrap_or_default()
        .to_string();
    let html = r.text()?;
    let nonce = html
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap_or_default()
        .to_string();
    anyhow::ensure!(
        !cookie.is_empty() && !nonce.is_empty(),
        "no login token: {html}"
    );
    Ok((cookie, nonce))
}

fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_page_checks_its_role_and_forms_are_protected() -> anyhow::Result<()> {
    let mut f = start(1, 2)?;
    let net = &mut f.net;
    let node = 1;
    let roles = ["admin", "cataloguer", "approver", "data_user", "auditor"];
    let mut sessions = HashMap::new();
    for (n, role) in roles.iter().enumerate() {
        let account = format!("user{n}");
        let pw = add_user(net, node, &account, &format!("用户{n}"), role)?;
        sessions.insert(
            *role,
            (
                account.clone(),
                pw.clone(),
                session(net, node, &account, &pw)?,
            ),
        );
    }
    let (base, cookie_name) = portal(net, node)?;
    let c = client()?;

    // No session: a page sends to sign-in (coming back to it), a POST is refused.
    let r = c.get(format!("{base}/catalogue?q=a")).send()?;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(location(&r), "/login?next=%2Fcatalogue%3Fq%3Da");
    let r = c
        .post(format!("{base}/apply"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("code=x")
        .send()?;
    assert_eq!(r.status().as_u16(), 401);

    // Every page for every role, from the table the router is checked against.
    for (method, path, need) in PAGES {
        if *path == "/logout" || *path == "/login" {
            continue;
        }
        let url = format!(
            "{base}{}",
            path.replace("{id}", "7")
                .replace("{file}", "portal.css")
                .replace("{account}", "nobody")
                .replace("{action}", "disable")
                .replace("{name}", "nobody")
        );
        for role in roles {
            let (_, _, (token, csrf)) = &sessions[role];
            let cookie = format!("{cookie_name}={token}");
            let r = match *method {
                "GET" => c.get(&url).header("cookie", cookie).send()?,
                _ => c
                    .post(&url)
                    .header("cookie", cookie)
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(format!("csrf={csrf}"))
                    .send()?,
            };
            let allowed = match need {
                Need::Public | Need::SignedIn => true,
                Need::AnyOf(rs) => rs.iter().any(|r| r.as_str() == role),
                // This node is a department's, not the hub.
                Need::AnyOfOrOnHub { anywhere, .. } => anywhere.iter().any(|r| r.as_str() == role),
            };
            let status = r.status().as_u16();
            if allowed {
                assert!(
                    status != 403 && status != 401 && !location(&r).starts_with("/login"),
                    "{role} {method} {path}: {status} {}",
                    r.text().unwrap_or_default()
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {path}");
                let body = r.text()?;
                assert!(body.contains("may not do this"), "{role} {path}: {body}");
            }
        }
    }

    // On the hub its administrator (the operator) reads the audit log's status and alarms,
    // and nothing about what people did: no record lookups, no receipts, no proofs.
    let hub_pw = add_user(net, 0, "yunwei", "孙运维", "admin")?;
    let (hub_token, _) = session(net, 0, "yunwei", &hub_pw)?;
    let (hub_base, hub_cookie) = portal(net, 0)?;
    let hub_cookie = format!("{hub_cookie}={hub_token}");
    let r = c
        .get(format!("{hub_base}/audit?record=x&code=301001%2F000001"))
        .header("cookie", &hub_cookie)
        .send()?;
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text()?;
    for shown in ["id=\"operator-view\"", "id=\"log-size\"", "href=\"/audit\""] {
        assert!(html.contains(shown), "{shown}: {html}");
    }
    for hidden in ["id=\"lookup\"", "id=\"receipts\"", "id=\"records\""] {
        assert!(!html.contains(hidden), "{hidden}: {html}");
    }
    let r = c
        .get(format!("{hub_base}/audit/proof?id=x"))
        .header("cookie", &hub_cookie)
        .send()?;
    assert_eq!(r.status().as_u16(), 403);

    let (_, _, (token, csrf)) = &sessions["data_user"];
    let cookie = format!("{cookie_name}={token}");
    let post = |body: String, extra: Option<(&str, &str)>| -> anyhow::Result<Response> {
        let mut b = c
            .post(format!("{base}/apply"))
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some((k, v)) = extra {
            b = b.header(k, v);
        }
        Ok(b.send()?)
    };
    // A form without the CSRF token, with a wrong one, or from another site: refused.
    for (body, extra) in [
        ("code=301001%2F000001".to_string(), None),
        ("code=301001%2F000001&csrf=wrong".to_string(), None),
        (
            format!("code=x&csrf={csrf}"),
            Some(("origin", "http://evil.example")),
        ),
        (
            format!("code=x&csrf={csrf}"),
            Some(("sec-fetch-site", "cross-site")),
        ),
    ] {
        let r = post(body.clone(), extra)?;
        assert_eq!(r.status().as_u16(), 403, "{body} {extra:?}");
        assert!(r.text()?.contains("表单已过期或来自其他网站"));
    }
    // The right token passes the gate (the handler then says what is wrong with the form).
    let r = post(format!("code=x&csrf={csrf}"), None)?;
    assert_eq!(r.status().as_u16(), 404, "{}", r.text()?);
    // Oversized and malformed forms.
    let r = post(
        format!("csrf={csrf}&purpose={}", "x".repeat(100 * 1024)),
        None,
    )?;
    assert_eq!(r.status().as_u16(), 413);
    // A new connection: the node may close the one it refused the oversized form on, and a
    // pooled client could send the next request on it.
    let r = client()?
        .post(format!("{base}/apply"))
        .header("cookie", &cookie)
        .header("content-type", "application/json")
        .body(format!("{{\"csrf\":\"{csrf}\"}}"))
        .send()?;
    assert_eq!(r.status().as_u16(), 415);

    // Uploads are multipart, streamed: the session's token must be the first part, so nothing
    // is read from a forged upload; a form-encoded upload is refused.
    let (_, _, (ctoken, ccsrf)) = &sessions["cataloguer"];
    let ccookie = format!("{cookie_name}={ctoken}");
    let upload = |parts: &[(&str, Option<&str>, &str)]| -> anyhow::Result<(u16, String)> {
        let boundary = "----huitong-test-boundary";
        let mut body = String::new();
        for (name, file, value) in parts {
            body.push_str(&format!("--{boundary}\r\n"));
            match file {
                Some(f) => body.push_str(&format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: text/csv\r\n\r\n"
                )),
                None => body.push_str(&format!(
                    "Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"
                )),
            }
            body.push_str(value);
            body.push_str("\r\n");
        }
        body.push_str(&format!("--{boundary}--\r\n"));
        let r = c
            .post(format!("{base}/upload"))
            .header("cookie", &ccookie)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()?;
        Ok((r.status().as_u16(), r.text()?))
    };
    let csv = Some("t.csv");
    for parts in [
        vec![
            ("csrf", None, "wrong"),
            ("code", None, "301001/000001"),
            ("file", csv, "a\n"),
        ],
        vec![
            ("code", None, "301001/000001"),
            ("csrf", None, ccsrf.as_str()),
            ("file", csv, "a\n"),
        ],
        vec![("file", csv, "a\n"), ("csrf", None, ccsrf.as_str())],
    ] {
        let (status, body) = upload(&parts)?;
        assert_eq!(status, 403, "{parts:?}: {body}");
        assert!(body.contains("表单已过期或来自其他网站"), "{body}");
    }
    // The right token passes; an entry that is not this node's is refused by name, and no file
    // is stored for it.
    let (status, body) = upload(&[
        ("csrf", None, ccsrf.as_str()),
        ("code", None, "301001/000999"),
        ("file", csv, "a\n"),
    ])?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("301001/000999"), "{body}");
    let exchange = net.nodes[node].dir.join("exchange").join("user1");
    let left = std::fs::read_dir(&exchange).map_or(0, |d| d.count());
    assert_eq!(
        left,
        0,
        "a refused upload left a file in {}",
        exchange.display()
    );
    let r = c
        .post(format!("{base}/upload"))
        .header("cookie", &ccookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={ccsrf}&code=301001%2F000001"))
        .send()?;
    assert_eq!(r.status().as_u16(), 415, "{}", r.text()?);

    // Session fixation: a session planted in the browser before sign-in ends at sign-in, and
    // the signed-in browser gets a new token.
    let (planted, _) = session(net, node, "user3", &sessions["data_user"].1)?;
    let (login_cookie, nonce) = login_form(&c, &base)?;
    let (account, pw, _) = &sessions["approver"];
    let r = c
        .post(format!("{base}/login"))
        .header("cookie", format!("{login_cookie}; {cookie_name}={planted}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "csrf={nonce}&account={account}&password={}&next=%2F",
            huitong_testnet::percent_encode(pw)
        ))
        .send()?;
    assert_eq!(r.status().as_u16(), 303);
    let set = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{cookie_name}=")))
        .unwrap_or_default()
        .to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(&planted), "{set}");
    let me = net.call(node, "GET", "/me", Some(&planted), None)?;
    assert_eq!(
        me.status, 401,
        "the planted session still works: {}",
        me.body
    );
    // Sign-in without the form's one-time token is refused.
    let r = c
        .post(format!("{base}/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "account={account}&password={}",
            huitong_testnet::percent_encode(pw)
        ))
        .send()?;
    assert_eq!(r.status().as_u16(), 403);

    // Guessing is slowed: five failures are free, the sixth locks the account, the seventh is
    // told to wait (the API's throttle, shared).
    let mut last = 0;
    for _ in 0..7 {
        let (login_cookie, nonce) = login_form(&c, &base)?;
        let r = c
            .post(format!("{base}/login"))
            .header("cookie", login_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "csrf={nonce}&account=user0&password=wrong-password-1"
            ))
            .send()?;
        last = r.status().as_u16();
    }
    assert_eq!(last, 429);

    // The API's OpenAPI document lists exactly the live routes (issue #11, point 11): every
    // documented operation is routed (without a token: 401 from the access check, or the
    // public route's own answer; an unrouted one would be 404/405), and every rule of the
    // access table is documented.
    let api = net
        .api_addr(node)
        .ok_or_else(|| anyhow::anyhow!("no API address"))?;
    let doc: serde_json::Value = c
        .get(format!("http://{api}/api/v1/openapi.json"))
        .send()?
        .json()?;
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{doc}"
    );
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "post"] {
            if item.get(method).is_none() {
                continue;
            }
            documented.insert((method.to_uppercase(), path.clone()));
            let url = format!(
                "http://{api}{}",
                path.replace("{account}", "nobody").replace("{id}", "7")
            );
            let r = match method {
                "get" => c.get(&url).send()?,
                _ => c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()?,
            };
            let status = r.status().as_u16();
            assert!(
                status != 404 && status != 405,
                "{method} {path} is documented but not routed: {status}"
            );
        }
    }
    let ruled: std::collections::BTreeSet<(String, String)> = huitong_node::http::authz::RULES
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(
        documented, ruled,
        "the document and the access table differ"
    );

    // The pages' headers.
    let r = c.get(format!("{base}/")).header("cookie", &cookie).send()?;
    let h = r.headers();
    assert!(h["content-security-policy"]
        .to_str()?
        .contains("frame-ancestors 'none'"));
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    // Another host name (DNS rebinding) is refused.
    let r = c
        .get(format!("{base}/"))
        .header("cookie", &cookie)
        .header("host", "evil.example")
        .send()?;
    assert_eq!(r.status().as_u16(), 421);
    Ok(())
}
