//! TOPOLOGY: the mesh as an operator draws it on a whiteboard. Who routes (clients), which nodes
//! serve each model (its replicas, a split's host and the workers carrying its layers), and what
//! is idle capacity. Built from the same rows as NODES, so the two cannot disagree.

use std::collections::BTreeMap;

use infermesh_state::split_role::SplitClaim;
use infermesh_state::NodeState;

use super::NodeRow;

/// One node as the drawing names it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub state: Option<NodeState>,
    pub is_self: bool,
    pub load: Option<u64>,
}

/// A split of one model: its host and each worker with the layers it carries.
#[derive(Debug, Clone, PartialEq)]
pub struct SplitEdges {
    pub host: String,
    pub serving: bool,
    /// (worker name, layers, its rpc-server is up).
    pub workers: Vec<(String, String, bool)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelEdges {
    pub model: String,
    /// Nodes that list the model: serving or loading it.
    pub replicas: Vec<Member>,
    pub split: Option<SplitEdges>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Topology {
    /// Clients: they route to every serving, admitted replica and serve nothing.
    pub routers: Vec<Member>,
    pub models: Vec<ModelEdges>,
    /// Standby nodes in no split: capacity placement can use.
    pub idle: Vec<Member>,
    /// Nodes neither routing, serving, idle nor in a split (loading nothing yet, an unknown state).
    pub other: Vec<Member>,
}

fn edges<'m>(models: &'m mut BTreeMap<String, ModelEdges>, model: &str) -> &'m mut ModelEdges {
    models
        .entry(model.to_string())
        .or_insert_with(|| ModelEdges {
            model: model.to_string(),
            replicas: Vec::new(),
            split: None,
        })
}

fn member(r: &NodeRow<'_>) -> Member {
    Member {
        name: r.name.to_string(),
        state: r.state,
        is_self: r.is_self,
        load: r.load,
    }
}

/// The drawing of `rows` (any order; the result is sorted by model and then by node name).
pub fn topology(rows: &[NodeRow<'_>]) -> Topology {
    let name_of = |id: &str| {
        rows.iter()
            .find(|r| r.node_id == id)
            .map_or_else(|| id.to_string(), |r| r.name.to_string())
    };
    let worker_ready = |id: &str| {
        rows.iter().any(|r| {
            r.node_id == id && matches!(r.split, Some(SplitClaim::Worker { ready: true, .. }))
        })
    };
    let mut t = Topology::default();
    let mut models: BTreeMap<String, ModelEdges> = BTreeMap::new();
    for r in rows {
        if let Some(SplitClaim::Host {
            model,
            shares,
            serving,
            ..
        }) = r.split
        {
            let workers = shares
                .iter()
                .skip(1)
                .map(|s| {
                    let layers = if s.first_layer == s.last_layer {
                        format!("layer {}", s.first_layer)
                    } else {
                        format!("layers {}–{}", s.first_layer, s.last_layer)
                    };
                    (name_of(&s.node_id), layers, worker_ready(&s.node_id))
                })
                .collect();
            edges(&mut models, model).split = Some(SplitEdges {
                host: r.name.to_string(),
                serving: *serving,
                workers,
            });
        }
        for m in r.models {
            edges(&mut models, m).replicas.push(member(r));
        }
        let in_split = r.split.is_some();
        match r.state {
            Some(NodeState::Client) => t.routers.push(member(r)),
            Some(NodeState::Standby) if !in_split => t.idle.push(member(r)),
            _ if r.models.is_empty() && !in_split => t.other.push(member(r)),
            _ => {}
        }
    }
    t.models = models.into_values().collect();
    for m in &mut t.models {
        m.replicas.sort_by(|a, b| a.name.cmp(&b.name));
    }
    for list in [&mut t.routers, &mut t.idle, &mut t.other] {
        list.sort_by(|a, b| a.name.cmp(&b.name));
    }
    t
}
