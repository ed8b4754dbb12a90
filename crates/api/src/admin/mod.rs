//! `/admin/v1/nodes`: register, change, remove and test backends. Every mutation is persisted
//! before it takes effect, so what the node runs and what it will run after a restart agree.

pub mod groups;
pub mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use infermesh_backend::tester::{run_test, TestResult};
use infermesh_state::format_duration;
use serde_json::json;

use crate::app::App;
use crate::config::{self, parse_backend, BackendConfig};
use crate::drivers::build_backend;
use crate::error::plain_error;
use crate::node::TestRefusal;

pub async fn list(State(app): State<Arc<App>>) -> Json<Vec<view::Envelope>> {
    Json(view::envelopes(&app))
}

/// Why a config change was not applied.
enum Refused {
    /// The change conflicts with the current config (checked under the config lock).
    Conflict(String),
    Save(String),
}

impl Refused {
    fn response(self) -> Response {
        match self {
            Self::Conflict(m) => plain_error(StatusCode::CONFLICT, m),
            Self::Save(m) => plain_error(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

/// Applies `change` to the config and saves it. The config lock is held throughout, so checks
/// inside `change` cannot race another admin call; on a failed save the in-memory config is
/// left as it was, so memory and disk never disagree.
fn persist(
    app: &App,
    change: impl FnOnce(&mut config::NodeConfig) -> Result<(), String>,
) -> Result<config::NodeConfig, Refused> {
    let mut guard = app.config.lock().unwrap_or_else(|e| e.into_inner());
    let mut next = guard.clone();
    change(&mut next).map_err(Refused::Conflict)?;
    if let Some(dir) = &app.data_dir {
        if let Err(e) = config::save(dir, &next) {
            tracing::error!(error = %e, "config not saved; the change was not applied");
            return Err(Refused::Save(e));
        }
    }
    *guard = next.clone();
    Ok(next)
}

fn from_command_line(id: &str) -> Response {
    plain_error(
        StatusCode::CONFLICT,
        format!("backend `{id}` comes from the command line of `infermesh up`; restart the node with other flags to change it"),
    )
}

fn unknown(id: &str) -> Response {
    plain_error(
        StatusCode::NOT_FOUND,
        format!("no backend `{id}` on this node"),
    )
}

/// Builds the driver, swaps it in and starts what the new config asks for.
async fn install(app: &Arc<App>, cfg: BackendConfig, node_cfg: &config::NodeConfig) {
    let backend = match build_backend(&cfg, node_cfg, &app.build) {
        Ok(b) => b,
        // Validated before persisting; a failure here is a bug worth seeing.
        Err(e) => {
            tracing::error!(backend = %cfg.id, error = %e, "registered backend could not be built");
            return;
        }
    };
    let id = cfg.id.clone();
    let serve = cfg.serve.clone();
    app.node.put_backend(backend, serve.clone(), Some(cfg));
    if serve.is_some() {
        let node = app.node.clone();
        tokio::spawn(async move { node.activate(&id).await });
    } else {
        maybe_auto_test(app, &id);
    }
}

pub async fn register(State(app): State<Arc<App>>, body: Bytes) -> Response {
    let cfg = match parse_backend(&body, None) {
        Ok(c) => c,
        Err(e) => return plain_error(StatusCode::BAD_REQUEST, e),
    };
    if app.node.with_slot(&cfg.id, |_| ()).is_some() {
        return plain_error(
            StatusCode::CONFLICT,
            format!(
                "backend `{}` already exists; change it with PUT /admin/v1/nodes/{}",
                cfg.id, cfg.id
            ),
        );
    }
    let probe = app.config.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Err(e) = build_backend(&cfg, &probe, &app.build) {
        return plain_error(StatusCode::BAD_REQUEST, e);
    }
    let saved = match persist(&app, |c| {
        if app.node.with_slot(&cfg.id, |_| ()).is_some()
            || c.backends.iter().any(|b| b.id == cfg.id)
        {
            return Err(format!(
                "backend `{}` already exists; change it with PUT /admin/v1/nodes/{}",
                cfg.id, cfg.id
            ));
        }
        c.backends.push(cfg.clone());
        Ok(())
    }) {
        Ok(s) => s,
        Err(r) => return r.response(),
    };
    tracing::info!(backend = %cfg.id, driver = cfg.driver.name(), models = cfg.models.len(), "backend registered");
    let id = cfg.id.clone();
    install(&app, cfg, &saved).await;
    (StatusCode::CREATED, Json(view::envelope(&app, &id))).into_response()
}

pub async fn change(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> Response {
    let Some(from_config) = app.node.with_slot(&id, |s| s.config.is_some()) else {
        return unknown(&id);
    };
    if !from_config {
        return from_command_line(&id);
    }
    let cfg = match parse_backend(&body, Some(&id)) {
        Ok(c) => c,
        Err(e) => return plain_error(StatusCode::BAD_REQUEST, e),
    };
    let probe = app.config.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if let Err(e) = build_backend(&cfg, &probe, &app.build) {
        return plain_error(StatusCode::BAD_REQUEST, e);
    }
    let saved = match persist(&app, |c| {
        if !c.backends.iter().any(|b| b.id == id) {
            return Err(format!("backend `{id}` was removed meanwhile"));
        }
        c.backends.retain(|b| b.id != id);
        c.backends.push(cfg.clone());
        Ok(())
    }) {
        Ok(s) => s,
        Err(r) => return r.response(),
    };
    // The old driver's result is void from here on: the new one is installed with none.
    if let Some(old) = app.node.with_slot(&id, |s| s.backend.clone()) {
        if let Err(e) = old.stop().await {
            tracing::warn!(backend = %id, error = %e, "old backend did not stop cleanly");
        }
    }
    tracing::info!(backend = %id, "backend changed; its previous test result no longer applies");
    install(&app, cfg, &saved).await;
    Json(view::envelope(&app, &id)).into_response()
}

pub async fn remove(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Some(from_config) = app.node.with_slot(&id, |s| s.config.is_some()) else {
        return unknown(&id);
    };
    if !from_config {
        return from_command_line(&id);
    }
    if let Err(r) = persist(&app, |c| {
        c.backends.retain(|b| b.id != id);
        Ok(())
    }) {
        return r.response();
    }
    if let Some(b) = app.node.remove_backend(&id) {
        if let Err(e) = b.stop().await {
            tracing::warn!(backend = %id, error = %e, "removed backend did not stop cleanly");
        }
    }
    tracing::info!(backend = %id, "backend removed");
    Json(json!({"deleted": id})).into_response()
}

pub async fn test(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match app.node.try_begin_test(&id) {
        Ok(ticket) => {
            // The test runs in its own task: a caller that hangs up must not abandon it halfway
            // and leave the backend locked as `testing`.
            let (app, id2) = (app.clone(), id.clone());
            let task =
                tokio::spawn(async move { run_ticket(&app, &id2, ticket, "on demand").await });
            match task.await {
                Ok(result) => Json(result).into_response(),
                Err(e) => plain_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the test of `{id}` stopped unexpectedly: {e}"),
                ),
            }
        }
        Err(TestRefusal::Unknown) => unknown(&id),
        Err(TestRefusal::AlreadyTesting) => plain_error(
            StatusCode::CONFLICT,
            format!("a test of backend `{id}` is already running; wait for its result"),
        ),
        Err(TestRefusal::Serving(what)) => plain_error(
            StatusCode::CONFLICT,
            format!("backend `{id}` {what}: testing would take it out of service"),
        ),
    }
}

async fn run_ticket(
    app: &Arc<App>,
    id: &str,
    ticket: crate::node::TestTicket,
    why: &str,
) -> TestResult {
    let timeout = Duration::from_millis(app.tunables.test_timeout_ms.max(1) as u64);
    tracing::info!(backend = id, models = ?ticket.models, why, "testing backend");
    let result = run_test(ticket.backend.as_ref(), &ticket.models, timeout, |_| {}).await;
    if result.ok {
        let timings: Vec<String> = result
            .models
            .iter()
            .map(|m| {
                format!(
                    "{} load {}ms health {}ms infer {}ms",
                    m.model, m.load_ms, m.health_ms, m.infer_ms
                )
            })
            .collect();
        tracing::info!(backend = id, "test passed: {}", timings.join("; "));
    } else {
        let (model, cause) = result
            .models
            .iter()
            .find(|m| m.error.is_some())
            .map_or(("(none)", "the backend lists no models"), |m| {
                (m.model.as_str(), m.error.as_deref().unwrap_or(""))
            });
        tracing::error!(
            backend = id,
            model,
            cause,
            "test failed; fix the backend and run `infermesh test {id}`"
        );
    }
    app.metrics.record_test(result.ok);
    if !app.node.finish_test(id, ticket.rev, result.clone()) {
        tracing::info!(
            backend = id,
            "test result discarded: the backend was changed or removed while it ran"
        );
    }
    result
}

/// Tests a newly registered or changed backend in the background, only when the next round is
/// far enough away that the test cannot compete with it, and never a serving backend.
pub fn maybe_auto_test(app: &Arc<App>, id: &str) {
    let timing = app.timing();
    if !timing.is_known() {
        tracing::info!(
            backend = id,
            "auto-test skipped: schedule syncing; run `infermesh test {id}` to test it now"
        );
        return;
    }
    let lead_ms = timing.seconds_until_next_round.saturating_mul(1000);
    if timing.in_round || lead_ms < app.tunables.auto_test_min_lead_ms {
        tracing::info!(
            backend = id,
            "auto-test skipped: the next round starts in {}; it is validated in the round",
            format_duration(timing.seconds_until_next_round.max(1))
        );
        return;
    }
    let Ok(ticket) = app.node.try_begin_test(id) else {
        return;
    };
    let (app, id) = (app.clone(), id.to_string());
    tokio::spawn(async move {
        run_ticket(&app, &id, ticket, "automatically after a config change").await;
    });
}

/// Installs every backend of the persisted config (node start).
pub async fn restore(app: &Arc<App>) {
    let cfg = app.config.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for b in &cfg.backends {
        tracing::info!(backend = %b.id, driver = b.driver.name(), "restoring registered backend");
        install(app, b.clone(), &cfg).await;
    }
}
