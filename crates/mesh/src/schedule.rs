//! Where a node gets its epoch schedule and its clock from.
//!
//! The boundaries themselves are arithmetic in [`ScheduleSpec`]; this module only decides *which*
//! spec a node uses and *what time it is*, behind the [`Schedule`] trait so `selfcheck` and tests
//! can drive a synthetic clock through the same code the real node runs.

use std::collections::BTreeMap;
use std::sync::{Mutex, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use infermesh_state::{timing, ScheduleSpec, Timing};

use crate::mesh::PeerView;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// The schedule every mesh uses unless its config says otherwise.
///
/// - Genesis 2026-01-01T00:00:00Z: a round instant, in the past for every real deployment, so
///   epoch numbers are small and nobody waits for genesis.
/// - Epoch 4 h: a divisor of 24 h, so rounds fall at the same UTC clock times every day
///   (00:00, 04:00, ...) and operators can plan around them. It must exceed
///   `AUTO_TEST_MIN_LEAD_MS` (1 h) plus the round by a wide margin, otherwise an untested backend
///   would never find a window to be auto-tested before the next round (a 1 h epoch never does);
///   it is also the longest a node joining mid-epoch waits to be admitted.
/// - Round 10 min: one full `TEST_TIMEOUT_MS` (5 min) for a backend that has to load its model
///   before the validation inference, plus the same again for retries and gossip propagation.
///
/// `tests::mesh_schedule_fits_the_tunables` pins these relations.
pub const MESH_SCHEDULE: ScheduleSpec = ScheduleSpec {
    genesis_ms: 1_767_225_600_000,
    epoch_ms: 4 * HOUR_MS,
    round_ms: 10 * MINUTE_MS,
};

/// A schedule short enough to watch several epochs in a demo or `selfcheck`: a 20 s epoch opening
/// with a 4 s round. Pair it with scaled-down [`infermesh_state::Tunables`] (the production
/// 10 min alert lead would make a node "must be online" all the time).
pub fn fast_schedule(genesis_ms: i64) -> ScheduleSpec {
    ScheduleSpec {
        genesis_ms,
        epoch_ms: 20_000,
        round_ms: 4_000,
    }
}

/// The spec a node should use: its own configured one when set and valid, otherwise the valid
/// spec advertised by the most peers. Ties go to the smallest `(genesis, epoch, round)` so every
/// node that sees the same peers picks the same spec; the choice itself is arbitrary.
///
/// An invalid local spec falls through to the peers rather than leaving the node without a
/// schedule forever (config loading is where it should be rejected loudly).
pub fn adopt_schedule(
    local: Option<ScheduleSpec>,
    peer_specs: impl IntoIterator<Item = ScheduleSpec>,
) -> Option<ScheduleSpec> {
    if let Some(l) = local.filter(|s| s.validate().is_ok()) {
        return Some(l);
    }
    let mut votes: BTreeMap<(i64, i64, i64), usize> = BTreeMap::new();
    for s in peer_specs.into_iter().filter(|s| s.validate().is_ok()) {
        *votes
            .entry((s.genesis_ms, s.epoch_ms, s.round_ms))
            .or_default() += 1;
    }
    // `max_by_key` keeps the LAST maximum; iterating the sorted map in reverse makes that the
    // smallest key among the tied ones.
    votes
        .into_iter()
        .rev()
        .max_by_key(|(_, n)| *n)
        .map(|((genesis_ms, epoch_ms, round_ms), _)| ScheduleSpec {
            genesis_ms,
            epoch_ms,
            round_ms,
        })
}

/// The specs peers advertise in their records, for [`adopt_schedule`].
pub fn peer_specs(peers: &[PeerView]) -> impl Iterator<Item = ScheduleSpec> + '_ {
    peers.iter().filter_map(|p| p.record.schedule)
}

/// Milliseconds since the Unix epoch from the system clock (negative before 1970).
pub fn unix_now_ms() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

/// A source of schedule and time. `spec()` is `None` until the node knows the schedule (not yet
/// configured or learnt from peers): every derived timing is then unknown, never guessed.
pub trait Schedule: Send + Sync {
    fn spec(&self) -> Option<ScheduleSpec>;
    fn now_ms(&self) -> i64;

    /// [`infermesh_state::timing`] at this source's now.
    fn timing(&self, alert_lead_ms: i64) -> Timing {
        timing(self.spec().as_ref(), self.now_ms(), alert_lead_ms)
    }

    /// The epoch containing now; `None` while the schedule is unknown or before genesis.
    fn current_epoch(&self) -> Option<u64> {
        self.spec()
            .filter(|s| s.validate().is_ok())
            .and_then(|s| s.epoch_at(self.now_ms()))
    }
}

/// The real node's schedule: its configured spec, or the one learnt from peers, on the system
/// clock.
#[derive(Debug)]
pub struct EmbeddedSchedule {
    local: Option<ScheduleSpec>,
    learnt: RwLock<Option<ScheduleSpec>>,
}

impl EmbeddedSchedule {
    /// `local` is the spec from this node's config, `None` to learn it from peers.
    pub fn new(local: Option<ScheduleSpec>) -> Self {
        Self {
            local,
            learnt: RwLock::new(None),
        }
    }

    /// Re-runs [`adopt_schedule`] over what peers advertise and returns the spec now in use.
    /// Call it on every gossip change.
    ///
    /// A learnt spec is kept when no peer advertises one any more: a node that lost its peers
    /// still knows when the rounds are.
    pub fn learn(
        &self,
        peer_specs: impl IntoIterator<Item = ScheduleSpec>,
    ) -> Option<ScheduleSpec> {
        let Some(next) = adopt_schedule(self.local, peer_specs) else {
            return self.spec();
        };
        if self.local.is_some_and(|l| l == next) {
            return Some(next);
        }
        let mut learnt = self.learnt.write().unwrap_or_else(|e| e.into_inner());
        match *learnt {
            None => tracing::info!(?next, "learnt the mesh schedule from peers"),
            Some(prev) if prev != next => {
                tracing::warn!(
                    ?prev,
                    ?next,
                    "peers moved to another schedule; following them"
                )
            }
            Some(_) => {}
        }
        *learnt = Some(next);
        Some(next)
    }

    /// [`EmbeddedSchedule::learn`] from a peer table.
    pub fn learn_from_peers(&self, peers: &[PeerView]) -> Option<ScheduleSpec> {
        self.learn(peer_specs(peers))
    }
}

impl Schedule for EmbeddedSchedule {
    fn spec(&self) -> Option<ScheduleSpec> {
        let learnt = *self.learnt.read().unwrap_or_else(|e| e.into_inner());
        adopt_schedule(self.local, learnt)
    }

    fn now_ms(&self) -> i64 {
        unix_now_ms()
    }
}

/// A clock for tests and `selfcheck`: either frozen and moved by hand ([`SyntheticSchedule::advance`],
/// [`SyntheticSchedule::set_now`]), or running from a chosen start at a chosen speed.
#[derive(Debug)]
pub struct SyntheticSchedule {
    spec: RwLock<Option<ScheduleSpec>>,
    clock: Mutex<Clock>,
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Synthetic now at `anchor`.
    base_ms: i64,
    /// `None` while frozen.
    anchor: Option<Instant>,
    /// Synthetic milliseconds per real millisecond while running.
    scale: f64,
}

impl Clock {
    fn now(&self) -> i64 {
        match self.anchor {
            None => self.base_ms,
            Some(at) => {
                let elapsed = at.elapsed().as_secs_f64() * 1_000.0 * self.scale;
                self.base_ms.saturating_add(elapsed as i64)
            }
        }
    }
}

impl SyntheticSchedule {
    /// A frozen clock at `now_ms`; time moves only when told to.
    pub fn frozen(spec: Option<ScheduleSpec>, now_ms: i64) -> Self {
        Self::with_clock(spec, now_ms, None, 1.0)
    }

    /// A clock running at real speed from `start_ms`.
    pub fn running(spec: Option<ScheduleSpec>, start_ms: i64) -> Self {
        Self::running_scaled(spec, start_ms, 1.0)
    }

    /// A clock running `scale` times faster than real time from `start_ms` (negative or
    /// non-finite scales are treated as frozen).
    pub fn running_scaled(spec: Option<ScheduleSpec>, start_ms: i64, scale: f64) -> Self {
        let scale = if scale.is_finite() {
            scale.max(0.0)
        } else {
            0.0
        };
        Self::with_clock(spec, start_ms, Some(Instant::now()), scale)
    }

    fn with_clock(
        spec: Option<ScheduleSpec>,
        base_ms: i64,
        anchor: Option<Instant>,
        scale: f64,
    ) -> Self {
        Self {
            spec: RwLock::new(spec),
            clock: Mutex::new(Clock {
                base_ms,
                anchor,
                scale,
            }),
        }
    }

    /// Moves now forward (or back, for negative `ms`); a running clock keeps running.
    pub fn advance(&self, ms: i64) {
        let mut c = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        c.base_ms = c.now().saturating_add(ms);
        c.anchor = c.anchor.map(|_| Instant::now());
    }

    /// Jumps to `now_ms`; a running clock keeps running from there.
    pub fn set_now(&self, now_ms: i64) {
        let mut c = self.clock.lock().unwrap_or_else(|e| e.into_inner());
        c.base_ms = now_ms;
        c.anchor = c.anchor.map(|_| Instant::now());
    }

    /// Replaces the spec, e.g. `None` → `Some` to simulate a node that just learnt it.
    pub fn set_spec(&self, spec: Option<ScheduleSpec>) {
        *self.spec.write().unwrap_or_else(|e| e.into_inner()) = spec;
    }
}

impl Schedule for SyntheticSchedule {
    fn spec(&self) -> Option<ScheduleSpec> {
        *self.spec.read().unwrap_or_else(|e| e.into_inner())
    }

    fn now_ms(&self) -> i64 {
        self.clock.lock().unwrap_or_else(|e| e.into_inner()).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use infermesh_state::constants::{ALERT_LEAD_MS, AUTO_TEST_MIN_LEAD_MS, TEST_TIMEOUT_MS};

    fn spec(genesis_ms: i64, epoch_ms: i64, round_ms: i64) -> ScheduleSpec {
        ScheduleSpec {
            genesis_ms,
            epoch_ms,
            round_ms,
        }
    }

    #[test]
    fn mesh_schedule_fits_the_tunables() {
        let s = MESH_SCHEDULE;
        s.validate().unwrap();
        assert_eq!(s.genesis_ms % 86_400_000, 0, "genesis at midnight UTC");
        assert_eq!(s.genesis_ms, 1_767_225_600_000, "2026-01-01T00:00:00Z");
        assert_eq!(86_400_000 % s.epoch_ms, 0, "rounds at fixed clock times");
        assert!(
            s.epoch_ms - s.round_ms - ALERT_LEAD_MS >= 2 * AUTO_TEST_MIN_LEAD_MS,
            "room to auto-test after the round and before the next alert"
        );
        assert!(s.round_ms >= 2 * TEST_TIMEOUT_MS);
    }

    #[test]
    fn fast_schedule_is_valid() {
        let s = fast_schedule(5);
        s.validate().unwrap();
        assert_eq!((s.genesis_ms, s.epoch_ms, s.round_ms), (5, 20_000, 4_000));
    }

    #[test]
    fn adopt_prefers_valid_local() {
        let local = spec(0, 100, 10);
        let peer = spec(0, 200, 10);
        assert_eq!(adopt_schedule(Some(local), [peer, peer]), Some(local));
        let invalid = spec(0, 10, 10);
        assert_eq!(adopt_schedule(Some(invalid), [peer]), Some(peer));
        assert_eq!(adopt_schedule(Some(invalid), []), None);
        assert_eq!(adopt_schedule(None, []), None);
    }

    #[test]
    fn adopt_majority_then_smallest() {
        let a = spec(0, 100, 10);
        let b = spec(0, 200, 10);
        let c = spec(-5, 300, 10);
        let bad = spec(0, 0, 0);
        let cases: Vec<(Vec<ScheduleSpec>, Option<ScheduleSpec>)> = vec![
            (vec![a], Some(a)),
            (vec![b, a, b], Some(b)),
            (vec![a, b], Some(a)),
            (vec![b, a], Some(a)),
            (vec![b, c], Some(c)),
            (vec![bad, bad, bad, b], Some(b)),
            (vec![bad], None),
        ];
        for (peers, want) in cases {
            assert_eq!(adopt_schedule(None, peers.clone()), want, "{peers:?}");
            let mut rev = peers.clone();
            rev.reverse();
            assert_eq!(adopt_schedule(None, rev), want, "order must not matter");
        }
    }

    #[test]
    fn embedded_learns_and_keeps_spec() {
        let s = EmbeddedSchedule::new(None);
        assert_eq!(s.spec(), None);
        assert_eq!(s.timing(ALERT_LEAD_MS), Timing::UNKNOWN);
        assert_eq!(s.current_epoch(), None);
        let a = spec(0, 100, 10);
        assert_eq!(s.learn([a]), Some(a));
        assert_eq!(s.spec(), Some(a));
        assert_eq!(s.learn([]), Some(a), "kept when peers go quiet");
        let b = spec(0, 200, 10);
        assert_eq!(s.learn([b, b, a]), Some(b), "follows the majority");
        assert!(s.current_epoch().is_some());
        assert!(s.timing(ALERT_LEAD_MS).is_known());

        let local = EmbeddedSchedule::new(Some(a));
        assert_eq!(local.learn([b, b]), Some(a), "local config wins");
        assert_eq!(local.spec(), Some(a));
    }

    #[test]
    fn unix_now_is_recent() {
        assert!(unix_now_ms() > MESH_SCHEDULE.genesis_ms - 365 * 86_400_000);
    }

    #[test]
    fn synthetic_frozen_moves_only_when_told() {
        let sp = spec(1_000, 100, 10);
        let s = SyntheticSchedule::frozen(Some(sp), 1_000);
        assert_eq!(s.now_ms(), 1_000);
        assert_eq!(s.current_epoch(), Some(0));
        assert!(s.timing(0).in_round);
        s.advance(150);
        assert_eq!(s.now_ms(), 1_150);
        assert_eq!(s.current_epoch(), Some(1));
        assert!(!s.timing(0).in_round);
        s.set_now(999);
        assert_eq!(s.current_epoch(), None, "before genesis");
        s.set_spec(None);
        assert_eq!(s.timing(0), Timing::UNKNOWN);
        s.set_spec(Some(sp));
        assert!(s.timing(0).is_known());
    }

    #[test]
    fn synthetic_running_advances_with_real_time() {
        let s = SyntheticSchedule::running_scaled(None, 0, 1_000.0);
        std::thread::sleep(std::time::Duration::from_millis(5));
        let t = s.now_ms();
        assert!(t >= 5_000, "{t}");
        s.set_now(-1_000_000);
        assert!(s.now_ms() < 0, "keeps running from the new point");
        s.advance(2_000_000);
        assert!(s.now_ms() >= 1_000_000);

        let real = SyntheticSchedule::running(None, 42);
        assert!((42..42 + 60_000).contains(&real.now_ms()));
        let nan = SyntheticSchedule::running_scaled(None, 7, f64::NAN);
        assert_eq!(nan.now_ms(), 7);
    }
}
