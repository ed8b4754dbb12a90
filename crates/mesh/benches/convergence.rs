//! Gossip speed on loopback: how long a fresh mesh takes until every node sees every other, and
//! how long one node's state change takes to reach every peer. Prints a table with the goals the
//! deck and the router rely on; a benchmark, not a test: it always exits 0.
//!
//! `cargo bench -p infermesh-mesh --bench convergence` (finishes in well under a minute).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use infermesh_mesh::{Mesh, MeshConfig, MeshHandle, NodeRecord, DEFAULT_GOSSIP_INTERVAL};
use infermesh_state::NodeState;

/// Past this a measurement is reported as not reached rather than waited for.
const GIVE_UP: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(5);
const CHANGES: usize = 10;
const STATES: [NodeState; 4] = [
    NodeState::Serving,
    NodeState::Loading,
    NodeState::Standby,
    NodeState::Client,
];

fn record(i: usize) -> NodeRecord {
    NodeRecord {
        name: format!("node-{i}"),
        api_addr: format!("127.0.0.1:{}", 7000 + i),
        state: Some(NodeState::Standby),
        models: vec!["smollm2-135m-instruct".into()],
        ram_gb: 16.0,
        version: "bench".into(),
        ..Default::default()
    }
}

/// Starts `n` nodes joined through node 0 (as `infermesh demo` does) and returns them with the
/// time from the first start until every node saw all the others (`None`: not within GIVE_UP).
async fn cluster(n: usize, cluster_id: &str) -> (Vec<MeshHandle>, Option<Duration>) {
    let t0 = Instant::now();
    let mut nodes: Vec<MeshHandle> = Vec::with_capacity(n);
    for i in 0..n {
        let mut cfg = MeshConfig::new(
            format!("n{i:02}"),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            record(i),
        );
        cfg.cluster_id = cluster_id.to_string();
        if let Some(seed) = nodes.first() {
            cfg.seeds = vec![seed.gossip_addr().to_string()];
        }
        nodes.push(Mesh::start(cfg).await.expect("mesh starts on loopback"));
    }
    let took = wait(|| nodes.iter().all(|m| m.peers().len() == n - 1)).await;
    (nodes, took.map(|_| t0.elapsed()))
}

async fn wait(mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < GIVE_UP {
        if cond() {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// Publishes CHANGES state changes, one at a time, from rotating nodes; returns how long each
/// took to be seen by every other node (`None`: some peer never saw it).
async fn propagation(nodes: &[MeshHandle]) -> Vec<Option<Duration>> {
    let mut out = Vec::new();
    for c in 0..CHANGES {
        let from = &nodes[(c * 7 + 1) % nodes.len()];
        let mut next = from.record();
        next.state = Some(STATES[c % STATES.len()]);
        // A fresh load too, so a change to the same state as before is still a change.
        next.load = 1000 + c as u32;
        let want = next.clone();
        from.publish(next);
        let id = from.node_id().to_string();
        let seen = wait(|| {
            nodes.iter().filter(|m| m.node_id() != id).all(|m| {
                m.peers().iter().any(|p| {
                    p.record.node_id == id
                        && p.record.load == want.load
                        && p.state == want.state.unwrap()
                })
            })
        })
        .await;
        out.push(seen);
        // Let the mesh settle so each change is measured on its own.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(
        || format!("> {} s", GIVE_UP.as_secs()),
        |d| format!("{:.3} s", d.as_secs_f64()),
    )
}

fn verdict(d: Option<Duration>, goal: Duration) -> &'static str {
    match d {
        Some(d) if d <= goal => "PASS",
        _ => "MISS",
    }
}

/// Median and max; a change never seen counts as missing (max = None).
fn summary(xs: &[Option<Duration>]) -> (Option<Duration>, Option<Duration>) {
    let mut seen: Vec<Duration> = xs.iter().flatten().copied().collect();
    seen.sort();
    let median = seen.get(seen.len() / 2).copied();
    let max = if seen.len() == xs.len() {
        seen.last().copied()
    } else {
        None
    };
    (median, max)
}

struct Row {
    what: String,
    nodes: usize,
    result: Option<Duration>,
    goal: Option<Duration>,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let started = Instant::now();
    let mut rows = Vec::new();
    for n in [9usize, 30] {
        let id = format!("bench-{}-{n}", std::process::id());
        let (nodes, converged) = cluster(n, &id).await;
        rows.push(Row {
            what: "full convergence (all see all)".into(),
            nodes: n,
            result: converged,
            goal: (n == 9).then_some(Duration::from_secs(2)),
        });
        if converged.is_some() {
            let (median, max) = summary(&propagation(&nodes).await);
            for (what, v) in [("median", median), ("max", max)] {
                rows.push(Row {
                    what: format!("state change → all peers, {what} of {CHANGES}"),
                    nodes: n,
                    result: v,
                    goal: Some(Duration::from_secs(1)),
                });
            }
        }
        for m in nodes {
            let _ = m.shutdown().await;
        }
    }

    println!();
    println!(
        "mesh convergence on loopback (chitchat, gossip every {} ms, one process, {} cores)",
        DEFAULT_GOSSIP_INTERVAL.as_millis(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "{:<42} {:>5}  {:>10}  {:>7}  verdict",
        "measure", "nodes", "result", "goal"
    );
    for r in &rows {
        let goal = r
            .goal
            .map_or("—".to_string(), |g| format!("≤ {} s", g.as_secs()));
        let verdict = r.goal.map_or("", |g| verdict(r.result, g));
        println!(
            "{:<42} {:>5}  {:>10}  {:>7}  {verdict}",
            r.what,
            r.nodes,
            secs(r.result),
            goal
        );
    }
    println!("(whole run {:.1} s)", started.elapsed().as_secs_f64());
}
