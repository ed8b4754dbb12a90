//! `/admin/v1/groups/{model}` (declare or remove a workload group) and `/admin/v1/replicas`
//! (start a replica here, or drain one: the two halves of a live migration). All are signed
//! admin calls; a group's body is itself operator-signed, so the mesh can relay it.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use infermesh_mesh::group::{GroupDecl, GroupError};
use serde::Deserialize;
use serde_json::json;

use crate::app::App;
use crate::error::plain_error;
use crate::placement::replica::{self, Refusal};
use crate::placement::run::accept;
use crate::placement::view::Snapshot;
use crate::workloads::Origin;

/// How far a new declaration's time may be from this node's clock: it is signed for now.
const FRESH_MS: i64 = 60_000;

pub async fn put_group(
    State(app): State<Arc<App>>,
    Path(model): Path<String>,
    body: Bytes,
) -> Response {
    let decl: GroupDecl = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(e) => {
            return plain_error(
                StatusCode::BAD_REQUEST,
                format!("body is not a signed workload group (use `infermesh group set`): {e}"),
            )
        }
    };
    if decl.model != model {
        return plain_error(
            StatusCode::BAD_REQUEST,
            format!("the group names model `{}`, the path `{model}`", decl.model),
        );
    }
    let Some(mesh) = &app.mesh else {
        return plain_error(StatusCode::CONFLICT, "this node is in no mesh");
    };
    if (decl.ts_ms - infermesh_mesh::unix_now_ms()).abs() > FRESH_MS {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "the group was not signed within the last minute (check this machine's clock, then sign it again)",
        );
    }
    match decl.verify(&mesh.mesh_id(), |k| app.admin.registry.verifying_key(k)) {
        Ok(()) => {}
        Err(e @ GroupError::UnknownKey(_)) => {
            return plain_error(
                StatusCode::FORBIDDEN,
                format!("workload group refused: {e}"),
            )
        }
        Err(e) => {
            return plain_error(
                StatusCode::BAD_REQUEST,
                format!("workload group refused: {e}"),
            )
        }
    }
    if !app.placement.is_news(&decl) {
        return plain_error(
            StatusCode::CONFLICT,
            format!("a newer declaration of group `{model}` is already held; sign a new one"),
        );
    }
    if let Err(e) = accept(&app, &decl, "set by an operator") {
        return plain_error(StatusCode::INTERNAL_SERVER_ERROR, e);
    }
    app.publish_if_changed();
    let snap = Snapshot::take(&app);
    let status = snap
        .statuses(&snap.extras(&app.node.info.node_id, &app.placement.demand()))
        .into_iter()
        .find(|s| s.model == model);
    Json(json!({ "group": decl, "status": status })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    model: String,
    /// The node this replica replaces (a migration's source).
    #[serde(default)]
    replaces: Option<String>,
}

pub async fn start_replica(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let b: StartBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return plain_error(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"model\": NAME, \"replaces\": NODE_ID?}}: {e}"),
            )
        }
    };
    if b.model.is_empty() || b.model.len() > 128 {
        return plain_error(StatusCode::BAD_REQUEST, "model must be 1–128 characters");
    }
    let origin = Origin {
        placed: false,
        replaces: b.replaces.clone(),
    };
    match replica::start(&app, &b.model, origin) {
        Ok(()) => {}
        Err(Refusal::Busy(why)) => {
            return plain_error(
                StatusCode::CONFLICT,
                format!("this node {why}; a replica starts only on a standby node"),
            )
        }
        Err(Refusal::NoFile(why)) => return plain_error(StatusCode::NOT_FOUND, why),
    }
    tracing::info!(model = %b.model, replaces = ?b.replaces, "operator: start a replica of {} here", b.model);
    (
        StatusCode::ACCEPTED,
        Json(json!({ "model": b.model, "state": "loading" })),
    )
        .into_response()
}

pub async fn drain_replica(State(app): State<Arc<App>>, Path(model): Path<String>) -> Response {
    if app.node.serving_backend_of(&model).is_none() {
        return plain_error(
            StatusCode::NOT_FOUND,
            format!("this node has no serving replica of `{model}`"),
        );
    }
    tracing::info!(model, "operator: drain {model} here");
    match replica::drain(&app, &model).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => plain_error(StatusCode::CONFLICT, e),
    }
}
