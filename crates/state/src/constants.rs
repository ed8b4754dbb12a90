//! The one place the onboarding and schedule constants live.
//!
//! They are carried in a [`Tunables`] value rather than used as bare constants so tests and the
//! demo can run with short epochs without a separate code path.

use serde::{Deserialize, Serialize};

const SECOND_MS: i64 = 1_000;
const MINUTE_MS: i64 = 60 * SECOND_MS;
const HOUR_MS: i64 = 60 * MINUTE_MS;

/// How long before a round an operator is told the node must be online.
pub const ALERT_LEAD_MS: i64 = 10 * MINUTE_MS;
/// An untested backend is auto-tested only when the next round is at least this far away, so a
/// test never competes with the round itself.
pub const AUTO_TEST_MIN_LEAD_MS: i64 = HOUR_MS;
/// Backoff between automatic test attempts of one backend.
pub const AUTO_TEST_RETRY_MS: i64 = 5 * MINUTE_MS;
/// A test (load → health → inference → stop per model) that runs longer than this has failed.
pub const TEST_TIMEOUT_MS: i64 = 5 * MINUTE_MS;
/// Time budget of one admission challenge (a few tokens; a 2-core CPU answers in under a second,
/// the rest is headroom for a node busy loading or serving).
pub const ADMISSION_CHECK_MS: i64 = 20 * SECOND_MS;
/// Interval of the `info` onboarding heartbeat logged while a node is inactive.
pub const ONBOARDING_HEARTBEAT_MS: i64 = 5 * MINUTE_MS;

/// The configurable timing knobs. Missing fields in a config take their defaults, so a config
/// may override only what it needs (e.g. a demo shortening `alert_lead_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Tunables {
    pub alert_lead_ms: i64,
    pub auto_test_min_lead_ms: i64,
    pub auto_test_retry_ms: i64,
    pub test_timeout_ms: i64,
    pub onboarding_heartbeat_ms: i64,
    pub admission_check_ms: i64,
}

impl Tunables {
    /// Production values; `const` so it can seed other constants.
    pub const DEFAULT: Tunables = Tunables {
        alert_lead_ms: ALERT_LEAD_MS,
        auto_test_min_lead_ms: AUTO_TEST_MIN_LEAD_MS,
        auto_test_retry_ms: AUTO_TEST_RETRY_MS,
        test_timeout_ms: TEST_TIMEOUT_MS,
        onboarding_heartbeat_ms: ONBOARDING_HEARTBEAT_MS,
        admission_check_ms: ADMISSION_CHECK_MS,
    };
}

/// Same value as [`Tunables::DEFAULT`], for callers that import the module rather than the type.
pub const DEFAULT: Tunables = Tunables::DEFAULT;

impl Default for Tunables {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let t = Tunables::default();
        let table: [(i64, i64); 6] = [
            (t.alert_lead_ms, 600_000),
            (t.auto_test_min_lead_ms, 3_600_000),
            (t.auto_test_retry_ms, 300_000),
            (t.test_timeout_ms, 300_000),
            (t.onboarding_heartbeat_ms, 300_000),
            (t.admission_check_ms, 20_000),
        ];
        for (i, (got, want)) in table.into_iter().enumerate() {
            assert_eq!(got, want, "field #{i}");
        }
        assert_eq!(t, DEFAULT);
        assert_eq!(t, Tunables::DEFAULT);
    }

    #[test]
    fn serde_round_trips_and_fills_missing_fields() {
        let t = Tunables {
            alert_lead_ms: 2_000,
            ..Tunables::DEFAULT
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains("\"alert_lead_ms\":2000"), "{json}");
        assert_eq!(serde_json::from_str::<Tunables>(&json).unwrap(), t);

        let partial: Tunables = serde_json::from_str(r#"{"test_timeout_ms": 1500}"#).unwrap();
        assert_eq!(partial.test_timeout_ms, 1_500);
        assert_eq!(partial.alert_lead_ms, ALERT_LEAD_MS);
        assert_eq!(serde_json::from_str::<Tunables>("{}").unwrap(), DEFAULT);
    }
}
