//! NODES' live numbers: each node's CPU and memory *use* (not its machine's size), a CPU
//! sparkline over the statuses received, and what it served (tokens/s, p50/p95 latency) from the
//! mesh's request records.

mod common;

use common::{assert_hides, assert_shows, key, screen};
use crossterm::event::KeyCode;
use infermesh_deck::api::{MeshRequestsBody, RequestRecord};
use infermesh_deck::fixtures::{self, NOW_MS, SELF_ID};
use infermesh_deck::{update, Msg};

#[test]
fn nodes_show_cpu_and_memory_use_with_a_sparkline() {
    let mut m = fixtures::model(8, 0);
    for pct in [10.0, 30.0, 50.0, 70.0, 90.0] {
        let mut s = fixtures::status(8);
        s.usage = Some(fixtures::usage(pct, 232));
        update(&mut m, Msg::Status(Box::new(s)));
    }
    let s = screen(&m, 200, 60);
    assert_shows(&s, "CPU");
    assert_shows(&s, "MEM");
    assert_shows(&s, "TOK/S");
    // The connected node: 90 % now, its last four samples rising.
    assert_shows(&s, " 90% ▃▅▆▇");
    assert_shows(&s, "232M");
    // A peer whose build reports no usage says so rather than showing zeros.
    let row = s.lines().find(|l| l.contains("node-0006")).unwrap();
    assert!(row.contains(" - "), "{row}");

    key(&mut m, KeyCode::Enter);
    let s = screen(&m, 200, 60);
    assert_shows(&s, "cpu: 90% of 2 cores (machine 100%)");
    assert_shows(&s, "memory: node 232M · machine 6.0G of 24.0G used");
    assert_shows(&s, "vram / ram: 0.1G / 24.0G (the machine's)");
    assert_hides(&s, "gpu:");

    // A node with GPUs also says what they use.
    let mut st = fixtures::status(8);
    st.usage = Some(infermesh_state::usage::Usage {
        gpu_pct: 40.0,
        vram_used_bytes: 3 << 30,
        vram_total_bytes: 80 << 30,
        ..fixtures::usage(90.0, 232)
    });
    update(&mut m, Msg::Status(Box::new(st)));
    let s = screen(&m, 200, 60);
    assert_shows(&s, "gpu: 40% busy · vram 3.0G of 80.0G used");
}

fn served_by(to: &str, at_ms: i64, latency_ms: u64, tokens: u64) -> RequestRecord {
    RequestRecord {
        to: Some(to.into()),
        at_ms,
        latency_ms,
        tokens: Some(tokens),
        status: 200,
        model: "model-0".into(),
        ..RequestRecord::default()
    }
}

#[test]
fn each_node_shows_what_it_served_from_the_mesh_records() {
    let mut m = fixtures::model(4, 0);
    // The whole mesh's records: the connected node served 30 tokens 5 s ago and 60 a bucket
    // earlier; its latencies 100..=2000 ms.
    let mut requests: Vec<RequestRecord> = (1..=20)
        .map(|i| served_by(SELF_ID, NOW_MS - 30_000 - i * 100, i as u64 * 100, 0))
        .collect();
    requests.push(served_by(SELF_ID, NOW_MS - 6_000, 1_000, 30));
    requests.push(served_by(SELF_ID, NOW_MS - 16_000, 1_000, 60));
    update(
        &mut m,
        Msg::MeshRequests(Ok(MeshRequestsBody {
            requests,
            nodes: Vec::new(),
        })),
    );
    let s = screen(&m, 200, 60);
    let row = s
        .lines()
        .find(|l| l.contains("box-self") && l.contains("SmolLM2"))
        .unwrap();
    assert!(row.contains(" 3.0 "), "3 tokens/s in the last 10 s: {row}");

    key(&mut m, KeyCode::Enter);
    let s = screen(&m, 200, 60);
    assert_shows(&s, "tokens/s: 3.0 now");
    assert_shows(&s, "▁▁▁█▅");
    assert_shows(
        &s,
        "latency: p50 1000 ms · p95 1900 ms (22 requests, last 5 min)",
    );
    // A peer that served nothing lately says so.
    key(&mut m, KeyCode::Esc);
    key(&mut m, KeyCode::Down);
    key(&mut m, KeyCode::Enter);
    assert_shows(&screen(&m, 200, 60), "served: no request in the last 5 min");
}
