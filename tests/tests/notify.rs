//! Webhook notifications (issue #11, point 9) from real nodes to a real HTTP receiver: the
//! provider's gateway hears of a new application to decide, the consumer's of the grant, both
//! of the revocation, and nothing is sent for what happened before a node started.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use huitong_tests::workflow::{apply, wait_state};
use huitong_tests::{cli_ok, data, start_prepared, wait_until};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// `(path, JSON body)` of every POST received.
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// An HTTP receiver on loopback that keeps every POST and answers 200.
fn receiver() -> anyhow::Result<(u16, Received)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let got: Received = Arc::default();
    let keep = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reader = BufReader::new(match stream.try_clone() {
                Ok(s) => s,
                Err(_) => continue,
            });
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
            let mut length = 0usize;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length.min(1 << 20)];
            if reader.read_exact(&mut body).is_ok() {
                if let Ok(v) = serde_json::from_slice(&body) {
                    keep.lock().unwrap().push((path, v));
                }
            }
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    Ok((port, got))
}

fn heard(got: &Mutex<Vec<(String, Value)>>, path: &str, kind: &str, id: &str) -> bool {
    got.lock()
        .unwrap()
        .iter()
        .any(|(p, v)| p == path && v["kind"] == kind && v["application"] == id)
}

#[test]
fn gateways_hear_of_applications_decisions_and_revocations() -> anyhow::Result<()> {
    let (port, got) = receiver()?;
    let (provider, consumer) = (1, 2);
    let mut f = start_prepared(2, 2, &[], |net| {
        for (i, path) in [(provider, "/provider"), (consumer, "/consumer")] {
            let toml = net.nodes[i].dir.join("huitong.toml");
            let mut text = std::fs::read_to_string(&toml)?;
            text.push_str(&format!(
                "\n[notify]\nwebhook = \"http://127.0.0.1:{port}{path}\"\n"
            ));
            std::fs::write(&toml, text)?;
        }
        Ok(())
    })?;
    let dir = f.tmp.path().to_path_buf();
    let net = &mut f.net;
    let code = "301001/000051";
    data::publish_table_entry(net, &dir, provider, 51, "有条件共享", Some("仅限核验"))?;
    let csv = data::table_csv(&dir.join("t.csv"), 100, 0..0)?;
    data::publish(net, provider, code, &csv, &[])?;
    data::wait_version(net, consumer, code, 1)?;

    let id = apply(net, consumer, code, "编号,姓名")?;
    wait_state(net, provider, "--incoming", &id, "accepted")?;
    wait_until(
        WAIT,
        "the provider's gateway to hear of the application",
        || Ok(heard(&got, "/provider", "application.incoming", &id)),
    )?;
    let incoming = got
        .lock()
        .unwrap()
        .iter()
        .find(|(_, v)| v["kind"] == "application.incoming")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert_eq!(incoming["code"], code, "{incoming}");
    assert!(
        incoming["text"]
            .as_str()
            .unwrap_or_default()
            .contains("待审批"),
        "{incoming}"
    );

    cli_ok(net, provider, &["approve", &id])?;
    wait_until(WAIT, "the consumer's gateway to hear of the grant", || {
        Ok(heard(&got, "/consumer", "application.decided", &id))
    })?;
    cli_ok(net, provider, &["revoke", &id, "--reason", "测试撤销"])?;
    for path in ["/provider", "/consumer"] {
        wait_until(WAIT, "both gateways to hear of the revocation", || {
            Ok(heard(&got, path, "application.revoked", &id))
        })?;
    }
    // Nothing about this application went to the wrong side.
    assert!(!heard(&got, "/consumer", "application.incoming", &id));
    assert!(!heard(&got, "/provider", "application.decided", &id));

    // A restart sends nothing about what the node already knew.
    let before = got.lock().unwrap().len();
    net.stop(provider, false)?;
    net.start(provider)?;
    net.wait_healthy(WAIT)?;
    let later = apply(net, consumer, code, "编号")?;
    wait_until(
        WAIT,
        "the new application to reach the provider's gateway",
        || Ok(heard(&got, "/provider", "application.incoming", &later)),
    )?;
    let after: Vec<Value> = got.lock().unwrap()[before..]
        .iter()
        .map(|(_, v)| v.clone())
        .collect();
    assert!(
        after.iter().all(|v| v["application"] == later.as_str()),
        "a restart re-announced old events: {after:?}"
    );
    Ok(())
}
