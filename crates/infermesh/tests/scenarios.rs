//! Issue 14 §6: the operator's situations as one table. Each row drives real nodes into a
//! situation and states what the node must say there: its state word and sentence in
//! `/api/status`, each backend's state word and sentence in `GET /admin/v1/nodes`, and the same
//! sentences in its log. Sentences are compared by their gist (`infermesh_state::gist`: the
//! words, not the countdown), so a row does not depend on the second it runs in.

mod common;

use std::time::{Duration, Instant};

use common::{
    backend_entry, backend_list, get_json, poll, post_json, wait_for_auto_test, NodeProc, MODEL,
};
use infermesh_state::message::AWAITING_PEER_CHECK;
use infermesh_state::{
    failed_message, gist, peer_notice, standby_message, unhealthy_message, Source,
};
use serde_json::{json, Value};

const TESTING: &str = "Testing now — keep it online until the test finishes";
const ROUND_IN_PROGRESS: &str = "Round in progress — must be online";

/// What one backend must say.
struct BackendSays {
    id: &'static str,
    state: &'static str,
    sentence: String,
}

/// What the watched node must say.
struct Says {
    node_state: &'static str,
    sentence: String,
    backends: Vec<BackendSays>,
}

fn backend(id: &'static str, state: &'static str, sentence: impl Into<String>) -> BackendSays {
    BackendSays {
        id,
        state,
        sentence: sentence.into(),
    }
}

/// A row drives nodes into its situation and returns them, the watched one first (the others
/// are kept alive until the row is checked), with what the watched one must say.
type Run = fn() -> (Vec<NodeProc>, Says);

const TABLE: &[(&str, Run)] = &[
    ("fresh node, schedule unknown", fresh_node_schedule_unknown),
    (
        "untested backend, round in 3 h: the auto-test fires",
        auto_test_fires,
    ),
    ("after a pass", after_a_pass),
    ("round in 5 min", round_in_5_min),
    ("round in progress", round_in_progress),
    ("backend crashed in operation", backend_crashed),
    (
        "config changed after a pass, round in 30 min",
        config_changed_after_pass,
    ),
    ("two backends, one validated", two_backends_one_validated),
    (
        "test requested on a serving backend",
        test_of_a_serving_backend,
    ),
    ("failed load", failed_load),
    ("standby", standby),
    ("client with no peers", client_without_peers),
    (
        "new node joining a running mesh",
        new_node_joins_running_mesh,
    ),
];

#[test]
fn every_situation_reads_the_same_on_every_surface() {
    for (name, run) in TABLE {
        let started = Instant::now();
        let (nodes, says) = run();
        check(name, &nodes[0], &says);
        eprintln!(
            "scenario `{name}`: ok in {:.1} s",
            started.elapsed().as_secs_f32()
        );
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// Waits (a sentence may take one tick of the node's loop to settle) until `/api/status` and
/// the admin list agree with `want` in one look each, then until the log has said every
/// sentence; fails naming the row and showing what the node said instead.
fn check(row: &str, node: &NodeProc, want: &Says) {
    let agrees = |(s, list): &(Value, Vec<Value>)| {
        s["node_state"] == want.node_state
            && gist(text(&s["message"])) == gist(&want.sentence)
            && list.len() == want.backends.len()
            && want.backends.iter().all(|b| {
                list.iter().any(|e| {
                    e["node"]["id"] == b.id
                        && e["onboarding"]["backend_state"] == b.state
                        && gist(text(&e["onboarding"]["message"])) == gist(&b.sentence)
                })
            })
    };
    let look = || (node.status(), backend_list(node));
    let start = Instant::now();
    let mut seen = look();
    while !agrees(&seen) {
        if start.elapsed() > Duration::from_secs(10) {
            let (s, list) = &seen;
            let backends: Vec<String> = list
                .iter()
                .map(|e| {
                    format!(
                        "{} [{}] {}",
                        e["node"]["id"],
                        e["onboarding"]["backend_state"],
                        e["onboarding"]["message"]
                    )
                })
                .collect();
            let wanted: Vec<String> = want
                .backends
                .iter()
                .map(|b| format!("{} [{}] {}", b.id, b.state, b.sentence))
                .collect();
            panic!(
                "scenario `{row}`:\n  status says   [{}] {}\n  status wanted [{}] {}\n  \
                 backends say    {backends:#?}\n  backends wanted {wanted:#?}",
                s["node_state"], s["message"], want.node_state, want.sentence
            );
        }
        std::thread::sleep(Duration::from_millis(100));
        seen = look();
    }
    let sentences =
        std::iter::once(&want.sentence).chain(want.backends.iter().map(|b| &b.sentence));
    for sentence in sentences {
        let g = gist(sentence);
        poll(
            &format!("scenario `{row}`: the log saying `{sentence}`"),
            Duration::from_secs(5),
            Duration::from_millis(100),
            || {
                let lines = node.stderr_lines();
                let said = lines
                    .iter()
                    .any(|l| l.contains("INFO") && gist(l).contains(&g));
                format!("{said} ({} lines)", lines.len())
            },
            |v| v.starts_with("true"),
        );
    }
}

/// `--schedule-spec` with the next round `in_ms` from now and 4 h epochs, 10 min rounds (the
/// alert lead follows the round length: "must be online" from 10 min before).
fn round_in(in_ms: i64) -> [String; 2] {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    [
        "--schedule-spec".into(),
        format!("{}:14400000:600000", now + in_ms),
    ]
}

/// A far round (1 h, after which one-minute epochs): registrations are auto-tested.
fn far() -> [String; 2] {
    common::far_round_schedule()
}

fn start(args: &[&str], schedule: &[String; 2]) -> NodeProc {
    let mut all: Vec<&str> = args.to_vec();
    all.extend([schedule[0].as_str(), schedule[1].as_str()]);
    NodeProc::start(&all)
}

fn register(node: &NodeProc, body: Value) {
    let (code, v) = post_json(&format!("{}/admin/v1/nodes", node.url), &body);
    assert_eq!(code, 201, "{v}");
}

fn serving(node: &NodeProc) {
    node.wait_state("serving", Duration::from_secs(120));
}

fn logged(node: &NodeProc, what: &str, needle: &str) {
    poll(
        what,
        Duration::from_secs(60),
        Duration::from_millis(50),
        || node.stderr_lines().iter().any(|l| l.contains(needle)),
        |said| *said,
    );
}

/// A standby node (its command-line backend idle) with an idle embedded backend `gpu`
/// registered, which the node auto-tests when the round is far enough.
fn standby_with_gpu(schedule: &[String; 2]) -> NodeProc {
    let node = start(&["--standby"], schedule);
    register(
        &node,
        json!({"id": "gpu", "driver": "embedded", "models": [{"name": MODEL}]}),
    );
    node
}

/// `gpu` idle, `validated` by a passing test or not.
fn gpu_idle(validated: bool) -> BackendSays {
    backend(
        "gpu",
        "waiting",
        standby_message("gpu", Source::Config, validated),
    )
}

fn cmd_standby() -> String {
    standby_message("embedded", Source::CommandLine, false)
}

fn fresh_node_schedule_unknown() -> (Vec<NodeProc>, Says) {
    let node = NodeProc::start(&["--schedule", "learn"]);
    serving(&node);
    let sentence = "Serving — schedule syncing, nothing to do yet";
    let says = Says {
        node_state: "serving",
        sentence: sentence.into(),
        backends: vec![backend("embedded", "waiting", sentence)],
    };
    (vec![node], says)
}

fn auto_test_fires() -> (Vec<NodeProc>, Says) {
    let node = standby_with_gpu(&round_in(3 * 3_600_000));
    common::wait_backend(&node, "gpu", "testing", Duration::from_secs(10), |e| {
        e["onboarding"]["backend_state"] == "testing"
    });
    logged(
        &node,
        "the auto-test starting",
        "automatically after a config change",
    );
    let says = Says {
        node_state: "standby",
        sentence: standby_message("gpu", Source::Config, false),
        backends: vec![
            backend("embedded", "waiting", cmd_standby()),
            backend("gpu", "testing", TESTING),
        ],
    };
    (vec![node], says)
}

fn after_a_pass() -> (Vec<NodeProc>, Says) {
    let node = standby_with_gpu(&far());
    let e = wait_for_auto_test(&node, "gpu", Duration::from_secs(60));
    assert_eq!(e["onboarding"]["last_test"]["ok"], true, "{e}");
    logged(&node, "the pass", "test passed");
    let says = Says {
        node_state: "standby",
        sentence: standby_message("gpu", Source::Config, false),
        backends: vec![
            backend("embedded", "waiting", cmd_standby()),
            // A pass does not make idle capacity serve: it says so, and how to assign it.
            backend(
                "gpu",
                "waiting",
                standby_message("gpu", Source::Config, true),
            ),
        ],
    };
    (vec![node], says)
}

fn round_in_5_min() -> (Vec<NodeProc>, Says) {
    let node = start(&[], &round_in(5 * 60_000));
    serving(&node);
    let sentence = "Round starts in 5m — must be online now";
    let says = Says {
        node_state: "serving",
        sentence: sentence.into(),
        backends: vec![backend("embedded", "waiting", sentence)],
    };
    (vec![node], says)
}

fn round_in_progress() -> (Vec<NodeProc>, Says) {
    let node = start(&[], &round_in(-1_000));
    serving(&node);
    // Checked once it serves, though it was still loading when the round opened.
    logged(&node, "the round's own check", "round: backend validated");
    let says = Says {
        node_state: "serving",
        sentence: ROUND_IN_PROGRESS.into(),
        backends: vec![backend("embedded", "waiting", ROUND_IN_PROGRESS)],
    };
    (vec![node], says)
}

fn backend_crashed() -> (Vec<NodeProc>, Says) {
    let schedule = far();
    let mut upstream = start(&[], &schedule);
    serving(&upstream);
    let node = start(&["--standby"], &schedule);
    register(
        &node,
        json!({"id": "remote", "driver": "openai", "url": format!("{}/v1", upstream.url),
               "models": [{"name": MODEL}], "serve": MODEL}),
    );
    common::wait_backend(&node, "remote", "ready", Duration::from_secs(30), |e| {
        e["node"]["phase"] == "ready"
    });
    upstream.kill();
    let e = common::wait_backend(&node, "remote", "unhealthy", Duration::from_secs(30), |e| {
        e["node"]["phase"] == "unhealthy"
    });
    let cause = text(&e["node"]["detail"]).to_string();
    assert!(!cause.is_empty(), "{e}");
    let sentence = unhealthy_message("remote", &cause);
    let says = Says {
        node_state: "loading",
        sentence: sentence.clone(),
        // Never `test_failed`: no test ran, and the fix is not a retest.
        backends: vec![
            backend("embedded", "waiting", cmd_standby()),
            backend("remote", "waiting", sentence),
        ],
    };
    (vec![node, upstream], says)
}

fn config_changed_after_pass() -> (Vec<NodeProc>, Says) {
    let node = standby_with_gpu(&round_in(30 * 60_000));
    // 30 min is too close to the round for a test of its own; the operator runs one.
    logged(
        &node,
        "the skipped auto-test",
        "auto-test skipped: the next round starts in 30m",
    );
    let (code, v) = post_json(&format!("{}/admin/v1/nodes/gpu/test", node.url), &json!({}));
    assert_eq!((code, &v["ok"]), (200, &json!(true)), "{v}");
    let e = backend_entry(&node, "gpu").unwrap();
    assert_eq!(
        text(&e["onboarding"]["message"]),
        standby_message("gpu", Source::Config, true),
        "{e}"
    );
    let changed = json!({"driver": "embedded", "models": [{"name": MODEL, "args": {"seed": 1}}]});
    let code = reqwest::blocking::Client::new()
        .put(format!("{}/admin/v1/nodes/gpu", node.url))
        .json(&changed)
        .send()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(code, 200);
    let says = Says {
        node_state: "standby",
        sentence: standby_message("gpu", Source::Config, false),
        // The change voided the pass at once; nothing retests it this close to the round.
        backends: vec![
            backend("embedded", "waiting", cmd_standby()),
            gpu_idle(false),
        ],
    };
    (vec![node], says)
}

fn two_backends_one_validated() -> (Vec<NodeProc>, Says) {
    let node = start(&[], &far());
    serving(&node);
    register(
        &node,
        json!({"id": "spare", "driver": "embedded", "models": [{"name": MODEL}]}),
    );
    let e = wait_for_auto_test(&node, "spare", Duration::from_secs(60));
    assert_eq!(e["onboarding"]["last_test"]["ok"], true, "{e}");
    // The spare's pass vouches for nothing that serves: the node is not "Validated".
    let says = Says {
        node_state: "serving",
        sentence: AWAITING_PEER_CHECK.into(),
        backends: vec![
            backend("embedded", "waiting", AWAITING_PEER_CHECK),
            backend(
                "spare",
                "waiting",
                standby_message("spare", Source::Config, true),
            ),
        ],
    };
    (vec![node], says)
}

fn test_of_a_serving_backend() -> (Vec<NodeProc>, Says) {
    let node = start(&[], &far());
    serving(&node);
    let (code, v) = post_json(
        &format!("{}/admin/v1/nodes/embedded/test", node.url),
        &json!({}),
    );
    assert_eq!(code, 409, "{v}");
    assert!(
        text(&v["error"]).contains("testing would take it out of service"),
        "{v}"
    );
    let says = Says {
        node_state: "serving",
        sentence: AWAITING_PEER_CHECK.into(),
        backends: vec![backend("embedded", "waiting", AWAITING_PEER_CHECK)],
    };
    (vec![node], says)
}

fn failed_load() -> (Vec<NodeProc>, Says) {
    let (node, s) = common::node_with_a_broken_model();
    let cause = text(&s["backends"][0]["detail"]).to_string();
    let sentence = failed_message("embedded", &cause, Source::CommandLine);
    let says = Says {
        node_state: "loading",
        sentence: sentence.clone(),
        backends: vec![backend("embedded", "waiting", sentence)],
    };
    (vec![node], says)
}

fn standby() -> (Vec<NodeProc>, Says) {
    let node = start(&["--standby"], &far());
    node.wait_state("standby", Duration::from_secs(30));
    let says = Says {
        node_state: "standby",
        sentence: cmd_standby(),
        backends: vec![backend("embedded", "waiting", cmd_standby())],
    };
    (vec![node], says)
}

fn client_without_peers() -> (Vec<NodeProc>, Says) {
    let node = NodeProc::start(&["--client"]);
    let notice = peer_notice(true, 0, 0).expect("a lone client is told");
    assert_eq!(text(&node.status()["peer_message"]), notice);
    let says = Says {
        node_state: "client",
        sentence: notice,
        backends: vec![],
    };
    (vec![node], says)
}

fn new_node_joins_running_mesh() -> (Vec<NodeProc>, Says) {
    let schedule = far();
    let first = start(&[], &schedule);
    serving(&first);
    let client = NodeProc::start(&["--client", "--join", &first.invite]);
    let active_on_client = |id: &str| {
        client.status()["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|p| p["node_id"] == id && p["participation"] == "active")
    };
    let first_id = first.status()["node_id"].as_str().unwrap().to_string();
    poll(
        "the client routing to the first server",
        Duration::from_secs(30),
        Duration::from_millis(100),
        || active_on_client(&first_id),
        |a| *a,
    );
    let newcomer = start(&["--join", &first.invite], &schedule);
    serving(&newcomer);
    let ready = Instant::now();
    let id = newcomer.status()["node_id"].as_str().unwrap().to_string();
    poll(
        "the client routing to the newcomer",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || active_on_client(&id),
        |a| *a,
    );
    eprintln!(
        "newcomer routed by the client {:.2} s after it was serving",
        ready.elapsed().as_secs_f32()
    );
    let (code, v) = get_json(&format!("{}/v1/models", client.url));
    assert_eq!(code, 200, "{v}");
    let sentence = "Serving — active for this epoch; next round in 1h";
    let says = Says {
        node_state: "serving",
        sentence: sentence.into(),
        backends: vec![backend("embedded", "serving", sentence)],
    };
    (vec![newcomer, first, client], says)
}
