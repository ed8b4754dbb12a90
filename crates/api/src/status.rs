//! `GET /api/status`: the node as the operator should see it.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use infermesh_mesh::ValidationResult;
use infermesh_state::{peer_notice, NodeState, Participation, Timing};
use serde::Serialize;

use crate::app::{App, PeerStatus, RoundView};
use crate::node::BackendView;

pub mod prometheus;
pub mod reach;
pub mod sentence;

#[derive(Debug, Serialize)]
pub struct StatusResponse {
    pub node_id: String,
    pub public_key: String,
    pub name: String,
    pub api_addr: String,
    pub version: String,
    pub node_state: NodeState,
    /// Title Case alias of `node_state` for older consumers.
    pub node_status: &'static str,
    pub participation: Participation,
    pub timing: Timing,
    /// What the operator should do now, in one sentence.
    pub message: String,
    /// Set while the node reaches no peer and should (a client, or started with `--join`):
    /// "Not connected to any peer — …" with what to check.
    pub peer_message: Option<String>,
    pub epoch: Option<u64>,
    /// This node's own result in the latest round it took part in.
    pub validation: Option<ValidationResult>,
    pub models: Vec<String>,
    pub vram_gb: f32,
    pub ram_gb: f32,
    /// What this node's process and machine use now; absent until two samples were taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<infermesh_state::usage::Usage>,
    pub in_flight: u32,
    pub backends: Vec<BackendView>,
    pub peers: Vec<PeerStatus>,
    /// Suspended machines this node can wake; never among `peers`, never routed to.
    pub wakeable: Vec<crate::wakeable::WakeableStatus>,
    /// This node's mesh membership; `None` for a node without gossip.
    pub mesh: Option<MeshStatus>,
    /// Its part in a split (host of a model, or worker for a host), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<crate::node::SplitPart>,
    /// The mesh's workload groups: wanted, serving and loading replicas, in one sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<infermesh_state::placement::GroupStatus>,
}

/// The membership as an operator needs it: which mesh (its public fingerprint, never the
/// secret), where members reach this node, and whether gossip runs.
#[derive(Debug, Serialize)]
pub struct MeshStatus {
    pub mesh_id: String,
    /// The mesh port members reach this node at (UDP gossip, TCP peer channel).
    pub gossip_addr: String,
    /// `false` between a failure of the membership task and its restart.
    pub running: bool,
    /// Times the membership task failed and was restarted since start.
    pub restarts: u32,
    pub last_failure: Option<String>,
}

fn mesh_status(app: &App) -> Option<MeshStatus> {
    let m = app.mesh.as_ref()?;
    let h = m.health();
    Some(MeshStatus {
        mesh_id: m.mesh_id(),
        gossip_addr: m.gossip_addr().to_string(),
        running: h.running,
        restarts: h.restarts,
        last_failure: h.last_failure,
    })
}

/// The node's one sentence: a stopped membership task first, then (for a client) whether it
/// reaches anyone, then what its backends and the clock say.
fn message_of(
    app: &App,
    rounds: &RoundView,
    peer_message: Option<&String>,
    mesh: Option<&MeshStatus>,
) -> String {
    match (peer_message, mesh) {
        (_, Some(m)) if !m.running => format!(
            "Mesh membership stopped ({}); restarting it — peers are stale until it runs",
            m.last_failure.as_deref().unwrap_or("unknown cause")
        ),
        // A client alone can answer nothing: its reachability is the whole story.
        (Some(m), _) if app.node.state() == NodeState::Client => m.clone(),
        // A split's part says what the node does better than its backends can: a worker has
        // none serving, a host waits for capacity or for its workers.
        _ => match app.node.split_part().and_then(|p| p.sentence) {
            Some(s) => s,
            None => sentence::node_now(app, rounds),
        },
    }
}

/// `/api/status`'s `message` now, for the onboarding log to say the same words.
pub fn message_now(app: &App, rounds: &RoundView) -> String {
    let peers = app.peers().len();
    let peer_message = peer_notice(app.node.info.client_mode, app.join.len(), peers);
    message_of(
        app,
        rounds,
        peer_message.as_ref(),
        mesh_status(app).as_ref(),
    )
}

pub fn status(app: &App) -> StatusResponse {
    let node = &app.node;
    let state = node.state();
    let rounds = app.round_view();
    let timing = app.timing();
    let backends = node.backend_views();
    let mut peers: Vec<PeerStatus> = app
        .peers()
        .iter()
        .map(|p| PeerStatus::new(p, &rounds))
        .collect();
    name_split_roles(&mut peers, &node.info.node_id, &node.info.name);
    let peer_message = peer_notice(node.info.client_mode, app.join.len(), peers.len());
    let mesh = mesh_status(app);
    let message = message_of(app, &rounds, peer_message.as_ref(), mesh.as_ref());
    StatusResponse {
        node_id: node.info.node_id.clone(),
        public_key: node.info.public_key.clone(),
        name: node.info.name.clone(),
        api_addr: app.api_addr.clone(),
        version: node.info.version.clone(),
        node_state: state,
        node_status: state.title(),
        participation: rounds.participation,
        timing,
        message,
        peer_message,
        epoch: rounds.epoch,
        validation: app
            .own_validation
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|v| v.result.clone()),
        models: node.serving_models(),
        vram_gb: node.vram_gb(),
        ram_gb: app.ram_gb,
        usage: app.usage.get(),
        in_flight: node.in_flight(),
        backends,
        peers,
        wakeable: {
            app.wakeable
                .observe(&app.peers(), infermesh_mesh::schedule::unix_now_ms());
            app.wakeable.list()
        },
        mesh,
        split: node.split_part().map(|mut p| {
            if matches!(
                p.claim,
                infermesh_state::split_role::SplitClaim::Host { .. }
            ) {
                p.rpc_traffic = Some(crate::split::tunnel::traffic());
            }
            p
        }),
        groups: {
            let snap = crate::placement::view::Snapshot::take(app);
            snap.statuses(&snap.extras(&node.info.node_id, &app.placement.demand()))
        },
    }
}

/// Each peer's split part in words, naming the nodes it works with.
fn name_split_roles(peers: &mut [PeerStatus], own_id: &str, own_name: &str) {
    let names: std::collections::HashMap<String, String> = peers
        .iter()
        .map(|p| (p.node_id.clone(), p.name.clone()))
        .chain([(own_id.to_string(), own_name.to_string())])
        .collect();
    let name_of = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    for p in peers {
        p.split_role = p
            .split
            .as_ref()
            .map(|c| infermesh_state::split_role::role_words(c, name_of));
    }
}

pub async fn get_status(State(app): State<Arc<App>>) -> Json<StatusResponse> {
    Json(status(&app))
}
