//! A hostile sender against real meshes on loopback: outsiders without the secret, and insiders
//! (holding the secret, with keys of their own) that forge, rewrite, replay and flood. For each
//! attack: the attacker is never listed as someone it is not, no real member is dropped or
//! rewritten, and a new honest node still joins.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use infermesh_mesh::signed::{sign_beat, sign_record, Envelope, SignedRecord};
use infermesh_mesh::wire::{Message, Packet, Sealer};
use infermesh_mesh::{
    node_id_from_public_key, Mesh, MeshConfig, MeshHandle, MeshSecret, NodeRecord,
};
use infermesh_state::NodeState;
use tokio::net::UdpSocket;

const LIMIT: Duration = Duration::from_secs(10);

fn secret() -> MeshSecret {
    MeshSecret::from_bytes([77; 32])
}

fn key(n: u8) -> SigningKey {
    SigningKey::from_bytes(&[n; 32])
}

fn id(k: &SigningKey) -> String {
    node_id_from_public_key(k.verifying_key().as_bytes())
}

fn record(name: &str, api: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        api_addr: api.into(),
        state: Some(NodeState::Serving),
        models: vec!["m".into()],
        ..Default::default()
    }
}

async fn node(k: SigningKey, ip: [u8; 4], seeds: &[&MeshHandle]) -> MeshHandle {
    let mut cfg = MeshConfig::new(
        k,
        secret(),
        SocketAddr::from((Ipv4Addr::from(ip), 0)),
        record("honest", "127.0.0.1:7000"),
    );
    cfg.seeds = seeds.iter().map(|s| s.gossip_addr().to_string()).collect();
    cfg.max_per_ip = 8;
    Mesh::start(cfg).await.unwrap()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(m: &MeshHandle) -> Vec<String> {
    m.peers().into_iter().map(|p| p.record.node_id).collect()
}

/// The attacker's own socket and tools.
struct Attacker {
    sock: UdpSocket,
    sealer: Sealer,
}

impl Attacker {
    async fn new(ip: [u8; 4], secret: &MeshSecret) -> Self {
        Self {
            sock: UdpSocket::bind(SocketAddr::from((Ipv4Addr::from(ip), 0)))
                .await
                .unwrap(),
            sealer: Sealer::new(&secret.gossip_key()),
        }
    }

    async fn send(&self, to: SocketAddr, msg: Message) {
        let p = Packet {
            sent_ms: infermesh_mesh::unix_now_ms() as u64,
            from: "attacker".into(),
            msg,
        };
        let bytes = self.sealer.seal(&p).expect("attack packet fits a datagram");
        self.sock.send_to(&bytes, to).await.unwrap();
    }

    async fn raw(&self, to: SocketAddr, bytes: &[u8]) {
        self.sock.send_to(bytes, to).await.unwrap();
    }

    /// Everything it can receive within `d`.
    async fn listen(&self, d: Duration) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        let end = Instant::now() + d;
        while let Ok(Ok((n, _))) =
            tokio::time::timeout_at(end.into(), self.sock.recv_from(&mut buf)).await
        {
            out.push(buf[..n].to_vec());
        }
        out
    }
}

fn envelope(
    k: &SigningKey,
    claimed_id: &str,
    generation: u64,
    gossip: SocketAddr,
    rec: NodeRecord,
) -> Envelope {
    Envelope {
        mesh: secret().mesh_id(),
        node_id: claimed_id.into(),
        public_key: hex::encode(k.verifying_key().as_bytes()),
        generation,
        version: 1,
        gossip_addr: gossip.to_string(),
        issued_ms: 0,
        record: rec.encode(),
    }
}

fn update(records: Vec<SignedRecord>) -> Message {
    Message::Update {
        records,
        beats: vec![],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_change_nothing_and_honest_nodes_still_join() {
    let a = node(key(1), [127, 0, 0, 2], &[]).await;
    let b = node(key(2), [127, 0, 0, 3], &[&a]).await;
    wait_for("a and b to meet", || {
        ids(&a).len() == 1 && ids(&b).len() == 1
    })
    .await;
    let b_view = a.peers()[0].clone();
    let to = a.gossip_addr();

    // 1. Outsider: no secret. Noise, a digest sealed with another key, and an empty digest that
    // once returned every record in plaintext. It reads nothing it can open.
    let outsider = Attacker::new([127, 0, 0, 9], &MeshSecret::from_bytes([1; 32])).await;
    outsider.raw(to, b"hello").await;
    outsider.raw(to, &[0u8; 70_000][..65_000]).await;
    outsider
        .send(
            to,
            Message::Syn {
                digest: vec![],
                reply: false,
            },
        )
        .await;
    let heard = outsider.listen(Duration::from_millis(600)).await;
    for d in &heard {
        assert!(
            !String::from_utf8_lossy(d).contains(&id(&key(2))),
            "plaintext leaked"
        );
    }
    assert!(heard.is_empty(), "an outsider got {} answers", heard.len());

    // From here on the attacker is an insider: it holds the secret (a leaked token).
    let evil = key(66);
    let insider = Attacker::new([127, 0, 0, 10], &secret()).await;
    let evil_gossip = insider.sock.local_addr().unwrap();

    // 2. Impersonation: b's id, a newer generation, the attacker's address, its own key.
    let fake_b = sign_record(
        &evil,
        &envelope(
            &evil,
            &id(&key(2)),
            u64::MAX / 2,
            evil_gossip,
            record("b", "127.0.0.10:1"),
        ),
    );
    // 3. Rewritten record: b's id and key, a body edited by the relay (signature no longer holds).
    let env = envelope(
        &key(2),
        &id(&key(2)),
        u64::MAX / 2,
        evil_gossip,
        record("b", "127.0.0.10:1"),
    );
    let mut rewritten = sign_record(&key(2), &env);
    rewritten.body = rewritten.body.replace("127.0.0.10:1", "127.0.0.10:2");
    // 4. Forged heartbeat for b, signed by the attacker.
    let forged_beat = sign_beat(
        &evil,
        &secret().mesh_id(),
        &id(&key(2)),
        b.generation(),
        1 << 60,
    );
    // 5. A path-injected API address, honestly signed by the attacker for itself.
    let injected = sign_record(
        &evil,
        &envelope(
            &evil,
            &id(&evil),
            1,
            evil_gossip,
            record("evil", "127.0.0.1:80/any/path?x="),
        ),
    );
    insider
        .send(to, update(vec![fake_b, rewritten, injected]))
        .await;
    insider
        .send(
            to,
            Message::Update {
                records: vec![],
                beats: vec![forged_beat],
            },
        )
        .await;

    // 6. Malformed packets from a key holder: garbage inside a good seal, oversized digests.
    for junk in [
        Message::Syn {
            digest: (0..500)
                .map(|i| (format!("x{i}"), u64::MAX, u64::MAX, u64::MAX))
                .collect(),
            reply: false,
        },
        Message::Syn {
            digest: vec![(id(&key(2)), u64::MAX, u64::MAX, u64::MAX)],
            reply: false,
        },
        update(vec![SignedRecord {
            body: "{".repeat(10_000),
            sig: "zz".into(),
        }]),
    ] {
        insider.send(to, junk).await;
    }

    // 7. A flood of sybils from one IP: each a valid member of its own, beyond the per-IP cap.
    let mut sybils = Vec::new();
    for i in 0..40u8 {
        let k = key(100 + i);
        let sib = envelope(&k, &id(&k), 1, evil_gossip, record("sybil", "127.0.0.10:1"));
        sybils.push(sign_record(&k, &sib));
    }
    for chunk in sybils.chunks(10) {
        insider.send(to, update(chunk.to_vec())).await;
    }

    tokio::time::sleep(Duration::from_millis(1500)).await;

    // b is still b: same key, address, generation and record, never dropped.
    let b_now = a.peer(b.node_id()).expect("b dropped");
    assert_eq!(b_now.public_key, b_view.public_key);
    assert_eq!(b_now.gossip_addr, b_view.gossip_addr);
    assert_eq!(b_now.generation, b_view.generation);
    assert_eq!(b_now.record.api_addr, "127.0.0.1:7000");
    assert!(
        b_now.last_seen_ms < 2_000,
        "b went silent: {}",
        b_now.last_seen_ms
    );
    // The injected address was refused; sybils were capped at the per-IP limit (8).
    let peers = a.peers();
    assert!(peers.iter().all(|p| p.record.node_id != id(&evil)));
    let from_evil_ip = peers
        .iter()
        .filter(|p| p.gossip_addr.ip() == evil_gossip.ip())
        .count();
    assert!(from_evil_ip <= 8, "{from_evil_ip} sybils admitted");
    assert!(a.health().running && a.health().restarts == 0);

    // A new honest node on another host still joins, and sees a and b.
    let c = node(key(3), [127, 0, 0, 4], &[&a]).await;
    wait_for("c to join", || {
        let ic = ids(&c);
        ic.contains(&id(&key(1))) && ic.contains(&id(&key(2))) && a.peer(c.node_id()).is_some()
    })
    .await;
}
