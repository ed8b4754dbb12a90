//! Automatic tests of registered backends: they run when the next round is far enough away, a
//! config change voids the old result at once, and with the schedule unknown nothing runs and the
//! node says so.

mod common;

use std::time::Duration;

use common::{backend_entry, far_round_schedule, post_json, wait_for_auto_test, NodeProc, MODEL};
use serde_json::{json, Value};

fn backend(node: &NodeProc, id: &str) -> Value {
    backend_entry(node, id).unwrap_or(Value::Null)
}

fn wait_for_test(node: &NodeProc, id: &str) -> Value {
    wait_for_auto_test(node, id, Duration::from_secs(60))
}

fn put(url: &str, body: &Value) -> u16 {
    reqwest::blocking::Client::new()
        .put(url)
        .json(body)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

#[test]
fn registered_backends_are_tested_automatically_when_the_round_is_far() {
    let [flag, spec] = far_round_schedule();
    let node = NodeProc::start(&["--client", &flag, &spec]);
    let body = json!({"id": "auto", "driver": "embedded", "models": [{"name": MODEL}]});
    let (code, v) = post_json(&format!("{}/admin/v1/nodes", node.url), &body);
    assert_eq!(code, 201, "{v}");

    let e = wait_for_test(&node, "auto");
    let ob = &e["onboarding"];
    assert_eq!(ob["last_test"]["ok"], true, "{e}");
    assert_eq!(ob["validated"], true);
    assert_eq!(ob["backend_state"], "waiting");
    assert!(
        ob["message"]
            .as_str()
            .unwrap()
            .starts_with("Validated — idle capacity, no model assigned; to serve, set `serve`"),
        "a passed test does not make idle capacity serve: {ob}"
    );

    // A change voids the result in the same response cycle, then the retest comes.
    let changed = json!({"driver": "embedded", "models": [{"name": MODEL, "args": {"seed": 1}}]});
    assert_eq!(
        put(&format!("{}/admin/v1/nodes/auto", node.url), &changed),
        200
    );
    let e = backend(&node, "auto");
    assert!(
        e["onboarding"]["last_test"].is_null() || e["onboarding"]["backend_state"] == "testing",
        "old result survived a config change: {e}"
    );
    assert_eq!(e["onboarding"]["validated"], false);
    let e = wait_for_test(&node, "auto");
    assert_eq!(e["onboarding"]["last_test"]["ok"], true, "{e}");
    let logs = node.stderr_lines();
    assert!(logs
        .iter()
        .any(|l| l.contains("testing backend") && l.contains("automatically")));
    assert!(logs.iter().any(|l| l.contains("test passed")));
}

#[test]
fn with_the_schedule_unknown_nothing_is_auto_tested_and_the_node_says_why() {
    let node = NodeProc::start(&["--client", "--schedule", "learn"]);
    let body = json!({"id": "idle", "driver": "embedded", "models": [{"name": MODEL}]});
    let (code, _) = post_json(&format!("{}/admin/v1/nodes", node.url), &body);
    assert_eq!(code, 201);
    std::thread::sleep(Duration::from_millis(1500));
    let e = backend(&node, "idle");
    assert!(e["onboarding"]["last_test"].is_null(), "{e}");
    // Not "nothing to do": without a model it is idle capacity whatever the clock says.
    assert_eq!(
        e["onboarding"]["message"],
        infermesh_state::standby_message("idle", infermesh_state::Source::Config, false)
    );
    assert!(node
        .stderr_lines()
        .iter()
        .any(|l| l.contains("auto-test skipped: schedule syncing")));
}
