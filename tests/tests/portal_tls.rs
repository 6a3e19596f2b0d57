//! The portal over HTTPS (issue #11, point 10): a node given `portal.tls_cert`, `tls_key` and
//! `public_origin` serves the portal with that certificate; a client that trusts it signs in
//! by the public name and gets `Secure` cookies; another host name is refused (421); plain
//! HTTP on the port gets no page; a certificate that does not parse stops the node with an
//! error naming the setting.

use std::io::Write;

use huitong_tests::{start_prepared, wait_until};

/// The node's `huitong.toml` with `[portal]` changed by `edit`.
fn edit_portal(dir: &std::path::Path, edit: impl FnOnce(&mut toml::Table)) -> anyhow::Result<()> {
    let path = dir.join("huitong.toml");
    let mut config: toml::Table = std::fs::read_to_string(&path)?.parse()?;
    let portal = config
        .entry("portal")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(t) = portal {
        edit(t);
    }
    std::fs::write(&path, toml::to_string(&config)?)?;
    Ok(())
}

/// `GET path` over TLS to `port` on loopback, naming `host` (SNI `portal.test`): the raw
/// answer.
async fn get(
    roots: &rustls::RootCertStore,
    port: u16,
    host: &str,
    path: &str,
) -> anyhow::Result<String> {
    huitong_tests::tls::get(roots, port, ("portal.test", host), path, &[]).await
}

#[test]
fn the_portal_serves_https_by_its_public_name() -> anyhow::Result<()> {
    let cert = rcgen::generate_simple_self_signed(vec!["portal.test".to_string()])?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let node = 1;
    let mut f = start_prepared(1, 2, &[], |net| {
        let dir = net.nodes[node].dir.clone();
        std::fs::write(dir.join("portal.crt"), cert.cert.pem())?;
        let mut key = std::fs::File::create(dir.join("portal.key"))?;
        key.write_all(cert.key_pair.serialize_pem().as_bytes())?;
        edit_portal(&dir, |p| {
            p.insert("listen".into(), format!("127.0.0.1:{port}").into());
            p.insert("tls_cert".into(), "portal.crt".into());
            p.insert("tls_key".into(), "portal.key".into());
            p.insert(
                "public_origin".into(),
                format!("https://portal.test:{port}").into(),
            );
        })
    })?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone())?;
    let rt = tokio::runtime::Runtime::new()?;
    let public = format!("portal.test:{port}");

    // By its public name: the sign-in page, with Secure cookies.
    let answer = rt.block_on(get(&roots, port, &public, "/login"))?;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let cookie = answer
        .lines()
        .find(|l| {
            l.to_ascii_lowercase()
                .starts_with("set-cookie: huitong_login")
        })
        .unwrap_or_default();
    assert!(
        cookie.contains("Secure") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    // Another name (DNS rebinding) is refused.
    let answer = rt.block_on(get(&roots, port, "evil.example", "/login"))?;
    assert!(answer.starts_with("HTTP/1.1 421"), "{answer}");
    // Plain HTTP on the HTTPS port gets no page.
    let plain = reqwest::blocking::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("http://127.0.0.1:{port}/login"))
        .send();
    assert!(
        plain.as_ref().map_or(true, |r| !r.status().is_success()),
        "plain HTTP answered: {plain:?}"
    );

    // A certificate that is not PEM: the node refuses to start, naming the setting.
    let net = &mut f.net;
    net.stop(node, false)?;
    std::fs::write(net.nodes[node].dir.join("portal.crt"), "not a certificate")?;
    net.start(node)?;
    wait_until(
        std::time::Duration::from_secs(60),
        "the node to refuse its certificate",
        || Ok(net.exited(node).is_some()),
    )?;
    let log = std::fs::read_to_string(net.nodes[node].dir.join("node.log")).unwrap_or_default();
    let stderr =
        std::fs::read_to_string(net.nodes[node].dir.join("stderr.log")).unwrap_or_default();
    assert!(
        format!("{log}{stderr}").contains("portal.tls_cert"),
        "no error naming portal.tls_cert in the node's log: {log}{stderr}"
    );
    Ok(())
}
