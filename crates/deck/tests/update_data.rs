//! `update()` data handling: log merging, request rates, pull scheduling.

mod common;

use common::ch;
use infermesh_deck::api::{LogLine, RequestRecord};
use infermesh_deck::fixtures::{self, NOW_MS, SELF_ID};
use infermesh_deck::model::{rates, Conn, Via};
use infermesh_deck::update::PULL_EVERY_MS;
use infermesh_deck::{update, Cmd, Model, Msg};

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
fn merging_logs_from_several_nodes_sorts_and_dedupes() {
    let mut m = Model::new("127.0.0.1:7337");
    update(
        &mut m,
        Msg::Logs {
            node_id: "a".into(),
            lines: vec![
                line("a", 1, 100, "info", "a1"),
                line("a", 2, 300, "info", "a2"),
            ],
        },
    );
    update(
        &mut m,
        Msg::Logs {
            node_id: "b".into(),
            lines: vec![
                line("b", 1, 50, "info", "b1"),
                line("", 2, 200, "info", "b2"),
            ],
        },
    );
    // The same tail pulled again, plus one new line.
    update(
        &mut m,
        Msg::Logs {
            node_id: "a".into(),
            lines: vec![
                line("a", 1, 100, "info", "a1"),
                line("a", 2, 300, "info", "a2"),
                line("a", 3, 250, "info", "a3"),
            ],
        },
    );
    // Node a restarted: seq starts over, but it is a different line.
    update(
        &mut m,
        Msg::Log(line("a", 1, 400, "info", "a1-after-restart")),
    );
    let msgs: Vec<&str> = m.logs.lines().iter().map(|l| l.message.as_str()).collect();
    assert_eq!(msgs, vec!["b1", "a1", "b2", "a3", "a2", "a1-after-restart"]);
    assert_eq!(
        m.logs.lines()[2].node_id,
        "b",
        "a line without node_id takes its source"
    );
}

#[test]
fn log_store_is_bounded() {
    let mut m = Model::new("x");
    let cap = infermesh_deck::model::LOG_CAP;
    for chunk in 0..3 {
        let lines = (0..cap)
            .map(|i| {
                let n = (chunk * cap + i) as u64;
                line("a", n, n as i64, "info", "x")
            })
            .collect();
        update(
            &mut m,
            Msg::Logs {
                node_id: "a".into(),
                lines,
            },
        );
    }
    assert!(m.logs.lines().len() <= cap);
    assert_eq!(m.logs.lines().last().unwrap().seq, (3 * cap - 1) as u64);
}

#[test]
fn requests_per_second_counts_the_last_minute_per_model() {
    let rec = |id, at_ms, model: &str| RequestRecord {
        id,
        at_ms,
        model: model.into(),
        status: 200,
        ..RequestRecord::default()
    };
    let now = 1_000_000;
    let reqs = vec![
        rec(1, now - 61_000, "a"), // too old
        rec(2, now - 60_000, "a"), // exactly at the edge: outside
        rec(3, now - 59_999, "a"),
        rec(4, now - 1, "a"),
        rec(5, now, "a"),
        rec(6, now - 10, "b"),
        rec(7, now + 5_000, "a"), // from a clock ahead of ours: not yet
    ];
    let rps = |model| rates(&reqs, model, now).req_per_s;
    assert!((rps("a") - 3.0 / 60.0).abs() < 1e-9);
    assert!((rps("b") - 1.0 / 60.0).abs() < 1e-9);
    assert_eq!(rps("c"), 0.0);

    let mut m = fixtures::model(0, 0);
    update(&mut m, Msg::Requests(reqs.clone()));
    update(&mut m, Msg::Requests(reqs)); // same records again: no double count
    update(&mut m, Msg::Tick(now));
    let a = m
        .model_groups()
        .into_iter()
        .find(|g| g.model == "a")
        .unwrap();
    assert!((a.rps - 3.0 / 60.0).abs() < 1e-9);
}

#[test]
fn ticks_schedule_peer_log_pulls_and_onboarding_refresh() {
    let mut m = fixtures::model(3, 0);
    m.last_logs_fetch_ms = NOW_MS;
    assert_eq!(update(&mut m, Msg::Tick(NOW_MS + 100)), vec![]);
    let cmds = update(&mut m, Msg::Tick(NOW_MS + PULL_EVERY_MS));
    let [Cmd::FetchLogs(targets)] = cmds.as_slice() else {
        panic!("{cmds:?}")
    };
    assert_eq!(targets.len(), 3, "every peer, not the connected node");
    assert_eq!(targets[0].base, "http://127.0.0.1:40000");
    // One round at a time.
    assert_eq!(
        update(&mut m, Msg::Tick(NOW_MS + 3 * PULL_EVERY_MS)),
        vec![]
    );
    update(&mut m, Msg::LogsDone);
    assert_eq!(
        update(&mut m, Msg::Tick(NOW_MS + 4 * PULL_EVERY_MS)).len(),
        1
    );

    // Disconnected: no pulls, the screen keeps ticking.
    update(&mut m, Msg::LogsDone);
    update(
        &mut m,
        Msg::Disconnected {
            attempt: 1,
            error: "x".into(),
        },
    );
    assert_eq!(
        update(&mut m, Msg::Tick(NOW_MS + 9 * PULL_EVERY_MS)),
        vec![]
    );
    assert_eq!(m.now_ms, NOW_MS + 9 * PULL_EVERY_MS);
    update(&mut m, Msg::Connected(Via::Polling));
    assert_eq!(m.conn, Conn::Connected(Via::Polling));

    ch(&mut m, '3');
    update(
        &mut m,
        Msg::Admin {
            node_id: SELF_ID.into(),
            result: Ok(vec![]),
        },
    );
    let later = NOW_MS + 20 * PULL_EVERY_MS;
    let cmds = update(&mut m, Msg::Tick(later));
    assert!(
        cmds.iter().any(|c| matches!(c, Cmd::FetchAdmin(_))),
        "{cmds:?}"
    );
}

#[test]
fn peer_logs_failures_are_remembered_until_the_peer_answers() {
    let mut m = fixtures::model(1, 0);
    update(
        &mut m,
        Msg::LogsFailed {
            node_id: "peer0000".into(),
            error: "timed out".into(),
        },
    );
    assert_eq!(
        m.log_errors.get("peer0000").map(String::as_str),
        Some("timed out")
    );
    update(
        &mut m,
        Msg::Logs {
            node_id: "peer0000".into(),
            lines: vec![],
        },
    );
    assert!(m.log_errors.is_empty());
}
