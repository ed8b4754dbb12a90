//! Signed validations and schedule adoption over real UDP gossip on 127.0.0.1.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use infermesh_mesh::{
    fast_schedule, node_id_from_public_key, sign, verify, BackendValidation, EmbeddedSchedule,
    Mesh, MeshConfig, MeshHandle, MeshSecret, NodeRecord, Rejection, Schedule, ValidationResult,
};
use infermesh_state::{NodeState, ScheduleSpec};

const CONVERGE_LIMIT: Duration = Duration::from_secs(10);
const GENESIS: i64 = 1_700_000_000_000;

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn id_of(k: &SigningKey) -> String {
    node_id_from_public_key(k.verifying_key().as_bytes())
}

fn passing(node_id: &str, epoch: u64) -> ValidationResult {
    let backend = BackendValidation {
        backend_id: "b1".into(),
        model: "smollm2".into(),
        infer_ms: 90,
        tokens: 16,
        error: None,
    };
    ValidationResult::from_backends(node_id, epoch, vec![backend], GENESIS)
}

async fn start(k: &SigningKey, record: NodeRecord, seeds: &[&MeshHandle]) -> MeshHandle {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut cfg = MeshConfig::new(k.clone(), MeshSecret::from_bytes([9; 32]), addr, record);
    cfg.seeds = seeds.iter().map(|s| s.gossip_addr().to_string()).collect();
    Mesh::start(cfg).await.expect("mesh starts")
}

fn base_record(node_id: &str) -> NodeRecord {
    NodeRecord {
        node_id: node_id.into(),
        name: node_id.into(),
        state: Some(NodeState::Standby),
        models: vec!["smollm2".into()],
        version: "test".into(),
        ..Default::default()
    }
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < CONVERGE_LIMIT,
            "timed out after {CONVERGE_LIMIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

/// Every node sees every other node's current validation.
fn validations_converged(nodes: &[&MeshHandle]) -> bool {
    nodes.iter().all(|me| {
        let peers = me.peers();
        peers.len() == nodes.len() - 1
            && nodes
                .iter()
                .filter(|n| n.node_id() != me.node_id())
                .all(|n| {
                    peers.iter().any(|p| {
                        p.record.node_id == n.node_id()
                            && p.record.validation == n.record().validation
                    })
                })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_stale_validations_are_told_apart_by_every_reader() {
    let epoch = 7;
    let (ka, kb, kc, kx) = (key(1), key(2), key(3), key(99));
    let (a_id, b_id, c_id) = (id_of(&ka), id_of(&kb), id_of(&kc));

    // a: honest, current. b: claims its own key but the signature is another key's (forged).
    // c: honest signature, previous epoch (stale).
    let mut forged = sign(passing(&b_id, epoch), &kx);
    forged.public_key = hex::encode(kb.verifying_key().as_bytes());
    let with = |id: &str, v| NodeRecord {
        validation: Some(v),
        ..base_record(id)
    };
    let a = start(&ka, with(&a_id, sign(passing(&a_id, epoch), &ka)), &[]).await;
    let b = start(&kb, with(&b_id, forged), &[&a]).await;
    let c = start(
        &kc,
        with(&c_id, sign(passing(&c_id, epoch - 1), &kc)),
        &[&a],
    )
    .await;

    let took = wait_for("validations to converge", || {
        validations_converged(&[&a, &b, &c])
    })
    .await;
    eprintln!("validations converged in {took:?}");

    // Every node reads the others' statements the same way: a's verifies, b's forgery is
    // refused as a bad signature, c's is authentic but for another epoch.
    let verdict = |n: &MeshHandle, id: &str| {
        let p = n.peer(id).expect("peer listed");
        verify(
            p.record.validation.as_ref().expect("carries one"),
            id,
            epoch,
        )
        .map(|r| r.is_passing())
        .map_err(|e| match e {
            Rejection::BadSignature => "bad signature",
            Rejection::WrongEpoch { .. } => "wrong epoch",
            _ => "other",
        })
    };
    for n in [&a, &b, &c] {
        let me = n.node_id();
        for (id, want) in [
            (&a_id, Ok(true)),
            (&b_id, Err("bad signature")),
            (&c_id, Err("wrong epoch")),
        ] {
            if id.as_str() != me {
                assert_eq!(verdict(n, id), want, "{id} as seen by {me}");
            }
        }
    }

    // c re-validates honestly for the current epoch: every node reads it as passing.
    c.publish(with(&c_id, sign(passing(&c_id, epoch), &kc)));
    wait_for("c's new result everywhere", || {
        [&a, &b].iter().all(|n| verdict(n, &c_id) == Ok(true))
    })
    .await;
    for n in [a, b, c] {
        n.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_a_spec_learns_it_from_peers() {
    let spec = fast_schedule(GENESIS);
    let minority = ScheduleSpec {
        epoch_ms: 30_000,
        ..spec
    };
    let with = |id: &str, s: Option<ScheduleSpec>| NodeRecord {
        schedule: s,
        ..base_record(id)
    };
    let a = start(&key(11), with("a", Some(spec)), &[]).await;
    let b = start(&key(12), with("b", Some(spec)), &[&a]).await;
    let m = start(&key(13), with("m", Some(minority)), &[&a]).await;
    let c = start(&key(14), with("c", None), &[&a]).await;

    let learner = EmbeddedSchedule::new(None);
    assert_eq!(learner.spec(), None);
    assert!(!learner.timing(600_000).is_known(), "unknown until learnt");
    let mut changes = c.subscribe();
    let took = wait_for("c to see all three specs", || {
        changes.borrow_and_update();
        c.peers()
            .iter()
            .filter(|p| p.record.schedule.is_some())
            .count()
            == 3
    })
    .await;
    eprintln!("specs reached c in {took:?}");
    assert_eq!(
        learner.learn_from_peers(&c.peers()),
        Some(spec),
        "majority wins"
    );
    assert_eq!(learner.spec(), Some(spec));
    assert!(learner.timing(600_000).is_known());

    // Publishing the adopted spec lets nodes further out learn it from c too.
    c.publish(with("c", learner.spec()));
    wait_for("c's adopted spec to propagate", || {
        a.peers()
            .iter()
            .any(|p| p.record.node_id == c.node_id() && p.record.schedule == Some(spec))
    })
    .await;

    // A node with its own spec keeps it whatever the peers say.
    let own = EmbeddedSchedule::new(Some(minority));
    assert_eq!(own.learn_from_peers(&c.peers()), Some(minority));

    for n in [a, b, m, c] {
        n.shutdown().await.unwrap();
    }
}
