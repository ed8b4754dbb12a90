//! The schedule the sentence tests read timings from: one-day epochs whose rounds start at
//! 14:05 UTC, a 10-minute round and a 10-minute alert lead.

use crate::schedule::ScheduleSpec;
use crate::timing::{timing, Timing};

pub const DAY: i64 = 86_400_000;
pub const LEAD: i64 = 600_000;
/// Genesis at 14:05 UTC with one-day epochs, so every round starts at 14:05 UTC.
pub const G: i64 = 19_675 * DAY + (14 * 3_600 + 5 * 60) * 1_000;
pub const SPEC: ScheduleSpec = ScheduleSpec {
    genesis_ms: G,
    epoch_ms: DAY,
    round_ms: 600_000,
};
/// The first round after genesis.
pub const NEXT: i64 = G + DAY;

pub fn at(now: i64) -> Timing {
    timing(Some(&SPEC), now, LEAD)
}
