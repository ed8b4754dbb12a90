//! MODELS `a` (assign) and `u` (unassign): the blast radius first, the node picked with ↑/↓,
//! the signed call only on `y`, and the node's answer in the footer.

mod common;

use common::{ch, endpoint, key, on_model};
use crossterm::event::KeyCode;
use infermesh_deck::api::GroupView;
use infermesh_deck::fixtures;
use infermesh_deck::model::{Confirm, ReplicaAction};
use infermesh_deck::{update, Cmd, Msg};

#[test]
fn assign_says_what_starts_and_sends_only_on_y() {
    // 8 peers: serving node-0000 (model-0) and node-0004 (model-4); standby node-0001, node-0005.
    let mut m = fixtures::model(8, 0);
    on_model(&mut m, "model-0");
    for no in [KeyCode::Char('n'), KeyCode::Esc, KeyCode::Enter] {
        assert_eq!(ch(&mut m, 'a'), vec![]);
        assert!(matches!(m.confirm, Some(Confirm::Replica(_))));
        assert_eq!(key(&mut m, no), vec![], "{no:?} sends nothing");
        assert!(m.confirm.is_none());
    }
    ch(&mut m, 'a');
    let lines = m.confirm.as_ref().unwrap().lines().join("\n");
    for want in [
        "Assign model-0 to node-0001: it starts a replica there. [y/N]",
        "node-0001 loads model-0 and must pass its peers' admission check before clients reach it",
        "nothing that serves now stops",
        "model-0 goes from 1 serving replica to 2",
        "target 1/2",
    ] {
        assert!(lines.contains(want), "{want:?} in {lines}");
    }
    // ↓ picks the other standby node, and the modal stays open.
    assert_eq!(key(&mut m, KeyCode::Down), vec![]);
    let cmds = ch(&mut m, 'y');
    assert_eq!(
        cmds,
        vec![Cmd::Replica {
            action: ReplicaAction::Assign,
            model: "model-0".into(),
            node: endpoint(5),
        }]
    );
    assert!(m.confirm.is_none());
    update(
        &mut m,
        Msg::ReplicaDone(Ok("node-0005 is loading model-0".into())),
    );
    assert_eq!(m.flash.as_ref().unwrap().0, "node-0005 is loading model-0");
}

#[test]
fn unassign_counts_what_is_left_and_names_the_group() {
    let mut m = fixtures::model(8, 0);
    if let Some(s) = m.status.as_mut() {
        s.groups.push(GroupView {
            model: "model-0".into(),
            wanted: 1,
            serving: 1,
            loading: 0,
            min: 1,
            max: 2,
            sentence: String::new(),
        });
    }
    on_model(&mut m, "model-0");
    ch(&mut m, 'u');
    let lines = m.confirm.as_ref().unwrap().lines().join("\n");
    for want in [
        "Unassign model-0 from node-0000: it drains and stops its replica. [y/N]",
        "node-0000 takes no new model-0 requests; its 0 requests in flight finish",
        "node-0000 then serves nothing and is standby",
        "model-0 goes from 1 serving replica to 0: none is left",
        "workload group that wants 1 (min 1, max 2): placement starts another replica elsewhere",
    ] {
        assert!(lines.contains(want), "{want:?} in {lines}");
    }
    assert_eq!(
        ch(&mut m, 'y'),
        vec![Cmd::Replica {
            action: ReplicaAction::Unassign,
            model: "model-0".into(),
            node: endpoint(0),
        }]
    );
}

#[test]
fn nothing_to_assign_to_or_unassign_is_said_up_front() {
    // One peer, serving model-0: no standby node.
    let mut m = fixtures::model(1, 0);
    on_model(&mut m, "model-0");
    assert_eq!(ch(&mut m, 'a'), vec![]);
    assert!(m.confirm.is_none());
    let flash = &m.flash.as_ref().unwrap().0;
    assert!(flash.contains("no standby node to start it on"), "{flash}");
    // model-2 is only requested by name: no replica to unassign.
    let mut m = fixtures::model(8, 0);
    on_model(&mut m, "model-2");
    ch(&mut m, 'u');
    assert!(m.confirm.is_none());
    let flash = &m.flash.as_ref().unwrap().0;
    assert!(flash.contains("no node serves it now"), "{flash}");
}
