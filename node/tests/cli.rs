//! The `huitong` binary's own commands that need no running federation.

use std::process::Command;

fn huitong() -> Command {
    Command::new(env!("CARGO_BIN_EXE_huitong"))
}

/// `huitong --dir DIR init --name … --org-code CODE [extra…]`.
fn init(dir: &std::path::Path, name: &str, code: &str, extra: &[&str]) -> std::process::Output {
    huitong()
        .arg("--dir")
        .arg(dir)
        .args(["init", "--name", name, "--org-code", code])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn init_writes_a_0600_key_validates_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("n");
    let bad = init(&node, "海门区公安局", "91350100M000100Y44", &[]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr)
        .contains("--org-code: check character is '4' but GB 32100 gives '3'"));
    assert!(
        !node.join("node.key").exists(),
        "nothing written on bad input"
    );

    let ok = init(&node, "海门区公安局", "91350100M000100Y43", &["--json"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(v["peer_id"].as_str().unwrap().starts_with("12D3KooW"));
    let mode = std::fs::metadata(node.join("node.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    let config = std::fs::read_to_string(node.join("huitong.toml")).unwrap();
    assert!(config.contains("org_code = \"91350100M000100Y43\""));

    let again = init(&node, "x", "91350100M000100Y43", &[]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("refusing to overwrite"));
}

#[test]
fn client_commands_without_a_node_say_how_to_start_one() {
    let dir = tempfile::tempdir().unwrap();
    let out = huitong()
        .arg("--dir")
        .arg(dir.path())
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("huitong run --dir"));
}

#[test]
fn a_broken_config_names_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("n");
    let ok = init(&node, "海门区公安局", "91350100M000100Y43", &[]);
    assert!(ok.status.success());
    let path = node.join("huitong.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("127.0.0.1:7410", "0.0.0.0:7410");
    std::fs::write(&path, text).unwrap();
    let out = huitong()
        .arg("--dir")
        .arg(&node)
        .arg("run")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("huitong.toml: key `api.listen`"), "{err}");
}
