//! The node's live runtime: its identity and its backends with their load phase. Facts are read
//! here; states are derived only by `infermesh_state`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use infermesh_backend::tester::TestResult;
use infermesh_backend::Backend;
use infermesh_state::split_role::{SplitClaim, SplitWork};
use infermesh_state::{derive_node_state, failed_message, Duty, NodeFacts, NodeState, Source};
use serde::Serialize;

use crate::config::BackendConfig;

#[derive(Debug, Clone, Serialize)]
pub struct NodeInfo {
    pub node_id: String,
    /// Hex ed25519 public key; peers verify this node's signed records with it.
    pub public_key: String,
    pub name: String,
    pub version: String,
    /// Started with `--client`: routes requests, serves none.
    pub client_mode: bool,
}

/// Where a backend's assigned model is in its life.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "phase", content = "detail", rename_all = "snake_case")]
pub enum Phase {
    Idle,
    Loading,
    Ready,
    /// Was ready; its health check fails now (see `health`). Out of service, probed until it
    /// answers again.
    Unhealthy(String),
    Failed(String),
    /// Leaving: takes no new request, finishes those in flight, then stops (a release or a
    /// migration's source).
    Draining,
}

/// A backend the health watch probes, as it was when the probe started.
pub struct ProbeCandidate {
    pub id: String,
    pub rev: u64,
    pub phase: Phase,
    pub model: Option<String>,
    pub backend: Arc<dyn Backend>,
}

pub struct BackendSlot {
    pub backend: Arc<dyn Backend>,
    /// The model this backend should serve.
    pub assigned: Option<String>,
    pub phase: Phase,
    /// The registered config; `None` for the backend built from `up`'s command line.
    pub config: Option<BackendConfig>,
    pub testing: bool,
    /// The tester's most recent result for the *current* config.
    pub last_test: Option<TestResult>,
    /// Bumped on every config change, so a test that started before it cannot record a result
    /// about a configuration that no longer exists.
    pub config_rev: u64,
}

impl BackendSlot {
    /// What it is doing with its model, as the sentences see it. `Idle` with a model assigned
    /// is the instant before its load starts, so it reads as loading, not as idle capacity.
    pub fn duty(&self) -> Duty<'_> {
        match &self.phase {
            Phase::Failed(cause) => Duty::Failed(cause),
            Phase::Unhealthy(cause) => Duty::Unhealthy(cause),
            Phase::Ready | Phase::Draining => Duty::Serving,
            Phase::Loading => Duty::Loading,
            Phase::Idle if self.assigned.is_some() => Duty::Loading,
            Phase::Idle => Duty::Standby,
        }
    }

    /// Where its configuration lives, which decides how an operator changes it.
    pub fn source(&self) -> Source {
        if self.config.is_some() {
            Source::Config
        } else {
            Source::CommandLine
        }
    }
}

/// This node's part in a split (see `crate::split`): what its record claims, what that makes
/// of its state, and the sentence that replaces the node's own while the split is not serving.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitPart {
    #[serde(flatten)]
    pub claim: SplitClaim,
    #[serde(skip)]
    pub work: SplitWork,
    /// Where the split stands, for operators ("split over 3 nodes: a (layers 0–9), …").
    pub detail: String,
    #[serde(skip)]
    pub sentence: Option<String>,
    /// A worker's `rpc-server` port on loopback: where the host's tunnel is let through to.
    #[serde(skip)]
    pub rpc_port: Option<u16>,
    /// A host's RPC bytes through its tunnels (filled in by `/api/status`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rpc_traffic: Option<infermesh_state::split_role::RpcTraffic>,
}

/// Why a test cannot start now.
#[derive(Debug, Clone, PartialEq)]
pub enum TestRefusal {
    Unknown,
    AlreadyTesting,
    Serving(String),
}

/// A test that may run: the backend, its models and the config revision it tests.
pub struct TestTicket {
    pub backend: Arc<dyn Backend>,
    pub models: Vec<String>,
    pub rev: u64,
}

/// Result of looking a model up among this node's backends.
pub enum LocalModel {
    Ready(Arc<dyn Backend>),
    /// Configured here but not servable yet (loading or failed).
    NotReady(String),
    Absent,
}

pub struct Node {
    pub info: NodeInfo,
    slots: RwLock<BTreeMap<String, BackendSlot>>,
    in_flight: AtomicU32,
    /// The part of `in_flight` that is client traffic: admission checks excluded.
    client_load: AtomicU32,
    /// Source of config revisions, node-wide: an id that is removed and registered again must
    /// never reuse a revision a still-running test holds.
    next_rev: AtomicU64,
    /// Signalled after every change of the backends (phase, registration): the round loop
    /// publishes the record at once, so peers learn "serving" in a gossip round, not a tick later.
    pub changed: tokio::sync::Notify,
    split: RwLock<Option<SplitPart>>,
    /// Bytes this node offers to carry another node's layers while it serves nothing itself.
    mem_offer: AtomicU64,
}

/// The slots, written; [`Node::changed`] is signalled when the write ends.
struct SlotsWrite<'a> {
    guard: std::sync::RwLockWriteGuard<'a, BTreeMap<String, BackendSlot>>,
    changed: &'a tokio::sync::Notify,
}

impl std::ops::Deref for SlotsWrite<'_> {
    type Target = BTreeMap<String, BackendSlot>;
    fn deref(&self) -> &Self::Target {
        &self.guard
    }
}

impl std::ops::DerefMut for SlotsWrite<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.guard
    }
}

impl Drop for SlotsWrite<'_> {
    fn drop(&mut self) {
        // A stored permit if nobody waits yet: the next wait returns at once, no change lost.
        self.changed.notify_one();
    }
}

/// Decrements the in-flight counters when a request ends, however it ends.
pub struct InFlight {
    node: Arc<Node>,
    client: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Ordering::Relaxed);
        if self.client {
            self.node.client_load.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Node {
    pub fn new(info: NodeInfo) -> Arc<Self> {
        Arc::new(Self {
            info,
            slots: RwLock::new(BTreeMap::new()),
            in_flight: AtomicU32::new(0),
            client_load: AtomicU32::new(0),
            next_rev: AtomicU64::new(0),
            changed: tokio::sync::Notify::new(),
            split: RwLock::new(None),
            mem_offer: AtomicU64::new(0),
        })
    }

    pub fn add_backend(&self, backend: Arc<dyn Backend>, assigned: Option<String>) {
        self.put_backend(backend, assigned, None);
    }

    /// Registers or replaces a backend. A replacement starts with no test result: the old one
    /// was about another configuration.
    pub fn put_backend(
        &self,
        backend: Arc<dyn Backend>,
        assigned: Option<String>,
        config: Option<BackendConfig>,
    ) {
        let id = backend.describe().id;
        let mut slots = self.slots_mut();
        let rev = self.next_rev.fetch_add(1, Ordering::Relaxed);
        let slot = BackendSlot {
            backend,
            assigned,
            phase: Phase::Idle,
            config,
            testing: false,
            last_test: None,
            config_rev: rev,
        };
        slots.insert(id, slot);
    }

    pub fn remove_backend(&self, id: &str) -> Option<Arc<dyn Backend>> {
        let mut slots = self.slots_mut();
        slots.remove(id).map(|s| s.backend)
    }

    /// Reads one slot under the lock.
    pub fn with_slot<T>(&self, id: &str, f: impl FnOnce(&BackendSlot) -> T) -> Option<T> {
        self.slots.read().expect("slots lock").get(id).map(f)
    }

    /// Reads every slot under one lock, so a sentence about several backends sees one instant.
    pub fn with_slots<T>(&self, f: impl FnOnce(&BTreeMap<String, BackendSlot>) -> T) -> T {
        f(&self.slots.read().expect("slots lock"))
    }

    pub fn backend_ids(&self) -> Vec<String> {
        self.slots
            .read()
            .expect("slots lock")
            .keys()
            .cloned()
            .collect()
    }

    /// Claims the per-backend test lock: a second caller is refused, not queued, and a backend
    /// that is loading or serving is not taken out of service for a test.
    pub fn try_begin_test(&self, id: &str) -> Result<TestTicket, TestRefusal> {
        let mut slots = self.slots_mut();
        let slot = slots.get_mut(id).ok_or(TestRefusal::Unknown)?;
        if slot.testing {
            return Err(TestRefusal::AlreadyTesting);
        }
        match &slot.phase {
            Phase::Ready => return Err(TestRefusal::Serving("is serving".into())),
            Phase::Unhealthy(_) => {
                return Err(TestRefusal::Serving(
                    "is assigned to serve (out of service while its health check fails)".into(),
                ))
            }
            Phase::Loading => return Err(TestRefusal::Serving("is loading its model".into())),
            Phase::Draining => return Err(TestRefusal::Serving("is draining".into())),
            Phase::Idle | Phase::Failed(_) => {}
        }
        slot.testing = true;
        Ok(TestTicket {
            backend: slot.backend.clone(),
            models: slot.backend.describe().models,
            rev: slot.config_rev,
        })
    }

    /// Releases the test lock and records `result` if the config it tested is still current.
    /// Returns whether it was recorded.
    pub fn finish_test(&self, id: &str, rev: u64, result: TestResult) -> bool {
        let mut slots = self.slots_mut();
        let Some(slot) = slots.get_mut(id) else {
            return false;
        };
        if slot.config_rev != rev {
            return false;
        }
        slot.testing = false;
        slot.last_test = Some(result);
        true
    }

    fn slots_mut(&self) -> SlotsWrite<'_> {
        SlotsWrite {
            guard: self.slots.write().expect("slots lock"),
            changed: &self.changed,
        }
    }

    pub fn set_phase(&self, id: &str, phase: Phase) {
        if let Some(slot) = self.slots_mut().get_mut(id) {
            slot.phase = phase;
        }
    }

    /// Ready and unhealthy backends: what the health watch probes.
    pub fn probe_candidates(&self) -> Vec<ProbeCandidate> {
        let slots = self.slots.read().expect("slots lock");
        slots
            .iter()
            .filter(|(_, s)| matches!(s.phase, Phase::Ready | Phase::Unhealthy(_)))
            .map(|(id, s)| ProbeCandidate {
                id: id.clone(),
                rev: s.config_rev,
                phase: s.phase.clone(),
                model: s.assigned.clone(),
                backend: s.backend.clone(),
            })
            .collect()
    }

    /// Moves a backend to `next` only if it is still at config `rev` in phase `expected`.
    pub fn swap_phase(&self, id: &str, rev: u64, expected: &Phase, next: Phase) -> bool {
        let mut slots = self.slots_mut();
        match slots.get_mut(id) {
            Some(slot) if slot.config_rev == rev && slot.phase == *expected => {
                slot.phase = next;
                true
            }
            _ => false,
        }
    }

    /// Loads the backend's assigned model, moving it Loading → Ready (or Failed).
    pub async fn activate(&self, id: &str) {
        let Some((backend, Some(model), source)) = self
            .slots
            .read()
            .expect("slots lock")
            .get(id)
            .map(|s| (s.backend.clone(), s.assigned.clone(), s.source()))
        else {
            return;
        };
        self.set_phase(id, Phase::Loading);
        tracing::info!(backend = id, model, "loading model");
        let started = std::time::Instant::now();
        let result = match backend.load(&model).await {
            Ok(()) => backend.health().await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                tracing::info!(
                    backend = id,
                    model,
                    load_ms = started.elapsed().as_millis() as u64,
                    "model loaded; serving"
                );
                self.set_phase(id, Phase::Ready);
            }
            Err(e) => {
                // The same sentence as the status message, so the log line and the deck agree.
                let cause = e.to_string();
                tracing::error!(
                    backend = id,
                    model,
                    "{}",
                    failed_message(id, &cause, source)
                );
                self.set_phase(id, Phase::Failed(cause));
            }
        }
    }

    /// Takes the backend's model away and marks it idle capacity again (after a drain).
    pub fn unassign(&self, id: &str) {
        if let Some(slot) = self.slots_mut().get_mut(id) {
            slot.assigned = None;
            slot.phase = Phase::Idle;
        }
    }

    /// The backend serving `model` (ready), if any.
    pub fn serving_backend_of(&self, model: &str) -> Option<String> {
        let slots = self.slots.read().expect("slots lock");
        slots
            .iter()
            .find(|(_, s)| s.phase == Phase::Ready && s.assigned.as_deref() == Some(model))
            .map(|(id, _)| id.clone())
    }

    /// Every model assigned to a backend, with whether it answers now.
    pub fn assigned_models(&self) -> Vec<(String, bool)> {
        let slots = self.slots.read().expect("slots lock");
        slots
            .values()
            .filter(|s| !matches!(s.phase, Phase::Failed(_) | Phase::Draining))
            .filter_map(|s| s.assigned.clone().map(|m| (m, s.phase == Phase::Ready)))
            .collect()
    }

    /// Its part in a split, if any.
    pub fn split_part(&self) -> Option<SplitPart> {
        self.split.read().expect("split lock").clone()
    }

    /// Sets (or clears) its part in a split; the record is published at once.
    pub fn set_split_part(&self, part: Option<SplitPart>) {
        *self.split.write().expect("split lock") = part;
        self.changed.notify_one();
    }

    pub fn set_mem_offer(&self, bytes: u64) {
        self.mem_offer.store(bytes, Ordering::Relaxed);
    }

    /// What it offers splits now: its memory while it serves no model of its own (idle, or
    /// already a worker), nothing otherwise.
    pub fn mem_offer(&self) -> u64 {
        let working = matches!(
            self.split
                .read()
                .expect("split lock")
                .as_ref()
                .map(|p| &p.claim),
            Some(SplitClaim::Worker { .. })
        );
        if working || self.state() == NodeState::Standby {
            self.mem_offer.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    pub fn facts(&self) -> NodeFacts {
        let split_work = self
            .split
            .read()
            .expect("split lock")
            .as_ref()
            .map_or(SplitWork::None, |p| p.work);
        let slots = self.slots.read().expect("slots lock");
        NodeFacts {
            split_work,
            configured_client: self.info.client_mode,
            backends: slots.len(),
            model_assigned: slots.values().any(|s| s.assigned.is_some()),
            backend_loading: slots.values().any(|s| s.phase == Phase::Loading),
            backend_serving: slots
                .values()
                .any(|s| matches!(s.phase, Phase::Ready | Phase::Draining)),
        }
    }

    pub fn state(&self) -> NodeState {
        derive_node_state(self.facts())
    }

    /// A model is on its way in: loading, or assigned and about to start.
    pub fn loading(&self) -> bool {
        let slots = self.slots.read().expect("slots lock");
        slots.values().any(|s| s.duty() == Duty::Loading)
    }

    /// Models this node can answer right now.
    pub fn serving_models(&self) -> Vec<String> {
        if self.info.client_mode {
            return Vec::new();
        }
        let slots = self.slots.read().expect("slots lock");
        let mut models: Vec<String> = slots
            .values()
            .filter(|s| s.phase == Phase::Ready)
            .filter_map(|s| s.assigned.clone())
            .collect();
        models.sort();
        models.dedup();
        models
    }

    pub fn find_local(&self, model: &str) -> LocalModel {
        if self.info.client_mode {
            return LocalModel::Absent;
        }
        let slots = self.slots.read().expect("slots lock");
        let mut not_ready = None;
        for slot in slots
            .values()
            .filter(|s| s.assigned.as_deref() == Some(model))
        {
            match &slot.phase {
                Phase::Ready => return LocalModel::Ready(slot.backend.clone()),
                Phase::Failed(e) => {
                    not_ready = Some(format!("model `{model}` failed to load: {e}"))
                }
                Phase::Unhealthy(e) => {
                    not_ready = Some(format!(
                        "model `{model}` is out of service: its backend fails its health check: {e}"
                    ))
                }
                Phase::Idle | Phase::Loading => {
                    not_ready = Some(format!("model `{model}` is loading; retry shortly"))
                }
                Phase::Draining => {
                    not_ready = Some(format!(
                        "model `{model}` is moving off this node; another replica answers"
                    ))
                }
            }
        }
        not_ready.map_or(LocalModel::Absent, LocalModel::NotReady)
    }

    /// A snapshot of every backend for `/api/status`.
    pub fn backend_views(&self) -> Vec<BackendView> {
        let slots = self.slots.read().expect("slots lock");
        slots
            .iter()
            .map(|(id, s)| {
                let d = s.backend.describe();
                let loading = d.loading.filter(|_| s.phase == Phase::Loading);
                BackendView {
                    id: id.clone(),
                    driver: d.driver,
                    models: d.models,
                    assigned: s.assigned.clone(),
                    phase: s.phase.clone(),
                    mem_gb: d.mem_gb,
                    load_pct: loading.map(|l| (l.fraction.clamp(0.0, 1.0) * 100.0) as u32),
                    load_eta_s: loading
                        .and_then(|l| infermesh_state::timing::eta_secs(l.fraction, l.elapsed_ms)),
                }
            })
            .collect()
    }

    /// Backends answering now, with the model each serves: what a validation round checks.
    pub fn ready_backends(&self) -> Vec<(String, String, Arc<dyn Backend>)> {
        let slots = self.slots.read().expect("slots lock");
        slots
            .iter()
            .filter(|(_, s)| s.phase == Phase::Ready)
            .filter_map(|(id, s)| {
                s.assigned
                    .clone()
                    .map(|m| (id.clone(), m, s.backend.clone()))
            })
            .collect()
    }

    /// Memory of the loaded models. A fold, not `sum()`: an empty f32 sum is `-0.0`, which
    /// would show as "-0" on a client node.
    pub fn vram_gb(&self) -> f32 {
        let slots = self.slots.read().expect("slots lock");
        slots
            .values()
            .fold(0.0, |acc, s| acc + s.backend.describe().mem_gb)
    }

    /// Counts a request until the guard drops. `client` = false for an admission check: it is
    /// waited for by a drain but is not load, or every verifier checking a new replica would
    /// read as demand for one more.
    pub fn begin_request(self: &Arc<Self>, client: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        if client {
            self.client_load.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            node: self.clone(),
            client,
        }
    }

    /// Every request running here, admission checks included (what a drain waits for).
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Client requests running here: the load routing balances and demand judges.
    pub fn client_load(&self) -> u32 {
        self.client_load.load(Ordering::Relaxed)
    }

    /// Stops every backend (node shutdown).
    pub async fn stop_all(&self) {
        let backends: Vec<_> = self
            .slots
            .read()
            .expect("slots lock")
            .values()
            .map(|s| s.backend.clone())
            .collect();
        for b in backends {
            if let Err(e) = b.stop().await {
                tracing::warn!(error = %e, "backend did not stop cleanly");
            }
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendView {
    pub id: String,
    pub driver: String,
    pub models: Vec<String>,
    pub assigned: Option<String>,
    #[serde(flatten)]
    pub phase: Phase,
    pub mem_gb: f32,
    /// While its model is read in: percent done and, once there is a pace, seconds left.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_pct: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_eta_s: Option<u64>,
}
