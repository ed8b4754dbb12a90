//! The one human sentence per situation, shared by API, logs, deck and dashboard so an operator
//! reads the same instruction everywhere.
//!
//! Order of precedence, most urgent first: what the backend is doing right now (testing, a failed
//! test to fix), then a running round, then an unknown schedule, then the alert lead, and only
//! then the relaxed "safe to be offline" / "will be tested" sentences.

use crate::backend_state::BackendState;
use crate::node::NodeState;
use crate::participation::Participation;
use crate::timing::{format_clock_utc, format_duration, Timing};

const ROUND_IN_PROGRESS: &str = "Round in progress — must be online";
const SCHEDULE_SYNCING: &str = "Schedule syncing — nothing to do yet";
const SERVING_SYNCING: &str = "Serving — schedule syncing, nothing to do yet";
const TESTING: &str = "Testing now — keep it online until the test finishes";
const CLIENT: &str = "Client — routes requests, serves no models";
const LOADING: &str = "Loading a model — keep it online until it is serving";

/// The countdown to the target round. Clamped to at least one second so a hand-built or stale
/// [`Timing`] can never make a sentence say "in 0s".
fn starts_in(t: &Timing) -> String {
    format_duration(t.seconds_until_next_round.max(1))
}

/// " at 14:05 UTC" when the target round's start is known.
fn at_clock(t: &Timing) -> String {
    t.next_round_at_ms
        .map(|ms| format!(" at {}", format_clock_utc(ms)))
        .unwrap_or_default()
}

/// The sentences every non-client state shares once nothing more specific applies: a running
/// round, then an unknown schedule, then the alert lead.
fn round_urgency(t: &Timing, serving: bool) -> Option<String> {
    if t.in_round {
        Some(ROUND_IN_PROGRESS.to_string())
    } else if !t.is_known() {
        Some(
            if serving {
                SERVING_SYNCING
            } else {
                SCHEDULE_SYNCING
            }
            .to_string(),
        )
    } else if t.should_be_online {
        Some(format!(
            "Round starts in {} — must be online now",
            starts_in(t)
        ))
    } else {
        None
    }
}

/// What the operator should do now about one backend, with a literal `<id>` placeholder where
/// the backend id belongs; see [`onboarding_message_for`].
pub fn onboarding_message(
    state: BackendState,
    participation: Participation,
    timing: &Timing,
    validated: bool,
) -> String {
    onboarding_message_for("<id>", state, participation, timing, validated)
}

/// [`onboarding_message`] with the backend id filled into the `infermesh test` command, so an
/// operator can paste it.
pub fn onboarding_message_for(
    backend_id: &str,
    state: BackendState,
    participation: Participation,
    timing: &Timing,
    validated: bool,
) -> String {
    let t = timing;
    match state {
        BackendState::Testing => return TESTING.to_string(),
        // A failed test is the operator's job whatever the clock says, so it outranks the round.
        BackendState::TestFailed => {
            let when = if t.is_known() {
                format!(" before the round (starts in {})", starts_in(t))
            } else {
                " (schedule syncing)".to_string()
            };
            return format!(
                "Last test failed — fix the backend and run `infermesh test {backend_id}`{when}"
            );
        }
        BackendState::Waiting | BackendState::Serving => {}
    }
    let serving = state == BackendState::Serving;
    if let Some(msg) = round_urgency(t, serving) {
        return msg;
    }
    let d = starts_in(t);
    match (state, participation) {
        (BackendState::Serving, Participation::Active) => {
            format!("Serving — active for this epoch; next round in {d}")
        }
        // Admission is peers' checks, not the round: they run as soon as a peer sees it serve.
        (BackendState::Serving, Participation::InactiveWaiting) => AWAITING_PEER_CHECK.to_string(),
        _ if validated => format!(
            "Validated — safe to be offline until the next round{} (starts in {d})",
            at_clock(t)
        ),
        // A backend with a model is checked by the round itself (the tester refuses a backend
        // that serves), so promise the round, not a test.
        _ => {
            format!("Not yet validated — the next round checks it (starts in {d}); be online then")
        }
    }
}

/// A serving node (or backend) its peers have not admitted yet: they check it within seconds of
/// seeing it serve; alone, it has nobody to check it and answers only the clients that reach it.
pub const AWAITING_PEER_CHECK: &str = "Serving — waiting for a peer to verify it (admission \
     check); mesh traffic starts once one does, and a node with no peer serves only its own clients";

/// The node's sentence while its only serving backend fails its health check: the node shows
/// `loading` (a model is assigned, none answers), but nothing is loading — something broke.
pub fn unhealthy_message(backend: &str, cause: &str) -> String {
    format!(
        "Backend {backend} stopped answering its health check ({cause}) — out of service, \
         requests go to peers; restart or fix it"
    )
}

/// What the operator should do now about the node as a whole, from the state words alone.
/// `validated` means every backend that serves is validated; callers that know the backends
/// use [`crate::situation::node_sentence`], which decides it and the failure sentences.
pub fn node_message(
    node_state: NodeState,
    participation: Participation,
    timing: &Timing,
    validated: bool,
) -> String {
    let t = timing;
    match node_state {
        NodeState::Client => return CLIENT.to_string(),
        NodeState::Loading if !t.in_round => return LOADING.to_string(),
        _ => {}
    }
    if let Some(msg) = round_urgency(t, node_state == NodeState::Serving) {
        return msg;
    }
    let d = starts_in(t);
    match (participation, node_state) {
        (Participation::NotServing, _) => CLIENT.to_string(),
        (Participation::Active, NodeState::Serving) => {
            format!("Serving — active for this epoch; next round in {d}")
        }
        (Participation::Active, _) => {
            format!("Standby — active for this epoch, no model assigned; next round in {d}")
        }
        (Participation::InactiveWaiting, NodeState::Serving) if validated => {
            let until = t
                .next_round_at_ms
                .map_or_else(|| "then".to_string(), format_clock_utc);
            format!(
                "Validated — safe to be offline until {until} (starts in {d}); no peer has \
                 verified it yet, so it serves only its own clients"
            )
        }
        (Participation::InactiveWaiting, NodeState::Serving) => AWAITING_PEER_CHECK.to_string(),
        // Joined mid-epoch (or failed the last round): nothing can change before the next round.
        (Participation::InactiveWaiting, _) if validated => {
            let until = t
                .next_round_at_ms
                .map_or_else(|| "then".to_string(), format_clock_utc);
            format!(
                "Validated — waits for the next round to join; safe to be offline until {until} \
                 (starts in {d})"
            )
        }
        (Participation::InactiveWaiting, _) => format!(
            "Not yet validated — waits for the next round, which checks it (starts in {d}); \
             be online then"
        ),
    }
}

/// A sentence with its numbers taken out (countdowns like `2h 15m` with their units, clock
/// times, counts): what it says, not when. The onboarding log writes a sentence again only when
/// its gist changes, so a countdown ticking down is not a new line every second.
pub fn gist(sentence: &str) -> String {
    let mut out = String::with_capacity(sentence.len());
    let mut chars = sentence.chars().peekable();
    while let Some(c) = chars.next() {
        if !c.is_ascii_digit() {
            out.push(c);
            continue;
        }
        while chars.peek().is_some_and(char::is_ascii_digit) {
            chars.next();
        }
        // A duration's unit belongs to its number: `15m`, not the `m` of a word.
        if chars
            .peek()
            .is_some_and(|u| matches!(u, 'd' | 'h' | 'm' | 's'))
        {
            let mut ahead = chars.clone();
            ahead.next();
            if !ahead.peek().is_some_and(|n| n.is_alphanumeric()) {
                chars.next();
            }
        }
    }
    let mut squeezed = String::with_capacity(out.len());
    for w in out.split(' ').filter(|w| !w.is_empty()) {
        if !squeezed.is_empty() {
            squeezed.push(' ');
        }
        squeezed.push_str(w);
    }
    squeezed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gist_drops_countdowns_clock_times_and_counts_only() {
        assert_eq!(
            gist("Round starts in 4m 59s — must be online now"),
            gist("Round starts in 5m — must be online now")
        );
        assert_eq!(
            gist("Validated — safe to be offline until the next round at 14:05 UTC (starts in 2h 15m)"),
            "Validated — safe to be offline until the next round at : UTC (starts in )"
        );
        assert_eq!(
            gist("1 node serves `x`; admission check in progress (≈12s)"),
            "node serves `x`; admission check in progress (≈)"
        );
        // Words that merely follow a number keep their letters; other sentences stay apart.
        assert_eq!(gist("Backend gpu0 stopped"), "Backend gpu stopped");
        assert_eq!(gist("2 models"), "models");
        assert_ne!(gist(TESTING), gist(LOADING));
        assert_eq!(gist(CLIENT), CLIENT);
    }

    #[test]
    fn unhealthy_message_names_backend_cause_and_action() {
        let m = unhealthy_message("gpu0", "connection refused");
        assert!(m.starts_with("Backend gpu0 stopped answering"), "{m}");
        assert!(m.contains("(connection refused)"), "{m}");
        assert!(m.ends_with("restart or fix it"), "{m}");
    }
    use crate::test_schedule::{at, DAY, G, LEAD, NEXT};

    /// Representative timings: (label, timing).
    fn timings() -> Vec<(&'static str, Timing)> {
        let mut stale = at(NEXT - 8_100_000);
        stale.seconds_until_next_round = 0;
        let mut no_clock = at(NEXT - 8_100_000);
        no_clock.next_round_at_ms = None;
        vec![
            ("unknown", Timing::UNKNOWN),
            ("round start", at(G)),
            ("mid round", at(G + 300_000)),
            ("round end", at(G + 600_000)),
            ("far", at(NEXT - 8_100_000)),
            ("just outside lead", at(NEXT - LEAD - 1)),
            ("lead edge", at(NEXT - LEAD)),
            ("4m", at(NEXT - 240_000)),
            ("1 ms before", at(NEXT - 1)),
            ("before genesis", at(G - 3 * DAY)),
            ("hand-built zero", stale),
            ("no clock", no_clock),
        ]
    }

    fn check_sentence(msg: &str, ctx: &str) {
        assert!(!msg.trim().is_empty(), "{ctx}");
        assert!(!msg.contains("in 0"), "{ctx}: {msg}");
        assert!(!msg.contains("unknown"), "{ctx}: {msg}");
        assert!(!msg.contains('\n') && !msg.ends_with('.'), "{ctx}: {msg}");
        assert!(!msg.contains("  "), "{ctx}: {msg}");
    }

    #[test]
    fn every_backend_combination_is_one_clean_sentence() {
        for (label, t) in timings() {
            for state in BackendState::ALL {
                for p in Participation::ALL {
                    for validated in [false, true] {
                        let msg = onboarding_message(state, p, &t, validated);
                        let ctx = format!("{label} {state} {p} validated={validated}");
                        check_sentence(&msg, &ctx);
                        match state {
                            BackendState::Testing => assert_eq!(msg, TESTING, "{ctx}"),
                            BackendState::TestFailed => {
                                assert!(msg.starts_with("Last test failed"), "{ctx}: {msg}")
                            }
                            _ if t.in_round => assert_eq!(msg, ROUND_IN_PROGRESS, "{ctx}"),
                            BackendState::Waiting if !t.is_known() => {
                                assert_eq!(msg, SCHEDULE_SYNCING, "{ctx}")
                            }
                            _ if t.should_be_online => {
                                assert!(msg.ends_with("must be online now"), "{ctx}: {msg}")
                            }
                            _ => assert!(
                                msg.contains("(starts in")
                                    || msg.contains("next round in")
                                    || msg == AWAITING_PEER_CHECK
                                    || !t.is_known(),
                                "{ctx}: {msg}"
                            ),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_node_combination_is_one_clean_sentence() {
        for (label, t) in timings() {
            for state in NodeState::ALL {
                for p in Participation::ALL {
                    for validated in [false, true] {
                        let msg = node_message(state, p, &t, validated);
                        let ctx = format!("{label} {state} {p} validated={validated}");
                        check_sentence(&msg, &ctx);
                        match state {
                            NodeState::Client => assert_eq!(msg, CLIENT, "{ctx}"),
                            _ if t.in_round => assert_eq!(msg, ROUND_IN_PROGRESS, "{ctx}"),
                            NodeState::Loading => assert_eq!(msg, LOADING, "{ctx}"),
                            NodeState::Standby if !t.is_known() => {
                                assert_eq!(msg, SCHEDULE_SYNCING, "{ctx}")
                            }
                            _ if t.should_be_online => {
                                assert!(msg.ends_with("must be online now"), "{ctx}: {msg}")
                            }
                            NodeState::Serving
                                if p == Participation::InactiveWaiting && t.is_known() =>
                            {
                                if validated {
                                    assert!(msg.contains("no peer has verified"), "{ctx}: {msg}")
                                } else {
                                    assert_eq!(msg, AWAITING_PEER_CHECK, "{ctx}")
                                }
                            }
                            _ if p == Participation::InactiveWaiting && t.is_known() => {
                                assert!(msg.contains("waits for the next round"), "{ctx}: {msg}")
                            }
                            _ => {}
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn required_backend_sentences() {
        use BackendState::*;
        use Participation::*;
        let far = at(NEXT - 8_100_000);
        #[rustfmt::skip]
        let cases: [(BackendState, Participation, Timing, bool, &str); 11] = [
            (Waiting, InactiveWaiting, Timing::UNKNOWN, false, "Schedule syncing — nothing to do yet"),
            (Waiting, Active, Timing::UNKNOWN, true, "Schedule syncing — nothing to do yet"),
            (Waiting, InactiveWaiting, at(G + 1), true, "Round in progress — must be online"),
            (Serving, Active, at(G + 1), true, "Round in progress — must be online"),
            (Waiting, InactiveWaiting, at(NEXT - 240_000), true, "Round starts in 4m — must be online now"),
            (Waiting, InactiveWaiting, far, true, "Validated — safe to be offline until the next round at 14:05 UTC (starts in 2h 15m)"),
            (Waiting, InactiveWaiting, far, false, "Not yet validated — the next round checks it (starts in 2h 15m); be online then"),
            (Testing, InactiveWaiting, far, false, "Testing now — keep it online until the test finishes"),
            (TestFailed, InactiveWaiting, far, false, "Last test failed — fix the backend and run `infermesh test <id>` before the round (starts in 2h 15m)"),
            (TestFailed, Active, Timing::UNKNOWN, false, "Last test failed — fix the backend and run `infermesh test <id>` (schedule syncing)"),
            (Serving, Active, far, true, "Serving — active for this epoch; next round in 2h 15m"),
        ];
        for (state, p, t, validated, want) in cases {
            assert_eq!(
                onboarding_message(state, p, &t, validated),
                want,
                "{state} {p} {t:?}"
            );
        }
        assert_eq!(
            onboarding_message_for("gpu-1", TestFailed, Active, &far, false),
            "Last test failed — fix the backend and run `infermesh test gpu-1` before the round \
             (starts in 2h 15m)"
        );
    }

    #[test]
    fn required_node_sentences() {
        use NodeState::*;
        use Participation::*;
        let far = at(NEXT - 8_100_000);
        #[rustfmt::skip]
        let cases: [(NodeState, Participation, Timing, bool, &str); 9] = [
            (Client, InactiveWaiting, at(G + 1), false, "Client — routes requests, serves no models"),
            (Client, Active, Timing::UNKNOWN, true, "Client — routes requests, serves no models"),
            (Standby, InactiveWaiting, Timing::UNKNOWN, false, "Schedule syncing — nothing to do yet"),
            (Standby, InactiveWaiting, at(G + 1), false, "Round in progress — must be online"),
            (Serving, Active, at(NEXT - 240_000), true, "Round starts in 4m — must be online now"),
            (Serving, Active, far, true, "Serving — active for this epoch; next round in 2h 15m"),
            (Standby, InactiveWaiting, far, true, "Validated — waits for the next round to join; safe to be offline until 14:05 UTC (starts in 2h 15m)"),
            (Standby, InactiveWaiting, far, false, "Not yet validated — waits for the next round, which checks it (starts in 2h 15m); be online then"),
            (Loading, InactiveWaiting, far, false, "Loading a model — keep it online until it is serving"),
        ];
        for (state, p, t, validated, want) in cases {
            assert_eq!(
                node_message(state, p, &t, validated),
                want,
                "{state} {p} {t:?}"
            );
        }
    }

    #[test]
    fn countdown_never_reads_zero() {
        let mut t = at(NEXT - 8_100_000);
        t.seconds_until_next_round = 0;
        let msg = onboarding_message(BackendState::Waiting, Participation::Active, &t, false);
        assert!(msg.contains("(starts in 1s)"), "{msg}");
        let mut no_clock = at(NEXT - 8_100_000);
        no_clock.next_round_at_ms = None;
        assert_eq!(
            onboarding_message(
                BackendState::Waiting,
                Participation::Active,
                &no_clock,
                true
            ),
            "Validated — safe to be offline until the next round (starts in 2h 15m)"
        );
    }
}
