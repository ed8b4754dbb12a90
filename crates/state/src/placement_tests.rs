use super::*;

/// Ids and names differ so a sentence that shows an id instead of a name fails.
fn node(k: u32) -> NodeView {
    NodeView {
        id: format!("id-{k}"),
        name: format!("node-{k}"),
        idle: true,
        replicas: vec![],
        on_disk: BTreeSet::new(),
        free_bytes: 0,
        load: 0,
    }
}

fn with_file(mut n: NodeView, model: &str) -> NodeView {
    n.on_disk.insert(model.into());
    n
}

fn free(mut n: NodeView, bytes: u64) -> NodeView {
    n.free_bytes = bytes;
    n
}

fn loaded(mut n: NodeView, load: u32) -> NodeView {
    n.load = load;
    n
}

fn holding(mut n: NodeView, model: &str, serving: bool, placed: bool) -> NodeView {
    n.idle = false;
    n.replicas.push(Replica {
        model: model.into(),
        serving,
        placed,
        replaces: None,
    });
    n
}

fn replacing(mut n: NodeView, old: u32) -> NodeView {
    n.replicas.last_mut().expect("a replica").replaces = Some(format!("id-{old}"));
    n
}

fn spec(model: &str, replicas: u32, [min, max]: [u32; 2], fetch: bool, need: u64) -> GroupSpec {
    GroupSpec {
        model: model.into(),
        replicas,
        min,
        max,
        fetchable: fetch,
        need_bytes: need,
    }
}

fn group(model: &str, replicas: u32) -> GroupSpec {
    spec(model, replicas, [0, 10], false, 0)
}

fn place_all(groups: &[GroupSpec], nodes: &[NodeView]) -> Vec<Decision> {
    place(groups, &BTreeMap::new(), nodes)
}

fn place_one(g: &GroupSpec, nodes: &[NodeView]) -> Vec<Decision> {
    place_all(std::slice::from_ref(g), nodes)
}

fn summary(decisions: &[Decision]) -> Vec<(&str, &str, Action)> {
    decisions
        .iter()
        .map(|d| (d.model.as_str(), d.node.as_str(), d.action))
        .collect()
}

fn nodes_doing(decisions: &[Decision], action: Action) -> Vec<&str> {
    let doing = decisions.iter().filter(|d| d.action == action);
    doing.map(|d| d.node.as_str()).collect()
}

fn starts(decisions: &[Decision]) -> Vec<&str> {
    nodes_doing(decisions, Action::Start)
}

fn stops(decisions: &[Decision]) -> Vec<&str> {
    nodes_doing(decisions, Action::Stop)
}

fn sentence(spec: &GroupSpec, nodes: &[NodeView]) -> String {
    group_status(spec, 0, nodes).sentence
}

#[test]
fn wanted_clamps_into_the_range_and_normalises_it() {
    let g = spec("m", 2, [1, 3], false, 0);
    let cases = [(0, 2), (1, 3), (5, 3), (u32::MAX, 3)];
    for (extra, want) in cases {
        assert_eq!(g.wanted(extra), want, "extra={extra}");
    }
    assert_eq!(spec("m", 0, [1, 3], false, 0).wanted(0), 1, "raised to min");
    assert_eq!(
        spec("m", 9, [1, 3], false, 0).wanted(0),
        3,
        "lowered to max"
    );
    // min > max: max reads as min.
    let odd = spec("m", 1, [3, 2], false, 0);
    assert_eq!(odd.wanted(0), 3);
    assert_eq!(odd.wanted(4), 3);
}

#[test]
fn a_group_of_two_starts_on_the_nodes_with_the_file() {
    let nodes = [
        node(1),
        node(2),
        with_file(node(3), "m"),
        with_file(node(4), "m"),
    ];
    let d = place_all(&[group("m", 2)], &nodes);
    assert_eq!(
        summary(&d),
        [("m", "id-3", Action::Start), ("m", "id-4", Action::Start)]
    );
    assert_eq!(
        d[0].reason,
        "node-3 loads m: group wants 2 replicas, 0 serving or loading; node-3 is idle and has the file"
    );
}

#[test]
fn ties_on_file_and_memory_go_to_the_lowest_ids_and_more_memory_wins_first() {
    let nodes: Vec<NodeView> = (1..=4)
        .map(|k| free(with_file(node(k), "m"), 100))
        .collect();
    assert_eq!(
        starts(&place_all(&[group("m", 2)], &nodes)),
        ["id-1", "id-2"]
    );
    let mut nodes = nodes;
    nodes[3].free_bytes = 200;
    assert_eq!(
        starts(&place_all(&[group("m", 2)], &nodes)),
        ["id-1", "id-4"]
    );
}

#[test]
fn nodes_without_enough_memory_are_skipped() {
    let g = spec("m", 1, [0, 10], false, 10_000_000_000);
    let nodes = [
        free(with_file(node(1), "m"), 9_999_999_999),
        free(with_file(node(2), "m"), 10_000_000_000),
    ];
    let d = place_one(&g, &nodes);
    assert_eq!(starts(&d), ["id-2"]);
    assert_eq!(
        d[0].reason,
        "node-2 loads m: group wants 1 replica, 0 serving or loading; node-2 is idle, has the file \
         and has 10.0 GB free (10.0 GB needed)"
    );
    assert!(place_all(&[g], &nodes[..1]).is_empty());
}

#[test]
fn nodes_without_the_file_only_when_fetchable_and_after_those_with_it() {
    let nodes = [free(node(1), 1_000), free(with_file(node(2), "m"), 10)];
    assert_eq!(starts(&place_all(&[group("m", 2)], &nodes)), ["id-2"]);

    let fetchable = spec("m", 1, [0, 10], true, 0);
    let d = place_one(&fetchable, &nodes);
    assert_eq!(starts(&d), ["id-2"], "the file beats more memory");

    let d = place_one(&spec("m", 2, [0, 10], true, 0), &nodes);
    assert_eq!(starts(&d), ["id-1", "id-2"]);
    assert_eq!(
        d[0].reason,
        "node-1 loads m: group wants 2 replicas, 0 serving or loading; node-1 is idle and fetches \
         the file (no available idle node has it)"
    );
    assert!(
        d[1].reason.ends_with("node-2 is idle and has the file"),
        "{}",
        d[1].reason
    );
}

#[test]
fn no_candidate_means_no_decision_and_the_status_says_why() {
    let serving = holding(node(1), "m", true, false);
    let g = group("m", 2);

    let nodes = [serving.clone()];
    assert!(place_one(&g, &nodes).is_empty());
    assert_eq!(
        sentence(&g, &nodes),
        "1 of 2 replicas serving; no idle node can take another (no idle node)"
    );

    let nodes = [serving.clone(), node(2), node(3)];
    assert!(place_one(&g, &nodes).is_empty());
    assert_eq!(
        sentence(&g, &nodes),
        "1 of 2 replicas serving; no idle node can take another (2 idle: none has the file)"
    );

    let big = spec("m", 2, [0, 10], true, 20_000_000_000);
    let nodes = [
        serving.clone(),
        free(node(2), 1),
        free(with_file(node(3), "m"), 2),
    ];
    assert!(place_one(&big, &nodes).is_empty());
    assert_eq!(
        sentence(&big, &nodes),
        "1 of 2 replicas serving; no idle node can take another (2 idle: none has enough memory, \
         20.0 GB needed)"
    );

    let picky = spec("m", 2, [0, 10], false, 20_000_000_000);
    let nodes = [
        serving,
        free(node(2), 30_000_000_000),
        free(with_file(node(3), "m"), 2),
    ];
    assert!(place_one(&picky, &nodes).is_empty());
    assert_eq!(
        sentence(&picky, &nodes),
        "1 of 2 replicas serving; no idle node can take another (2 idle: none has both the file \
         and enough memory, 20.0 GB needed)"
    );

    assert_eq!(
        sentence(&group("m", 1), &[]),
        "0 of 1 replica serving; no idle node can take one (no idle node)"
    );
}

#[test]
fn status_names_loading_nodes_and_counts_candidates() {
    let g = group("m", 3);
    let nodes = [
        holding(node(1), "m", true, true),
        holding(node(2), "m", true, false),
        holding(node(7), "m", false, true),
    ];
    let s = group_status(&g, 0, &nodes);
    assert_eq!((s.wanted, s.serving, s.loading), (3, 2, 1));
    assert_eq!(s.sentence, "2 of 3 replicas serving; node-7 loading");

    let all = [
        holding(node(1), "m", true, true),
        holding(node(2), "m", true, true),
        holding(node(3), "m", true, true),
    ];
    assert_eq!(sentence(&g, &all), "3 of 3 replicas serving");

    let two = group("m", 2);
    let nodes = [
        holding(node(5), "m", false, true),
        holding(node(4), "m", false, true),
    ];
    assert_eq!(
        sentence(&two, &nodes),
        "0 of 2 replicas serving; node-4 and node-5 loading"
    );

    let many: Vec<NodeView> = (1..=5)
        .map(|k| holding(node(k), "m", false, true))
        .collect();
    assert_eq!(
        sentence(&group("m", 5), &many),
        "0 of 5 replicas serving; node-1, node-2, node-3 and 2 more loading"
    );

    let nodes = [holding(node(1), "m", true, true), with_file(node(2), "m")];
    assert_eq!(
        sentence(&g, &nodes),
        "1 of 3 replicas serving; 2 more wanted, only 1 idle node can take one"
    );
    let nodes = [with_file(node(2), "m"), with_file(node(3), "m")];
    assert_eq!(
        sentence(&two, &nodes),
        "0 of 2 replicas serving; 2 more wanted, 2 idle nodes can take one"
    );

    let s = group_status(&spec("m", 2, [0, 3], false, 0), 4, &all);
    assert_eq!(s.sentence, "3 of 3 replicas serving (1 added for demand)");
    assert_eq!((s.min, s.max), (0, 3));
    assert_eq!(sentence(&group("m", 0), &[]), "no replica wanted");
}

#[test]
fn status_explains_a_surplus() {
    let g = group("m", 2);
    let operators = [
        holding(node(1), "m", true, false),
        holding(node(2), "m", true, false),
        holding(node(3), "m", true, false),
    ];
    assert_eq!(
        sentence(&g, &operators),
        "3 replicas serving, 2 wanted: the extra one was placed by an operator"
    );
    let mut mixed = operators.clone();
    mixed[2].replicas[0].placed = true;
    assert_eq!(
        sentence(&g, &mixed),
        "3 replicas serving, 2 wanted: releasing the extra one"
    );
    assert_eq!(
        sentence(&group("m", 1), &mixed),
        "3 replicas serving, 1 wanted: releasing 1 placed by the mesh; the other 1 was placed by an operator"
    );
    let s = serde_json::to_value(group_status(&g, 0, &mixed)).unwrap();
    assert_eq!(s["serving"], 3);
    assert_eq!(s["model"], "m");
}

#[test]
fn an_idle_node_gets_one_start_and_the_group_with_fewer_replicas_gets_it_first() {
    let b_serving = holding(node(1), "b", true, false);
    let spare = with_file(with_file(node(2), "a"), "b");
    let d = place_all(
        &[group("b", 2), group("a", 1)],
        &[b_serving.clone(), spare.clone()],
    );
    assert_eq!(summary(&d), [("a", "id-2", Action::Start)]);

    // Both short, no replica yet: one each, not both to the alphabetically first group.
    let nodes = [spare.clone(), with_file(with_file(node(3), "a"), "b")];
    let d = place_all(&[group("a", 2), group("b", 2)], &nodes);
    assert_eq!(
        summary(&d),
        [("a", "id-2", Action::Start), ("b", "id-3", Action::Start)]
    );

    // A has 2 running and wants 4, B has none and wants 3: every pass gives each short group
    // one, the group with fewer replicas choosing first, so B gets two of three.
    let nodes: Vec<NodeView> = vec![
        holding(node(1), "a", true, false),
        holding(node(2), "a", true, false),
        with_file(with_file(node(3), "a"), "b"),
        with_file(with_file(node(4), "a"), "b"),
        with_file(with_file(node(5), "a"), "b"),
    ];
    let d = place_all(&[group("a", 4), group("b", 3)], &nodes);
    assert_eq!(
        summary(&d),
        [
            ("a", "id-4", Action::Start),
            ("b", "id-3", Action::Start),
            ("b", "id-5", Action::Start)
        ]
    );
}

#[test]
fn surplus_stops_loading_first_then_least_loaded_then_highest_id() {
    let nodes = [
        holding(node(1), "m", true, true),
        loaded(holding(node(2), "m", false, true), 5),
        loaded(holding(node(3), "m", true, true), 1),
    ];
    let d = place_all(&[group("m", 1)], &nodes);
    assert_eq!(
        summary(&d),
        [("m", "id-1", Action::Stop), ("m", "id-2", Action::Stop)]
    );
    assert_eq!(
        d[1].reason,
        "node-2 releases m: group wants 1 replica, 3 running; node-2 was placed by the mesh and is \
         still loading"
    );
    assert_eq!(
        d[0].reason,
        "node-1 releases m: group wants 1 replica, 3 running; node-1 is the least loaded serving \
         replica placed by the mesh (0 in flight)"
    );

    let tied = [
        loaded(holding(node(1), "m", true, true), 2),
        loaded(holding(node(2), "m", true, true), 2),
        loaded(holding(node(3), "m", true, true), 3),
    ];
    let d = place_all(&[group("m", 2)], &tied);
    assert_eq!(
        stops(&d),
        ["id-2"],
        "equal load: the higher id goes, the lowest ids stay"
    );
    assert_eq!(
        d[0].reason,
        "node-2 releases m: group wants 2 replicas, 3 running; node-2 is the least loaded replica \
         placed by the mesh (2 in flight)"
    );
    let d = place_all(&[group("m", 1)], &tied);
    assert_eq!(stops(&d), ["id-1", "id-2"]);
    assert!(
        d[0].reason.contains("one of the 2 least loaded replicas"),
        "{}",
        d[0].reason
    );
}

#[test]
fn operator_replicas_are_never_stopped() {
    let nodes = [
        holding(node(1), "m", true, false),
        holding(node(2), "m", false, false),
        loaded(holding(node(3), "m", true, true), 50),
    ];
    assert_eq!(stops(&place_all(&[group("m", 1)], &nodes)), ["id-3"]);
    assert!(place_all(&[group("m", 1)], &nodes[..2]).is_empty());
    assert!(place_all(&[group("m", 0)], &nodes[..2]).is_empty());
}

#[test]
fn a_migration_pair_counts_once_until_the_old_node_is_gone() {
    let old = holding(node(1), "m", true, true);
    let new = replacing(holding(node(2), "m", false, true), 1);
    let g = group("m", 1);
    assert!(place_one(&g, &[old.clone(), new.clone(), with_file(node(3), "m")]).is_empty());
    let s = group_status(&g, 0, &[old.clone(), new.clone()]);
    assert_eq!((s.serving, s.loading), (1, 0));
    assert_eq!(s.sentence, "1 of 1 replica serving");

    // The pair is one, so a group of two still needs exactly one more.
    let d = place_all(
        &[group("m", 2)],
        &[old.clone(), new.clone(), with_file(node(3), "m")],
    );
    assert_eq!(summary(&d), [("m", "id-3", Action::Start)]);

    // A target is never the one released, even when the pair is over the wanted count.
    let d = place_all(&[group("m", 0)], &[old.clone(), new.clone()]);
    assert_eq!(stops(&d), ["id-1"]);

    // Old node gone: the target counts as itself.
    let d = place_one(&g, &[new.clone(), with_file(node(3), "m")]);
    assert!(d.is_empty());
    assert_eq!(
        group_status(&g, 0, std::slice::from_ref(&new)).sentence,
        "0 of 1 replica serving; node-2 loading"
    );
    // The old node is still up but no longer holds the model: the target counts.
    let emptied = NodeView {
        replicas: vec![],
        ..old
    };
    let s = group_status(&g, 0, &[emptied, new]);
    assert_eq!((s.serving, s.loading), (0, 1));
}

#[test]
fn extra_demand_raises_wanted_but_never_past_max() {
    let g = spec("m", 1, [0, 2], false, 0);
    let nodes: Vec<NodeView> = (1..=4).map(|k| with_file(node(k), "m")).collect();
    let extra = BTreeMap::from([("m".to_string(), 5)]);
    let d = place(std::slice::from_ref(&g), &extra, &nodes);
    assert_eq!(starts(&d), ["id-1", "id-2"]);
    assert!(
        d[0].reason
            .contains("group wants 2 replicas (1 added for demand), 0 serving"),
        "{}",
        d[0].reason
    );
    let other = BTreeMap::from([("other".to_string(), 5)]);
    assert_eq!(starts(&place(&[g], &other, &nodes)), ["id-1"]);
}

#[test]
fn wanted_zero_stops_every_placed_replica() {
    let nodes = [
        holding(node(1), "m", true, true),
        holding(node(2), "m", false, true),
        holding(node(3), "m", true, false),
        loaded(holding(node(4), "m", true, true), 9),
        holding(node(5), "other", true, true),
    ];
    let d = place_one(&group("m", 0), &nodes);
    assert_eq!(stops(&d), ["id-1", "id-2", "id-4"]);
    assert!(starts(&d).is_empty());
    assert_eq!(
        d[0].reason,
        "node-1 releases m: group wants 0 replicas, 4 running; node-1 was placed by the mesh and \
         none is wanted"
    );
}

#[test]
fn nodes_that_are_not_idle_never_start() {
    let busy = NodeView {
        idle: false,
        ..with_file(node(1), "m")
    };
    // Flagged idle but still listing a replica: mid-change, so not a standby node yet.
    let inconsistent = NodeView {
        idle: true,
        ..holding(with_file(node(2), "m"), "x", false, false)
    };
    let g = group("m", 2);
    assert!(place_one(&g, &[busy.clone(), inconsistent.clone()]).is_empty());
    assert!(sentence(&g, &[busy, inconsistent]).ends_with("(no idle node)"));
}

#[test]
fn duplicate_groups_pick_one_deterministically() {
    let nodes: Vec<NodeView> = (1..=3).map(|k| with_file(node(k), "m")).collect();
    let a = place_all(&[group("m", 3), group("m", 1)], &nodes);
    let b = place_all(&[group("m", 1), group("m", 3)], &nodes);
    assert_eq!(a, b);
    assert_eq!(starts(&a), ["id-1"]);
}

/// Heap's algorithm: every order of `items`.
fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    fn go<T: Clone>(k: usize, items: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(items.clone());
            return;
        }
        for i in 0..k {
            go(k - 1, items, out);
            let j = if k.is_multiple_of(2) { i } else { 0 };
            items.swap(j, k - 1);
        }
    }
    let mut items = items.to_vec();
    let mut out = Vec::new();
    go(items.len(), &mut items, &mut out);
    out
}

#[test]
fn input_order_never_changes_the_output() {
    let nodes = vec![
        holding(node(1), "a", true, true),
        loaded(holding(node(2), "a", true, true), 3),
        holding(node(3), "a", false, false),
        with_file(free(node(4), 50), "b"),
        free(node(5), 80),
        with_file(free(node(6), 50), "c"),
        replacing(holding(node(7), "a", false, true), 1),
    ];
    let groups = vec![
        group("a", 2),
        spec("b", 2, [0, 10], true, 0),
        group("c", 1),
        group("c", 4),
    ];
    let extra = BTreeMap::from([("b".to_string(), 1)]);
    let want = place(&groups, &extra, &nodes);
    assert_eq!(
        summary(&want),
        [
            ("a", "id-1", Action::Stop),
            ("b", "id-4", Action::Start),
            ("b", "id-5", Action::Start),
            ("c", "id-6", Action::Start),
        ]
    );
    let node_orders = permutations(&nodes);
    assert_eq!(node_orders.len(), 5_040);
    let group_orders = permutations(&groups);
    for (i, ns) in node_orders.iter().enumerate() {
        let gs = &group_orders[i % group_orders.len()];
        assert_eq!(place(gs, &extra, ns), want, "nodes {i}");
        for g in &groups {
            assert_eq!(group_status(g, 0, ns), group_status(g, 0, &nodes));
        }
    }
}

#[test]
fn decisions_sort_by_model_then_stops_then_node() {
    let nodes = [
        holding(node(1), "b", true, true),
        holding(node(2), "b", true, true),
        with_file(node(3), "a"),
        with_file(node(4), "z"),
    ];
    let d = place_all(&[group("z", 1), group("b", 0), group("a", 1)], &nodes);
    assert_eq!(
        summary(&d),
        [
            ("a", "id-3", Action::Start),
            ("b", "id-1", Action::Stop),
            ("b", "id-2", Action::Stop),
            ("z", "id-4", Action::Start),
        ]
    );
    for d in &d {
        assert!(!d.reason.contains("id-"), "names, not ids: {}", d.reason);
    }
}
