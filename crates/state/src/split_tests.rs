use std::collections::BTreeMap;

use super::*;

const GB: u64 = 1_000_000_000;

fn node(id: &str, free_bytes: u64) -> NodeMemory {
    NodeMemory {
        node_id: id.into(),
        free_bytes,
    }
}

fn need(weights_bytes: u64, kv_bytes: u64, overhead_bytes: u64, layers: u32) -> ModelNeed {
    ModelNeed {
        weights_bytes,
        kv_bytes,
        overhead_bytes,
        layers,
    }
}

fn share(id: &str, first_layer: u32, last_layer: u32, bytes: u64) -> Share {
    Share {
        node_id: id.into(),
        first_layer,
        last_layer,
        bytes,
    }
}

fn single(id: &str) -> Plan {
    Plan::Single { node_id: id.into() }
}

/// Every order of `items` (Heap's algorithm); small inputs only.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    fn go<T: Clone>(k: usize, a: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            go(k - 1, a, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    go(items.len(), &mut items.to_vec(), &mut out);
    out
}

#[test]
fn fits_on_the_node_with_the_most_free_memory() {
    let n = need(8 * GB, GB, GB, 32);
    let nodes = [node("small", 12 * GB), node("big", 40 * GB)];
    let p = plan(&n, &nodes);
    assert_eq!(p, single("big"));
    assert_eq!(p.describe(), "fits on big");
    assert_eq!(p.participants(), vec!["big"]);
}

#[test]
fn headroom_keeps_a_tenth_of_every_node_free() {
    let n = need(9 * GB, 0, 0, 10);
    // Free exactly the need: not enough once a tenth is held back.
    assert!(!matches!(
        plan(&n, &[node("a", 9 * GB)]),
        Plan::Single { .. }
    ));
    // 10 GB offers 9 GB: just enough.
    assert_eq!(plan(&n, &[node("a", 10 * GB)]), single("a"));
    assert_eq!(offer(10), 9);
    assert_eq!(offer(9), 9);
    assert_eq!(offer(0), 0);
    assert_eq!(offer(u64::MAX), u64::MAX - u64::MAX / 10);
}

#[test]
fn needs_two_nodes_with_proportional_layers_and_the_overhead_on_the_host() {
    // 1 GB per layer; the host gives 9 - 1 = 8 GB to layers, the worker 4.5 GB: 6.4 / 3.6.
    let n = need(9 * GB, GB, GB, 10);
    let nodes = [node("c", GB), node("b", 5 * GB), node("a", 10 * GB)];
    let p = plan(&n, &nodes);
    assert_eq!(
        p,
        Plan::Split {
            host: "a".into(),
            workers: vec!["b".into()],
            shares: vec![share("a", 0, 5, 7 * GB), share("b", 6, 9, 4 * GB)],
        }
    );
    assert_eq!(p.describe(), "split over 2 nodes: a (layers 0–5), b (6–9)");
    assert_eq!(p.participants(), vec!["a", "b"]);
}

#[test]
fn needs_three_nodes() {
    let n = need(30 * GB, 0, 0, 30);
    let nodes = [
        node("d", 2 * GB),
        node("c", 11_200_000_000),
        node("b", 11_200_000_000),
        node("a", 11_200_000_000),
    ];
    let p = plan(&n, &nodes);
    assert_eq!(
        p,
        Plan::Split {
            host: "a".into(),
            workers: vec!["b".into(), "c".into()],
            shares: vec![
                share("a", 0, 9, 10 * GB),
                share("b", 10, 19, 10 * GB),
                share("c", 20, 29, 10 * GB),
            ],
        }
    );
    assert_eq!(
        p.describe(),
        "split over 3 nodes: a (layers 0–9), b (10–19), c (20–29)"
    );
}

#[test]
fn a_single_layer_share_reads_as_one_layer() {
    let p = Plan::Split {
        host: "a".into(),
        workers: vec!["b".into()],
        shares: vec![share("a", 0, 0, 1), share("b", 1, 1, 1)],
    };
    assert_eq!(p.describe(), "split over 2 nodes: a (layer 0), b (1)");
}

#[test]
fn insufficient_says_what_is_needed_and_what_the_mesh_offers() {
    // Offers after headroom: 27 GB + 24.5 GB = 51.5 GB, against 55 GB.
    let n = need(50 * GB, 4 * GB, GB, 40);
    let p = plan(&n, &[node("a", 30 * GB), node("b", 27_222_222_222)]);
    assert_eq!(
        p,
        Plan::Insufficient {
            need_bytes: 55 * GB,
            have_bytes: 51_500_000_000,
        }
    );
    assert_eq!(p.describe(), "need 55.0 GB, have 51.5 GB");
    assert!(p.participants().is_empty());
    assert_eq!(
        plan(&n, &[]),
        Plan::Insufficient {
            need_bytes: 55 * GB,
            have_bytes: 0,
        }
    );
}

#[test]
fn ties_fall_to_the_smallest_node_id() {
    let n = need(5 * GB, 0, 0, 10);
    let nodes = [node("m", 10 * GB), node("k", 10 * GB), node("z", 10 * GB)];
    assert_eq!(plan(&n, &nodes), single("k"));
    let big = need(20 * GB, 0, 0, 10);
    let Plan::Split { host, workers, .. } = plan(&big, &nodes) else {
        panic!("expected a split");
    };
    assert_eq!(host, "k");
    assert_eq!(workers, vec!["m", "z"]);
    // Equal rooms: the earlier-ranked node takes the odd layer.
    let Plan::Split { shares, .. } = plan(&need(14 * GB, 0, 0, 7), &nodes[..2]) else {
        panic!("expected a split");
    };
    assert_eq!(
        shares,
        vec![share("k", 0, 3, 8 * GB), share("m", 4, 6, 6 * GB)]
    );
}

#[test]
fn every_input_order_gives_the_same_plan() {
    let nodes = [
        node("a", 7 * GB),
        node("b", 7 * GB),
        node("c", 12 * GB),
        node("d", 3 * GB),
        node("e", 0),
    ];
    for n in [
        need(5 * GB, 0, 0, 9),
        need(20 * GB, GB, 2 * GB, 13),
        need(99 * GB, 0, 0, 9),
    ] {
        let expected = plan(&n, &nodes);
        for order in permutations(&nodes) {
            assert_eq!(plan(&n, &order), expected);
        }
    }
}

#[test]
fn a_repeated_node_id_counts_once_with_its_largest_figure() {
    let n = need(12 * GB, 0, 0, 12);
    let nodes = [node("a", 5 * GB), node("b", 8 * GB), node("a", 10 * GB)];
    let p = plan(&n, &nodes);
    let Plan::Split { host, workers, .. } = &p else {
        panic!("expected a split, got {p:?}");
    };
    assert_eq!(
        (host.as_str(), workers.clone()),
        ("a", vec!["b".to_string()])
    );
    for order in permutations(&nodes) {
        assert_eq!(plan(&n, &order), p);
    }
    // The duplicate adds no memory: 9 + 7.2 GB, not 9 + 7.2 + 4.5.
    assert_eq!(
        plan(&need(17 * GB, 0, 0, 17), &nodes),
        Plan::Insufficient {
            need_bytes: 17 * GB,
            have_bytes: 16_200_000_000,
        }
    );
}

#[test]
fn a_model_with_fewer_than_two_layers_is_never_split() {
    for layers in [0, 1] {
        let n = need(10 * GB, 0, 0, layers);
        assert_eq!(plan(&n, &[node("a", 20 * GB)]), single("a"));
        assert_eq!(
            plan(&n, &[node("a", 10 * GB), node("b", 10 * GB)]),
            Plan::Insufficient {
                need_bytes: 10 * GB,
                have_bytes: 9 * GB,
            }
        );
    }
    assert_eq!(need(5, 5, 5, 0).layer_bytes(), 0);
}

#[test]
fn nodes_with_no_room_for_a_layer_are_left_out() {
    let n = need(10 * GB, 0, 0, 10);
    let nodes = [
        node("a", 10 * GB),
        node("b", 0),
        node("c", GB / 2),
        node("d", 0),
    ];
    assert!(matches!(plan(&n, &nodes), Plan::Insufficient { .. }));
    let nodes = [node("z", 0), node("a", 10 * GB), node("b", 2 * GB)];
    let p = plan(&n, &nodes);
    assert_eq!(p.participants(), vec!["a", "b"]);
    // Nothing at all free.
    assert_eq!(
        plan(&n, &[node("a", 0), node("b", 0)]),
        Plan::Insufficient {
            need_bytes: 10 * GB,
            have_bytes: 0,
        }
    );
    // A model whose layers cost nothing fits wherever its overhead does.
    assert_eq!(plan(&need(0, 0, GB, 4), &[node("a", 2 * GB)]), single("a"));
    assert!(matches!(
        plan(
            &need(0, 0, 3 * GB, 4),
            &[node("a", 2 * GB), node("b", 2 * GB)]
        ),
        Plan::Insufficient { .. }
    ));
}

#[test]
fn the_host_must_hold_the_overhead_and_a_layer() {
    // The host offers 9 GB: the 9 GB overhead leaves no room for a layer.
    let n = need(10 * GB, 0, 9 * GB, 10);
    let nodes = [node("a", 10 * GB), node("b", 10 * GB), node("c", 10 * GB)];
    assert!(matches!(plan(&n, &nodes), Plan::Insufficient { .. }));
    // 8 GB of overhead leaves one layer on the host.
    let p = plan(&need(10 * GB, 0, 8 * GB, 10), &nodes);
    let Plan::Split { shares, .. } = &p else {
        panic!("expected a split, got {p:?}");
    };
    assert_eq!(shares[0], share("a", 0, 0, 9 * GB));
    assert_eq!(shares.iter().map(Share::layer_count).sum::<u32>(), 10);
}

#[test]
fn a_layer_is_never_cut_between_nodes() {
    // Two 1.5 GB layers: two nodes offering 1.8 GB hold one each.
    let n = need(3 * GB, 0, 0, 2);
    let nodes = [node("a", 2 * GB), node("b", 2 * GB), node("c", 2 * GB)];
    assert_eq!(plan(&n, &nodes).participants(), vec!["a", "b"]);
    // Nodes offering 1.35 GB each cannot take a layer, however many there are.
    let nodes: Vec<NodeMemory> = (0..6)
        .map(|i| node(&format!("n{i}"), 1_500_000_000))
        .collect();
    assert_eq!(
        plan(&n, &nodes),
        Plan::Insufficient {
            need_bytes: 3 * GB,
            have_bytes: 6 * 1_350_000_000,
        }
    );
}

#[test]
fn at_most_max_split_workers_are_used() {
    // Each node offers 1.08 GB: one 1 GB layer.
    let nodes: Vec<NodeMemory> = (0..12)
        .map(|i| node(&format!("n{i:02}"), 1_200_000_000))
        .collect();
    let most = MAX_SPLIT_WORKERS as u32 + 1;
    let p = plan(&need(u64::from(most) * GB, 0, 0, most), &nodes);
    let Plan::Split {
        workers, shares, ..
    } = &p
    else {
        panic!("expected a split, got {p:?}");
    };
    assert_eq!(workers.len(), MAX_SPLIT_WORKERS);
    assert!(shares.iter().all(|s| s.layer_count() == 1));
    let over = most + 1;
    assert_eq!(
        plan(&need(u64::from(over) * GB, 0, 0, over), &nodes),
        Plan::Insufficient {
            need_bytes: u64::from(over) * GB,
            have_bytes: u64::from(most) * 1_080_000_000,
        }
    );
}

#[test]
fn extreme_sizes_do_not_panic() {
    let huge = [
        node("a", u64::MAX),
        node("b", u64::MAX),
        node("c", u64::MAX - 1),
        node("d", 1),
    ];
    for n in [
        need(u64::MAX, u64::MAX, u64::MAX, u32::MAX),
        need(u64::MAX, u64::MAX, 0, u32::MAX),
        need(u64::MAX, 0, 0, 2),
        need(u64::MAX / 2, u64::MAX / 2, 1, 3),
        need(u64::MAX, u64::MAX, u64::MAX, 0),
        need(1, 0, 0, u32::MAX),
    ] {
        let p = plan(&n, &huge);
        check(&n, &huge, &p);
        let _ = p.describe();
    }
    // Billions of layers on a few nodes: apportioned without walking layer by layer.
    let n = need(u64::from(u32::MAX) * 4, 0, 0, u32::MAX);
    let nodes = [node("a", 10 * GB), node("b", 7 * GB), node("c", 3 * GB)];
    let p = plan(&n, &nodes);
    assert_eq!(p.participants(), vec!["a", "b", "c"]);
    check(&n, &nodes, &p);
    assert_eq!(format_gb(u64::MAX), "18446744073.7 GB");
}

#[test]
fn gigabytes_have_one_decimal_rounded_half_up() {
    assert_eq!(format_gb(0), "0.0 GB");
    assert_eq!(format_gb(49_999_999), "0.0 GB");
    assert_eq!(format_gb(50_000_000), "0.1 GB");
    assert_eq!(format_gb(51_500_000_000), "51.5 GB");
    assert_eq!(format_gb(54_960_000_000), "55.0 GB");
    assert_eq!(format_gb(1_000_000_000_000), "1000.0 GB");
}

#[test]
fn changed_sees_moved_layers_and_nodes_but_not_byte_figures() {
    let split = |shares: Vec<Share>| Plan::Split {
        host: shares[0].node_id.clone(),
        workers: shares[1..].iter().map(|s| s.node_id.clone()).collect(),
        shares,
    };
    let old = split(vec![share("a", 0, 5, 7), share("b", 6, 9, 4)]);
    assert!(!changed(&old, &old.clone()));
    assert!(!changed(
        &old,
        &split(vec![share("a", 0, 5, 8), share("b", 6, 9, 5)])
    ));
    assert!(changed(
        &old,
        &split(vec![share("a", 0, 6, 7), share("b", 7, 9, 4)])
    ));
    assert!(changed(
        &old,
        &split(vec![share("a", 0, 5, 7), share("c", 6, 9, 4)])
    ));
    assert!(changed(&old, &split(vec![share("a", 0, 9, 7)])));
    assert!(changed(&old, &single("a")));
    assert!(changed(&single("a"), &single("b")));
    assert!(!changed(&single("a"), &single("a")));
    let short = |have_bytes| Plan::Insufficient {
        need_bytes: 10,
        have_bytes,
    };
    assert!(!changed(&short(3), &short(4)));
    assert!(changed(&short(3), &single("a")));
    assert!(changed(&old, &short(3)));
}

#[test]
fn a_worker_dying_replans_on_the_rest() {
    let n = need(30 * GB, 0, 0, 30);
    let nodes = [
        node("a", 25 * GB),
        node("b", 12 * GB),
        node("c", 12 * GB),
        node("d", 12 * GB),
    ];
    let before = plan(&n, &nodes);
    assert_eq!(before.participants(), vec!["a", "b"]);
    let after = plan(&n, &[nodes[0].clone(), nodes[2].clone(), nodes[3].clone()]);
    assert_eq!(after.participants(), vec!["a", "c"]);
    assert!(changed(&before, &after));
    // A node outside the plan leaving changes nothing.
    let same = plan(&n, &nodes[..3]);
    assert!(!changed(&before, &same));
}

#[test]
fn plans_round_trip_through_json() {
    let nodes = [node("a", 10 * GB), node("b", 5 * GB)];
    for p in [
        plan(&need(9 * GB, GB, GB, 10), &nodes),
        plan(&need(GB, 0, 0, 10), &nodes),
        plan(&need(99 * GB, 0, 0, 10), &nodes),
    ] {
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Plan>(&json).unwrap(), p);
    }
}

/// The nodes a plan may use, ranked, recomputed independently of the module.
fn reference_rank(nodes: &[NodeMemory]) -> Vec<(String, u64)> {
    let mut best: BTreeMap<&str, u64> = BTreeMap::new();
    for n in nodes {
        let e = best.entry(n.node_id.as_str()).or_insert(n.free_bytes);
        *e = (*e).max(n.free_bytes);
    }
    let mut ranked: Vec<(String, u64)> = best.into_iter().map(|(k, v)| (k.into(), v)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    ranked
}

/// Layer capacity of the first `count` ranked nodes (host first), or `None` when one of them
/// cannot take a layer.
fn reference_caps(n: &ModelNeed, ranked: &[(String, u64)], count: usize) -> Option<Vec<u64>> {
    let layer = n.layer_bytes().max(1);
    ranked[..count]
        .iter()
        .enumerate()
        .map(|(i, (_, free))| {
            let room = if i == 0 {
                offer(*free).checked_sub(n.overhead_bytes)?
            } else {
                offer(*free)
            };
            Some(room / layer).filter(|c| *c >= 1)
        })
        .collect()
}

fn reference_fits(n: &ModelNeed, ranked: &[(String, u64)], count: usize) -> bool {
    count >= 2
        && count <= ranked.len()
        && count <= MAX_SPLIT_WORKERS + 1
        && count as u64 <= u64::from(n.layers)
        && reference_caps(n, ranked, count)
            .is_some_and(|c| c.iter().map(|&x| u128::from(x)).sum::<u128>() >= n.layers.into())
}

/// Every property a plan must have, checked against the reference.
fn check(n: &ModelNeed, nodes: &[NodeMemory], p: &Plan) {
    let ranked = reference_rank(nodes);
    let single_fits = ranked
        .first()
        .is_some_and(|(_, f)| offer(*f) >= n.total_bytes());
    match p {
        Plan::Single { node_id } => {
            assert!(single_fits, "{n:?} {nodes:?} {p:?}");
            assert_eq!(node_id, &ranked[0].0);
        }
        Plan::Insufficient { need_bytes, .. } => {
            assert!(!single_fits, "{n:?} {nodes:?} {p:?}");
            assert_eq!(*need_bytes, n.total_bytes());
            for count in 2..=ranked.len() {
                assert!(!reference_fits(n, &ranked, count), "{n:?} {nodes:?} {p:?}");
            }
        }
        Plan::Split {
            host,
            workers,
            shares,
        } => {
            assert!(!single_fits, "{n:?} {nodes:?} {p:?}");
            let count = shares.len();
            assert!(reference_fits(n, &ranked, count), "{n:?} {nodes:?} {p:?}");
            assert!(!reference_fits(n, &ranked, count - 1), "not minimal: {p:?}");
            assert!(workers.len() <= MAX_SPLIT_WORKERS);
            assert_eq!(host, &ranked[0].0);
            let ids: Vec<&str> = ranked[..count].iter().map(|(id, _)| id.as_str()).collect();
            assert_eq!(
                p.participants(),
                ids,
                "host first, then workers by free memory"
            );
            assert_eq!(
                workers.iter().map(String::as_str).collect::<Vec<_>>(),
                ids[1..]
            );
            let mut next = 0u32;
            let layer = n.layer_bytes();
            let caps = reference_caps(n, &ranked, count).unwrap();
            for (i, s) in shares.iter().enumerate() {
                assert_eq!(s.first_layer, next, "contiguous: {p:?}");
                assert!(s.last_layer >= s.first_layer, "at least one layer: {p:?}");
                let held = u64::from(s.layer_count());
                assert!(held <= caps[i]);
                let overhead = if i == 0 { n.overhead_bytes } else { 0 };
                assert_eq!(s.bytes, held * layer + overhead);
                assert!(s.bytes <= offer(ranked[i].1), "over its offer: {p:?}");
                next = s.last_layer + 1;
            }
            assert_eq!(
                u64::from(next),
                u64::from(n.layers),
                "covers every layer: {p:?}"
            );
            check_proportional(n, &ranked[..count], shares, &caps);
        }
    }
}

/// Counts follow the room each node gives to layers: more room never means fewer layers, and
/// where no bound is in the way each count is its exact share rounded down or up.
fn check_proportional(n: &ModelNeed, ranked: &[(String, u64)], shares: &[Share], caps: &[u64]) {
    let rooms: Vec<u128> = ranked
        .iter()
        .enumerate()
        .map(|(i, (_, f))| u128::from(offer(*f) - if i == 0 { n.overhead_bytes } else { 0 }))
        .collect();
    let total: u128 = rooms.iter().sum();
    let layers = u128::from(n.layers);
    let counts: Vec<u128> = shares.iter().map(|s| s.layer_count().into()).collect();
    for i in 0..rooms.len() {
        for j in 0..rooms.len() {
            if rooms[i] > rooms[j] {
                assert!(counts[i] >= counts[j], "{n:?} {ranked:?} {shares:?}");
            }
        }
    }
    let unbounded = (0..rooms.len()).all(|i| {
        let floor = layers * rooms[i] / total;
        floor >= 1 && floor < u128::from(caps[i])
    });
    if unbounded {
        for i in 0..rooms.len() {
            let floor = layers * rooms[i] / total;
            assert!(counts[i] == floor || counts[i] == floor + 1, "{shares:?}");
        }
    }
}

#[test]
fn every_small_mesh_gets_a_valid_order_independent_plan() {
    let frees = [0u64, 3, 10, 11, 25, 40, 120];
    let mut meshes: Vec<Vec<u64>> = vec![vec![]];
    for size in 1..=4 {
        let mut next = Vec::new();
        for m in meshes.iter().filter(|m| m.len() == size - 1) {
            for &f in frees.iter().filter(|&&f| m.last().is_none_or(|&l| f >= l)) {
                let mut grown = m.clone();
                grown.push(f);
                next.push(grown);
            }
        }
        meshes.extend(next);
    }
    let mut kinds = [0usize; 3];
    for layers in [0u32, 1, 2, 3, 4, 7, 10] {
        for weights in [0u64, 9, 40, 100] {
            for kv in [0u64, 5] {
                for overhead in [0u64, 4, 30] {
                    let n = need(weights, kv, overhead, layers);
                    for mesh in &meshes {
                        let nodes: Vec<NodeMemory> = mesh
                            .iter()
                            .enumerate()
                            .map(|(i, &f)| node(&format!("n{}", (i * 3) % 4), f))
                            .collect();
                        let p = plan(&n, &nodes);
                        check(&n, &nodes, &p);
                        kinds[match p {
                            Plan::Single { .. } => 0,
                            Plan::Split { .. } => 1,
                            Plan::Insufficient { .. } => 2,
                        }] += 1;
                        let mut reversed = nodes.clone();
                        reversed.reverse();
                        assert_eq!(plan(&n, &reversed), p);
                        let by = 1.min(reversed.len());
                        reversed.rotate_left(by);
                        assert_eq!(plan(&n, &reversed), p);
                    }
                }
            }
        }
    }
    // The grid reaches every outcome often.
    assert!(kinds.iter().all(|&k| k > 1000), "{kinds:?}");
}

#[test]
fn every_order_of_small_meshes_with_repeated_ids_gives_the_same_plan() {
    let frees = [0u64, 4, 10, 22, 50];
    let ids = ["a", "b", "a", "c"];
    for &f0 in &frees {
        for &f1 in &frees {
            for &f2 in &frees {
                for &f3 in &frees {
                    let nodes: Vec<NodeMemory> = ids
                        .iter()
                        .zip([f0, f1, f2, f3])
                        .map(|(id, f)| node(id, f))
                        .collect();
                    for n in [need(30, 0, 0, 6), need(50, 6, 3, 5), need(12, 0, 8, 3)] {
                        let p = plan(&n, &nodes);
                        check(&n, &nodes, &p);
                        for order in permutations(&nodes) {
                            assert_eq!(plan(&n, &order), p);
                        }
                    }
                }
            }
        }
    }
}
