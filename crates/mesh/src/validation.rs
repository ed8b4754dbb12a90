//! Signed validation results: what a node's own round found of its backends.
//!
//! A result is the node's statement about itself, signed with its node key so no other member
//! can put words in its mouth (gossip relays records from every member). It admits nothing:
//! routing follows peers' checks (`infermesh_state::admission`).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use infermesh_state::ScheduleSpec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Prepended to the signed bytes so a validation signature can never be replayed as a signature
/// over anything else the node key signs. The version changes whenever the signed encoding does
/// (including any field added to [`ValidationResult`]; see [`signed_bytes`]).
const SIGNING_DOMAIN: &[u8] = b"infermesh-validation-v1\n";

/// The prompt every backend answers during a round, identical on every node so timings compare.
pub const VALIDATION_PROMPT: &str = "Count from one to five, separated by commas.";
/// Token budget for [`VALIDATION_PROMPT`]: enough to measure decoding, short enough for any CPU.
pub const VALIDATION_MAX_TOKENS: u32 = 16;

/// One backend's measured answer to the validation prompt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendValidation {
    pub backend_id: String,
    pub model: String,
    pub infer_ms: u64,
    pub tokens: u32,
    /// Why it failed; `None` when it answered.
    pub error: Option<String>,
}

impl BackendValidation {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// What a node claims about its backends for one epoch.
///
/// Field order is part of the signature format (see [`signed_bytes`]): do not reorder, and adding
/// a field means bumping the signing domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationResult {
    pub node_id: String,
    pub epoch: u64,
    pub passed: bool,
    pub backends: Vec<BackendValidation>,
    /// When the node finished the validation (unix ms, its own clock).
    pub at_ms: i64,
}

impl ValidationResult {
    /// A result whose `passed` follows the backends: at least one backend answered. A node with
    /// one broken backend still serves with the others; only those are admitted
    /// ([`ValidationResult::admitted_backends`]).
    pub fn from_backends(
        node_id: impl Into<String>,
        epoch: u64,
        backends: Vec<BackendValidation>,
        at_ms: i64,
    ) -> Self {
        Self {
            node_id: node_id.into(),
            epoch,
            passed: backends.iter().any(BackendValidation::ok),
            backends,
            at_ms,
        }
    }

    /// Passing as claimed AND backed by a backend that answered, so a hand-built result cannot
    /// claim a pass with nothing behind it.
    pub fn is_passing(&self) -> bool {
        self.passed && self.backends.iter().any(BackendValidation::ok)
    }

    /// The backends this result admits for routing: those that answered.
    pub fn admitted_backends(&self) -> impl Iterator<Item = &BackendValidation> {
        self.backends.iter().filter(|b| b.ok())
    }
}

/// A [`ValidationResult`] with the node's public key and its signature, both lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedValidation {
    pub result: ValidationResult,
    pub public_key: String,
    pub signature: String,
}

/// Why a peer's result was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The key or signature is not well-formed hex of the right length, or not a curve point.
    Malformed(String),
    /// The key does not hash to the node that published the result, or the result names
    /// another node.
    NodeIdMismatch {
        expected: String,
        key_id: String,
        result_id: String,
    },
    /// The signature does not verify over the result (tampered result, or signed by another key).
    BadSignature,
    /// Authentic, but for another epoch.
    WrongEpoch { got: u64, want: u64 },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "malformed validation: {why}"),
            Self::NodeIdMismatch {
                expected,
                key_id,
                result_id,
            } => write!(
                f,
                "validation for node {expected} carries key of {key_id} and names {result_id}"
            ),
            Self::BadSignature => f.write_str("validation signature does not verify"),
            Self::WrongEpoch { got, want } => {
                write!(f, "validation is for epoch {got}, current is {want}")
            }
        }
    }
}

impl std::error::Error for Rejection {}

/// The node id a public key stands for: the first 8 bytes of sha256(key) in lowercase hex (16
/// digits), short enough to read, long enough not to collide in a mesh. The node binary derives
/// its own id with this function, so ids and validation keys always agree.
pub fn node_id_from_public_key(public_key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

/// The exact bytes a result's signature covers: [`SIGNING_DOMAIN`] then the serde_json encoding
/// of the struct.
///
/// serde_json writes struct fields in declaration order with no whitespace, so signer and
/// verifier derive identical bytes from equal values; the verifier re-encodes the decoded struct
/// rather than keeping the wire text, which is what makes the record's outer JSON free to change.
/// The cost: a field unknown to the verifier is dropped on decode and the signature then fails,
/// hence the domain version bump for any added field.
pub fn signed_bytes(result: &ValidationResult) -> Vec<u8> {
    let mut bytes = SIGNING_DOMAIN.to_vec();
    // Cannot fail: strings, integers, bools and a list of the same.
    serde_json::to_writer(&mut bytes, result).expect("ValidationResult always encodes");
    bytes
}

pub fn sign(result: ValidationResult, key: &SigningKey) -> SignedValidation {
    let signature = key.sign(&signed_bytes(&result));
    SignedValidation {
        result,
        public_key: hex::encode(key.verifying_key().as_bytes()),
        signature: hex::encode(signature.to_bytes()),
    }
}

fn decode_hex<const N: usize>(what: &str, s: &str) -> Result<[u8; N], Rejection> {
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out)
        .map_err(|e| Rejection::Malformed(format!("{what}: {e} (want {} hex digits)", 2 * N)))?;
    Ok(out)
}

/// Accepts `signed` only if its key hashes to `expected_node_id` (the gossip identity of the
/// record it came in), the result names that node, the signature verifies, and it is for
/// `current_epoch`.
///
/// Authenticity is checked before the epoch, so a tampered epoch reads as a bad signature rather
/// than as a stale result. Passing is NOT checked: a failed result is a valid statement.
pub fn verify<'a>(
    signed: &'a SignedValidation,
    expected_node_id: &str,
    current_epoch: u64,
) -> Result<&'a ValidationResult, Rejection> {
    let key_bytes = decode_hex::<32>("public_key", &signed.public_key)?;
    let sig_bytes = decode_hex::<64>("signature", &signed.signature)?;
    let key = VerifyingKey::from_bytes(&key_bytes)
        .map_err(|e| Rejection::Malformed(format!("public_key: {e}")))?;
    let key_id = node_id_from_public_key(&key_bytes);
    let result = &signed.result;
    if key_id != expected_node_id || result.node_id != expected_node_id {
        return Err(Rejection::NodeIdMismatch {
            expected: expected_node_id.to_string(),
            key_id,
            result_id: result.node_id.clone(),
        });
    }
    // Strict: rejects weak keys and malleable signatures, so one result has one valid signature.
    key.verify_strict(&signed_bytes(result), &Signature::from_bytes(&sig_bytes))
        .map_err(|_| Rejection::BadSignature)?;
    if result.epoch != current_epoch {
        return Err(Rejection::WrongEpoch {
            got: result.epoch,
            want: current_epoch,
        });
    }
    Ok(result)
}

/// The epoch to validate now, if any: a round is running and this node has not yet published a
/// result for its epoch. A node that joins mid-epoch gets `None` until the next round opens.
pub fn validation_due(
    spec: Option<&ScheduleSpec>,
    now_ms: i64,
    published_epoch: Option<u64>,
) -> Option<u64> {
    let spec = spec.filter(|s| s.validate().is_ok())?;
    let epoch = spec.epoch_at(now_ms)?;
    let (_, round_end) = spec.round_window(epoch);
    (now_ms < round_end && published_epoch != Some(epoch)).then_some(epoch)
}

#[cfg(test)]
#[path = "validation_tests.rs"]
mod tests;
