//! Three real nodes on loopback joined by real gossip: a client routes to serving peers, survives
//! a crash of one of them with zero client errors, and sees it rejoin after a restart.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{get_json, post_json, wait_for, NodeProc, MODEL};
use serde_json::{json, Value};

fn peers(node: &NodeProc) -> Vec<Value> {
    node.status()["peers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn peer_state(node: &NodeProc, name: &str) -> Option<String> {
    peers(node)
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| p["state"].as_str().unwrap_or("").to_string())
}

/// Serving and in the epoch's active set as `node` sees it: what routing requires.
fn routable(node: &NodeProc, name: &str) -> bool {
    peers(node)
        .iter()
        .any(|p| p["name"] == name && p["state"] == "serving" && p["participation"] == "active")
}

/// One fast epoch (20 s) plus slack: a node admitted at the next round is seen by then.
const NEXT_ROUND: Duration = Duration::from_secs(30);

fn chat(url: &str, max_tokens: u32) -> (u16, Value) {
    post_json(
        &format!("{url}/v1/chat/completions"),
        &json!({"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": "Say hello."}]}),
    )
}

#[test]
fn client_routes_fails_over_and_peer_rejoins() {
    let fast = ["--schedule", "fast", "--gossip-port", "0"];
    let mut a = NodeProc::start(&[&fast[..], &["--name", "A"]].concat());
    let join = a.invite.clone();
    let b = NodeProc::start(&[&fast[..], &["--name", "B", "--join", &join]].concat());
    // The client has no schedule of its own: it learns it from the mesh.
    let learn = ["--schedule", "learn", "--gossip-port", "0", "--client"];
    let c = NodeProc::start(&[&learn[..], &["--name", "C", "--join", &join]].concat());
    a.wait_state("serving", Duration::from_secs(60));
    b.wait_state("serving", Duration::from_secs(60));
    c.wait_state("client", Duration::from_secs(10));
    let a_id = a.status()["node_id"].clone();

    // Convergence: the client sees both serving peers with their models and addresses...
    wait_for("C sees A and B serving", Duration::from_secs(10), || {
        peer_state(&c, "A").as_deref() == Some("serving")
            && peer_state(&c, "B").as_deref() == Some("serving")
    });
    // ...and, once the round has admitted them, routes to them.
    wait_for("A and B admitted by a round", NEXT_ROUND, || {
        routable(&c, "A") && routable(&c, "B")
    });
    assert!(
        c.status()["timing"]["seconds_until_next_round"]
            .as_i64()
            .unwrap()
            >= 0,
        "C learnt the schedule"
    );
    let ps = peers(&c);
    for p in &ps {
        assert_eq!(p["models"], json!([MODEL]), "{p}");
        assert!(p["addr"].as_str().unwrap().starts_with("127.0.0.1:"), "{p}");
        assert_eq!(p["version"], env!("CARGO_PKG_VERSION"));
        assert!(p["last_seen_ms"].as_u64().unwrap() < 5000);
    }
    // B chose its model itself and said why, in one info line.
    assert!(b
        .stderr_lines()
        .iter()
        .any(|l| l.contains("INFO")
            && l.contains("serving smollm2-135m-instruct: needed by the mesh")));
    // Every node sees the other two, and never itself.
    assert_eq!(peers(&a).len(), 2);
    assert!(peers(&a).iter().all(|p| p["name"] != "A"));

    // The mesh-wide model list on a node that serves nothing.
    let (code, models) = get_json(&format!("{}/v1/models", c.url));
    assert_eq!(code, 200);
    assert_eq!(models["data"][0]["id"], MODEL);
    assert_eq!(models["data"][0]["replicas"], 2);

    // A client node answers by routing to a serving peer.
    let (code, body) = chat(&c.url, 8);
    assert_eq!(code, 200, "{body}");
    assert!(!body["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .is_empty());

    // Steady load from C while A crashes: every request must succeed on a replica.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (url, stop, ok, failed) = (c.url.clone(), stop.clone(), ok.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let (code, body) = chat(&url, 12);
                    if code == 200 {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        eprintln!("client error {code}: {body}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    wait_for(
        "some requests before the crash",
        Duration::from_secs(60),
        || ok.load(Ordering::Relaxed) >= 4,
    );
    a.kill();
    let killed = Instant::now();
    wait_for("A removed from C's peers", Duration::from_secs(10), || {
        peer_state(&c, "A").is_none()
    });
    let removal = killed.elapsed();
    let before = ok.load(Ordering::Relaxed);
    wait_for(
        "requests keep succeeding after the crash",
        Duration::from_secs(60),
        || ok.load(Ordering::Relaxed) >= before + 3,
    );
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "client saw errors during failover"
    );
    assert!(
        removal < Duration::from_secs(5),
        "dead peer listed for {removal:?}"
    );

    // The routed records on C name the answering replica and the attempts.
    let (_, reqs) = get_json(&format!("{}/api/requests?limit=1000", c.url));
    let reqs = reqs["requests"].as_array().unwrap().clone();
    assert!(reqs.len() as u32 >= ok.load(Ordering::Relaxed));
    for r in &reqs {
        assert_eq!(r["status"], 200, "{r}");
        assert_eq!(r["model"], MODEL);
        assert!(r["to_name"] == "A" || r["to_name"] == "B", "{r}");
        assert!(r["tokens"].as_u64().unwrap() > 0, "{r}");
    }

    // A restarted node rejoins under the same identity and serves again.
    a.restart();
    a.wait_state("serving", Duration::from_secs(60));
    assert_eq!(a.status()["node_id"], a_id);
    wait_for("C sees A serving again", Duration::from_secs(15), || {
        peer_state(&c, "A").as_deref() == Some("serving")
    });
    // A node back mid-epoch waits for the next round before the mesh routes to it.
    wait_for("A admitted again", NEXT_ROUND, || routable(&c, "A"));
    wait_for("A sees B and C again", Duration::from_secs(15), || {
        peers(&a).len() == 2
    });
    let (code, _) = chat(&c.url, 4);
    assert_eq!(code, 200);
}
