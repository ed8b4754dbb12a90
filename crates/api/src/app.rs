//! The node's parts in one place — the local node, the mesh membership and admission, the
//! router's bookkeeping, the admin gate, the request ring — and [`AppState`], through which
//! each handler takes only the parts it uses. Nothing this file holds imports it back.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::FromRef;
use ed25519_dalek::SigningKey;
use infermesh_mesh::schedule::{EmbeddedSchedule, Schedule};
use infermesh_mesh::{MeshHandle, NodeRecord, PeerView, SignedValidation};
use infermesh_state::usage::Usage;
use infermesh_state::{NodeState, Participation, Tunables};
use serde::Serialize;
use tokio::sync::watch;

use crate::auth::AdminAuth;
use crate::config::NodeConfig;
use crate::drivers::BuildContext;
use crate::members::Members;
use crate::node::Node;
use crate::requests::RequestLog;
use crate::wakeable::Inventory;

/// This node's standing in the current epoch, as the round runner last established it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoundView {
    pub participation: Participation,
    /// This node's backends proven this epoch: their own round validation passed, or its verifiers
    /// admitted the model they serve.
    pub admitted: BTreeSet<String>,
    /// Peers this node's view of their verifiers' attestations admits (for at least one model),
    /// and this node itself when its verifiers admit it: the ones routed to.
    pub active_set: BTreeSet<String>,
    /// The per-model detail behind `active_set`, and why a serving peer is not (yet) in it.
    pub standing: crate::attestations::Standing,
    pub epoch: Option<u64>,
}

/// What a node is started with besides its node and mesh.
pub struct AppOptions {
    pub schedule: Arc<dyn Schedule>,
    /// Set when the schedule may be learnt from peers' records (the real node's schedule).
    pub learner: Option<Arc<EmbeddedSchedule>>,
    /// Signs this node's validation results; without it the node never validates.
    pub signing_key: Option<SigningKey>,
    pub tunables: Tunables,
    /// Where `config.toml` lives; `None` keeps registrations in memory only.
    pub data_dir: Option<PathBuf>,
    pub config: NodeConfig,
    pub build: BuildContext,
    /// `--admin-open`: admin changes are accepted unsigned (local experiments only).
    pub admin_open: bool,
    /// This node's invite token, handed to wake commands as `INFERMESH_JOIN` so the machine they
    /// wake can join (never logged, never in status).
    pub invite: Option<String>,
    /// The `--join` addresses: a node given some that reaches no peer says so.
    pub join: Vec<String>,
    /// When demand adds and releases replicas of a workload group.
    pub demand: infermesh_state::demand::DemandPolicy,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            schedule: Arc::new(EmbeddedSchedule::new(None)),
            learner: None,
            signing_key: None,
            tunables: Tunables::default(),
            data_dir: None,
            config: NodeConfig::default(),
            build: BuildContext {
                model_dir: infermesh_backend::model_fetch::default_model_dir(),
                engine: infermesh_backend::engine::EngineConfig::default(),
                llama_server_startup: Duration::from_secs(120),
            },
            admin_open: false,
            invite: None,
            join: Vec::new(),
            demand: Default::default(),
        }
    }
}

pub struct App {
    pub node: Arc<Node>,
    pub schedule: Arc<dyn Schedule>,
    pub learner: Option<Arc<EmbeddedSchedule>>,
    pub signing_key: Option<SigningKey>,
    /// This node's signed result for the latest round it validated in: what it says of its own
    /// backends (shown to operators; admits nothing, see [`crate::admission`]).
    pub own_validation: RwLock<Option<SignedValidation>>,
    /// This node's checks of its peers, published as attestations in its record.
    pub admission: crate::attestations::Book,
    /// Bumped on every change of the mesh view or of this node's own record.
    pub changes: watch::Sender<u64>,
    pub tunables: Tunables,
    /// Shared, not copied: the router reads it on every request.
    pub rounds: RwLock<Arc<RoundView>>,
    pub data_dir: Option<PathBuf>,
    /// The persisted config; held across a save so concurrent admin calls cannot interleave.
    pub config: Mutex<NodeConfig>,
    pub build: BuildContext,
    /// `None` only for a node that runs without gossip (unit tests of the HTTP surface).
    pub mesh: Option<MeshHandle>,
    /// `host:port` peers use to reach this node's API.
    pub api_addr: String,
    pub requests: Arc<RequestLog>,
    /// The peer channel's client (mutual TLS to members); `None` without a mesh or node key.
    pub peer_http: Option<reqwest::Client>,
    pub ram_gb: f32,
    /// Operator registry, replay cache and `--admin-open`: the admin signature gate.
    pub admin: Arc<AdminAuth>,
    /// Wakeable machines declared in config: listed in status, never peers.
    pub wakeable: Arc<Inventory>,
    /// Counters behind `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The `--join` addresses it was started with.
    pub join: Vec<String>,
    /// The router's per-peer bookkeeping: outstanding requests, recent failures, tie spread.
    pub balance: Arc<crate::balance::Balance>,
    /// Workload groups and how this node's replicas came to be.
    pub placement: Arc<crate::workloads::Placement>,
    /// What this node's process and machine use now (sampled by `up`).
    pub usage: Arc<crate::usage::Meter>,
}

/// The routers' state. Handlers take the part they use through axum's `FromRef` (the admin
/// gate its [`AdminAuth`], the wake handler the inventory and the members), or the whole
/// [`App`] where they work across it (routing, status).
#[derive(Clone)]
pub struct AppState(pub Arc<App>);

impl FromRef<AppState> for Arc<App> {
    fn from_ref(s: &AppState) -> Self {
        s.0.clone()
    }
}

impl FromRef<AppState> for Arc<AdminAuth> {
    fn from_ref(s: &AppState) -> Self {
        s.0.admin.clone()
    }
}

impl FromRef<AppState> for Arc<Inventory> {
    fn from_ref(s: &AppState) -> Self {
        s.0.wakeable.clone()
    }
}

impl FromRef<AppState> for Members {
    fn from_ref(s: &AppState) -> Self {
        s.0.members()
    }
}

/// A peer as `/api/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub node_id: String,
    pub name: String,
    pub addr: String,
    /// The mesh port the peer signed into its record (gossip and peer channel).
    pub gossip_addr: String,
    pub state: NodeState,
    pub models: Vec<String>,
    pub vram_gb: f32,
    pub ram_gb: f32,
    pub version: String,
    pub load: u32,
    /// Whether the peer is in this epoch's active set (routed to) as this node sees it.
    pub participation: Participation,
    /// Why, in words: what its verifiers admitted it for, or which check is pending or failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission: Option<String>,
    /// Milliseconds since this node last heard from the peer.
    pub last_seen_ms: u64,
    /// Its part in a split, as its record claims it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split: Option<infermesh_state::split_role::SplitClaim>,
    /// `split` in words, with node names ([`infermesh_state::split_role::role_words`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub split_role: Option<String>,
    /// Models its verifiers admitted it for, as this node's book says: what it is routed for.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub admitted_for: Vec<String>,
    /// What it says it uses of its machine (CPU, memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl PeerStatus {
    pub fn new(p: &PeerView, rounds: &RoundView) -> Self {
        Self {
            participation: Participation::of(
                p.state,
                rounds.active_set.contains(&p.record.node_id),
            ),
            admission: rounds.standing.describe(&p.record.node_id),
            node_id: p.record.node_id.clone(),
            name: p.record.name.clone(),
            addr: p.record.api_addr.clone(),
            gossip_addr: p.gossip_addr.to_string(),
            state: p.state,
            models: p.record.models.clone(),
            vram_gb: p.record.vram_gb,
            ram_gb: p.record.ram_gb,
            version: p.record.version.clone(),
            load: p.record.load,
            last_seen_ms: p.last_seen_ms,
            split: p.record.split.clone(),
            split_role: None,
            admitted_for: rounds
                .standing
                .admitted
                .get(&p.record.node_id)
                .map(|m| m.iter().cloned().collect())
                .unwrap_or_default(),
            usage: p.record.usage,
        }
    }
}

/// Total memory of this machine in GB, from `/proc/meminfo`; 0 where that is unreadable.
pub fn machine_ram_gb() -> f32 {
    meminfo_kb("MemTotal").map_or(0.0, |kb| (kb as f64 / 1024.0 / 1024.0) as f32)
}

/// One `/proc/meminfo` field (`MemTotal`, `MemAvailable`, …) in kB; `None` where unreadable.
pub fn meminfo_kb(field: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.split(':').next() == Some(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse().ok())
}

impl App {
    pub fn new(node: Arc<Node>, mesh: Option<MeshHandle>, api_addr: String) -> Arc<Self> {
        Self::with_options(node, mesh, api_addr, AppOptions::default())
    }

    pub fn with_options(
        node: Arc<Node>,
        mesh: Option<MeshHandle>,
        api_addr: String,
        opts: AppOptions,
    ) -> Arc<Self> {
        let peer_http = match (&mesh, &opts.signing_key) {
            (Some(m), Some(k)) => match crate::peer::client(k, m.directory()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the peer channel; requests will not be routed to peers");
                    None
                }
            },
            _ => None,
        };
        // `config::load` validated the keys; a registry that still fails to build refuses all.
        let registry = crate::auth::OperatorRegistry::from_config(&opts.config.operators)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "operator registry invalid; admin changes are refused");
                crate::auth::OperatorRegistry::default()
            });
        let admin = Arc::new(crate::auth::AdminAuth::new(
            registry,
            opts.admin_open,
            crate::auth::Binding::now(node.info.node_id.clone()),
        ));
        let wakeable = Arc::new(crate::wakeable::Inventory::new(
            &opts.config.wakeable,
            opts.invite.clone(),
            &api_addr,
        ));
        let placement = Arc::new(crate::workloads::Placement::load(
            opts.data_dir.as_deref(),
            opts.demand,
        ));
        let app = Arc::new(Self {
            node,
            schedule: opts.schedule,
            learner: opts.learner,
            signing_key: opts.signing_key,
            own_validation: RwLock::new(None),
            admission: crate::attestations::Book::default(),
            changes: watch::channel(0).0,
            tunables: opts.tunables,
            rounds: RwLock::new(Arc::new(RoundView::default())),
            data_dir: opts.data_dir,
            config: Mutex::new(opts.config),
            build: opts.build,
            mesh,
            api_addr,
            requests: Arc::new(RequestLog::default()),
            peer_http,
            ram_gb: machine_ram_gb(),
            balance: Arc::default(),
            admin,
            wakeable,
            metrics: Arc::default(),
            join: opts.join,
            placement,
            usage: Arc::default(),
        });
        app.metrics.spawn_feed(&app.requests);
        app
    }

    pub fn round_view(&self) -> Arc<RoundView> {
        self.rounds
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn timing(&self) -> infermesh_state::Timing {
        self.schedule.timing(self.tunables.alert_lead_ms)
    }

    pub fn peers(&self) -> Vec<PeerView> {
        self.mesh.as_ref().map_or_else(Vec::new, |m| m.peers())
    }

    /// The members, for code that reads them without holding the app.
    pub fn members(&self) -> Members {
        Members::new(self.mesh.as_ref().map(MeshHandle::directory))
    }

    /// What this node tells the mesh about itself right now.
    pub fn record(&self) -> NodeRecord {
        NodeRecord {
            validation: self
                .own_validation
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            schedule: self.schedule.spec(),
            attestations: self
                .admission
                .published(self.schedule.now_ms(), self.schedule.spec().as_ref()),
            groups: self.placement.groups(),
            replicas: self.placement.claims(self.node.assigned_models()),
            on_disk: self.placement.on_disk(),
            demand: self.placement.demand(),
            usage: self.usage.get().map(Usage::coarse),
            ..Self::record_of(&self.node, &self.api_addr, self.ram_gb)
        }
    }

    pub fn record_of(node: &Node, api_addr: &str, ram_gb: f32) -> NodeRecord {
        NodeRecord {
            node_id: node.info.node_id.clone(),
            name: node.info.name.clone(),
            api_addr: api_addr.to_string(),
            state: Some(node.state()),
            // Kept so builds that predate `state` still classify us.
            role: Some(
                if node.info.client_mode {
                    "client"
                } else {
                    "worker"
                }
                .into(),
            ),
            models: node.serving_models(),
            vram_gb: node.vram_gb(),
            ram_gb,
            version: node.info.version.clone(),
            load: node.client_load(),
            mem_offer_bytes: node.mem_offer(),
            split: node.split_part().map(|p| p.claim),
            ..NodeRecord::default()
        }
    }

    /// Publishes the current record if it differs from the one the mesh already has.
    pub fn publish_if_changed(&self) {
        if let Some(mesh) = &self.mesh {
            let rec = self.record();
            if mesh.record() != rec {
                mesh.publish(rec);
                self.changes.send_modify(|n| *n += 1);
            }
        }
    }

    /// A client, or a node started with `--join`: without a peer it cannot do its job, so "no
    /// peers reachable" is the truth about it (a lone server without `--join` is simply alone).
    pub fn expects_peers(&self) -> bool {
        self.node.info.client_mode || !self.join.is_empty()
    }
}
