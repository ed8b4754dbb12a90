//! This node's own signed statements (record and heartbeat) and the clock they are stamped
//! with: what the gossip task sends and the handle re-signs on every publish.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::SigningKey;
use infermesh_state::membership::Counters;

use crate::record::NodeRecord;
use crate::signed::{sign_beat, sign_record, Envelope, SignedBeat, SignedRecord};
use crate::validation::node_id_from_public_key;

pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Generation = start time in ms, strictly increasing within the process so two incarnations
/// started in the same millisecond (tests) still order.
pub(crate) fn next_generation() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = unix_ms();
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(prev + 1);
        match LAST.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(actual) => prev = actual,
        }
    }
}

fn envelope(
    key: &SigningKey,
    mesh: &str,
    node_id: &str,
    generation: u64,
    version: u64,
    gossip_addr: SocketAddr,
    record: &NodeRecord,
) -> Envelope {
    Envelope {
        mesh: mesh.to_string(),
        node_id: node_id.to_string(),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        generation,
        version,
        gossip_addr: gossip_addr.to_string(),
        issued_ms: unix_ms(),
        record: record.encode(),
    }
}

/// This node's own statements, re-signed on every publish and heartbeat.
pub(crate) struct Own {
    pub key: SigningKey,
    pub mesh: String,
    pub node_id: String,
    pub generation: u64,
    pub gossip_addr: SocketAddr,
    pub version: u64,
    pub beat: u64,
    pub record: NodeRecord,
    pub signed: SignedRecord,
    pub beat_sig: SignedBeat,
}

impl Own {
    /// The owner's record, signed: version 1 and beat 1 of a new incarnation.
    pub(crate) fn new(
        key: SigningKey,
        mesh: String,
        generation: u64,
        gossip_addr: SocketAddr,
        record: NodeRecord,
    ) -> Self {
        let node_id = node_id_from_public_key(key.verifying_key().as_bytes());
        let (version, beat) = (1, 1);
        let signed = sign_record(
            &key,
            &envelope(
                &key,
                &mesh,
                &node_id,
                generation,
                version,
                gossip_addr,
                &record,
            ),
        );
        let beat_sig = sign_beat(&key, &mesh, &node_id, generation, beat);
        Self {
            key,
            mesh,
            node_id,
            generation,
            gossip_addr,
            version,
            beat,
            record,
            signed,
            beat_sig,
        }
    }

    fn resign(&mut self) {
        let env = envelope(
            &self.key,
            &self.mesh,
            &self.node_id,
            self.generation,
            self.version,
            self.gossip_addr,
            &self.record,
        );
        self.signed = sign_record(&self.key, &env);
    }

    pub fn set_record(&mut self, record: NodeRecord) {
        self.record = record;
        self.version += 1;
        self.resign();
    }

    pub fn next_beat(&mut self) {
        self.beat += 1;
        self.beat_sig = sign_beat(
            &self.key,
            &self.mesh,
            &self.node_id,
            self.generation,
            self.beat,
        );
    }

    pub fn counters(&self) -> Counters {
        Counters {
            generation: self.generation,
            version: self.version,
            beat: self.beat,
        }
    }
}
