//! `huitong testnet up|status|down` as a user runs it: a second `up` is refused, `status --json`
//! lists every node, and `down` leaves no process behind.

use std::path::PathBuf;
use std::process::Command;

fn huitong() -> PathBuf {
    // The node binary sits beside this package's binary in the target directory.
    PathBuf::from(env!("CARGO_BIN_EXE_huitong-testnet")).with_file_name("huitong")
}

fn testnet(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_huitong-testnet"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .env("HUITONG_BIN", huitong())
        .output()
        .unwrap()
}

#[test]
fn up_status_second_up_refused_down_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tn");
    // Below Linux's ephemeral range (32768–60999), as in the other tests: a node must not find
    // its port taken by another process's outgoing connection.
    let port = (20000 + rand::random::<u16>() % 12000).to_string();
    let up = Command::new(env!("CARGO_BIN_EXE_huitong-testnet"))
        .args(["up", "--departments", "2", "--base-port", &port, "--dir"])
        .arg(&dir)
        .env("HUITONG_BIN", huitong())
        .output()
        .unwrap();
    let guard = Down(dir.clone());
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let stdout = String::from_utf8_lossy(&up.stdout);
    assert!(
        stdout.contains("海门区数据局") && stdout.contains("南通市数据局"),
        "{stdout}"
    );

    // A sign-in per role is printed, and works on every node with that role.
    let logins: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("logins.json")).unwrap()).unwrap();
    assert_eq!(logins.len(), 5);
    let mut t = huitong_testnet::Testnet::load(&dir).unwrap();
    for l in &logins {
        let (account, password) = (
            l["account"].as_str().unwrap(),
            l["password"].as_str().unwrap(),
        );
        assert!(
            stdout.contains(account) && stdout.contains(password),
            "{stdout}"
        );
        for i in 0..t.nodes.len() {
            let a = t
                .call(
                    i,
                    "POST",
                    "/login",
                    Some(""),
                    Some(&serde_json::json!({"account": account, "password": password})),
                )
                .unwrap();
            assert_eq!(a.status, 200, "{account} on node {i}: {}", a.body);
            assert_eq!(a.body["me"]["roles"][0], l["role"]);
        }
    }

    let status = testnet(&dir, &["status", "--json"]);
    let nodes: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    for n in nodes {
        for k in ["name", "role", "dir", "peer_id", "api"] {
            assert!(n[k].is_string(), "{k} missing in {n}");
        }
        assert_eq!(n["running"], true);
    }
    let pids: Vec<u64> = nodes.iter().filter_map(|n| n["pid"].as_u64()).collect();

    let again = testnet(&dir, &["up"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    // The demo entries of the members present were published and replicated.
    let civil = dir.join("nodes/market");
    let out = Command::new(huitong())
        .arg("--dir")
        .arg(&civil)
        .args(["catalogue", "search", "人口", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("人口基本信息"));

    drop(guard);
    for pid in pids {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid),
            "node {pid} still running after down"
        );
    }
}

fn is_zombie(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Runs `down` even when an assertion fails, so no process outlives the test.
struct Down(PathBuf);

impl Drop for Down {
    fn drop(&mut self) {
        let out = testnet(&self.0, &["down"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
