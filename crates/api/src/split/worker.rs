//! The worker's side of a split: an idle node that a host's signed claim names runs an
//! `rpc-server` on loopback for that host's layers, says so in its record, and stops when the
//! claim no longer names it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_backend::llama_server::rpc::RpcServer;
use infermesh_state::split_role::{
    assignment_for, worker_sentence, SplitClaim, SplitWork, WorkerAssignment,
};
use infermesh_state::NodeState;

use crate::app::App;
use crate::node::SplitPart;

/// After an `rpc-server` fails to start or dies, the wait before the next try.
const RETRY_AFTER: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(250);

/// Runs for the node's life.
pub async fn run(app: Arc<App>, rpc_server: PathBuf, threads: u32) {
    let Some(mesh) = app.mesh.as_ref() else {
        return;
    };
    let mut changes = mesh.subscribe();
    let own = app.node.info.node_id.clone();
    let mut running: Option<(WorkerAssignment, RpcServer)> = None;
    let mut retry_at = Instant::now();
    let mut last_error: Option<String> = None;
    loop {
        if let Some((a, srv)) = running.as_mut() {
            if let Some(why) = srv.exited() {
                tracing::warn!(host = %a.host, model = %a.model, "split worker stopped: {why}; starting it again");
                running = None;
                app.node.set_split_part(None);
                retry_at = Instant::now() + RETRY_AFTER;
            }
        }
        let wanted = wanted(&app, &own, running.is_some());
        let same = matches!((&running, &wanted), (Some((cur, _)), Some(w))
            if cur.host == w.host && cur.model == w.model
                && cur.first_layer == w.first_layer && cur.last_layer == w.last_layer);
        if same {
            let (Some((cur, srv)), Some(w)) = (running.as_mut(), wanted) else {
                unreachable!("`same` matched both");
            };
            if cur.host_serving != w.host_serving {
                *cur = w;
                app.node.set_split_part(Some(part(&app, cur, srv.port())));
                if cur.host_serving {
                    tracing::info!(host = %cur.host, model = %cur.model, "the split this node works for serves");
                }
            }
        } else {
            if let Some((old, srv)) = running.take() {
                tracing::info!(host = %old.host, model = %old.model, "leaving the split: the host no longer assigns this node these layers");
                app.node.set_split_part(None);
                if let Err(e) = srv.stop().await {
                    tracing::warn!(error = %e, "rpc-server did not stop cleanly");
                }
            }
            if let Some(w) = wanted.filter(|_| Instant::now() >= retry_at) {
                match RpcServer::start(&rpc_server, threads, "rpc-server").await {
                    Ok(srv) => {
                        tracing::info!(host = %w.host, model = %w.model, layers = %format!("{}–{}", w.first_layer, w.last_layer),
                            port = srv.port(), "split worker: rpc-server up on loopback for the host's tunnel");
                        app.node.set_split_part(Some(part(&app, &w, srv.port())));
                        running = Some((w, srv));
                        last_error = None;
                    }
                    Err(e) => {
                        // The host waits for this node's claim and plans without it when it
                        // does not come; the operator must install rpc-server. Said once per
                        // cause, not on every retry.
                        let why = e.to_string();
                        if last_error.as_deref() != Some(why.as_str()) {
                            tracing::error!(host = %w.host, "cannot work for a split: {why}");
                        }
                        last_error = Some(why);
                        retry_at = Instant::now() + RETRY_AFTER * 5;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(POLL, changes.changed()).await;
    }
}

/// The assignment this node should follow now: the host claims in live peers' records, if this
/// node is free for one (idle, or already working for a split).
fn wanted(app: &App, own: &str, working: bool) -> Option<WorkerAssignment> {
    if !working && app.node.state() != NodeState::Standby {
        return None;
    }
    let peers = app.peers();
    let claims: Vec<(&str, &SplitClaim)> = peers
        .iter()
        .filter_map(|p| {
            p.record
                .split
                .as_ref()
                .map(|c| (p.record.node_id.as_str(), c))
        })
        .collect();
    assignment_for(own, &claims)
}

fn part(app: &App, a: &WorkerAssignment, port: u16) -> SplitPart {
    let host_name = app
        .peers()
        .into_iter()
        .find(|p| p.record.node_id == a.host)
        .map_or_else(|| a.host.clone(), |p| p.record.name);
    SplitPart {
        claim: SplitClaim::Worker {
            model: a.model.clone(),
            host: a.host.clone(),
            first_layer: a.first_layer,
            last_layer: a.last_layer,
            ready: true,
        },
        work: SplitWork::of(Some(a)),
        detail: format!(
            "worker of {} for host {host_name}: layers {}–{}",
            a.model, a.first_layer, a.last_layer
        ),
        sentence: Some(worker_sentence(a, &host_name)),
        rpc_port: Some(port),
        rpc_traffic: None,
    }
}
