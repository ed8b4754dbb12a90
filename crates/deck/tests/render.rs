//! Every tab rendered on a `TestBackend`, asserting on the text an operator would read.

mod common;

use common::{assert_hides, assert_shows, ch, key, screen, with_admin};
use crossterm::event::KeyCode;
use infermesh_deck::api::Peer;
use infermesh_deck::fixtures::{self, MESSAGE, NOW_MS, SELF_NAME, URL};
use infermesh_deck::model::Tab;
use infermesh_deck::{update, Model, Msg};

#[test]
fn header_shows_url_badge_message_census_and_connection() {
    let m = fixtures::model(8, 2);
    let s = screen(&m, 200, 60);
    assert_shows(&s, URL);
    assert_shows(&s, " serving ");
    assert_shows(&s, SELF_NAME);
    assert_shows(&s, MESSAGE);
    assert_shows(&s, "peers 8: 2 client · 2 standby · 2 loading · 2 serving");
    assert_shows(&s, "connected (live)");
    assert_hides(&s, "unknown");
}

#[test]
fn header_says_reconnecting_with_attempt_and_error_and_keeps_data() {
    let mut m = fixtures::model(3, 1);
    update(
        &mut m,
        Msg::Disconnected {
            attempt: 3,
            error: "Connection refused (os error 111)".into(),
        },
    );
    let s = screen(&m, 200, 60);
    assert_shows(
        &s,
        "reconnecting (attempt 3, Connection refused (os error 111))",
    );
    assert_shows(&s, "node-0000"); // the last known mesh stays on screen
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "reconnecting");
}

#[test]
fn a_lost_node_greys_the_view_says_since_when_and_stops_its_clocks() {
    use ratatui::style::Color;
    let mut m = fixtures::model(3, 0);
    with_admin(&mut m); // ONBOARDING: the round countdown
    let live = screen(&m, 160, 45);
    update(
        &mut m,
        Msg::Disconnected {
            attempt: 1,
            error: "Connection refused (os error 111)".into(),
        },
    );
    update(&mut m, Msg::Tick(NOW_MS + 65_000));
    update(
        &mut m,
        Msg::Disconnected {
            attempt: 2,
            error: "Connection refused (os error 111)".into(),
        },
    );
    let lost = screen(&m, 160, 45);
    let since = &infermesh_deck::fmt::hms(NOW_MS)[..8];
    assert_shows(&lost, &format!("unreachable since {since} UTC"));
    assert_shows(&lost, "reconnecting (attempt 2");
    // Clocks stopped at the loss: 65 s later every line below the connection line (countdowns,
    // ages) reads as it did when the node was last heard.
    let rows = |s: &str| s.lines().skip(1).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(
        rows(&live),
        rows(&lost),
        "the view moved after the node was lost"
    );
    // Greyed: no cell below the connection line keeps a state colour.
    let mut t = ratatui::Terminal::new(ratatui::backend::TestBackend::new(160, 45)).unwrap();
    t.draw(|f| infermesh_deck::render(&m, f)).unwrap();
    let buf = t.backend().buffer();
    for y in 1..44 {
        for x in 0..160 {
            let c = &buf[(x, y)];
            assert_eq!(c.fg, Color::DarkGray, "cell ({x},{y}) {:?}", c.symbol());
            assert_eq!(c.bg, Color::Reset, "cell ({x},{y}) {:?}", c.symbol());
        }
    }
    // Back: colours and clocks resume.
    update(&mut m, Msg::Connected(infermesh_deck::model::Via::Sse));
    let back = screen(&m, 160, 45);
    assert_hides(&back, "unreachable since");
    assert_ne!(rows(&live), rows(&back), "the countdown resumed");
}

#[test]
fn nodes_tab_lists_self_and_peers_with_badges_and_last_seen() {
    let m = fixtures::model(4, 0);
    let s = screen(&m, 200, 60);
    for name in [
        SELF_NAME,
        "node-0000",
        "node-0001",
        "node-0002",
        "node-0003",
    ] {
        assert_shows(&s, name);
    }
    for badge in [" serving ", " standby ", " loading ", " client  "] {
        assert_shows(&s, badge);
    }
    assert_shows(&s, "1s ago");
    assert_shows(&s, "2s ago");
    assert_shows(&s, "self");
    assert_shows(&s, "model-0");
    assert_shows(&s, "NAME▼");
}

#[test]
fn nodes_tab_empty_and_before_first_status() {
    let m = Model::new(URL);
    let s = screen(&m, 80, 24);
    assert_shows(&s, "connecting");
    assert_shows(&s, "Waiting for the node's first status");

    let alone = fixtures::model(0, 0);
    let s = screen(&alone, 80, 24);
    assert_shows(&s, "no peers yet");
    assert_shows(&s, SELF_NAME);
}

#[test]
fn unparseable_peer_state_renders_as_unknown() {
    let mut st = fixtures::status(1);
    st.peers.push(Peer {
        node_id: "weird".into(),
        name: "from-the-future".into(),
        state: Some("hibernating".into()),
        ..Peer::default()
    });
    let mut m = fixtures::model(0, 0);
    update(&mut m, Msg::Status(Box::new(st)));
    let s = screen(&m, 200, 60);
    assert_shows(&s, "from-the-future");
    assert_shows(&s, " unknown ");
    assert_shows(&s, "1 unknown");
}

#[test]
fn nodes_detail_pane_opens_on_enter() {
    let mut m = fixtures::model(4, 0);
    key(&mut m, KeyCode::Enter);
    let s = screen(&m, 200, 60);
    assert_shows(&s, "detail");
    assert_shows(&s, "participation");
    assert_shows(&s, "node id: self0000");
    assert_shows(&s, "participation: Active for this epoch");
    key(&mut m, KeyCode::Esc);
    assert_hides(&screen(&m, 200, 60), "node id: self0000");
}

#[test]
fn nodes_detail_names_a_split_part_with_the_hosts_name() {
    use infermesh_state::split_role::SplitClaim;
    let mut m = fixtures::model(4, 0);
    let status = m.status.as_mut().unwrap();
    let host_id = status.peers[0].node_id.clone();
    let host_name = status.peers[0].name.clone();
    status.split = Some(SplitClaim::Worker {
        model: "big-model".into(),
        host: host_id,
        first_layer: 18,
        last_layer: 29,
        ready: true,
    });
    key(&mut m, KeyCode::Enter);
    let s = screen(&m, 200, 60);
    assert_shows(
        &s,
        &format!("split: split worker: layers 18–29 of big-model for {host_name}"),
    );
}

#[test]
fn thousand_nodes_render_in_wide_and_narrow_terminals() {
    let mut m = fixtures::model(1_000, 2);
    let s = screen(&m, 200, 60);
    assert_shows(&s, "NODES (1001)");
    assert_shows(
        &s,
        "peers 1000: 250 client · 250 standby · 250 loading · 250 serving",
    );
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "box-self");
    assert_shows(&narrow, " serving ");
    // Jumping to the end shows the last node, on its page.
    ch(&mut m, 'G');
    let s = screen(&m, 80, 24);
    assert_shows(&s, "node-0999");
    assert_hides(&s, "node-0000");
    for t in ['2', '3', '4', '5', '6'] {
        ch(&mut m, t);
        screen(&m, 80, 24);
        screen(&m, 200, 60);
    }
}

#[test]
fn models_tab_shows_groups_capacity_and_rate() {
    let mut m = fixtures::model(8, 0);
    ch(&mut m, '2');
    let s = screen(&m, 200, 60);
    assert_shows(&s, "SmolLM2-135M-Instruct");
    assert_shows(&s, "model-0");
    // node-0000 serves model-0 and node-0002 loads model-2 ... (states cycle by index).
    assert_shows(&s, "node-0000");
    assert_shows(&s, "1/1");
    // 40 fixture requests for model-0 every 0.5 s: 40 in the last 60 s → 0.67/s.
    assert_shows(&s, "0.67");
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "model-0");
}

#[test]
fn models_tab_shows_a_declared_group_even_before_any_replica() {
    let mut m = fixtures::model(8, 0);
    if let Some(s) = m.status.as_mut() {
        s.groups = vec![
            infermesh_deck::api::GroupView {
                model: "model-0".into(),
                wanted: 3,
                serving: 1,
                loading: 1,
                min: 2,
                max: 3,
                sentence: "1 of 3 replicas serving; node-0004 loading".into(),
            },
            infermesh_deck::api::GroupView {
                model: "planned-model".into(),
                wanted: 2,
                min: 2,
                max: 2,
                sentence: "0 of 2 replicas serving".into(),
                ..Default::default()
            },
        ];
    }
    ch(&mut m, '2');
    let s = screen(&m, 200, 60);
    assert_shows(&s, "1 of 3 replicas serving; node-0004 loading");
    assert_shows(&s, "1/3");
    assert_shows(&s, "planned-model");
    assert_shows(&s, "0 of 2 replicas serving");
    assert_shows(&s, "0/2");
}

#[test]
fn migrate_modal_states_the_blast_radius_then_models_shows_progress() {
    let mut m = fixtures::model(8, 0);
    ch(&mut m, '2');
    ch(&mut m, 'j'); // model-0: node-0000 serves it, node-0001 and node-0005 are standby
    ch(&mut m, 'm');
    for (w, h) in [(160, 45), (80, 24)] {
        let s = screen(&m, w, h);
        assert_shows(&s, " confirm ");
        // Words wrap at a narrow width: check what fits on one line at either width.
        assert_shows(&s, "node-0001 loads model-0");
        assert_shows(&s, "admission check");
        assert_shows(&s, "node-0000 drains: its 0 requests");
        assert_shows(&s, "source 1/1 · target 1/2");
        assert_shows(&s, "y signs and sends");
    }
    let wide = screen(&m, 160, 45);
    assert_shows(&wide, "Migrate model-0 from node-0000 to node-0001. [y/N]");
    assert_shows(
        &wide,
        "model-0 has 1 serving replica now and keeps 1 through the move.",
    );
    ch(&mut m, 'y');
    let s = screen(&m, 160, 45);
    assert_hides(&s, " confirm ");
    assert_shows(
        &s,
        "migrating node-0000 → node-0001 (0 s): asking node-0001 to start model-0",
    );
    update(
        &mut m,
        Msg::Migration(infermesh_deck::migrate::Step::Loading),
    );
    update(&mut m, Msg::Tick(NOW_MS + 3_000));
    let s = screen(&m, 160, 45);
    assert_shows(
        &s,
        "migrating node-0000 → node-0001 (3 s): 1/3 node-0001 is loading model-0",
    );
    update(
        &mut m,
        Msg::MigrationDone(Err("node-0001 refused: HTTP 401".into())),
    );
    let s = screen(&m, 160, 45);
    assert_shows(
        &s,
        "migration of model-0 stopped: node-0001 refused: HTTP 401",
    );
    let help = {
        ch(&mut m, '?');
        screen(&m, 160, 45)
    };
    assert_shows(
        &help,
        "MODELS: migrate the selected model to a standby node (asks)",
    );
}

#[test]
fn models_tab_empty() {
    let mut m = Model::new(URL);
    ch(&mut m, '2');
    assert_shows(&screen(&m, 80, 24), "No models");
}

#[test]
fn onboarding_tab_shows_state_sentence_countdown_and_schedule_syncing() {
    let mut m = fixtures::model(2, 0);
    with_admin(&mut m);
    let s = screen(&m, 200, 60);
    assert_shows(&s, "ONBOARDING — node box-self");
    assert_shows(&s, "embedded");
    assert_shows(&s, "gpu-llama");
    assert_shows(&s, "serving");
    assert_shows(&s, "waiting");
    assert_shows(&s, "in 2h 15m");
    assert_shows(&s, "schedule syncing");
    assert_hides(&s, "in 0s");
    assert_shows(
        &s,
        "Validated — safe to be offline until the next round (starts in 2h 15m)",
    );
    assert_shows(&s, "pass 217ms");
    // Participation and backend state as a human reads them, never the wire words.
    assert_shows(&s, "Inactive — waiting for round");
    assert_hides(&s, "inactive_waiting");
    assert_hides(&s, "inactive waiting");
    // Last test timings of the selected backend.
    assert_shows(&s, "LOAD ms");
    assert_shows(&s, "120");
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "schedule syncing");
    // Second backend: its own sentence, rendered as the node gave it.
    ch(&mut m, 'j');
    let s = screen(&m, 200, 60);
    assert_shows(&s, "Schedule syncing");
    assert_shows(&s, "never tested here");
}

#[test]
fn onboarding_confirm_modal_then_spinner_then_result_table() {
    let mut m = fixtures::model(2, 0);
    with_admin(&mut m);
    // The serving backend is not offered a test: the footer says why.
    ch(&mut m, 't');
    assert_shows(
        &screen(&m, 200, 60),
        "backend embedded serves SmolLM2-135M-Instruct now",
    );
    ch(&mut m, 'j');
    ch(&mut m, 't');
    let s = screen(&m, 200, 60);
    assert_shows(
        &s,
        "Run a test of backend gpu-llama on node box-self: loads each model, one inference, stops it. [y/N]",
    );
    assert_shows(&s, "It loads 1 model (llama-8b) into memory in turn");
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "[y/N]");
    ch(&mut m, 'y');
    let s = screen(&m, 200, 60);
    assert_shows(&s, "testing… backend gpu-llama on node box-self");
    update(
        &mut m,
        Msg::TestDone {
            node_id: fixtures::SELF_ID.into(),
            backend_id: "gpu-llama".into(),
            result: Ok(serde_json::from_str(
                r#"{"ok": false, "backend_id": "gpu-llama", "models": [
                    {"model": "a", "load_ms": 120, "health_ms": 2, "infer_ms": 95, "error": null},
                    {"model": "b", "load_ms": 0, "health_ms": 0, "infer_ms": 0, "error": "load failed: file not found"}],
                   "failing_model": "b"}"#,
            )
            .unwrap()),
        },
    );
    let s = screen(&m, 200, 60);
    assert_shows(&s, "FAILED");
    assert_shows(&s, "load failed: file not found");
    assert_shows(&s, "INFER ms");
}

#[test]
fn onboarding_next_round_column_holds_a_running_rounds_countdown_whole() {
    let mut m = fixtures::model(1, 0);
    ch(&mut m, '3');
    let node_id = m.onboarding.node_id.clone().unwrap();
    let mut nodes = fixtures::admin_nodes();
    if let Some(o) = nodes[0].onboarding.as_mut() {
        o.timing.in_round = true;
        o.timing.round_ends_at_ms = Some(NOW_MS + (23 * 3_600 + 59 * 60) * 1_000);
    }
    update(
        &mut m,
        Msg::Admin {
            node_id,
            result: Ok(nodes),
        },
    );
    assert_shows(&screen(&m, 160, 45), "running, ends in 23h 59m");
}

#[test]
fn onboarding_errors_and_client_nodes_are_explained() {
    let mut m = fixtures::model(1, 0);
    ch(&mut m, '3');
    let id = m.onboarding.node_id.clone().unwrap();
    update(
        &mut m,
        Msg::Admin {
            node_id: id.clone(),
            result: Err("HTTP 401: bad signature".into()),
        },
    );
    assert_shows(
        &screen(&m, 80, 24),
        "cannot read backends: HTTP 401: bad signature",
    );
    update(
        &mut m,
        Msg::Admin {
            node_id: id,
            result: Ok(Vec::new()),
        },
    );
    assert_shows(&screen(&m, 200, 60), "This node has no backends");
}

#[test]
fn logs_tab_merges_nodes_and_shows_filters() {
    let mut m = fixtures::model(3, 3);
    ch(&mut m, '4');
    let s = screen(&m, 200, 60);
    assert_shows(&s, "LOGS — following · node all · level ≥ all");
    assert_shows(&s, "12/12 lines");
    assert_shows(&s, "box-self");
    assert_shows(&s, "node-0002");
    assert_shows(&s, "line 2 from peer0001");
    assert_shows(&s, "ERROR");
    ch(&mut m, 'p');
    assert_shows(&screen(&m, 200, 60), "PAUSED");
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "LOGS");
}

#[test]
fn logs_tab_empty_and_no_match() {
    let mut m = fixtures::model(2, 0);
    ch(&mut m, '4');
    assert_shows(&screen(&m, 80, 24), "No log lines yet");
    let mut m = fixtures::model(2, 2);
    ch(&mut m, '4');
    ch(&mut m, '/');
    for c in "zzz".chars() {
        ch(&mut m, c);
    }
    assert_shows(&screen(&m, 80, 24), "search: zzz");
    key(&mut m, KeyCode::Enter);
    let s = screen(&m, 80, 24);
    assert_shows(&s, "No lines match the filters");
}

#[test]
fn logs_tab_thousand_nodes_follow_shows_newest() {
    let mut m = fixtures::model(1_000, 5);
    ch(&mut m, '4');
    let s = screen(&m, 200, 60);
    // The newest line of the fixture is line 4 of the last node.
    assert_shows(&s, "line 4 from peer0999");
    assert_shows(&s, "5005/5005 lines");
}

#[test]
fn requests_tab_shows_tail_and_sparkline() {
    let mut m = fixtures::model(12, 0);
    ch(&mut m, '5');
    let s = screen(&m, 200, 60);
    assert_shows(&s, "box-self → node-0000");
    assert_shows(&s, "model-0");
    assert_shows(&s, "200");
    assert_shows(&s, "ms");
    assert_shows(&s, "latency, last 40 requests");
    assert!(
        s.chars().any(|c| "▁▂▃▄▅▆▇█".contains(c)),
        "sparkline bars:\n{s}"
    );
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "REQUESTS");

    let mut empty = Model::new(URL);
    ch(&mut empty, '5');
    assert_shows(&screen(&empty, 80, 24), "No routed requests yet");
}

#[test]
fn requests_without_a_replica_say_so() {
    let mut m = fixtures::model(1, 0);
    let mut r = fixtures::requests(1).remove(0);
    r.id = 999;
    r.at_ms = NOW_MS;
    r.to = None;
    r.to_name = None;
    r.status = 503;
    r.error = Some("no serving replica for model-x".into());
    update(&mut m, Msg::Request(r));
    ch(&mut m, '5');
    let s = screen(&m, 200, 60);
    assert_shows(&s, "no replica");
    assert_shows(&s, "503");
    assert_shows(&s, "no serving replica for model-x");
}

#[test]
fn wakeable_tab_lists_capacity_or_explains() {
    let mut m = fixtures::model(1, 0);
    ch(&mut m, '6');
    let s = screen(&m, 200, 60);
    assert_shows(
        &s,
        "No wakeable capacity configured. Declare [[wakeable]] entries in the node",
    );
    assert_shows(&s, "never routed to.");
    let narrow = screen(&m, 80, 24);
    assert_shows(&narrow, "No wakeable capacity configured.");

    let mut st = fixtures::status(1);
    st.wakeable = fixtures::wakeable();
    update(&mut m, Msg::Status(Box::new(st)));
    let s = screen(&m, 200, 60);
    assert_shows(&s, "gpu-7");
    assert_shows(&s, "example");
    assert_shows(&s, "llama-70b");
    assert_shows(&s, "80.0G");
    assert_shows(&s, "suspended");
}

#[test]
fn help_overlay_lists_keys_and_footer_hints_follow_tab() {
    let mut m = fixtures::model(1, 0);
    assert_shows(&screen(&m, 100, 30), "s sort");
    ch(&mut m, '?');
    let s = screen(&m, 100, 30);
    assert_shows(&s, "LOGS: pause / resume following");
    assert_shows(&s, "quit");
    ch(&mut m, 'x');
    assert!(!m.help);
    ch(&mut m, '4');
    assert_shows(&screen(&m, 100, 30), "e export");
}

#[test]
fn export_flash_says_where() {
    let mut m = fixtures::model(1, 1);
    m.tab = Tab::Logs;
    update(
        &mut m,
        Msg::Exported(Ok(("/tmp/infermesh-deck-logs-x.txt".into(), 2))),
    );
    assert_shows(
        &screen(&m, 100, 24),
        "exported 2 lines to /tmp/infermesh-deck-logs-x.txt",
    );
}

#[test]
fn header_shows_the_no_peer_notice_beside_the_message() {
    let mut st = fixtures::status(0);
    let notice = infermesh_state::peer_notice(false, 1, 0).expect("a --join node alone");
    st.peer_message = Some(notice.clone());
    let mut m = fixtures::model(0, 0);
    update(&mut m, Msg::Status(Box::new(st)));
    let s = screen(&m, 400, 60);
    assert_shows(&s, MESSAGE);
    assert_shows(&s, "Not connected to any peer");
    // A client whose message already is the notice shows it once.
    let mut st = fixtures::status(0);
    st.message = Some(notice.clone());
    st.peer_message = Some(notice);
    update(&mut m, Msg::Status(Box::new(st)));
    let s = screen(&m, 400, 60);
    assert_eq!(s.matches("Not connected to any peer").count(), 1, "{s}");
}
