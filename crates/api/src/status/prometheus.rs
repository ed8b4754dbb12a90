//! `GET /metrics`: the counters of [`crate::metrics`] with gauges read from the node at scrape
//! time.

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::app::App;
use crate::metrics::{Snapshot, CONTENT_TYPE};

fn snapshot(app: &App) -> Snapshot {
    let peers = app.peers();
    app.wakeable
        .observe(&peers, infermesh_mesh::schedule::unix_now_ms());
    Snapshot {
        node_id: app.node.info.node_id.clone(),
        name: app.node.info.name.clone(),
        version: app.node.info.version.clone(),
        state: app.node.state(),
        participation: app.round_view().participation,
        peers: peers.iter().map(|p| p.state).collect(),
        wakeable: app.wakeable.all().iter().map(|w| w.state).collect(),
        in_flight: app.node.in_flight(),
    }
}

/// `GET /metrics`.
pub async fn get_metrics(State(app): State<Arc<App>>) -> Response {
    app.metrics.catch_up(&app.requests);
    let body = app.metrics.render(&snapshot(&app));
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}
