//! The health watch over serving backends. `Node::activate` checks health once, at load; a
//! backend that dies afterwards (its process killed, its host gone) would otherwise keep the node
//! `serving` and its model gossiped until the next validation round. The watch probes every ready
//! backend on a short interval, takes it out of service after a few failed probes in a row and
//! back in at the first probe that passes. While a backend is out, the watch asks its driver to
//! restart what it manages (`Backend::recover`: a managed `llama-server` that exited), with
//! exponential backoff, so a crashed child does not need the operator.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::node::{Node, Phase, ProbeCandidate};

/// How often and how patiently a serving backend is probed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HealthPolicy {
    pub interval: Duration,
    /// A probe that takes longer than this counts as failed (a hung backend answers nothing).
    pub timeout: Duration,
    /// Failed probes in a row that take a ready backend out of service. More than one, so a
    /// single slow answer under load does not bounce the node out of `serving`.
    pub failures_to_down: u32,
    /// Wait after the first restart attempt; it doubles after each failed attempt.
    pub restart_base: Duration,
    /// Longest wait between restart attempts.
    pub restart_max: Duration,
}

impl Default for HealthPolicy {
    /// A killed backend refuses connections at once: out of service in about 1 s. A hung one is
    /// out within `failures_to_down × (interval + timeout)`, 3 s.
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            timeout: Duration::from_secs(1),
            failures_to_down: 2,
            restart_base: Duration::from_secs(2),
            restart_max: Duration::from_secs(60),
        }
    }
}

/// The wait after restart attempt number `attempts` (1 = after the first): `restart_base`,
/// doubling, capped at `restart_max`.
pub fn restart_backoff(attempts: u32, policy: &HealthPolicy) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    policy
        .restart_base
        .saturating_mul(1 << doublings)
        .min(policy.restart_max)
}

/// Whether to ask an unhealthy backend's driver to restart now: at once when it has just gone
/// down (the first attempt; it is already out of service), then after each backoff; never while
/// an attempt is still running.
pub fn restart_due(
    attempts: u32,
    since_last: Option<Duration>,
    running: bool,
    policy: &HealthPolicy,
) -> bool {
    match since_last {
        _ if running => false,
        None => true,
        Some(elapsed) => elapsed >= restart_backoff(attempts, policy),
    }
}

/// Restart attempts for one backend since it went down.
struct Restarts {
    attempts: u32,
    last: Instant,
    running: Arc<AtomicBool>,
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
        (Phase::Idle | Phase::Loading | Phase::Failed(_) | Phase::Draining, _) => (0, None),
    }
}

/// Probes the node's ready and unhealthy backends forever (spawned by `up`; ends with the task).
pub async fn watch(node: Arc<Node>, policy: HealthPolicy) {
    // Failed probes in a row, per backend and config revision: a replaced backend starts over.
    let mut failures: HashMap<(String, u64), u32> = HashMap::new();
    let mut restarts: HashMap<(String, u64), Restarts> = HashMap::new();
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
        let live = |key: &(String, u64)| probed.iter().any(|c| (&c.id, c.rev) == (&key.0, key.1));
        failures.retain(|key, _| live(key));
        restarts.retain(|key, _| live(key));
        for (c, probe) in probed.iter().zip(results) {
            let key = (c.id.clone(), c.rev);
            let before = failures.get(&key).copied().unwrap_or(0);
            let (after, change) = verdict(&c.phase, before, probe, &policy);
            failures.insert(key.clone(), after);
            let Some(next) = change else {
                if matches!(c.phase, Phase::Unhealthy(_)) {
                    maybe_restart(c, &mut restarts, key, &policy);
                }
                continue;
            };
            // The phase may have moved while the probe ran (a reload, a replacement): then this
            // probe's answer is about a state that no longer exists.
            if !node.swap_phase(&c.id, c.rev, &c.phase, next.clone()) {
                continue;
            }
            match next {
                Phase::Unhealthy(_) => maybe_restart(c, &mut restarts, key, &policy),
                _ => {
                    restarts.remove(&key);
                }
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

/// Starts a restart attempt in the background when one is due; the watch keeps probing.
fn maybe_restart(
    c: &ProbeCandidate,
    restarts: &mut HashMap<(String, u64), Restarts>,
    key: (String, u64),
    policy: &HealthPolicy,
) {
    let (attempts, since_last, running) = match restarts.get(&key) {
        Some(r) => (
            r.attempts,
            Some(r.last.elapsed()),
            r.running.load(Ordering::SeqCst),
        ),
        None => (0, None, false),
    };
    if !restart_due(attempts, since_last, running, policy) {
        return;
    }
    let running = Arc::new(AtomicBool::new(true));
    let attempts = attempts + 1;
    let wait = restart_backoff(attempts, policy);
    restarts.insert(
        key,
        Restarts {
            attempts,
            last: Instant::now(),
            running: running.clone(),
        },
    );
    let (backend, id) = (c.backend.clone(), c.id.clone());
    let model = c.model.clone().unwrap_or_else(|| "-".into());
    tokio::spawn(async move {
        match backend.recover().await {
            Ok(true) => tracing::info!(
                backend = %id,
                %model,
                attempt = attempts,
                "restarted the backend's managed process; serving again once it passes its health check"
            ),
            // Nothing of the driver's to restart (an external server): the operator's message
            // from going down stands.
            Ok(false) => {}
            Err(e) => tracing::warn!(
                backend = %id,
                %model,
                attempt = attempts,
                error = %e,
                "could not restart the backend; next attempt in {}s",
                wait.as_secs()
            ),
        }
        running.store(false, Ordering::SeqCst);
    });
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
    fn restarts_back_off_exponentially_up_to_the_cap() {
        let p = HealthPolicy {
            restart_base: Duration::from_secs(2),
            restart_max: Duration::from_secs(60),
            ..HealthPolicy::default()
        };
        let waits: Vec<u64> = (1..=8).map(|a| restart_backoff(a, &p).as_secs()).collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        // No overflow however long it has been failing.
        assert_eq!(restart_backoff(u32::MAX, &p), p.restart_max);
        assert_eq!(restart_backoff(0, &p), p.restart_base);
    }

    #[test]
    fn a_restart_is_due_at_once_then_after_each_backoff_and_never_twice_at_a_time() {
        let p = HealthPolicy::default();
        let s = Duration::from_secs;
        // Just went down: at once.
        assert!(restart_due(0, None, false, &p));
        // One attempt made (and finished): only after its backoff.
        assert!(!restart_due(1, Some(s(1)), false, &p));
        assert!(restart_due(1, Some(s(2)), false, &p));
        assert!(!restart_due(3, Some(s(7)), false, &p));
        assert!(restart_due(3, Some(s(8)), false, &p));
        assert!(restart_due(20, Some(s(60)), false, &p));
        // An attempt still running (a model loading) is never doubled, however long it takes.
        assert!(!restart_due(1, Some(s(600)), true, &p));
        assert!(!restart_due(0, None, true, &p));
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
