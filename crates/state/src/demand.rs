//! Extra replicas for a group whose serving replicas are saturated, released again when demand
//! falls.
//!
//! Growth and shrinkage both need a full window of one reading: a burst shorter than the window
//! must not load a model (minutes of work) only to release it again, and the band between
//! "busy" and "calm" changes nothing, so a load hovering near one threshold cannot flap.

use std::collections::{BTreeMap, BTreeSet};

use crate::timing::format_duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemandPolicy {
    /// In-flight requests per serving replica at or above which the group is saturated.
    pub busy_per_replica: f64,
    /// At or below this per replica, demand has fallen.
    pub calm_per_replica: f64,
    /// Saturated continuously this long → one more replica.
    pub grow_after_ms: u64,
    /// Calm continuously this long → one fewer extra replica.
    pub shrink_after_ms: u64,
}

impl Default for DemandPolicy {
    fn default() -> Self {
        Self {
            busy_per_replica: 4.0,
            calm_per_replica: 1.0,
            grow_after_ms: 10_000,
            // Longer than growth: a replica is costly to load, so keep it through short lulls.
            shrink_after_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemandChange {
    pub model: String,
    pub extra: u32,
    pub reason: String,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ModelDemand {
    extra: u32,
    saturated_since: Option<u64>,
    calm_since: Option<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct DemandTracker {
    models: BTreeMap<String, ModelDemand>,
}

impl DemandTracker {
    /// One observation of a group at `now_ms`: `in_flight` summed over its serving replicas,
    /// `serving` their count, `can_grow` = wanted (with current extra) < max and an idle
    /// candidate exists. Returns a change when `extra` moves.
    ///
    /// With `busy_per_replica <= calm_per_replica` (a misconfiguration) a reading that is both
    /// is judged busy.
    pub fn observe(
        &mut self,
        model: &str,
        now_ms: u64,
        in_flight: u32,
        serving: u32,
        can_grow: bool,
        policy: &DemandPolicy,
    ) -> Option<DemandChange> {
        let state = self.models.entry(model.to_string()).or_default();
        if serving == 0 {
            // Nothing serves, so the load says nothing about capacity; the group's own deficit
            // (placement) is what brings a replica back.
            state.saturated_since = None;
            state.calm_since = None;
            return None;
        }
        let avg = f64::from(in_flight) / f64::from(serving);
        if avg >= policy.busy_per_replica {
            state.calm_since = None;
            let since = start(&mut state.saturated_since, now_ms);
            let lasted = now_ms - since;
            // Without room to grow the window keeps running, so growth follows at once when
            // room appears after a saturation that already lasted.
            if !can_grow || lasted < policy.grow_after_ms {
                return None;
            }
            state.extra = state.extra.saturating_add(1);
            state.saturated_since = Some(now_ms);
            return Some(DemandChange {
                model: model.to_string(),
                extra: state.extra,
                reason: format!(
                    "{model}: {serving} {} saturated ({in_flight} in flight, {} per replica ≥ {}) \
                     for {}; one more replica",
                    replicas(serving),
                    num(avg),
                    num(policy.busy_per_replica),
                    seconds(lasted)
                ),
            });
        }
        state.saturated_since = None;
        if avg > policy.calm_per_replica || state.extra == 0 {
            // The band between the thresholds (or nothing to release) resets the calm window,
            // so a release always follows an unbroken calm stretch.
            state.calm_since = None;
            return None;
        }
        let since = start(&mut state.calm_since, now_ms);
        let lasted = now_ms - since;
        if lasted < policy.shrink_after_ms {
            return None;
        }
        let before = state.extra;
        state.extra -= 1;
        state.calm_since = Some(now_ms);
        let which = if before == 1 {
            "the extra replica".to_string()
        } else {
            format!("one of the {before} extra replicas")
        };
        Some(DemandChange {
            model: model.to_string(),
            extra: state.extra,
            reason: format!(
                "{model}: demand fell ({in_flight} in flight over {serving} {}, ≤ {} per replica \
                 for {}); releasing {which}",
                replicas(serving),
                num(policy.calm_per_replica),
                seconds(lasted)
            ),
        })
    }

    pub fn extra(&self, model: &str) -> u32 {
        self.models.get(model).map_or(0, |m| m.extra)
    }

    /// All models with extra > 0.
    pub fn extras(&self) -> BTreeMap<String, u32> {
        self.models
            .iter()
            .filter(|(_, m)| m.extra > 0)
            .map(|(model, m)| (model.clone(), m.extra))
            .collect()
    }

    /// Forget models no longer in a group.
    pub fn retain(&mut self, models: &BTreeSet<String>) {
        self.models.retain(|model, _| models.contains(model));
    }

    /// Stops judging `model` (another node is its judge now). Kept, a stale `extra` would come
    /// back as demand the day this node is judge again.
    pub fn forget(&mut self, model: &str) {
        self.models.remove(model);
    }

    /// Starts judging `model` from the `extra` its previous judge published, so a change of
    /// judge (a replica with a smaller id became serving, often the very replica demand added)
    /// neither drops the extra replicas nor adds more. Does nothing while `model` is tracked.
    pub fn adopt(&mut self, model: &str, extra: u32) {
        self.models
            .entry(model.to_string())
            .or_insert_with(|| ModelDemand {
                extra,
                ..ModelDemand::default()
            });
    }
}

/// The window's start, opening it now when none is open or when the clock went back past it
/// (a stored start in the future would underflow `now - since`; restarting is the safe reading).
fn start(since: &mut Option<u64>, now_ms: u64) -> u64 {
    match *since {
        Some(s) if s <= now_ms => s,
        _ => {
            *since = Some(now_ms);
            now_ms
        }
    }
}

fn seconds(ms: u64) -> String {
    format_duration(i64::try_from(ms / 1_000).unwrap_or(i64::MAX))
}

/// At most one decimal, none when whole: "4", "4.5", "3.3".
fn num(x: f64) -> String {
    let s = format!("{x:.1}");
    s.strip_suffix(".0").map_or(s.clone(), str::to_string)
}

fn replicas(n: u32) -> &'static str {
    if n == 1 {
        "replica"
    } else {
        "replicas"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: &str = "m";

    fn policy() -> DemandPolicy {
        DemandPolicy::default()
    }

    /// 8 in flight over 2 replicas: 4 per replica, exactly at the busy threshold.
    fn busy(t: &mut DemandTracker, now: u64, can_grow: bool) -> Option<DemandChange> {
        t.observe(M, now, 8, 2, can_grow, &policy())
    }

    fn calm(t: &mut DemandTracker, now: u64) -> Option<DemandChange> {
        t.observe(M, now, 2, 2, true, &policy())
    }

    fn grown(extra: u32) -> DemandTracker {
        let mut t = DemandTracker::default();
        for i in 0..extra {
            let base = u64::from(i) * 10_000;
            busy(&mut t, base, true);
            assert!(busy(&mut t, base + 10_000, true).is_some());
        }
        assert_eq!(t.extra(M), extra);
        t
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let p = DemandPolicy::default();
        assert_eq!(p.busy_per_replica, 4.0);
        assert_eq!(p.calm_per_replica, 1.0);
        assert_eq!(p.grow_after_ms, 10_000);
        assert_eq!(p.shrink_after_ms, 30_000);
    }

    #[test]
    fn grows_only_after_a_full_window_and_needs_another_for_the_next() {
        let mut t = DemandTracker::default();
        assert_eq!(busy(&mut t, 1_000, true), None);
        assert_eq!(busy(&mut t, 10_999, true), None);
        let change = busy(&mut t, 11_000, true).expect("a full window grows");
        assert_eq!(change.extra, 1);
        assert_eq!(change.model, M);
        assert_eq!(
            change.reason,
            "m: 2 replicas saturated (8 in flight, 4 per replica ≥ 4) for 10s; one more replica"
        );
        assert_eq!(t.extra(M), 1);
        assert_eq!(
            busy(&mut t, 12_000, true),
            None,
            "the next step needs another window"
        );
        assert_eq!(busy(&mut t, 20_999, true), None);
        assert_eq!(busy(&mut t, 21_000, true).map(|c| c.extra), Some(2));
    }

    #[test]
    fn reason_shows_a_fractional_average_with_one_decimal() {
        let mut t = DemandTracker::default();
        t.observe(M, 0, 9, 2, true, &policy());
        let c = t.observe(M, 10_000, 9, 2, true, &policy()).unwrap();
        assert!(
            c.reason.contains("(9 in flight, 4.5 per replica ≥ 4)"),
            "{}",
            c.reason
        );
        let mut t = DemandTracker::default();
        t.observe(M, 0, 16, 3, true, &policy());
        let c = t.observe(M, 10_000, 16, 3, true, &policy()).unwrap();
        assert!(c.reason.contains("5.3 per replica"), "{}", c.reason);
    }

    #[test]
    fn a_break_in_saturation_restarts_the_window() {
        let mut t = DemandTracker::default();
        busy(&mut t, 0, true);
        // 3 per replica: inside the band.
        t.observe(M, 5_000, 6, 2, true, &policy());
        assert_eq!(busy(&mut t, 10_000, true), None);
        assert_eq!(busy(&mut t, 19_999, true), None);
        assert!(busy(&mut t, 20_000, true).is_some());
    }

    #[test]
    fn respects_can_grow_and_grows_once_room_appears() {
        let mut t = DemandTracker::default();
        busy(&mut t, 0, false);
        assert_eq!(busy(&mut t, 60_000, false), None);
        assert_eq!(t.extra(M), 0);
        assert_eq!(busy(&mut t, 61_000, true).map(|c| c.extra), Some(1));
    }

    #[test]
    fn shrinks_only_after_a_calm_window() {
        let mut t = grown(2);
        assert_eq!(calm(&mut t, 100_000), None);
        assert_eq!(calm(&mut t, 129_999), None);
        let c = calm(&mut t, 130_000).expect("a full calm window shrinks");
        assert_eq!(c.extra, 1);
        assert_eq!(
            c.reason,
            "m: demand fell (2 in flight over 2 replicas, ≤ 1 per replica for 30s); releasing \
             one of the 2 extra replicas"
        );
        assert_eq!(
            calm(&mut t, 150_000),
            None,
            "the next step needs another window"
        );
        let c = calm(&mut t, 160_000).unwrap();
        assert_eq!(c.extra, 0);
        assert!(
            c.reason.ends_with("releasing the extra replica"),
            "{}",
            c.reason
        );
        assert_eq!(calm(&mut t, 500_000), None, "never below zero");
        assert_eq!(t.extra(M), 0);
    }

    #[test]
    fn the_band_between_thresholds_resets_both_windows() {
        let mut t = grown(1);
        calm(&mut t, 100_000);
        t.observe(M, 120_000, 5, 2, true, &policy());
        assert_eq!(calm(&mut t, 130_000), None);
        assert_eq!(calm(&mut t, 159_999), None);
        assert!(calm(&mut t, 160_000).is_some());
        assert_eq!(t.extra(M), 0);
    }

    #[test]
    fn saturation_resets_the_calm_window() {
        let mut t = grown(1);
        calm(&mut t, 100_000);
        busy(&mut t, 110_000, false);
        assert_eq!(calm(&mut t, 131_000), None);
        assert_eq!(t.extra(M), 1);
    }

    #[test]
    fn serving_zero_judges_nothing_and_keeps_extra() {
        let mut t = grown(1);
        calm(&mut t, 100_000);
        assert_eq!(t.observe(M, 129_000, 0, 0, true, &policy()), None);
        assert_eq!(calm(&mut t, 130_000), None, "the calm window restarted");
        assert_eq!(t.extra(M), 1);
        let mut t = DemandTracker::default();
        busy(&mut t, 0, true);
        t.observe(M, 5_000, 50, 0, true, &policy());
        assert_eq!(
            busy(&mut t, 10_000, true),
            None,
            "the busy window restarted"
        );
    }

    #[test]
    fn time_going_backwards_restarts_windows_without_panicking() {
        let mut t = DemandTracker::default();
        busy(&mut t, 50_000, true);
        assert_eq!(busy(&mut t, 1_000, true), None);
        assert_eq!(busy(&mut t, 10_999, true), None);
        assert!(busy(&mut t, 11_000, true).is_some());
        calm(&mut t, 90_000);
        assert_eq!(calm(&mut t, 0), None);
        assert!(calm(&mut t, 30_000).is_some());
        assert_eq!(t.extra(M), 0);
    }

    #[test]
    fn extras_and_retain() {
        let mut t = grown(1);
        t.observe("idle-model", 0, 0, 1, true, &policy());
        assert_eq!(t.extras(), BTreeMap::from([(M.to_string(), 1)]));
        assert_eq!(t.extra("idle-model"), 0);
        assert_eq!(t.extra("unknown"), 0);
        t.retain(&BTreeSet::from(["idle-model".to_string()]));
        assert_eq!(t.extra(M), 0);
        assert!(t.extras().is_empty());
        t.retain(&BTreeSet::new());
        assert!(t.models.is_empty());
    }

    #[test]
    fn a_new_judge_adopts_the_published_extra_and_a_former_one_forgets_its_own() {
        let mut t = DemandTracker::default();
        t.adopt(M, 2);
        assert_eq!(t.extra(M), 2);
        // Already judging: what another node published changes nothing.
        t.adopt(M, 0);
        assert_eq!(t.extra(M), 2);
        // Calm windows start from the adoption, not from some earlier era.
        assert_eq!(t.observe(M, 0, 0, 2, true, &policy()), None);
        assert_eq!(t.observe(M, 29_999, 0, 2, true, &policy()), None);
        assert_eq!(
            t.observe(M, 30_000, 0, 2, true, &policy()).map(|c| c.extra),
            Some(1)
        );
        t.forget(M);
        assert_eq!(t.extra(M), 0);
        assert!(t.extras().is_empty());
        t.adopt(M, 0);
        assert_eq!(t.extra(M), 0);
    }
}
