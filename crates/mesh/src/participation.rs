//! Whether this node is in the current epoch's active set, cached by a background task so the
//! status API and the router read it without verifying signatures on every request.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use infermesh_state::Participation;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::mesh::MeshHandle;
use crate::schedule::Schedule;
use crate::validation::{active_set, collect_validations};

/// `Active` exactly when `my_id` is in `active_set`.
pub fn participation_of(my_id: &str, active_set: &BTreeSet<String>) -> Participation {
    if active_set.contains(my_id) {
        Participation::Active
    } else {
        Participation::InactiveWaiting
    }
}

/// One refresh for a node: the active set of the current epoch over its own record and its live
/// peers. An unknown schedule is an error (not "inactive"), so the tracker keeps what it had;
/// before genesis nobody can be active.
pub fn participation_now(
    mesh: &MeshHandle,
    schedule: &dyn Schedule,
) -> Result<Participation, String> {
    if schedule.spec().is_none() {
        return Err("schedule unknown".to_string());
    }
    let Some(epoch) = schedule.current_epoch() else {
        return Ok(Participation::InactiveWaiting);
    };
    let records = collect_validations(&mesh.record(), &mesh.peers());
    Ok(participation_of(
        mesh.node_id(),
        &active_set(&records, epoch),
    ))
}

/// The cached participation of this node, refreshed in the background.
///
/// Dropping the tracker stops its task.
pub struct ParticipationTracker {
    rx: watch::Receiver<Participation>,
    task: JoinHandle<()>,
}

impl ParticipationTracker {
    /// Starts at `InactiveWaiting` and refreshes from `inputs` on every change of
    /// `gossip_changes` and every `refresh` interval. The first refresh runs in the spawned task,
    /// so starting a node never waits on it. A failed refresh keeps the previous value (logged at
    /// debug): a node that briefly cannot compute its participation has not left the active set.
    ///
    /// `inputs` runs on the async runtime and must stay cheap (a few dozen signature checks).
    /// Must be called inside a tokio runtime.
    pub fn spawn<F>(
        inputs: F,
        gossip_changes: watch::Receiver<u64>,
        refresh: Duration,
    ) -> ParticipationTracker
    where
        F: Fn() -> Result<Participation, String> + Send + Sync + 'static,
    {
        let (tx, rx) = watch::channel(Participation::InactiveWaiting);
        let task = tokio::spawn(refresh_loop(inputs, gossip_changes, refresh, tx));
        ParticipationTracker { rx, task }
    }

    /// [`ParticipationTracker::spawn`] wired to a mesh and a schedule via [`participation_now`].
    pub fn for_mesh(
        mesh: Arc<MeshHandle>,
        schedule: Arc<dyn Schedule>,
        refresh: Duration,
    ) -> ParticipationTracker {
        let changes = mesh.subscribe();
        Self::spawn(
            move || participation_now(&mesh, schedule.as_ref()),
            changes,
            refresh,
        )
    }

    pub fn current(&self) -> Participation {
        *self.rx.borrow()
    }

    /// Notified on every change of value (not on refreshes that confirm it), e.g. to log the
    /// inactive→active transition once.
    pub fn subscribe(&self) -> watch::Receiver<Participation> {
        self.rx.clone()
    }
}

impl Drop for ParticipationTracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn refresh_loop<F>(
    inputs: F,
    mut changes: watch::Receiver<u64>,
    refresh: Duration,
    tx: watch::Sender<Participation>,
) where
    F: Fn() -> Result<Participation, String>,
{
    // A zero period would spin; tokio's interval panics on it anyway.
    let refresh = refresh.max(Duration::from_millis(1));
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + refresh, refresh);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // What exists at spawn time is covered by the first refresh.
    changes.borrow_and_update();
    let mut gossip_open = true;
    let mut failures: u64 = 0;
    loop {
        match inputs() {
            Ok(next) => {
                failures = 0;
                tx.send_if_modified(|cur| {
                    let changed = *cur != next;
                    if changed {
                        tracing::debug!(from = %cur, to = %next, "participation changed");
                        *cur = next;
                    }
                    changed
                });
            }
            Err(err) => {
                failures += 1;
                tracing::debug!(%err, failures, kept = %*tx.borrow(),
                    "participation refresh failed; keeping the previous value");
            }
        }
        tokio::select! {
            changed = changes.changed(), if gossip_open => {
                // A closed channel (mesh gone) would resolve at once forever; fall back to ticks.
                gossip_open = changed.is_ok();
            }
            _ = tick.tick() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    #[test]
    fn participation_of_table() {
        let set: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let cases = [
            ("a", Participation::Active),
            ("b", Participation::Active),
            ("c", Participation::InactiveWaiting),
            ("", Participation::InactiveWaiting),
        ];
        for (id, want) in cases {
            assert_eq!(participation_of(id, &set), want, "{id}");
        }
        assert_eq!(
            participation_of("a", &BTreeSet::new()),
            Participation::InactiveWaiting
        );
    }

    /// Scripted inputs: each refresh pops the next answer (the last one repeats) and counts.
    fn scripted(
        answers: Vec<Result<Participation, String>>,
    ) -> (
        impl Fn() -> Result<Participation, String> + Send + Sync + 'static,
        Arc<AtomicUsize>,
    ) {
        let calls = Arc::new(AtomicUsize::new(0));
        let script = Mutex::new(answers);
        let c = calls.clone();
        let f = move || {
            c.fetch_add(1, Ordering::SeqCst);
            let mut s = script.lock().unwrap();
            if s.len() > 1 {
                s.remove(0)
            } else {
                s[0].clone()
            }
        };
        (f, calls)
    }

    const HOUR: Duration = Duration::from_secs(3_600);

    #[tokio::test(start_paused = true)]
    async fn starts_inactive_and_first_refresh_is_off_the_startup_path() {
        let (_gtx, grx) = watch::channel(0u64);
        let (f, calls) = scripted(vec![Ok(Participation::Active)]);
        let t = ParticipationTracker::spawn(f, grx, HOUR);
        assert_eq!(t.current(), Participation::InactiveWaiting);
        assert_eq!(calls.load(Ordering::SeqCst), 0, "spawn must not run inputs");
        let mut sub = t.subscribe();
        sub.changed().await.unwrap();
        assert_eq!(*sub.borrow_and_update(), Participation::Active);
        assert_eq!(t.current(), Participation::Active);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_on_gossip_change_and_on_interval() {
        let (gtx, grx) = watch::channel(0u64);
        let (f, calls) = scripted(vec![
            Ok(Participation::InactiveWaiting),
            Ok(Participation::Active),
            Ok(Participation::InactiveWaiting),
        ]);
        let t = ParticipationTracker::spawn(f, grx, Duration::from_secs(30));
        let mut sub = t.subscribe();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(!sub.has_changed().unwrap(), "same value: no notification");

        gtx.send_modify(|c| *c += 1);
        sub.changed().await.unwrap();
        assert_eq!(*sub.borrow_and_update(), Participation::Active);
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // No gossip: the 30 s interval alone brings the next refresh.
        tokio::time::sleep(Duration::from_secs(29)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(t.current(), Participation::InactiveWaiting);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_refresh_keeps_previous_value() {
        let (gtx, grx) = watch::channel(0u64);
        let (f, calls) = scripted(vec![
            Ok(Participation::Active),
            Err("peers unreadable".into()),
            Err("still unreadable".into()),
            Ok(Participation::InactiveWaiting),
        ]);
        let t = ParticipationTracker::spawn(f, grx, HOUR);
        let mut sub = t.subscribe();
        sub.changed().await.unwrap();
        assert_eq!(*sub.borrow_and_update(), Participation::Active);
        for n in 2..=3 {
            gtx.send_modify(|c| *c += 1);
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert_eq!(calls.load(Ordering::SeqCst), n);
            assert_eq!(t.current(), Participation::Active, "after failure #{n}");
            assert!(!sub.has_changed().unwrap());
        }
        gtx.send_modify(|c| *c += 1);
        sub.changed().await.unwrap();
        assert_eq!(t.current(), Participation::InactiveWaiting);
    }

    #[tokio::test(start_paused = true)]
    async fn initial_failure_stays_inactive_and_closed_gossip_falls_back_to_ticks() {
        let (gtx, grx) = watch::channel(0u64);
        let (f, calls) = scripted(vec![
            Err("schedule unknown".into()),
            Ok(Participation::Active),
        ]);
        let t = ParticipationTracker::spawn(f, grx, Duration::from_secs(30));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(t.current(), Participation::InactiveWaiting);
        drop(gtx);
        tokio::time::sleep(Duration::from_millis(1)).await;
        // The closed channel woke the loop once at most; it must not spin.
        let after_close = calls.load(Ordering::SeqCst);
        assert!(after_close <= 2, "{after_close}");
        tokio::time::sleep(Duration::from_secs(31)).await;
        assert!(calls.load(Ordering::SeqCst) <= after_close + 1);
        assert_eq!(t.current(), Participation::Active);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_tracker_stops_refreshing() {
        let (gtx, grx) = watch::channel(0u64);
        let (f, calls) = scripted(vec![Ok(Participation::Active)]);
        let t = ParticipationTracker::spawn(f, grx, Duration::from_secs(1));
        tokio::time::sleep(Duration::from_millis(1)).await;
        drop(t);
        let before = calls.load(Ordering::SeqCst);
        gtx.send_modify(|c| *c += 1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(calls.load(Ordering::SeqCst), before);
    }
}
