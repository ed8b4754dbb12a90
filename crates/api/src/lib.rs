//! The node's HTTP surface (one port): `/api/status`, `/v1/*` (OpenAI-compatible).

pub mod error;
pub mod node;
pub mod openai;
pub mod status;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

pub use node::{Node, NodeInfo, Phase};

/// Every route the node serves.
pub fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/api/status", get(status::get_status))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .fallback(error::not_found)
        .with_state(node)
}
