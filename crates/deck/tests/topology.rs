//! TOPOLOGY: routers, each model's replica edges, a split's host and workers, idle capacity;
//! the same at 80 and 200 columns, and bounded at 1,000 nodes.

mod common;

use common::{assert_hides, assert_shows, ch, screen};
use infermesh_deck::fixtures::{self, peer_id};
use infermesh_deck::{update, Msg};
use infermesh_state::split::Share;
use infermesh_state::split_role::SplitClaim;

fn share(node: &str, first: u32, last: u32) -> Share {
    Share {
        node_id: node.into(),
        first_layer: first,
        last_layer: last,
        bytes: 1 << 30,
    }
}

#[test]
fn routers_replicas_a_split_and_idle_capacity_are_drawn() {
    let mut m = fixtures::model(8, 0);
    let mut s = fixtures::status(8);
    // node-0001 (standby) hosts a split of big-70b over node-0005 (standby, ready) and
    // node-0002 (loading, its rpc-server not up yet).
    s.peers[1].split = Some(SplitClaim::Host {
        model: "big-70b".into(),
        shares: vec![
            share(&peer_id(1), 0, 11),
            share(&peer_id(5), 12, 23),
            share(&peer_id(2), 24, 31),
        ],
        serving: true,
        need_bytes: 0,
        have_bytes: 0,
    });
    for (i, ready) in [(5, true), (2, false)] {
        s.peers[i].split = Some(SplitClaim::Worker {
            model: "big-70b".into(),
            host: peer_id(1),
            first_layer: 0,
            last_layer: 0,
            ready,
        });
    }
    s.peers[1].models = vec!["big-70b".into()];
    // node-0004 serves model-0 too: two replica edges.
    s.peers[4].models = vec!["model-0".into()];
    update(&mut m, Msg::Status(Box::new(s)));
    ch(&mut m, '7');
    let wide = screen(&m, 200, 60);
    assert_shows(&wide, "TOPOLOGY — 9 nodes · 2 routing · 5 models · 0 idle");
    assert_shows(&wide, "ROUTERS          2: ● node-0003 · ● node-0007");
    assert_shows(
        &wide,
        "│ each request goes to a serving replica its peers admitted",
    );
    // The connected node serves SmolLM2, marked as the attached one.
    assert_shows(&wide, "SmolLM2-135M-In… ──── ● box-self* serving · load 1");
    assert_shows(&wide, "big-70b          ──── ● node-0001 standby · load 1");
    assert_shows(&wide, " ══ split: host node-0001 (serving)");
    assert_shows(
        &wide,
        "    ╠═ node-0005 carries layers 12–23 · rpc-server up",
    );
    assert_shows(
        &wide,
        "    ╚═ node-0002 carries layers 24–31 · rpc-server starting",
    );
    // model-0 has two replicas: a fork and a corner.
    assert_shows(&wide, "model-0          ─┬── ● node-0000 serving");
    assert_shows(&wide, " └── ● node-0004 serving");
    // Standby nodes in the split are not idle capacity.
    assert_shows(&wide, "IDLE             no standby node");
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "TOPOLOGY");
    assert_shows(&narrow, "big-70b");
}

#[test]
fn a_thousand_nodes_are_summarised_to_the_pane() {
    let mut m = fixtures::model(1_000, 0);
    ch(&mut m, '7');
    let s = screen(&m, 80, 24);
    assert_shows(
        &s,
        "TOPOLOGY — 1001 nodes · 250 routing · 6 models · 250 idle",
    );
    assert_shows(
        &s,
        "250: ● node-0003 · ● node-0007 · ● node-0011 and 247 more",
    );
    assert_shows(&s, "└── +96 more replicas");
    assert_shows(&s, "… and 3 more models (MODELS lists them all)");
    let tall = screen(&m, 200, 60);
    assert_hides(&tall, "… and");
}
