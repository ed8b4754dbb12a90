//! The health watch over serving backends. `Node::activate` checks health once, at load; a
//! backend that dies afterwards (its process killed, its host gone) would otherwise keep the node
//! `serving` and its model gossiped until the next validation round. The watch probes every ready
//! backend on a short interval, takes it out of service after a few failed probes in a row and
//! back in at the first probe that passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::node::{Node, Phase};

/// How often and how patiently a serving backend is probed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    pub interval: Duration,
    /// A probe that takes longer than this counts as failed (a hung backend answers nothing).
    pub timeout: Duration,
    /// Failed probes in a row that take a ready backend out of service. More than one, so a
    /// single slow answer under load does not bounce the node out of `serving`.
    pub failures_to_down: u32,
}

impl Default for HealthPolicy {
    /// A killed backend refuses connections at once: out of service in about 1 s. A hung one is
    /// out within `failures_to_down × (interval + timeout)`, 3 s.
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            failures_to_down: 2,
        }
    }
}

/// What one probe result means for a backend that is `phase` after `failures` failed probes in
/// a row (this one not counted). Returns the failures count to carry and the phase to move to,
/// if it changes. Only `Ready` and `Unhealthy` backends are probed; any other phase belongs to
/// the loader and is left alone.
pub fn verdict(
    phase: &Phase,
    failures: u32,
    probe: Result<(), String>,
    policy: &HealthPolicy,
) -> (u32, Option<Phase>) {
    match (phase, probe) {
        (Phase::Ready, Ok(())) => (0, None),
        (Phase::Unhealthy(_), Ok(())) => (0, Some(Phase::Ready)),
        (Phase::Ready, Err(e)) => {
            let failures = failures + 1;
            if failures >= policy.failures_to_down {
                (failures, Some(Phase::Unhealthy(e)))
            } else {
                (failures, None)
            }
        }
        // Keep the newest cause: the operator fixing one problem should see the next one.
        (Phase::Unhealthy(old), Err(e)) => {
            let change = (*old != e).then_some(Phase::Unhealthy(e));
            (failures + 1, change)
        }
        (Phase::Idle | Phase::Loading | Phase::Failed(_), _) => (0, None),
    }
}

/// Probes the node's ready and unhealthy backends forever (spawned by `up`; ends with the task).
pub async fn watch(node: Arc<Node>, policy: HealthPolicy) {
    // Failed probes in a row, per backend and config revision: a replaced backend starts over.
    let mut failures: HashMap<(String, u64), u32> = HashMap::new();
    let mut tick = tokio::time::interval(policy.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let probed = node.probe_candidates();
        let results = futures::future::join_all(probed.iter().map(|c| {
            let backend = c.backend.clone();
            async move {
                match tokio::time::timeout(policy.timeout, backend.health()).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!(
                        "health check did not answer within {:?}",
                        policy.timeout
                    )),
                }
            }
        }))
        .await;
        failures.retain(|key, _| probed.iter().any(|c| (&c.id, c.rev) == (&key.0, key.1)));
        for (c, probe) in probed.iter().zip(results) {
            let key = (c.id.clone(), c.rev);
            let before = failures.get(&key).copied().unwrap_or(0);
            let (after, change) = verdict(&c.phase, before, probe, &policy);
            failures.insert(key, after);
            let Some(next) = change else { continue };
            // The phase may have moved while the probe ran (a reload, a replacement): then this
            // probe's answer is about a state that no longer exists.
            if !node.swap_phase(&c.id, c.rev, &c.phase, next.clone()) {
                continue;
            }
            let model = c.model.as_deref().unwrap_or("-");
            match (&c.phase, &next) {
                (Phase::Ready, Phase::Unhealthy(cause)) => tracing::error!(
                    backend = %c.id,
                    model,
                    error = %cause,
                    "backend stopped answering its health check; out of service, requests go to \
                     peers — restart or fix the backend"
                ),
                (Phase::Unhealthy(_), Phase::Ready) => tracing::info!(
                    backend = %c.id,
                    model,
                    "backend answers its health check again; serving"
                ),
                _ => {
                    tracing::info!(backend = %c.id, model, phase = ?next, "backend health changed")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down(e: &str) -> Phase {
        Phase::Unhealthy(e.into())
    }

    #[test]
    fn ready_stays_ready_while_probes_pass() {
        let p = HealthPolicy::default();
        assert_eq!(verdict(&Phase::Ready, 0, Ok(()), &p), (0, None));
        // A pass clears a failure that was not yet enough.
        assert_eq!(verdict(&Phase::Ready, 1, Ok(()), &p), (0, None));
    }

    #[test]
    fn ready_goes_down_only_after_enough_failures_in_a_row() {
        let p = HealthPolicy {
            failures_to_down: 3,
            ..HealthPolicy::default()
        };
        assert_eq!(verdict(&Phase::Ready, 0, Err("x".into()), &p), (1, None));
        assert_eq!(verdict(&Phase::Ready, 1, Err("x".into()), &p), (2, None));
        assert_eq!(
            verdict(&Phase::Ready, 2, Err("refused".into()), &p),
            (3, Some(down("refused")))
        );
    }

    #[test]
    fn one_failure_is_enough_when_so_configured() {
        let p = HealthPolicy {
            failures_to_down: 1,
            ..HealthPolicy::default()
        };
        assert_eq!(
            verdict(&Phase::Ready, 0, Err("e".into()), &p),
            (1, Some(down("e")))
        );
    }

    #[test]
    fn unhealthy_comes_back_at_the_first_pass() {
        let p = HealthPolicy::default();
        assert_eq!(verdict(&down("e"), 7, Ok(()), &p), (0, Some(Phase::Ready)));
    }

    #[test]
    fn unhealthy_keeps_the_newest_cause() {
        let p = HealthPolicy::default();
        assert_eq!(verdict(&down("e"), 2, Err("e".into()), &p), (3, None));
        assert_eq!(
            verdict(&down("e"), 2, Err("other".into()), &p),
            (3, Some(down("other")))
        );
    }

    #[test]
    fn phases_owned_by_the_loader_are_left_alone() {
        let p = HealthPolicy::default();
        for phase in [Phase::Idle, Phase::Loading, Phase::Failed("x".into())] {
            assert_eq!(
                verdict(&phase, 5, Err("e".into()), &p),
                (0, None),
                "{phase:?}"
            );
            assert_eq!(verdict(&phase, 0, Ok(()), &p), (0, None), "{phase:?}");
        }
    }
}
