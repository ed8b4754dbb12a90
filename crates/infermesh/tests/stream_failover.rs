//! Mid-stream failover on a real 3-node mesh on loopback: A and B serve `bench-fixture` through
//! `openai` backends pointing at slow fixture processes (16 chunks, 150 ms apart, so a stream
//! lasts about 2.4 s); C is a client node that routes. A stream through C is cut three ways while
//! the client reads it:
//! 1. the backend of the node generating it dies (that node reports the failure in-band): C
//!    continues it on the other replica (`/v1/completions`);
//! 2. the node generating it dies (SIGKILL: the connection breaks): C continues it on the other
//!    replica (`/v1/chat/completions`, with usage);
//! 3. with one replica left, its backend dies: nothing can continue it, and the client gets an
//!    in-band error event that says so, then `[DONE]`, never a silent cut.
//!
//! In 1 and 2 the client must see one unbroken stream: the fixture's whole text exactly once, one
//! `id`, one opening chunk, `[DONE]` and no error.

mod common;
mod fixture_support;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use common::NodeProc;
use fixture_support::{register, routable, wait_for, Fixture, Streamed, MODEL, TEXT};
use serde_json::{json, Value};

/// Reads a stream from `url`, calling `midway` once `after` chunks with text have arrived.
fn stream(url: &str, chat: bool, after: usize, midway: impl FnOnce()) -> (Streamed, Duration) {
    let (path, body) = if chat {
        (
            "chat/completions",
            json!({"model": MODEL, "stream": true, "stream_options": {"include_usage": true},
                   "messages": [{"role": "user", "content": "Say something."}]}),
        )
    } else {
        (
            "completions",
            json!({"model": MODEL, "stream": true, "prompt": "Say something."}),
        )
    };
    let started = Instant::now();
    let resp = reqwest::blocking::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .post(format!("{url}/v1/{path}"))
        .json(&body)
        .send()
        .expect("the stream starts");
    assert_eq!(resp.status(), 200);
    let mut datas = Vec::new();
    let mut midway = Some(midway);
    for line in BufReader::new(resp).lines() {
        let line = line.expect("the stream reads to its end, unbroken");
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        datas.push(data.to_string());
        let texts = Streamed::of(datas.iter().map(String::as_str)).text.len();
        if texts > 0 && datas.len() > after {
            if let Some(f) = midway.take() {
                f();
            }
        }
    }
    assert!(midway.is_none(), "the stream ended before the fault");
    (
        Streamed::of(datas.iter().map(String::as_str)),
        started.elapsed(),
    )
}

/// Which of `nodes` has a request in flight: the one generating the stream. A round's admission
/// check may keep the other busy for a moment too.
fn generating(nodes: &[&NodeProc]) -> usize {
    let mut busy = Vec::new();
    wait_for("one node generating", Duration::from_secs(5), || {
        busy = (0..nodes.len())
            .filter(|&i| nodes[i].status()["in_flight"].as_u64().unwrap_or(0) > 0)
            .collect();
        busy.len() == 1
    });
    busy[0]
}

fn continued(node: &NodeProc) -> Vec<String> {
    node.stderr_lines()
        .into_iter()
        .filter(|l| l.contains("stream continued on another replica"))
        .collect()
}

#[test]
fn a_stream_survives_its_node_and_its_backend_dying() {
    let mut fixtures = [Fixture::paced(0, 150), Fixture::paced(0, 150)];
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    // A round 4 s from now, then every 30 s: A and B are admitted in the first one.
    let spec = format!("{}:30000:3000", now_ms + 4000);
    let base = ["--schedule-spec", &spec, "--gossip-port", "0"];
    let a = NodeProc::start(&[&base[..], &["--standby", "--name", "A"]].concat());
    let b = NodeProc::start(
        &[
            &base[..],
            &["--standby", "--name", "B", "--join", &a.invite],
        ]
        .concat(),
    );
    let c =
        NodeProc::start(&[&base[..], &["--client", "--name", "C", "--join", &a.invite]].concat());
    let mut nodes = [a, b];
    for (n, f) in nodes.iter().zip(&fixtures) {
        register(n, &f.url());
    }
    for n in &nodes {
        n.wait_state("serving", Duration::from_secs(10));
    }
    wait_for("C routes to A and B", Duration::from_secs(40), || {
        routable(&c, "A") && routable(&c, "B")
    });

    // 1. The generating node's backend dies: that node ends its stream with an error event,
    //    which C does not pass on: B or A finishes the answer.
    let mut victim = None;
    let (s, took) = stream(&c.url, false, 4, || {
        let i = generating(&[&nodes[0], &nodes[1]]);
        fixtures[i].kill();
        victim = Some(i);
    });
    let i = victim.unwrap();
    eprintln!(
        "backend of {} killed mid-stream: {s:?} in {took:?}",
        ["A", "B"][i]
    );
    assert!(s.is_whole(), "one unbroken completion stream: {s:?}");
    assert_eq!(continued(&c).len(), 1, "C continued it once");

    // The backend returns on its port; the node serves, and C routes to it, again.
    let port = fixtures[i].port;
    fixtures[i] = Fixture::paced(port, 150);
    nodes[i].wait_state("serving", Duration::from_secs(10));
    let name = ["A", "B"][i];
    wait_for(
        "C routes to the node again",
        Duration::from_secs(40),
        || routable(&c, name),
    );

    // 2. The generating node itself dies: its connection to C breaks mid-stream.
    let mut victim = None;
    let (s, took) = stream(&c.url, true, 4, || {
        let i = generating(&[&nodes[0], &nodes[1]]);
        nodes[i].kill();
        victim = Some(i);
    });
    let dead = victim.unwrap();
    eprintln!(
        "node {} killed mid-stream: {s:?} in {took:?}",
        ["A", "B"][dead]
    );
    assert!(s.is_whole(), "one unbroken chat stream: {s:?}");
    assert_eq!(s.openings, 1, "one opening chunk: {s:?}");
    assert_eq!(
        s.completion_tokens,
        Some(16),
        "usage counts the whole answer, both nodes' parts: {s:?}"
    );
    assert_eq!(continued(&c).len(), 2);
    let (_, reqs) = common::get_json(&format!("{}/api/requests?limit=5", c.url));
    let last: &Value = &reqs["requests"][0];
    assert_eq!(last["status"], 200, "{reqs}");
    assert!(last["error"].is_null(), "{reqs}");

    // 3. One replica left, and its backend dies mid-stream: the client is told, in-band.
    let alive = 1 - dead;
    let (s, _) = stream(&c.url, true, 4, || fixtures[alive].kill());
    eprintln!("last backend killed mid-stream: {s:?}");
    assert!(s.done, "the stream still ends with [DONE]: {s:?}");
    assert_eq!(s.errors.len(), 1, "{s:?}");
    let msg = s.errors[0]["error"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("no other replica") && msg.contains("retry"),
        "the error says what happened and what to do: {msg}"
    );
    assert!(TEXT.starts_with(&s.text) && !s.text.is_empty(), "{s:?}");
}
