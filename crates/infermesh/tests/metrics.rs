//! `GET /metrics` on a real serving node: Prometheus text that reflects the node's state, its
//! peers and the requests it answered.

mod web_support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;
use web_support::*;

/// `name{labels}` → value, for every sample line.
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').unwrap();
            (
                k.to_string(),
                v.parse().unwrap_or_else(|_| panic!("bad value: {l}")),
            )
        })
        .collect()
}

fn scrape(node: &Node) -> (String, BTreeMap<String, f64>) {
    let (code, ct, text) = get_text(&format!("{}/metrics", node.url));
    assert_eq!(code, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let s = samples(&text);
    (text, s)
}

fn chat(node: &Node, model: &str, stream: bool) -> u16 {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "Say hi"}],
                      "max_tokens": 8, "temperature": 0, "stream": stream});
    send(
        "POST",
        &node.url,
        "/v1/chat/completions",
        &body.to_string(),
        None,
    )
    .0
}

#[test]
fn metrics_reflect_state_peers_and_requests() {
    let server = Node::start(None, &["--name", "metrics-a"], &[]);
    wait_until(Duration::from_secs(180), "metrics-a serving", || {
        (server.status()["node_state"] == "serving").then_some(())
    });
    let client = Node::start(
        None,
        &["--client", "--name", "metrics-b", "--join", &server.invite],
        &[],
    );
    wait_until(
        Duration::from_secs(30),
        "metrics-b to see a serving peer",
        || {
            let (_, s) = scrape(&client);
            (s.get("infermesh_peers{state=\"serving\"}") == Some(&1.0)).then_some(())
        },
    );

    let (text, s) = scrape(&server);
    assert_eq!(s["infermesh_node_state{state=\"serving\"}"], 1.0, "{text}");
    assert_eq!(s["infermesh_node_state{state=\"loading\"}"], 0.0);
    let (_, c) = scrape(&client);
    assert_eq!(c["infermesh_node_state{state=\"client\"}"], 1.0);
    wait_until(
        Duration::from_secs(30),
        "metrics-a to see its client peer",
        || {
            let (_, s) = scrape(&server);
            (s.get("infermesh_peers{state=\"client\"}") == Some(&1.0)).then_some(())
        },
    );

    // Two answered requests and one for a model nobody serves.
    assert_eq!(chat(&server, MODEL, false), 200);
    assert_eq!(chat(&server, MODEL, true), 200);
    let missing = chat(&server, "no-such-model", false);
    assert!(missing >= 400);

    let (text, s) = wait_until(Duration::from_secs(10), "request counters", || {
        let (text, s) = scrape(&server);
        (s.get(&format!(
            "infermesh_requests_total{{model=\"{MODEL}\",status=\"200\"}}"
        )) == Some(&2.0))
        .then_some((text, s))
    });
    let count = s[&format!("infermesh_request_duration_seconds_count{{model=\"{MODEL}\"}}")];
    assert_eq!(count, 2.0, "{text}");
    let inf =
        s[&format!("infermesh_request_duration_seconds_bucket{{model=\"{MODEL}\",le=\"+Inf\"}}")];
    assert_eq!(inf, 2.0);
    let sum = s[&format!("infermesh_request_duration_seconds_sum{{model=\"{MODEL}\"}}")];
    assert!(sum > 0.0 && sum < 120.0, "{sum}");
    // Buckets are cumulative: none above +Inf, the widest reaching it.
    let mut last = 0.0;
    for (k, v) in &s {
        if k.starts_with(&format!(
            "infermesh_request_duration_seconds_bucket{{model=\"{MODEL}\""
        )) {
            assert!(*v <= inf);
            last = f64::max(last, *v);
        }
    }
    assert_eq!(last, 2.0);
    let tokens = s[&format!("infermesh_tokens_generated_total{{model=\"{MODEL}\"}}")];
    assert!((2.0..=16.0).contains(&tokens), "tokens {tokens}\n{text}");
    // A model no node serves is counted, but under one fixed label: clients may send anything.
    let status = missing.to_string();
    assert_eq!(
        s.get(&format!(
            "infermesh_requests_total{{model=\"unknown\",status=\"{status}\"}}"
        )),
        Some(&1.0),
        "unserved request counted with its status:\n{text}"
    );
    assert!(!text.contains("no-such-model"), "{text}");
    // An unknown route answers OpenAI's error envelope, naming what was called.
    let (code, v) = send("POST", &server.url, "/v1/embedding", "{}", None);
    assert_eq!(code, 404);
    let body = v.to_string();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(v["error"]["code"], "unknown_url", "{body}");
    assert!(v["error"]["param"].is_null(), "{body}");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(msg.contains("POST /v1/embedding"), "{msg}");
    for fam in [
        "infermesh_tests_total{result=\"pass\"}",
        "infermesh_rounds_total{result=\"fail\"}",
        "infermesh_in_flight",
    ] {
        assert!(s.contains_key(fam), "{fam} missing:\n{text}");
    }
}
