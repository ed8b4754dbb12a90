use super::*;
use crate::split::{format_mem, plan, plan_hosted, NodeMemory, Plan};

fn share(id: &str, first: u32, last: u32) -> Share {
    Share {
        node_id: id.into(),
        first_layer: first,
        last_layer: last,
        bytes: 1,
    }
}

fn host(shares: Vec<Share>, serving: bool) -> SplitClaim {
    SplitClaim::Host {
        model: "m".into(),
        shares,
        serving,
        need_bytes: 0,
        have_bytes: 0,
    }
}

#[test]
fn claims_are_well_formed_only_when_bounded_and_contiguous_from_zero() {
    assert!(host(vec![share("h", 0, 9), share("w", 10, 29)], false).is_well_formed());
    // Waiting for capacity: no shares yet.
    assert!(host(vec![], false).is_well_formed());
    for bad in [
        vec![share("h", 0, 29)],                         // one node is not a split
        vec![share("h", 1, 9), share("w", 10, 29)],      // does not start at 0
        vec![share("h", 0, 9), share("w", 11, 29)],      // gap
        vec![share("h", 0, 9), share("w", 9, 29)],       // overlap
        vec![share("h", 0, 9), share("w", 12, 10)],      // reversed
        vec![share("h", 0, 9), share("", 10, 29)],       // nameless
        vec![share("h", 0, u32::MAX), share("w", 0, 1)], // overflow
    ] {
        assert!(!host(bad.clone(), false).is_well_formed(), "{bad:?}");
    }
    let many: Vec<Share> = (0..=MAX_SPLIT_WORKERS as u32 + 1)
        .map(|i| share(&format!("n{i}"), i, i))
        .collect();
    assert!(!host(many, false).is_well_formed());
    let long = "x".repeat(201);
    assert!(!SplitClaim::Worker {
        model: long,
        host: "h".into(),
        first_layer: 0,
        last_layer: 0,
        ready: false
    }
    .is_well_formed());
    assert!(!SplitClaim::Worker {
        model: "m".into(),
        host: "h".into(),
        first_layer: 3,
        last_layer: 2,
        ready: false
    }
    .is_well_formed());
}

#[test]
fn a_worker_follows_the_host_that_names_it_and_the_smallest_id_on_conflict() {
    let a = host(
        vec![share("a", 0, 9), share("me", 10, 19), share("x", 20, 29)],
        true,
    );
    let b = host(vec![share("b", 0, 14), share("me", 15, 29)], false);
    let got = assignment_for("me", &[("b", &b), ("a", &a)]).unwrap();
    assert_eq!(
        got,
        WorkerAssignment {
            host: "a".into(),
            model: "m".into(),
            first_layer: 10,
            last_layer: 19,
            host_serving: true
        }
    );
    assert_eq!(assignment_for("me", &[("b", &b)]).unwrap().host, "b");
    assert_eq!(assignment_for("nobody", &[("a", &a), ("b", &b)]), None);
    // The claim's first share must be the host that signed it: a host cannot pass itself off
    // as another node, nor list `me` as its own host share.
    assert_eq!(assignment_for("me", &[("z", &a)]), None);
    let me_first = host(vec![share("me", 0, 9), share("y", 10, 29)], false);
    assert_eq!(assignment_for("me", &[("me", &me_first)]), None);
    // A worker's claim assigns nothing, and a malformed host claim is ignored.
    let worker = SplitClaim::Worker {
        model: "m".into(),
        host: "me".into(),
        first_layer: 0,
        last_layer: 1,
        ready: true,
    };
    assert_eq!(assignment_for("me", &[("w", &worker)]), None);
    let gap = host(vec![share("g", 0, 9), share("me", 11, 29)], false);
    assert_eq!(assignment_for("me", &[("g", &gap)]), None);
}

#[test]
fn split_work_follows_the_hosts_serving_flag() {
    assert_eq!(SplitWork::of(None), SplitWork::None);
    let mut a = WorkerAssignment {
        host: "h".into(),
        model: "m".into(),
        first_layer: 0,
        last_layer: 1,
        host_serving: false,
    };
    assert_eq!(SplitWork::of(Some(&a)), SplitWork::Loading);
    a.host_serving = true;
    assert_eq!(SplitWork::of(Some(&a)), SplitWork::Serving);
}

/// llama.cpp's layer placement (`llama_model::load_tensors`), as a reference: which device
/// (`None` = the host's CPU, `Some(i)` = the i-th `--rpc` device) holds layer `il` (the output
/// layer is `il == n_layer`).
fn llama_device(il: u32, n_layer: u32, ngl: u32, split: &[f32]) -> Option<usize> {
    let i_gpu_start = (n_layer as i64 + 1 - ngl as i64).max(0);
    let act = ngl.min(n_layer + 1) as i64;
    let il = il as i64;
    if il < i_gpu_start || il - i_gpu_start >= act {
        return None;
    }
    let sum: f32 = split.iter().sum();
    let mut cum = 0.0f32;
    let points: Vec<f32> = split
        .iter()
        .map(|x| {
            cum += x;
            cum / sum
        })
        .collect();
    let v = (il - i_gpu_start) as f32 / act as f32;
    Some(points.iter().position(|&p| p > v).unwrap_or(points.len()))
}

#[test]
fn rpc_flags_put_every_layer_on_its_planned_node_in_llama_cpps_own_placement() {
    let mut checked = 0;
    for layers in 2..=40u32 {
        for workers in 1..=4usize {
            for host_layers in 1..layers {
                let rest = layers - host_layers;
                if (rest as usize) < workers {
                    continue;
                }
                // Uneven worker counts: the first takes the remainder.
                let each = rest / workers as u32;
                let mut counts = vec![each; workers];
                counts[0] += rest - each * workers as u32;
                let mut shares = vec![share("h", 0, host_layers - 1)];
                let mut first = host_layers;
                for (i, c) in counts.iter().enumerate() {
                    shares.push(share(&format!("w{i}"), first, first + c - 1));
                    first += c;
                }
                let f = rpc_flags(&shares, layers).unwrap();
                let split: Vec<f32> = f
                    .tensor_split
                    .split(',')
                    .map(|x| x.parse().unwrap())
                    .collect();
                assert_eq!(split.len(), workers);
                for s in &shares {
                    for il in s.first_layer..=s.last_layer {
                        let want = s.node_id.strip_prefix('w').map(|i| i.parse().unwrap());
                        assert_eq!(
                            llama_device(il, layers, f.n_gpu_layers, &split),
                            want,
                            "layer {il} of {layers}, {shares:?}, {f:?}"
                        );
                    }
                }
                // The output layer lands on the last worker, whose tensors `override_tensor`
                // pins back to the host.
                assert_eq!(
                    llama_device(layers, layers, f.n_gpu_layers, &split),
                    Some(workers - 1)
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 1000, "{checked}");
    assert_eq!(OUTPUT_ON_HOST, "^(output|token_embd)\\.weight$=CPU");
}

#[test]
fn rpc_flags_refuse_shares_that_are_not_a_split_of_every_layer() {
    assert_eq!(rpc_flags(&[share("h", 0, 29)], 30), None);
    assert_eq!(rpc_flags(&[share("h", 0, 9), share("w", 10, 28)], 30), None);
    assert_eq!(rpc_flags(&[share("h", 0, 9), share("w", 11, 29)], 30), None);
    assert_eq!(rpc_flags(&[], 30), None);
    let f = rpc_flags(
        &[share("h", 0, 9), share("a", 10, 19), share("b", 20, 29)],
        30,
    )
    .unwrap();
    assert_eq!((f.n_gpu_layers, f.tensor_split.as_str()), (21, "10,11"));
}

/// SmolLM2-135M's shape (from its GGUF header: 30 layers, 576 wide, 9 heads, 3 KV heads,
/// 49152 tokens).
fn smol() -> ModelShape {
    ModelShape {
        layers: 30,
        n_embd: 576,
        n_head: 9,
        n_head_kv: 3,
        key_length: 0,
        value_length: 0,
        n_vocab: 49_152,
        block_bytes: 70_000_000,
        other_bytes: 20_000_000,
    }
}

#[test]
fn need_counts_kv_for_the_context_and_the_compute_buffer_on_the_host() {
    let n = need_for(&smol(), 2048);
    // 2048 positions × 30 layers × 3 heads × (64 + 64) × 2 bytes.
    assert_eq!(n.kv_bytes, 2048 * 30 * 3 * 128 * 2);
    assert_eq!(n.weights_bytes, 70_000_000);
    assert_eq!(
        n.overhead_bytes,
        20_000_000 + 49_152 * 512 * 4 + 2048 * 512 * 4 * 9
    );
    assert_eq!(n.layers, 30);
    // Explicit head widths win over n_embd / n_head; a zero head count cannot divide by zero.
    let wide = ModelShape {
        key_length: 128,
        value_length: 96,
        ..smol()
    };
    assert_eq!(need_for(&wide, 1).kv_bytes, 30 * 3 * (128 + 96) * 2);
    let broken = ModelShape {
        n_head: 0,
        ..smol()
    };
    assert_eq!(need_for(&broken, 1).kv_bytes, 30 * 3 * 1152 * 2);
    // Twice the context, more KV and more attention scores; nothing else moves.
    let long = need_for(&smol(), 4096);
    assert_eq!(long.kv_bytes, 2 * n.kv_bytes);
    assert!(long.overhead_bytes > n.overhead_bytes);
    let huge = ModelShape {
        layers: u32::MAX,
        n_head_kv: u32::MAX,
        ..smol()
    };
    assert_eq!(need_for(&huge, u32::MAX).kv_bytes, u64::MAX);
}

fn mem(id: &str, gb10: u64) -> NodeMemory {
    NodeMemory {
        node_id: id.into(),
        free_bytes: gb10 * 100_000_000,
    }
}

#[test]
fn a_hosted_plan_keeps_its_host_first_whatever_the_others_offer() {
    let need = ModelNeed {
        weights_bytes: 3_000_000_000,
        kv_bytes: 0,
        overhead_bytes: 500_000_000,
        layers: 30,
    };
    let others = [mem("big", 40), mem("mid", 20), mem("host", 99)];
    // Free-for-all planning would make "big" the host (it holds the model alone).
    assert_eq!(
        plan(&need, &others[..2]),
        Plan::Single {
            node_id: "big".into()
        }
    );
    match plan_hosted(&need, &mem("host", 12), &others) {
        Plan::Split {
            host,
            workers,
            shares,
        } => {
            assert_eq!(host, "host");
            // The host's own id among the others is ignored; the largest worker goes first.
            assert_eq!(workers, ["big"]);
            assert_eq!(shares[0].first_layer, 0);
            assert_eq!(shares.last().unwrap().last_layer, 29);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        plan_hosted(&need, &mem("host", 50), &others),
        Plan::Single {
            node_id: "host".into()
        }
    );
    // A host that cannot even hold the overhead and one layer cannot host.
    assert!(matches!(
        plan_hosted(&need, &mem("host", 5), &others),
        Plan::Insufficient { .. }
    ));
    assert!(matches!(
        plan_hosted(&need, &mem("host", 12), &[]),
        Plan::Insufficient {
            need_bytes: 3_500_000_000,
            have_bytes: 1_080_000_000
        }
    ));
}

#[test]
fn sentences_say_what_which_layers_for_whom_and_what_to_do() {
    let mut a = WorkerAssignment {
        host: "h".into(),
        model: "SmolLM2".into(),
        first_layer: 20,
        last_layer: 29,
        host_serving: true,
    };
    assert_eq!(
        worker_sentence(&a, "node-1"),
        "Serving layers 20–29 of SmolLM2 for host node-1 — keep it online: the split stops \
         without it"
    );
    a.host_serving = false;
    a.last_layer = 20;
    assert!(
        worker_sentence(&a, "node-1").starts_with("Loading layer 20 of SmolLM2 for host node-1")
    );
    assert_eq!(
        waiting_sentence("X", 55_000_000_000, 51_500_000_000),
        "Waiting for capacity to split X: need 55.0 GB, have 51.5 GB — start more nodes with \
         `infermesh up --standby --join <TOKEN>` or give them more --max-mem"
    );
    assert!(host_loading_sentence("X", 3).starts_with("Loading X split over 3 nodes"));
    assert!(waiting_sentence("X", 282_174_720, 252_000_000).contains("need 282 MB, have 252 MB"));
    assert_eq!(format_mem(999_499_999), "999 MB");
    assert_eq!(format_mem(1_000_000_000), "1.0 GB");
    assert_eq!(format_mem(0), "0 MB");
}

#[test]
fn claims_round_trip_as_tagged_json() {
    let c = host(vec![share("h", 0, 9), share("w", 10, 29)], true);
    let json = serde_json::to_value(&c).unwrap();
    assert_eq!(json["role"], "host");
    assert_eq!(serde_json::from_value::<SplitClaim>(json).unwrap(), c);
    let w = SplitClaim::Worker {
        model: "m".into(),
        host: "h".into(),
        first_layer: 10,
        last_layer: 29,
        ready: true,
    };
    let json = serde_json::to_value(&w).unwrap();
    assert_eq!(json["role"], "worker");
    assert_eq!(w.model(), "m");
    assert_eq!(serde_json::from_value::<SplitClaim>(json).unwrap(), w);
}

#[test]
fn role_words_name_the_model_the_layers_and_the_other_nodes() {
    let name = |id: &str| format!("<{id}>");
    let h = host(
        vec![share("h", 0, 9), share("a", 10, 19), share("b", 20, 29)],
        true,
    );
    assert_eq!(
        role_words(&h, name),
        "split host of m with <a>, <b> (workers)"
    );
    assert_eq!(
        role_words(&host(vec![], false), name),
        "split host of m, waiting for capacity"
    );
    let w = SplitClaim::Worker {
        model: "m".into(),
        host: "h".into(),
        first_layer: 20,
        last_layer: 29,
        ready: true,
    };
    assert_eq!(
        role_words(&w, name),
        "split worker: layers 20–29 of m for <h>"
    );
}
