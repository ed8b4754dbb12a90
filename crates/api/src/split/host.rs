//! The host's side of a split: plans its model over the idle members' offered memory, claims
//! the layout in its record, waits for each worker's `rpc-server`, and serves the model with
//! `llama-server --rpc` through one tunnel per worker. A worker that leaves, dies or closes its
//! tunnel makes it plan again at once: re-split over who remains, or wait for capacity and say
//! how much is missing. The model is advertised only while `llama-server` answers.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_backend::config::ModelSpec;
use infermesh_backend::llama_server::{LlamaServerBackend, LlamaServerConfig};
use infermesh_backend::Backend;
use infermesh_mesh::PeerView;
use infermesh_state::split::{changed, plan_hosted, ModelNeed, NodeMemory, Plan, Share};
use infermesh_state::split_role::{
    host_loading_sentence, rpc_flags, waiting_sentence, SplitClaim, SplitWork,
};
use infermesh_state::NodeState;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::tunnel::{Dialer, Tunnel};
use crate::app::App;
use crate::node::{Phase, SplitPart};

/// The backend id the split's `llama-server` runs under.
pub const BACKEND_ID: &str = "split";
/// How long the host waits for its workers' `rpc-server`s before planning without them.
const WORKERS_TIMEOUT: Duration = Duration::from_secs(60);
/// A worker whose tunnel broke is left out of plans this long (or until gossip drops it).
const SUSPECT_FOR: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(250);

/// What the host serves and how.
#[derive(Debug, Clone)]
pub struct HostSetup {
    pub model: String,
    pub path: PathBuf,
    pub need: ModelNeed,
    /// What this node itself offers (its `--max-mem` or free memory).
    pub own_offer: u64,
    pub llama_server: PathBuf,
    pub n_ctx: u32,
    pub threads: u32,
    pub startup: Duration,
}

/// Runs for the node's life.
pub async fn run(app: Arc<App>, setup: HostSetup) {
    let (Some(mesh), Some(http)) = (app.mesh.as_ref(), app.peer_http.clone()) else {
        return;
    };
    let dialer = Dialer::new(http, mesh.directory());
    let mut changes = mesh.subscribe();
    let own = app.node.info.node_id.clone();
    let (lost_tx, mut lost_rx) = mpsc::channel::<String>(64);
    let mut suspects: HashMap<String, Instant> = HashMap::new();
    let mut current: Option<Plan> = None;
    let mut tunnels: Vec<Tunnel> = Vec::new();
    let mut last_error: Option<String> = None;
    loop {
        while let Ok(worker) = lost_rx.try_recv() {
            if current
                .as_ref()
                .is_some_and(|p| p.participants().contains(&worker.as_str()))
            {
                suspects.insert(worker, Instant::now());
            }
        }
        suspects.retain(|_, since| since.elapsed() < SUSPECT_FOR);
        let peers = app.peers();
        let offered = candidates(&peers, &own, &suspects);
        let plan = plan_hosted(
            &setup.need,
            &NodeMemory {
                node_id: own.clone(),
                free_bytes: setup.own_offer,
            },
            &offered,
        );
        let broken = app.node.with_slot(BACKEND_ID, |s| {
            matches!(s.phase, Phase::Failed(_) | Phase::Unhealthy(_))
        }) == Some(true);
        // A running split stays as it is while all its workers do: a node that joins later
        // (even one that would make a better plan) must not restart a model that serves.
        let intact = !tunnels.is_empty()
            && matches!(&current, Some(Plan::Split { workers, .. })
                if workers.iter().all(|w| offered.iter().any(|o| &o.node_id == w)));
        if broken || (!intact && current.as_ref().is_none_or(|c| changed(c, &plan))) {
            stop(&app, &mut tunnels).await;
            tracing::info!(model = %setup.model, "split plan: {}", plan.describe());
            app.node
                .set_split_part(Some(claim_part(&setup, &plan, false)));
            current = Some(plan.clone());
            if let Plan::Split { shares, .. } = &plan {
                match start(&app, &setup, &dialer, shares, lost_tx.clone()).await {
                    Ok(t) => {
                        tunnels = t;
                        last_error = None;
                        app.node
                            .set_split_part(Some(claim_part(&setup, &plan, true)));
                        tracing::info!(model = %setup.model, nodes = shares.len(), "split serving");
                    }
                    Err(e) => {
                        // Once per cause: a split that keeps failing the same way retries
                        // quietly.
                        if last_error.as_deref() != Some(e.as_str()) {
                            tracing::warn!(model = %setup.model, "split did not start: {e}; planning again");
                        }
                        last_error = Some(e);
                        stop(&app, &mut tunnels).await;
                        current = None;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        }
        let _ = tokio::time::timeout(POLL, changes.changed()).await;
    }
}

/// Idle members that offer memory and work for no other host, less the suspects.
fn candidates(
    peers: &[PeerView],
    own: &str,
    suspects: &HashMap<String, Instant>,
) -> Vec<NodeMemory> {
    peers
        .iter()
        .filter(|p| p.record.mem_offer_bytes > 0 && p.state != NodeState::Client)
        .filter(|p| match &p.record.split {
            None => p.state == NodeState::Standby,
            Some(SplitClaim::Worker { host, .. }) => host == own,
            Some(SplitClaim::Host { .. }) => false,
        })
        .filter(|p| !suspects.contains_key(&p.record.node_id))
        .map(|p| NodeMemory {
            node_id: p.record.node_id.clone(),
            free_bytes: p.record.mem_offer_bytes,
        })
        .collect()
}

/// The host's record claim and sentence for `plan`.
fn claim_part(setup: &HostSetup, plan: &Plan, serving: bool) -> SplitPart {
    let (shares, need, have, sentence) = match plan {
        Plan::Split { shares, .. } => (
            shares.clone(),
            0,
            0,
            (!serving).then(|| host_loading_sentence(&setup.model, shares.len())),
        ),
        Plan::Insufficient {
            need_bytes,
            have_bytes,
        } => (
            Vec::new(),
            *need_bytes,
            *have_bytes,
            Some(waiting_sentence(&setup.model, *need_bytes, *have_bytes)),
        ),
        Plan::Single { .. } => (Vec::new(), 0, 0, None),
    };
    SplitPart {
        claim: SplitClaim::Host {
            model: setup.model.clone(),
            shares,
            serving,
            need_bytes: need,
            have_bytes: have,
        },
        // Serving is the backend's own state once it is Ready; before, the split is loading.
        work: if serving {
            SplitWork::None
        } else {
            SplitWork::Loading
        },
        detail: format!("host of {}: {}", setup.model, plan.describe()),
        sentence,
        rpc_port: None,
        rpc_traffic: None,
    }
}

/// Stops the split's `llama-server` and closes its tunnels.
async fn stop(app: &App, tunnels: &mut Vec<Tunnel>) {
    if let Some(backend) = app.node.remove_backend(BACKEND_ID) {
        if let Err(e) = backend.stop().await {
            tracing::warn!(error = %e, "the split's llama-server did not stop cleanly");
        }
    }
    tunnels.clear();
}

/// Waits for every worker's `rpc-server`, opens the tunnels and loads the model.
async fn start(
    app: &Arc<App>,
    setup: &HostSetup,
    dialer: &Dialer,
    shares: &[Share],
    lost: mpsc::Sender<String>,
) -> Result<Vec<Tunnel>, String> {
    let flags = rpc_flags(shares, setup.need.layers)
        .ok_or_else(|| "the plan's shares do not cover every layer".to_string())?;
    wait_for_workers(app, &setup.model, &shares[1..]).await?;
    let mut tunnels = Vec::new();
    for s in &shares[1..] {
        tunnels.push(
            dialer
                .open(s.node_id.clone(), lost.clone())
                .await
                .map_err(|e| format!("cannot open a tunnel port: {e}"))?,
        );
    }
    let rpc: Vec<String> = tunnels
        .iter()
        .map(|t| format!("127.0.0.1:{}", t.port))
        .collect();
    let args: BTreeMap<String, Value> = BTreeMap::from([
        ("path".into(), json!(setup.path.to_string_lossy())),
        ("rpc".into(), json!(rpc.join(","))),
        ("n-gpu-layers".into(), json!(flags.n_gpu_layers)),
        ("tensor-split".into(), json!(flags.tensor_split)),
        ("override-tensor".into(), json!(flags.override_tensor)),
        // The layout is ours: llama.cpp must not move layers to fit what it measures.
        ("fit".into(), json!("off")),
        ("threads".into(), json!(setup.threads)),
    ]);
    let backend = Arc::new(LlamaServerBackend::new(LlamaServerConfig {
        id: BACKEND_ID.into(),
        binary: setup.llama_server.clone(),
        models: vec![ModelSpec {
            name: setup.model.clone(),
            args,
        }],
        ctx: setup.n_ctx,
        startup_timeout: setup.startup,
    }));
    app.node
        .add_backend(backend.clone(), Some(setup.model.clone()));
    app.node.set_phase(BACKEND_ID, Phase::Loading);
    let started = Instant::now();
    let loaded = match backend.load(&setup.model).await {
        Ok(()) => backend.health().await,
        Err(e) => Err(e),
    };
    match loaded {
        Ok(()) => {
            tracing::info!(model = %setup.model, load_ms = started.elapsed().as_millis() as u64,
                "split model loaded over {} nodes", shares.len());
            app.node.set_phase(BACKEND_ID, Phase::Ready);
            Ok(tunnels)
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Until every worker's record claims its share for this host and its `rpc-server` is up.
async fn wait_for_workers(app: &App, model: &str, workers: &[Share]) -> Result<(), String> {
    let own = &app.node.info.node_id;
    let deadline = Instant::now() + WORKERS_TIMEOUT;
    loop {
        let peers = app.peers();
        if let Some(gone) = workers
            .iter()
            .find(|s| !peers.iter().any(|p| p.record.node_id == s.node_id))
        {
            return Err(format!("worker {} left the mesh", gone.node_id));
        }
        let missing: Vec<&str> = workers
            .iter()
            .filter(|s| {
                !peers.iter().any(|p| {
                    p.record.node_id == s.node_id
                        && p.record.split
                            == Some(SplitClaim::Worker {
                                model: model.to_string(),
                                host: own.clone(),
                                first_layer: s.first_layer,
                                last_layer: s.last_layer,
                                ready: true,
                            })
                })
            })
            .map(|s| s.node_id.as_str())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "workers {} did not start their rpc-server within {}s",
                missing.join(", "),
                WORKERS_TIMEOUT.as_secs()
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
