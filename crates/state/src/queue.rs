//! The embedded engine's admission and scheduling decisions: which queued job a free slot takes,
//! whether a new request can start within its patience, what `Retry-After` to answer, and which
//! prompts are too long to be worth tokenizing. Pure: the engine passes counts and durations.

use serde::{Deserialize, Serialize};

/// How urgent a request is. `Validation` is the mesh's own check of a node (a round's challenge,
/// a backend test): it must not wait behind user traffic, or a node under load fails its round.
/// Who may ask for it is the transport's business (the node's own process, an authenticated
/// peer); the engine only honours it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    User,
    Validation,
}

/// A worker slot of the engine. `Reserved` exists only for validation jobs, so one is always
/// free for them however long the user jobs on the shared slots run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Shared,
    Reserved,
}

/// The queue a free slot of `kind` takes its next job from, given how many wait in each;
/// `None`: nothing for it, keep waiting. Validation goes first on every slot.
pub fn next_lane(
    kind: SlotKind,
    user_waiting: usize,
    validation_waiting: usize,
) -> Option<Priority> {
    match (kind, validation_waiting > 0, user_waiting > 0) {
        (_, true, _) => Some(Priority::Validation),
        (SlotKind::Shared, false, true) => Some(Priority::User),
        (SlotKind::Shared, false, false) | (SlotKind::Reserved, false, _) => None,
    }
}

/// Longest `Retry-After` advertised: past this a client should rather look elsewhere.
pub const MAX_RETRY_AFTER_S: u32 = 300;

/// Seconds until a slot is expected to be free for one more job: the `ahead` jobs (queued and
/// running) spread over `slots`, each taking `mean_job_ms`. At least 1 s, at most
/// [`MAX_RETRY_AFTER_S`]; 1 s when no job has finished yet (nothing to estimate from).
pub fn retry_after_s(ahead: usize, slots: usize, mean_job_ms: Option<f64>) -> u32 {
    let Some(mean) = mean_job_ms.filter(|m| m.is_finite() && *m > 0.0) else {
        return 1;
    };
    let waves = ahead.div_ceil(slots.max(1)) as f64;
    let secs = (waves * mean / 1000.0).ceil();
    secs.clamp(1.0, f64::from(MAX_RETRY_AFTER_S)) as u32
}

/// What to do with a new user request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Queue,
    /// It cannot start within its patience: answer 503 now, with this `Retry-After`.
    Reject {
        retry_after_s: u32,
    },
}

/// A request with `queued` jobs ahead of it and `running` on the `slots` shared slots is queued
/// unless the expected wait for a free slot already exceeds `patience_ms`. With free slots, or no
/// finished job to estimate from, it is always queued (the wait timer still bounds it).
pub fn admit(
    queued: usize,
    running: usize,
    slots: usize,
    mean_job_ms: Option<f64>,
    patience_ms: u64,
) -> Admission {
    let slots = slots.max(1);
    let Some(mean) = mean_job_ms.filter(|m| m.is_finite() && *m > 0.0) else {
        return Admission::Queue;
    };
    if running + queued < slots {
        return Admission::Queue;
    }
    // Jobs that must finish before this one starts: all queued, plus one per slot's worth of
    // the running ones (on average half done, so count them as half a job each).
    let waves = (queued / slots) as f64 + 0.5;
    let expected_ms = waves * mean;
    if expected_ms > patience_ms as f64 {
        Admission::Reject {
            retry_after_s: retry_after_s(queued + running, slots, Some(mean)),
        }
    } else {
        Admission::Queue
    }
}

/// A prompt of `bytes` bytes has at least `bytes / longest_token_bytes` tokens, so above this it
/// cannot fit a context of `n_ctx` tokens and is rejected without tokenizing it (an 8 MiB prompt
/// took 1.7 s and 567 MiB to tokenize before the context check). Never rejects one that fits.
pub fn prompt_bytes_cannot_fit(bytes: usize, n_ctx: u32, longest_token_bytes: usize) -> bool {
    let bound = (n_ctx as usize).saturating_mul(longest_token_bytes.max(1));
    bytes > bound
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_goes_first_and_only_validation_uses_the_reserved_slot() {
        use Priority::*;
        use SlotKind::*;
        for kind in [Shared, Reserved] {
            for user in 0..3 {
                for val in 0..3 {
                    let want = match (kind, val, user) {
                        (_, v, _) if v > 0 => Some(Validation),
                        (Shared, _, u) if u > 0 => Some(User),
                        _ => None,
                    };
                    assert_eq!(next_lane(kind, user, val), want, "{kind:?} {user} {val}");
                }
            }
        }
    }

    #[test]
    fn retry_after_spreads_the_backlog_over_slots_and_is_bounded() {
        assert_eq!(retry_after_s(0, 1, None), 1);
        assert_eq!(retry_after_s(5, 1, Some(f64::NAN)), 1);
        assert_eq!(retry_after_s(5, 1, Some(0.0)), 1);
        assert_eq!(retry_after_s(0, 1, Some(10_000.0)), 1);
        assert_eq!(retry_after_s(1, 1, Some(10_000.0)), 10);
        assert_eq!(retry_after_s(4, 2, Some(10_000.0)), 20);
        assert_eq!(retry_after_s(5, 2, Some(10_000.0)), 30);
        assert_eq!(retry_after_s(3, 0, Some(1_500.0)), 5);
        assert_eq!(retry_after_s(1_000, 1, Some(60_000.0)), MAX_RETRY_AFTER_S);
        assert_eq!(retry_after_s(1, 1, Some(1.0)), 1);
    }

    #[test]
    fn admission_rejects_only_when_the_expected_wait_exceeds_patience() {
        // Free slot, or nothing measured yet: queue.
        assert_eq!(admit(0, 0, 1, Some(1e9), 1), Admission::Queue);
        assert_eq!(admit(0, 1, 2, Some(1e9), 1), Admission::Queue);
        assert_eq!(admit(50, 1, 1, None, 1), Admission::Queue);
        assert_eq!(admit(50, 1, 1, Some(f64::INFINITY), 1), Admission::Queue);
        // One slot busy with 10 s jobs: half a job expected ahead.
        assert_eq!(admit(0, 1, 1, Some(10_000.0), 5_000), Admission::Queue);
        assert_eq!(
            admit(0, 1, 1, Some(10_000.0), 4_999),
            Admission::Reject { retry_after_s: 10 }
        );
        // Three queued on one slot: 3.5 jobs.
        assert_eq!(admit(3, 1, 1, Some(1_000.0), 3_500), Admission::Queue);
        assert_eq!(
            admit(3, 1, 1, Some(1_000.0), 3_000),
            Admission::Reject { retry_after_s: 4 }
        );
        // The same backlog on two slots waits half as long.
        assert_eq!(admit(4, 2, 2, Some(1_000.0), 2_500), Admission::Queue);
        assert_eq!(
            admit(4, 2, 2, Some(1_000.0), 2_000),
            Admission::Reject { retry_after_s: 3 }
        );
        // Zero slots is treated as one.
        assert_eq!(admit(0, 1, 0, Some(1_000.0), 500), Admission::Queue);
    }

    #[test]
    fn byte_bound_never_rejects_what_fits() {
        assert!(!prompt_bytes_cannot_fit(0, 0, 0));
        assert!(prompt_bytes_cannot_fit(1, 0, 16));
        assert!(!prompt_bytes_cannot_fit(2048 * 16, 2048, 16));
        assert!(prompt_bytes_cannot_fit(2048 * 16 + 1, 2048, 16));
        // A vocabulary with no pieces still bounds by one byte per token.
        assert!(prompt_bytes_cannot_fit(11, 10, 0));
        assert!(!prompt_bytes_cannot_fit(10, 10, 0));
        assert!(!prompt_bytes_cannot_fit(usize::MAX, u32::MAX, usize::MAX));
        assert!(prompt_bytes_cannot_fit(8 << 20, 2048, 64));
    }
}
