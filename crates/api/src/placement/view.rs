//! The mesh as placement sees it, built the same way on every node from gossiped records: the
//! groups, each node's replicas (serving only once its verifiers admitted it), files and room.

use std::collections::{BTreeMap, BTreeSet};

use infermesh_backend::disk;
use infermesh_mesh::group::GroupDecl;
use infermesh_mesh::record::ReplicaClaim;
use infermesh_mesh::PeerView;
use infermesh_state::placement::{group_status, GroupSpec, GroupStatus, NodeView, Replica};
use infermesh_state::NodeState;

use super::replica;
use crate::app::App;

/// A peer silent this long counts as gone for placement: heartbeats come every 0.4 s, and the
/// cost of being wrong is one extra replica, released again once the peer is back.
pub const GONE_AFTER_MS: u64 = 2_000;

/// What one placement pass works from.
pub struct Snapshot {
    pub specs: Vec<GroupSpec>,
    pub nodes: Vec<NodeView>,
    /// Peers by id (what they publish: demand, load).
    pub peers: BTreeMap<String, PeerView>,
}

impl Snapshot {
    pub fn take(app: &App) -> Self {
        let rounds = app.round_view();
        let peers: BTreeMap<String, PeerView> = app
            .peers()
            .into_iter()
            .filter(|p| p.last_seen_ms <= GONE_AFTER_MS)
            .map(|p| (p.record.node_id.clone(), p))
            .collect();
        let mut nodes = vec![own_view(app)];
        for p in peers.values() {
            let id = &p.record.node_id;
            let replicas: Vec<Replica> = p
                .record
                .replicas
                .iter()
                .map(|r| replica_of(r, r.ready && rounds.standing.admits(id, &r.model)))
                .collect();
            nodes.push(NodeView {
                id: id.clone(),
                name: p.record.name.clone(),
                idle: p.state == NodeState::Standby
                    && p.record.split.is_none()
                    && replicas.is_empty(),
                replicas,
                on_disk: p.record.on_disk.iter().map(|d| d.model.clone()).collect(),
                free_bytes: p.record.mem_offer_bytes,
                load: p.record.load,
            });
        }
        let specs = specs(&app.placement.groups(), app, &peers);
        Self {
            specs,
            nodes,
            peers,
        }
    }

    /// Extra replicas demand calls for, per model: what the group's demand judge (the serving
    /// replica with the smallest id) publishes; this node's own tracker when it is the judge.
    pub fn extras(&self, own_id: &str, own: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for spec in &self.specs {
            let Some(judge) = judge(&self.nodes, &spec.model) else {
                continue;
            };
            let extra = if judge == own_id {
                own.get(&spec.model).copied()
            } else {
                self.peers
                    .get(judge)
                    .and_then(|p| p.record.demand.get(&spec.model).copied())
            };
            if let Some(e) = extra.filter(|e| *e > 0) {
                out.insert(spec.model.clone(), e);
            }
        }
        out
    }

    /// The groups as operators see them.
    pub fn statuses(&self, extras: &BTreeMap<String, u32>) -> Vec<GroupStatus> {
        self.specs
            .iter()
            .filter(|s| s.max > 0)
            .map(|s| group_status(s, extras.get(&s.model).copied().unwrap_or(0), &self.nodes))
            .collect()
    }
}

/// The serving replica of `model` with the smallest id: the one node that judges its demand.
pub fn judge<'a>(nodes: &'a [NodeView], model: &str) -> Option<&'a str> {
    nodes
        .iter()
        .filter(|n| n.replicas.iter().any(|r| r.model == model && r.serving))
        .map(|n| n.id.as_str())
        .min()
}

fn replica_of(r: &ReplicaClaim, serving: bool) -> Replica {
    Replica {
        model: r.model.clone(),
        serving,
        placed: r.placed,
        replaces: r.replaces.clone(),
    }
}

/// This node's own claims, as its record states them.
pub fn own_claims(app: &App) -> Vec<ReplicaClaim> {
    app.placement.claims(app.node.assigned_models())
}

fn own_view(app: &App) -> NodeView {
    let replicas = own_claims(app)
        .iter()
        .map(|r| replica_of(r, r.ready))
        .collect();
    NodeView {
        id: app.node.info.node_id.clone(),
        name: app.node.info.name.clone(),
        idle: replica::idle(app).is_ok(),
        replicas,
        on_disk: app
            .placement
            .on_disk()
            .into_iter()
            .map(|d| d.model)
            .collect::<BTreeSet<_>>(),
        free_bytes: app.node.mem_offer(),
        load: app.node.client_load(),
    }
}

/// A group's needs: the file's size (as its holders report it) plus a quarter for the engine's
/// context and buffers; whether a node without the file can get it.
fn specs(decls: &[GroupDecl], app: &App, peers: &BTreeMap<String, PeerView>) -> Vec<GroupSpec> {
    let mut sizes: BTreeMap<&str, u64> = BTreeMap::new();
    let own = app.placement.on_disk();
    let all = own
        .iter()
        .chain(peers.values().flat_map(|p| p.record.on_disk.iter()));
    for d in all {
        let e = sizes.entry(d.model.as_str()).or_default();
        *e = (*e).max(d.bytes);
    }
    decls
        .iter()
        .map(|d| GroupSpec {
            model: d.model.clone(),
            replicas: d.replicas,
            min: d.min,
            max: d.max,
            fetchable: d.url.is_some() || disk::known(&d.model).is_some(),
            need_bytes: sizes
                .get(d.model.as_str())
                .map_or(0, |b| b.saturating_add(b / 4)),
        })
        .collect()
}
