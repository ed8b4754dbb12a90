//! Peer-verified admission end to end: real nodes, the real peer channel, real HTTP.
//!
//! - A fresh server and a client joining it: the client answers through the mesh within 10 s of
//!   starting, and never says 404 meanwhile (503 "admission check in progress" or "no peers
//!   reachable" while it gets there).
//! - Insiders holding the mesh secret that claim to serve a model and vouch for each other get no
//!   client request: their self-attestations and mutual attestations are outvoted by the real
//!   nodes' failed checks.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::{post_json, NodeProc, MODEL};
use infermesh_mesh::{Invite, Mesh, MeshConfig, MeshHandle, NodeRecord};
use infermesh_state::admission::Attestation;
use infermesh_state::NodeState;
use serde_json::{json, Value};

fn chat(url: &str, model: &str) -> (u16, Value) {
    post_json(
        &format!("{url}/v1/chat/completions"),
        &json!({"model": model, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hi."}]}),
    )
}

fn peers(node: &NodeProc) -> Vec<Value> {
    node.status()["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_fresh_server_and_client_answer_within_10s_never_404() {
    let server = NodeProc::start(&["--gossip-port", "0"]);
    server.wait_state("serving", Duration::from_secs(300));
    let started = Instant::now();
    let client = NodeProc::start(&["--client", "--gossip-port", "0", "--join", &server.invite]);
    let mut before = Vec::new();
    let took = loop {
        let (code, body) = chat(&client.url, MODEL);
        if code == 200 {
            break started.elapsed();
        }
        let msg = body["error"]["message"].as_str().unwrap_or("").to_string();
        assert_eq!(
            code,
            503,
            "never a 404 while admission runs: {body}; the client's peers: {:?}",
            peers(&client)
        );
        assert!(
            msg.contains("admission check in progress") || msg.contains("no peers reachable"),
            "{msg}"
        );
        before.push(msg);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not answered within 10 s; last: {before:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("client start to first answer through the mesh: {took:?}; before: {before:?}");
    // Both sides agree: the client routes to the server, and the server knows it was verified.
    let p = peers(&client);
    let admitted = format!("admitted for {MODEL}");
    assert!(
        p.iter()
            .any(|p| p["participation"] == "active" && p["admission"] == admitted.as_str()),
        "{p:?}"
    );
    let s = server.status();
    assert_eq!(s["participation"], "active", "{s}");
    // Embeddings are routed like chat: the client serves none, the server answers.
    let (code, e) = post_json(
        &format!("{}/v1/embeddings", client.url),
        &json!({"model": MODEL, "input": ["Say hi.", "Say bye."]}),
    );
    assert_eq!(code, 200, "{e}");
    assert_eq!(e["data"].as_array().map(Vec::len), Some(2), "{e}");
    // …and the client's request log names them, and who answered.
    let (_, reqs) = common::get_json(&format!("{}/api/requests?limit=50", client.url));
    let server_id = server.status()["node_id"].clone();
    assert!(
        reqs["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["endpoint"] == "embeddings" && r["status"] == 200 && r["to"] == server_id),
        "{reqs}"
    );
    // A client takes no part in rounds, and neither side says it waits for one.
    assert_eq!(client.status()["participation"], "not_serving");
    let seen = peers(&server);
    assert!(
        seen.iter()
            .any(|p| p["state"] == "client" && p["participation"] == "not_serving"),
        "{seen:?}"
    );
    let log = client.stderr_lines();
    assert!(
        log.iter()
            .any(|l| l.contains("admission: peer passed its check")),
        "the client says whom it verified"
    );
}

/// An insider with the mesh secret, a key of its own and no model behind its claim.
async fn sybil(n: u8, invite: &Invite, model: &str) -> MeshHandle {
    let key = ed25519_dalek::SigningKey::from_bytes(&[0xA0 + n; 32]);
    let record = NodeRecord {
        v: infermesh_mesh::RECORD_SCHEMA_VERSION,
        name: format!("sybil-{n}"),
        api_addr: "127.0.0.1:9".into(),
        state: Some(NodeState::Serving),
        models: vec![model.into(), MODEL.into()],
        version: "0.1.0".into(),
        ..Default::default()
    };
    let mut cfg = MeshConfig::new(
        key,
        invite.secret.clone(),
        SocketAddr::from((Ipv4Addr::new(127, 0, 0, 10 + n), 0)),
        record,
    );
    cfg.seeds = invite.bootstrap.clone();
    Mesh::start(cfg).await.expect("sybil joins")
}

fn vouch(subject: &MeshHandle, model: &str, now_ms: i64) -> Attestation {
    Attestation {
        subject: subject.node_id().to_string(),
        generation: subject.generation(),
        model: model.into(),
        ok: true,
        at_ms: now_ms,
        expires_ms: now_ms + 3_600_000,
        took_ms: 1,
        error: None,
    }
}

#[test]
fn insiders_that_vouch_for_themselves_and_each_other_get_no_request() {
    let server = NodeProc::start(&["--gossip-port", "0"]);
    server.wait_state("serving", Duration::from_secs(300));
    let client = NodeProc::start(&["--client", "--gossip-port", "0", "--join", &server.invite]);
    // The real server is admitted first, so what follows is about the insiders alone.
    let t0 = Instant::now();
    while chat(&client.url, MODEL).0 != 200 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "server never routed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let invite = Invite::parse(&client.invite).expect("invite");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = "gpt-sybil";
    let (a, b) = rt.block_on(async {
        let a = sybil(1, &invite, fake).await;
        let b = sybil(2, &invite, fake).await;
        let now = infermesh_mesh::unix_now_ms();
        for (me, other) in [(&a, &b), (&b, &a)] {
            let mut r = me.record();
            r.attestations = vec![
                vouch(me, fake, now),
                vouch(me, MODEL, now),
                vouch(other, fake, now),
                vouch(other, MODEL, now),
            ];
            me.publish(r);
        }
        (a, b)
    });
    let ids = [a.node_id().to_string(), b.node_id().to_string()];
    // The real nodes see both insiders, check them, and find nothing behind the claim.
    let started = Instant::now();
    let failed = loop {
        let (code, body) = chat(&client.url, fake);
        let msg = body["error"]["message"].as_str().unwrap_or("").to_string();
        assert_ne!(code, 200, "an insider's claim was answered: {body}");
        if msg.contains("none passed its admission check") {
            break msg;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no failed check within 20 s; last: {code} {msg}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        failed.starts_with("2 nodes serve `gpt-sybil`, but none passed"),
        "{failed}"
    );
    for p in peers(&client) {
        if ids.iter().any(|id| p["node_id"] == id.as_str()) {
            assert_eq!(p["participation"], "inactive_waiting", "{p}");
            let why = p["admission"].as_str().unwrap_or_default();
            assert!(
                why.contains("failed its admission check for gpt-sybil"),
                "{p}"
            );
        }
    }
    // Every request for the real model goes to the real server, none to an insider.
    for _ in 0..6 {
        let (code, body) = chat(&client.url, MODEL);
        assert_eq!(code, 200, "{body}");
    }
    let (_, reqs) = common::get_json(&format!("{}/api/requests?limit=50", client.url));
    for r in reqs["requests"].as_array().unwrap() {
        let to = r["to_name"].as_str().unwrap_or("");
        assert!(
            !to.starts_with("sybil"),
            "a request reached an insider: {r}"
        );
    }
    let (_, models) = common::get_json(&format!("{}/v1/models", client.url));
    let listed: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert_eq!(listed, [MODEL], "an unverified claim is not listed");
    rt.block_on(async {
        let _ = a.shutdown().await;
        let _ = b.shutdown().await;
    });
}
