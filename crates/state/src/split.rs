//! Split placement: which mesh nodes serve one model together over llama.cpp's RPC backend when
//! no single node can hold it, and which layers each of them carries.
//!
//! Every node runs this on the same gossip and must reach the same answer, so the inputs are
//! sorted inside and every tie falls to `node_id`. The host (the node running `llama-server`)
//! is the node with the most free memory, because it alone also carries the non-repeating part
//! of the model (embeddings, output head, compute buffers); the workers (`rpc-server`s) are the
//! next largest nodes, as few as will do, because every extra hop slows every token.
//!
//! When a worker dies the caller plans again with the nodes that remain and asks [`changed`]
//! whether the serving layout moved (and so whether `llama-server` must restart).

use serde::{Deserialize, Serialize};

/// Most workers one split may use: each one adds a network round trip per token, and beyond a
/// handful the model is better left unserved than served unusably slowly.
pub const MAX_SPLIT_WORKERS: usize = 8;
/// A node offers all but `1 / HEADROOM_DIVISOR` of its free memory (10%), so a plan never fills
/// a node to its last byte: free-memory figures are a moment old and allocators round up.
pub const HEADROOM_DIVISOR: u64 = 10;

const BYTES_PER_GB: u128 = 1_000_000_000;

/// What serving the model costs, for the configured context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelNeed {
    /// Weights of the repeating transformer layers (spread over the participants).
    pub weights_bytes: u64,
    /// KV cache for the configured context (per layer, so it travels with the layers).
    pub kv_bytes: u64,
    /// The non-repeating part (embedding and output tensors, compute buffers): host only.
    pub overhead_bytes: u64,
    /// Number of repeating transformer layers.
    pub layers: u32,
}

impl ModelNeed {
    /// The whole need on one node; saturating, so an absurd size reads as "does not fit".
    pub fn total_bytes(&self) -> u64 {
        self.weights_bytes
            .saturating_add(self.kv_bytes)
            .saturating_add(self.overhead_bytes)
    }

    /// Bytes one layer costs, rounded up so that rounding never under-plans a node. Zero when
    /// the model has no layers (then it cannot be split at all).
    pub fn layer_bytes(&self) -> u64 {
        let body = self.weights_bytes.saturating_add(self.kv_bytes);
        match self.layers {
            0 => 0,
            n => body.div_ceil(u64::from(n)),
        }
    }
}

/// One admitted node and the memory it reports free (the caller filters out everyone else).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeMemory {
    pub node_id: String,
    pub free_bytes: u64,
}

/// One participant's part of a split: layers `first_layer..=last_layer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Share {
    pub node_id: String,
    pub first_layer: u32,
    /// Inclusive.
    pub last_layer: u32,
    /// What the node must hold: its layers, plus the overhead on the host.
    pub bytes: u64,
}

impl Share {
    pub fn layer_count(&self) -> u32 {
        self.last_layer - self.first_layer + 1
    }
}

/// Where the model goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Plan {
    /// One node holds it all: no RPC, no split.
    Single { node_id: String },
    /// `shares` lists the host first, then the workers in `workers` order; together they cover
    /// every layer once, in order.
    Split {
        host: String,
        workers: Vec<String>,
        shares: Vec<Share>,
    },
    /// The mesh cannot hold it. `have_bytes` is what the nodes a plan could use offer after
    /// headroom (the largest node only, for a model with under two layers), so the sentence
    /// compares the same quantities the decision did.
    Insufficient { need_bytes: u64, have_bytes: u64 },
}

impl Plan {
    /// Node ids that serve under this plan, host first; empty when insufficient.
    pub fn participants(&self) -> Vec<&str> {
        match self {
            Self::Single { node_id } => vec![node_id.as_str()],
            Self::Split { shares, .. } => shares.iter().map(|s| s.node_id.as_str()).collect(),
            Self::Insufficient { .. } => Vec::new(),
        }
    }

    /// A short summary for logs and the dashboard; the caller words the per-node sentence.
    pub fn describe(&self) -> String {
        match self {
            Self::Single { node_id } => format!("fits on {node_id}"),
            Self::Split { shares, .. } => {
                let parts: Vec<String> = shares
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let word = match (i, s.first_layer == s.last_layer) {
                            (0, true) => "layer ",
                            (0, false) => "layers ",
                            _ => "",
                        };
                        let range = if s.first_layer == s.last_layer {
                            s.first_layer.to_string()
                        } else {
                            format!("{}–{}", s.first_layer, s.last_layer)
                        };
                        format!("{} ({word}{range})", s.node_id)
                    })
                    .collect();
                format!("split over {} nodes: {}", shares.len(), parts.join(", "))
            }
            Self::Insufficient {
                need_bytes,
                have_bytes,
            } => format!(
                "need {}, have {}",
                format_mem(*need_bytes),
                format_mem(*have_bytes)
            ),
        }
    }
}

/// Bytes as decimal gigabytes with one decimal, rounded half up ("51.5 GB").
pub fn format_gb(bytes: u64) -> String {
    let tenths = (u128::from(bytes) + BYTES_PER_GB / 20) / (BYTES_PER_GB / 10);
    format!("{}.{} GB", tenths / 10, tenths % 10)
}

/// Memory for sentences: decimal GB with one decimal ([`format_gb`]), or whole MB below 1 GB,
/// where one decimal of a GB would make 282 MB and 252 MB both read "0.3 GB".
pub fn format_mem(bytes: u64) -> String {
    if bytes < 1_000_000_000 {
        format!("{} MB", (bytes + 500_000) / 1_000_000)
    } else {
        format_gb(bytes)
    }
}

/// What a node with `free_bytes` free may be planned to hold.
pub fn offer(free_bytes: u64) -> u64 {
    free_bytes - free_bytes / HEADROOM_DIVISOR
}

/// Whether going from `old` to `new` changes what is served where: a different node, a
/// different participant set or order, or a layer moving between nodes. Byte figures and the
/// numbers inside `Insufficient` do not count: they do not change what any process must load.
pub fn changed(old: &Plan, new: &Plan) -> bool {
    match (old, new) {
        (Plan::Single { node_id: a }, Plan::Single { node_id: b }) => a != b,
        (Plan::Split { shares: a, .. }, Plan::Split { shares: b, .. }) => {
            a.len() != b.len()
                || a.iter().zip(b).any(|(x, y)| {
                    x.node_id != y.node_id
                        || x.first_layer != y.first_layer
                        || x.last_layer != y.last_layer
                })
        }
        (Plan::Insufficient { .. }, Plan::Insufficient { .. }) => false,
        _ => true,
    }
}

/// Places the model on `nodes`.
///
/// Nodes are ranked by free memory, most first, ties by `node_id` ascending; a `node_id` seen
/// twice keeps its best-ranked entry (the most free) and the rest are ignored, so input order
/// never matters. The best node alone is tried first; failing that, a split with the fewest
/// workers that holds every layer, each participant carrying at least one layer and a layer
/// count proportional to the memory it can give to layers.
pub fn plan(need: &ModelNeed, nodes: &[NodeMemory]) -> Plan {
    place(need, &rank(nodes))
}

/// Places the model with `host` as the host whatever its size: the node the operator asked to
/// serve the model, which alone holds its file (llama.cpp's RPC workers receive their tensors
/// from the host and need no file). Workers come from `others` as in [`plan`]; an entry with
/// the host's id among them is ignored.
pub fn plan_hosted(need: &ModelNeed, host: &NodeMemory, others: &[NodeMemory]) -> Plan {
    let mut order = vec![host];
    order.extend(
        rank(others)
            .into_iter()
            .filter(|n| n.node_id != host.node_id),
    );
    place(need, &order)
}

/// `ranked[0]` is the host; the rest are workers by preference, most free memory first.
fn place(need: &ModelNeed, ranked: &[&NodeMemory]) -> Plan {
    let total = need.total_bytes();
    let Some(&best) = ranked.first() else {
        return Plan::Insufficient {
            need_bytes: total,
            have_bytes: 0,
        };
    };
    if offer(best.free_bytes) >= total {
        return Plan::Single {
            node_id: best.node_id.clone(),
        };
    }
    let usable = &ranked[..ranked.len().min(MAX_SPLIT_WORKERS + 1)];
    let insufficient = |have_bytes| Plan::Insufficient {
        need_bytes: total,
        have_bytes,
    };
    if need.layers < 2 {
        // Nothing to split: the largest node is all this model can ever use.
        return insufficient(offer(best.free_bytes));
    }
    let have = usable
        .iter()
        .fold(0u64, |sum, n| sum.saturating_add(offer(n.free_bytes)));
    let layer = need.layer_bytes().max(1);
    let host_room = offer(best.free_bytes).checked_sub(need.overhead_bytes);
    let Some(host_room) = host_room.filter(|room| *room >= layer) else {
        return insufficient(have);
    };
    // Memory each participant gives to layers; a node that cannot take one layer never helps.
    let mut rooms = vec![host_room];
    let mut caps = vec![host_room / layer];
    let mut members: Vec<&NodeMemory> = vec![best];
    let layers = u64::from(need.layers);
    for &node in &usable[1..] {
        let room = offer(node.free_bytes);
        if room < layer {
            break; // ranked by free memory: every later node is smaller still
        }
        rooms.push(room);
        caps.push(room / layer);
        // Every participant takes a layer, so the sum below is reached by the time there are
        // as many participants as layers: no plan has more participants than layers.
        members.push(node);
        if caps.iter().map(|&c| u128::from(c)).sum::<u128>() >= u128::from(layers) {
            let counts = apportion(layers, &rooms, &caps);
            return split(need, layer, &members, &counts);
        }
    }
    insufficient(have)
}

fn rank(nodes: &[NodeMemory]) -> Vec<&NodeMemory> {
    let mut ranked: Vec<&NodeMemory> = nodes.iter().collect();
    ranked.sort_by(|a, b| {
        b.free_bytes
            .cmp(&a.free_bytes)
            .then_with(|| a.node_id.cmp(&b.node_id))
    });
    let mut seen = std::collections::HashSet::new();
    ranked.retain(|n| seen.insert(n.node_id.as_str()));
    ranked
}

/// Layers per participant: largest-remainder shares of `layers` by `rooms`, then nudged one
/// layer at a time into `1..=cap` (the nudge takes from whoever is most over its exact share
/// and gives to whoever is most under it). Needs `len <= layers <= sum(caps)` and every cap
/// at least 1, which [`plan`] checks; then at most one nudge per participant is needed.
fn apportion(layers: u64, rooms: &[u64], caps: &[u64]) -> Vec<u64> {
    let total: u128 = rooms.iter().map(|&r| u128::from(r)).sum();
    let l = u128::from(layers);
    let exact: Vec<u128> = rooms.iter().map(|&r| l * u128::from(r)).collect();
    let mut counts: Vec<u64> = exact.iter().map(|e| (e / total) as u64).collect();
    let handed: u64 = counts.iter().sum();
    let mut by_remainder: Vec<usize> = (0..rooms.len()).collect();
    by_remainder.sort_by(|&a, &b| (exact[b] % total).cmp(&(exact[a] % total)).then(a.cmp(&b)));
    for &i in by_remainder.iter().take((layers - handed) as usize) {
        counts[i] += 1;
    }
    for (count, &cap) in counts.iter_mut().zip(caps) {
        *count = (*count).clamp(1, cap);
    }
    // Positive: the participant holds fewer layers than its exact share.
    let deficit = |i: usize, c: u64| exact[i] as i128 - (u128::from(c) * total) as i128;
    loop {
        let sum: u64 = counts.iter().sum();
        if sum > layers {
            let i = (0..counts.len())
                .filter(|&i| counts[i] > 1)
                .min_by_key(|&i| (deficit(i, counts[i]), std::cmp::Reverse(i)))
                .expect("sum > layers >= participants, so someone holds two layers");
            counts[i] -= 1;
        } else if sum < layers {
            let i = (0..counts.len())
                .filter(|&i| counts[i] < caps[i])
                .max_by_key(|&i| (deficit(i, counts[i]), std::cmp::Reverse(i)))
                .expect("sum < layers <= sum of caps, so someone has room");
            counts[i] += 1;
        } else {
            return counts;
        }
    }
}

/// `layer` is at least 1 here: a model whose layers cost nothing fits wherever its overhead does.
fn split(need: &ModelNeed, layer: u64, members: &[&NodeMemory], counts: &[u64]) -> Plan {
    let mut first = 0u32;
    let shares: Vec<Share> = members
        .iter()
        .zip(counts)
        .enumerate()
        .map(|(i, (node, &count))| {
            // count <= layers, a u32, and count * layer <= the node's offer, a u64.
            let last = first + (count as u32 - 1);
            let overhead = if i == 0 { need.overhead_bytes } else { 0 };
            let share = Share {
                node_id: node.node_id.clone(),
                first_layer: first,
                last_layer: last,
                bytes: (count * layer).saturating_add(overhead),
            };
            first = last.saturating_add(1);
            share
        })
        .collect();
    Plan::Split {
        host: members[0].node_id.clone(),
        workers: members[1..].iter().map(|n| n.node_id.clone()).collect(),
        shares,
    }
}

#[cfg(test)]
#[path = "split_tests.rs"]
mod tests;
