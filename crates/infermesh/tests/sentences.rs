//! Issue 14 §5, on real nodes: each sentence an operator reads is true of what the node does,
//! and `/api/status`, `GET /admin/v1/nodes` and the log say it in the same words.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{backend_list, bin, far_round_schedule, model_dir, poll, NodeProc};
use serde_json::Value;

fn message(v: &Value) -> String {
    v["message"].as_str().unwrap_or_default().to_string()
}

/// The onboarding message of the only backend, from the admin list.
fn admin_message(node: &NodeProc) -> String {
    let list = backend_list(node);
    assert_eq!(list.len(), 1, "{list:?}");
    list[0]["onboarding"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_failed_load_says_failed_with_its_cause_everywhere() {
    let (node, s) = common::node_with_a_broken_model();
    // Documented in docs/api.md: a model is assigned and nothing serves.
    assert_eq!(s["node_state"], "loading", "{s}");
    let cause = s["backends"][0]["detail"].as_str().unwrap().to_string();
    let want =
        infermesh_state::failed_message("embedded", &cause, infermesh_state::Source::CommandLine);
    assert_eq!(message(&s), want);
    assert!(want.contains(&format!("failed: {cause}")), "{want}");
    assert!(
        !want.contains("Loading") && !want.contains("keep it online"),
        "{want}"
    );
    assert_eq!(admin_message(&node), want);
    let logged = node
        .stderr_lines()
        .into_iter()
        .any(|l| l.contains("ERROR") && l.contains(&want));
    assert!(logged, "no ERROR line with `{want}`");
}

#[test]
fn a_standby_backend_is_idle_capacity_with_the_command_to_assign_it() {
    let schedule = far_round_schedule();
    let node = NodeProc::start(&["--standby", &schedule[0], &schedule[1]]);
    let s = node.wait_state("standby", Duration::from_secs(30));
    let want =
        infermesh_state::standby_message("embedded", infermesh_state::Source::CommandLine, false);
    assert_eq!(message(&s), want);
    assert_eq!(admin_message(&node), want);
    assert!(!want.contains("tested"), "{want}");
    assert!(want.contains("--model PATH.gguf"), "{want}");
    // The flag the sentence names exists.
    let help = Command::new(bin()).args(["up", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("--model <PATH.gguf>") && help.contains("--standby"),
        "{help}"
    );
}

#[test]
fn a_join_that_reaches_nobody_warns_and_status_says_not_connected() {
    // A token of a mesh whose only address is port 9 (discard) on loopback: nobody answers.
    let token = infermesh_mesh::Invite {
        secret: infermesh_mesh::MeshSecret::from_bytes([5; 32]),
        bootstrap: vec!["127.0.0.1:9".into()],
    }
    .encode();
    let node = NodeProc::start(&["--client", "--join", &token]);
    let s = node.status();
    let notice = s["peer_message"].as_str().unwrap_or_default().to_string();
    assert!(
        notice.to_lowercase().starts_with(infermesh_state::NO_PEER),
        "{s}"
    );
    assert_eq!(message(&s), notice, "a lone client's message is the notice");
    poll(
        "the warn line",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || node.stderr_lines().join("\n"),
        |log| {
            log.lines()
                .any(|l| l.contains("WARN") && l.contains("Not connected to any peer"))
        },
    );
    assert!(infermesh_api::status::reach::JOIN_GRACE < Duration::from_secs(5));
}

#[test]
fn a_client_with_peers_has_no_notice() {
    let schedule = far_round_schedule();
    let server = NodeProc::start(&["--standby", &schedule[0], &schedule[1]]);
    let client = NodeProc::start(&["--client", "--join", &server.invite]);
    let s = poll(
        "the client hears its peer",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || client.status(),
        |s| s["peers"].as_array().is_some_and(|p| !p.is_empty()),
    );
    assert!(s["peer_message"].is_null(), "{s}");
    assert_eq!(message(&s), "Client — routes requests, serves no models");
}

/// `--log-format json` lines at WARN or above: the rule of selfcheck's "onboarding logs are
/// info-only" stage.
fn warn_or_worse(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| v["level"].as_str().map(|s| s == "WARN" || s == "ERROR"))
                .unwrap_or(false)
        })
        .cloned()
        .collect()
}

#[test]
fn a_fresh_default_node_logs_nothing_above_info() {
    // Not the harness spawner: it sets INFERMESH_ADMIN_OPEN, whose warning is deliberate.
    let data = tempfile::tempdir().unwrap();
    let mut child = Command::new(bin())
        .args(["--log-format", "json", "up", "--port", "0", "--data-dir"])
        .arg(data.path())
        .env("INFERMESH_MODEL_DIR", model_dir())
        .env("INFERMESH_THREADS", "1")
        .env_remove("INFERMESH_ADMIN_OPEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = lines.clone();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(l);
        }
    });
    let out = BufReader::new(child.stdout.take().unwrap());
    let url = out
        .lines()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("infermesh listening on ")
                .map(str::to_string)
        })
        .expect("listening line");
    poll(
        "serving",
        Duration::from_secs(120),
        Duration::from_millis(200),
        || common::get_json(&format!("{url}/api/status")).1,
        |s| s["node_state"] == "serving",
    );
    let got = lines.lock().unwrap().clone();
    let _ = child.kill();
    let _ = child.wait();
    let bad = warn_or_worse(&got);
    assert!(bad.is_empty(), "warn/error lines on a fresh node: {bad:?}");
    let hint = got.iter().any(|l| {
        l.contains("\"INFO\"")
            && l.contains("admin changes are refused")
            && l.contains("infermesh keygen")
    });
    assert!(hint, "no info line with the keygen hint: {got:?}");
}

#[test]
fn a_bare_join_address_is_refused_with_the_way_to_get_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::bin())
        .args([
            "up",
            "--client",
            "--port",
            "0",
            "--join",
            "127.0.0.1:9",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("infermesh invite") && err.contains("--join <TOKEN>"),
        "{err}"
    );
    assert!(
        !dir.path().join("mesh.secret").exists(),
        "nothing written on refusal"
    );
}
