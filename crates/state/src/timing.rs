//! Where "now" sits relative to the validation rounds, and how durations and clock times are
//! written for humans.

use serde::{Deserialize, Serialize};

use crate::schedule::ScheduleSpec;

/// A pure function of schedule and now; see [`timing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Timing {
    /// Whole seconds (rounded up) until the target round starts; `-1` when the schedule is
    /// unknown. Never `0`: at the exact start instant the round is running and the target has
    /// already moved to the next epoch.
    pub seconds_until_next_round: i64,
    /// A round is running now: the node must be online.
    pub in_round: bool,
    /// In a round, or within the alert lead of the next one.
    pub should_be_online: bool,
    /// The epoch containing now; `None` before genesis or when the schedule is unknown.
    pub epoch: Option<u64>,
    /// The epoch whose round `seconds_until_next_round` counts down to.
    pub target_round_epoch: Option<u64>,
    /// Start of the target round.
    pub next_round_at_ms: Option<i64>,
    /// End (exclusive) of the running round while `in_round`; otherwise of the target round.
    pub round_ends_at_ms: Option<i64>,
}

impl Timing {
    /// The value for a node that has not learnt the schedule yet.
    pub const UNKNOWN: Timing = Timing {
        seconds_until_next_round: -1,
        in_round: false,
        should_be_online: false,
        epoch: None,
        target_round_epoch: None,
        next_round_at_ms: None,
        round_ends_at_ms: None,
    };

    pub fn is_known(&self) -> bool {
        self.seconds_until_next_round >= 0
    }
}

/// Derives [`Timing`] at `now_ms`. An absent or invalid schedule is "unknown": a node must never
/// claim a countdown it cannot compute.
pub fn timing(schedule: Option<&ScheduleSpec>, now_ms: i64, alert_lead_ms: i64) -> Timing {
    let Some(s) = schedule.filter(|s| s.validate().is_ok()) else {
        return Timing::UNKNOWN;
    };
    let epoch = s.epoch_at(now_ms);
    let (current_end, target) = match epoch {
        None => (None, 0),
        Some(e) => {
            let (start, end) = s.round_window(e);
            // A round starts with its epoch, so once inside an epoch its round has started and
            // the target is always the next one; the comparison keeps that explicit.
            let target = if now_ms < start {
                e
            } else {
                e.saturating_add(1)
            };
            (Some(end), target)
        }
    };
    let in_round = current_end.is_some_and(|end| now_ms < end);
    let (target_start, target_end) = s.round_window(target);
    let until_ms = (target_start as i128 - now_ms as i128).max(1);
    let secs = until_ms.div_euclid(1_000) + i128::from(until_ms.rem_euclid(1_000) != 0);
    Timing {
        seconds_until_next_round: i64::try_from(secs).unwrap_or(i64::MAX),
        in_round,
        should_be_online: in_round || until_ms <= alert_lead_ms as i128,
        epoch,
        target_round_epoch: Some(target),
        next_round_at_ms: Some(target_start),
        round_ends_at_ms: Some(if in_round {
            current_end.unwrap_or(target_end)
        } else {
            target_end
        }),
    }
}

/// Ceiling division for non-negative `n` (signed `div_ceil` is unstable), overflow-free.
fn ceil_div(n: i64, d: i64) -> i64 {
    n / d + i64::from(n % d != 0)
}

/// "45s", "4m", "2h 15m", "3d 4h". Anything of a minute or more is rounded UP to the shown unit,
/// so a countdown never reads "0m" before its event; zero components are dropped ("2h", "3d").
/// Negative input means unknown.
/// Seconds a load that is `fraction` done after `elapsed_ms` still needs at the same pace; `None`
/// before there is a pace to go by (under 1 %) or once done.
pub fn eta_secs(fraction: f32, elapsed_ms: u64) -> Option<u64> {
    if !(0.01..1.0).contains(&fraction) {
        return None;
    }
    let left_ms = elapsed_ms as f64 * f64::from(1.0 - fraction) / f64::from(fraction);
    Some((left_ms / 1_000.0).ceil() as u64)
}

pub fn format_duration(secs: i64) -> String {
    if secs < 0 {
        return "unknown".to_string();
    }
    if secs < 60 {
        return format!("{secs}s");
    }
    let mins = ceil_div(secs, 60);
    if mins < 60 {
        return format!("{mins}m");
    }
    if mins < 24 * 60 {
        let (h, m) = (mins / 60, mins % 60);
        return if m == 0 {
            format!("{h}h")
        } else {
            format!("{h}h {m}m")
        };
    }
    let hours = ceil_div(mins, 60);
    let (d, h) = (hours / 24, hours % 24);
    if h == 0 {
        format!("{d}d")
    } else {
        format!("{d}d {h}h")
    }
}

/// "14:05 UTC" for a unix-millisecond instant, truncated to the minute.
pub fn format_clock_utc(ms: i64) -> String {
    let day_secs = ms.div_euclid(1_000).rem_euclid(86_400);
    format!("{:02}:{:02} UTC", day_secs / 3_600, day_secs % 3_600 / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: i64 = 1_700_000_000_000;
    const EPOCH: i64 = 3_600_000;
    const ROUND: i64 = 300_000;
    const LEAD: i64 = 600_000;
    const SPEC: ScheduleSpec = ScheduleSpec {
        genesis_ms: G,
        epoch_ms: EPOCH,
        round_ms: ROUND,
    };

    struct Case {
        name: &'static str,
        now: i64,
        secs: i64,
        in_round: bool,
        online: bool,
        epoch: Option<u64>,
        target: u64,
        round_end: i64,
    }

    #[test]
    fn timing_table() {
        let e1 = G + EPOCH;
        #[rustfmt::skip]
        let cases = [
            Case { name: "long before genesis", now: G - 2 * EPOCH, secs: 7_200, in_round: false, online: false, epoch: None, target: 0, round_end: G + ROUND },
            Case { name: "1 ms before genesis", now: G - 1, secs: 1, in_round: false, online: true, epoch: None, target: 0, round_end: G + ROUND },
            Case { name: "exactly at round start", now: G, secs: 3_600, in_round: true, online: true, epoch: Some(0), target: 1, round_end: G + ROUND },
            Case { name: "mid-round", now: G + ROUND / 2, secs: 3_450, in_round: true, online: true, epoch: Some(0), target: 1, round_end: G + ROUND },
            Case { name: "1 ms before round end", now: G + ROUND - 1, secs: 3_301, in_round: true, online: true, epoch: Some(0), target: 1, round_end: G + ROUND },
            Case { name: "exactly at round end", now: G + ROUND, secs: 3_300, in_round: false, online: false, epoch: Some(0), target: 1, round_end: e1 + ROUND },
            Case { name: "mid-epoch", now: G + EPOCH / 2, secs: 1_800, in_round: false, online: false, epoch: Some(0), target: 1, round_end: e1 + ROUND },
            Case { name: "1 ms outside alert lead", now: e1 - LEAD - 1, secs: 601, in_round: false, online: false, epoch: Some(0), target: 1, round_end: e1 + ROUND },
            Case { name: "exactly at alert lead", now: e1 - LEAD, secs: 600, in_round: false, online: true, epoch: Some(0), target: 1, round_end: e1 + ROUND },
            Case { name: "inside alert lead", now: e1 - 240_000, secs: 240, in_round: false, online: true, epoch: Some(0), target: 1, round_end: e1 + ROUND },
            Case { name: "1.5 s before next epoch", now: e1 - 1_500, secs: 2, in_round: false, online: true, epoch: Some(0), target: 1, round_end: e1 + ROUND },
            Case { name: "1 ms before next epoch", now: e1 - 1, secs: 1, in_round: false, online: true, epoch: Some(0), target: 1, round_end: e1 + ROUND },
            Case { name: "next epoch round start", now: e1, secs: 3_600, in_round: true, online: true, epoch: Some(1), target: 2, round_end: e1 + ROUND },
        ];
        for c in cases {
            let t = timing(Some(&SPEC), c.now, LEAD);
            let name = c.name;
            assert_eq!(t.seconds_until_next_round, c.secs, "{name}");
            assert_eq!(t.in_round, c.in_round, "{name}");
            assert_eq!(t.should_be_online, c.online, "{name}");
            assert_eq!(t.epoch, c.epoch, "{name}");
            assert_eq!(t.target_round_epoch, Some(c.target), "{name}");
            assert_eq!(
                t.next_round_at_ms,
                Some(SPEC.epoch_start(c.target)),
                "{name}"
            );
            assert_eq!(t.round_ends_at_ms, Some(c.round_end), "{name}");
            assert!(t.is_known(), "{name}");
        }
    }

    #[test]
    fn countdown_is_never_zero_and_matches_target() {
        // Sweep two epochs at a coarse-but-unaligned step plus every boundary ±1 ms.
        let mut instants: Vec<i64> = (0..2 * EPOCH + 10)
            .step_by(7_919)
            .map(|d| G - 10 + d)
            .collect();
        for k in 0..3 {
            let s = G + k * EPOCH;
            instants.extend([s - 1, s, s + 1, s + ROUND - 1, s + ROUND, s + ROUND + 1]);
        }
        for now in instants {
            let t = timing(Some(&SPEC), now, LEAD);
            assert!(t.seconds_until_next_round >= 1, "now={now} {t:?}");
            let start = t.next_round_at_ms.unwrap();
            assert!(
                start > now,
                "target round must be in the future: now={now} {t:?}"
            );
            let until = start - now;
            assert_eq!(
                t.seconds_until_next_round,
                (until + 999) / 1_000,
                "now={now}"
            );
            assert_eq!(t.should_be_online, t.in_round || until <= LEAD, "now={now}");
        }
    }

    #[test]
    fn unknown_or_invalid_schedule_is_unknown() {
        let invalid = ScheduleSpec {
            genesis_ms: G,
            epoch_ms: 10,
            round_ms: 10,
        };
        for sched in [None, Some(&invalid)] {
            for now in [0, G, G + ROUND / 2] {
                let t = timing(sched, now, LEAD);
                assert_eq!(t, Timing::UNKNOWN);
                assert_eq!(t.seconds_until_next_round, -1);
                assert!(!t.in_round && !t.should_be_online && !t.is_known());
            }
        }
    }

    #[test]
    fn zero_alert_lead_only_online_in_round() {
        let t = timing(Some(&SPEC), G + EPOCH - 1, 0);
        assert!(!t.should_be_online);
        let t = timing(Some(&SPEC), G + 1, 0);
        assert!(t.should_be_online);
    }

    #[test]
    fn timing_serializes_snake_case() {
        let t = timing(Some(&SPEC), G + ROUND, LEAD);
        let v = serde_json::to_value(t).unwrap();
        for key in [
            "seconds_until_next_round",
            "in_round",
            "should_be_online",
            "epoch",
            "target_round_epoch",
            "next_round_at_ms",
            "round_ends_at_ms",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(serde_json::from_value::<Timing>(v).unwrap(), t);
        let u = serde_json::to_value(Timing::UNKNOWN).unwrap();
        assert_eq!(u["seconds_until_next_round"], -1);
        assert!(u["epoch"].is_null());
    }

    #[test]
    fn format_duration_table() {
        let cases: [(i64, &str); 20] = [
            (-1, "unknown"),
            (0, "0s"),
            (1, "1s"),
            (45, "45s"),
            (59, "59s"),
            (60, "1m"),
            (61, "2m"),
            (240, "4m"),
            (3_540, "59m"),
            (3_541, "1h"),
            (3_600, "1h"),
            (3_601, "1h 1m"),
            (8_100, "2h 15m"),
            (8_099, "2h 15m"),
            (86_340, "23h 59m"),
            (86_341, "1d"),
            (86_400, "1d"),
            (86_401, "1d 1h"),
            (3 * 86_400 + 4 * 3_600, "3d 4h"),
            (3 * 86_400 + 3 * 3_600 + 1, "3d 4h"),
        ];
        for (secs, want) in cases {
            assert_eq!(format_duration(secs), want, "secs={secs}");
        }
        for secs in 1..200_000 {
            let s = format_duration(secs);
            assert!(!s.starts_with('0'), "secs={secs} -> {s}");
            assert!(!s.contains(" 0"), "secs={secs} -> {s}");
        }
    }

    #[test]
    fn format_clock_utc_table() {
        let cases: [(i64, &str); 7] = [
            (0, "00:00 UTC"),
            (59_999, "00:00 UTC"),
            (60_000, "00:01 UTC"),
            ((14 * 3_600 + 5 * 60) * 1_000 + 30_000, "14:05 UTC"),
            (86_400_000 - 1, "23:59 UTC"),
            (-60_000, "23:59 UTC"),
            // 2023-11-14T22:13:20Z
            (G, "22:13 UTC"),
        ];
        for (ms, want) in cases {
            assert_eq!(format_clock_utc(ms), want, "ms={ms}");
        }
    }

    #[test]
    fn a_loads_time_left_follows_its_pace() {
        assert_eq!(eta_secs(0.25, 3_000), Some(9));
        assert_eq!(eta_secs(0.5, 1_001), Some(2));
        assert_eq!(eta_secs(0.005, 3_000), None, "no pace yet");
        assert_eq!(eta_secs(1.0, 3_000), None, "done");
        assert_eq!(eta_secs(f32::NAN, 3_000), None);
    }
}
