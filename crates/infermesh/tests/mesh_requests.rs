//! `/api/mesh/requests` on real nodes: the whole mesh's requests from any member, each request
//! once (a request C routes to A is in both rings) with its origin and target, read over the
//! authenticated peer channel; a member that stops is named as unread, and its traffic recorded
//! elsewhere stays listed.

mod common;

use std::time::Duration;

use common::{get_json, post_json, NodeProc, MODEL};
use serde_json::{json, Value};

fn chat(url: &str) -> u16 {
    post_json(
        &format!("{url}/v1/chat/completions"),
        &json!({"model": MODEL, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}]}),
    )
    .0
}

/// Client requests (admission checks left out) of `node`'s view of the mesh, and its node list.
fn mesh_view(node: &NodeProc) -> (Vec<Value>, Vec<Value>) {
    let (code, body) = get_json(&format!("{}/api/mesh/requests?limit=1000", node.url));
    assert_eq!(code, 200, "{body}");
    let reqs = body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["admission_check"] != true)
        .cloned()
        .collect();
    (reqs, body["nodes"].as_array().unwrap().clone())
}

fn own_ring(node: &NodeProc) -> Vec<Value> {
    let (_, body) = get_json(&format!("{}/api/requests?limit=1000", node.url));
    body["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["admission_check"] != true)
        .cloned()
        .collect()
}

#[test]
fn every_member_lists_the_meshs_requests_once_with_origin_and_target() {
    let fast = ["--schedule", "fast", "--gossip-port", "0"];
    let mut a = NodeProc::start(&[&fast[..], &["--name", "A"]].concat());
    let join = a.invite.clone();
    let learn = ["--schedule", "learn", "--gossip-port", "0", "--client"];
    let c = NodeProc::start(&[&learn[..], &["--name", "C", "--join", &join]].concat());
    a.wait_state("serving", Duration::from_secs(60));
    c.wait_state("client", Duration::from_secs(10));
    let a_id = a.status()["node_id"].as_str().unwrap().to_string();
    let c_id = c.status()["node_id"].as_str().unwrap().to_string();
    common::poll(
        "C routing to A",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || chat(&c.url),
        |code| *code == 200,
    );

    for _ in 0..3 {
        assert_eq!(chat(&c.url), 200);
    }
    assert_eq!(chat(&a.url), 200);
    // C's ring also holds the answers it gave before A was admitted (no replica yet).
    let c_ring = own_ring(&c);
    let routed_by_c = c_ring.len();
    let ok_by_c = c_ring.iter().filter(|r| r["status"] == 200).count();
    assert!(ok_by_c >= 4, "C's ring: {c_ring:?}");
    // A holds the requests C routed to it too (received over the peer channel) and its own.
    assert_eq!(own_ring(&a).len(), ok_by_c + 1);

    // The same view from either member: each request once, from its origin's ring.
    for (viewer, name) in [(&c, "C"), (&a, "A")] {
        let (reqs, nodes) = mesh_view(viewer);
        assert_eq!(reqs.len(), routed_by_c + 1, "{name}'s view: {reqs:?}");
        let from_c: Vec<&Value> = reqs.iter().filter(|r| r["from"] == c_id.as_str()).collect();
        assert_eq!(from_c.len(), routed_by_c);
        assert!(from_c.iter().all(|r| r["node"] == c_id.as_str()));
        let answered: Vec<&&Value> = from_c.iter().filter(|r| r["status"] == 200).collect();
        assert_eq!(answered.len(), ok_by_c);
        assert!(
            answered.iter().all(|r| r["to"] == a_id.as_str()),
            "{answered:?}"
        );
        let from_a: Vec<&Value> = reqs.iter().filter(|r| r["from"] == a_id.as_str()).collect();
        assert_eq!(from_a.len(), 1);
        assert_eq!(from_a[0]["node"], a_id.as_str());
        let at: Vec<i64> = reqs.iter().map(|r| r["at_ms"].as_i64().unwrap()).collect();
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "oldest first: {at:?}");
        assert_eq!(nodes.len(), 2, "{nodes:?}");
        assert!(nodes.iter().all(|n| n.get("error").is_none()), "{nodes:?}");
    }
    let (_, nodes) = mesh_view(&c);
    assert_eq!(nodes[0]["name"], "C", "the asked node comes first");
    assert_eq!(nodes[1]["name"], "A");

    // A limit is a limit: the newest ones.
    let (_, body) = get_json(&format!("{}/api/mesh/requests?limit=2", c.url));
    let reqs = body["requests"].as_array().unwrap();
    assert_eq!(reqs.len(), 2);

    // A stops: C's record of what it routed stays; A, while still a member, is named as unread.
    a.kill();
    let (reqs, nodes) = mesh_view(&c);
    assert_eq!(reqs.len(), routed_by_c, "C's own records stay: {reqs:?}");
    if let Some(a_entry) = nodes.iter().find(|n| n["name"] == "A") {
        let why = a_entry["error"].as_str().unwrap_or("");
        assert!(!why.is_empty(), "an unreadable member says why: {a_entry}");
    }
}
