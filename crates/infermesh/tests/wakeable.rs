//! Wakeable capacity end to end: `[[wakeable]]` entries in a real node's config, woken through
//! the signed admin API with real shell commands as the provider hook — one of which boots a real
//! `infermesh up` node that joins the mesh.

mod web_support;

use std::time::Duration;

use serde_json::Value;
use web_support::*;

/// Kills the node the wake hook started, however the test ends.
struct PidFile(std::path::PathBuf);

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill")
                .args(["-KILL", pid.trim()])
                .status();
        }
    }
}

fn wakeable(node: &Node) -> Vec<Value> {
    node.status()["wakeable"].as_array().unwrap().clone()
}

fn entry(node: &Node, id: &str) -> Option<Value> {
    wakeable(node).into_iter().find(|w| w["id"] == id)
}

fn wait_state(node: &Node, id: &str, state: &str, timeout: Duration) -> Value {
    wait_until(timeout, &format!("wakeable {id} to be {state}"), || {
        entry(node, id).filter(|w| w["state"] == state)
    })
}

fn metric(node: &Node, line_start: &str) -> String {
    let (_, _, text) = get_text(&format!("{}/metrics", node.url));
    text.lines()
        .find(|l| l.starts_with(line_start))
        .unwrap_or_else(|| panic!("no `{line_start}` in\n{text}"))
        .to_string()
}

#[test]
fn wakeable_machines_wake_fail_and_join_but_are_never_peers() {
    let keys = tempfile::tempdir().unwrap();
    let op = keygen(keys.path(), "ops");
    let state = tempfile::tempdir().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/wake_node.sh");
    let config = format!(
        r#"{snippet}
[[wakeable]]
id = "gpu-real"
provider = "script"
models = ["llama-70b"]
vram_gb = 80
wake_command = ["sh", "{script}", "{bin}", "{dir}"]
node_name = "woken-1"
grace_s = 60
timeout_s = 20

[[wakeable]]
id = "gpu-broken"
provider = "script"
models = ["llama-70b"]
wake_command = "echo contacting provider; echo 'quota exceeded for gpu-broken' >&2; exit 3"

[[wakeable]]
id = "gpu-silent"
provider = "script"
wake_command = "echo powered on"
grace_s = 2

[[wakeable]]
id = "gpu-hung"
provider = "script"
wake_command = "sleep 30"
timeout_s = 1
"#,
        snippet = op.snippet,
        bin = bin(),
        dir = state.path().display(),
    );
    let woken = PidFile(state.path().join("pid"));
    let node = Node::start(Some(&config), &["--client", "--name", "home"], &[]);
    let base = node.url.clone();
    let wake = |id: &str| {
        send_signed(
            &op.key,
            "POST",
            &base,
            &format!("/admin/v1/wakeable/{id}/wake"),
            "",
            now_ms(),
        )
    };

    // Declared, sleeping, and nowhere but `wakeable`.
    let s = node.status();
    let list = s["wakeable"].as_array().unwrap();
    assert_eq!(list.len(), 4, "{s}");
    assert!(list.iter().all(|w| w["state"] == "sleeping"), "{s}");
    let real = &list[0];
    assert_eq!(real["id"], "gpu-real");
    assert_eq!(real["provider"], "script");
    assert_eq!(real["models"], serde_json::json!(["llama-70b"]));
    assert_eq!(real["vram_gb"], 80.0);
    assert_eq!(real["node_name"], "woken-1");
    assert_eq!(s["peers"], serde_json::json!([]));
    let (_, models) = get_json(&format!("{base}/v1/models"));
    assert!(!models.to_string().contains("llama-70b"), "{models}");
    assert_eq!(
        metric(&node, "infermesh_wakeable{state=\"sleeping\"}"),
        "infermesh_wakeable{state=\"sleeping\"} 4"
    );

    // Unsigned wakes are refused; unknown ids are 404.
    let (code, _) = send(
        "POST",
        &base,
        "/admin/v1/wakeable/gpu-broken/wake",
        "",
        None,
    );
    assert_eq!(code, 401);
    assert_eq!(entry(&node, "gpu-broken").unwrap()["state"], "sleeping");
    let (code, r) = wake("gpu-nope");
    assert_eq!(code, 404, "{r}");

    // Three failures at once: a failing command, a hung one, one whose node never joins.
    for id in ["gpu-broken", "gpu-hung", "gpu-silent"] {
        let (code, r) = wake(id);
        assert_eq!(code, 202, "{id}: {r}");
        assert_eq!(r["state"], "waking", "{r}");
    }
    let (code, r) = wake("gpu-hung");
    assert_eq!(code, 409, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("already waking"),
        "{r}"
    );

    let broken = wait_state(&node, "gpu-broken", "failed", Duration::from_secs(10));
    assert_eq!(
        broken["reason"],
        "wake command exited with status 3: quota exceeded for gpu-broken"
    );
    let hung = wait_state(&node, "gpu-hung", "failed", Duration::from_secs(10));
    assert_eq!(hung["reason"], "wake command timed out after 1s");
    let silent = wait_state(&node, "gpu-silent", "failed", Duration::from_secs(10));
    assert_eq!(
        silent["reason"],
        "node `gpu-silent` has not joined the mesh within 2s of the wake"
    );
    // Output lines at info with the id; failures at error, because the operator must act.
    node.wait_log(
        &["INFO", "contacting provider", "wakeable=gpu-broken"],
        Duration::from_secs(5),
    );
    node.wait_log(
        &["INFO", "powered on", "wakeable=gpu-silent"],
        Duration::from_secs(5),
    );
    node.wait_log(
        &[
            "ERROR",
            "wake failed",
            "wakeable=gpu-broken",
            "quota exceeded",
        ],
        Duration::from_secs(5),
    );
    node.wait_log(
        &[
            "ERROR",
            "wake failed",
            "wakeable=gpu-silent",
            "has not joined",
        ],
        Duration::from_secs(5),
    );
    assert_eq!(
        metric(&node, "infermesh_wakeable{state=\"failed\"}"),
        "infermesh_wakeable{state=\"failed\"} 3"
    );

    // A failed machine may be woken again.
    let (code, r) = wake("gpu-broken");
    assert_eq!(code, 202, "{r}");
    wait_state(&node, "gpu-broken", "failed", Duration::from_secs(10));

    // The real one: its hook boots a node that joins under the expected name.
    let (code, r) = wake("gpu-real");
    assert_eq!(code, 202, "{r}");
    wait_until(Duration::from_secs(60), "woken-1 to join as a peer", || {
        let s = node.status();
        s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "woken-1")
            .then_some(())
    });
    // Joined: a live peer now, and off the inventory list.
    wait_until(Duration::from_secs(5), "gpu-real off the list", || {
        entry(&node, "gpu-real").is_none().then_some(())
    });
    assert_eq!(wakeable(&node).len(), 3);
    node.wait_log(
        &["wakeable machine joined the mesh", "gpu-real", "woken-1"],
        Duration::from_secs(5),
    );
    node.wait_log(
        &[
            "INFO",
            "powering on gpu-real as woken-1",
            "wakeable=gpu-real",
        ],
        Duration::from_secs(5),
    );
    let (code, r) = wake("gpu-real");
    assert_eq!(code, 409, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("has joined the mesh"),
        "{r}"
    );
    // Its declared models are still not the mesh's: only what the live node serves counts.
    let (_, models) = get_json(&format!("{base}/v1/models"));
    assert!(!models.to_string().contains("llama-70b"), "{models}");
    assert_eq!(
        metric(&node, "infermesh_peers{state=\"client\"}"),
        "infermesh_peers{state=\"client\"} 1"
    );

    // The machine goes away: sleeping capacity again.
    drop(woken);
    let back = wait_state(&node, "gpu-real", "sleeping", Duration::from_secs(30));
    assert_eq!(back["reason"], Value::Null);
}
