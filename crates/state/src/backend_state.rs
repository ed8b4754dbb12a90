//! Per-backend onboarding state: `waiting | testing | test_failed | serving`.

use serde::{Deserialize, Serialize};

/// Serialized `waiting` / `testing` / `test_failed` / `serving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendState {
    /// Validated or untested, waiting for the round.
    Waiting,
    /// A test is in flight.
    Testing,
    /// The tester's most recent result failed.
    TestFailed,
    /// Healthy and admitted for routing on an active node.
    Serving,
}

impl BackendState {
    pub const ALL: [BackendState; 4] = [
        Self::Waiting,
        Self::Testing,
        Self::TestFailed,
        Self::Serving,
    ];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Testing => "testing",
            Self::TestFailed => "test_failed",
            Self::Serving => "serving",
        }
    }
}

impl BackendState {
    /// The words a human reads (deck, dashboard): lowercase like the node states beside them.
    pub fn label(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Testing => "testing",
            Self::TestFailed => "test failed",
            Self::Serving => "serving",
        }
    }

    /// [`BackendState::label`] for a wire name; unknown words pass through unchanged.
    pub fn label_of(wire: &str) -> &str {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == wire)
            .map_or(wire, |s| s.label())
    }
}

impl std::fmt::Display for BackendState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one backend at one instant; the input of [`derive_backend_state`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct BackendFacts {
    /// The tester is running against this backend now.
    pub test_in_flight: bool,
    /// This backend's most recent tester result; `None` when never tested or when a config
    /// change invalidated the last result.
    pub last_test_passed: Option<bool>,
    /// This backend was admitted in the current epoch's round.
    pub admitted_this_epoch: bool,
    /// The latest operational health check succeeded.
    pub healthy: bool,
    /// The node is in the current epoch's active set.
    pub node_active: bool,
}

/// The one rule that turns backend facts into an onboarding state.
///
/// Precedence: a test in flight wins (the tester has the backend, nothing else is true of it);
/// then serving, since a healthy admitted backend on an active node is being routed to whatever
/// an older test said; then `test_failed`, only from the tester's own result — an operational
/// failure (`healthy == false`) just stops it serving, because telling an operator their backend
/// "failed its test" when no test ran sends them to fix the wrong thing; else waiting.
pub fn derive_backend_state(f: &BackendFacts) -> BackendState {
    if f.test_in_flight {
        BackendState::Testing
    } else if f.healthy && f.admitted_this_epoch && f.node_active {
        BackendState::Serving
    } else if f.last_test_passed == Some(false) {
        BackendState::TestFailed
    } else {
        BackendState::Waiting
    }
}

/// Validated only by this backend's own passing test or its own admission this epoch — never by
/// the node's or another backend's, so one good backend cannot vouch for a broken sibling.
pub fn is_validated(f: &BackendFacts) -> bool {
    f.last_test_passed == Some(true) || f.admitted_this_epoch
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_facts() -> Vec<BackendFacts> {
        let mut out = Vec::new();
        for test_in_flight in [false, true] {
            for last_test_passed in [None, Some(false), Some(true)] {
                for admitted_this_epoch in [false, true] {
                    for healthy in [false, true] {
                        for node_active in [false, true] {
                            out.push(BackendFacts {
                                test_in_flight,
                                last_test_passed,
                                admitted_this_epoch,
                                healthy,
                                node_active,
                            });
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn derivation_is_exhaustive() {
        let facts = all_facts();
        assert_eq!(facts.len(), 48);
        for f in facts {
            let got = derive_backend_state(&f);
            // Each rule stated independently of the implementation's if-chain.
            let serving = f.healthy && f.admitted_this_epoch && f.node_active && !f.test_in_flight;
            assert_eq!(got == BackendState::Serving, serving, "{f:?}");
            assert_eq!(got == BackendState::Testing, f.test_in_flight, "{f:?}");
            let failed = f.last_test_passed == Some(false) && !f.test_in_flight && !serving;
            assert_eq!(got == BackendState::TestFailed, failed, "{f:?}");
            assert_eq!(
                got == BackendState::Waiting,
                !f.test_in_flight && !serving && !failed,
                "{f:?}"
            );
            let validated = f.last_test_passed == Some(true) || f.admitted_this_epoch;
            assert_eq!(is_validated(&f), validated, "{f:?}");
        }
    }

    #[test]
    fn operational_failure_never_reads_as_test_failed() {
        for f in all_facts() {
            if f.last_test_passed != Some(false) {
                assert_ne!(derive_backend_state(&f), BackendState::TestFailed, "{f:?}");
            }
        }
        let unhealthy = BackendFacts {
            last_test_passed: Some(true),
            admitted_this_epoch: true,
            node_active: true,
            healthy: false,
            ..Default::default()
        };
        assert_eq!(derive_backend_state(&unhealthy), BackendState::Waiting);
    }

    #[test]
    fn named_cases() {
        let base = BackendFacts::default();
        let cases = [
            (base, BackendState::Waiting, false),
            (
                BackendFacts {
                    last_test_passed: Some(true),
                    ..base
                },
                BackendState::Waiting,
                true,
            ),
            (
                BackendFacts {
                    last_test_passed: Some(false),
                    ..base
                },
                BackendState::TestFailed,
                false,
            ),
            (
                BackendFacts {
                    test_in_flight: true,
                    last_test_passed: Some(false),
                    ..base
                },
                BackendState::Testing,
                false,
            ),
            (
                BackendFacts {
                    admitted_this_epoch: true,
                    healthy: true,
                    node_active: true,
                    ..base
                },
                BackendState::Serving,
                true,
            ),
            // Admitted and healthy but the node dropped out of the active set: not routable.
            (
                BackendFacts {
                    admitted_this_epoch: true,
                    healthy: true,
                    ..base
                },
                BackendState::Waiting,
                true,
            ),
        ];
        for (f, state, validated) in cases {
            assert_eq!(derive_backend_state(&f), state, "{f:?}");
            assert_eq!(is_validated(&f), validated, "{f:?}");
        }
    }

    #[test]
    fn wire_names() {
        let names = ["waiting", "testing", "test_failed", "serving"];
        for (s, name) in BackendState::ALL.into_iter().zip(names) {
            assert_eq!(s.as_str(), name);
            assert_eq!(s.to_string(), name);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{name}\""));
            assert_eq!(serde_json::from_str::<BackendState>(&json).unwrap(), s);
            assert_eq!(BackendState::label_of(name), s.label());
            assert!(!s.label().contains('_'), "{}", s.label());
        }
        assert_eq!(BackendState::label_of("test_failed"), "test failed");
        assert_eq!(BackendState::label_of("newer"), "newer");
    }
}
