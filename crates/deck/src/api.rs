//! Deck-side mirrors of the wire shapes in `docs/api.md`.
//!
//! Every struct is `#[serde(default)]` and ignores unknown fields: the deck talks to nodes of other
//! versions, and a field it does not know (or one an older node lacks) must never blank the screen.
//! States are kept as the raw strings the node sent and parsed at the edge, so a word this build
//! does not know still renders (as "unknown") instead of failing the whole status body.

use infermesh_state::split_role::SplitClaim;
use infermesh_state::usage::Usage;
use infermesh_state::{classify_legacy, NodeState};
use serde::{Deserialize, Deserializer};

/// `null` and a missing field both mean "default": older nodes send `null` where newer ones omit.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A split claim this build cannot read costs only itself, never the whole status.
fn lenient_split<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SplitClaim>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value(v).ok()))
}

/// A node's usage as it claims it: unreadable reads as unknown, numbers are clamped.
fn lenient_usage<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Usage>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.and_then(|v| serde_json::from_value::<Usage>(v).ok())
        .map(Usage::sanitized))
}

fn unknown_seconds() -> i64 {
    -1
}

/// Parses a state word; `None` means "not a word this build knows".
pub fn parse_state(s: &str) -> Option<NodeState> {
    NodeState::parse(s.trim())
}

/// `GET /api/status`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Status {
    pub node_id: String,
    pub name: String,
    pub version: String,
    pub api_addr: Option<String>,
    pub node_state: Option<String>,
    pub node_status: Option<String>,
    pub participation: Option<String>,
    pub timing: Timing,
    pub message: Option<String>,
    /// "Not connected to any peer — …" while the node should reach peers and reaches none.
    pub peer_message: Option<String>,
    pub epoch: Option<u64>,
    #[serde(deserialize_with = "null_default")]
    pub models: Vec<String>,
    pub vram_gb: Option<f64>,
    pub ram_gb: Option<f64>,
    /// What the node's process and machine use now (CPU, memory).
    #[serde(default, deserialize_with = "lenient_usage")]
    pub usage: Option<Usage>,
    pub in_flight: Option<u64>,
    #[serde(deserialize_with = "null_default")]
    pub backends: Vec<BackendView>,
    #[serde(deserialize_with = "null_default")]
    pub peers: Vec<Peer>,
    #[serde(deserialize_with = "null_default")]
    pub wakeable: Vec<Wakeable>,
    /// Its part in a split, when it has one.
    #[serde(default, deserialize_with = "lenient_split")]
    pub split: Option<SplitClaim>,
    /// The mesh's workload groups as this node sees them.
    #[serde(deserialize_with = "null_default")]
    pub groups: Vec<GroupView>,
}

/// One workload group in `/api/status`: wanted vs serving vs loading replicas and one sentence.
pub use infermesh_state::placement::GroupStatus as GroupView;

impl Status {
    /// `node_state`, else the Title Case `node_status` alias; `None` when neither parses.
    pub fn state(&self) -> Option<NodeState> {
        self.node_state
            .as_deref()
            .and_then(parse_state)
            .or_else(|| self.node_status.as_deref().and_then(parse_state))
    }
}

/// `timing`, in `/api/status` and in onboarding views.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Timing {
    /// `-1` (also the default) means the schedule is unknown.
    #[serde(default = "unknown_seconds")]
    pub seconds_until_next_round: i64,
    pub in_round: bool,
    pub should_be_online: bool,
    pub epoch: Option<u64>,
    pub target_round_epoch: Option<u64>,
    pub next_round_at_ms: Option<i64>,
    pub round_ends_at_ms: Option<i64>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            seconds_until_next_round: -1,
            in_round: false,
            should_be_online: false,
            epoch: None,
            target_round_epoch: None,
            next_round_at_ms: None,
            round_ends_at_ms: None,
        }
    }
}

/// One entry of `status.backends`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BackendView {
    pub id: String,
    pub driver: String,
    #[serde(deserialize_with = "null_default")]
    pub models: Vec<String>,
    pub assigned: Option<String>,
    pub phase: Option<String>,
    pub detail: Option<String>,
    pub mem_gb: Option<f64>,
    /// While its model is read in: percent done and seconds left.
    pub load_pct: Option<u32>,
    pub load_eta_s: Option<u64>,
}

impl BackendView {
    /// "45% read, about 12s left" while loading; `None` otherwise.
    pub fn load_words(&self) -> Option<String> {
        let pct = self.load_pct?;
        Some(match self.load_eta_s {
            Some(s) => format!(
                "{pct}% read, about {} left",
                infermesh_state::format_duration(i64::try_from(s).unwrap_or(i64::MAX))
            ),
            None => format!("{pct}% read"),
        })
    }
}

/// One entry of `status.peers`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Peer {
    pub node_id: String,
    pub name: String,
    pub addr: String,
    /// Absent on records from versions that predate `state`; see [`Peer::node_state`].
    pub state: Option<String>,
    /// Legacy field of those older records.
    pub role: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub models: Vec<String>,
    pub vram_gb: Option<f64>,
    pub ram_gb: Option<f64>,
    #[serde(default, deserialize_with = "lenient_usage")]
    pub usage: Option<Usage>,
    pub version: Option<String>,
    pub load: Option<u64>,
    pub participation: Option<String>,
    /// On the wire: milliseconds since the node last heard from the peer. In the [`Model`]
    /// (after `update`): the local time it was last heard of.
    ///
    /// [`Model`]: crate::model::Model
    pub last_seen_ms: Option<i64>,
    #[serde(default, deserialize_with = "lenient_split")]
    pub split: Option<SplitClaim>,
}

impl Peer {
    /// An absent `state` is classified from the legacy fields (DESIGN §2); a present but
    /// unknown word is `None` and renders as "unknown".
    pub fn node_state(&self) -> Option<NodeState> {
        match &self.state {
            Some(s) => parse_state(s),
            None => Some(classify_legacy(self.role.as_deref(), &self.models)),
        }
    }
}

/// One entry of `status.wakeable`: suspended capacity, never routed to.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Wakeable {
    pub id: String,
    pub provider: String,
    #[serde(deserialize_with = "null_default")]
    pub models: Vec<String>,
    pub vram_gb: Option<f64>,
    pub state: Option<String>,
}

/// One routed request record (`/api/requests`, SSE `request`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RequestRecord {
    pub id: u64,
    pub at_ms: i64,
    pub from: Option<String>,
    /// `None` when no replica could take the request.
    pub to: Option<String>,
    pub to_name: Option<String>,
    pub model: String,
    pub endpoint: Option<String>,
    pub status: u16,
    pub latency_ms: u64,
    pub ttft_ms: Option<u64>,
    pub tokens: Option<u64>,
    pub attempts: Option<u32>,
    pub stream: Option<bool>,
    pub error: Option<String>,
    /// In the mesh view: the node whose ring the record came from.
    pub node: Option<String>,
    /// A peer's admission check of the node, not client traffic.
    pub admission_check: bool,
}

/// `/api/mesh/requests`: the whole mesh's requests, and which members' rings are in it.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct MeshRequestsBody {
    #[serde(deserialize_with = "null_default")]
    pub requests: Vec<RequestRecord>,
    #[serde(deserialize_with = "null_default")]
    pub nodes: Vec<NodeRead>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct NodeRead {
    pub node_id: String,
    pub name: String,
    /// Why this member's ring is missing from the view.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct RequestsBody {
    #[serde(deserialize_with = "null_default")]
    pub requests: Vec<RequestRecord>,
}

/// One log line (`/api/logs`, SSE `log`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct LogLine {
    pub seq: u64,
    pub at_ms: i64,
    pub node_id: String,
    pub level: String,
    pub target: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct LogsBody {
    #[serde(deserialize_with = "null_default")]
    pub lines: Vec<LogLine>,
}

/// One element of `GET /admin/v1/nodes`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct AdminNode {
    pub node: BackendConfig,
    pub onboarding: Option<Onboarding>,
}

/// `node` of an admin entry: the backend's config plus its status.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BackendConfig {
    pub id: String,
    pub driver: String,
    #[serde(deserialize_with = "null_default")]
    pub models: Vec<ModelEntry>,
    pub url: Option<String>,
    pub phase: Option<String>,
    pub loaded: Option<String>,
}

/// A configured model: `{"name", "args"}`, or a bare string from simpler configs.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(from = "ModelEntryWire")]
pub struct ModelEntry {
    pub name: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ModelEntryWire {
    Bare(String),
    Full {
        #[serde(default)]
        name: String,
    },
}

impl From<ModelEntryWire> for ModelEntry {
    fn from(w: ModelEntryWire) -> Self {
        match w {
            ModelEntryWire::Bare(name) | ModelEntryWire::Full { name } => ModelEntry { name },
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct Onboarding {
    pub backend_state: Option<String>,
    pub participation: Option<String>,
    pub validated: Option<bool>,
    /// The node's own sentence; the deck renders it verbatim.
    pub message: Option<String>,
    pub failing_model: Option<String>,
    pub timing: Timing,
    pub last_test: Option<TestResult>,
}

/// `POST /admin/v1/nodes/:id/test`, and `last_test`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct TestResult {
    pub ok: bool,
    pub backend_id: Option<String>,
    pub started_at_ms: Option<i64>,
    #[serde(deserialize_with = "null_default")]
    pub models: Vec<ModelTest>,
    pub failing_model: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct ModelTest {
    pub model: String,
    pub load_ms: u64,
    pub health_ms: u64,
    pub infer_ms: u64,
    pub error: Option<String>,
}

/// `{"error": "<sentence>"}`, the body of every non-OpenAI error.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    pub error: Option<serde_json::Value>,
}

impl ErrorBody {
    /// The sentence, for both the plain and the OpenAI envelope.
    pub fn sentence(&self) -> Option<String> {
        match self.error.as_ref()? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Object(o) => o.get("message")?.as_str().map(str::to_string),
            _ => None,
        }
    }
}

/// `ADDR` or `http://ADDR` → base URL with no trailing slash.
pub fn base_url(addr: &str) -> String {
    let a = addr.trim().trim_end_matches('/');
    if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else {
        format!("http://{a}")
    }
}
