//! The compact, versioned record a node publishes to the mesh.
//!
//! The whole record travels as ONE JSON string inside the signed member envelope rather than
//! one key per field: a peer then always sees a consistent snapshot (never the new `state` with
//! the old `models`), and one version bump per publish keeps gossip small.

use infermesh_state::admission::Attestation;
use infermesh_state::split_role::SplitClaim;
use infermesh_state::usage::Usage;
use infermesh_state::{classify_legacy, NodeState, ScheduleSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::group::{GroupDecl, MAX_GROUPS, MAX_REPLICAS};
use crate::validation::SignedValidation;

/// Replicas, models on disk and demand entries a record may carry; a reader drops the rest.
pub const MAX_REPLICA_CLAIMS: usize = 16;
pub const MAX_DISK_MODELS: usize = 32;

/// One model this node has assigned to a backend: loading, or ready to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaClaim {
    pub model: String,
    /// Loaded and answering (otherwise loading).
    #[serde(default)]
    pub ready: bool,
    /// Started by the mesh's placement (releasable), not by an operator.
    #[serde(default)]
    pub placed: bool,
    /// The node this replica is replacing (a live migration's target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
}

/// A model file on this node's disk, with its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskModel {
    pub model: String,
    #[serde(default)]
    pub bytes: u64,
}

/// Attestations a record may carry; a reader drops the rest. Each is ~150 bytes, so the cap keeps
/// a record well inside `MAX_RECORD_BYTES` while covering a busy verifier (about `k` subjects per
/// node on average, a few times that at most; see `infermesh_state::admission`).
pub const MAX_ATTESTATIONS: usize = 64;

/// Schema version written by this build. Bump it when a field changes meaning, never for an
/// added field (unknown fields are ignored by older readers).
pub const RECORD_SCHEMA_VERSION: u32 = 1;

/// Name of the record in diagnostics (kept for tools that read it).
pub const RECORD_KEY: &str = "record";

/// What a node tells the mesh about itself.
///
/// Every field has a default so a record from an older or newer build decodes: missing fields
/// default, unknown fields are ignored. Decode with [`decode_record`], which also classifies
/// records that predate `state`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeRecord {
    /// Schema version; 0 when absent (a writer that predates versioning).
    #[serde(default)]
    pub v: u32,
    pub node_id: String,
    pub name: String,
    /// `host:port` of the node's HTTP API.
    pub api_addr: String,
    /// Live state. `None` only in records from builds that predate it; see
    /// [`NodeRecord::effective_state`].
    #[serde(
        deserialize_with = "lenient_state",
        skip_serializing_if = "Option::is_none"
    )]
    pub state: Option<NodeState>,
    /// Legacy role (`"client"`, `"worker"`, ...) kept so older readers can still classify us.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// Models this node serves.
    pub models: Vec<String>,
    #[serde(deserialize_with = "lenient_f32")]
    pub vram_gb: f32,
    #[serde(deserialize_with = "lenient_f32")]
    pub ram_gb: f32,
    /// Software version of the publishing node.
    pub version: String,
    /// In-flight requests.
    pub load: u32,
    /// Signed validation result for the current epoch (filled by the validation round). Peers
    /// decide what it grants with [`crate::validation::verify`]; a malformed one reads as `None`.
    #[serde(
        deserialize_with = "lenient_validation",
        skip_serializing_if = "Option::is_none"
    )]
    pub validation: Option<SignedValidation>,
    /// The epoch schedule this node uses, so a node without one in its config can learn it
    /// ([`crate::schedule::adopt_schedule`]). A malformed one reads as `None`.
    #[serde(
        deserialize_with = "lenient_schedule",
        skip_serializing_if = "Option::is_none"
    )]
    pub schedule: Option<ScheduleSpec>,
    /// This node's checks of other members ([`Attestation`]): what admits *them*. The record's
    /// envelope signature makes each one this node's statement. Malformed entries are dropped one
    /// by one; at most [`MAX_ATTESTATIONS`] are read.
    #[serde(
        deserialize_with = "lenient_attestations",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub attestations: Vec<Attestation>,
    /// Bytes of memory this node offers to carry layers of another node's model (a split
    /// worker's capacity, capped by `--max-mem`); 0 when it offers none.
    #[serde(deserialize_with = "lenient_u64", skip_serializing_if = "is_zero")]
    pub mem_offer_bytes: u64,
    /// Its part in a split: host of a model, or worker for a host. A malformed or ill-formed
    /// claim reads as `None`.
    #[serde(
        deserialize_with = "lenient_split",
        skip_serializing_if = "Option::is_none"
    )]
    pub split: Option<SplitClaim>,
    /// Workload groups this node knows, each operator-signed ([`crate::group`]). Relayed, not
    /// vouched for: every reader verifies them against its own operator registry.
    #[serde(
        deserialize_with = "lenient_groups",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub groups: Vec<GroupDecl>,
    /// Every model assigned to one of its backends, loading or ready.
    #[serde(
        deserialize_with = "lenient_replicas",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub replicas: Vec<ReplicaClaim>,
    /// Model files on its disk: placement prefers nodes that need no download.
    #[serde(
        deserialize_with = "lenient_disk",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub on_disk: Vec<DiskModel>,
    /// Extra replicas demand calls for, per model, as the group's demand judge measured them
    /// (`infermesh_state::demand`); bounded by the group's own `max` wherever it is read.
    #[serde(
        deserialize_with = "lenient_demand",
        skip_serializing_if = "std::collections::BTreeMap::is_empty"
    )]
    pub demand: std::collections::BTreeMap<String, u32>,
    /// What the node uses of its machine (CPU, memory): a claim, shown, never acted on. A
    /// malformed one reads as `None`; out-of-range numbers are clamped.
    #[serde(
        deserialize_with = "lenient_usage",
        skip_serializing_if = "Option::is_none"
    )]
    pub usage: Option<Usage>,
}

impl Default for NodeRecord {
    fn default() -> Self {
        Self {
            v: RECORD_SCHEMA_VERSION,
            node_id: String::new(),
            name: String::new(),
            api_addr: String::new(),
            state: None,
            role: None,
            models: Vec::new(),
            vram_gb: 0.0,
            ram_gb: 0.0,
            version: String::new(),
            load: 0,
            validation: None,
            schedule: None,
            attestations: Vec::new(),
            mem_offer_bytes: 0,
            split: None,
            groups: Vec::new(),
            replicas: Vec::new(),
            on_disk: Vec::new(),
            demand: std::collections::BTreeMap::new(),
            usage: None,
        }
    }
}

impl NodeRecord {
    /// The record's state, or the legacy classification when it has none: an old node is still
    /// a member and must be shown and routed to as what it is, not dropped.
    pub fn effective_state(&self) -> NodeState {
        self.state
            .unwrap_or_else(|| classify_legacy(self.role.as_deref(), &self.models))
    }

    /// The wire form stored under [`RECORD_KEY`].
    ///
    /// Non-finite floats are zeroed first: serde_json writes NaN as `null`, which would make the
    /// whole record undecodable for strict readers.
    pub fn encode(&self) -> String {
        let mut r = self.clone();
        for x in [&mut r.vram_gb, &mut r.ram_gb] {
            if !x.is_finite() {
                *x = 0.0;
            }
        }
        r.usage = r.usage.map(Usage::sanitized);
        // Cannot fail: every field is a plain string, number, bool, list or struct of those.
        serde_json::to_string(&r).unwrap_or_else(|_| "{}".to_string())
    }
}

/// Decodes a peer's record. Tolerant by design: a peer running another build must never crash or
/// wedge us, so anything that is not a JSON object yields `None` (logged at debug), and a record
/// without `state` gets one from [`classify_legacy`].
pub fn decode_record(bytes: &str) -> Option<NodeRecord> {
    // Parse to a Value first: serde's derived struct visitor would accept `[]` as a sequence.
    let value: serde_json::Value = match serde_json::from_str(bytes) {
        Ok(v) => v,
        Err(err) => {
            tracing::debug!(%err, len = bytes.len(), "ignoring undecodable peer record");
            return None;
        }
    };
    if !value.is_object() {
        tracing::debug!(
            kind = json_kind(&value),
            "ignoring peer record that is not an object"
        );
        return None;
    }
    match serde_json::from_value::<NodeRecord>(value) {
        Ok(mut record) => {
            if record.state.is_none() {
                record.state = Some(record.effective_state());
            }
            Some(record)
        }
        Err(err) => {
            tracing::debug!(%err, "ignoring peer record with mistyped fields");
            None
        }
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// A state this build does not know (a newer build's) or a Title Case alias must not make the
/// whole record unreadable: unknown → `None`, which then falls back to legacy classification.
fn lenient_state<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeState>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(v.as_str().and_then(NodeState::parse))
}

/// An optional field that must not cost the whole record when it is malformed (another build's
/// shape, a buggy or hostile writer): it reads as `None` instead, logged at debug.
fn lenient_optional<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
    field: &'static str,
) -> Result<Option<T>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    match serde_json::from_value(v) {
        Ok(t) => Ok(Some(t)),
        Err(err) => {
            tracing::debug!(field, %err, "ignoring malformed field in peer record");
            Ok(None)
        }
    }
}

fn lenient_validation<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<SignedValidation>, D::Error> {
    lenient_optional(d, "validation")
}

fn lenient_attestations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Attestation>, D::Error> {
    lenient_list(d, MAX_ATTESTATIONS, |_: &Attestation| true)
}

fn lenient_usage<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Usage>, D::Error> {
    Ok(lenient_optional::<D, Usage>(d, "usage")?.map(Usage::sanitized))
}

fn lenient_split<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SplitClaim>, D::Error> {
    Ok(lenient_optional::<D, SplitClaim>(d, "split")?.filter(SplitClaim::is_well_formed))
}

/// A list field read entry by entry: malformed entries and those past `cap` are dropped, never
/// the record.
fn lenient_list<'de, D: Deserializer<'de>, T: DeserializeOwned>(
    d: D,
    cap: usize,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>, D::Error> {
    let serde_json::Value::Array(items) = serde_json::Value::deserialize(d)? else {
        return Ok(Vec::new());
    };
    Ok(items
        .into_iter()
        .take(cap)
        .filter_map(|item| serde_json::from_value(item).ok())
        .filter(|t| keep(t))
        .collect())
}

fn short_name(m: &str) -> bool {
    !m.is_empty() && m.len() <= 128
}

fn lenient_groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<GroupDecl>, D::Error> {
    lenient_list(d, MAX_GROUPS, |g: &GroupDecl| g.check_shape().is_ok())
}

fn lenient_replicas<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ReplicaClaim>, D::Error> {
    lenient_list(d, MAX_REPLICA_CLAIMS, |r: &ReplicaClaim| {
        short_name(&r.model) && r.replaces.as_deref().is_none_or(short_name)
    })
}

fn lenient_disk<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DiskModel>, D::Error> {
    lenient_list(d, MAX_DISK_MODELS, |m: &DiskModel| short_name(&m.model))
}

fn lenient_demand<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, u32>, D::Error> {
    let serde_json::Value::Object(map) = serde_json::Value::deserialize(d)? else {
        return Ok(Default::default());
    };
    Ok(map
        .into_iter()
        .filter(|(m, _)| short_name(m))
        .filter_map(|(m, v)| Some((m, u32::try_from(v.as_u64()?).ok()?.min(MAX_REPLICAS))))
        .take(MAX_GROUPS)
        .collect())
}

fn lenient_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_u64().unwrap_or(0))
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

fn lenient_schedule<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ScheduleSpec>, D::Error> {
    lenient_optional(d, "schedule")
}

/// `null` (how serde_json writes NaN) and numbers beyond f32's range (which would cast to
/// infinity and pose as unbounded capacity) read as 0, as `encode` writes non-finite values.
fn lenient_f32<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let wide = Option::<f64>::deserialize(d)?.unwrap_or(0.0);
    let narrow = wide as f32;
    Ok(if narrow.is_finite() { narrow } else { 0.0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> NodeRecord {
        NodeRecord {
            node_id: "n1".into(),
            name: "alpha".into(),
            api_addr: "127.0.0.1:7337".into(),
            state: Some(NodeState::Serving),
            models: vec!["smollm2".into()],
            vram_gb: 24.0,
            ram_gb: 64.0,
            version: "0.1.0".into(),
            load: 3,
            ..Default::default()
        }
    }

    #[test]
    fn round_trip() {
        let r = full();
        assert_eq!(decode_record(&r.encode()), Some(r));
    }

    #[test]
    fn legacy_records_are_classified_not_dropped() {
        let client = decode_record(r#"{"node_id":"old","role":"client","models":["m"]}"#).unwrap();
        assert_eq!(client.state, Some(NodeState::Client));
        assert_eq!(client.v, 0, "a record without v predates versioning");

        let serving = decode_record(r#"{"node_id":"old","models":["m"]}"#).unwrap();
        assert_eq!(serving.state, Some(NodeState::Serving));
        assert_eq!(serving.effective_state(), NodeState::Serving);

        let idle = decode_record(r#"{"node_id":"old","role":"worker"}"#).unwrap();
        assert_eq!(idle.state, Some(NodeState::Standby));

        let built = NodeRecord {
            role: Some("client".into()),
            ..Default::default()
        };
        assert_eq!(built.effective_state(), NodeState::Client);
    }

    #[test]
    fn unknown_fields_and_states_are_tolerated() {
        let r = decode_record(
            r#"{"v":7,"node_id":"n","state":"draining","models":["m"],"gpu":{"x":1},"future":[1]}"#,
        )
        .unwrap();
        assert_eq!(r.v, 7);
        assert_eq!(
            r.state,
            Some(NodeState::Serving),
            "unknown state → legacy rule"
        );
        let titled = decode_record(r#"{"state":"Loading"}"#).unwrap();
        assert_eq!(titled.state, Some(NodeState::Loading));
    }

    #[test]
    fn nan_does_not_poison_the_record() {
        let r = NodeRecord {
            vram_gb: f32::NAN,
            ram_gb: f32::INFINITY,
            ..full()
        };
        let back = decode_record(&r.encode()).unwrap();
        assert_eq!((back.vram_gb, back.ram_gb), (0.0, 0.0));
        assert_eq!(decode_record(r#"{"vram_gb":null}"#).unwrap().vram_gb, 0.0);
    }

    #[test]
    fn attestations_round_trip_and_a_bad_one_costs_only_itself() {
        let a = Attestation {
            subject: "s".into(),
            generation: 3,
            model: "m".into(),
            ok: true,
            at_ms: 10,
            expires_ms: 20,
            took_ms: 5,
            error: None,
        };
        let r = NodeRecord {
            attestations: vec![a.clone()],
            ..full()
        };
        assert_eq!(decode_record(&r.encode()), Some(r));
        let mixed = format!(
            r#"{{"node_id":"n","attestations":[{},{{"subject":5}},"x",{}]}}"#,
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&a).unwrap()
        );
        assert_eq!(
            decode_record(&mixed).unwrap().attestations,
            vec![a.clone(), a.clone()]
        );
        let not_a_list = decode_record(r#"{"node_id":"n","attestations":{"a":1}}"#).unwrap();
        assert!(not_a_list.attestations.is_empty());
        let many = format!(
            r#"{{"attestations":[{}]}}"#,
            vec![serde_json::to_string(&a).unwrap(); MAX_ATTESTATIONS + 5].join(",")
        );
        assert_eq!(
            decode_record(&many).unwrap().attestations.len(),
            MAX_ATTESTATIONS
        );
        assert!(!full().encode().contains("attestations"));
    }

    #[test]
    fn validation_and_schedule_round_trip() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let id = crate::validation::node_id_from_public_key(key.verifying_key().as_bytes());
        let result = crate::validation::ValidationResult::from_backends(id.clone(), 3, vec![], 1);
        let r = NodeRecord {
            node_id: id,
            validation: Some(crate::validation::sign(result, &key)),
            schedule: Some(crate::schedule::MESH_SCHEDULE),
            ..full()
        };
        let back = decode_record(&r.encode()).unwrap();
        assert_eq!(back, r);
        // Absent fields stay absent on the wire, so older readers see the record they know.
        let bare = full().encode();
        assert!(
            !bare.contains("validation") && !bare.contains("schedule"),
            "{bare}"
        );
    }

    #[test]
    fn malformed_validation_or_schedule_costs_only_that_field() {
        let base = r#""node_id":"n","models":["m"],"load":2"#;
        for (field, bad) in [
            ("validation", r#"{"epoch":3,"ok":true}"#),
            ("validation", r#""signed""#),
            ("validation", "[1,2]"),
            ("validation", "7"),
            (
                "validation",
                r#"{"result":{"node_id":"n","epoch":-1,"passed":true,"backends":[],"at_ms":0},"public_key":"","signature":""}"#,
            ),
            ("validation", "null"),
            ("schedule", r#"{"genesis_ms":"soon"}"#),
            ("schedule", "true"),
            ("schedule", "null"),
        ] {
            let json = format!(r#"{{{base},"{field}":{bad}}}"#);
            let r = decode_record(&json).unwrap_or_else(|| panic!("record dropped: {json}"));
            assert_eq!((r.validation, r.schedule), (None, None), "{json}");
            assert_eq!((r.node_id.as_str(), r.load), ("n", 2), "{json}");
        }
        // A well-formed but invalid spec decodes: adoption, not decoding, judges validity.
        let r = decode_record(r#"{"schedule":{"genesis_ms":0,"epoch_ms":0,"round_ms":0}}"#);
        assert!(r.unwrap().schedule.is_some());
    }

    #[test]
    fn garbage_is_none_without_panic() {
        for bad in [
            "",
            "{",
            "null",
            "[]",
            "[1,2]",
            "42",
            "\"record\"",
            "true",
            "\u{0}\u{1}\u{fffd}\u{7f}garbage\u{ff}",
            r#"{"load":"lots"}"#,
            r#"{"models":"m"}"#,
        ] {
            assert_eq!(decode_record(bad), None, "{bad:?}");
        }
        // Pseudo-random bytes (deterministic LCG), decoded lossily as a peer's string would be.
        let mut seed = 0x2545_f491_u64;
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..64)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 33) as u8
                })
                .collect();
            let s = String::from_utf8_lossy(&bytes);
            assert_eq!(decode_record(&s), None, "{s:?}");
        }
    }

    #[test]
    fn split_claims_and_offers_round_trip_and_a_bad_claim_costs_only_itself() {
        use infermesh_state::split::Share;
        let share = |id: &str, a, b| Share {
            node_id: id.into(),
            first_layer: a,
            last_layer: b,
            bytes: 1,
        };
        let mut r = full();
        r.mem_offer_bytes = 80_000_000;
        r.split = Some(SplitClaim::Host {
            model: "m".into(),
            shares: vec![share("h", 0, 9), share("w", 10, 29)],
            serving: true,
            need_bytes: 0,
            have_bytes: 0,
        });
        assert_eq!(decode_record(&r.encode()).unwrap(), r);
        // Absent from an idle record's wire form, and zero/None when missing.
        let plain = full().encode();
        assert!(
            !plain.contains("split") && !plain.contains("mem_offer"),
            "{plain}"
        );
        // Ill-formed (a gap in the layers), mistyped or negative: only the field is lost.
        let mut v: serde_json::Value = serde_json::from_str(&r.encode()).unwrap();
        v["split"]["shares"][1]["first_layer"] = 11.into();
        v["mem_offer_bytes"] = (-5).into();
        let back = decode_record(&v.to_string()).unwrap();
        assert_eq!((back.split, back.mem_offer_bytes), (None, 0));
        assert_eq!(back.node_id, r.node_id);
        v["split"] = "host".into();
        assert_eq!(decode_record(&v.to_string()).unwrap().split, None);
    }
}
