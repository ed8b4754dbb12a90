//! Gossip on loopback, in this process (crates/mesh: signed records and beats in sealed UDP
//! datagrams, default timings — encryption and signatures on, as in every node): time
//! until a fresh mesh of 9 and of 30 nodes has converged (every node sees every other), how long
//! one node's state change takes to reach every peer, and how long a node that stops answering
//! stays listed.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use infermesh_mesh::{Mesh, MeshConfig, MeshHandle, MeshSecret, NodeRecord};
use infermesh_state::NodeState;

use super::{secs, Report};

const SUITE: &str = "mesh";
const GIVE_UP: Duration = Duration::from_secs(20);
const CHANGES: usize = 10;

fn record(i: usize) -> NodeRecord {
    NodeRecord {
        name: format!("sim-{i}"),
        api_addr: format!("127.0.0.1:{}", 20000 + i),
        state: Some(NodeState::Standby),
        models: vec!["smollm2-135m-instruct".into()],
        ram_gb: 16.0,
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

async fn wait(mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < GIVE_UP {
        if cond() {
            return Some(t0.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

/// `n` nodes joined through node 0, as `infermesh demo` starts them.
pub async fn cluster(n: usize, mesh_seed: u8) -> Result<(Vec<MeshHandle>, Option<Duration>)> {
    let t0 = Instant::now();
    let secret = MeshSecret::from_bytes([mesh_seed; 32]);
    let mut nodes: Vec<MeshHandle> = Vec::with_capacity(n);
    for i in 0..n {
        let mut seed = [mesh_seed; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let mut cfg = MeshConfig::new(
            ed25519_dalek::SigningKey::from_bytes(&seed),
            secret.clone(),
            SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            record(i),
        );
        if let Some(seed) = nodes.first() {
            cfg.seeds = vec![seed.gossip_addr().to_string()];
        }
        nodes.push(Mesh::start(cfg).await?);
    }
    let took = wait(|| nodes.iter().all(|m| m.peers().len() == n - 1)).await;
    Ok((nodes, took.map(|_| t0.elapsed())))
}

/// Time for each of CHANGES state changes (from rotating nodes) to be seen by every peer.
async fn propagation(nodes: &[MeshHandle]) -> Vec<Option<Duration>> {
    const STATES: [NodeState; 4] = [
        NodeState::Serving,
        NodeState::Loading,
        NodeState::Standby,
        NodeState::Client,
    ];
    let mut out = Vec::new();
    for c in 0..CHANGES {
        let from = &nodes[(c * 7 + 1) % nodes.len()];
        let mut next = from.record();
        next.state = Some(STATES[c % STATES.len()]);
        next.load = 1000 + c as u32;
        let (want_state, want_load) = (STATES[c % STATES.len()], next.load);
        let id = from.node_id().to_string();
        from.publish(next);
        out.push(
            wait(|| {
                nodes.iter().filter(|m| m.node_id() != id).all(|m| {
                    m.peers().iter().any(|p| {
                        p.record.node_id == id
                            && p.record.load == want_load
                            && p.state == want_state
                    })
                })
            })
            .await,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

fn fmt_opt(d: Option<Duration>) -> String {
    d.map_or_else(|| format!("> {}", secs(GIVE_UP)), secs)
}

pub async fn run(report: &mut Report) -> Result<()> {
    for n in [9usize, 30] {
        // A mesh secret per size: the two meshes must not merge.
        let (mut nodes, converged) = cluster(n, n as u8).await?;
        let goal = Duration::from_secs(2);
        report.goal(
            SUITE,
            format!("{n} nodes: convergence (all see all)"),
            fmt_opt(converged),
            format!("≤ {}", secs(goal)),
            converged.is_some_and(|d| d <= goal),
        );
        if converged.is_none() {
            for m in nodes {
                let _ = m.shutdown().await;
            }
            bail!("{n} nodes did not converge within {GIVE_UP:?}");
        }
        let times = propagation(&nodes).await;
        let mut seen: Vec<Duration> = times.iter().flatten().copied().collect();
        seen.sort();
        let p50 = seen.get(seen.len() / 2).copied();
        let max = (seen.len() == times.len())
            .then(|| seen.last().copied())
            .flatten();
        let goal = Duration::from_secs(1);
        report.goal(
            SUITE,
            format!("{n} nodes: state change → every peer, median / max of {CHANGES}"),
            format!("{} / {}", fmt_opt(p50), fmt_opt(max)),
            format!("max ≤ {}", secs(goal)),
            max.is_some_and(|d| d <= goal),
        );
        // A node that stops answering (there is no goodbye message) leaves every peer table.
        let gone = nodes.remove(n / 2);
        let gone_id = gone.node_id().to_string();
        let t0 = Instant::now();
        let _ = gone.shutdown().await;
        let removed = wait(|| {
            nodes
                .iter()
                .all(|m| m.peers().iter().all(|p| p.record.node_id != gone_id))
        })
        .await
        .map(|_| t0.elapsed());
        let goal = Duration::from_secs(5);
        report.goal(
            SUITE,
            format!("{n} nodes: stopped node removed from every peer table"),
            fmt_opt(removed),
            format!("≤ {}", secs(goal)),
            removed.is_some_and(|d| d <= goal),
        );
        for m in nodes {
            let _ = m.shutdown().await;
        }
    }
    Ok(())
}
