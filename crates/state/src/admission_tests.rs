use super::*;

const EPOCH: i64 = 20_000;
const ROUND: i64 = 4_000;

fn spec() -> ScheduleSpec {
    ScheduleSpec {
        genesis_ms: 1_000_000,
        epoch_ms: EPOCH,
        round_ms: ROUND,
    }
}

fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("node{i:04}")).collect()
}

fn att(subject: &str, ok: bool, at_ms: i64) -> Attestation {
    Attestation {
        subject: subject.into(),
        generation: 7,
        model: "m".into(),
        ok,
        at_ms,
        expires_ms: expiry(Some(&spec()), at_ms),
        took_ms: 100,
        error: (!ok).then(|| format!("failed at {at_ms}")),
    }
}

const S: Subject<'static> = Subject {
    node_id: "subj",
    generation: 7,
    model: "m",
};

fn judge_all(now: i64, list: &[(&str, Attestation)]) -> Verdict {
    judge(
        now,
        Some(&spec()),
        S,
        list.iter().map(|(w, a)| (*w, a)),
        |_, _| true,
    )
}

#[test]
fn verifiers_never_include_the_subject_and_are_capped_at_k() {
    let members = ids(10);
    for subject in &members {
        for epoch in 0..20 {
            let v = verifiers(subject, 1, epoch, members.iter().map(String::as_str), 3);
            assert_eq!(v.len(), 3);
            assert!(!v.contains(&subject.as_str()));
            let mut d = v.clone();
            d.dedup();
            assert_eq!(d.len(), 3);
        }
    }
    // Fewer other members than k: all of them.
    let two = ["a", "b"];
    assert_eq!(verifiers("a", 1, 0, two, 3), vec!["b"]);
    assert!(verifiers("a", 1, 0, ["a"], 3).is_empty());
    // A duplicated member is one verifier.
    assert_eq!(verifiers("a", 1, 0, ["b", "b", "a"], 3), vec!["b"]);
}

#[test]
fn verifiers_are_deterministic_and_independent_of_member_order() {
    let members = ids(30);
    let mut reversed = members.clone();
    reversed.reverse();
    let a = verifiers("node0003", 9, 4, members.iter().map(String::as_str), 3);
    let b = verifiers("node0003", 9, 4, reversed.iter().map(String::as_str), 3);
    assert_eq!(a, b);
}

#[test]
fn verifiers_rotate_with_the_epoch_and_the_incarnation() {
    let members = ids(50);
    let m = || members.iter().map(String::as_str);
    let base = verifiers("node0001", 1, 0, m(), 3);
    assert!((1..10).any(|e| verifiers("node0001", 1, e, m(), 3) != base));
    assert!((2..10).any(|g| verifiers("node0001", g, 0, m(), 3) != base));
}

#[test]
fn checking_cost_is_k_per_node_and_spread_evenly_at_1000_nodes() {
    let members = ids(1000);
    let mut load = std::collections::HashMap::<&str, usize>::new();
    for s in &members {
        for v in verifiers(
            s,
            1,
            3,
            members.iter().map(String::as_str),
            VERIFIERS_PER_NODE,
        ) {
            *load.entry(v).or_default() += 1;
        }
    }
    let total: usize = load.values().sum();
    assert_eq!(
        total,
        VERIFIERS_PER_NODE * 1000,
        "k checks per node per epoch"
    );
    let max = load.values().copied().max().unwrap();
    // Binomial(999·3, 1/999): mean 3; a verifier with more than 15 would mean a skewed hash.
    assert!(max <= 15, "busiest verifier has {max} subjects");
}

#[test]
fn a_check_lasts_until_the_end_of_the_next_round() {
    let s = spec();
    let mid_epoch_3 = s.epoch_start(3) + 10_000;
    assert_eq!(expiry(Some(&s), mid_epoch_3), s.round_window(4).1);
    // A check during round 3 also lasts until round 4 ends.
    assert_eq!(expiry(Some(&s), s.epoch_start(3) + 1), s.round_window(4).1);
    // Before genesis: until the first round ends (or an hour, whichever is sooner).
    assert_eq!(expiry(Some(&s), s.genesis_ms - 5_000), s.round_window(0).1);
    let far = s.genesis_ms - 10 * UNSCHEDULED_TTL_MS;
    assert_eq!(expiry(Some(&s), far), far + UNSCHEDULED_TTL_MS);
    // No schedule, or an invalid one: an hour.
    assert_eq!(expiry(None, 5), 5 + UNSCHEDULED_TTL_MS);
    let bad = ScheduleSpec {
        round_ms: EPOCH,
        ..s
    };
    assert_eq!(expiry(Some(&bad), 5), 5 + UNSCHEDULED_TTL_MS);
    assert_eq!(check_epoch(Some(&bad), s.epoch_start(3)), 0);
    assert_eq!(check_epoch(Some(&s), s.epoch_start(3)), 3);
    assert_eq!(check_epoch(None, s.epoch_start(3)), 0);
}

#[test]
fn a_pass_is_rechecked_at_the_next_round_and_a_failure_backs_off() {
    let s = spec();
    let at = s.epoch_start(2) + 7_000;
    let pass = att("subj", true, at);
    assert_eq!(recheck_at(Some(&s), &pass, 0), s.epoch_start(3));
    assert_eq!(recheck_at(None, &pass, 0), at + UNSCHEDULED_TTL_MS / 2);
    // Checked before genesis: again in the first round, which is when that check lapses.
    let early = att("subj", true, s.genesis_ms - 5_000);
    assert_eq!(recheck_at(Some(&s), &early, 0), s.genesis_ms);
    assert!(recheck_at(Some(&s), &early, 0) < expiry(Some(&s), early.at_ms));
    let very_early = att("subj", true, s.genesis_ms - 10 * UNSCHEDULED_TTL_MS);
    assert_eq!(
        recheck_at(Some(&s), &very_early, 0),
        very_early.at_ms + UNSCHEDULED_TTL_MS / 2
    );
    let fail = att("subj", false, at);
    assert_eq!(recheck_at(Some(&s), &fail, 1), at + FIRST_RETRY_MS);
    assert_eq!(recheck_at(Some(&s), &fail, 2), at + 2 * FIRST_RETRY_MS);
    assert_eq!(recheck_at(Some(&s), &fail, 3), at + 4 * FIRST_RETRY_MS);
    assert_eq!(recheck_at(Some(&s), &fail, 99), at + MAX_RETRY_MS);
    assert!(check_due(at, Some(&s), None, 0), "never checked: due now");
    assert!(!check_due(at + 1, Some(&s), Some(&pass), 0));
    assert!(check_due(s.epoch_start(3), Some(&s), Some(&pass), 0));
    assert!(!check_due(
        at + FIRST_RETRY_MS - 1,
        Some(&s),
        Some(&fail),
        0
    ));
    assert!(check_due(at + FIRST_RETRY_MS, Some(&s), Some(&fail), 0));
}

#[test]
fn nothing_is_pending_and_one_assigned_pass_admits() {
    let now = spec().epoch_start(2) + 5_000;
    assert_eq!(judge_all(now, &[]), Verdict::Pending);
    let v = judge_all(now, &[("v1", att("subj", true, now - 100))]);
    assert_eq!(v, Verdict::Admitted { passes: 1 });
    assert!(v.is_admitted());
}

#[test]
fn only_statements_about_this_subject_incarnation_and_model_from_others_count() {
    let now = spec().epoch_start(2) + 5_000;
    let good = att("subj", true, now - 100);
    let mut other_gen = good.clone();
    other_gen.generation = 8;
    let mut other_model = good.clone();
    other_model.model = "other".into();
    let other_subject = att("someone", true, now - 100);
    for (who, a) in [
        ("subj", good.clone()), // self-attestation
        ("v1", other_gen),
        ("v1", other_model),
        ("v1", other_subject),
    ] {
        assert_eq!(
            judge_all(now, &[(who, a.clone())]),
            Verdict::Pending,
            "{who} {a:?}"
        );
    }
}

#[test]
fn expired_future_dated_and_unassigned_statements_do_not_count() {
    let s = spec();
    let now = s.epoch_start(4) + 5_000; // after round 4: epoch-2 checks have expired
    let old = att("subj", true, s.epoch_start(2) + 100);
    assert_eq!(judge_all(now, &[("v1", old)]), Verdict::Pending);
    let future = att("subj", true, now + MAX_CLOCK_SKEW_MS + 1);
    assert_eq!(judge_all(now, &[("v1", future)]), Verdict::Pending);
    let slight_future = att("subj", true, now + 1_000);
    assert!(judge_all(now, &[("v1", slight_future)]).is_admitted());
    // A verifier claiming a longer life than the rule gives is clamped.
    let mut greedy = att("subj", true, s.epoch_start(2) + 100);
    greedy.expires_ms = i64::MAX;
    assert_eq!(judge_all(now, &[("v1", greedy)]), Verdict::Pending);
    // Not assigned: refused by may_attest.
    let fresh = att("subj", true, now - 100);
    let v = judge(now, Some(&s), S, [("v9", &fresh)], |who, epoch| {
        who != "v9" && epoch == 4
    });
    assert_eq!(v, Verdict::Pending);
}

#[test]
fn the_previous_rounds_pass_holds_through_the_next_round_then_lapses() {
    let s = spec();
    let checked = att("subj", true, s.epoch_start(3) + 500);
    let (r4_start, r4_end) = s.round_window(4);
    assert!(judge_all(r4_start + 1, &[("v1", checked.clone())]).is_admitted());
    assert!(judge_all(r4_end - 1, &[("v1", checked.clone())]).is_admitted());
    assert_eq!(judge_all(r4_end, &[("v1", checked)]), Verdict::Pending);
}

#[test]
fn each_attesters_newest_statement_replaces_its_older_ones() {
    let now = spec().epoch_start(2) + 9_000;
    let pass = att("subj", true, now - 5_000);
    let fail = att("subj", false, now - 1_000);
    assert!(matches!(
        judge_all(now, &[("v1", pass.clone()), ("v1", fail.clone())]),
        Verdict::Failed { .. }
    ));
    assert!(judge_all(now, &[("v1", fail), ("v1", att("subj", true, now - 10))]).is_admitted());
}

#[test]
fn admission_is_a_strict_majority_of_the_verifiers_that_answered_exhaustively() {
    // Every combination of absent / pass / fail for three verifiers.
    let now = spec().epoch_start(2) + 9_000;
    for code in 0..27u32 {
        let mut list = Vec::new();
        let (mut passes, mut fails) = (0, 0);
        for (i, who) in ["v1", "v2", "v3"].into_iter().enumerate() {
            match (code / 3u32.pow(i as u32)) % 3 {
                1 => {
                    passes += 1;
                    list.push((who, att("subj", true, now - 100 - i as i64)));
                }
                2 => {
                    fails += 1;
                    list.push((who, att("subj", false, now - 100 - i as i64)));
                }
                _ => {}
            }
        }
        let v = judge_all(now, &list);
        match v {
            Verdict::Admitted { passes: p } => {
                assert!(passes > fails, "{code}");
                assert_eq!(p, passes);
            }
            Verdict::Failed { ref error } => {
                assert!(fails > 0 && passes <= fails, "{code}");
                // The newest failure's reason.
                let newest = list
                    .iter()
                    .filter(|(_, a)| !a.ok)
                    .map(|(_, a)| a.at_ms)
                    .max();
                assert_eq!(error, &format!("failed at {}", newest.unwrap()));
            }
            Verdict::Pending => assert_eq!((passes, fails), (0, 0), "{code}"),
        }
    }
}

#[test]
fn may_attest_follows_the_rendezvous_ranks_with_slack() {
    let members = ids(20);
    let m = || members.iter().map(String::as_str);
    let ranked = verifiers("node0005", 3, 1, m(), members.len());
    for (rank, who) in ranked.iter().enumerate() {
        let allowed = may_attest(who, "node0005", 3, 1, m());
        assert_eq!(
            allowed,
            rank < VERIFIERS_PER_NODE + VIEW_SLACK,
            "rank {rank}"
        );
    }
    assert!(!may_attest("node0005", "node0005", 3, 1, m()));
}

#[test]
fn long_reasons_are_clipped_on_a_character_boundary() {
    assert_eq!(clip_error("short"), "short");
    let long = "é".repeat(MAX_ERROR_CHARS + 10);
    let c = clip_error(&long);
    assert_eq!(c.chars().count(), MAX_ERROR_CHARS);
    assert!(c.ends_with('…'));
}

#[test]
fn a_pass_is_always_rechecked_before_it_lapses() {
    let s = spec();
    let step = 997; // not a divisor of the epoch, so every phase of it is visited
    let mut at = s.genesis_ms - 2 * UNSCHEDULED_TTL_MS;
    while at < s.epoch_start(30) {
        for sched in [Some(&s), None] {
            let pass = att("subj", true, at);
            assert!(
                recheck_at(sched, &pass, 0) < expiry(sched, at),
                "checked at {at} ({sched:?})"
            );
            assert!(recheck_at(sched, &pass, 0) > at, "checked at {at}");
        }
        at += step;
    }
}

#[test]
fn connect_retries_wait_longer_each_time_and_stay_inside_the_budget() {
    let mut spent = 0;
    let mut waits = Vec::new();
    while let Some(w) = connect_retry_after(waits.len(), spent, 20_000) {
        waits.push(w);
        spent += w + 50;
    }
    assert_eq!(waits, CONNECT_RETRY_MS.to_vec());
    assert!(waits.windows(2).all(|w| w[0] < w[1]));
    // No retry that would end past the budget, at any point of it.
    for budget in [0u64, 99, 100, 101, 1_000, 20_000] {
        for spent in (0..=budget).step_by(7) {
            for (attempt, want) in CONNECT_RETRY_MS.iter().enumerate() {
                if let Some(w) = connect_retry_after(attempt, spent, budget) {
                    assert!(spent + w < budget, "{attempt} {spent} {budget}");
                    assert_eq!(w, *want);
                }
            }
        }
    }
    assert_eq!(
        connect_retry_after(CONNECT_RETRY_MS.len(), 0, u64::MAX),
        None
    );
}
