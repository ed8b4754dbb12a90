//! Deterministic sample meshes for tests, the render benchmark and screenshots. Not an API.

use infermesh_state::usage::Usage;

use crate::api::{AdminNode, LogLine, Peer, RequestRecord, Status, Timing, Wakeable};
use crate::model::{Conn, Model, Via};
use crate::update::{update, Msg};

pub const NOW_MS: i64 = 1_790_000_000_000;
pub const SELF_ID: &str = "self0000";
pub const SELF_NAME: &str = "box-self";
pub const URL: &str = "http://127.0.0.1:7337";
pub const MESSAGE: &str = "Round starts in 4m — must be online now";

const STATES: [&str; 4] = ["serving", "standby", "loading", "client"];

pub fn peer_id(i: usize) -> String {
    format!("peer{i:04}")
}

pub fn peer_name(i: usize) -> String {
    format!("node-{i:04}")
}

/// The connected node (serving SmolLM2) and `peers` peers cycling through the four states.
pub fn status(peers: usize) -> Status {
    Status {
        node_id: SELF_ID.into(),
        name: SELF_NAME.into(),
        version: "0.1.0".into(),
        api_addr: Some("127.0.0.1:7337".into()),
        node_state: Some("serving".into()),
        node_status: Some("Serving".into()),
        participation: Some("active".into()),
        timing: Timing {
            seconds_until_next_round: 240,
            ..Timing::default()
        },
        message: Some(MESSAGE.into()),
        peer_message: None,
        epoch: Some(12),
        models: vec!["SmolLM2-135M-Instruct".into()],
        vram_gb: Some(0.1),
        ram_gb: Some(24.0),
        usage: Some(usage(37.0, 232)),
        in_flight: Some(1),
        backends: Vec::new(),
        peers: (0..peers)
            .map(|i| {
                let state = STATES[i % STATES.len()];
                let models = match state {
                    "serving" | "loading" => vec![format!("model-{}", i % 5)],
                    _ => Vec::new(),
                };
                Peer {
                    node_id: peer_id(i),
                    name: peer_name(i),
                    addr: format!("127.0.0.1:{}", 40_000 + i),
                    state: Some(state.into()),
                    role: None,
                    models,
                    vram_gb: Some((i % 9) as f64 * 8.0),
                    ram_gb: Some(64.0),
                    // Every seventh peer runs a build that does not report usage.
                    usage: (i % 7 != 6).then(|| usage((i % 10) as f32 * 10.0, 200 + i as u64)),
                    version: Some("0.1.0".into()),
                    load: Some((i % 4) as u64),
                    participation: Some("active".into()),
                    // On the wire: an age.
                    last_seen_ms: Some(((i % 5) as i64 + 1) * 1_000),
                    split: None,
                }
            })
            .collect(),
        wakeable: Vec::new(),
        split: None,
        groups: Vec::new(),
    }
}

/// A node using `cpu_pct` of a 2-core, 24 GiB machine and `rss_mib` of memory itself.
pub fn usage(cpu_pct: f32, rss_mib: u64) -> Usage {
    Usage {
        cpu_pct,
        machine_cpu_pct: (cpu_pct + 10.0).min(100.0),
        cores: 2,
        rss_bytes: rss_mib << 20,
        mem_used_bytes: 6 << 30,
        mem_total_bytes: 24 << 30,
        ..Default::default()
    }
}

pub fn wakeable() -> Vec<Wakeable> {
    vec![Wakeable {
        id: "gpu-7".into(),
        provider: "example".into(),
        models: vec!["llama-70b".into()],
        vram_gb: Some(80.0),
        state: Some("suspended".into()),
    }]
}

/// `per_node` lines from each of `nodes` nodes (index 0 is the connected node), interleaved in time.
pub fn logs(nodes: usize, per_node: usize) -> Vec<(String, Vec<LogLine>)> {
    let levels = ["info", "debug", "warn", "error", "trace"];
    (0..nodes)
        .map(|n| {
            let id = if n == 0 {
                SELF_ID.to_string()
            } else {
                peer_id(n - 1)
            };
            let lines = (0..per_node)
                .map(|k| LogLine {
                    seq: k as u64,
                    at_ms: NOW_MS - 600_000 + (k * nodes + n) as i64 * 10,
                    node_id: id.clone(),
                    level: levels[(k + n) % levels.len()].into(),
                    target: "infermesh_api::node".into(),
                    message: format!("line {k} from {id}: model loaded; serving backend=embedded"),
                })
                .collect();
            (id, lines)
        })
        .collect()
}

pub fn requests(n: usize) -> Vec<RequestRecord> {
    (0..n)
        .map(|i| RequestRecord {
            id: i as u64,
            at_ms: NOW_MS - (n - i) as i64 * 500,
            from: Some(SELF_ID.into()),
            to: Some(peer_id(i % 3 * 4)),
            to_name: Some(peer_name(i % 3 * 4)),
            model: "model-0".into(),
            endpoint: Some("chat".into()),
            status: 200,
            latency_ms: 100 + (i as u64 * 37) % 400,
            ttft_ms: Some(40),
            tokens: Some(24),
            attempts: Some(1),
            stream: Some(true),
            error: None,
            node: None,
            admission_check: false,
        })
        .collect()
}

/// The admin view from `docs/api.md`, plus a second backend on an unknown schedule.
pub fn admin_nodes() -> Vec<AdminNode> {
    serde_json::from_str(
        r#"[{"node": {"id": "embedded", "driver": "embedded", "models": [{"name": "SmolLM2-135M-Instruct", "args": {}}],
              "url": null, "phase": "ready", "loaded": "SmolLM2-135M-Instruct"},
             "onboarding": {"backend_state": "serving", "participation": "inactive_waiting", "validated": true,
                            "message": "Validated — safe to be offline until the next round (starts in 2h 15m)",
                            "failing_model": null,
                            "timing": {"seconds_until_next_round": 8100, "in_round": false, "should_be_online": false},
                            "last_test": {"ok": true, "backend_id": "embedded", "started_at_ms": 1790000000000,
                                          "models": [{"model": "SmolLM2-135M-Instruct", "load_ms": 120, "health_ms": 2, "infer_ms": 95, "error": null}],
                                          "failing_model": null}}},
            {"node": {"id": "gpu-llama", "driver": "llama_server", "models": ["llama-8b"], "phase": "idle"},
             "onboarding": {"backend_state": "waiting", "participation": "inactive_waiting", "validated": false,
                            "message": "Schedule syncing",
                            "timing": {"seconds_until_next_round": -1, "in_round": false, "should_be_online": false},
                            "last_test": null}}]"#,
    )
    .expect("fixture parses")
}

/// A connected deck over `peers` peers, with `logs_per_node` lines from every node and requests.
pub fn model(peers: usize, logs_per_node: usize) -> Model {
    let mut m = Model::new(URL);
    update(&mut m, Msg::Resize(200, 60));
    update(&mut m, Msg::Connected(Via::Sse));
    update(&mut m, Msg::Tick(NOW_MS));
    update(&mut m, Msg::Status(Box::new(status(peers))));
    for (id, lines) in logs(peers + 1, logs_per_node) {
        update(&mut m, Msg::Logs { node_id: id, lines });
    }
    update(&mut m, Msg::LogsDone);
    update(&mut m, Msg::Requests(requests(40)));
    debug_assert!(matches!(m.conn, Conn::Connected(_)));
    m
}
