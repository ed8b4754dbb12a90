//! Real UDP gossip between meshes on 127.0.0.1 (never a wildcard or LAN address).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use infermesh_mesh::{
    node_id_from_public_key, sign, Mesh, MeshConfig, MeshHandle, MeshSecret, NodeRecord, PeerView,
    ValidationResult,
};
use infermesh_state::NodeState;

const CONVERGE_LIMIT: Duration = Duration::from_secs(10);
const DEAD_LIMIT: Duration = Duration::from_secs(5);

fn record(node_id: &str, name: &str) -> NodeRecord {
    NodeRecord {
        node_id: node_id.into(),
        name: name.into(),
        api_addr: format!("127.0.0.1:{}", 7000 + node_id.len()),
        state: Some(NodeState::Standby),
        models: vec![format!("model-of-{node_id}")],
        vram_gb: 8.0,
        ram_gb: 16.0,
        version: "test".into(),
        ..Default::default()
    }
}

/// A stable key per test label, so a label names the same node across restarts.
fn key(label: &str) -> SigningKey {
    use sha2::Digest;
    SigningKey::from_bytes(&sha2::Sha256::digest(label.as_bytes()).into())
}

/// The node id a label's key stands for.
fn id(label: &str) -> String {
    node_id_from_public_key(key(label).verifying_key().as_bytes())
}

fn sorted_ids(labels: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = labels.iter().map(|l| id(l)).collect();
    v.sort();
    v
}

fn secret() -> MeshSecret {
    MeshSecret::from_bytes([42; 32])
}

fn config(label: &str, name: &str, port: u16) -> MeshConfig {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    MeshConfig::new(key(label), secret(), addr, record(&id(label), name))
}

async fn start(label: &str, name: &str, port: u16, seeds: &[&MeshHandle]) -> MeshHandle {
    let mut cfg = config(label, name, port);
    cfg.seeds = seeds.iter().map(|s| s.gossip_addr().to_string()).collect();
    let mesh = Mesh::start(cfg).await.expect("mesh starts");
    assert!(mesh.gossip_addr().ip().is_loopback());
    mesh
}

/// Polls `cond` every 20 ms until it holds or `limit` passes; returns the time it took.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    loop {
        if cond() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(peers: &[PeerView]) -> Vec<String> {
    peers.iter().map(|p| p.record.node_id.clone()).collect()
}

/// Every node sees exactly all the others, each with the record it published.
fn converged(nodes: &[&MeshHandle]) -> bool {
    nodes.iter().all(|me| {
        let peers = me.peers();
        let want: Vec<&MeshHandle> = {
            let mut v: Vec<_> = nodes
                .iter()
                .copied()
                .filter(|n| n.node_id() != me.node_id())
                .collect();
            v.sort_by(|a, b| a.node_id().cmp(b.node_id()));
            v
        };
        peers.len() == want.len()
            && peers.iter().zip(&want).all(|(p, n)| {
                p.record == n.record()
                    && p.gossip_addr == n.gossip_addr()
                    && p.generation == n.generation()
                    && p.state == n.record().effective_state()
            })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge_and_see_record_changes() {
    let a = start("a", "alpha", 0, &[]).await;
    let mut changes = a.subscribe();
    let b = start("b", "bravo", 0, &[&a]).await;
    let c = start("c", "charlie", 0, &[&a]).await;

    let took = wait_for("3-node convergence", CONVERGE_LIMIT, || {
        converged(&[&a, &b, &c])
    })
    .await;
    eprintln!("3 nodes converged in {took:?}");
    assert_eq!(ids(&a.peers()), sorted_ids(&["b", "c"]));
    assert_eq!(ids(&c.peers()), sorted_ids(&["a", "b"]));
    assert!(a.peers().iter().all(|p| p.last_seen_ms < 1_000));
    assert!(
        *changes.borrow_and_update() > 0,
        "joins bump the change counter"
    );

    let mut next = a.record();
    next.state = Some(NodeState::Serving);
    next.load = 5;
    let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
    let result = ValidationResult::from_backends(id("a"), 3, vec![], 1);
    next.validation = Some(sign(result, &key));
    a.publish(next.clone());
    let took = wait_for("record change", CONVERGE_LIMIT, || {
        [&b, &c].iter().all(|n| {
            n.peers().iter().any(|p| {
                p.record.node_id == id("a") && p.record == next && p.state == NodeState::Serving
            })
        })
    })
    .await;
    eprintln!("record change propagated in {took:?}");
    assert!(took <= Duration::from_secs(1), "change took {took:?}");
    assert!(changes.has_changed().is_ok());

    let mut on_b = b.subscribe();
    c.publish(NodeRecord {
        load: 9,
        ..c.record()
    });
    tokio::time::timeout(Duration::from_secs(2), on_b.changed())
        .await
        .expect("a peer's record change bumps the counter")
        .unwrap();

    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_node_leaves_and_restart_rejoins() {
    let a = start("a", "alpha", 0, &[]).await;
    let b = start("b", "bravo", 0, &[&a]).await;
    let c = start("c", "charlie", 0, &[&a]).await;
    wait_for("convergence", CONVERGE_LIMIT, || converged(&[&a, &b, &c])).await;

    let c_addr = c.gossip_addr();
    let old_generation = c.generation();
    let mut on_a = a.subscribe();
    on_a.borrow_and_update();
    // There is no graceful leave: peers see a dropped handle exactly like a crash.
    drop(c);
    let took = wait_for(
        "c to be marked gone",
        DEAD_LIMIT + Duration::from_secs(5),
        || ids(&a.peers()) == [id("b")] && ids(&b.peers()) == [id("a")],
    )
    .await;
    eprintln!("killed node left peers() in {took:?}");
    assert!(took <= DEAD_LIMIT, "dead detection took {took:?}");
    // Announced on the next gossip round at the latest.
    tokio::time::timeout(Duration::from_secs(1), on_a.changed())
        .await
        .expect("a departure bumps the counter")
        .unwrap();

    // Same node_id and same address: only the generation tells the incarnations apart.
    let c2 = start("c", "charlie-2", c_addr.port(), &[&a]).await;
    assert!(c2.generation() > old_generation);
    let took = wait_for("c to rejoin", CONVERGE_LIMIT, || converged(&[&a, &b, &c2])).await;
    eprintln!("restarted node rejoined in {took:?}");
    for n in [&a, &b] {
        let cs: Vec<_> = n
            .peers()
            .into_iter()
            .filter(|p| p.record.node_id == id("c"))
            .collect();
        assert_eq!(cs.len(), 1, "one entry per node_id");
        assert_eq!(cs[0].record.name, "charlie-2");
        assert_eq!(cs[0].generation, c2.generation());
    }

    for n in [a, b, c2] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fast_restart_replaces_the_old_incarnation() {
    let a = start("a", "alpha", 0, &[]).await;
    let b = start("b", "bravo", 0, &[&a]).await;
    wait_for("convergence", CONVERGE_LIMIT, || converged(&[&a, &b])).await;

    // Restart before the failure detector could notice: both incarnations are briefly live.
    let port = b.gossip_addr().port();
    b.shutdown().await.unwrap();
    // The port is free once the old socket's last task has dropped it; wait for that briefly.
    let mut tries = 0;
    let b2 = loop {
        let mut cfg = config("b", "bravo-2", port);
        cfg.seeds = vec![a.gossip_addr().to_string()];
        match Mesh::start(cfg).await {
            Ok(m) => break m,
            Err(e) if tries < 40 => {
                tries += 1;
                eprintln!("rebinding {port}: {e:#}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("port {port} still taken after 2 s: {e:#}"),
        }
    };
    let took = wait_for("new incarnation to win", CONVERGE_LIMIT, || {
        converged(&[&a, &b2])
    })
    .await;
    eprintln!("fast restart replaced the old entry in {took:?}");
    for n in [a, b2] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_nodes_converge() {
    let first = start("n0", "n0", 0, &[]).await;
    let mut nodes = vec![first];
    for i in 1..9 {
        let n = start(&format!("n{i}"), &format!("n{i}"), 0, &[&nodes[0]]).await;
        nodes.push(n);
    }
    let refs: Vec<&MeshHandle> = nodes.iter().collect();
    let took = wait_for("9-node convergence", CONVERGE_LIMIT, || converged(&refs)).await;
    eprintln!("9 nodes converged in {took:?}");
    assert!(
        took <= Duration::from_secs(3),
        "9-node convergence took {took:?}"
    );

    let victim = nodes.pop().unwrap();
    drop(victim);
    let refs: Vec<&MeshHandle> = nodes.iter().collect();
    let took = wait_for(
        "8 survivors to drop n8",
        DEAD_LIMIT + Duration::from_secs(5),
        || converged(&refs),
    )
    .await;
    eprintln!("9 nodes: killed node left every peers() in {took:?}");
    assert!(took <= DEAD_LIMIT, "dead detection took {took:?}");

    for n in nodes {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_clusters_do_not_merge() {
    let a = start("a", "alpha", 0, &[]).await;
    let mut cfg = config("x", "x", 0);
    cfg.secret = MeshSecret::from_bytes([7; 32]);
    cfg.seeds = vec![a.gossip_addr().to_string()];
    let x = Mesh::start(cfg).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(a.peers().is_empty());
    assert!(x.peers().is_empty());
    a.shutdown().await.unwrap();
    x.shutdown().await.unwrap();
}

#[tokio::test]
async fn unadvertisable_address_is_refused() {
    let cfg = MeshConfig::new(
        key("w"),
        secret(),
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        NodeRecord::default(),
    );
    // Fails before any socket is bound, so the wildcard address is never actually used.
    let err = Mesh::start(cfg).await.err().expect("must be refused");
    assert!(err.to_string().contains("advertise"), "{err:#}");
}

/// Tight detection must not cost flapping: a quiet, converged mesh emits no change at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_mesh_does_not_flap() {
    let a = start("a", "alpha", 0, &[]).await;
    let b = start("b", "bravo", 0, &[&a]).await;
    let c = start("c", "charlie", 0, &[&b]).await;
    wait_for("convergence", CONVERGE_LIMIT, || converged(&[&a, &b, &c])).await;
    let mut subs: Vec<_> = [&a, &b, &c].iter().map(|n| n.subscribe()).collect();
    for s in &mut subs {
        s.borrow_and_update();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (n, s) in [&a, &b, &c].iter().zip(&subs) {
        assert!(!s.has_changed().unwrap(), "{} saw a change", n.node_id());
        // Beats come every 0.4 s; a busy CI machine (llama.cpp tests alongside) delays some
        // past 1 s, which is no flap. Half of `dead_after` is still far from suspected.
        let limit = infermesh_mesh::DEFAULT_DEAD_AFTER.as_millis() as u64 / 2;
        let seen: Vec<u64> = n.peers().iter().map(|p| p.last_seen_ms).collect();
        assert!(
            seen.iter().all(|ms| *ms < limit),
            "{} last heard {seen:?} ms ago",
            n.node_id()
        );
    }
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_state_is_garbage_collected() {
    let mut cfg = config("a", "alpha", 0);
    cfg.gc_grace = Duration::from_secs(2);
    let a = Mesh::start(cfg).await.unwrap();
    let b = start("b", "bravo", 0, &[&a]).await;
    wait_for("convergence", CONVERGE_LIMIT, || converged(&[&a, &b])).await;
    assert_eq!(a.known_members(), 1);
    drop(b);
    wait_for("b to leave", DEAD_LIMIT, || a.peers().is_empty()).await;
    let t0 = Instant::now();
    while a.known_members() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "dead state never collected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "dead node's state collected {:?} after it left",
        t0.elapsed()
    );
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_peer_record_is_classified() {
    let a = start("a", "alpha", 0, &[]).await;
    let b = start("b", "bravo", 0, &[&a]).await;
    wait_for("convergence", CONVERGE_LIMIT, || converged(&[&a, &b])).await;
    // What an older build publishes: no `state`, a legacy role. It must be shown, not dropped.
    b.publish(NodeRecord {
        state: None,
        role: Some("client".into()),
        ..b.record()
    });
    wait_for("legacy record", CONVERGE_LIMIT, || {
        a.peers()
            .first()
            .is_some_and(|p| p.state == NodeState::Client && p.record.role.is_some())
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
