//! `GET /api/status`: the node as the operator should see it.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use infermesh_state::NodeState;
use serde::Serialize;

use crate::node::{BackendView, Node};

#[derive(Debug, Serialize)]
pub struct StatusResponse {
    pub node_id: String,
    pub public_key: String,
    pub name: String,
    pub version: String,
    pub node_state: NodeState,
    /// Title Case alias of `node_state` for older consumers.
    pub node_status: &'static str,
    pub models: Vec<String>,
    pub vram_gb: f32,
    pub in_flight: u32,
    pub backends: Vec<BackendView>,
    pub peers: Vec<serde_json::Value>,
    pub wakeable: Vec<serde_json::Value>,
}

pub fn status(node: &Node) -> StatusResponse {
    let state = node.state();
    let backends = node.backend_views();
    StatusResponse {
        node_id: node.info.node_id.clone(),
        public_key: node.info.public_key.clone(),
        name: node.info.name.clone(),
        version: node.info.version.clone(),
        node_state: state,
        node_status: state.title(),
        models: node.serving_models(),
        vram_gb: backends.iter().map(|b| b.mem_gb).sum(),
        in_flight: node.in_flight(),
        backends,
        peers: Vec::new(),
        wakeable: Vec::new(),
    }
}

pub async fn get_status(State(node): State<Arc<Node>>) -> Json<StatusResponse> {
    Json(status(&node))
}
