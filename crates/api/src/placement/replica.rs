//! Starting and stopping one replica on this node: what placement decides and what an
//! operator's `migrate` asks. A start turns this node's idle embedded engine into a replica of
//! the model (downloading the file first when a group names a URL); a stop drains it (no new
//! request, those in flight finish) and leaves the engine idle again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_backend::disk;
use infermesh_state::NodeState;

use crate::app::App;
use crate::drivers::embedded_for;
use crate::workloads::Origin;

/// The backend id a replica started here runs under (the id `up` gives its engine).
pub const ENGINE_ID: &str = "embedded";
/// The longest a drain waits for requests in flight before it stops the engine anyway.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// Why this node cannot take a replica now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Not idle capacity: serving, loading, a client, or in a split.
    Busy(String),
    /// Neither the file nor a way to fetch it.
    NoFile(String),
}

/// Whether this node is idle capacity: standby, not a client, in no split, nothing starting.
pub fn idle(app: &App) -> Result<(), String> {
    let node = &app.node;
    if node.info.client_mode {
        return Err("is a client (started with --client)".into());
    }
    if node.split_part().is_some() {
        return Err("is part of a split".into());
    }
    if app.placement.is_busy() {
        return Err("is already starting or stopping a replica".into());
    }
    match node.state() {
        NodeState::Standby => Ok(()),
        other => Err(format!("is {other}, not standby")),
    }
}

/// Checks that this node could start `model` now, without starting it.
pub fn check(app: &App, model: &str) -> Result<(), Refusal> {
    idle(app).map_err(Refusal::Busy)?;
    let on_disk = disk::on_disk(&app.build.model_dir).contains_key(model);
    let url = app.placement.group(model).and_then(|g| g.url);
    if on_disk || disk::known(model).is_some() || url.is_some() {
        Ok(())
    } else {
        Err(Refusal::NoFile(format!(
            "model `{model}` is not on this node's disk ({}) and no workload group names a URL for it",
            app.build.model_dir.display()
        )))
    }
}

/// Claims this node for `model` now and loads it in the background. The claim is taken before
/// this returns, so of two starts racing for one idle node (placement's own and an operator's
/// migration) exactly one wins and the other hears why, instead of both being told "loading".
pub fn start(app: &Arc<App>, model: &str, origin: Origin) -> Result<(), Refusal> {
    check(app, model)?;
    if !app.placement.begin(model) {
        return Err(Refusal::Busy(
            "is already starting or stopping a replica".into(),
        ));
    }
    app.placement.set_origin(model, Some(origin));
    let (app, model) = (app.clone(), model.to_string());
    tokio::spawn(async move {
        let result = load(&app, &model).await;
        app.placement.end(&model);
        if let Err(e) = result {
            app.placement.set_origin(&model, None);
            tracing::error!(model, "replica not started: {e}");
        }
        app.node.changed.notify_one();
    });
    Ok(())
}

async fn load(app: &Arc<App>, model: &str) -> Result<(), String> {
    let dir = app.build.model_dir.clone();
    let mut file = disk::on_disk(&dir).remove(model).map(|f| f.path);
    if file.is_none() && disk::known(model).is_none() {
        let url = app
            .placement
            .group(model)
            .and_then(|g| g.url)
            .ok_or_else(|| format!("model `{model}` is not on disk and has no URL"))?;
        tracing::info!(model, url, "downloading {model} into {}", dir.display());
        let max = app.node.mem_offer().max(1 << 30) * 4;
        let path = disk::download(&url, &dir, model, max, &|line| {
            tracing::info!(model, "{line}");
        })
        .await?;
        file = Some(path);
    }
    let backend = embedded_for(ENGINE_ID, model, file, &app.build)?;
    if let Some(old) = app.node.remove_backend(ENGINE_ID) {
        let _ = old.stop().await;
    }
    app.node.put_backend(backend, Some(model.to_string()), None);
    app.node.activate(ENGINE_ID).await;
    Ok(())
}

/// What a drain did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Drained {
    pub model: String,
    /// Requests in flight when it began, all finished before the engine stopped.
    pub in_flight_at_start: u32,
    /// Requests still running when [`DRAIN_LIMIT`] ran out (0 normally).
    pub cut_off: u32,
    pub took_ms: u64,
}

/// Drains and stops this node's replica of `model`; `Err` names why there is none to stop.
pub async fn drain(app: &App, model: &str) -> Result<Drained, String> {
    let node = &app.node;
    let Some(id) = node.serving_backend_of(model) else {
        return Err(format!("this node has no serving replica of `{model}`"));
    };
    if !app.placement.begin(model) {
        return Err(format!(
            "a start or stop of `{model}` is already under way here"
        ));
    }
    let started = Instant::now();
    let at_start = node.in_flight();
    node.set_phase(&id, crate::node::Phase::Draining);
    tracing::info!(
        model,
        in_flight = at_start,
        "draining {model}: no new requests; {at_start} in flight finish first"
    );
    // Peers stop routing here once the record without the model reaches them; a request that
    // still arrives is refused as retryable and its router tries another replica.
    app.publish_if_changed();
    // Quiet for 200 ms, not merely 0 once: a request that looked the engine up just before
    // the drain began is counted a moment later.
    let mut quiet_since = None;
    while started.elapsed() < DRAIN_LIMIT {
        if node.in_flight() > 0 {
            quiet_since = None;
        } else if quiet_since.get_or_insert_with(Instant::now).elapsed()
            >= Duration::from_millis(200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cut_off = node.in_flight();
    if let Some(backend) = node.with_slot(&id, |s| s.backend.clone()) {
        if let Err(e) = backend.stop().await {
            tracing::warn!(model, error = %e, "engine did not stop cleanly after the drain");
        }
    }
    node.unassign(&id);
    app.placement.set_origin(model, None);
    app.placement.end(model);
    let took_ms = started.elapsed().as_millis() as u64;
    if cut_off > 0 {
        tracing::warn!(
            model,
            cut_off,
            "drain limit reached: {cut_off} requests were still running when {model} stopped"
        );
    }
    tracing::info!(
        model,
        took_ms,
        "{model} drained and stopped; this node is standby again"
    );
    app.publish_if_changed();
    Ok(Drained {
        model: model.to_string(),
        in_flight_at_start: at_start,
        cut_off,
        took_ms,
    })
}
