//! The wire shapes of `docs/api.md`, parsed tolerantly.

use infermesh_deck::api::{
    base_url, AdminNode, ErrorBody, LogsBody, RequestsBody, Status, TestResult,
};
use infermesh_state::NodeState;

const STATUS: &str = r#"{
  "node_id": "3f2a9c01d4e5b6a7", "public_key": "abcd", "name": "box-3f2a",
  "version": "0.1.0", "api_addr": "127.0.0.1:7337",
  "node_state": "serving", "node_status": "Serving",
  "participation": "inactive_waiting",
  "timing": {"seconds_until_next_round": 240, "in_round": false, "should_be_online": true,
             "epoch": 12, "target_round_epoch": 13, "next_round_at_ms": 1790000000000,
             "round_ends_at_ms": 1790000060000},
  "message": "Round starts in 4m — must be online now",
  "epoch": 12,
  "models": ["SmolLM2-135M-Instruct"], "vram_gb": 0.1, "ram_gb": 24.0, "in_flight": 0,
  "backends": [{"id": "embedded", "driver": "embedded", "models": ["SmolLM2-135M-Instruct"],
                "assigned": "SmolLM2-135M-Instruct", "phase": "ready", "detail": null,
                "mem_gb": 0.1}],
  "peers": [{"node_id": "p1", "name": "peer-1", "addr": "127.0.0.1:40001", "state": "standby",
             "models": [], "vram_gb": 0.0, "ram_gb": 24.0, "version": "0.1.0", "load": 0,
             "participation": "active", "last_seen_ms": 1790000000000}],
  "wakeable": [{"id": "gpu-7", "provider": "example", "models": ["llama-70b"], "vram_gb": 80.0,
                "state": "suspended"}]
}"#;

#[test]
fn status_from_the_docs_parses() {
    let s: Status = serde_json::from_str(STATUS).unwrap();
    assert_eq!(s.name, "box-3f2a");
    assert_eq!(s.state(), Some(NodeState::Serving));
    assert_eq!(s.timing.seconds_until_next_round, 240);
    assert_eq!(s.timing.next_round_at_ms, Some(1_790_000_000_000));
    assert_eq!(
        s.message.as_deref(),
        Some("Round starts in 4m — must be online now")
    );
    assert_eq!(s.backends[0].phase.as_deref(), Some("ready"));
    assert_eq!(s.peers[0].node_state(), Some(NodeState::Standby));
    assert_eq!(s.peers[0].last_seen_ms, Some(1_790_000_000_000));
    assert_eq!(s.wakeable[0].vram_gb, Some(80.0));
    assert_eq!(s.in_flight, Some(0));
}

#[test]
fn unknown_fields_are_ignored_and_missing_ones_default() {
    let s: Status =
        serde_json::from_str(r#"{"name": "n", "future_field": {"x": [1, 2]}}"#).unwrap();
    assert_eq!(s.name, "n");
    assert!(s.peers.is_empty() && s.wakeable.is_empty() && s.backends.is_empty());
    assert_eq!(
        s.timing.seconds_until_next_round, -1,
        "missing timing = schedule unknown"
    );
    assert_eq!(s.state(), None);
    let s: Status =
        serde_json::from_str(r#"{"peers": null, "models": null, "timing": {}}"#).unwrap();
    assert!(s.peers.is_empty());
    assert_eq!(s.timing.seconds_until_next_round, -1);
    let s: Status = serde_json::from_str("{}").unwrap();
    assert_eq!(s, Status::default());
}

#[test]
fn peer_state_words() {
    let peers: Status = serde_json::from_str(
        r#"{"peers": [
            {"name": "a", "state": "loading"},
            {"name": "b", "state": "Serving"},
            {"name": "c", "state": "hibernating"},
            {"name": "d", "role": "client", "models": ["x"]},
            {"name": "e", "models": ["x"]},
            {"name": "f"}
        ]}"#,
    )
    .unwrap();
    let states: Vec<_> = peers.peers.iter().map(|p| p.node_state()).collect();
    assert_eq!(
        states,
        vec![
            Some(NodeState::Loading),
            Some(NodeState::Serving),
            None,                    // unknown word: rendered "unknown", never a parse failure
            Some(NodeState::Client), // no `state`: classified from legacy fields
            Some(NodeState::Serving),
            Some(NodeState::Standby),
        ]
    );
    let legacy: Status = serde_json::from_str(r#"{"node_status": "Loading"}"#).unwrap();
    assert_eq!(legacy.state(), Some(NodeState::Loading));
}

#[test]
fn requests_and_logs_bodies() {
    let r: RequestsBody = serde_json::from_str(
        r#"{"requests": [{"id": 17, "at_ms": 1790000000000, "from": "a", "to": "b",
            "to_name": "box-9", "model": "SmolLM2-135M-Instruct", "endpoint": "chat",
            "status": 200, "latency_ms": 312, "ttft_ms": 40, "tokens": 24, "attempts": 1,
            "stream": true, "error": null},
           {"id": 18, "to": null, "status": 503, "error": "no replica", "model": "m"}]}"#,
    )
    .unwrap();
    assert_eq!(r.requests[0].to_name.as_deref(), Some("box-9"));
    assert_eq!(r.requests[0].latency_ms, 312);
    assert_eq!(r.requests[1].to, None);
    assert_eq!(r.requests[1].tokens, None);
    let l: LogsBody = serde_json::from_str(
        r#"{"lines": [{"seq": 88, "at_ms": 1790000000000, "node_id": "n", "level": "info",
            "target": "infermesh_api::node", "message": "model loaded; serving backend=embedded load_ms=120",
            "fields": {"extra": 1}}]}"#,
    )
    .unwrap();
    assert_eq!(l.lines[0].seq, 88);
    assert_eq!(l.lines[0].level, "info");
    assert!(serde_json::from_str::<LogsBody>("{}")
        .unwrap()
        .lines
        .is_empty());
}

#[test]
fn admin_nodes_and_test_result() {
    let a: Vec<AdminNode> = serde_json::from_str(
        r#"[{"node": {"id": "embedded", "driver": "embedded", "models": [{"name": "SmolLM2-135M-Instruct",
           "args": {}}], "url": null, "phase": "ready", "loaded": "SmolLM2-135M-Instruct"},
             "onboarding": {"backend_state": "serving", "participation": "inactive_waiting",
                 "validated": true, "message": "…", "failing_model": null,
                 "timing": {"seconds_until_next_round": -1}, "last_test": null}},
            {"node": {"id": "bare", "models": ["m1"]}}]"#,
    )
    .unwrap();
    assert_eq!(a[0].node.models[0].name, "SmolLM2-135M-Instruct");
    let o = a[0].onboarding.as_ref().unwrap();
    assert_eq!(o.backend_state.as_deref(), Some("serving"));
    assert_eq!(o.timing.seconds_until_next_round, -1);
    assert!(o.last_test.is_none());
    assert_eq!(
        a[1].node.models[0].name, "m1",
        "bare model names are accepted"
    );
    assert!(a[1].onboarding.is_none());

    let t: TestResult = serde_json::from_str(
        r#"{"ok": false, "backend_id": "embedded", "started_at_ms": 1790000000000,
 "models": [{"model": "a", "load_ms": 120, "health_ms": 2, "infer_ms": 95, "error": null},
            {"model": "b", "load_ms": 0, "health_ms": 0, "infer_ms": 0,
             "error": "load failed: file not found"}],
 "failing_model": "b"}"#,
    )
    .unwrap();
    assert!(!t.ok);
    assert_eq!(t.models[0].infer_ms, 95);
    assert_eq!(
        t.models[1].error.as_deref(),
        Some("load failed: file not found")
    );
    assert_eq!(t.failing_model.as_deref(), Some("b"));
}

#[test]
fn error_bodies_and_addresses() {
    let e: ErrorBody =
        serde_json::from_str(r#"{"error": "a test of this backend is already running"}"#).unwrap();
    assert_eq!(
        e.sentence().as_deref(),
        Some("a test of this backend is already running")
    );
    let e: ErrorBody = serde_json::from_str(r#"{"error": {"message": "m", "type": "t"}}"#).unwrap();
    assert_eq!(e.sentence().as_deref(), Some("m"));
    assert_eq!(base_url("127.0.0.1:40001"), "http://127.0.0.1:40001");
    assert_eq!(base_url("http://h:1/"), "http://h:1");
    assert_eq!(base_url("https://h"), "https://h");
}
