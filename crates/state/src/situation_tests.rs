use super::*;
use crate::test_schedule::{at, G, NEXT};

fn timings() -> [(&'static str, Timing); 4] {
    [
        ("unknown", Timing::UNKNOWN),
        ("in round", at(G + 1)),
        ("4m", at(NEXT - 240_000)),
        ("far", at(NEXT - 8_100_000)),
    ]
}

const DUTIES: [Duty<'static>; 5] = [
    Duty::Standby,
    Duty::Loading,
    Duty::Serving,
    Duty::Unhealthy("connection refused"),
    Duty::Failed("file not found: /m.gguf"),
];
const SOURCES: [Source; 2] = [Source::CommandLine, Source::Config];

fn brief(
    id: &'static str,
    duty: Duty<'static>,
    source: Source,
    validated: bool,
) -> BackendBrief<'static> {
    BackendBrief {
        id,
        duty,
        source,
        validated,
    }
}

/// Every sentence a node can hand an operator must carry an action or a fact, never a
/// promise nothing keeps.
fn never_promises_a_test(msg: &str, ctx: &str) {
    assert!(!msg.contains("will be tested"), "{ctx}: {msg}");
    assert!(
        !msg.contains("  ") && !msg.ends_with('.') && !msg.is_empty(),
        "{ctx}: {msg}"
    );
}

#[test]
fn every_backend_situation_has_its_own_sentence() {
    for (label, t) in timings() {
        for duty in DUTIES {
            for source in SOURCES {
                for state in BackendState::ALL {
                    for p in Participation::ALL {
                        for validated in [false, true] {
                            let b = brief("gpu0", duty, source, validated);
                            let msg = backend_message(&b, state, p, &t);
                            let ctx =
                                format!("{label} {duty:?} {source:?} {state} {p} {validated}");
                            never_promises_a_test(&msg, &ctx);
                            match (state, duty) {
                                (BackendState::Testing, _) => {
                                    assert!(msg.starts_with("Testing now"), "{ctx}: {msg}")
                                }
                                (BackendState::TestFailed, _) => {
                                    assert!(msg.starts_with("Last test failed"), "{ctx}: {msg}")
                                }
                                (_, Duty::Failed(c)) => {
                                    assert!(msg.contains(&format!("failed: {c}")), "{ctx}: {msg}");
                                    assert!(!msg.contains("Loading"), "{ctx}: {msg}");
                                    assert!(!msg.contains("keep it online"), "{ctx}: {msg}");
                                }
                                (_, Duty::Unhealthy(c)) => {
                                    assert!(msg.contains(c) && msg.contains("gpu0"), "{ctx}: {msg}")
                                }
                                (_, Duty::Standby) => {
                                    let first = if validated { "Validated" } else { "Standby" };
                                    let want = format!("{first} — idle capacity");
                                    assert!(msg.starts_with(&want), "{ctx}: {msg}");
                                    assert!(!msg.contains("round"), "{ctx}: {msg}");
                                }
                                (BackendState::Waiting, Duty::Serving)
                                    if p == Participation::InactiveWaiting =>
                                {
                                    // What the node says of itself while it awaits a peer.
                                    assert_eq!(
                                        msg,
                                        onboarding_message_for(
                                            "gpu0",
                                            BackendState::Serving,
                                            p,
                                            &t,
                                            validated
                                        ),
                                        "{ctx}"
                                    );
                                    assert!(!msg.contains("Not yet validated"), "{ctx}: {msg}");
                                }
                                (_, Duty::Loading | Duty::Serving) => assert_eq!(
                                    msg,
                                    onboarding_message_for("gpu0", state, p, &t, validated),
                                    "{ctx}"
                                ),
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn failed_and_standby_sentences_name_the_command_that_exists() {
    assert_eq!(
        failed_message("embedded", "file not found", Source::CommandLine),
        "Backend embedded failed: file not found — fix the model file or the backend, then \
         restart `infermesh up`; requests go to peers meanwhile"
    );
    assert_eq!(
        failed_message("gpu0", "bad magic", Source::Config),
        "Backend gpu0 failed: bad magic — fix the model file or the backend, then apply it \
         again with `PUT /admin/v1/nodes/gpu0`; requests go to peers meanwhile"
    );
    assert_eq!(
        standby_message("embedded", Source::CommandLine, false),
        "Standby — idle capacity, no model assigned; to serve, declare a workload group \
         (`infermesh group set MODEL --replicas N`) and the mesh places it, or restart \
         `infermesh up` with `--model PATH.gguf` (and without `--standby`)"
    );
    assert_eq!(
        standby_message("gpu0", Source::Config, true),
        "Validated — idle capacity, no model assigned; to serve, set `serve` to one of its models \
         with `PUT /admin/v1/nodes/gpu0`"
    );
}

#[test]
fn node_is_validated_only_when_every_serving_backend_is() {
    // Exhaustive over two backends: each duty, each validation.
    for d1 in DUTIES {
        for d2 in DUTIES {
            for v1 in [false, true] {
                for v2 in [false, true] {
                    let bs = [
                        brief("a", d1, Source::Config, v1),
                        brief("b", d2, Source::Config, v2),
                    ];
                    let serving: Vec<bool> = bs
                        .iter()
                        .filter(|b| b.duty == Duty::Serving)
                        .map(|b| b.validated)
                        .collect();
                    let want = !serving.is_empty() && serving.iter().all(|v| *v);
                    assert_eq!(node_validated(&bs), want, "{bs:?}");
                }
            }
        }
    }
    assert!(!node_validated(&[]));
}

#[test]
fn one_validated_backend_does_not_make_the_node_safe_to_leave() {
    let far = at(NEXT - 8_100_000);
    let one_of_two = [
        brief("a", Duty::Serving, Source::Config, true),
        brief("b", Duty::Serving, Source::Config, false),
    ];
    let m = node_sentence(
        NodeState::Serving,
        Participation::InactiveWaiting,
        &far,
        &one_of_two,
    );
    assert!(!m.contains("safe to be offline"), "{m}");
    assert_eq!(m, crate::message::AWAITING_PEER_CHECK);
    let both = [
        brief("a", Duty::Serving, Source::Config, true),
        brief("b", Duty::Serving, Source::Config, true),
    ];
    let m = node_sentence(
        NodeState::Serving,
        Participation::InactiveWaiting,
        &far,
        &both,
    );
    assert!(m.contains("safe to be offline"), "{m}");
}

#[test]
fn every_node_situation_has_its_own_sentence() {
    for (label, t) in timings() {
        for d1 in DUTIES {
            for d2 in [
                None,
                Some(Duty::Loading),
                Some(Duty::Standby),
                Some(Duty::Serving),
            ] {
                for p in Participation::ALL {
                    let mut bs = vec![brief("a", d1, Source::CommandLine, true)];
                    bs.extend(d2.map(|d| brief("b", d, Source::Config, false)));
                    let facts = crate::node::NodeFacts {
                        backends: bs.len(),
                        model_assigned: bs.iter().any(|b| b.duty != Duty::Standby),
                        backend_loading: bs.iter().any(|b| b.duty == Duty::Loading),
                        backend_serving: bs.iter().any(|b| b.duty == Duty::Serving),
                        configured_client: false,
                        ..Default::default()
                    };
                    let state = crate::node::derive_node_state(facts);
                    let msg = node_sentence(state, p, &t, &bs);
                    let ctx = format!("{label} {bs:?} {state} {p}");
                    never_promises_a_test(&msg, &ctx);
                    let failed = bs.iter().any(|b| matches!(b.duty, Duty::Failed(_)));
                    let unhealthy = bs.iter().any(|b| matches!(b.duty, Duty::Unhealthy(_)));
                    match state {
                        NodeState::Loading if failed => {
                            assert!(msg.contains("failed: file not found"), "{ctx}: {msg}")
                        }
                        NodeState::Loading if unhealthy => {
                            assert!(msg.contains("stopped answering"), "{ctx}: {msg}")
                        }
                        NodeState::Loading => assert!(
                            msg.starts_with("Loading a model") || msg.starts_with("Round in"),
                            "{ctx}: {msg}"
                        ),
                        NodeState::Standby => {
                            assert!(msg.starts_with("Standby — idle capacity"), "{ctx}: {msg}");
                            // A registered backend can be assigned without a restart: say so.
                            if bs.iter().any(|b| b.source == Source::Config) {
                                assert!(msg.contains("PUT /admin/v1/nodes/b"), "{ctx}: {msg}");
                            }
                        }
                        NodeState::Serving => {
                            let safe = msg.contains("safe to be offline");
                            assert!(!safe || node_validated(&bs), "{ctx}: {msg}");
                            assert!(!msg.contains("failed"), "{ctx}: {msg}");
                        }
                        NodeState::Client => unreachable!("{ctx}"),
                    }
                }
            }
        }
    }
}

#[test]
fn only_failed_backend_node_is_loading_with_the_failure_sentence() {
    let bs = [brief(
        "embedded",
        Duty::Failed("no such file"),
        Source::CommandLine,
        false,
    )];
    let facts = crate::node::NodeFacts {
        backends: 1,
        model_assigned: true,
        ..Default::default()
    };
    let state = crate::node::derive_node_state(facts);
    assert_eq!(state, NodeState::Loading);
    for (label, t) in timings() {
        let m = node_sentence(state, Participation::InactiveWaiting, &t, &bs);
        assert_eq!(
            m,
            failed_message("embedded", "no such file", Source::CommandLine),
            "{label}"
        );
    }
}

#[test]
fn client_sentence_is_unchanged_by_backends() {
    let m = node_sentence(
        NodeState::Client,
        Participation::Active,
        &Timing::UNKNOWN,
        &[],
    );
    assert_eq!(m, "Client — routes requests, serves no models");
}

#[test]
fn peer_notice_table() {
    #[rustfmt::skip]
    let cases: [(bool, usize, usize, Option<&str>); 8] = [
        (false, 0, 0, None),
        (true, 0, 0, Some("restart it with `--join <TOKEN>`")),
        (false, 1, 0, Some("no member answered")),
        (true, 2, 0, Some("no member answered")),
        (false, 0, 1, None),
        (true, 0, 3, None),
        (false, 1, 1, None),
        (true, 1, 1, None),
    ];
    for (client, joins, peers, want) in cases {
        let got = peer_notice(client, joins, peers);
        match want {
            None => assert_eq!(got, None, "{client} {joins} {peers}"),
            Some(part) => {
                let m = got.unwrap_or_default();
                assert!(m.to_lowercase().starts_with(NO_PEER), "{m}");
                assert!(m.contains(part), "{m}");
            }
        }
    }
}
