//! A member's own statements, signed with its node key: its record (with address and
//! generation) and its heartbeats. Gossip relays them verbatim, so a relaying member can delay
//! or drop them but never rewrite, forge or freshen another member's.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use infermesh_state::membership::Counters;
use infermesh_state::{parse_host_port, HostPort};
use serde::{Deserialize, Serialize};

use crate::record::{decode_record, NodeRecord};
use crate::validation::node_id_from_public_key;

const RECORD_DOMAIN: &[u8] = b"infermesh-member-record-v1\n";
const BEAT_DOMAIN: &[u8] = b"infermesh-member-beat-v1\n";
/// A record's signed body larger than this is refused: it would crowd a datagram.
pub const MAX_RECORD_BYTES: usize = 16 * 1024;

/// What the owner signs about itself. The signed bytes are the exact JSON text sent
/// ([`SignedRecord::body`]), so no re-encoding can make signer and verifier disagree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The mesh fingerprint: a record signed for one mesh means nothing in another.
    pub mesh: String,
    pub node_id: String,
    /// Hex of the ed25519 public key; `node_id` must be its fingerprint.
    pub public_key: String,
    pub generation: u64,
    pub version: u64,
    /// Where the owner gossips (UDP) and serves the mesh's peer API (TCP, mutual TLS).
    pub gossip_addr: String,
    /// The owner's clock when it signed (unix ms): shown, never trusted for ordering.
    pub issued_ms: u64,
    /// [`NodeRecord::encode`] of the owner's record.
    pub record: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedRecord {
    pub body: String,
    pub sig: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedBeat {
    pub node_id: String,
    pub generation: u64,
    pub beat: u64,
    pub sig: String,
}

/// A record that passed every check, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub key: VerifyingKey,
    pub node_id: String,
    pub generation: u64,
    pub version: u64,
    pub gossip_addr: HostPort,
    pub issued_ms: u64,
    pub record: NodeRecord,
}

impl Verified {
    pub fn counters(&self, beat: u64) -> Counters {
        Counters {
            generation: self.generation,
            version: self.version,
            beat,
        }
    }
}

/// Why a signed statement was refused; shown to operators (once per offender).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Malformed(String),
    OtherMesh,
    /// The key does not hash to the claimed node id: someone claims an id they do not own.
    KeyMismatch,
    BadSignature,
    BadAddress(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(w) => write!(f, "malformed: {w}"),
            Self::OtherMesh => f.write_str("signed for another mesh"),
            Self::KeyMismatch => f.write_str("key does not belong to the node id it claims"),
            Self::BadSignature => f.write_str("signature does not verify"),
            Self::BadAddress(w) => write!(f, "bad address: {w}"),
        }
    }
}

fn beat_bytes(mesh: &str, node_id: &str, generation: u64, beat: u64) -> Vec<u8> {
    let mut m = BEAT_DOMAIN.to_vec();
    m.extend_from_slice(mesh.as_bytes());
    m.push(0);
    m.extend_from_slice(node_id.as_bytes());
    m.push(0);
    m.extend_from_slice(&generation.to_be_bytes());
    m.extend_from_slice(&beat.to_be_bytes());
    m
}

fn record_bytes(body: &str) -> Vec<u8> {
    let mut m = RECORD_DOMAIN.to_vec();
    m.extend_from_slice(body.as_bytes());
    m
}

pub fn sign_record(key: &SigningKey, env: &Envelope) -> SignedRecord {
    let body = serde_json::to_string(env).unwrap_or_default();
    let sig = key.sign(&record_bytes(&body));
    SignedRecord {
        body,
        sig: hex::encode(sig.to_bytes()),
    }
}

pub fn sign_beat(
    key: &SigningKey,
    mesh: &str,
    node_id: &str,
    generation: u64,
    beat: u64,
) -> SignedBeat {
    let sig = key.sign(&beat_bytes(mesh, node_id, generation, beat));
    SignedBeat {
        node_id: node_id.to_string(),
        generation,
        beat,
        sig: hex::encode(sig.to_bytes()),
    }
}

fn signature(hex_sig: &str) -> Result<Signature, Refused> {
    let mut b = [0u8; 64];
    hex::decode_to_slice(hex_sig, &mut b)
        .map_err(|_| Refused::Malformed("signature is not 64 bytes of hex".into()))?;
    Ok(Signature::from_bytes(&b))
}

/// Checks a record completely: size, mesh, key ↔ id binding, signature, address shapes.
pub fn verify_record(mesh: &str, signed: &SignedRecord) -> Result<Verified, Refused> {
    if signed.body.len() > MAX_RECORD_BYTES {
        return Err(Refused::Malformed(format!(
            "record of {} bytes (max {MAX_RECORD_BYTES})",
            signed.body.len()
        )));
    }
    verify_envelope(mesh, signed, parse_envelope(signed)?)
}

/// The envelope of a signed record, unverified: enough to order it before paying for the
/// signature check.
pub fn parse_envelope(signed: &SignedRecord) -> Result<Envelope, Refused> {
    serde_json::from_str(&signed.body).map_err(|e| Refused::Malformed(format!("record body: {e}")))
}

/// [`verify_record`] for a record whose envelope [`parse_envelope`] already gave.
pub fn verify_envelope(
    mesh: &str,
    signed: &SignedRecord,
    env: Envelope,
) -> Result<Verified, Refused> {
    if env.mesh != mesh {
        return Err(Refused::OtherMesh);
    }
    let mut kb = [0u8; 32];
    hex::decode_to_slice(&env.public_key, &mut kb)
        .map_err(|_| Refused::Malformed("public key is not 32 bytes of hex".into()))?;
    if node_id_from_public_key(&kb) != env.node_id {
        return Err(Refused::KeyMismatch);
    }
    let key = VerifyingKey::from_bytes(&kb)
        .map_err(|_| Refused::Malformed("public key is not a curve point".into()))?;
    key.verify_strict(&record_bytes(&signed.body), &signature(&signed.sig)?)
        .map_err(|_| Refused::BadSignature)?;
    let gossip_addr = parse_host_port(&env.gossip_addr)
        .map_err(|e| Refused::BadAddress(format!("gossip {e}")))?;
    let mut record = decode_record(&env.record)
        .ok_or_else(|| Refused::Malformed("node record does not decode".into()))?;
    if !record.api_addr.is_empty() {
        let api = parse_host_port(&record.api_addr)
            .map_err(|e| Refused::BadAddress(format!("api {e}")))?;
        record.api_addr = api.to_string();
    }
    // The signed identity is authoritative whatever the record's own field says.
    record.node_id = env.node_id.clone();
    Ok(Verified {
        key,
        node_id: env.node_id,
        generation: env.generation,
        version: env.version,
        gossip_addr,
        issued_ms: env.issued_ms,
        record,
    })
}

/// Checks a beat against the key of the member it claims to be from.
pub fn verify_beat(mesh: &str, key: &VerifyingKey, beat: &SignedBeat) -> Result<(), Refused> {
    key.verify_strict(
        &beat_bytes(mesh, &beat.node_id, beat.generation, beat.beat),
        &signature(&beat.sig)?,
    )
    .map_err(|_| Refused::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    fn env_for(k: &SigningKey) -> Envelope {
        let pk = k.verifying_key().to_bytes();
        Envelope {
            mesh: "m1".into(),
            node_id: node_id_from_public_key(&pk),
            public_key: hex::encode(pk),
            generation: 10,
            version: 2,
            gossip_addr: "127.0.0.2:7337".into(),
            issued_ms: 1,
            record: NodeRecord {
                api_addr: "127.0.0.2:7337".into(),
                node_id: "whatever".into(),
                ..NodeRecord::default()
            }
            .encode(),
        }
    }

    #[test]
    fn a_genuine_record_verifies_and_names_its_signer() {
        let k = key(1);
        let v = verify_record("m1", &sign_record(&k, &env_for(&k))).unwrap();
        assert_eq!(v.record.node_id, v.node_id);
        assert_eq!((v.generation, v.version), (10, 2));
    }

    #[test]
    fn forgeries_are_refused() {
        let (k, other) = (key(1), key(2));
        let good = sign_record(&k, &env_for(&k));
        assert_eq!(verify_record("m2", &good), Err(Refused::OtherMesh));
        // Impersonation: another key claiming k's id.
        let mut e = env_for(&k);
        e.public_key = hex::encode(other.verifying_key().to_bytes());
        assert_eq!(
            verify_record("m1", &sign_record(&other, &e)),
            Err(Refused::KeyMismatch)
        );
        // k's id and key, signed by another key.
        assert_eq!(
            verify_record("m1", &sign_record(&other, &env_for(&k))),
            Err(Refused::BadSignature)
        );
        // A relay rewriting the generation of a genuine record.
        let mut tampered = good.clone();
        tampered.body = tampered
            .body
            .replace("\"generation\":10", "\"generation\":99");
        assert_eq!(verify_record("m1", &tampered), Err(Refused::BadSignature));
        // Path-injected addresses, even when signed by the owner.
        let mut e = env_for(&k);
        e.record = NodeRecord {
            api_addr: "127.0.0.1:80/any/path?x=".into(),
            ..NodeRecord::default()
        }
        .encode();
        assert!(matches!(
            verify_record("m1", &sign_record(&k, &e)),
            Err(Refused::BadAddress(_))
        ));
        let mut e = env_for(&k);
        e.gossip_addr = "nope".into();
        assert!(matches!(
            verify_record("m1", &sign_record(&k, &e)),
            Err(Refused::BadAddress(_))
        ));
        for body in ["", "[]", "{\"mesh\":1}"] {
            let r = SignedRecord {
                body: body.into(),
                sig: "00".into(),
            };
            assert!(matches!(
                verify_record("m1", &r),
                Err(Refused::Malformed(_))
            ));
        }
    }

    #[test]
    fn beats_bind_node_generation_and_count() {
        let k = key(3);
        let b = sign_beat(&k, "m1", "n", 5, 7);
        assert!(verify_beat("m1", &k.verifying_key(), &b).is_ok());
        for forged in [
            SignedBeat {
                beat: 8,
                ..b.clone()
            },
            SignedBeat {
                generation: 6,
                ..b.clone()
            },
            SignedBeat {
                node_id: "o".into(),
                ..b.clone()
            },
        ] {
            assert_eq!(
                verify_beat("m1", &k.verifying_key(), &forged),
                Err(Refused::BadSignature)
            );
        }
        assert!(verify_beat("m2", &k.verifying_key(), &b).is_err());
        assert!(verify_beat("m1", &key(4).verifying_key(), &b).is_err());
    }
}
