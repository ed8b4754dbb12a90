//! The placement loop every serving-capable node runs: learn groups from peers (verifying each
//! operator signature), judge demand where this node is a group's judge, compute
//! [`infermesh_state::placement::place`] over the same view every node has, and act on the
//! decisions that name this node. Starts wait for the decision to hold two passes and stops
//! for three seconds, so a view still converging (a join, a restart) does not flap replicas.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use infermesh_mesh::group::GroupDecl;
use infermesh_mesh::record::DiskModel;
use infermesh_state::demand::DemandTracker;
use infermesh_state::placement::{can_take, place, Action, Decision};

use super::replica;
use super::view::{judge, Snapshot};
use crate::app::App;
use crate::workloads::Origin;

pub const TICK: Duration = Duration::from_millis(250);
const STOP_HOLD: Duration = Duration::from_secs(3);
const DISK_EVERY: Duration = Duration::from_secs(5);

pub async fn run(app: Arc<App>) {
    let mut state = Loop::default();
    let started = Instant::now();
    loop {
        state.pass(&app, started.elapsed().as_millis() as u64);
        tokio::time::sleep(TICK).await;
    }
}

#[derive(Default)]
struct Loop {
    demand: DemandTracker,
    /// Decisions about this node seen in the previous pass, with when each was first seen.
    pending: BTreeMap<(String, bool), Instant>,
    /// Refused declarations already logged (peer, model, signature): once per offender.
    refused: HashSet<(String, String, String)>,
    disk_at: Option<Instant>,
}

impl Loop {
    fn pass(&mut self, app: &Arc<App>, now_ms: u64) {
        if self.disk_at.is_none_or(|t| t.elapsed() >= DISK_EVERY) {
            refresh_disk(app);
            self.disk_at = Some(Instant::now());
        }
        self.learn_groups(app);
        let snap = Snapshot::take(app);
        let own_id = app.node.info.node_id.clone();
        forget_replaced(app, &snap);
        self.judge_demand(app, &snap, &own_id, now_ms);
        let extras = snap.extras(&own_id, &self.demand.extras());
        let mine: Vec<Decision> = place(&snap.specs, &extras, &snap.nodes)
            .into_iter()
            .filter(|d| d.node == own_id)
            .collect();
        let now = Instant::now();
        let keys: BTreeSet<(String, bool)> = mine
            .iter()
            .map(|d| (d.model.clone(), d.action == Action::Start))
            .collect();
        self.pending.retain(|k, _| keys.contains(k));
        for d in mine {
            let key = (d.model.clone(), d.action == Action::Start);
            let first = *self.pending.entry(key.clone()).or_insert(now);
            let held = now - first;
            let ripe = match d.action {
                Action::Start => held >= TICK,
                Action::Stop => held >= STOP_HOLD,
            };
            if ripe {
                self.pending.remove(&key);
                act(app, d);
            }
        }
    }

    fn learn_groups(&mut self, app: &App) {
        let Some(mesh) = &app.mesh else { return };
        let mesh_id = mesh.mesh_id();
        let mut verified: Vec<(GroupDecl, String)> = Vec::new();
        for p in app.peers() {
            for d in &p.record.groups {
                if !app.placement.is_news(d) {
                    continue;
                }
                match d.verify(&mesh_id, |k| app.admin.registry.verifying_key(k)) {
                    Ok(()) => verified.push((d.clone(), p.record.name.clone())),
                    Err(e) => {
                        if self.refused.len() > 4096 {
                            self.refused.clear();
                        }
                        let key = (p.record.node_id.clone(), d.model.clone(), d.sig.clone());
                        if self.refused.insert(key) {
                            tracing::warn!(peer = %p.record.name, model = %d.model, "workload group relayed by {} ignored: {e}", p.record.name);
                        }
                    }
                }
            }
        }
        for (d, from) in verified {
            // A failed save is logged by `accept`; the group is relearnt on the next pass.
            let _ = accept(app, &d, &format!("learnt from {from}"));
        }
    }

    fn judge_demand(&mut self, app: &App, snap: &Snapshot, own_id: &str, now_ms: u64) {
        let models: BTreeSet<String> = snap.specs.iter().map(|s| s.model.clone()).collect();
        self.demand.retain(&models);
        for spec in &snap.specs {
            if judge(&snap.nodes, &spec.model) != Some(own_id) {
                self.demand.forget(&spec.model);
                continue;
            }
            let published = snap
                .peers
                .values()
                .filter_map(|p| p.record.demand.get(&spec.model).copied())
                .max()
                .unwrap_or(0);
            self.demand.adopt(&spec.model, published);
            let serving: Vec<_> = snap
                .nodes
                .iter()
                .filter(|n| {
                    n.replicas
                        .iter()
                        .any(|r| r.model == spec.model && r.serving)
                })
                .collect();
            let in_flight = serving.iter().map(|n| n.load).sum();
            let extra = self.demand.extra(&spec.model);
            let room = spec.wanted(extra) < spec.max.max(spec.min);
            let candidate = snap.nodes.iter().any(|n| can_take(spec, n));
            let change = self.demand.observe(
                &spec.model,
                now_ms,
                in_flight,
                serving.len() as u32,
                room && candidate,
                &app.placement.policy,
            );
            if let Some(c) = change {
                tracing::info!(model = %c.model, extra = c.extra, "placement: {}", c.reason);
            }
        }
        app.placement.set_demand(self.demand.extras());
    }
}

/// Takes one verified declaration, saving it; logs what changed.
pub fn accept(app: &App, d: &GroupDecl, how: &str) -> Result<bool, String> {
    let changed = app
        .placement
        .offer(std::slice::from_ref(d))
        .inspect_err(|e| {
            tracing::error!(model = %d.model, "workload group not saved: {e}");
        })?;
    if changed.is_empty() {
        return Ok(false);
    }
    if d.is_removal() {
        tracing::info!(model = %d.model, "workload group {} removed ({how})", d.model);
    } else {
        tracing::info!(model = %d.model, replicas = d.replicas, min = d.min, max = d.max,
            "workload group {}: {} replicas, between {} and {} ({how})", d.model, d.replicas, d.min, d.max);
    }
    app.node.changed.notify_one();
    Ok(true)
}

fn act(app: &Arc<App>, d: Decision) {
    match d.action {
        Action::Start => {
            let origin = Origin {
                placed: true,
                replaces: None,
            };
            match replica::start(app, &d.model, origin) {
                Ok(()) => tracing::info!(model = %d.model, "placement: {}", d.reason),
                Err(why) => tracing::debug!(model = %d.model, ?why, "placement start skipped"),
            }
        }
        Action::Stop => {
            tracing::info!(model = %d.model, "placement: {}", d.reason);
            let app = app.clone();
            tokio::spawn(async move {
                if let Err(e) = replica::drain(&app, &d.model).await {
                    tracing::info!(model = %d.model, "placement release skipped: {e}");
                }
            });
        }
    }
}

/// A migration target stops naming the node it replaced once that node holds no replica of the
/// model: the pair no longer exists, and the old node may serve the model again one day.
fn forget_replaced(app: &App, snap: &Snapshot) {
    for (model, _) in app.node.assigned_models() {
        let origin = app.placement.origin(&model);
        let Some(old) = &origin.replaces else {
            continue;
        };
        let still = snap
            .nodes
            .iter()
            .any(|n| n.id == *old && n.replicas.iter().any(|r| r.model == model));
        if !still {
            app.placement.set_origin(
                &model,
                Some(Origin {
                    replaces: None,
                    ..origin
                }),
            );
        }
    }
}

fn refresh_disk(app: &App) {
    let list: Vec<DiskModel> = infermesh_backend::disk::on_disk(&app.build.model_dir)
        .into_iter()
        .take(infermesh_mesh::record::MAX_DISK_MODELS)
        .map(|(model, f)| DiskModel {
            model,
            bytes: f.bytes,
        })
        .collect();
    if list != app.placement.on_disk() {
        app.placement.set_on_disk(list);
        app.node.changed.notify_one();
    }
}
