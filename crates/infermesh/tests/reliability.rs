//! Load and faults on a real 3-node mesh on loopback. A and B each serve model `bench-fixture`
//! through an `openai` backend pointing at a deterministic fixture process (`infermesh bench
//! fixture`, 16 chunks ~2 ms apart); C is a client node. Under a steady load of concurrent chat
//! requests (to C, which routes, and to A directly) the test kills A's backend, restarts it,
//! kills node B, and restarts it, and checks:
//! - zero failed requests while a replica exists: the router retries before any byte reached the
//!   client, and a stream already under way when its node or backend dies is finished by another
//!   replica (mid-stream failover; the continued streams are counted and printed);
//! - no request hangs: every one ends, well within its timeout;
//! - B leaves the peer tables within 5 s of its crash, and rejoins (listed serving, then routed
//!   to after the next round) once restarted;
//! - A leaves `serving` within 2 s of its backend's death (the health watch), and serves again
//!   once the backend returns.

mod common;
mod fixture_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{get_json, sse_data, NodeProc};
use fixture_support::{peer, peers, register, routable, wait_for, Fixture, Streamed, MODEL, TEXT};
use serde_json::{json, Value};

/// A client gives up on a request after this long; none may come close.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Outcome {
    target: &'static str,
    stream: bool,
    /// `None`: a whole answer; otherwise what went wrong.
    error: Option<String>,
    took: Duration,
    /// Seconds since the load started, for the log.
    at: f64,
}

/// One chat request; a streamed one must end with `[DONE]` and carry no error event.
fn chat(http: &reqwest::blocking::Client, url: &str, stream: bool) -> Option<String> {
    let r = http
        .post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .body(
            json!({"model": MODEL, "stream": stream, "max_tokens": 16,
                   "messages": [{"role": "user", "content": "Say something."}]})
            .to_string(),
        )
        .send();
    let r = match r {
        Ok(r) => r,
        Err(e) => return Some(format!("transport: {e}")),
    };
    let status = r.status();
    let text = match r.text() {
        Ok(t) => t,
        Err(e) => return Some(format!("{status}, body broke: {e}")),
    };
    if !status.is_success() {
        return Some(format!("{status}: {text}"));
    }
    let whole = if stream {
        Streamed::of(sse_data(&text).iter().map(String::as_str)).is_whole()
    } else {
        serde_json::from_str::<Value>(&text)
            .ok()
            .is_some_and(|v| v["choices"][0]["message"]["content"] == TEXT)
    };
    // The end of the body says how it ended.
    let tail: String = text
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    (!whole).then(|| format!("incomplete answer ending: {tail}"))
}

#[test]
fn steady_load_survives_backend_and_node_crashes() {
    let mut f1 = Fixture::start(0);
    let f2 = Fixture::start(0);
    // A round 5 s from now, then every 30 s: A and B are admitted in the first one.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let spec = format!("{}:30000:3000", now_ms + 5000);
    let base = ["--schedule-spec", &spec, "--gossip-port", "0"];
    let a = NodeProc::start(&[&base[..], &["--standby", "--name", "A"]].concat());
    let mut b = NodeProc::start(
        &[
            &base[..],
            &["--standby", "--name", "B", "--join", &a.invite],
        ]
        .concat(),
    );
    let c =
        NodeProc::start(&[&base[..], &["--client", "--name", "C", "--join", &a.invite]].concat());
    register(&a, &f1.url());
    register(&b, &f2.url());
    a.wait_state("serving", Duration::from_secs(10));
    b.wait_state("serving", Duration::from_secs(10));
    wait_for("C routes to A and B", Duration::from_secs(40), || {
        routable(&c, "A") && routable(&c, "B")
    });
    wait_for("A routes to B", Duration::from_secs(10), || {
        routable(&a, "B")
    });

    // Steady load: two clients on C (routed), one on A (local first, then B).
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let t0 = Instant::now();
    let load: Vec<_> = [
        ("C", c.url.clone()),
        ("C", c.url.clone()),
        ("A", a.url.clone()),
    ]
    .into_iter()
    .enumerate()
    .map(|(k, (target, url))| {
        let (stop, outcomes) = (stop.clone(), outcomes.clone());
        std::thread::spawn(move || {
            let http = reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(REQUEST_TIMEOUT)
                .build()
                .unwrap();
            let mut i = k;
            while !stop.load(Ordering::Relaxed) {
                let stream = i % 4 == 0;
                let started = Instant::now();
                let error = chat(&http, &url, stream);
                let o = Outcome {
                    target,
                    stream,
                    error,
                    took: started.elapsed(),
                    at: t0.elapsed().as_secs_f64(),
                };
                if let Some(e) = &o.error {
                    eprintln!("[load] {:.2}s {target} stream={stream}: {e}", o.at);
                }
                outcomes.lock().unwrap().push(o);
                i += 1;
            }
        })
    })
    .collect();
    let ok_count = || {
        outcomes
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.error.is_none())
            .count()
    };
    let more = |n: usize, what: &str| {
        let base = ok_count();
        wait_for(what, Duration::from_secs(20), || ok_count() >= base + n);
    };
    more(30, "requests before any fault");

    // 1. A's backend dies. A's health watch takes it out of service (A stops gossiping the
    //    model); meanwhile every attempt on A fails before any byte and is retried on B.
    f1.kill();
    let left_serving = wait_for("A leaves serving", Duration::from_secs(5), || {
        a.status()["node_state"] != "serving"
    });
    more(30, "requests with A's backend dead");
    eprintln!(
        "A's backend killed: A left serving after {left_serving:?}; message now {}",
        a.status()["message"]
    );
    assert!(
        left_serving <= Duration::from_secs(2),
        "A kept reporting serving {left_serving:?} after its backend died"
    );
    let (_, reqs) = get_json(&format!("{}/api/requests?limit=20", c.url));
    let last = reqs["requests"].as_array().cloned().unwrap_or_default();
    assert!(
        last.iter()
            .all(|r| r["to_name"] == "B" && r["status"] == 200),
        "with A's backend dead C's requests must all end on B: {last:?}"
    );

    // The backend comes back on the same port: A answers locally again.
    let f1 = Fixture::start(f1.port);
    let back = wait_for("A serving again", Duration::from_secs(5), || {
        a.status()["node_state"] == "serving"
    });
    eprintln!("A's backend restarted: A serving again after {back:?}");
    wait_for("A's backend answers again", Duration::from_secs(10), || {
        let r = reqwest::blocking::Client::new()
            .post(format!("{}/v1/chat/completions", a.url))
            .header("x-infermesh-hop", "1")
            .header("content-type", "application/json")
            .body(
                json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]})
                    .to_string(),
            )
            .send();
        r.is_ok_and(|r| r.status() == 200)
    });
    more(20, "requests with A's backend back");

    // A replica must exist in C's view when B dies: A's "serving again" takes a gossip round
    // to reach C, and killing B inside that window leaves C, for a moment, with no live replica
    // it knows of (the faster relayed answers made `more(20)` finish inside it).
    wait_for("C routes to A again", Duration::from_secs(10), || {
        routable(&c, "A")
    });

    // 2. Node B crashes (SIGKILL): its peers drop it within 5 s; requests go to A meanwhile.
    b.kill();
    let crashed = Instant::now();
    let removed_c = wait_for("B removed from C's peers", Duration::from_secs(10), || {
        peer(&peers(&c), "B").is_none()
    });
    let removed_a = crashed.elapsed();
    wait_for("B removed from A's peers", Duration::from_secs(10), || {
        peer(&peers(&a), "B").is_none()
    });
    more(20, "requests with B dead");

    // 3. B restarts (same data dir: same identity, its registered backend restored).
    b.restart();
    let restarted = Instant::now();
    b.wait_state("serving", Duration::from_secs(15));
    let rejoined = wait_for("C lists B serving again", Duration::from_secs(15), || {
        peer(&peers(&c), "B").is_some_and(|p| p["state"] == "serving")
    });
    // A node back mid-epoch is routed to once the next round admits it (≤ one 30 s epoch).
    wait_for("C routes to B again", Duration::from_secs(40), || {
        routable(&c, "B")
    });
    let routed_again = restarted.elapsed();
    let answered_by_b = || {
        let (_, reqs) = get_json(&format!("{}/api/requests?limit=50", c.url));
        reqs["requests"].as_array().is_some_and(|rs| {
            rs.iter().any(|r| {
                r["to_name"] == "B" && r["status"] == 200 && r["at_ms"].as_u64().unwrap_or(0) > 0
            })
        })
    };
    wait_for(
        "C's requests reach B again",
        Duration::from_secs(15),
        answered_by_b,
    );
    more(20, "requests after B's return");
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.join().unwrap();
    }
    drop(f1);

    let all = outcomes.lock().unwrap().clone();
    let failed: Vec<&Outcome> = all
        .iter()
        .filter(|o| o.error.is_some() && !o.stream)
        .collect();
    let cut_streams: Vec<&Outcome> = all
        .iter()
        .filter(|o| o.error.is_some() && o.stream)
        .collect();
    let continued: usize = [&a, &c]
        .iter()
        .map(|n| {
            n.stderr_lines()
                .iter()
                .filter(|l| l.contains("stream continued on another replica"))
                .count()
        })
        .sum();
    let slowest = all.iter().map(|o| o.took).max().unwrap_or_default();
    let on_a = all.iter().filter(|o| o.target == "A").count();
    eprintln!(
        "{} requests ({} to A directly, {} streamed) in {:.1} s; failed non-streamed {}, cut \
         streams {} ({continued} continued on another replica); slowest {slowest:?}; B dropped by C in {removed_c:?} (by A ≤ {removed_a:?}), \
         listed serving again {rejoined:?} after its restart, routed to again after {routed_again:?}",
        all.len(),
        on_a,
        all.iter().filter(|o| o.stream).count(),
        t0.elapsed().as_secs_f64(),
        failed.len(),
        cut_streams.len(),
    );
    assert!(
        failed.is_empty(),
        "client requests failed while a replica existed: {failed:#?}"
    );
    // A stream under way when its node or backend died was finished by the other replica.
    assert!(
        cut_streams.is_empty(),
        "streams were cut although a replica existed: {cut_streams:#?}"
    );
    assert!(
        slowest < REQUEST_TIMEOUT / 2,
        "a request took {slowest:?} (timeout {REQUEST_TIMEOUT:?})"
    );
    assert!(
        removed_c < Duration::from_secs(5),
        "B listed by C for {removed_c:?} after its crash"
    );
    assert!(
        removed_a < Duration::from_secs(6),
        "B listed by A for {removed_a:?}"
    );
}

/// A lone node (no peer to fail over to): its backend dies → it leaves `serving` within 2 s,
/// says why, refuses requests with a clear 503 rather than hanging; the backend returns → it
/// serves again by itself.
#[test]
fn a_node_whose_backend_died_leaves_serving_within_2s_and_recovers() {
    let mut f = Fixture::start(0);
    let a = NodeProc::start(&["--standby", "--name", "A", "--gossip-port", "0"]);
    register(&a, &f.url());
    a.wait_state("serving", Duration::from_secs(10));
    let port = f.port;
    f.kill();
    let took = wait_for("A leaves serving", Duration::from_secs(2), || {
        a.status()["node_state"] != "serving"
    });
    eprintln!("A left serving after {took:?}");
    let s = a.status();
    let msg = s["message"].as_str().unwrap_or_default();
    assert!(msg.contains("stopped answering its health check"), "{s}");
    let fixture = s["backends"]
        .as_array()
        .and_then(|bs| bs.iter().find(|b| b["id"] == "fixture"));
    assert_eq!(
        fixture.map(|b| &b["phase"]),
        Some(&json!("unhealthy")),
        "{s}"
    );
    let http = reqwest::blocking::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .unwrap();
    let r = http
        .post(format!("{}/v1/chat/completions", a.url))
        .header("content-type", "application/json")
        .body(json!({"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}).to_string())
        .send()
        .unwrap();
    let code = r.status().as_u16();
    let body = r.text().unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("health check"), "{body}");

    let _f = Fixture::start(port);
    let back = wait_for("A serving again", Duration::from_secs(5), || {
        a.status()["node_state"] == "serving"
    });
    eprintln!("A serving again {back:?} after its backend returned");
}
