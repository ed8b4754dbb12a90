//! Which idle (standby) node loads which model for the operator's workload groups, and which
//! mesh-placed replica goes when a group has too many.
//!
//! Every node runs [`place`] over the same gossiped view and acts only on the decisions that
//! name itself, so there is no leader and no lock: the answer has to be a pure function of the
//! view, independent of the order in which records arrived. That is why everything is sorted
//! before it is decided and every tie ends on the node id.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::split::format_mem;

/// An operator-declared workload group: keep `replicas` copies of `model` served, within [min, max].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub model: String,
    pub replicas: u32,
    pub min: u32,
    pub max: u32,
    /// Nodes without the file can still load it (the group has a download URL, or the model is a known fetchable one).
    pub fetchable: bool,
    /// Bytes a node needs free to load it; 0 = unknown (then memory is not checked).
    pub need_bytes: u64,
}

impl GroupSpec {
    /// The replica count wanted with `extra` demand replicas: clamp(replicas + extra, min, max).
    /// A `min` above `max` wins (max is read as min), so a mistyped range still keeps the floor
    /// the operator asked for rather than panicking in `clamp`.
    pub fn wanted(&self, extra: u32) -> u32 {
        let max = self.max.max(self.min);
        let base = self.replicas.clamp(self.min, max);
        base.saturating_add(extra).clamp(self.min, max)
    }
}

/// One model on one node: loading or serving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub model: String,
    /// Serving and admitted by its peers; false = loading (or serving but not yet admitted).
    pub serving: bool,
    /// Started by placement (releasable); false = the operator put it there (`--model`, admin, migration), never released by placement.
    pub placed: bool,
    /// Node id this replica is replacing (a live migration target): while that node still has a replica of the same model, the two count as ONE.
    pub replaces: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub name: String,
    /// Free to take a placement: standby (no replica at all), not a client, no split role, not failing admission.
    pub idle: bool,
    pub replicas: Vec<Replica>,
    /// Models whose file is on this node's disk.
    pub on_disk: BTreeSet<String>,
    /// Memory it can give a model, bytes.
    pub free_bytes: u64,
    /// In-flight requests (including queued) on the node.
    pub load: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Start,
    Stop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Node id.
    pub node: String,
    pub model: String,
    pub action: Action,
    /// One sentence an operator reads in the log and the deck's event list, using node names.
    pub reason: String,
}

/// A group as operators see it (and as the deck reads it back from `/api/status`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupStatus {
    pub model: String,
    pub wanted: u32,
    pub serving: u32,
    pub loading: u32,
    pub min: u32,
    pub max: u32,
    pub sentence: String,
}

/// A node whose replica of a model counts toward its group.
struct Holder<'a> {
    node: &'a NodeView,
    replica: &'a Replica,
}

/// A group short of replicas, while [`place`] fills it.
struct Need<'a> {
    spec: &'a GroupSpec,
    wanted: u32,
    running: u32,
    demand: u32,
    assigned: u32,
}

impl Need<'_> {
    fn remaining(&self) -> u32 {
        self.wanted.saturating_sub(self.running + self.assigned)
    }
}

/// Every start and stop the groups need now. Deterministic: same inputs (in any order of
/// `nodes` and `groups`) → same output, so every node computes the same answer and each acts
/// only on decisions naming itself.
///
/// Two groups for one model should not exist; if they do, the one that sorts first on all its
/// fields wins, so every node still picks the same one. Node ids are assumed unique (one record
/// per node); a duplicate keeps the record that sorts first on its plain fields.
///
/// Decisions come sorted by (model, stops before starts, node id).
pub fn place(
    groups: &[GroupSpec],
    extra: &BTreeMap<String, u32>,
    nodes: &[NodeView],
) -> Vec<Decision> {
    let groups = sorted_groups(groups);
    let nodes = sorted_nodes(nodes);
    let mut out = Vec::new();
    let mut needs = Vec::new();
    for spec in groups {
        let more = extra.get(&spec.model).copied().unwrap_or(0);
        let wanted = spec.wanted(more);
        let held = holders(&spec.model, &nodes);
        let running = count(held.len());
        if running > wanted {
            out.extend(release(spec, wanted, &held));
        } else if running < wanted {
            let demand = wanted.saturating_sub(spec.wanted(0));
            needs.push(Need {
                spec,
                wanted,
                running,
                demand,
                assigned: 0,
            });
        }
    }
    out.extend(fill(&mut needs, &nodes));
    out.sort_by(|a, b| {
        (&a.model, action_rank(a.action), &a.node).cmp(&(&b.model, action_rank(b.action), &b.node))
    });
    out
}

/// What operators see of one group. Counts follow [`place`]: a migration target whose old
/// node still holds the model is not counted. Candidates are judged for this group alone, so
/// an idle node another group takes first may still be offered here.
pub fn group_status(spec: &GroupSpec, extra: u32, nodes: &[NodeView]) -> GroupStatus {
    let nodes = sorted_nodes(nodes);
    let wanted = spec.wanted(extra);
    let demand = wanted.saturating_sub(spec.wanted(0));
    let held = holders(&spec.model, &nodes);
    let running = count(held.len());
    let serving = count(held.iter().filter(|h| h.replica.serving).count());
    let loading = running - serving;

    let mut sentence = if wanted == 0 && running == 0 {
        "no replica wanted".to_string()
    } else if running > wanted {
        format!("{serving} {} serving, {wanted} wanted", replicas(serving))
    } else {
        format!("{serving} of {wanted} {} serving", replicas(wanted))
    };
    if demand > 0 {
        sentence.push_str(&format!(" ({demand} added for demand)"));
    }
    if running > wanted {
        sentence.push_str(": ");
        sentence.push_str(&surplus_clause(running - wanted, &held));
    }
    let loading_names: Vec<&str> = held
        .iter()
        .filter(|h| !h.replica.serving)
        .map(|h| h.node.name.as_str())
        .collect();
    if !loading_names.is_empty() {
        sentence.push_str(&format!("; {} loading", name_list(&loading_names)));
    }
    if running < wanted {
        sentence.push_str("; ");
        sentence.push_str(&deficit_clause(spec, wanted - running, running, &nodes));
    }
    GroupStatus {
        model: spec.model.clone(),
        wanted,
        serving,
        loading,
        min: spec.min,
        max: spec.max.max(spec.min),
        sentence,
    }
}

fn sorted_groups(groups: &[GroupSpec]) -> Vec<&GroupSpec> {
    let mut out: Vec<&GroupSpec> = groups.iter().collect();
    out.sort_by_key(|g| {
        (
            &g.model,
            g.replicas,
            g.min,
            g.max,
            g.fetchable,
            g.need_bytes,
        )
    });
    out.dedup_by(|later, first| later.model == first.model);
    out
}

fn sorted_nodes(nodes: &[NodeView]) -> Vec<&NodeView> {
    let mut out: Vec<&NodeView> = nodes.iter().collect();
    out.sort_by(|a, b| {
        (&a.id, &a.name, a.idle, a.free_bytes, a.load, &a.on_disk).cmp(&(
            &b.id,
            &b.name,
            b.idle,
            b.free_bytes,
            b.load,
            &b.on_disk,
        ))
    });
    out.dedup_by(|later, first| later.id == first.id);
    out
}

fn action_rank(action: Action) -> u8 {
    match action {
        Action::Stop => 0,
        Action::Start => 1,
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The nodes whose replica of `model` counts, in node-id order. A migration target counts
/// nothing while the node it replaces still holds the model, so a live migration neither
/// triggers a release (two look like one too many) nor a start when the old one goes.
fn holders<'a>(model: &str, nodes: &[&'a NodeView]) -> Vec<Holder<'a>> {
    let has_model: BTreeSet<&str> = nodes
        .iter()
        .filter(|n| n.replicas.iter().any(|r| r.model == model))
        .map(|n| n.id.as_str())
        .collect();
    nodes
        .iter()
        .filter_map(|node| {
            node.replicas
                .iter()
                .filter(|r| r.model == model)
                .filter(|r| match &r.replaces {
                    Some(old) => old == &node.id || !has_model.contains(old.as_str()),
                    None => true,
                })
                // Two replicas of one model on one node should not exist; if they do, the node
                // is judged by its serving one and an operator's claim protects it from release.
                .max_by_key(|r| (r.serving, !r.placed))
                .map(|replica| Holder { node, replica })
        })
        .collect()
}

/// A node reporting idle while it still lists a replica is mid-change; starting another model
/// there would break "a standby node serves one model", so it waits for a consistent record.
fn is_idle(node: &NodeView) -> bool {
    node.idle && node.replicas.is_empty()
}

fn has_file(spec: &GroupSpec, node: &NodeView) -> bool {
    node.on_disk.contains(&spec.model)
}

fn has_memory(spec: &GroupSpec, node: &NodeView) -> bool {
    spec.need_bytes == 0 || node.free_bytes >= spec.need_bytes
}

/// Whether `node` could take a replica of `spec` now: idle, with the file or a way to fetch
/// it, and the memory.
pub fn can_take(spec: &GroupSpec, node: &NodeView) -> bool {
    is_idle(node) && (has_file(spec, node) || spec.fetchable) && has_memory(spec, node)
}

/// Hands out idle nodes one per group per pass, the group with the fewest replicas first, so a
/// scarce pool spreads over groups instead of filling the alphabetically first one.
fn fill(needs: &mut [Need<'_>], nodes: &[&NodeView]) -> Vec<Decision> {
    let mut taken: BTreeSet<&str> = BTreeSet::new();
    let mut out = Vec::new();
    loop {
        let mut order: Vec<usize> = (0..needs.len())
            .filter(|&i| needs[i].remaining() > 0)
            .collect();
        order.sort_by(|&a, &b| {
            let (a, b) = (&needs[a], &needs[b]);
            (a.running + a.assigned, &a.spec.model).cmp(&(b.running + b.assigned, &b.spec.model))
        });
        let mut took = false;
        for i in order {
            let need = &mut needs[i];
            let best = nodes
                .iter()
                .filter(|n| !taken.contains(n.id.as_str()) && can_take(need.spec, n))
                .min_by_key(|n| {
                    (
                        Reverse(has_file(need.spec, n)),
                        Reverse(n.free_bytes),
                        &n.id,
                    )
                });
            if let Some(node) = best {
                taken.insert(node.id.as_str());
                need.assigned += 1;
                took = true;
                out.push(Decision {
                    node: node.id.clone(),
                    model: need.spec.model.clone(),
                    action: Action::Start,
                    reason: start_reason(need, node),
                });
            }
        }
        if !took {
            return out;
        }
    }
}

fn start_reason(need: &Need<'_>, node: &NodeView) -> String {
    let spec = need.spec;
    let name = &node.name;
    let file = if has_file(spec, node) {
        "has the file".to_string()
    } else {
        "fetches the file (no available idle node has it)".to_string()
    };
    let why = if spec.need_bytes == 0 {
        format!("{name} is idle and {file}")
    } else {
        format!(
            "{name} is idle, {file} and has {} free ({} needed)",
            format_mem(node.free_bytes),
            format_mem(spec.need_bytes)
        )
    };
    format!(
        "{name} loads {}: group wants {}{}, {} serving or loading; {why}",
        spec.model,
        wants(need.wanted),
        demand_note(need.demand),
        need.running
    )
}

/// Stops the surplus among mesh-placed replicas only: loading ones first (nothing is lost yet),
/// then the least loaded (fewest requests cut short), then the highest id, so the lowest ids
/// stay put and repeated rounds release the same nodes rather than reshuffling.
fn release(spec: &GroupSpec, wanted: u32, held: &[Holder<'_>]) -> Vec<Decision> {
    let running = count(held.len());
    let surplus = (running - wanted) as usize;
    let mut pool: Vec<&Holder<'_>> = held.iter().filter(|h| h.replica.placed).collect();
    let all_serving = pool.iter().all(|h| h.replica.serving);
    pool.sort_by(|a, b| {
        (a.replica.serving, a.node.load, Reverse(&a.node.id)).cmp(&(
            b.replica.serving,
            b.node.load,
            Reverse(&b.node.id),
        ))
    });
    pool.truncate(surplus);
    let serving_stops = pool.iter().filter(|h| h.replica.serving).count();
    pool.iter()
        .map(|h| {
            let name = &h.node.name;
            let why = if wanted == 0 {
                format!("{name} was placed by the mesh and none is wanted")
            } else if !h.replica.serving {
                format!("{name} was placed by the mesh and is still loading")
            } else {
                let kind = if all_serving {
                    "replica"
                } else {
                    "serving replica"
                };
                let rank = if serving_stops == 1 {
                    format!("the least loaded {kind}")
                } else {
                    format!("one of the {serving_stops} least loaded {kind}s")
                };
                format!(
                    "{name} is {rank} placed by the mesh ({} in flight)",
                    h.node.load
                )
            };
            Decision {
                node: h.node.id.clone(),
                model: spec.model.clone(),
                action: Action::Stop,
                reason: format!(
                    "{name} releases {}: group wants {}, {running} running; {why}",
                    spec.model,
                    wants(wanted)
                ),
            }
        })
        .collect()
}

fn surplus_clause(surplus: u32, held: &[Holder<'_>]) -> String {
    let placed = count(held.iter().filter(|h| h.replica.placed).count());
    let released = surplus.min(placed);
    let kept = surplus - released;
    let one_or_n = |n: u32| {
        if n == 1 {
            "the extra one".to_string()
        } else {
            format!("the {n} extra ones")
        }
    };
    if released == 0 {
        let verb = if kept == 1 { "was" } else { "were" };
        format!("{} {verb} placed by an operator", one_or_n(kept))
    } else if kept == 0 {
        format!("releasing {}", one_or_n(released))
    } else {
        let verb = if kept == 1 { "was" } else { "were" };
        format!("releasing {released} placed by the mesh; the other {kept} {verb} placed by an operator")
    }
}

fn deficit_clause(spec: &GroupSpec, missing: u32, running: u32, nodes: &[&NodeView]) -> String {
    let idle: Vec<&NodeView> = nodes.iter().copied().filter(|n| is_idle(n)).collect();
    let able = count(idle.iter().filter(|n| can_take(spec, n)).count());
    if able > 0 {
        let only = if able < missing { "only " } else { "" };
        let nodes = if able == 1 { "node" } else { "nodes" };
        return format!("{missing} more wanted, {only}{able} idle {nodes} can take one");
    }
    let another = if running > 0 { "another" } else { "one" };
    if idle.is_empty() {
        return format!("no idle node can take {another} (no idle node)");
    }
    let lack_file = |n: &&NodeView| !has_file(spec, n) && !spec.fetchable;
    let lack_memory = |n: &&NodeView| !has_memory(spec, n);
    let need = format_mem(spec.need_bytes);
    let why = if idle.iter().all(lack_file) {
        "none has the file".to_string()
    } else if idle.iter().all(lack_memory) {
        format!("none has enough memory, {need} needed")
    } else {
        format!("none has both the file and enough memory, {need} needed")
    };
    format!(
        "no idle node can take {another} ({} idle: {why})",
        idle.len()
    )
}

fn replicas(n: u32) -> &'static str {
    if n == 1 {
        "replica"
    } else {
        "replicas"
    }
}

fn wants(n: u32) -> String {
    format!("{n} {}", replicas(n))
}

fn demand_note(demand: u32) -> String {
    if demand == 0 {
        String::new()
    } else {
        format!(" ({demand} added for demand)")
    }
}

/// "a", "a and b", "a, b and c", "a, b, c and 2 more": a long list would swamp the sentence.
fn name_list(names: &[&str]) -> String {
    const SHOWN: usize = 3;
    if names.len() > SHOWN {
        return format!(
            "{} and {} more",
            names[..SHOWN].join(", "),
            names.len() - SHOWN
        );
    }
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => (*last).to_string(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
#[path = "placement_tests.rs"]
mod tests;
