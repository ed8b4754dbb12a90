//! Operator signatures on admin changes, end to end: real nodes, real keys from
//! `infermesh keygen`, real HTTP. A refused change is a 401 with a reason and leaves the node
//! exactly as it was.

mod web_support;

use std::time::Duration;

use serde_json::{json, Value};
use web_support::*;

fn backend(id: &str, url_port: u16) -> String {
    json!({"id": id, "driver": "openai", "url": format!("http://127.0.0.1:{url_port}/v1"),
           "models": [{"name": "m"}]})
    .to_string()
}

fn backend_ids(node: &Node) -> Vec<String> {
    let (code, list) = get_json(&format!("{}/admin/v1/nodes", node.url));
    assert_eq!(code, 200, "reads stay open: {list}");
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_string())
        .collect()
}

fn assert_refused(resp: (u16, Value), want: &str) {
    assert_eq!(resp.0, 401, "{}", resp.1);
    let msg = resp.1["error"].as_str().unwrap_or_default();
    assert!(
        msg.contains(want),
        "401 reason `{msg}` should mention `{want}`"
    );
}

#[test]
fn a_signature_is_for_one_node_and_one_run_of_it() {
    let keys = tempfile::tempdir().unwrap();
    let alice = keygen(keys.path(), "alice");
    let args = ["--client"];
    let mut a = Node::start(Some(&alice.snippet), &args, &[]);
    let b = Node::start(Some(&alice.snippet), &args, &[]);
    let path = "/admin/v1/nodes";
    let body = backend("ext", 9);
    let h = infermesh_api::auth::sign_request(
        &alice.key,
        &node_id_of(&a.url),
        "POST",
        path,
        body.as_bytes(),
        now_ms(),
    );
    let (code, r) = send("POST", &a.url, path, &body, Some(&h));
    assert_eq!(code, 201, "{r}");
    // The same signed request replayed to another node of the same operator: refused.
    assert_refused(
        send("POST", &b.url, path, &body, Some(&h)),
        "signature does not match",
    );
    assert!(backend_ids(&b).is_empty());
    // A removes it (signed), restarts with an empty replay cache, and the first request is
    // replayed within its 60 s window: refused, nothing re-registered.
    let (code, r) = send_signed(
        &alice.key,
        "DELETE",
        &a.url,
        "/admin/v1/nodes/ext",
        "",
        now_ms(),
    );
    assert_eq!(code, 200, "{r}");
    a.kill();
    let dir = std::mem::replace(&mut a.data_dir, tempfile::tempdir().unwrap());
    let a = Node::start_in(dir, None, &args, &[]);
    assert_refused(
        send("POST", &a.url, path, &body, Some(&h)),
        "signed before the node (re)started",
    );
    assert!(backend_ids(&a).is_empty(), "the replay changed nothing");
}

#[test]
fn admin_changes_need_a_fresh_valid_operator_signature() {
    let keys = tempfile::tempdir().unwrap();
    let alice = keygen(keys.path(), "alice");
    let mallory = keygen(keys.path(), "mallory");
    let node = Node::start(
        Some(&alice.snippet),
        &["--client", "--name", "guarded"],
        &[],
    );
    node.wait_log(
        &["admin changes require an operator signature", "alice"],
        Duration::from_secs(10),
    );
    let base = node.url.as_str();
    let path = "/admin/v1/nodes";
    let body = backend("ext", 9);
    let before = backend_ids(&node);
    assert!(before.is_empty());

    // Unsigned, wrong key, forged body, expired, from the future, garbage: all 401, no change.
    assert_refused(send("POST", base, path, &body, None), "missing");
    assert_refused(
        send_signed(&mallory.key, "POST", base, path, &body, now_ms()),
        "is not accepted by this node",
    );
    let other_body = backend("other", 9);
    let h = infermesh_api::auth::sign_request(
        &alice.key,
        &node_id_of(base),
        "POST",
        path,
        other_body.as_bytes(),
        now_ms(),
    );
    assert_refused(
        send("POST", base, path, &body, Some(&h)),
        "signature does not match",
    );
    assert_refused(
        send_signed(&alice.key, "POST", base, path, &body, now_ms() - 120_000),
        "old",
    );
    assert_refused(
        send_signed(&alice.key, "POST", base, path, &body, now_ms() + 120_000),
        "in the future",
    );
    assert_refused(
        send("POST", base, path, &body, Some("Infermesh nonsense")),
        "malformed",
    );
    // Signed for another path (the test route) and replayed against the register route.
    let h = infermesh_api::auth::sign_request(
        &alice.key,
        &node_id_of(base),
        "POST",
        "/admin/v1/nodes/ext/test",
        body.as_bytes(),
        now_ms(),
    );
    assert_refused(
        send("POST", base, path, &body, Some(&h)),
        "signature does not match",
    );
    assert_eq!(
        backend_ids(&node),
        before,
        "a refused change changed nothing"
    );
    let on_disk = std::fs::read_to_string(node.data_dir.path().join("config.toml")).unwrap();
    assert!(!on_disk.contains("[[backend]]"), "{on_disk}");

    // Valid: registered.
    let h = infermesh_api::auth::sign_request(
        &alice.key,
        &node_id_of(base),
        "POST",
        path,
        body.as_bytes(),
        now_ms(),
    );
    let (code, r) = send("POST", base, path, &body, Some(&h));
    assert_eq!(code, 201, "{r}");
    assert_eq!(backend_ids(&node), ["ext"]);
    node.wait_log(
        &["admin change signed by operator", "alice"],
        Duration::from_secs(5),
    );

    // The same signed request again: replayed, refused, nothing changes.
    assert_refused(
        send("POST", base, path, &body, Some(&h)),
        "already accepted",
    );

    // A signed removal works once; its replay after re-registering removes nothing.
    let del = "/admin/v1/nodes/ext";
    let dh = infermesh_api::auth::sign_request(
        &alice.key,
        &node_id_of(base),
        "DELETE",
        del,
        b"",
        now_ms(),
    );
    let (code, r) = send("DELETE", base, del, "", Some(&dh));
    assert_eq!(code, 200, "{r}");
    assert!(backend_ids(&node).is_empty());
    let (code, r) = send_signed(&alice.key, "POST", base, path, &body, now_ms());
    assert_eq!(code, 201, "{r}");
    assert_refused(send("DELETE", base, del, "", Some(&dh)), "already accepted");
    assert_eq!(backend_ids(&node), ["ext"]);

    // Change and test need signatures too.
    let put = "/admin/v1/nodes/ext";
    assert_refused(send("PUT", base, put, &backend("ext", 10), None), "missing");
    let (code, r) = send_signed(&alice.key, "PUT", base, put, &backend("ext", 10), now_ms());
    assert_eq!(code, 200, "{r}");
    assert_refused(
        send("POST", base, "/admin/v1/nodes/ext/test", "", None),
        "missing",
    );
    // The config on disk says what the signed calls did, and the operator entry survived saves.
    let saved = std::fs::read_to_string(node.data_dir.path().join("config.toml")).unwrap();
    assert!(
        saved.contains("127.0.0.1:10/v1") && saved.contains("[[operator]]"),
        "{saved}"
    );

    // Wake is an admin change as well.
    assert_refused(
        send("POST", base, "/admin/v1/wakeable/any/wake", "", None),
        "missing",
    );

    // Reads stay open.
    assert_eq!(get_json(&format!("{base}/api/status")).0, 200);
    assert_eq!(get_json(&format!("{base}/metrics")).0, 200);
    // A dozen refusals from one address are one `warn` line (the first, with its reason): an
    // attacker hammering the admin port cannot flood the operator's log.
    node.wait_log(
        &["admin request refused", "missing", "127.0.0.1"],
        Duration::from_secs(5),
    );
    let refused: Vec<String> = strip_ansi(&node.stderr_text())
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("admin request refused"))
        .map(str::to_string)
        .collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert!(
        refused[0].contains("once per client address"),
        "{refused:?}"
    );
}

#[test]
fn without_operator_keys_changes_are_refused_with_the_way_out() {
    let node = Node::start(None, &["--client"], &[]);
    let (code, r) = send("POST", &node.url, "/admin/v1/nodes", &backend("x", 9), None);
    assert_eq!(code, 401, "{r}");
    assert_eq!(r["error"], infermesh_api::auth::NO_OPERATORS);
    assert!(backend_ids(&node).is_empty());
    node.wait_log(
        &["admin changes are refused", "infermesh keygen"],
        Duration::from_secs(5),
    );
}

#[test]
fn admin_open_accepts_unsigned_changes_and_says_so() {
    for (args, env) in [
        (vec!["--client", "--admin-open"], vec![]),
        (vec!["--client"], vec![("INFERMESH_ADMIN_OPEN", "1")]),
    ] {
        let node = Node::start(None, &args, &env);
        let (code, r) = send("POST", &node.url, "/admin/v1/nodes", &backend("x", 9), None);
        assert_eq!(code, 201, "{args:?} {env:?}: {r}");
        let warning = node.wait_log(&["WARN", "--admin-open"], Duration::from_secs(5));
        assert!(warning.contains("WITHOUT operator signatures"), "{warning}");
    }
    // INFERMESH_ADMIN_OPEN=0 (or empty) is the default, closed; `--admin-open=false` closes a
    // node even where the environment opens it (a test harness that opens every node).
    for (args, env) in [
        (vec!["--client"], vec![("INFERMESH_ADMIN_OPEN", "0")]),
        (vec!["--client"], vec![("INFERMESH_ADMIN_OPEN", "")]),
        (
            vec!["--client", "--admin-open=false"],
            vec![("INFERMESH_ADMIN_OPEN", "1")],
        ),
    ] {
        let node = Node::start(None, &args, &env);
        let (code, _) = send("POST", &node.url, "/admin/v1/nodes", &backend("x", 9), None);
        assert_eq!(code, 401, "{args:?} {env:?}");
    }
}

#[test]
fn a_broken_operator_entry_stops_the_node_with_its_name() {
    let cfg = "[[operator]]\nname = \"bob\"\npublic_key = \"abc\"\n";
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.toml"), cfg).unwrap();
    let out = std::process::Command::new(bin())
        .args(["up", "--client", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env_remove("INFERMESH_ADMIN_OPEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bob") && err.contains("public_key"), "{err}");
}
