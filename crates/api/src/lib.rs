//! The node's HTTP surface (one port): `/api/status`, `/api/requests`, `/v1/*` (OpenAI-compatible,
//! routed across the mesh).

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod dashboard;
pub mod drivers;
pub mod error;
pub mod events;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod openai;
pub mod requests;
pub mod rounds;
pub mod route;
pub mod status;
pub mod wakeable;

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;

pub use app::{App, AppOptions};
pub use node::{Node, NodeInfo, Phase};

#[derive(Deserialize)]
struct TailQuery {
    limit: Option<usize>,
}

async fn get_requests(
    State(app): State<Arc<App>>,
    Query(q): Query<TailQuery>,
) -> Json<serde_json::Value> {
    let requests = app.requests.tail(q.limit.unwrap_or(200));
    Json(serde_json::json!({ "requests": requests }))
}

/// Every route the node serves.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/status", get(status::get_status))
        .route("/api/requests", get(get_requests))
        .route("/api/logs", get(events::get_logs))
        .route("/api/events", get(events::get_events))
        .route("/admin/v1/nodes", get(admin::list).post(admin::register))
        .route(
            "/admin/v1/nodes/{id}",
            put(admin::change).delete(admin::remove),
        )
        .route("/admin/v1/nodes/{id}/test", post(admin::test))
        .route("/admin/v1/wakeable/{id}/wake", post(wakeable::wake))
        .route("/metrics", get(metrics::get_metrics))
        .route("/", get(dashboard::index))
        .route("/assets/{name}", get(dashboard::asset))
        .route("/v1/models", get(route::list_models))
        .route("/v1/chat/completions", post(route::chat_completions))
        .route("/v1/completions", post(route::completions))
        .fallback(error::not_found)
        // Every admin mutation (any admin route, present or future) needs an operator signature.
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_operator,
        ))
        .with_state(app)
}
