//! A node's part in a split, as its signed record states it, and what follows from that: which
//! host a worker serves, the node's own state, llama.cpp's flags for the host and the sentence
//! an operator reads.
//!
//! The host decides (it runs [`crate::split::plan_hosted`] and publishes the shares in its own
//! record); a worker follows the one host whose claim names it, and says so in its record, so
//! every node and the operator see the same layout. A worker's word never assigns anything: the
//! host's signed claim does, and the host alone is let through the worker's tunnel.

use serde::{Deserialize, Serialize};

use crate::split::{format_mem, ModelNeed, Share, MAX_SPLIT_WORKERS};

/// Longest model name or node id a claim may carry; a longer one makes the claim malformed.
const MAX_NAME: usize = 200;

/// What a node publishes about the split it takes part in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum SplitClaim {
    /// Runs `llama-server` for `model` over `shares` (its own share first). `serving` once
    /// the split answers; `need_bytes`/`have_bytes` say why it waits when `shares` is empty.
    Host {
        model: String,
        shares: Vec<Share>,
        serving: bool,
        need_bytes: u64,
        have_bytes: u64,
    },
    /// Carries layers `first_layer..=last_layer` of `model` for `host`; `ready` once its
    /// `rpc-server` listens.
    Worker {
        model: String,
        host: String,
        first_layer: u32,
        last_layer: u32,
        ready: bool,
    },
}

impl SplitClaim {
    /// Whether a peer's claim is one this build can act on: names bounded, and a host's shares
    /// (when it has any) cover layers from 0 in order with 2..=MAX_SPLIT_WORKERS+1 nodes.
    pub fn is_well_formed(&self) -> bool {
        match self {
            Self::Host { model, shares, .. } => {
                name_ok(model)
                    && (shares.is_empty()
                        || (shares.len() >= 2
                            && shares.len() <= MAX_SPLIT_WORKERS + 1
                            && contiguous(shares)
                            && shares.iter().all(|s| name_ok(&s.node_id))))
            }
            Self::Worker {
                model,
                host,
                first_layer,
                last_layer,
                ..
            } => name_ok(model) && name_ok(host) && first_layer <= last_layer,
        }
    }

    pub fn model(&self) -> &str {
        match self {
            Self::Host { model, .. } | Self::Worker { model, .. } => model,
        }
    }
}

fn name_ok(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_NAME
}

fn contiguous(shares: &[Share]) -> bool {
    let mut next = 0u32;
    for s in shares {
        if s.first_layer != next || s.last_layer < s.first_layer {
            return false;
        }
        next = match s.last_layer.checked_add(1) {
            Some(n) => n,
            None => return false,
        };
    }
    true
}

/// Bytes a host's RPC tunnels carried: what its split costs the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcTraffic {
    pub to_workers_bytes: u64,
    pub from_workers_bytes: u64,
}

/// The layers one worker carries for one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerAssignment {
    pub host: String,
    pub model: String,
    pub first_layer: u32,
    pub last_layer: u32,
    /// The host says the split answers.
    pub host_serving: bool,
}

/// The assignment `own_id` follows among the host claims it sees (`(host id, claim)`, each
/// from that host's own signed record). A claim counts only when well formed, its first share
/// is the host itself and a later share names `own_id`; when several hosts claim the same
/// worker, the smallest host id wins, so the worker and every observer agree without talking.
pub fn assignment_for(own_id: &str, hosts: &[(&str, &SplitClaim)]) -> Option<WorkerAssignment> {
    hosts
        .iter()
        .filter_map(|&(host, claim)| match claim {
            SplitClaim::Host {
                model,
                shares,
                serving,
                ..
            } if claim.is_well_formed()
                && host != own_id
                && shares.first().is_some_and(|s| s.node_id == host) =>
            {
                shares[1..]
                    .iter()
                    .find(|s| s.node_id == own_id)
                    .map(|s| WorkerAssignment {
                        host: host.to_string(),
                        model: model.clone(),
                        first_layer: s.first_layer,
                        last_layer: s.last_layer,
                        host_serving: *serving,
                    })
            }
            _ => None,
        })
        .min_by(|a, b| a.host.cmp(&b.host))
}

/// What a split makes of the node's own state (an input of [`crate::derive_node_state`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SplitWork {
    /// Not a split worker.
    #[default]
    None,
    /// Assigned layers; the split does not answer yet.
    Loading,
    /// Its layers serve: the host's split answers.
    Serving,
}

impl SplitWork {
    pub fn of(assignment: Option<&WorkerAssignment>) -> Self {
        match assignment {
            None => Self::None,
            Some(a) if a.host_serving => Self::Serving,
            Some(_) => Self::Loading,
        }
    }
}

/// `llama-server` flags that put exactly `shares` where they belong. llama.cpp keeps the first
/// `n_layer + 1 - n_gpu_layers` layers on the host's CPU and spreads the rest, and the output
/// layer, over the `--rpc` devices in order by `--tensor-split`; so the workers' layer counts
/// are the split, the output layer counts once more on the last worker, and the output tensors
/// are pinned back to the host's CPU (`override_tensor`), where the plan counted them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcFlags {
    pub n_gpu_layers: u32,
    pub tensor_split: String,
    pub override_tensor: &'static str,
}

/// The output head: llama.cpp names it `output.weight`, or reuses `token_embd.weight` when the
/// model ties them.
pub const OUTPUT_ON_HOST: &str = "^(output|token_embd)\\.weight$=CPU";

/// [`RpcFlags`] for a plan's `shares` (host first) of a model with `layers` repeating layers;
/// `None` when the shares are not a host followed by workers covering every layer in order.
pub fn rpc_flags(shares: &[Share], layers: u32) -> Option<RpcFlags> {
    if shares.len() < 2
        || !contiguous(shares)
        || shares.last()?.last_layer.checked_add(1)? != layers
    {
        return None;
    }
    let counts: Vec<u32> = shares[1..].iter().map(Share::layer_count).collect();
    let offloaded: u32 = counts.iter().sum();
    let mut split = counts.clone();
    *split.last_mut()? += 1;
    Some(RpcFlags {
        n_gpu_layers: offloaded + 1,
        tensor_split: split
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        override_tensor: OUTPUT_ON_HOST,
    })
}

/// A model's shape as its GGUF header gives it, and the sizes of its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModelShape {
    /// Repeating transformer layers (`<arch>.block_count`).
    pub layers: u32,
    pub n_embd: u32,
    pub n_head: u32,
    pub n_head_kv: u32,
    /// Per-head key and value widths; 0 means `n_embd / n_head` (the GGUF default).
    pub key_length: u32,
    pub value_length: u32,
    pub n_vocab: u32,
    /// Bytes of the `blk.*` tensors, and of every other tensor.
    pub block_bytes: u64,
    pub other_bytes: u64,
}

/// Tokens per compute batch the estimate assumes (llama.cpp's default `--ubatch-size`).
pub const UBATCH: u64 = 512;

/// What serving a model of `shape` costs with `n_ctx` tokens of context. KV cache: f16 keys and
/// values for every layer and position. Host overhead: the non-layer tensors plus the compute
/// buffer's two largest parts at one batch: the logits (`n_vocab × ubatch` f32) and one
/// layer's attention scores (`n_ctx × ubatch × n_head` f32). An estimate, as llama.cpp's own
/// is; the 10% headroom of [`crate::split::offer`] covers what it leaves out.
pub fn need_for(shape: &ModelShape, n_ctx: u32) -> ModelNeed {
    let head = u64::from(shape.n_embd) / u64::from(shape.n_head.max(1));
    let k = if shape.key_length == 0 {
        head
    } else {
        u64::from(shape.key_length)
    };
    let v = if shape.value_length == 0 {
        head
    } else {
        u64::from(shape.value_length)
    };
    let ctx = u64::from(n_ctx);
    let kv = ctx
        .saturating_mul(u64::from(shape.layers))
        .saturating_mul(u64::from(shape.n_head_kv))
        .saturating_mul(k.saturating_add(v))
        .saturating_mul(2);
    let logits = u64::from(shape.n_vocab).saturating_mul(UBATCH * 4);
    let scores = ctx
        .saturating_mul(UBATCH * 4)
        .saturating_mul(u64::from(shape.n_head));
    ModelNeed {
        weights_bytes: shape.block_bytes,
        kv_bytes: kv,
        overhead_bytes: shape
            .other_bytes
            .saturating_add(logits)
            .saturating_add(scores),
        layers: shape.layers,
    }
}

fn layer_words(first: u32, last: u32) -> String {
    if first == last {
        format!("layer {first}")
    } else {
        format!("layers {first}–{last}")
    }
}

/// A node's part in a split in a few words, for node lists (dashboard, deck); `name_of` turns
/// a node id into the name to show.
pub fn role_words(claim: &SplitClaim, name_of: impl Fn(&str) -> String) -> String {
    match claim {
        SplitClaim::Host { model, shares, .. } if shares.is_empty() => {
            format!("split host of {model}, waiting for capacity")
        }
        SplitClaim::Host { model, shares, .. } => {
            let workers: Vec<String> = shares[1..].iter().map(|s| name_of(&s.node_id)).collect();
            format!(
                "split host of {model} with {} (workers)",
                workers.join(", ")
            )
        }
        SplitClaim::Worker {
            model,
            host,
            first_layer,
            last_layer,
            ..
        } => format!(
            "split worker: {} of {model} for {}",
            layer_words(*first_layer, *last_layer),
            name_of(host)
        ),
    }
}

/// The worker's sentence: what it carries, for whom, and why it must stay up.
pub fn worker_sentence(a: &WorkerAssignment, host_name: &str) -> String {
    let layers = layer_words(a.first_layer, a.last_layer);
    if a.host_serving {
        format!(
            "Serving {layers} of {} for host {host_name} — keep it online: the split stops \
             without it",
            a.model
        )
    } else {
        format!(
            "Loading {layers} of {} for host {host_name} — keep it online until the split \
             serves",
            a.model
        )
    }
}

/// The host's sentence while the mesh cannot hold the model (mesh-llm's words).
pub fn waiting_sentence(model: &str, need_bytes: u64, have_bytes: u64) -> String {
    format!(
        "Waiting for capacity to split {model}: need {}, have {} — start more nodes with \
         `infermesh up --standby --join <TOKEN>` or give them more --max-mem",
        format_mem(need_bytes),
        format_mem(have_bytes)
    )
}

/// The host's sentence while its split starts.
pub fn host_loading_sentence(model: &str, nodes: usize) -> String {
    format!("Loading {model} split over {nodes} nodes — keep them online until it is serving")
}

#[cfg(test)]
#[path = "split_role_tests.rs"]
mod tests;
