//! Peer-verified admission: whether a member may be routed to for a model, decided only from
//! checks that *other* members made of it.
//!
//! A check is a challenge inference a verifier sends over the authenticated peer channel (fresh
//! nonce in the prompt, a time budget, the answer checked). Its outcome travels as an
//! [`Attestation`] inside the verifier's signed membership record, so every node can weigh it.
//!
//! Who checks whom is not free: for each `(subject, incarnation, epoch)` a rendezvous hash picks
//! [`VERIFIERS_PER_NODE`] members ([`verifiers`]), so the cost per epoch is `k` challenges per
//! served model per node — `O(k·N)` for the mesh, `O(k)` per node — not `N²`, and no member can
//! appoint itself another's judge. A node routes to a peer when a majority of the attestations
//! from its assigned verifiers pass ([`judge`]); its own claim (its record, its self-signed round
//! result) never counts. See `docs/decisions.md` ("Peer-verified admission").

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::schedule::ScheduleSpec;

/// Verifiers assigned to each node per epoch (fewer when the mesh has fewer other members).
pub const VERIFIERS_PER_NODE: usize = 3;
/// A reader accepts attestations from this many extra rendezvous ranks, so two members whose
/// views of the membership differ by a join or a death still agree on who may attest.
pub const VIEW_SLACK: usize = 2;
/// An attestation dated further than this in the future is not believed.
pub const MAX_CLOCK_SKEW_MS: i64 = 120_000;
/// How long an attestation lasts when the schedule is unknown (a client still learning it).
pub const UNSCHEDULED_TTL_MS: i64 = 60 * 60_000;
/// First retry after a failed check; doubles per consecutive failure up to [`MAX_RETRY_MS`].
pub const FIRST_RETRY_MS: i64 = 5_000;
pub const MAX_RETRY_MS: i64 = 5 * 60_000;
/// Pauses before the same check tries again to connect, inside one check's budget. A verifier
/// often learns of a peer from gossip a moment before that peer learns of the verifier, and the
/// peer refuses the handshake of a node it does not know yet: that is news still travelling,
/// not a failed check. About 1.5 s in all, several gossip intervals.
pub const CONNECT_RETRY_MS: [u64; 4] = [100, 200, 400, 800];
/// Longest failure reason carried in gossip.
pub const MAX_ERROR_CHARS: usize = 160;

/// One verifier's signed-by-record statement about one model on one incarnation of a member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attestation {
    /// Node id of the member that was checked.
    pub subject: String,
    /// The subject's incarnation (its generation): a restarted process is checked anew.
    pub generation: u64,
    pub model: String,
    pub ok: bool,
    /// When the check finished (verifier's clock, unix ms).
    pub at_ms: i64,
    /// When the verifier says it stops counting; readers clamp it with [`expiry`].
    pub expires_ms: i64,
    /// How long the challenge took end to end.
    #[serde(default)]
    pub took_ms: u64,
    /// Why it failed; `None` when it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The epoch a check made at `at_ms` belongs to: the schedule's, or 0 with no schedule or before
/// genesis (verifier assignment still needs a number).
pub fn check_epoch(spec: Option<&ScheduleSpec>, at_ms: i64) -> u64 {
    valid(spec).and_then(|s| s.epoch_at(at_ms)).unwrap_or(0)
}

fn valid(spec: Option<&ScheduleSpec>) -> Option<&ScheduleSpec> {
    spec.filter(|s| s.validate().is_ok())
}

/// When a check made at `at_ms` stops counting: at the end of the *next* round, so every admitted
/// node must pass each epoch's round to stay routed (a node admitted mid-epoch is re-checked in
/// the coming round like everyone else). Without a schedule: [`UNSCHEDULED_TTL_MS`].
pub fn expiry(spec: Option<&ScheduleSpec>, at_ms: i64) -> i64 {
    match valid(spec) {
        Some(s) => match s.epoch_at(at_ms) {
            Some(e) => s.round_window(e.saturating_add(1)).1,
            None => s
                .round_window(0)
                .1
                .min(at_ms.saturating_add(UNSCHEDULED_TTL_MS)),
        },
        None => at_ms.saturating_add(UNSCHEDULED_TTL_MS),
    }
}

/// When this verifier should check the same `(subject, generation, model)` again after
/// `latest`: at the next round's start after a pass (the round re-verifies), after a backoff
/// after a failure (`failures` in a row, at least 1).
pub fn recheck_at(spec: Option<&ScheduleSpec>, latest: &Attestation, failures: u32) -> i64 {
    if !latest.ok {
        let shift = failures.saturating_sub(1).min(16);
        let backoff = (FIRST_RETRY_MS << shift).min(MAX_RETRY_MS);
        return latest.at_ms.saturating_add(backoff);
    }
    match valid(spec) {
        Some(s) => match s.epoch_at(latest.at_ms) {
            Some(e) => s.epoch_start(e.saturating_add(1)),
            // Before genesis the check lasts until the first round ends: re-check in it.
            None => s
                .epoch_start(0)
                .min(latest.at_ms.saturating_add(UNSCHEDULED_TTL_MS / 2)),
        },
        None => latest.at_ms.saturating_add(UNSCHEDULED_TTL_MS / 2),
    }
}

fn rank_score(epoch: u64, subject: &str, generation: u64, candidate: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"infermesh-verifier-v1\0");
    h.update(epoch.to_be_bytes());
    h.update(generation.to_be_bytes());
    h.update(subject.as_bytes());
    h.update([0]);
    h.update(candidate.as_bytes());
    h.finalize().into()
}

/// The `k` members assigned to check `subject`'s incarnation `generation` in `epoch`, best rank
/// first. `members` is every live member the caller knows (itself included); the subject is never
/// its own verifier. Deterministic: every node with the same view computes the same set.
pub fn verifiers<'a>(
    subject: &str,
    generation: u64,
    epoch: u64,
    members: impl IntoIterator<Item = &'a str>,
    k: usize,
) -> Vec<&'a str> {
    let mut ranked: Vec<([u8; 32], &str)> = members
        .into_iter()
        .filter(|m| *m != subject)
        .map(|m| (rank_score(epoch, subject, generation, m), m))
        .collect();
    ranked.sort_unstable();
    ranked.dedup_by(|a, b| a.1 == b.1);
    ranked.into_iter().take(k).map(|(_, m)| m).collect()
}

/// What a node concludes about one `(subject, generation, model)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// More passing than failing attestations from assigned verifiers.
    Admitted { passes: usize },
    /// The assigned verifiers that answered mostly found it failing; the newest reason.
    Failed { error: String },
    /// No current attestation from an assigned verifier yet.
    Pending,
}

impl Verdict {
    pub fn is_admitted(&self) -> bool {
        matches!(self, Self::Admitted { .. })
    }
}

/// The question [`judge`] answers.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    pub node_id: &'a str,
    pub generation: u64,
    pub model: &'a str,
}

/// Whether `a` counts at `now_ms` by its dates alone: not dated further ahead than
/// [`MAX_CLOCK_SKEW_MS`], and not expired (the claimed expiry clamped by this node's own
/// [`expiry`] rule).
pub fn in_force(now_ms: i64, spec: Option<&ScheduleSpec>, a: &Attestation) -> bool {
    a.at_ms <= now_ms.saturating_add(MAX_CLOCK_SKEW_MS)
        && a.expires_ms.min(expiry(spec, a.at_ms)) > now_ms
}

/// Decides admission from `(attester, attestation)` pairs as this node holds them.
///
/// Counted: attestations about exactly this subject, incarnation and model; by someone other than
/// the subject; [`in_force`]; and from a member `may_attest(attester,
/// check_epoch)` accepts (the caller's rendezvous set for that epoch, with [`VIEW_SLACK`]). Only
/// each attester's newest statement counts, so a verifier that re-checks replaces itself.
pub fn judge<'a>(
    now_ms: i64,
    spec: Option<&ScheduleSpec>,
    subject: Subject<'_>,
    attestations: impl IntoIterator<Item = (&'a str, &'a Attestation)>,
    may_attest: impl Fn(&str, u64) -> bool,
) -> Verdict {
    let mut newest: Vec<(&str, &Attestation)> = Vec::new();
    for (attester, a) in attestations {
        let counts = attester != subject.node_id
            && a.subject == subject.node_id
            && a.generation == subject.generation
            && a.model == subject.model
            && in_force(now_ms, spec, a)
            && may_attest(attester, check_epoch(spec, a.at_ms));
        if !counts {
            continue;
        }
        match newest.iter_mut().find(|(who, _)| *who == attester) {
            Some(slot) if slot.1.at_ms < a.at_ms => *slot = (attester, a),
            Some(_) => {}
            None => newest.push((attester, a)),
        }
    }
    let passes = newest.iter().filter(|(_, a)| a.ok).count();
    let fails = newest.len() - passes;
    if passes > fails {
        Verdict::Admitted { passes }
    } else if let Some((_, a)) = newest
        .iter()
        .filter(|(_, a)| !a.ok)
        .max_by_key(|(_, a)| a.at_ms)
    {
        Verdict::Failed {
            error: a.error.clone().unwrap_or_else(|| "check failed".into()),
        }
    } else {
        Verdict::Pending
    }
}

/// Whether `attester` is among the `k + VIEW_SLACK` best-ranked verifiers of the subject in
/// `epoch` over `members`: the `may_attest` of [`judge`].
pub fn may_attest<'a>(
    attester: &str,
    subject: &str,
    generation: u64,
    epoch: u64,
    members: impl IntoIterator<Item = &'a str>,
) -> bool {
    verifiers(
        subject,
        generation,
        epoch,
        members,
        VERIFIERS_PER_NODE + VIEW_SLACK,
    )
    .contains(&attester)
}

/// Whether `me`, an assigned verifier, should challenge the subject now, given its own newest
/// attestation about it (`latest`) and how many of its checks in a row failed.
pub fn check_due(
    now_ms: i64,
    spec: Option<&ScheduleSpec>,
    latest: Option<&Attestation>,
    failures: u32,
) -> bool {
    latest.is_none_or(|a| now_ms >= recheck_at(spec, a, failures.max(1)))
}

/// How long to wait before connect attempt `attempt + 1` (0-based: after the first failed
/// attempt, `attempt` is 0) when `spent_ms` of a `budget_ms` check have gone; `None` when the
/// check should record its failure now (retries used up, or no time left to try again).
pub fn connect_retry_after(attempt: usize, spent_ms: u64, budget_ms: u64) -> Option<u64> {
    let wait = *CONNECT_RETRY_MS.get(attempt)?;
    (spent_ms.saturating_add(wait) < budget_ms).then_some(wait)
}

/// Shortens a failure reason for gossip (whole characters, an ellipsis when cut).
pub fn clip_error(why: &str) -> String {
    if why.chars().count() <= MAX_ERROR_CHARS {
        return why.to_string();
    }
    let mut s: String = why.chars().take(MAX_ERROR_CHARS - 1).collect();
    s.push('…');
    s
}

#[cfg(test)]
#[path = "admission_tests.rs"]
mod tests;
