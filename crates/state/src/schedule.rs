//! The embedded epoch schedule: boundaries are arithmetic on shared config, so every node
//! computes the same epochs and rounds with no coordinator.

use serde::{Deserialize, Serialize};

/// Epoch `k` starts at `genesis_ms + k * epoch_ms` and opens with a validation round
/// `[start, start + round_ms)`. All times are unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ScheduleSpec {
    pub genesis_ms: i64,
    pub epoch_ms: i64,
    pub round_ms: i64,
}

/// Saturates rather than wrapping: a far-future epoch must stay in the future, not turn negative.
fn clamp_i64(v: i128) -> i64 {
    v.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

impl ScheduleSpec {
    /// A round must fit strictly inside its epoch, otherwise nodes would never be allowed offline
    /// (or, with a zero round, never validated).
    pub fn validate(&self) -> Result<(), String> {
        if self.epoch_ms <= 0 {
            return Err(format!("epoch_ms must be > 0 (got {})", self.epoch_ms));
        }
        if self.round_ms <= 0 {
            return Err(format!("round_ms must be > 0 (got {})", self.round_ms));
        }
        if self.round_ms >= self.epoch_ms {
            return Err(format!(
                "round_ms ({}) must be shorter than epoch_ms ({})",
                self.round_ms, self.epoch_ms
            ));
        }
        Ok(())
    }

    /// The epoch containing `now_ms`; `None` before genesis (or for an invalid spec, which has no
    /// meaningful epochs).
    pub fn epoch_at(&self, now_ms: i64) -> Option<u64> {
        if self.epoch_ms <= 0 || now_ms < self.genesis_ms {
            return None;
        }
        let since = now_ms as i128 - self.genesis_ms as i128;
        u64::try_from(since / self.epoch_ms as i128).ok()
    }

    /// Start of epoch `epoch` (which is also the start of its round).
    pub fn epoch_start(&self, epoch: u64) -> i64 {
        clamp_i64(self.genesis_ms as i128 + epoch as i128 * self.epoch_ms as i128)
    }

    /// `(start_ms, end_ms)` of epoch `epoch`'s validation round; `end_ms` is exclusive.
    pub fn round_window(&self, epoch: u64) -> (i64, i64) {
        let start = self.epoch_start(epoch);
        (start, clamp_i64(start as i128 + self.round_ms as i128))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: ScheduleSpec = ScheduleSpec {
        genesis_ms: 1_000_000,
        epoch_ms: 3_600_000,
        round_ms: 300_000,
    };

    #[test]
    fn validation_table() {
        let cases: [(i64, i64, bool); 8] = [
            (3_600_000, 300_000, true),
            (2, 1, true),
            (0, 0, false),
            (-5, 1, false),
            (10, 0, false),
            (10, -1, false),
            (10, 10, false),
            (10, 11, false),
        ];
        for (epoch_ms, round_ms, ok) in cases {
            let s = ScheduleSpec {
                genesis_ms: 0,
                epoch_ms,
                round_ms,
            };
            assert_eq!(s.validate().is_ok(), ok, "{s:?}");
        }
    }

    #[test]
    fn epoch_at_table() {
        let g = SPEC.genesis_ms;
        let e = SPEC.epoch_ms;
        let cases: [(i64, Option<u64>); 9] = [
            (i64::MIN, None),
            (0, None),
            (g - 1, None),
            (g, Some(0)),
            (g + 1, Some(0)),
            (g + e - 1, Some(0)),
            (g + e, Some(1)),
            (g + 5 * e + 42, Some(5)),
            (i64::MAX, Some(((i64::MAX - g) / e) as u64)),
        ];
        for (now, want) in cases {
            assert_eq!(SPEC.epoch_at(now), want, "now={now}");
        }
    }

    #[test]
    fn invalid_spec_has_no_epochs() {
        let s = ScheduleSpec {
            genesis_ms: 0,
            epoch_ms: 0,
            round_ms: 0,
        };
        assert_eq!(s.epoch_at(10), None);
    }

    #[test]
    fn round_windows() {
        let cases: [(u64, (i64, i64)); 3] = [
            (0, (1_000_000, 1_300_000)),
            (1, (4_600_000, 4_900_000)),
            (10, (37_000_000, 37_300_000)),
        ];
        for (epoch, want) in cases {
            assert_eq!(SPEC.round_window(epoch), want, "epoch={epoch}");
            assert_eq!(SPEC.epoch_start(epoch), want.0);
        }
        // Every instant of a round maps back to that round's epoch.
        for epoch in 0..5 {
            let (s, end) = SPEC.round_window(epoch);
            assert_eq!(SPEC.epoch_at(s), Some(epoch));
            assert_eq!(SPEC.epoch_at(end - 1), Some(epoch));
        }
    }

    #[test]
    fn far_future_epoch_saturates() {
        assert_eq!(SPEC.epoch_start(u64::MAX), i64::MAX);
        assert_eq!(SPEC.round_window(u64::MAX), (i64::MAX, i64::MAX));
    }

    #[test]
    fn serde_round_trip() {
        let json = serde_json::to_string(&SPEC).unwrap();
        assert_eq!(
            json,
            r#"{"genesis_ms":1000000,"epoch_ms":3600000,"round_ms":300000}"#
        );
        assert_eq!(serde_json::from_str::<ScheduleSpec>(&json).unwrap(), SPEC);
    }
}
