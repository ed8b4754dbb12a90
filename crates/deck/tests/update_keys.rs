//! `update()` key handling: tabs, sort, filters, follow/pause, search, export, confirm modal.

mod common;

use common::{ch, endpoint, key, on_model};
use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use infermesh_deck::api::LogLine;
use infermesh_deck::fixtures::{self, NOW_MS, SELF_ID};
use infermesh_deck::migrate::{Outcome, Step};
use infermesh_deck::model::{Confirm, Level, SortCol, Tab, TestRun};
use infermesh_deck::update::Target;
use infermesh_deck::{update, Cmd, Msg};

fn line(node: &str, seq: u64, at_ms: i64, level: &str, msg: &str) -> LogLine {
    LogLine {
        seq,
        at_ms,
        node_id: node.into(),
        level: level.into(),
        target: "t".into(),
        message: msg.into(),
    }
}

#[test]
fn number_keys_tab_and_arrows_switch_tabs() {
    let mut m = fixtures::model(2, 0);
    ch(&mut m, '4');
    assert_eq!(m.tab, Tab::Logs);
    key(&mut m, KeyCode::Tab);
    assert_eq!(m.tab, Tab::Requests);
    key(&mut m, KeyCode::Right);
    assert_eq!(m.tab, Tab::Wakeable);
    key(&mut m, KeyCode::Right);
    assert_eq!(m.tab, Tab::Topology);
    key(&mut m, KeyCode::Right);
    assert_eq!(m.tab, Tab::Nodes, "wraps around");
    key(&mut m, KeyCode::BackTab);
    assert_eq!(m.tab, Tab::Topology);
    key(&mut m, KeyCode::Left);
    assert_eq!(m.tab, Tab::Wakeable);
    for (c, t) in ['1', '2', '3', '4', '5', '6', '7']
        .into_iter()
        .zip(Tab::ALL)
    {
        ch(&mut m, c);
        assert_eq!(m.tab, t);
    }
}

#[test]
fn q_and_ctrl_c_quit_esc_only_closes_panes() {
    let mut m = fixtures::model(1, 0);
    assert_eq!(ch(&mut m, 'q'), vec![Cmd::Quit]);
    key(&mut m, KeyCode::Enter);
    assert!(m.detail);
    assert_eq!(key(&mut m, KeyCode::Esc), vec![]);
    assert!(!m.detail);
    assert_eq!(key(&mut m, KeyCode::Esc), vec![], "Esc never quits");
    let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
    assert_eq!(update(&mut m, Msg::Key(ctrl_c)), vec![Cmd::Quit]);
    let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
    release.kind = KeyEventKind::Release;
    assert_eq!(
        update(&mut m, Msg::Key(release)),
        vec![],
        "key releases are ignored"
    );
}

#[test]
fn sort_cycles_and_selection_follows_the_node() {
    let mut m = fixtures::model(8, 0);
    ch(&mut m, 'j');
    ch(&mut m, 'j');
    let picked = m.selected_node.clone().unwrap();
    assert_eq!(picked, "peer0001");
    let mut seen = vec![m.sort];
    for _ in 0..SortCol::ALL.len() {
        ch(&mut m, 's');
        seen.push(m.sort);
        let rows = m.node_rows();
        assert_eq!(rows[m.selected_index(&rows)].node_id, picked);
    }
    assert_eq!(seen.first(), seen.last(), "cycles back to NAME");
    assert_eq!(&seen[..6], &SortCol::ALL);

    m.sort = SortCol::State;
    let rows = m.node_rows();
    assert_eq!(rows[0].state.unwrap().as_str(), "serving");
    assert_eq!(rows.last().unwrap().state.unwrap().as_str(), "client");
    m.sort = SortCol::LastSeen;
    let rows = m.node_rows();
    assert_eq!(rows.last().unwrap().node_id, SELF_ID, "self is seen now");
    ch(&mut m, 'G');
    assert_eq!(m.selected_node.as_deref(), Some(SELF_ID));
    ch(&mut m, 'g');
    assert_eq!(m.selected_index(&m.node_rows()), 0);
}

#[test]
fn l_on_nodes_jumps_to_logs_filtered_on_the_selected_node() {
    let mut m = fixtures::model(3, 2);
    ch(&mut m, 'j');
    ch(&mut m, 'l');
    assert_eq!(m.tab, Tab::Logs);
    assert_eq!(m.logs_view.node_filter.as_deref(), Some("peer0000"));
    let vis = m.visible_logs();
    assert_eq!(vis.len(), 2);
    assert!(vis.iter().all(|&i| m.logs.lines()[i].node_id == "peer0000"));
}

#[test]
fn f_cycles_node_filter_by_name_and_back_to_all() {
    let mut m = fixtures::model(2, 1);
    ch(&mut m, '4');
    let mut got = Vec::new();
    for _ in 0..4 {
        ch(&mut m, 'f');
        got.push(m.logs_view.node_filter.clone());
    }
    assert_eq!(
        got,
        vec![
            Some(SELF_ID.to_string()), // box-self
            Some("peer0000".into()),   // node-0000
            Some("peer0001".into()),   // node-0001
            None,
        ]
    );
}

#[test]
fn v_cycles_min_level_and_filters() {
    let mut m = fixtures::model(0, 0);
    update(
        &mut m,
        Msg::Logs {
            node_id: SELF_ID.into(),
            lines: ["trace", "debug", "info", "warn", "error", "shouty"]
                .iter()
                .enumerate()
                .map(|(i, l)| line(SELF_ID, i as u64, NOW_MS + i as i64, l, l))
                .collect(),
        },
    );
    ch(&mut m, '4');
    let mut counts = vec![m.visible_logs().len()];
    let mut levels = vec![m.logs_view.min_level];
    for _ in 0..5 {
        ch(&mut m, 'v');
        counts.push(m.visible_logs().len());
        levels.push(m.logs_view.min_level);
    }
    // An unknown level word counts as info: never hidden by a filter nobody asked for.
    assert_eq!(counts, vec![6, 5, 4, 2, 1, 6]);
    assert_eq!(
        levels,
        vec![
            None,
            Some(Level::Debug),
            Some(Level::Info),
            Some(Level::Warn),
            Some(Level::Error),
            None
        ]
    );
}

#[test]
fn follow_pause_and_scrollback() {
    let mut m = fixtures::model(0, 100);
    update(&mut m, Msg::Resize(80, 24)); // 17 body rows
    ch(&mut m, '4');
    assert!(m.logs_view.follow);
    ch(&mut m, 'p');
    assert!(!m.logs_view.follow);
    assert_eq!(
        m.logs_view.top,
        100 - 17,
        "pausing freezes the current view"
    );
    // New lines while paused do not move the view.
    update(
        &mut m,
        Msg::Log(line(SELF_ID, 1_000, NOW_MS, "info", "late")),
    );
    assert_eq!(m.log_top(101, 17), 83);
    ch(&mut m, 'k');
    assert_eq!(m.logs_view.top, 82);
    key(&mut m, KeyCode::PageUp);
    assert_eq!(m.logs_view.top, 65);
    ch(&mut m, 'g');
    assert_eq!(m.logs_view.top, 0);
    key(&mut m, KeyCode::PageDown);
    assert_eq!(m.logs_view.top, 17);
    ch(&mut m, 'G');
    assert!(m.logs_view.follow);
    ch(&mut m, 'p');
    ch(&mut m, 'p');
    assert!(m.logs_view.follow, "p resumes");
    ch(&mut m, 'j');
    assert!(!m.logs_view.follow, "scrolling pauses the tail");
}

#[test]
fn search_input_captures_keys_until_enter_or_esc() {
    let mut m = fixtures::model(1, 3);
    ch(&mut m, '4');
    ch(&mut m, '/');
    for c in "LINE 1 q".chars() {
        assert_eq!(ch(&mut m, c), vec![], "typing q in search must not quit");
    }
    key(&mut m, KeyCode::Backspace);
    key(&mut m, KeyCode::Backspace);
    assert_eq!(
        m.tab,
        Tab::Logs,
        "digits typed into search do not switch tabs"
    );
    key(&mut m, KeyCode::Enter);
    assert_eq!(m.logs_view.search, "LINE 1");
    assert_eq!(m.visible_logs().len(), 2, "case-insensitive, one per node");
    ch(&mut m, '/');
    ch(&mut m, 'x');
    assert_eq!(
        key(&mut m, KeyCode::Esc),
        vec![],
        "Esc cancels the edit, not the deck"
    );
    assert_eq!(m.logs_view.search, "LINE 1");
}

#[test]
fn e_exports_the_filtered_lines_to_a_timestamped_file() {
    let mut m = fixtures::model(2, 2);
    ch(&mut m, '4');
    ch(&mut m, 'f'); // box-self only
    let cmds = ch(&mut m, 'e');
    let [Cmd::Export {
        path,
        contents,
        lines,
    }] = cmds.as_slice()
    else {
        panic!("expected one export, got {cmds:?}");
    };
    assert_eq!(*lines, 2);
    assert_eq!(
        path.to_str().unwrap(),
        format!(
            "./infermesh-deck-logs-{}.txt",
            infermesh_deck::fmt::file_stamp(NOW_MS)
        )
    );
    assert_eq!(contents.lines().count(), 2);
    assert!(
        contents.lines().all(|l| l.contains(" box-self ")),
        "{contents}"
    );
    assert!(contents.starts_with("2026-"), "{contents}");
}

#[test]
fn confirm_modal_posts_only_on_y() {
    let mut m = fixtures::model(2, 0);
    let cmds = ch(&mut m, '3');
    assert_eq!(
        cmds,
        vec![Cmd::FetchAdmin(Target {
            node_id: SELF_ID.into(),
            base: fixtures::URL.into()
        })]
    );
    update(
        &mut m,
        Msg::Admin {
            node_id: SELF_ID.into(),
            result: Ok(fixtures::admin_nodes()),
        },
    );
    // The first backend serves: the node would refuse its test (409), so the deck says so and
    // asks nothing.
    assert_eq!(ch(&mut m, 't'), vec![]);
    assert!(m.confirm.is_none());
    let flash = &m.flash.as_ref().unwrap().0;
    assert!(
        flash.contains("backend embedded serves SmolLM2-135M-Instruct now")
            && flash.contains("409"),
        "{flash}"
    );
    ch(&mut m, 'j');
    for no in [
        KeyCode::Char('n'),
        KeyCode::Char('N'),
        KeyCode::Esc,
        KeyCode::Enter,
        KeyCode::Char('q'),
    ] {
        assert_eq!(ch(&mut m, 't'), vec![]);
        assert!(m.confirm.is_some());
        assert_eq!(
            key(&mut m, no),
            vec![],
            "{no:?} must send nothing (and not quit)"
        );
        assert!(m.confirm.is_none());
        assert!(m.onboarding.test.is_none());
    }
    ch(&mut m, 't');
    let Some(Confirm::Test(t)) = &m.confirm else {
        panic!("{:?}", m.confirm)
    };
    assert_eq!(t.backend_id, "gpu-llama");
    assert_eq!(t.models, ["llama-8b"]);
    assert_eq!(t.others_serve, ["SmolLM2-135M-Instruct"]);
    assert_eq!(t.in_flight, 1);
    let lines = m.confirm.as_ref().unwrap().lines().join("\n");
    assert!(
        lines.contains("It loads 1 model (llama-8b) into memory in turn"),
        "{lines}"
    );
    assert!(
        lines.contains("box-self keeps serving SmolLM2-135M-Instruct from its other backends"),
        "{lines}"
    );
    assert!(
        lines.contains("1 request in flight there are not touched"),
        "{lines}"
    );
    let cmds = ch(&mut m, 'y');
    assert_eq!(
        cmds,
        vec![Cmd::PostTest {
            target: Target {
                node_id: SELF_ID.into(),
                base: fixtures::URL.into()
            },
            backend_id: "gpu-llama".into()
        }]
    );
    assert!(matches!(m.onboarding.test, Some(TestRun::Running { .. })));
    assert_eq!(ch(&mut m, 't'), vec![], "no second test while one runs");
    assert!(m.confirm.is_none());
    assert!(m.flash.is_some());
    update(
        &mut m,
        Msg::TestDone {
            node_id: SELF_ID.into(),
            backend_id: "gpu-llama".into(),
            result: Err("HTTP 409: backend is serving".into()),
        },
    );
    assert!(
        matches!(m.onboarding.test, Some(TestRun::Failed { ref error, .. }) if error.contains("409"))
    );
}

#[test]
fn onboarding_targets_the_node_selected_on_nodes() {
    let mut m = fixtures::model(3, 0);
    ch(&mut m, 'j'); // node-0000
    let cmds = ch(&mut m, '3');
    assert_eq!(
        cmds,
        vec![Cmd::FetchAdmin(Target {
            node_id: "peer0000".into(),
            base: "http://127.0.0.1:40000".into()
        })]
    );
    // A late answer for another node is not shown under this one.
    update(
        &mut m,
        Msg::Admin {
            node_id: SELF_ID.into(),
            result: Ok(fixtures::admin_nodes()),
        },
    );
    assert!(m.onboarding.backends.is_empty());
}

#[test]
fn migrate_asks_with_the_blast_radius_and_sends_only_on_y() {
    // 8 peers: serving node-0000 (model-0, 0 in flight) and node-0004 (model-4, 0 in flight);
    // standby node-0001 and node-0005.
    let mut m = fixtures::model(8, 0);
    on_model(&mut m, "model-0");
    for no in [
        KeyCode::Char('n'),
        KeyCode::Esc,
        KeyCode::Enter,
        KeyCode::Char('q'),
    ] {
        assert_eq!(ch(&mut m, 'm'), vec![]);
        let Some(Confirm::Migrate(c)) = &m.confirm else {
            panic!("{:?}", m.confirm)
        };
        assert_eq!(c.model, "model-0");
        assert_eq!(c.source().node, endpoint(0));
        assert_eq!(c.target().node, endpoint(1));
        assert_eq!(
            key(&mut m, no),
            vec![],
            "{no:?} must send nothing (and not quit)"
        );
        assert!(m.confirm.is_none());
        assert!(m.migration.is_none());
    }
    ch(&mut m, 'm');
    let lines = m.confirm.as_ref().unwrap().lines().join("\n");
    assert!(
        lines.contains("Migrate model-0 from node-0000 to node-0001"),
        "{lines}"
    );
    assert!(
        lines.contains("node-0001 loads model-0 and must pass its peers' admission check"),
        "{lines}"
    );
    assert!(
        lines.contains("node-0000 drains: its 0 requests in flight finish"),
        "{lines}"
    );
    assert!(
        lines.contains("node-0000 then serves nothing and is standby"),
        "{lines}"
    );
    assert!(
        lines.contains("model-0 has 1 serving replica now and keeps 1 through the move"),
        "{lines}"
    );
    // ↓ picks the other standby node; the modal stays open and still sends nothing.
    assert_eq!(key(&mut m, KeyCode::Down), vec![]);
    let Some(Confirm::Migrate(c)) = &m.confirm else {
        panic!("the arrows keep the modal open")
    };
    assert_eq!(c.target().node, endpoint(5));
    // ← with one source wraps onto itself.
    key(&mut m, KeyCode::Left);
    let cmds = ch(&mut m, 'y');
    assert_eq!(
        cmds,
        vec![Cmd::Migrate {
            model: "model-0".into(),
            from: endpoint(0),
            to: endpoint(5),
        }]
    );
    assert!(m.confirm.is_none());
    assert_eq!(
        ch(&mut m, 'm'),
        vec![],
        "no second migration while one runs"
    );
    assert!(m.confirm.is_none());
    assert!(m.flash.as_ref().unwrap().0.contains("already running"));

    update(&mut m, Msg::Migration(Step::Loading));
    assert_eq!(
        m.migration.as_ref().unwrap().line,
        "1/3 node-0005 is loading model-0"
    );
    update(&mut m, Msg::Migration(Step::Admitted(2.5)));
    assert!(m
        .migration
        .as_ref()
        .unwrap()
        .line
        .starts_with("2/3 node-0005 serves model-0 and node-0000 admitted it (2.5 s)"));
    update(
        &mut m,
        Msg::MigrationDone(Ok(Outcome {
            finished: 3,
            cut_off: 0,
            secs: 4.25,
        })),
    );
    let run = m.migration.as_ref().unwrap();
    assert_eq!(run.result, Some(Ok(())));
    assert_eq!(
        run.line,
        "3/3 model-0 moved from node-0000 to node-0005 in 4.2 s (3 requests finished on node-0000, 0 cut off)"
    );
    // Once it ended, another may start.
    ch(&mut m, 'm');
    assert!(matches!(m.confirm, Some(Confirm::Migrate(_))));
}

#[test]
fn migrate_refuses_up_front_when_nothing_can_move() {
    // 1 peer (serving model-0): no standby node anywhere.
    let mut m = fixtures::model(1, 0);
    on_model(&mut m, "model-0");
    assert_eq!(ch(&mut m, 'm'), vec![]);
    assert!(m.confirm.is_none());
    let flash = &m.flash.as_ref().unwrap().0;
    assert!(flash.contains("no standby node to move it to"), "{flash}");
    assert!(flash.contains("infermesh up --standby --join"), "{flash}");
    // A model only requests name (no replica): nothing to move.
    let mut m = fixtures::model(8, 0);
    update(
        &mut m,
        Msg::MigrationDone(Err("ignored: no migration started".into())),
    );
    assert!(m.migration.is_none());
    on_model(&mut m, "model-2");
    ch(&mut m, 'm');
    let flash = &m.flash.as_ref().unwrap().0;
    assert!(flash.contains("no node serves it now"), "{flash}");
}

#[test]
fn wake_asks_with_what_it_costs_and_sends_only_on_y() {
    let mut m = fixtures::model(1, 0);
    let mut st = fixtures::status(1);
    st.wakeable = fixtures::wakeable();
    update(&mut m, Msg::Status(Box::new(st.clone())));
    ch(&mut m, '6');
    assert_eq!(ch(&mut m, 'w'), vec![]);
    let lines = m.confirm.as_ref().expect("a confirm").lines().join("\n");
    assert!(
        lines.contains("Wake gpu-7 (example, 80.0G) through node box-self. [y/N]"),
        "{lines}"
    );
    assert!(
        lines.contains("joins the mesh as gpu-7 and serves llama-70b once its peers admit it"),
        "{lines}"
    );
    assert!(
        lines.contains("Nothing that serves now is touched"),
        "{lines}"
    );
    assert_eq!(
        key(&mut m, KeyCode::Esc),
        vec![],
        "Esc cancels, sends nothing"
    );
    assert!(m.confirm.is_none());
    ch(&mut m, 'w');
    assert_eq!(
        ch(&mut m, 'y'),
        vec![Cmd::Wake {
            target: Target {
                node_id: SELF_ID.into(),
                base: fixtures::URL.into()
            },
            id: "gpu-7".into()
        }]
    );
    update(
        &mut m,
        Msg::WakeDone {
            id: "gpu-7".into(),
            result: Err("HTTP 401: bad signature".into()),
        },
    );
    assert_eq!(
        m.flash.as_ref().unwrap().0,
        "wake of gpu-7 refused: HTTP 401: bad signature"
    );
    // An entry already waking is not offered again: the node would answer 409.
    st.wakeable[0].state = Some("waking".into());
    update(&mut m, Msg::Status(Box::new(st)));
    assert_eq!(ch(&mut m, 'w'), vec![]);
    assert!(m.confirm.is_none());
    assert!(m
        .flash
        .as_ref()
        .unwrap()
        .0
        .contains("gpu-7 is waking already"));
}
